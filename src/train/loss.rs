//! The paper's training loss per sample, as upstream's `GaussianDiffusion.training_losses` with
//! LossType.MSE and learned-range variance (docs/method.md §5, §7): mse = mean (ε − ε̂)²;
//! vb = KL(q(x_{t−1}|x_t,x0) ‖ p(x_{t−1}|x_t)) in bits per element with the model's ε̂ detached
//! (only the variance channels v learn from it), the discretised decoder NLL at t = 0; plus the
//! feature MSE of the anomaly head, one scalar over the batch added to every sample's loss.
//! loss = mean over the batch of (mse + vb) + feat_mse.
//!
//! Computed on the host in f64 from the downloaded outputs: a few values per pixel, next to a UNet
//! forward and backward of ~10⁹ FLOPs per pixel batch, so it never matters for speed.

use crate::diffusion::Diffusion;
use crate::{Error, Result};

/// Loss terms of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct LossTerms {
    pub mse: Vec<f64>,
    pub vb: Vec<f64>,
    pub feat_mse: Option<f64>,
    /// mean over the batch of mse + vb, plus feat_mse
    pub loss: f64,
}

/// ∂loss/∂(model output) [N, 2C, H, W] and ∂loss/∂(feature prediction).
pub struct LossGrads {
    pub g_out: Vec<f32>,
    pub g_feat: Option<Vec<f32>>,
}

/// The model's outputs and what they are scored against.
pub struct Batch<'a> {
    /// x0, x_t and ε, each [N, C, H, W]; `dims` = [N, C, H, W]
    pub x0: &'a [f32],
    pub xt: &'a [f32],
    pub eps: &'a [f32],
    pub dims: [usize; 4],
    /// per sample, the index into the (unrespaced) training schedule
    pub t: &'a [usize],
    /// [N, 2C, H, W]: ε̂ then v
    pub out: &'a [f32],
    /// (prediction, target) of the feature head, same length
    pub feat: Option<(&'a [f32], &'a [f32])>,
}

/// The tanh approximation of the standard normal CDF upstream uses, and its derivative.
fn approx_cdf(x: f64) -> (f64, f64) {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let u = k * (x + 0.044715 * x * x * x);
    let th = u.tanh();
    (0.5 * (1.0 + th), 0.5 * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x))
}

/// −log P(x0 | N(mean, e^{2·log_scale}) discretised to bins of 2/255), upstream's
/// discretized_gaussian_log_likelihood with its edge bins and 1e-12 clamps, and the derivative
/// with respect to log_scale.
fn decoder_nll(x: f64, mean: f64, log_scale: f64) -> (f64, f64) {
    let inv = (-log_scale).exp();
    let c = x - mean;
    let (plus_in, min_in) = (inv * (c + 1.0 / 255.0), inv * (c - 1.0 / 255.0));
    let (cdf_plus, d_plus) = approx_cdf(plus_in);
    let (cdf_min, d_min) = approx_cdf(min_in);
    // d(z)/d(log_scale) = −z for z = (c ± 1/255)·e^{−log_scale}
    let (p, dp) = if x < -0.999 {
        (cdf_plus, d_plus * -plus_in)
    } else if x > 0.999 {
        (1.0 - cdf_min, -d_min * -min_in)
    } else {
        (cdf_plus - cdf_min, d_plus * -plus_in - d_min * -min_in)
    };
    if p < 1e-12 {
        (-(1e-12f64).ln(), 0.0)
    } else {
        (-p.ln(), -dp / p)
    }
}

