//! Depthwise convolution (one input channel per group) on the CPU, one output row at a time: for
//! each kernel tap the output columns whose input lies inside the image form one range, so the
//! inner loop is a bounds-test-free axpy over the row (vectorised at the CPU's width, simd.rs)
//! instead of a per-pixel, per-tap padding test. At stride 2 each input row is first split into
//! its even and odd columns, so every tap reads a contiguous run there too. Every output element
//! still sums its taps in (ky, kx) order from zero and adds the bias last, so the result is
//! bit-identical to the per-pixel loop.
//!
//! Planes whose taps are finite go through the plane-axpy kernel instead (depthwise_axpy.rs: one
//! long axpy per tap over a padded copy, the same bits), which does not pay the row kernel's loop
//! overhead per tap and row on small planes.
//!
//! Fused for EfficientNet's blocks (`conv2d_depthwise_fused`): the activation applied to each row
//! right after its bias (the same operations as the activation op afterwards), and squeeze-excite's
//! squeeze, each plane's mean of the activated output, summed in f64 while the row is in cache.

use super::activation::bias_act_generic;
use super::depthwise_axpy::{plane_axpy_generic, scratch_len};
use super::real::Real;
use super::simd::{isa, multiversion, Isa};
use crate::backend::Activation;
use crate::ops::contract::Conv2dGeom;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Output columns `ox` with input column `ox·sw + kx − pl` in `0..w`, as `lo..hi`.
#[inline]
pub(super) fn valid_cols(g: &Conv2dGeom, kx: usize) -> (usize, usize) {
    let lo = g.pl().saturating_sub(kx).div_ceil(g.sw()).min(g.wo());
    let hi = if g.w() + g.pl() > kx { ((g.w() + g.pl() - kx - 1) / g.sw() + 1).min(g.wo()) } else { 0 };
    (lo, hi.max(lo))
}

/// y[n, oc] = Σ_taps x[n, oc/og] ⋆ w[oc] (+ bias[oc]); `y` holds N·O planes of Ho×Wo.
pub fn conv2d_depthwise<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T], g: &Conv2dGeom) {
    conv2d_depthwise_fused(x, w, bias, None, y, None, g)
}

/// `conv2d_depthwise` with y = act(conv + bias) when `act` is given, and with `means` (N·O values)
/// each output plane's mean: Σ in f64 (eight partial sums per row, so the order differs from a
/// sequential f64 sum by f64 roundings only), divided by Ho·Wo, rounded to T once.
pub fn conv2d_depthwise_fused<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, act: Option<Activation>, y: &mut [T], means: Option<&mut [T]>, g: &Conv2dGeom) {
    conv2d_depthwise_fused_on(isa(), kernel(), x, w, bias, act, y, means, g)
}

/// `conv2d_depthwise_fused` at the vector width of `isa` (capped at the CPU's) with plane kernel
/// `kernel`, for the tests that compare the widths and the kernels.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_depthwise_fused_on<T: Real>(isa: Isa, kernel: Kernel, x: &[T], w: &[T], bias: Option<&[T]>, act: Option<Activation>, y: &mut [T], means: Option<&mut [T]>, g: &Conv2dGeom) {
    let (plane, khw) = (g.ho() * g.wo(), g.kh() * g.kw());
    let cols: Vec<(usize, usize)> = (0..g.kw()).map(|kx| valid_cols(g, kx)).collect();
    let scratch = scratch_len(g);
    let (sum, axpy) = (means.is_some(), kernel == Kernel::Axpy);
    // scratch per worker: the padded copy (axpy) or the split row (stride 2)
    let one = |buf: &mut Vec<T>, idx: usize, yp: &mut [T]| -> f64 {
        let (ni, oc) = (idx / g.o(), idx % g.o());
        let xp = &x[(ni * g.c() + oc / g.og()) * g.h() * g.w()..][..g.h() * g.w()];
        let wk = &w[oc * khw..][..khw];
        let b = bias.map(|b| b[oc]);
        // the padded kernel adds 0·w for padding taps: exact only for finite taps
        if axpy && wk.iter().all(|v| v.is_finite()) {
            buf.resize(scratch, T::zero());
            plane_axpy_kernel(isa, xp, wk, b, act, yp, buf, g, sum)
        } else {
            buf.resize(g.w() + 1, T::zero());
            plane_kernel(isa, xp, wk, b, act, yp, buf, &cols, g, sum)
        }
    };
    match means {
        Some(m) => y.par_chunks_mut(plane).zip(m.par_iter_mut()).enumerate().for_each_init(Vec::new, |buf, (idx, (yp, mv))| *mv = T::of(one(buf, idx, yp) / plane as f64)),
        None => y.par_chunks_mut(plane).enumerate().for_each_init(Vec::new, |buf, (idx, yp)| {
            one(buf, idx, yp);
        }),
    }
}

