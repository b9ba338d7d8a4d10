//! guided-diffusion's QKVAttentionLegacy and its input gradient.
//! qkv [N, 3·H·d, T] is viewed as [N·H, 3d, T]; in each head block rows 0..d are q, d..2d k and
//! 2d..3d v. Scores z[t,s] = Σ_c (q[c,t]·d^-¼)(k[c,s]·d^-¼), P = softmax over s, a[c,t] = Σ_s P[t,s]·v[c,s].
//! Forward: one rayon task per (batch·head, block of queries); backward: one per batch·head.

use super::matmul::{matmul, matmul_raw, matmul_t, MatRef, SendPtr};
use super::real::{max_lanes, sum_lanes, Real};
use rayon::prelude::*;

/// Query rows per task: the block's P (rows × T) stays in L2 while it is softmaxed and used.
const QUERY_BLOCK: usize = 128;

/// P[t0..t1, :] = softmax_s(d^-½ · qᵀk) for one head, (t1−t0)×T row-major.
fn probs<T: Real>(q: &[T], k: &[T], d: usize, t: usize, t0: usize, t1: usize) -> Vec<T> {
    let rows = t1 - t0;
    let mut p = vec![T::zero(); rows * t];
    let qb = MatRef { data: &q[t0..], rs: 1, cs: t };
    matmul(rows, t, d, &mut p, t, qb, MatRef::row_major(k, t), false, false);
    // (q·d^-¼)·(k·d^-¼) = d^-½ · q·k
    let s2 = T::one() / T::of_usize(d).sqrt();
    for row in p.chunks_mut(t) {
        let m = max_lanes(row) * s2;
        row.iter_mut().for_each(|v| *v = (*v * s2 - m).fast_exp());
        let sum = sum_lanes(row);
        let inv = T::one() / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
    p
}

fn head<T: Real>(qkv: &[T], b: usize, d: usize, t: usize) -> (&[T], &[T], &[T]) {
    let blk = &qkv[b * 3 * d * t..][..3 * d * t];
    (&blk[..d * t], &blk[d * t..2 * d * t], &blk[2 * d * t..])
}

pub fn attention_legacy<T: Real>(qkv: &[T], n: usize, heads: usize, d: usize, t: usize) -> Vec<T> {
    // every (c, t) of every head is written by one query block's product
    let mut out = T::for_overwrite(n * heads * d * t);
    let blocks_per_head = t.div_ceil(QUERY_BLOCK);
    let dst = SendPtr(out.as_mut_ptr());
    (0..n * heads * blocks_per_head).into_par_iter().for_each(|task| {
        let (b, blk) = (task / blocks_per_head, task % blocks_per_head);
        let (t0, t1) = (blk * QUERY_BLOCK, ((blk + 1) * QUERY_BLOCK).min(t));
        let (q, k, v) = head(qkv, b, d, t);
        let p = probs(q, k, d, t, t0, t1);
        // aᵀ[t,c] = Σ_s P[t,s]·v[c,s], stored transposed into columns t0..t1 of this head's a [d, T]
        // SAFETY: each task writes a[c, t0..t1] of its own head only, all inside `out`.
        unsafe { matmul_raw(t1 - t0, d, t, dst.at(b * d * t + t0), (1, t), MatRef::row_major(&p, t), MatRef::transposed(v, t), false, false) };
    });
    out
}

pub fn attention_legacy_x_backward<T: Real>(gy: &[T], qkv: &[T], d: usize, t: usize) -> Vec<T> {
    let mut g = vec![T::zero(); qkv.len()];
    g.par_chunks_mut(3 * d * t).enumerate().for_each(|(b, gblk)| {
        let (q, k, v) = head(qkv, b, d, t);
        let ga = &gy[b * d * t..][..d * t];
        let p = probs(q, k, d, t, 0, t);
        let (gq, rest) = gblk.split_at_mut(d * t);
        let (gk, gv) = rest.split_at_mut(d * t);
        // gVᵀ[s,c] = Σ_t P[t,s]·gA[c,t]
        matmul_t(t, d, t, gv, t, MatRef::transposed(&p, t), MatRef::transposed(ga, t), false);
        // gP[t,s] = Σ_c gA[c,t]·v[c,s]
        let mut gz = vec![T::zero(); t * t];
        matmul(t, t, d, &mut gz, t, MatRef::transposed(ga, t), MatRef::row_major(v, t), false, false);
        // softmax backward, then the d^-½ of the scores: gZ = d^-½ · P ⊙ (gP − Σ_s gP·P)
        let s2 = T::one() / T::of_usize(d).sqrt();
        for (gr, pr) in gz.chunks_mut(t).zip(p.chunks(t)) {
            let dot: T = gr.iter().zip(pr).map(|(&a, &b)| a * b).sum();
            gr.iter_mut().zip(pr).for_each(|(gv, &pv)| *gv = s2 * pv * (*gv - dot));
        }
        // gQᵀ[t,c] = Σ_s gZ[t,s]·k[c,s];  gKᵀ[s,c] = Σ_t gZ[t,s]·q[c,t]
        matmul_t(t, d, t, gq, t, MatRef::row_major(&gz, t), MatRef::transposed(k, t), false);
        matmul_t(t, d, t, gk, t, MatRef::transposed(&gz, t), MatRef::transposed(q, t), false);
    });
    g
}
