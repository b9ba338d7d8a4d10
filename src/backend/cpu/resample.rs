//! Nearest ×2 upsampling and bilinear resizing (align_corners=False, no antialias) with their
//! input gradients. The bilinear source index follows PyTorch's
//! `area_pixel_compute_source_index`: src = (dst+0.5)·in/out − 0.5, clamped at 0, computed in the
//! tensor's own precision like PyTorch's CPU kernel.

use super::real::Real;
use rayon::prelude::*;

pub fn upsample_nearest2x<T: Real>(x: &[T], h: usize, w: usize) -> Vec<T> {
    let mut y = T::for_overwrite(x.len() * 4);
    y.par_chunks_mut(4 * h * w).zip(x.par_chunks(h * w)).for_each(|(yp, xp)| {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                yp[oy * 2 * w + ox] = xp[(oy / 2) * w + ox / 2];
            }
        }
    });
    y
}

pub fn upsample_nearest2x_x_backward<T: Real>(gy: &[T], h: usize, w: usize) -> Vec<T> {
    let mut gx = vec![T::zero(); gy.len() / 4];
    gx.par_chunks_mut(h * w).zip(gy.par_chunks(4 * h * w)).for_each(|(gp, yp)| {
        for oy in 0..2 * h {
            for ox in 0..2 * w {
                gp[(oy / 2) * w + ox / 2] += yp[oy * 2 * w + ox];
            }
        }
    });
    gx
}

/// For each output index: (i0, i1, λ0, λ1) with out = λ0·in[i0] + λ1·in[i1].
pub fn bilinear_taps<T: Real>(inp: usize, out: usize) -> Vec<(usize, usize, T, T)> {
    let scale = T::of_usize(inp) / T::of_usize(out);
    let half = T::of(0.5);
    (0..out)
        .map(|d| {
            let src = (scale * (T::of_usize(d) + half) - half).max(T::zero());
            let i0 = (src.floor().to_usize().unwrap_or(0)).min(inp - 1);
            let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
            let l1 = (src - T::of_usize(i0)).max(T::zero()).min(T::one());
            (i0, i1, T::one() - l1, l1)
        })
        .collect()
}

pub fn resize_bilinear<T: Real>(x: &[T], h: usize, w: usize, ho: usize, wo: usize) -> Vec<T> {
    let (ty, tx) = (bilinear_taps::<T>(h, ho), bilinear_taps::<T>(w, wo));
    let mut y = T::for_overwrite(x.len() / (h * w) * ho * wo);
    y.par_chunks_mut(ho * wo).zip(x.par_chunks(h * w)).for_each(|(yp, xp)| {
        for (oy, &(y0, y1, a0, a1)) in ty.iter().enumerate() {
            let (r0, r1) = (&xp[y0 * w..][..w], &xp[y1 * w..][..w]);
            for (ox, &(x0, x1, b0, b1)) in tx.iter().enumerate() {
                yp[oy * wo + ox] = a0 * (b0 * r0[x0] + b1 * r0[x1]) + a1 * (b0 * r1[x0] + b1 * r1[x1]);
            }
        }
    });
    y
}

pub fn resize_bilinear_x_backward<T: Real>(gy: &[T], h: usize, w: usize, ho: usize, wo: usize) -> Vec<T> {
    let (ty, tx) = (bilinear_taps::<T>(h, ho), bilinear_taps::<T>(w, wo));
    let mut gx = vec![T::zero(); gy.len() / (ho * wo) * h * w];
    gx.par_chunks_mut(h * w).zip(gy.par_chunks(ho * wo)).for_each(|(gp, yp)| {
        for (oy, &(y0, y1, a0, a1)) in ty.iter().enumerate() {
            for (ox, &(x0, x1, b0, b1)) in tx.iter().enumerate() {
                let g = yp[oy * wo + ox];
                gp[y0 * w + x0] += a0 * b0 * g;
                gp[y0 * w + x1] += a0 * b1 * g;
                gp[y1 * w + x0] += a1 * b0 * g;
                gp[y1 * w + x1] += a1 * b1 * g;
            }
        }
    });
    gx
}
