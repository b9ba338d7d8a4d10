//! guided-diffusion's QKVAttentionLegacy and its input gradient.
//! qkv [N, 3·H·d, T] is viewed as [N·H, 3d, T]; in each head block rows 0..d are q, d..2d k and
//! 2d..3d v. Scores z[t,s] = Σ_c (q[c,t]·d^-¼)(k[c,s]·d^-¼), P = softmax over s, a[c,t] = Σ_s P[t,s]·v[c,s].
//!
//! Forward, flash-style: one rayon task per (batch·head, block of `QUERY_BLOCK` queries), which walks
//! the keys in blocks of `KEY_BLOCK`: S = QᵀK of the block (gemm), then the online softmax in f32
//! (running row max m and sum l; when m grows the sum and the output rows so far are rescaled by
//! e^(m_old − m_new)), then O += P·Vᵀ (gemm); O / l at the end. P never exceeds one
//! QUERY_BLOCK × KEY_BLOCK block (64 KiB, L2-resident), whatever T.
//! Backward: one task per batch·head (gK and gV sum over every query), query block by query
//! block: the block's rows of P (exact softmax, two passes), gP, gZ, then gQ of the block and the
//! block's contributions to gK and gV; P and gP never exceed QUERY_BLOCK × T.

use super::buffers::Pooled;
use super::matmul::{matmul, matmul_raw, MatRef, SendPtr};
use super::real::{max_lanes, sum_lanes, Real};
use super::simd::{isa, multiversion};
use rayon::prelude::*;

/// Queries per forward task and per backward step.
const QUERY_BLOCK: usize = 64;
/// Keys per step of the forward's online softmax.
const KEY_BLOCK: usize = 256;

fn head<T: Real>(qkv: &[T], b: usize, d: usize, t: usize) -> (&[T], &[T], &[T]) {
    let blk = &qkv[b * 3 * d * t..][..3 * d * t];
    (&blk[..d * t], &blk[d * t..2 * d * t], &blk[2 * d * t..])
}

/// row[j] ← e^(row[j]·s2 − m); returns Σ_j of the new values (summed in lanes, as `sum_lanes`).
#[inline(always)]
fn exp_shifted_sum<T: Real>(row: &mut [T], s2: T, m: T) -> T {
    row.iter_mut().for_each(|v| *v = (*v * s2 - m).fast_exp());
    sum_lanes(row)
}

/// The scale d^-½ of the scores ((q·d^-¼)·(k·d^-¼) = d^-½·q·k).
fn score_scale<T: Real>(d: usize) -> T {
    T::one() / T::of_usize(d).sqrt()
}

/// Keys cut into blocks of `KEY_BLOCK`, as (s0, s1).
fn key_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t).step_by(KEY_BLOCK).map(move |s0| (s0, (s0 + KEY_BLOCK).min(t)))
}

/// Output rows t0..t1 of one head as Oᵀ [(t1−t0) × d] row-major, by the online softmax over key
/// blocks. `s` (QUERY_BLOCK × KEY_BLOCK) is the task's score block.
#[allow(clippy::too_many_arguments)]
fn flash_rows<T: Real>(q: &[T], k: &[T], vt: &[T], d: usize, t: usize, t0: usize, t1: usize, s: &mut [T], o: &mut [T]) {
    let rows = t1 - t0;
    let s2 = score_scale::<T>(d);
    let mut m = [T::neg_infinity(); QUERY_BLOCK];
    let mut l = [T::zero(); QUERY_BLOCK];
    let qb = MatRef { data: &q[t0..], rs: 1, cs: t };
    for (s0, s1) in key_blocks(t) {
        let cols = s1 - s0;
        let sb = &mut s[..rows * cols];
        // S[i, j] = Σ_c q[c, t0+i]·k[c, s0+j]
        matmul(rows, cols, d, sb, cols, qb, MatRef { data: &k[s0..], rs: t, cs: 1 }, false, false);
        online_softmax(isa(), sb, cols, s2, &mut m[..rows], &mut l[..rows], o, d);
        // Oᵀ[i, c] += Σ_j P[i, j]·v[c, s0+j]; the first block overwrites (o is not zeroed)
        matmul(rows, d, cols, o, d, MatRef::row_major(sb, cols), MatRef::row_major(&vt[s0 * d..], d), s0 != 0, false);
    }
    for (orow, &li) in o.chunks_exact_mut(d).zip(&l[..rows]) {
        let inv = T::one() / li;
        orow.iter_mut().for_each(|x| *x *= inv);
    }
}

