//! Mean and unbiased standard deviation over a whole tensor (torch's mean() and std()), in f64.

use rayon::prelude::*;

pub fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.par_iter().map(|&v| v as f64).sum::<f64>() / n;
    let ss = x.par_iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
    (mean, (ss / (n - 1.0)).sqrt())
}

/// Σ over N and the spatial positions of x [N, C, S] → [C] (bias gradients), in f64.
pub fn channel_sum<T: crate::backend::cpu::real::Real>(x: &[T], n: usize, c: usize, s: usize) -> Vec<T> {
    (0..c).into_par_iter().map(|ci| T::of((0..n).map(|ni| x[(ni * c + ci) * s..][..s].iter().map(|v| v.f64()).sum::<f64>()).sum::<f64>())).collect()
}