/// The loss of a batch and its gradient with respect to the model's outputs.
pub fn diffusion_loss(d: &Diffusion, b: &Batch) -> Result<(LossTerms, LossGrads)> {
    let [n, c, h, w] = b.dims;
    let m = c * h * w;
    let want = n * m;
    if b.x0.len() != want || b.xt.len() != want || b.eps.len() != want || b.out.len() != 2 * want || b.t.len() != n || n == 0 || m == 0 {
        return Err(Error::shape("diffusion_loss", format!("batch {:?}: x0/x_t/ε need {want} values, the output (ε̂, v) {}, t {n}", b.dims, 2 * want)));
    }
    if let Some(&bad) = b.t.iter().find(|&&t| t >= d.num_steps()) {
        return Err(Error::InvalidArgument(format!("timestep {bad} outside the {}-step training schedule", d.num_steps())));
    }
    let ln2 = std::f64::consts::LN_2;
    let mut g_out = vec![0.0f32; 2 * want];
    let (mut mse, mut vb) = (vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let t = b.t[i];
        let (sra, srm1) = (d.sqrt_recip_alphas_cumprod[t], d.sqrt_recipm1_alphas_cumprod[t]);
        let (c1, c2) = (d.posterior_mean_coef1[t], d.posterior_mean_coef2[t]);
        let (lv1, log_beta) = (d.posterior_log_variance_clipped[t], d.betas[t].ln());
        let (o_eps, o_v) = (&b.out[2 * i * m..][..m], &b.out[(2 * i + 1) * m..][..m]);
        let (g_eps, g_v) = g_out[2 * i * m..][..2 * m].split_at_mut(m);
        for j in 0..m {
            let e = i * m + j;
            let (x0, xt, eps) = (b.x0[e] as f64, b.xt[e] as f64, b.eps[e] as f64);
            let (eh, v) = (o_eps[j] as f64, o_v[j] as f64);
            mse[i] += (eps - eh) * (eps - eh);
            g_eps[j] = (2.0 * (eh - eps) / (m * n) as f64) as f32;
            // p(x_{t−1}|x_t) with ε̂ detached and x̂0 unclipped (clip_denoised=False)
            let mean_p = c1 * (sra * xt - srm1 * eh) + c2 * xt;
            let frac = (v + 1.0) / 2.0;
            let lv2 = frac * log_beta + (1.0 - frac) * lv1;
            let dlv2_dv = (log_beta - lv1) / 2.0;
            let (term, dterm_dlv2) = if t == 0 {
                let (nll, d_ls) = decoder_nll(x0, mean_p, 0.5 * lv2);
                (nll, 0.5 * d_ls)
            } else {
                let mean_q = c1 * x0 + c2 * xt;
                let dm = mean_q - mean_p;
                let kl = 0.5 * (-1.0 + lv2 - lv1 + (lv1 - lv2).exp() + dm * dm * (-lv2).exp());
                (kl, 0.5 * (1.0 - (lv1 - lv2).exp() - dm * dm * (-lv2).exp()))
            };
            vb[i] += term;
            g_v[j] = (dterm_dlv2 * dlv2_dv / (m as f64 * ln2 * n as f64)) as f32;
        }
        mse[i] /= m as f64;
        vb[i] /= m as f64 * ln2;
    }
    let (feat_mse, g_feat) = match b.feat {
        None => (None, None),
        Some((pred, target)) => {
            if pred.len() != target.len() || pred.is_empty() {
                return Err(Error::shape("diffusion_loss", format!("feature prediction of {} values against a target of {}", pred.len(), target.len())));
            }
            let k = pred.len() as f64;
            let s: f64 = pred.iter().zip(target).map(|(&p, &q)| (p as f64 - q as f64).powi(2)).sum();
            (Some(s / k), Some(pred.iter().zip(target).map(|(&p, &q)| (2.0 * (p as f64 - q as f64) / k) as f32).collect()))
        }
    };
    let loss = (0..n).map(|i| mse[i] + vb[i]).sum::<f64>() / n as f64 + feat_mse.unwrap_or(0.0);
    if !loss.is_finite() {
        // name the first term that went bad, so a diverging run says where
        let term = (0..n)
            .find_map(|i| [("mse", mse[i]), ("vb", vb[i])].into_iter().find(|(_, v)| !v.is_finite()).map(|(k, v)| format!("{k} of sample {i} is {v}")))
            .or_else(|| feat_mse.filter(|f| !f.is_finite()).map(|f| format!("feat_mse is {f}")))
            .unwrap_or_else(|| "their sum overflows".into());
        return Err(Error::InvalidArgument(format!("the training loss is not finite: {term} (mse {mse:?}, vb {vb:?}, feat_mse {feat_mse:?})")));
    }
    Ok((LossTerms { mse, vb, feat_mse, loss }, LossGrads { g_out, g_feat }))
}
