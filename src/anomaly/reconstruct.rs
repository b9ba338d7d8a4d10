//! The paper's gradient denoising (Algorithm 1, docs/method.md §4): an anomalous image is walked toward a
//! normal one by normalised gradient steps on the PaDiM loss with weight decay, and every N_d
//! steps one diffusion denoising step at respaced index k pulls it back onto the image manifold:
//!
//!   x ← x0; repeat `iters` times:
//!       repeat N_d times:  g ← −∇L(x) / std(∇L(x));  x ← √(1−s²)·x + s·g
//!       x ← μ_θ(x, k)  (model posterior mean, x̂0 clipped to [−1, 1]; + σ·z when stochastic)
//!
//! s·g with unit-variance g acts as the noise of a forward step of variance s², which the
//! denoising step then removes. std is the unbiased standard deviation over each image's
//! elements (the official code normalises a second time, by the same ≈1 factor; omitted).

use super::padim::Padim;
use super::score::var_type_of;
use crate::backend::Backend;
use crate::diffusion::Diffusion;
use crate::models::unet::UNet;
use crate::tensor::Tensor;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct ReconstructConfig {
    /// outer iterations I (each: `nd` gradient steps + one denoising step)
    pub iters: usize,
    /// gradient steps per denoising step, N_d
    pub nd: usize,
    /// step size s (the weight decay is √(1−s²))
    pub lr: f32,
    /// respaced index of the denoising step
    pub k: usize,
    /// add σ_k·z after the posterior mean (the stochastic reading of the paper)
    pub denoise_noise: bool,
    pub seed: u64,
}

impl Default for ReconstructConfig {
    fn default() -> Self {
        ReconstructConfig { iters: 100, nd: 5, lr: 0.02, k: 8, denoise_noise: false, seed: 0 }
    }
}

impl ReconstructConfig {
    pub fn check(&self, diffusion: &Diffusion) -> Result<()> {
        if self.nd == 0 {
            return Err(Error::InvalidArgument("--nd must be at least 1".into()));
        }
        if !(self.lr > 0.0 && self.lr < 1.0) {
            return Err(Error::InvalidArgument(format!("--lr {}: the step size s must lie in (0, 1) (the decay is √(1−s²))", self.lr)));
        }
        if self.k >= diffusion.num_steps() {
            return Err(Error::InvalidArgument(format!("--k {}: outside 0..{} of the respaced schedule", self.k, diffusion.num_steps())));
        }
        Ok(())
    }
}

/// Per-image factors c_i = −s/std_i(∇L) as an [N,1,1,1] tensor, so that x + c·∇L is the step.
fn step_factors<B: Backend>(b: &B, grad: &Tensor<B>, lr: f32) -> Result<Tensor<B>> {
    let n = grad.dims()[0];
    let per = grad.numel() / n.max(1);
    let flat = b.reshape(grad, &[1, n * per, 1])?;
    let mut c = Vec::with_capacity(n);
    for i in 0..n {
        let (_, sd) = b.mean_std(&b.slice_channels(&flat, i * per, (i + 1) * per)?)?;
        if !(sd > 0.0 && sd.is_finite()) {
            return Err(Error::InvalidArgument(format!("image {i}: the PaDiM gradient has standard deviation {sd} (constant or non-finite), cannot normalise it")));
        }
        c.push((-(lr as f64) / sd) as f32);
    }
    b.from_host(&[n, 1, 1, 1], &c)
}

/// One gradient step x ← √(1−s²)·x − s·∇L/std(∇L); returns the new x and L before the step.
pub fn gradient_step<B: Backend>(b: &B, padim: &Padim<B>, x: &Tensor<B>, lr: f32) -> Result<(Tensor<B>, Vec<f64>)> {
    let lg = padim.loss_and_grad(b, x)?;
    let c = step_factors(b, &lg.grad, lr)?;
    let decay = (1.0 - (lr as f64) * (lr as f64)).sqrt() as f32;
    Ok((b.add(&b.scale_add_scalar(x, decay, 0.0)?, &b.mul(&lg.grad, &c)?)?, lg.loss))
}

/// One denoising step at respaced index k: the posterior mean (x̂0 clipped), plus σ·z if `z`.
pub fn denoise_step<B: Backend>(b: &B, unet: &UNet<B>, diffusion: &Diffusion, x: &Tensor<B>, k: usize, y: Option<&[usize]>, z: Option<&Tensor<B>>) -> Result<Tensor<B>> {
    let n = x.dims()[0];
    let t = diffusion.model_timestep(k, unet.flags.rescale_timesteps);
    let out = unet.forward_graphed(b, x, &b.from_host(&[n], &vec![t; n])?, y)?; // a graph on CUDA: the same values
    let c = diffusion.step_coefs(k, var_type_of(&unet.flags), true)?;
    let (mean, logvar, _) = b.p_mean_variance(x, &out.out, &c)?;
    match z {
        Some(z) => b.p_sample(&mean, &logvar, z, k > 0),
        None => Ok(mean),
    }
}

/// What `reconstruct` reports after each outer iteration.
pub struct Progress<'a, B: Backend> {
    pub iter: usize,
    pub x: &'a Tensor<B>,
    /// L per image before this iteration's first gradient step
    pub loss: &'a [f64],
}

/// Algorithm 1 on a batch x0 [N,3,H,W] in [−1, 1]; `on_iter` sees x after every iteration.
/// Returns the reconstruction.
#[allow(clippy::too_many_arguments)]
pub fn reconstruct<B: Backend>(
    b: &B,
    padim: &Padim<B>,
    unet: &UNet<B>,
    diffusion: &Diffusion,
    x0: &Tensor<B>,
    y: Option<&[usize]>,
    cfg: &ReconstructConfig,
    mut on_iter: impl FnMut(Progress<'_, B>) -> Result<()>,
) -> Result<Tensor<B>> {
    cfg.check(diffusion)?;
    let mut x = x0.clone();
    for it in 0..cfg.iters {
        let mut first_loss = Vec::new();
        for j in 0..cfg.nd {
            let (nx, loss) = gradient_step(b, padim, &x, cfg.lr)?;
            if j == 0 {
                first_loss = loss;
            }
            x = nx;
        }
        let z = if cfg.denoise_noise {
            // the same noise for every image of a batch: a result depends on the seed, not the batch
            let n = x.dims()[0];
            Some(b.from_host(x.dims(), &super::noise::gaussian(cfg.seed, it as u64, x.numel() / n).repeat(n))?)
        } else {
            None
        };
        x = denoise_step(b, unet, diffusion, &x, cfg.k, y, z.as_ref())?;
        on_iter(Progress { iter: it + 1, x: &x, loss: &first_loss })?;
    }
    Ok(x)
}
