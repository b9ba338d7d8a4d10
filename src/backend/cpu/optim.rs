//! Optimiser updates on the CPU, in the kernels' (and torch.optim.AdamW's) operation order.
//! Kernel twin: kernels/optim.cu.

use crate::ops::contract::AdamwCoefs;
use rayon::prelude::*;

/// (θ, m, v) after one AdamW step.
pub fn adamw_step(param: &[f32], grad: &[f32], m: &[f32], v: &[f32], k: &AdamwCoefs) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let r: Vec<(f32, f32, f32)> = (0..param.len())
        .into_par_iter()
        .map(|i| {
            let g = grad[i];
            let p = param[i] * k.decay;
            let mi = m[i] + k.one_minus_beta1 * (g - m[i]);
            let vi = v[i] * k.beta2 + k.one_minus_beta2 * g * g;
            let denom = vi.sqrt() / k.bc2_sqrt + k.eps;
            (p - k.step_size * (mi / denom), mi, vi)
        })
        .collect();
    (r.iter().map(|t| t.0).collect(), r.iter().map(|t| t.1).collect(), r.iter().map(|t| t.2).collect())
}

pub fn axpby(a: &[f32], b: &[f32], alpha: f32, beta: f32) -> Vec<f32> {
    a.par_iter().zip(b.par_iter()).map(|(&x, &y)| alpha * x + beta * y).collect()
}
