//! The `Backend` trait is the one place where ops are declared. Every op takes and returns
//! tensors that live on the backend (no host slices of data in the signatures, so a GPU can honour
//! them); the only host data crossing the boundary is in `from_host`/`to_host`, small index lists
//! and scalars. Input gradients follow burn's split: `*_x_backward` returns the gradient with
//! respect to the input only, never the weights.
//!
//! Semantics are PyTorch's, op by op (the fixtures in tests/fixtures come from torch itself).

pub mod cpu;
pub mod cuda;
pub mod params;
pub mod select;

pub use params::{Activation, Conv2dParams, DdimCoefs, GroupNormParams, Padding2d, Pool2dParams, StepCoefs, VarType};

use crate::tensor::{Shape, Tensor};
use crate::Result;

/// Optional fused `GN(x)·(1+scale)+shift` of guided-diffusion's scale-shift ResBlocks;
/// `scale` and `shift` are [N, C] (or [N, C, 1, 1]).
pub type ScaleShift<'a, B> = Option<(&'a Tensor<B>, &'a Tensor<B>)>;

pub trait Backend: Sized + Send + Sync + 'static {
    type Storage: Clone + Send + Sync;

    /// Short name and details for `ran info` and logs.
    fn name(&self) -> String;

    // ---- transfers -----------------------------------------------------------------------------
    fn from_host(&self, dims: &[usize], data: &[f32]) -> Result<Tensor<Self>>;
    /// `from_host` taking ownership, so a backend whose storage is host memory keeps the buffer
    /// instead of copying it (gigabyte-sized PaDiM statistics).
    fn from_host_vec(&self, dims: &[usize], data: Vec<f32>) -> Result<Tensor<Self>> {
        self.from_host(dims, &data)
    }
    /// The values in logical row-major (NCHW) order.
    fn to_host(&self, x: &Tensor<Self>) -> Result<Vec<f32>>;
    fn zeros(&self, dims: &[usize]) -> Result<Tensor<Self>> {
        self.from_host(dims, &vec![0.0; dims.iter().product()])
    }
    /// Same values under a new shape with the same element count.
    fn reshape(&self, x: &Tensor<Self>, dims: &[usize]) -> Result<Tensor<Self>>;

    // ---- convolution and linear ------------------------------------------------------------------
    /// PyTorch `conv2d` (dilation 1) with asymmetric zero padding and groups (depthwise included).
    /// x [N,C,H,W], w [O,C/groups,KH,KW], bias [O].
    fn conv2d(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, p: &Conv2dParams) -> Result<Tensor<Self>>;
    /// ∂L/∂x of `conv2d` given ∂L/∂y; `x_shape` fixes the input size that stride made ambiguous.
    fn conv2d_x_backward(&self, gy: &Tensor<Self>, w: &Tensor<Self>, x_shape: &Shape, p: &Conv2dParams) -> Result<Tensor<Self>>;
    /// y = x·wᵀ + b with x [N, in], w [out, in].
    fn linear(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>) -> Result<Tensor<Self>>;
    fn linear_x_backward(&self, gy: &Tensor<Self>, w: &Tensor<Self>) -> Result<Tensor<Self>>;

    // ---- normalisation ---------------------------------------------------------------------------
    /// GroupNorm over [N, C, *] (statistics in f32 or better), affine γ,β [C]; optionally fused
    /// scale-shift and SiLU: act(GN(x)·(1+scale)+shift).
    fn group_norm(&self, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<Tensor<Self>>;
    fn group_norm_x_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<Tensor<Self>>;
    /// Inference batch norm folded to y = x·scale[c] + shift[c] (see `fold_batch_norm`).
    fn channel_affine(&self, x: &Tensor<Self>, scale: &Tensor<Self>, shift: &Tensor<Self>) -> Result<Tensor<Self>>;
    fn channel_affine_x_backward(&self, gy: &Tensor<Self>, scale: &Tensor<Self>) -> Result<Tensor<Self>>;

    // ---- elementwise -----------------------------------------------------------------------------
    fn activation(&self, x: &Tensor<Self>, act: Activation) -> Result<Tensor<Self>>;
    fn activation_x_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, act: Activation) -> Result<Tensor<Self>>;
    /// a + b, with b broadcast to a's shape (same rank; each dim of b equal to a's or 1).
    fn add(&self, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<Tensor<Self>>;
    /// a · b, broadcast like `add`.
    fn mul(&self, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<Tensor<Self>>;
    /// (∂L/∂a, ∂L/∂b) of `add`; ∂L/∂b is summed over its broadcast dims.
    fn add_x_backward(&self, gy: &Tensor<Self>, b_shape: &Shape) -> Result<(Tensor<Self>, Tensor<Self>)>;
    /// (∂L/∂a, ∂L/∂b) of `mul`.
    fn mul_x_backward(&self, gy: &Tensor<Self>, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<(Tensor<Self>, Tensor<Self>)>;
    /// y = alpha·x + beta with host scalars (z-scoring, step updates).
    fn scale_add_scalar(&self, x: &Tensor<Self>, alpha: f32, beta: f32) -> Result<Tensor<Self>>;

    // ---- pooling and resampling -----------------------------------------------------------------
    fn avg_pool2d(&self, x: &Tensor<Self>, p: &Pool2dParams) -> Result<Tensor<Self>>;
    fn avg_pool2d_x_backward(&self, gy: &Tensor<Self>, x_shape: &Shape, p: &Pool2dParams) -> Result<Tensor<Self>>;
    fn max_pool2d(&self, x: &Tensor<Self>, p: &Pool2dParams) -> Result<Tensor<Self>>;
    /// Routes each output gradient to the first maximal input of its window, like PyTorch.
    fn max_pool2d_x_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, p: &Pool2dParams) -> Result<Tensor<Self>>;
    /// [N,C,H,W] → [N,C,1,1].
    fn global_avg_pool(&self, x: &Tensor<Self>) -> Result<Tensor<Self>>;
    fn upsample_nearest2x(&self, x: &Tensor<Self>) -> Result<Tensor<Self>>;
    fn upsample_nearest2x_x_backward(&self, gy: &Tensor<Self>) -> Result<Tensor<Self>>;
    /// F.interpolate(mode="bilinear", align_corners=False, antialias=False) to (out_h, out_w).
    fn resize_bilinear(&self, x: &Tensor<Self>, out_h: usize, out_w: usize) -> Result<Tensor<Self>>;
    fn resize_bilinear_x_backward(&self, gy: &Tensor<Self>, in_h: usize, in_w: usize) -> Result<Tensor<Self>>;

    // ---- layout ----------------------------------------------------------------------------------
    /// torch.cat(xs, dim=1).
    fn concat_channels(&self, xs: &[&Tensor<Self>]) -> Result<Tensor<Self>>;
    /// x[:, start..end].
    fn slice_channels(&self, x: &Tensor<Self>, start: usize, end: usize) -> Result<Tensor<Self>>;
    /// Gradients of the parts of `concat_channels`, given the parts' channel counts.
    fn concat_channels_x_backward(&self, gy: &Tensor<Self>, channels: &[usize]) -> Result<Vec<Tensor<Self>>> {
        let mut out = Vec::with_capacity(channels.len());
        let mut start = 0;
        for &c in channels {
            out.push(self.slice_channels(gy, start, start + c)?);
            start += c;
        }
        if start != gy.shape().dim(1) {
            return Err(crate::Error::shape("concat_channels_x_backward", format!("parts sum to {start} channels, gradient has {}", gy.shape().dim(1))));
        }
        Ok(out)
    }

    /// x[:, ids] (torch.index_select along dim 1); ids distinct and in range.
    fn gather_channels(&self, x: &Tensor<Self>, ids: &[usize]) -> Result<Tensor<Self>>;
    /// ∂L/∂x of `gather_channels`: gy [N, len(ids), ...] placed into zeros [N, c, ...].
    fn gather_channels_x_backward(&self, gy: &Tensor<Self>, ids: &[usize], c: usize) -> Result<Tensor<Self>>;

    // ---- PaDiM -----------------------------------------------------------------------------------
    /// Mahalanobis distance per position: f [N,D,H,W], mean [H·W, D], linv [H·W, D(D+1)/2] =
    /// the Cholesky factor's inverse L⁻¹ (Σ = LLᵀ) packed by rows; → [N,1,H,W] = |L⁻¹(f−μ)|.
    fn mahalanobis(&self, f: &Tensor<Self>, mean: &Tensor<Self>, linv: &Tensor<Self>) -> Result<Tensor<Self>>;
    /// ∂L/∂f = gd·L⁻ᵀL⁻¹(f−μ)/d (0 where d = 0) given gd [N,1,H,W].
    fn mahalanobis_x_backward(&self, gd: &Tensor<Self>, f: &Tensor<Self>, mean: &Tensor<Self>, linv: &Tensor<Self>) -> Result<Tensor<Self>>;

    // ---- attention -------------------------------------------------------------------------------
    /// guided-diffusion `QKVAttentionLegacy`: qkv [N, 3·H·d, T...] split per head into
    /// consecutive (q, k, v) blocks of d channels; q and k scaled by d^-1/4; softmax over keys.
    /// Returns [N, H·d, T...].
    fn attention_legacy(&self, qkv: &Tensor<Self>, heads: usize) -> Result<Tensor<Self>>;
    fn attention_legacy_x_backward(&self, gy: &Tensor<Self>, qkv: &Tensor<Self>, heads: usize) -> Result<Tensor<Self>>;

    // ---- embeddings ------------------------------------------------------------------------------
    /// guided-diffusion `timestep_embedding`: t [N] → [N, dim] = [cos(t·f), sin(t·f)],
    /// f_i = exp(−ln(max_period)·i/half), computed in f32 like upstream.
    fn timestep_embedding(&self, t: &Tensor<Self>, dim: usize, max_period: f32) -> Result<Tensor<Self>>;
    /// Rows `ids` of `table` [rows, dim] → [len(ids), dim].
    fn embedding(&self, table: &Tensor<Self>, ids: &[usize]) -> Result<Tensor<Self>>;

    // ---- reductions ------------------------------------------------------------------------------
    /// Mean and unbiased (N−1) standard deviation over all elements, like torch's mean()/std().
    fn mean_std(&self, x: &Tensor<Self>) -> Result<(f64, f64)>;

    // ---- diffusion step math (spec §1, §7; coefficients from `diffusion::Diffusion`) ------------------
    /// x_t = √ᾱ·x0 + √(1−ᾱ)·ε.
    fn q_sample(&self, x0: &Tensor<Self>, noise: &Tensor<Self>, sqrt_ab: f32, sqrt_1m_ab: f32) -> Result<Tensor<Self>>;
    /// (mean, log-variance, x̂0) of p(x_{t−1}|x_t) from the model output [N, C or 2C, ...].
    fn p_mean_variance(&self, xt: &Tensor<Self>, model_out: &Tensor<Self>, c: &StepCoefs) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)>;
    /// KL(q(x_{t−1}|x_t,x0) ‖ p(x_{t−1}|x_t)) per element, in bits.
    fn kl_bits(&self, x0: &Tensor<Self>, xt: &Tensor<Self>, p_mean: &Tensor<Self>, p_logvar: &Tensor<Self>, c: &StepCoefs) -> Result<Tensor<Self>>;
    /// mean + [nonzero]·exp(½·logvar)·z (ancestral sampling).
    fn p_sample(&self, mean: &Tensor<Self>, logvar: &Tensor<Self>, z: &Tensor<Self>, nonzero: bool) -> Result<Tensor<Self>>;
    /// One DDIM(η) step from x_t and the (clipped) x̂0; z is used when η > 0.
    fn ddim_step(&self, xt: &Tensor<Self>, pred_x0: &Tensor<Self>, z: &Tensor<Self>, c: &DdimCoefs) -> Result<Tensor<Self>>;
}