/// Which plane kernel runs: `RAN_CPU_DEPTHWISE=rows` keeps the row kernel (for comparisons);
/// otherwise the plane-axpy one (depthwise_axpy.rs) wherever its taps are finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Rows,
    Axpy,
}

fn kernel() -> Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    *K.get_or_init(|| if std::env::var("RAN_CPU_DEPTHWISE").as_deref().map(str::trim) == Ok("rows") { Kernel::Rows } else { Kernel::Axpy })
}

multiversion!(
    /// One output plane (`plane_axpy_generic`) at the width of `isa`.
    fn plane_axpy_kernel => plane_axpy_generic<T: Real>(xp: &[T], wk: &[T], bias: Option<T>, act: Option<Activation>, yp: &mut [T], scratch: &mut [T], g: &Conv2dGeom, sum: bool) -> f64
);

multiversion!(
    /// One output plane (`plane_generic`) at the width of `isa`.
    fn plane_kernel => plane_generic<T: Real>(xp: &[T], wk: &[T], bias: Option<T>, act: Option<Activation>, yp: &mut [T], split: &mut [T], cols: &[(usize, usize)], g: &Conv2dGeom, sum: bool) -> f64
);

/// One output plane yp from input plane xp and the channel's taps wk; returns Σ yp in f64 when
/// `sum` (else 0). `split` holds W + 1 values at stride 2 (the even columns, then the odd ones).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn plane_generic<T: Real>(xp: &[T], wk: &[T], bias: Option<T>, act: Option<Activation>, yp: &mut [T], split: &mut [T], cols: &[(usize, usize)], g: &Conv2dGeom, sum: bool) -> f64 {
    let (w, sw) = (g.w(), g.sw());
    let half = w.div_ceil(2);
    let mut total = 0.0f64;
    for (oy, row) in yp.chunks_exact_mut(g.wo()).enumerate() {
        row.fill(T::zero());
        for ky in 0..g.kh() {
            let Some(iy) = (oy * g.sh() + ky).checked_sub(g.pt()).filter(|&iy| iy < g.h()) else { continue };
            let srow = &xp[iy * w..][..w];
            if sw == 2 {
                // split[..half] = even columns, split[half..] = odd ones
                let (ev, od) = split.split_at_mut(half);
                for i in 0..w / 2 {
                    ev[i] = srow[2 * i];
                    od[i] = srow[2 * i + 1];
                }
                if w % 2 == 1 {
                    ev[half - 1] = srow[w - 1];
                }
            }
            for (kx, &(lo, hi)) in cols.iter().enumerate() {
                if lo == hi {
                    continue;
                }
                let wv = wk[ky * g.kw() + kx];
                // ix = ox·sw + kx − pl ≥ 0 for ox ≥ lo
                let ix0 = lo * sw + kx - g.pl();
                let n = hi - lo;
                let dst = &mut row[lo..hi];
                let src: &[T] = match sw {
                    1 => &srow[ix0..ix0 + n],
                    // ix0 + 2j is column (ix0 / 2 + j) of the even or the odd half
                    2 if ix0 % 2 == 0 => &split[ix0 / 2..ix0 / 2 + n],
                    2 => &split[half + ix0 / 2..half + ix0 / 2 + n],
                    _ => {
                        for (j, d) in dst.iter_mut().enumerate() {
                            *d += srow[ix0 + j * sw] * wv;
                        }
                        continue;
                    }
                };
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d += v * wv;
                }
            }
        }
        bias_act_generic(row, bias, act);
        if sum {
            total += row_sum_f64(row);
        }
    }
    total
}

/// Σ row in f64, in eight interleaved partial sums (a single chain is one dependent add per value).
#[inline(always)]
pub(super) fn row_sum_f64<T: Real>(row: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v.f64();
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|v| v.f64()).sum::<f64>()
}
