//! Mean and unbiased standard deviation over a whole tensor (torch's mean() and std()), in f64.

use rayon::prelude::*;

pub fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.par_iter().map(|&v| v as f64).sum::<f64>() / n;
    let ss = x.par_iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
    (mean, (ss / (n - 1.0)).sqrt())
}
