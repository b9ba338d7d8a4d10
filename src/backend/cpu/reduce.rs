//! Mean and unbiased standard deviation over a whole tensor (torch's mean() and std()), in f64.

use super::real::Real;
use super::simd::{isa, multiversion};
use rayon::prelude::*;

pub fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.par_iter().map(|&v| v as f64).sum::<f64>() / n;
    let ss = x.par_iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
    (mean, (ss / (n - 1.0)).sqrt())
}

/// Σ over N and the spatial positions of x [N, C, S] → [C] (bias gradients), in f64: each plane
/// in `LANES` interleaved partial sums at the CPU's vector width (a plain fold adds one dependent
/// value per element).
pub fn channel_sum<T: Real>(x: &[T], n: usize, c: usize, s: usize) -> Vec<T> {
    let isa = isa();
    (0..c).into_par_iter().map(|ci| T::of((0..n).map(|ni| plane_sum(isa, &x[(ni * c + ci) * s..][..s])).sum::<f64>())).collect()
}

const LANES: usize = 8;

#[inline(always)]
fn plane_sum_generic<T: Real>(v: &[T]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += c[j].f64();
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|v| v.f64()).sum::<f64>()
}

multiversion!(
    /// `plane_sum_generic` at the width of `isa`.
    fn plane_sum => plane_sum_generic<T: Real>(v: &[T]) -> f64
);
