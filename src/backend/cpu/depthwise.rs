//! Depthwise convolution (one input channel per group) on the CPU, one output row at a time: for
//! each kernel tap the output columns whose input lies inside the image form one range, so the
//! inner loop is a bounds-test-free axpy over the row (vectorised at stride 1) instead of a
//! per-pixel, per-tap padding test. Every output element still sums its taps in (ky, kx) order
//! from zero and adds the bias last, so the result is bit-identical to the per-pixel loop.

use super::real::Real;
use crate::ops::contract::Conv2dGeom;
use rayon::prelude::*;

/// Output columns `ox` with input column `ox·sw + kx − pl` in `0..w`, as `lo..hi`.
#[inline]
pub(super) fn valid_cols(g: &Conv2dGeom, kx: usize) -> (usize, usize) {
    let lo = g.pl().saturating_sub(kx).div_ceil(g.sw()).min(g.wo());
    let hi = if g.w() + g.pl() > kx { ((g.w() + g.pl() - kx - 1) / g.sw() + 1).min(g.wo()) } else { 0 };
    (lo, hi.max(lo))
}

/// y[n, oc] = Σ_taps x[n, oc/og] ⋆ w[oc] (+ bias[oc]); `y` holds N·O planes of Ho×Wo.
pub fn conv2d_depthwise<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T], g: &Conv2dGeom) {
    let (plane, og, khw) = (g.ho() * g.wo(), g.og(), g.kh() * g.kw());
    let cols: Vec<(usize, usize)> = (0..g.kw()).map(|kx| valid_cols(g, kx)).collect();
    y.par_chunks_mut(plane).enumerate().for_each(|(idx, yp)| {
        let (ni, oc) = (idx / g.o(), idx % g.o());
        let xp = &x[(ni * g.c() + oc / og) * g.h() * g.w()..][..g.h() * g.w()];
        let wk = &w[oc * khw..][..khw];
        for (oy, row) in yp.chunks_exact_mut(g.wo()).enumerate() {
            row.fill(T::zero());
            for ky in 0..g.kh() {
                let Some(iy) = (oy * g.sh() + ky).checked_sub(g.pt()).filter(|&iy| iy < g.h()) else { continue };
                let srow = &xp[iy * g.w()..][..g.w()];
                for (kx, &(lo, hi)) in cols.iter().enumerate() {
                    if lo == hi {
                        continue;
                    }
                    let wv = wk[ky * g.kw() + kx];
                    // ix = ox·sw + kx − pl ≥ 0 for ox ≥ lo
                    let ix0 = lo * g.sw() + kx - g.pl();
                    if g.sw() == 1 {
                        for (d, &s) in row[lo..hi].iter_mut().zip(&srow[ix0..ix0 + (hi - lo)]) {
                            *d += s * wv;
                        }
                    } else {
                        for (j, d) in row[lo..hi].iter_mut().enumerate() {
                            *d += srow[ix0 + j * g.sw()] * wv;
                        }
                    }
                }
            }
            if let Some(b) = bias {
                let bv = b[oc];
                row.iter_mut().for_each(|v| *v += bv);
            }
        }
    });
}
