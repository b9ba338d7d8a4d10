//! Average / max pooling (square window, stride, symmetric padding, floor mode), global average
//! pooling, and their input gradients. One task per (n, c) plane.

use super::real::Real;
use crate::ops::contract::Pool2dGeom;
use rayon::prelude::*;

impl Pool2dGeom {
    /// Input positions of the window of output (oy, ox) that fall inside the image.
    #[inline]
    fn window(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (y0, x0) = (oy * self.st(), ox * self.st());
        (0..self.k()).flat_map(move |ky| (0..self.k()).map(move |kx| (y0 + ky, x0 + kx))).filter_map(move |(y, x)| {
            let (iy, ix) = (y.checked_sub(self.p())?, x.checked_sub(self.p())?);
            (iy < self.h() && ix < self.w()).then_some((iy, ix))
        })
    }
}

/// Divides by k² always (count_include_pad=True, PyTorch's default).
pub fn avg_pool2d<T: Real>(x: &[T], g: &Pool2dGeom) -> Vec<T> {
    let inv = T::one() / T::of_usize(g.k() * g.k());
    let mut y = vec![T::zero(); x.len() / (g.h() * g.w()) * g.ho() * g.wo()];
    y.par_chunks_mut(g.ho() * g.wo()).zip(x.par_chunks(g.h() * g.w())).for_each(|(yp, xp)| {
        for oy in 0..g.ho() {
            for ox in 0..g.wo() {
                let s: T = g.window(oy, ox).map(|(iy, ix)| xp[iy * g.w() + ix]).sum();
                yp[oy * g.wo() + ox] = s * inv;
            }
        }
    });
    y
}

pub fn avg_pool2d_x_backward<T: Real>(gy: &[T], g: &Pool2dGeom) -> Vec<T> {
    let inv = T::one() / T::of_usize(g.k() * g.k());
    let mut gx = vec![T::zero(); gy.len() / (g.ho() * g.wo()) * g.h() * g.w()];
    gx.par_chunks_mut(g.h() * g.w()).zip(gy.par_chunks(g.ho() * g.wo())).for_each(|(gp, yp)| {
        for oy in 0..g.ho() {
            for ox in 0..g.wo() {
                let v = yp[oy * g.wo() + ox] * inv;
                g.window(oy, ox).for_each(|(iy, ix)| gp[iy * g.w() + ix] += v);
            }
        }
    });
    gx
}

/// Index of the first maximum in scan order (PyTorch keeps the first; NaN wins like in torch).
fn argmax<T: Real>(xp: &[T], g: &Pool2dGeom, oy: usize, ox: usize) -> usize {
    let mut best = usize::MAX;
    let mut bv = T::neg_infinity();
    for (iy, ix) in g.window(oy, ox) {
        let v = xp[iy * g.w() + ix];
        if best == usize::MAX || v > bv || v.is_nan() {
            best = iy * g.w() + ix;
            bv = v;
            if v.is_nan() {
                break;
            }
        }
    }
    best
}

pub fn max_pool2d<T: Real>(x: &[T], g: &Pool2dGeom) -> Vec<T> {
    let mut y = vec![T::zero(); x.len() / (g.h() * g.w()) * g.ho() * g.wo()];
    y.par_chunks_mut(g.ho() * g.wo()).zip(x.par_chunks(g.h() * g.w())).for_each(|(yp, xp)| {
        for oy in 0..g.ho() {
            for ox in 0..g.wo() {
                yp[oy * g.wo() + ox] = xp[argmax(xp, g, oy, ox)];
            }
        }
    });
    y
}

pub fn max_pool2d_x_backward<T: Real>(gy: &[T], x: &[T], g: &Pool2dGeom) -> Vec<T> {
    let mut gx = vec![T::zero(); x.len()];
    gx.par_chunks_mut(g.h() * g.w()).zip(x.par_chunks(g.h() * g.w()).zip(gy.par_chunks(g.ho() * g.wo()))).for_each(|(gp, (xp, yp))| {
        for oy in 0..g.ho() {
            for ox in 0..g.wo() {
                gp[argmax(xp, g, oy, ox)] += yp[oy * g.wo() + ox];
            }
        }
    });
    gx
}

pub fn global_avg_pool<T: Real>(x: &[T], plane: usize) -> Vec<T> {
    x.par_chunks(plane).map(|p| T::of(p.iter().map(|v| v.f64()).sum::<f64>() / plane as f64)).collect()
}
