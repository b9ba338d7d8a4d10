//! The per-element DDPM/DDIM step math on the CPU, in f32 and in upstream guided-diffusion's
//! operation order (its coefficient tables are f64, extracted as f32). Kernel twin:
//! kernels/scheduler.cu.

use crate::ops::contract::{DdimCoefs, StepCoefs};
use crate::ops::VarType;
use rayon::prelude::*;

pub fn q_sample(x0: &[f32], noise: &[f32], sqrt_ab: f32, sqrt_1m_ab: f32) -> Vec<f32> {
    x0.par_iter().zip(noise.par_iter()).map(|(&x, &e)| sqrt_ab * x + sqrt_1m_ab * e).collect()
}

/// (mean, log-variance, x̂0) of p(x_{t−1}|x_t); `model_out` is [N, C or 2C, S] over x's [N, C, S].
pub fn p_mean_variance(xt: &[f32], model_out: &[f32], c: usize, s: usize, k: &StepCoefs) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let cs = c * s;
    let mc = if k.var_type().learned() { 2 * cs } else { cs };
    let n = xt.len();
    let (mut mean, mut logvar, mut px0) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    mean.par_chunks_mut(cs).zip(logvar.par_chunks_mut(cs)).zip(px0.par_chunks_mut(cs)).enumerate().for_each(|(b, ((m, lv), p))| {
        let mo = &model_out[b * mc..][..mc];
        let x = &xt[b * cs..][..cs];
        for r in 0..cs {
            let mut x0 = k.sqrt_recip_ab * x[r] - k.sqrt_recipm1_ab * mo[r];
            if k.clip() {
                x0 = x0.clamp(-1.0, 1.0);
            }
            p[r] = x0;
            m[r] = k.c1 * x0 + k.c2 * x[r];
            lv[r] = match k.var_type() {
                VarType::LearnedRange => {
                    let frac = (mo[cs + r] + 1.0) / 2.0;
                    frac * k.log_beta + (1.0 - frac) * k.post_logvar_clipped
                }
                VarType::Learned => mo[cs + r],
                VarType::FixedLarge | VarType::FixedSmall => k.fixed_logvar,
            };
        }
    });
    (mean, logvar, px0)
}

/// KL(q(x_{t−1}|x_t, x0) ‖ p) per element, in bits.
pub fn kl_bits(x0: &[f32], xt: &[f32], p_mean: &[f32], p_logvar: &[f32], k: &StepCoefs) -> Vec<f32> {
    let inv_ln2 = 1.0f32 / std::f32::consts::LN_2;
    (0..x0.len())
        .into_par_iter()
        .map(|i| {
            let m1 = k.c1 * x0[i] + k.c2 * xt[i];
            let (lv1, lv2) = (k.post_logvar_clipped, p_logvar[i]);
            let d = m1 - p_mean[i];
            0.5 * (-1.0 + lv2 - lv1 + (lv1 - lv2).exp() + d * d * (-lv2).exp()) * inv_ln2
        })
        .collect()
}

pub fn p_sample(mean: &[f32], logvar: &[f32], z: &[f32], nonzero: bool) -> Vec<f32> {
    let nz = if nonzero { 1.0f32 } else { 0.0 };
    (0..mean.len()).into_par_iter().map(|i| mean[i] + nz * (0.5 * logvar[i]).exp() * z[i]).collect()
}

pub fn ddim_step(xt: &[f32], pred_x0: &[f32], z: &[f32], k: &DdimCoefs) -> Vec<f32> {
    let sigma = k.eta * ((1.0 - k.ab_prev) / (1.0 - k.ab)).sqrt() * (1.0 - k.ab / k.ab_prev).sqrt();
    let (k_eps, k_x0) = ((1.0 - k.ab_prev - sigma * sigma).sqrt(), k.ab_prev.sqrt());
    let nz = if k.nonzero != 0 { 1.0f32 } else { 0.0 };
    (0..xt.len())
        .into_par_iter()
        .map(|i| {
            let eps = (k.sqrt_recip_ab * xt[i] - pred_x0[i]) / k.sqrt_recipm1_ab;
            pred_x0[i] * k_x0 + k_eps * eps + nz * sigma * z[i]
        })
        .collect()
}