/// Shapes of p_mean_variance: model_out must be [N, C or 2C, ...] over x_t [N, C, ...].
pub fn check_model_out(op: &'static str, xt: &Shape, mo: &Shape, c: &StepCoefs) -> Result<(usize, usize)> {
    params::at_least_2d(op, xt)?;
    let (n, ch, s) = xt.ncs();
    let want = if c.var_type.learned() { 2 * ch } else { ch };
    if mo.ncs() != (n, want, s) {
        return Err(crate::Error::shape(op, format!("model output {mo} does not fit x_t {xt} ({want} channels expected for {:?} variance)", c.var_type)));
    }
    Ok((ch, s))
}

/// Folds inference batch norm into the per-channel affine that `channel_affine` applies:
/// scale = γ/√(var+eps), shift = β − mean·scale.
pub fn fold_batch_norm(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f32) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = gamma.len();
    if beta.len() != c || mean.len() != c || var.len() != c {
        return Err(crate::Error::shape("fold_batch_norm", format!("γ {c}, β {}, mean {}, var {} values", beta.len(), mean.len(), var.len())));
    }
    let mut scale = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for i in 0..c {
        let s = (gamma[i] as f64 / (var[i] as f64 + eps as f64).sqrt()) as f32;
        scale.push(s);
        shift.push((beta[i] as f64 - mean[i] as f64 * s as f64) as f32);
    }
    Ok((scale, shift))
}
