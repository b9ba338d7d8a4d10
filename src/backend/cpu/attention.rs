//! guided-diffusion's QKVAttentionLegacy and its input gradient.
//! qkv [N, 3·H·d, T] is viewed as [N·H, 3d, T]; in each head block rows 0..d are q, d..2d k and
//! 2d..3d v. Scores z[t,s] = Σ_c (q[c,t]·d^-¼)(k[c,s]·d^-¼), P = softmax over s, a[c,t] = Σ_s P[t,s]·v[c,s].
//! One rayon task per (batch, head); the T×T score matrix lives only inside that task.

use super::matmul::{matmul, MatRef};
use super::real::Real;
use rayon::prelude::*;

/// P = softmax_s(scale² · qᵀk) for one head, T×T row-major.
fn probs<T: Real>(q: &[T], k: &[T], d: usize, t: usize) -> Vec<T> {
    let mut p = vec![T::zero(); t * t];
    matmul(t, t, d, &mut p, t, MatRef::transposed(q, t), MatRef::row_major(k, t), false, false);
    // (q·d^-¼)·(k·d^-¼) = d^-½ · q·k
    let s2 = T::one() / T::of_usize(d).sqrt();
    for row in p.chunks_mut(t) {
        let m = row.iter().fold(T::neg_infinity(), |m, &v| m.max(v * s2));
        let mut sum = T::zero();
        for v in row.iter_mut() {
            *v = (*v * s2 - m).exp();
            sum += *v;
        }
        let inv = T::one() / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
    p
}

pub fn attention_legacy<T: Real>(qkv: &[T], n: usize, heads: usize, d: usize, t: usize) -> Vec<T> {
    let mut out = vec![T::zero(); n * heads * d * t];
    out.par_chunks_mut(d * t).enumerate().for_each(|(b, a)| {
        let blk = &qkv[b * 3 * d * t..][..3 * d * t];
        let (q, k, v) = (&blk[..d * t], &blk[d * t..2 * d * t], &blk[2 * d * t..]);
        let p = probs(q, k, d, t);
        // a[c,t] = Σ_s v[c,s]·P[t,s]
        matmul(d, t, t, a, t, MatRef::row_major(v, t), MatRef::transposed(&p, t), false, false);
    });
    out
}

pub fn attention_legacy_x_backward<T: Real>(gy: &[T], qkv: &[T], d: usize, t: usize) -> Vec<T> {
    let mut g = vec![T::zero(); qkv.len()];
    g.par_chunks_mut(3 * d * t).enumerate().for_each(|(b, gblk)| {
        let blk = &qkv[b * 3 * d * t..][..3 * d * t];
        let (q, k, v) = (&blk[..d * t], &blk[d * t..2 * d * t], &blk[2 * d * t..]);
        let ga = &gy[b * d * t..][..d * t];
        let p = probs(q, k, d, t);
        let (gq, rest) = gblk.split_at_mut(d * t);
        let (gk, gv) = rest.split_at_mut(d * t);
        // gV[c,s] = Σ_t gA[c,t]·P[t,s]
        matmul(d, t, t, gv, t, MatRef::row_major(ga, t), MatRef::row_major(&p, t), false, false);
        // gP[t,s] = Σ_c gA[c,t]·v[c,s]
        let mut gz = vec![T::zero(); t * t];
        matmul(t, t, d, &mut gz, t, MatRef::transposed(ga, t), MatRef::row_major(v, t), false, false);
        // softmax backward, then the d^-½ of the scores: gZ = d^-½ · P ⊙ (gP − Σ_s gP·P)
        let s2 = T::one() / T::of_usize(d).sqrt();
        for (gr, pr) in gz.chunks_mut(t).zip(p.chunks(t)) {
            let dot: T = gr.iter().zip(pr).map(|(&a, &b)| a * b).sum();
            gr.iter_mut().zip(pr).for_each(|(gv, &pv)| *gv = s2 * pv * (*gv - dot));
        }
        // gQ[c,t] = Σ_s k[c,s]·gZ[t,s];  gK[c,s] = Σ_t q[c,t]·gZ[t,s]
        matmul(d, t, t, gq, t, MatRef::row_major(k, t), MatRef::transposed(&gz, t), false, false);
        matmul(d, t, t, gk, t, MatRef::row_major(q, t), MatRef::row_major(&gz, t), false, false);
    });
    g
}
