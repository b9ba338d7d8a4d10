//! The depthwise conv's plane kernel as one long axpy per tap: the input plane is first copied
//! into zero-padded phase planes (for strides sh×sw, phase (a, b) holds the padded rows a, a + sh,
//! … and columns b, b + sw, …), all with the row length `cols` of a padded output plane, so for
//! tap (ky, kx) output (oy, ox) reads phase (ky % sh, kx % sw) at row oy + ky / sh, column
//! ox + kx / sw: the whole plane's update is one unit-stride axpy of Ho·cols values (the columns
//! beyond Wo are scratch). The row kernel of depthwise.rs pays its loop overhead per tap and row,
//! which at EfficientNet's 16² and 32² planes (rows of 16–32 values) is most of its time.
//!
//! Bit-identical to the row kernel: each output sums its valid taps in (ky, kx) order from +0;
//! a padded tap adds 0·w = ±0, which leaves the sum unchanged because a sum that starts at +0
//! never becomes −0 under round-to-nearest. That needs finite taps (0·∞ is NaN), so the caller
//! uses this kernel only for channels whose weights are all finite.

use super::activation::bias_act_into_generic;
use super::depthwise::row_sum_f64;
use super::real::Real;
use crate::backend::Activation;
use crate::ops::contract::Conv2dGeom;

/// (rows of a phase plane, their length `cols`); the scratch is sh·sw phase planes and one
/// padded output plane, plus `cols` of slack for the last tap's run past the last row.
pub(super) fn padded_dims(g: &Conv2dGeom) -> (usize, usize) {
    let rows = g.ho() + (g.kh() - 1) / g.sh();
    let cols = g.wo() + (g.kw() - 1) / g.sw();
    (rows, cols)
}

/// Scratch values `plane_axpy_generic` needs for `g`.
pub(super) fn scratch_len(g: &Conv2dGeom) -> usize {
    let (rows, cols) = padded_dims(g);
    g.sh() * g.sw() * rows * cols + g.ho() * cols + cols
}

/// Kernels up to 7×7 keep their taps on the stack and take `taps_into_registers`.
const MAX_TAPS: usize = 49;
/// Outputs summed in registers at a time: four 16-lane vectors at AVX-512.
const STRIP: usize = 64;

/// out[i] = Σ over `taps` (offset, w), in their order from +0, of phases[offset + i]·w: a strip of
/// `STRIP` outputs stays in registers through every tap and is stored once, where one pass per tap
/// over the whole plane loads and stores every output kh·kw times (from L2 at 95²–190² planes).
/// The same operations in the same order per output as the per-tap passes, so the same bits.
#[inline(always)]
fn taps_into_registers<T: Real>(out: &mut [T], phases: &[T], taps: &[(usize, T)]) {
    let n = out.len();
    let mut strips = out.chunks_exact_mut(STRIP);
    for (si, dst) in strips.by_ref().enumerate() {
        let i0 = si * STRIP;
        let mut acc = [T::zero(); STRIP];
        for &(base, wv) in taps {
            let src = &phases[base + i0..][..STRIP];
            for j in 0..STRIP {
                acc[j] += src[j] * wv;
            }
        }
        dst.copy_from_slice(&acc);
    }
    let i0 = n - n % STRIP;
    let tail = strips.into_remainder();
    tail.fill(T::zero());
    for &(base, wv) in taps {
        for (o, &v) in tail.iter_mut().zip(&phases[base + i0..]) {
            *o += v * wv;
        }
    }
}

/// One output plane yp from input plane xp and the channel's (finite) taps wk, with the bias and
/// activation applied per row; returns Σ yp in f64 when `sum`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn plane_axpy_generic<T: Real>(xp: &[T], wk: &[T], bias: Option<T>, act: Option<Activation>, yp: &mut [T], scratch: &mut [T], g: &Conv2dGeom, sum: bool) -> f64 {
    let (sh, sw, kh, kw, ho, wo, w) = (g.sh(), g.sw(), g.kh(), g.kw(), g.ho(), g.wo(), g.w());
    let (rows, cols) = padded_dims(g);
    let phase = rows * cols;
    // (the phases' `cols` of slack: the last tap's run past the last phase row, scratch columns only)
    let (phases, rest) = scratch.split_at_mut(sh * sw * phase + cols);
    // phases[(a·sw + b)·phase + i·cols + j] = x[i·sh + a − pt][j·sw + b − pl], zero outside
    for a in 0..sh {
        for b in 0..sw {
            // columns j with 0 ≤ j·sw + b − pl < w: j0..j1
            let j0 = g.pl().saturating_sub(b).div_ceil(sw).min(cols);
            let j1 = if w + g.pl() > b { ((w + g.pl() - b - 1) / sw + 1).min(cols) } else { 0 }.max(j0);
            for i in 0..rows {
                let dst = &mut phases[((a * sw + b) * rows + i) * cols..][..cols];
                let Some(iy) = (i * sh + a).checked_sub(g.pt()).filter(|&iy| iy < g.h()) else {
                    dst.fill(T::zero());
                    continue;
                };
                let src = &xp[iy * w..][..w];
                dst[..j0].fill(T::zero());
                dst[j1..].fill(T::zero());
                if j0 == j1 {
                    continue;
                }
                let ix0 = j0 * sw + b - g.pl();
                if sw == 1 {
                    dst[j0..j1].copy_from_slice(&src[ix0..ix0 + (j1 - j0)]);
                } else if sw == 2 {
                    // every other value, read as pairs: a stride the compiler knows, which it
                    // can turn into wide loads and shuffles (a `step_by` walk is a scalar
                    // loop); the last one alone, as its pair may run past the row
                    let (body, last) = dst[j0..j1].split_at_mut(j1 - j0 - 1);
                    for (d, pair) in body.iter_mut().zip(src[ix0..].chunks_exact(2)) {
                        *d = pair[0];
                    }
                    last[0] = src[ix0 + 2 * (j1 - j0 - 1)];
                } else {
                    for (d, &v) in dst[j0..j1].iter_mut().zip(src[ix0..].iter().step_by(sw)) {
                        *d = v;
                    }
                }
            }
        }
    }
    // out[oy·cols + ox] (ox < Wo are the outputs, the rest scratch), one axpy per tap
    let n = ho * cols;
    let out = &mut rest[..n];
    let tap = |ky: usize, kx: usize| ((ky % sh * sw + kx % sw) * phase + (ky / sh) * cols + kx / sw, wk[ky * kw + kx]);
    if kh * kw <= MAX_TAPS {
        let mut taps = [(0usize, T::zero()); MAX_TAPS];
        for (i, t) in taps.iter_mut().take(kh * kw).enumerate() {
            *t = tap(i / kw, i % kw);
        }
        taps_into_registers(out, phases, &taps[..kh * kw]);
    } else {
        out.fill(T::zero());
        for ky in 0..kh {
            for kx in 0..kw {
                let (base, wv) = tap(ky, kx);
                for (o, &v) in out.iter_mut().zip(&phases[base..base + n]) {
                    *o += v * wv;
                }
            }
        }
    }
    let mut total = 0.0f64;
    for (oy, row) in yp.chunks_exact_mut(wo).enumerate() {
        bias_act_into_generic(row, &out[oy * cols..][..wo], bias, act);
        if sum {
            total += row_sum_f64(row);
        }
    }
    total
}