/// One key block of the online softmax for every query row of `sb` (rows × cols scores): the row
/// max m and sum l updated, the block's scores replaced by e^(s·s2 − m), the output rows so far in
/// `o` rescaled by e^(m_old − m_new).
#[inline(always)]
fn online_softmax_generic<T: Real>(sb: &mut [T], cols: usize, s2: T, m: &mut [T], l: &mut [T], o: &mut [T], d: usize) {
    for (i, row) in sb.chunks_exact_mut(cols).enumerate() {
        let m_new = m[i].max(max_lanes(row) * s2);
        let sum = exp_shifted_sum(row, s2, m_new);
        // the first block has nothing to rescale (and e^(−∞) is not 0 in the fast exp)
        if m[i] == T::neg_infinity() {
            l[i] = sum;
        } else {
            let alpha = (m[i] - m_new).fast_exp();
            l[i] = l[i] * alpha + sum;
            o[i * d..][..d].iter_mut().for_each(|x| *x *= alpha);
        }
        m[i] = m_new;
    }
}

/// Rows of `p` (each t long) replaced by softmax(s2 · row).
#[inline(always)]
fn softmax_rows_generic<T: Real>(p: &mut [T], t: usize, s2: T) {
    for row in p.chunks_exact_mut(t) {
        let m = max_lanes(row) * s2;
        let inv = T::one() / exp_shifted_sum(row, s2, m);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

// The exp and the reductions at the vector unit's width: the crate's baseline build runs them
// four lanes wide, which made the softmax 30% of the attention's time.
multiversion!(
    /// `online_softmax_generic` at the width of `isa`.
    fn online_softmax => online_softmax_generic<T: Real>(sb: &mut [T], cols: usize, s2: T, m: &mut [T], l: &mut [T], o: &mut [T], d: usize)
);
multiversion!(
    /// `softmax_rows_generic` at the width of `isa`.
    fn softmax_rows => softmax_rows_generic<T: Real>(p: &mut [T], t: usize, s2: T)
);

pub fn attention_legacy<T: Real>(qkv: &[T], n: usize, heads: usize, d: usize, t: usize) -> Vec<T> {
    // every (c, t) of every head is written by one query block's transpose
    let mut out = T::for_overwrite(n * heads * d * t);
    let blocks_per_head = t.div_ceil(QUERY_BLOCK);
    let dst = SendPtr(out.as_mut_ptr());
    let vt = values_transposed(qkv, n * heads, d, t);
    (0..n * heads * blocks_per_head).into_par_iter().for_each_init(
        || (Pooled::<T>::for_overwrite(QUERY_BLOCK * KEY_BLOCK.min(t)), Pooled::<T>::for_overwrite(QUERY_BLOCK * d)),
        |(s, o), task| {
            let (b, blk) = (task / blocks_per_head, task % blocks_per_head);
            let (t0, t1) = (blk * QUERY_BLOCK, ((blk + 1) * QUERY_BLOCK).min(t));
            let (q, k, _) = head(qkv, b, d, t);
            let o = &mut o[..(t1 - t0) * d];
            flash_rows(q, k, &vt[b * t * d..][..t * d], d, t, t0, t1, s, o);
            // a[c, t0+i] = Oᵀ[i, c]
            // SAFETY: each task writes a[c, t0..t1] of its own head only, all inside `out`.
            for (i, orow) in o.chunks_exact(d).enumerate() {
                for (c, &x) in orow.iter().enumerate() {
                    unsafe { *dst.at(b * d * t + c * t + t0 + i) = x };
                }
            }
        },
    );
    out
}

/// Every head's v [d, T] as vᵀ [T, d] row-major, one pass before the query blocks: P·Vᵀ then reads
/// its right operand with unit stride along d, which gemm takes unpacked, instead of gathering V at
/// stride T once per (query block, key block).
fn values_transposed<T: Real>(qkv: &[T], heads: usize, d: usize, t: usize) -> Pooled<T> {
    let mut vt = Pooled::<T>::for_overwrite(heads * t * d);
    vt.par_chunks_mut(t * d).enumerate().for_each(|(b, dst)| {
        let (_, _, v) = head(qkv, b, d, t);
        // 8 keys × d at a time: reads of v stay on 8 consecutive values of a row
        for s0 in (0..t).step_by(8) {
            let s1 = (s0 + 8).min(t);
            for (c, row) in v.chunks_exact(t).enumerate() {
                for s in s0..s1 {
                    dst[s * d + c] = row[s];
                }
            }
        }
    });
    vt
}

/// P[t0..t1, :] = softmax_s(d^-½ · qᵀk) for one head, (t1−t0)×T row-major, into `p`.
fn probs<T: Real>(q: &[T], k: &[T], d: usize, t: usize, t0: usize, t1: usize, p: &mut [T]) {
    let rows = t1 - t0;
    let qb = MatRef { data: &q[t0..], rs: 1, cs: t };
    matmul(rows, t, d, p, t, qb, MatRef::row_major(k, t), false, false);
    softmax_rows(isa(), p, t, score_scale::<T>(d));
}

pub fn attention_legacy_x_backward<T: Real>(gy: &[T], qkv: &[T], d: usize, t: usize) -> Vec<T> {
    // gq's columns are written block by block, gk and gv by the first block (then accumulated)
    let mut g = T::for_overwrite(qkv.len());
    let heads = qkv.len() / (3 * d * t).max(1);
    // few heads: let the products use every thread instead
    let inner_par = heads < rayon::current_num_threads();
    let s2 = score_scale::<T>(d);
    g.par_chunks_mut(3 * d * t).enumerate().for_each(|(b, gblk)| {
        let (q, k, v) = head(qkv, b, d, t);
        let ga = &gy[b * d * t..][..d * t];
        let (gq, rest) = gblk.split_at_mut(d * t);
        let (gk, gv) = rest.split_at_mut(d * t);
        let rows_max = QUERY_BLOCK.min(t);
        let mut p = Pooled::<T>::for_overwrite(rows_max * t);
        let mut gz = Pooled::<T>::for_overwrite(rows_max * t);
        for t0 in (0..t).step_by(QUERY_BLOCK) {
            let t1 = (t0 + QUERY_BLOCK).min(t);
            let rows = t1 - t0;
            let (p, gz) = (&mut p[..rows * t], &mut gz[..rows * t]);
            probs(q, k, d, t, t0, t1, p);
            let ga_b = MatRef { data: &ga[t0..], rs: 1, cs: t }; // gAᵀ of the block, rows × d
                                                                 // gV[c, s] += Σ_i gA[c, t0+i]·P[i, s]
            matmul(d, t, rows, gv, t, MatRef { data: &ga[t0..], rs: t, cs: 1 }, MatRef::row_major(p, t), t0 != 0, inner_par);
            // gP[i, s] = Σ_c gA[c, t0+i]·v[c, s]
            matmul(rows, t, d, gz, t, ga_b, MatRef::row_major(v, t), false, inner_par);
            // softmax backward, then the d^-½ of the scores: gZ = d^-½ · P ⊙ (gP − Σ_s gP·P)
            for (gr, pr) in gz.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                let dot: T = gr.iter().zip(pr.iter()).map(|(&a, &b)| a * b).sum();
                gr.iter_mut().zip(pr).for_each(|(gv, &pv)| *gv = s2 * pv * (*gv - dot));
            }
            // gQ[c, t0+i] = Σ_s k[c, s]·gZ[i, s] (written transposed: columns t0..t1 of gq)
            // SAFETY: the block's columns t0..t1 of gq [d, T], inside the exclusive borrow `gq`.
            unsafe { matmul_raw(rows, d, t, gq.as_mut_ptr().add(t0), (1, t), MatRef::row_major(gz, t), MatRef::transposed(k, t), false, inner_par) };
            // gK[c, s] += Σ_i q[c, t0+i]·gZ[i, s]
            matmul(d, t, rows, gk, t, MatRef { data: &q[t0..], rs: t, cs: 1 }, MatRef::row_major(gz, t), t0 != 0, inner_par);
        }
    });
    g
}
