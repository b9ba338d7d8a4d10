//! The `Backend` trait is the one place where ops are declared, and the one place where their
//! shapes are checked: it is implemented once, below, for every backend's `Compute`, by asking
//! `ops` for the op's geometry and handing the checked tensors on. Every op takes and returns
//! tensors that live on the backend (no host slices of data in the signatures, so a GPU can honour
//! them); the only host data crossing the boundary is in `from_host`/`to_host`, small index lists
//! and scalars. Input gradients follow burn's split: `*_x_backward` returns the gradient with
//! respect to the input only, never the weights.
//!
//! Semantics are PyTorch's, op by op (the fixtures in tests/fixtures come from torch itself).

pub mod compute;
pub mod cpu;
pub mod cuda;
pub mod driver_counts;
pub mod rounded_cpu;
pub mod select;

pub use crate::ops::contract::{AdamwCoefs, DdimCoefs, StepCoefs};
pub use crate::ops::norm::fold_batch_norm;
pub use crate::ops::optim::AdamwParams;
pub use crate::ops::{Activation, Conv2dParams, GroupNormParams, Padding2d, Pool2dParams, VarType};
pub use compute::Compute;
pub use cuda::graph::new_graph_id;

use crate::ops;
use crate::ops::precision::Precision;
use crate::tensor::{HasStorage, Shape, Tensor};
use crate::Result;

/// Optional fused `GN(x)·(1+scale)+shift` of guided-diffusion's scale-shift ResBlocks;
/// `scale` and `shift` are [N, C] (or [N, C, 1, 1]).
pub type ScaleShift<'a, B> = Option<(&'a Tensor<B>, &'a Tensor<B>)>;

/// Parameter gradients of group norm: ∂γ and ∂β shaped like γ and β, and with scale-shift on,
/// ∂scale and ∂shift shaped like scale and shift.
pub struct GroupNormGrads<B: HasStorage> {
    pub gamma: Tensor<B>,
    pub beta: Tensor<B>,
    pub scale_shift: Option<(Tensor<B>, Tensor<B>)>,
}

/// A group norm as the UNet applies it, as an operand of `Backend::conv2d_gn`: γ, β, its
/// parameters and, for scale-shift, emb [N, E] with scale = emb[:, off..off+C], shift =
/// emb[:, off+C..off+2C] (as `group_norm_emb`).
pub struct GnSpec<'a, B: HasStorage> {
    pub gamma: &'a Tensor<B>,
    pub beta: &'a Tensor<B>,
    pub p: GroupNormParams,
    pub emb: Option<(&'a Tensor<B>, usize)>,
}

impl<B: HasStorage> Clone for GnSpec<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: HasStorage> Copy for GnSpec<'_, B> {}

impl<'a, B: HasStorage> GnSpec<'a, B> {
    /// This norm's geometry over x (shapes checked).
    fn geom(&self, x: &Shape) -> Result<crate::ops::contract::GroupNormGeom> {
        match self.emb {
            Some((e, off)) => ops::norm::group_norm_emb(x, self.gamma.shape(), self.beta.shape(), &self.p, e.shape(), off),
            None => ops::norm::group_norm(x, self.gamma.shape(), self.beta.shape(), &self.p, None),
        }
    }
    /// The Compute-level operand, with its checked geometry over x.
    fn operand(&self, x: &Shape) -> Result<compute::GnOperand<'a, B>> {
        Ok(compute::GnOperand { gamma: self.gamma, beta: self.beta, emb: self.emb.map(|e| e.0), g: self.geom(x)? })
    }
}

/// Group-norm records, where given, are one record per (image, channel) of x.
fn check_records<B: HasStorage>(op: &'static str, x: &Tensor<B>, rec: Option<&Tensor<B>>) -> Result<()> {
    if let Some(r) = rec {
        let d = x.dims();
        let want = [d[0], d.get(1).copied().unwrap_or(0), crate::ops::contract::GN_PRE_FLOATS as usize];
        if r.dims() != want {
            return Err(crate::Error::shape(op, format!("records {:?} for an input {:?}: expected {want:?}", r.dims(), d)));
        }
    }
    Ok(())
}

/// Shapes of an optional scale-shift pair.
fn ss_shapes<'a, B: HasStorage>(ss: &ScaleShift<'a, B>) -> Option<(&'a Shape, &'a Shape)> {
    ss.map(|(a, b)| (a.shape(), b.shape()))
}

// from_host takes &self: the backend owns the memory the tensor is created in
#[allow(clippy::wrong_self_convention)]
pub trait Backend: HasStorage + Sized + Send + Sync + 'static {
    /// Short name and details for `ran info` and logs.
    fn name(&self) -> String;
    /// Driver calls so far where the backend counts them (CUDA: launches, allocs, copies…).
    fn driver_counts(&self) -> Option<driver_counts::DriverCounts> {
        None
    }
    /// `f(inputs)` with the same values, run where the backend has graphs (CUDA) as one recorded
    /// at the first call of `model` (an id from `new_graph_id`, one per function) with these input
    /// shapes and replayed after (backend/cuda/graph.rs: every value `f`'s kernels depend on must
    /// come through `inputs`; the outputs are fresh tensors). Elsewhere simply `f(inputs)`.
    fn graph_forward(&self, model: u64, inputs: &[&Tensor<Self>], f: &dyn Fn(&[Tensor<Self>]) -> Result<Vec<Tensor<Self>>>) -> Result<Vec<Tensor<Self>>>;
    /// `f()`, run where this backend's parallel loops start cheapest: the CPU can run it on one
    /// of its worker threads, so each op's loop splits inside the pool instead of being injected
    /// into it from outside and waited for (cpu/workers.rs; off unless `RAN_CPU_ON_WORKERS=1`);
    /// elsewhere simply `f()`. Values are unchanged.
    fn on_workers<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R;
    /// The operand precision of conv2d / linear and their input gradients (issue #14; statistics,
    /// weight gradients and every other op stay f32): what results.json records.
    fn precision(&self) -> Precision;

    // ---- transfers -----------------------------------------------------------------------------
    fn from_host(&self, dims: &[usize], data: &[f32]) -> Result<Tensor<Self>>;
    /// `from_host` taking ownership, so a backend whose storage is host memory keeps the buffer
    /// instead of copying it (gigabyte-sized PaDiM statistics).
    fn from_host_vec(&self, dims: &[usize], data: Vec<f32>) -> Result<Tensor<Self>>;
    /// A weight from an f16 file: the same values as `from_host` of them widened (f16 → f32 is
    /// exact); the CPU backend keeps large ones in f16 (half the memory) and widens per use.
    fn from_host_f16(&self, dims: &[usize], data: Vec<half::f16>) -> Result<Tensor<Self>>;
    /// The values in logical row-major (NCHW) order.
    fn to_host(&self, x: &Tensor<Self>) -> Result<Vec<f32>>;
    fn zeros(&self, dims: &[usize]) -> Result<Tensor<Self>>;
    /// Same values under a new shape with the same element count.
    fn reshape(&self, x: &Tensor<Self>, dims: &[usize]) -> Result<Tensor<Self>>;

    // ---- convolution and linear ------------------------------------------------------------------
    /// PyTorch `conv2d` (dilation 1) with asymmetric zero padding and groups (depthwise included).
    /// x [N,C,H,W], w [O,C/groups,KH,KW], bias [O].
    fn conv2d(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, p: &Conv2dParams) -> Result<Tensor<Self>>;
    /// conv2d(x, w, bias) + res with res shaped like the output (a residual connection): one
    /// launch on a GPU (the add in the conv's epilogue), the conv's output pass on the CPU (the
    /// same f32 operations as add(res, conv2d(..)), bit for bit).
    fn conv2d_add(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, res: &Tensor<Self>, p: &Conv2dParams) -> Result<Tensor<Self>>;
    /// act(conv2d(x, w, bias)) (a conv + folded BN + activation) and, when `mean`, each output
    /// plane's spatial mean [N, O, 1, 1] of it (squeeze-excite's squeeze): on the CPU in the conv's
    /// output pass (y bit for bit the two ops'), elsewhere conv2d, activation, global_avg_pool.
    fn conv2d_act(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, act: Activation, p: &Conv2dParams, mean: bool) -> Result<(Tensor<Self>, Option<Tensor<Self>>)>;
    /// ∂L/∂x of `conv2d` given ∂L/∂y; `x_shape` fixes the input size that stride made ambiguous.
    fn conv2d_x_backward(&self, gy: &Tensor<Self>, w: &Tensor<Self>, x_shape: &Shape, p: &Conv2dParams) -> Result<Tensor<Self>>;
    /// y = x·wᵀ + b with x [N, in], w [out, in].
    fn linear(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>) -> Result<Tensor<Self>>;
    fn linear_x_backward(&self, gy: &Tensor<Self>, w: &Tensor<Self>) -> Result<Tensor<Self>>;
    /// `linear` with w (and bias) made of consecutive row blocks of `parts` rows each (Σ parts =
    /// out): the same values. Many small linears of one input (the UNet's per-ResBlock timestep
    /// projections) as one GEMM on a GPU; the CPU runs one GEMM per part, so each part's values are
    /// bit for bit those of its own `linear` (its GEMM's summation order depends on the width).
    fn linear_parts(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, parts: &[usize]) -> Result<Tensor<Self>>;
    /// (∂L/∂w, ∂L/∂bias) of `conv2d` from its input x and ∂L/∂y; ∂L/∂bias [O] when `with_bias`.
    fn conv2d_w_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, w_shape: &Shape, p: &Conv2dParams, with_bias: bool) -> Result<(Tensor<Self>, Option<Tensor<Self>>)>;
    /// (∂L/∂w [out, in], ∂L/∂bias [out]) of `linear` from x [N, in] and ∂L/∂y [N, out].
    fn linear_w_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, with_bias: bool) -> Result<(Tensor<Self>, Option<Tensor<Self>>)>;

    // ---- normalisation ---------------------------------------------------------------------------
    /// GroupNorm over [N, C, *] (statistics in f32 or better), affine γ,β [C]; optionally fused
    /// scale-shift and SiLU: act(GN(x)·(1+scale)+shift).
    fn group_norm(&self, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<Tensor<Self>>;
    fn group_norm_x_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<Tensor<Self>>;
    /// ∂L/∂γ, ∂L/∂β and, with scale-shift, ∂L/∂scale and ∂L/∂shift of `group_norm`.
    fn group_norm_w_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<GroupNormGrads<Self>>;
    /// `group_norm` with scale-shift from one ResBlock's columns of a packed projection emb [N, E]:
    /// scale = emb[:, offset..offset+C], shift = emb[:, offset+C..offset+2C] (upstream's
    /// `th.chunk(emb_out, 2, dim=1)`), read in place by the kernel — no slices.
    fn group_norm_emb(&self, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, emb: &Tensor<Self>, offset: usize) -> Result<Tensor<Self>>;
    /// conv2d(act(GN(x)·(1+scale)+shift), w, bias) (+ res shaped like the output): `group_norm`
    /// — `group_norm_emb` with `emb` = (emb, offset) — feeding `conv2d` (`conv2d_add` with `res`),
    /// with the same values as the two ops; a GPU applies the normalisation in the conv's operand
    /// loader, so the normalised tensor is never stored (the UNet's every norm → conv pair).
    #[allow(clippy::too_many_arguments)]
    fn group_norm_conv2d(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        beta: &Tensor<Self>,
        gn: &GroupNormParams,
        emb: Option<(&Tensor<Self>, usize)>,
        w: &Tensor<Self>,
        bias: Option<&Tensor<Self>>,
        res: Option<&Tensor<Self>>,
        p: &Conv2dParams,
    ) -> Result<Tensor<Self>>;
    /// conv2d(x′, w, bias) (+ res shaped like the output), x′ = act(GN(x)·(1+scale)+shift) when
    /// `norm` is given (as `group_norm_conv2d`), else x; and, when `next` is given, possibly the
    /// group-norm records of the output for that norm: where the backend computes them in the
    /// conv's epilogue (CUDA at f32: kernels/gn_out.cuh), so the conv that reads the output
    /// through `next` — given them as `rec` — needs no statistics launch. None elsewhere (the CPU:
    /// its numbers are the unfused ops'). `rec` must be records an earlier call returned for
    /// exactly `norm` (the same γ, β, parameters and emb) over this x; a backend may also ignore
    /// it and compute x's statistics itself.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_gn(
        &self,
        x: &Tensor<Self>,
        rec: Option<&Tensor<Self>>,
        norm: Option<&GnSpec<'_, Self>>,
        w: &Tensor<Self>,
        bias: Option<&Tensor<Self>>,
        res: Option<&Tensor<Self>>,
        p: &Conv2dParams,
        next: Option<&GnSpec<'_, Self>>,
    ) -> Result<(Tensor<Self>, Option<Tensor<Self>>)>;
    /// act(GN(x)) with `norm`'s parameters and scale-shift, then nearest-2× upsampled (`up`) or
    /// 2×2 average pooled with stride 2 — the up/down ResBlock's in_norm → h_upd: one pass from
    /// x's records `rec` where its producer made them (`conv2d_gn`; the CUDA backend), else the
    /// two ops. x [N, C, H, W].
    fn group_norm_resample(&self, x: &Tensor<Self>, rec: Option<&Tensor<Self>>, norm: &GnSpec<'_, Self>, up: bool) -> Result<Tensor<Self>>;
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
    /// `concat_channels`, and, when `next` is given, possibly the result's group-norm records for
    /// that norm (as `conv2d_gn` makes them: the CUDA backend for two parts, in the copy's launch).
    fn concat_channels_gn(&self, xs: &[&Tensor<Self>], next: Option<&GnSpec<'_, Self>>) -> Result<(Tensor<Self>, Option<Tensor<Self>>)>;
    /// x[:, start..end].
    fn slice_channels(&self, x: &Tensor<Self>, start: usize, end: usize) -> Result<Tensor<Self>>;
    /// Gradients of the parts of `concat_channels`, given the parts' channel counts.
    fn concat_channels_x_backward(&self, gy: &Tensor<Self>, channels: &[usize]) -> Result<Vec<Tensor<Self>>>;

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
    /// ∂L/∂table [rows, dim] of `embedding` given ∂L/∂y [len(ids), dim]; repeated ids add up.
    fn embedding_w_backward(&self, gy: &Tensor<Self>, ids: &[usize], rows: usize) -> Result<Tensor<Self>>;

    // ---- reductions ------------------------------------------------------------------------------
    /// Mean and unbiased (N−1) standard deviation over all elements, like torch's mean()/std().
    fn mean_std(&self, x: &Tensor<Self>) -> Result<(f64, f64)>;

    // ---- optimiser ---------------------------------------------------------------------------------
    /// One torch.optim.AdamW step (amsgrad off) on one parameter, its gradient and moments:
    /// returns (θ, m, v) after the step; `k` from `AdamwParams::at_step`.
    fn adamw_step(&self, param: &Tensor<Self>, grad: &Tensor<Self>, m: &Tensor<Self>, v: &Tensor<Self>, k: &AdamwCoefs) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)>;
    /// alpha·a + beta·b for same-shaped a and b (the EMA update: ema·rate + θ·(1 − rate)).
    fn axpby(&self, a: &Tensor<Self>, b: &Tensor<Self>, alpha: f32, beta: f32) -> Result<Tensor<Self>>;

    // ---- diffusion step math (coefficients from `diffusion::Diffusion`; formulas in docs/method.md) -----
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

/// The checked front of every backend: shapes through `ops`, computation through `Compute`.
impl<K: Compute> Backend for K {
    fn name(&self) -> String {
        Compute::name(self)
    }
    fn driver_counts(&self) -> Option<driver_counts::DriverCounts> {
        Compute::driver_counts(self)
    }
    fn graph_forward(&self, model: u64, inputs: &[&Tensor<Self>], f: &dyn Fn(&[Tensor<Self>]) -> Result<Vec<Tensor<Self>>>) -> Result<Vec<Tensor<Self>>> {
        Compute::graph_forward(self, model, inputs, f)
    }
    fn on_workers<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        Compute::on_workers(self, f)
    }
    fn precision(&self) -> Precision {
        Compute::precision(self)
    }

    fn from_host(&self, dims: &[usize], data: &[f32]) -> Result<Tensor<Self>> {
        ops::host_len(dims, data.len())?;
        self.upload(dims, data)
    }
    fn from_host_vec(&self, dims: &[usize], data: Vec<f32>) -> Result<Tensor<Self>> {
        ops::host_len(dims, data.len())?;
        self.upload_vec(dims, data)
    }
    fn from_host_f16(&self, dims: &[usize], data: Vec<half::f16>) -> Result<Tensor<Self>> {
        ops::host_len(dims, data.len())?;
        self.upload_f16(dims, data)
    }
    fn to_host(&self, x: &Tensor<Self>) -> Result<Vec<f32>> {
        self.download(x)
    }
    fn zeros(&self, dims: &[usize]) -> Result<Tensor<Self>> {
        self.from_host_vec(dims, vec![0.0; dims.iter().product()])
    }
    fn reshape(&self, x: &Tensor<Self>, dims: &[usize]) -> Result<Tensor<Self>> {
        Ok(Tensor::from_parts(ops::reshape(x.shape(), dims)?, x.storage().clone()))
    }

    fn conv2d(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, p: &Conv2dParams) -> Result<Tensor<Self>> {
        let g = ops::conv::conv2d(x.shape(), w.shape(), bias.map(|b| b.shape()), p)?;
        ops::flops::conv2d(&g);
        match Compute::precision(self) {
            Precision::F32 => Compute::conv2d(self, x, w, bias, &g),
            p => Compute::conv2d_lowp(self, x, w, bias, &g, p),
        }
    }
    fn conv2d_add(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, res: &Tensor<Self>, p: &Conv2dParams) -> Result<Tensor<Self>> {
        let g = ops::conv::conv2d(x.shape(), w.shape(), bias.map(|b| b.shape()), p)?;
        ops::elementwise::binary_same("conv2d_add", &Shape::new(&g.y_dims()), res.shape())?;
        ops::flops::conv2d(&g);
        match Compute::precision(self) {
            Precision::F32 => Compute::conv2d_add(self, x, w, bias, res, &g),
            p => Compute::conv2d_add_lowp(self, x, w, bias, res, &g, p),
        }
    }
    fn conv2d_act(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, act: Activation, p: &Conv2dParams, mean: bool) -> Result<(Tensor<Self>, Option<Tensor<Self>>)> {
        let g = ops::conv::conv2d(x.shape(), w.shape(), bias.map(|b| b.shape()), p)?;
        if mean {
            ops::pool::global_avg_pool(&Shape::new(&g.y_dims()))?;
        }
        ops::flops::conv2d(&g);
        match Compute::precision(self) {
            Precision::F32 => Compute::conv2d_act(self, x, w, bias, act, &g, mean),
            p => Compute::conv2d_act_lowp(self, x, w, bias, act, &g, mean, p),
        }
    }
    fn conv2d_x_backward(&self, gy: &Tensor<Self>, w: &Tensor<Self>, x_shape: &Shape, p: &Conv2dParams) -> Result<Tensor<Self>> {
        let g = ops::conv::conv2d_x_backward(gy.shape(), w.shape(), x_shape, p)?;
        ops::flops::conv2d(&g);
        match Compute::precision(self) {
            Precision::F32 => Compute::conv2d_x_backward(self, gy, w, &g),
            p => Compute::conv2d_x_backward_lowp(self, gy, w, &g, p),
        }
    }
    fn linear(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>) -> Result<Tensor<Self>> {
        let g = ops::conv::linear(x.shape(), w.shape(), bias.map(|b| b.shape()))?;
        ops::flops::linear(&g);
        match Compute::precision(self) {
            Precision::F32 => Compute::linear(self, x, w, bias, &g),
            p => Compute::linear_lowp(self, x, w, bias, &g, p),
        }
    }
    fn linear_x_backward(&self, gy: &Tensor<Self>, w: &Tensor<Self>) -> Result<Tensor<Self>> {
        let g = ops::conv::linear_x_backward(gy.shape(), w.shape())?;
        ops::flops::linear(&g);
        match Compute::precision(self) {
            Precision::F32 => Compute::linear_x_backward(self, gy, w, &g),
            p => Compute::linear_x_backward_lowp(self, gy, w, &g, p),
        }
    }

    fn linear_parts(&self, x: &Tensor<Self>, w: &Tensor<Self>, bias: Option<&Tensor<Self>>, parts: &[usize]) -> Result<Tensor<Self>> {
        let g = ops::conv::linear(x.shape(), w.shape(), bias.map(|b| b.shape()))?;
        ops::conv::linear_parts(&g, parts)?;
        ops::flops::linear(&g);
        match Compute::precision(self) {
            Precision::F32 => Compute::linear_parts(self, x, w, bias, &g, parts),
            p => Compute::linear_lowp(self, x, w, bias, &g, p),
        }
    }
    fn conv2d_w_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, w_shape: &Shape, p: &Conv2dParams, with_bias: bool) -> Result<(Tensor<Self>, Option<Tensor<Self>>)> {
        let g = ops::conv::conv2d_w_backward(gy.shape(), x.shape(), w_shape, p)?;
        ops::flops::conv2d(&g);
        let gw = match Compute::precision(self) {
            Precision::F32 => Compute::conv2d_w_backward(self, gy, x, &g)?,
            p => Compute::conv2d_w_backward_lowp(self, gy, x, &g, p)?,
        };
        let gb = if with_bias { Some(self.channel_sum(gy, g.n(), g.o(), g.ho() * g.wo())?) } else { None };
        Ok((Tensor::from_parts(w_shape.clone(), gw.storage().clone()), gb))
    }
    fn linear_w_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, with_bias: bool) -> Result<(Tensor<Self>, Option<Tensor<Self>>)> {
        let g = ops::conv::linear_w_backward(gy.shape(), x.shape())?;
        ops::flops::linear(&g);
        let gw = Compute::linear_w_backward(self, gy, x, &g)?;
        let gb = if with_bias { Some(self.channel_sum(gy, g.rows, g.fout, 1)?) } else { None };
        Ok((gw, gb))
    }

    fn group_norm(&self, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<Tensor<Self>> {
        let g = ops::norm::group_norm(x.shape(), gamma.shape(), beta.shape(), p, ss_shapes(&ss))?;
        Compute::group_norm(self, x, gamma, beta, ss, &g)
    }
    fn group_norm_x_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<Tensor<Self>> {
        let g = ops::norm::group_norm_x_backward(gy.shape(), x.shape(), gamma.shape(), beta.shape(), p, ss_shapes(&ss))?;
        Compute::group_norm_x_backward(self, gy, x, gamma, beta, ss, &g)
    }
    fn group_norm_w_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<GroupNormGrads<Self>> {
        let g = ops::norm::group_norm_w_backward(gy.shape(), x.shape(), gamma.shape(), beta.shape(), p, ss_shapes(&ss))?;
        let r = Compute::group_norm_w_backward(self, gy, x, gamma, beta, ss, &g)?;
        // give each gradient its parameter's shape ([C] or [1,C,1,1]; [N,C] or [N,C,1,1])
        let like = |t: Tensor<Self>, s: &Shape| Tensor::from_parts(s.clone(), t.storage().clone());
        let scale_shift = match (r.scale_shift, ss) {
            (Some((a, b)), Some((sa, sb))) => Some((like(a, sa.shape()), like(b, sb.shape()))),
            _ => None,
        };
        Ok(GroupNormGrads { gamma: like(r.gamma, gamma.shape()), beta: like(r.beta, beta.shape()), scale_shift })
    }
    fn group_norm_emb(&self, x: &Tensor<Self>, gamma: &Tensor<Self>, beta: &Tensor<Self>, p: &GroupNormParams, emb: &Tensor<Self>, offset: usize) -> Result<Tensor<Self>> {
        let g = ops::norm::group_norm_emb(x.shape(), gamma.shape(), beta.shape(), p, emb.shape(), offset)?;
        Compute::group_norm_emb(self, x, gamma, beta, emb, &g)
    }
    fn group_norm_conv2d(
        &self,
        x: &Tensor<Self>,
        gamma: &Tensor<Self>,
        beta: &Tensor<Self>,
        gn: &GroupNormParams,
        emb: Option<(&Tensor<Self>, usize)>,
        w: &Tensor<Self>,
        bias: Option<&Tensor<Self>>,
        res: Option<&Tensor<Self>>,
        p: &Conv2dParams,
    ) -> Result<Tensor<Self>> {
        let ng = match emb {
            Some((e, offset)) => ops::norm::group_norm_emb(x.shape(), gamma.shape(), beta.shape(), gn, e.shape(), offset)?,
            None => ops::norm::group_norm(x.shape(), gamma.shape(), beta.shape(), gn, None)?,
        };
        let g = ops::conv::conv2d(x.shape(), w.shape(), bias.map(|b| b.shape()), p)?;
        if let Some(r) = res {
            ops::elementwise::binary_same("group_norm_conv2d", &Shape::new(&g.y_dims()), r.shape())?;
        }
        ops::flops::conv2d(&g);
        Compute::group_norm_conv2d(self, x, gamma, beta, emb.map(|e| e.0), &ng, w, bias, res, &g, Compute::precision(self))
    }
    fn conv2d_gn(
        &self,
        x: &Tensor<Self>,
        rec: Option<&Tensor<Self>>,
        norm: Option<&GnSpec<'_, Self>>,
        w: &Tensor<Self>,
        bias: Option<&Tensor<Self>>,
        res: Option<&Tensor<Self>>,
        p: &Conv2dParams,
        next: Option<&GnSpec<'_, Self>>,
    ) -> Result<(Tensor<Self>, Option<Tensor<Self>>)> {
        let norm = norm.map(|n| n.operand(x.shape())).transpose()?;
        if rec.is_some() && norm.is_none() {
            return Err(crate::Error::InvalidArgument("conv2d_gn: group-norm records given without the norm they are for".into()));
        }
        check_records("conv2d_gn", x, rec)?;
        let g = ops::conv::conv2d(x.shape(), w.shape(), bias.map(|b| b.shape()), p)?;
        let y = Shape::new(&g.y_dims());
        if let Some(r) = res {
            ops::elementwise::binary_same("conv2d_gn", &y, r.shape())?;
        }
        let next = next.map(|n| n.operand(&y)).transpose()?;
        ops::flops::conv2d(&g);
        Compute::conv2d_gn(self, x, rec, norm.as_ref(), w, bias, res, &g, Compute::precision(self), next.as_ref())
    }
    fn group_norm_resample(&self, x: &Tensor<Self>, rec: Option<&Tensor<Self>>, norm: &GnSpec<'_, Self>, up: bool) -> Result<Tensor<Self>> {
        if x.shape().rank() != 4 {
            return Err(crate::Error::shape("group_norm_resample", format!("x {:?}: expected [N, C, H, W]", x.dims())));
        }
        let op = norm.operand(x.shape())?;
        check_records("group_norm_resample", x, rec)?;
        if let Some(y) = Compute::group_norm_resample(self, x, rec, &op, up)? {
            return Ok(y);
        }
        let h = match norm.emb {
            Some((e, off)) => Backend::group_norm_emb(self, x, norm.gamma, norm.beta, &norm.p, e, off)?,
            None => Backend::group_norm(self, x, norm.gamma, norm.beta, &norm.p, None)?,
        };
        if up {
            Backend::upsample_nearest2x(self, &h)
        } else {
            Backend::avg_pool2d(self, &h, &Pool2dParams::new(2, 2, 0))
        }
    }
    fn channel_affine(&self, x: &Tensor<Self>, scale: &Tensor<Self>, shift: &Tensor<Self>) -> Result<Tensor<Self>> {
        let (c, s) = ops::norm::channel_affine("channel_affine", x.shape(), scale.shape(), Some(shift.shape()))?;
        Compute::channel_affine(self, x, scale, shift, c, s)
    }
    fn channel_affine_x_backward(&self, gy: &Tensor<Self>, scale: &Tensor<Self>) -> Result<Tensor<Self>> {
        let (c, s) = ops::norm::channel_affine("channel_affine_x_backward", gy.shape(), scale.shape(), None)?;
        Compute::channel_affine_x_backward(self, gy, scale, c, s)
    }

    fn activation(&self, x: &Tensor<Self>, act: Activation) -> Result<Tensor<Self>> {
        ops::elementwise::unary("activation", x.shape())?;
        Compute::activation(self, x, act)
    }
    fn activation_x_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, act: Activation) -> Result<Tensor<Self>> {
        ops::elementwise::binary_same("activation_x_backward", x.shape(), gy.shape())?;
        Compute::activation_x_backward(self, gy, x, act)
    }
    fn add(&self, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<Tensor<Self>> {
        let g = ops::elementwise::broadcast("add", a.shape(), b.shape())?;
        Compute::add(self, a, b, &g)
    }
    fn mul(&self, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<Tensor<Self>> {
        let g = ops::elementwise::broadcast("mul", a.shape(), b.shape())?;
        Compute::mul(self, a, b, &g)
    }
    fn add_x_backward(&self, gy: &Tensor<Self>, b_shape: &Shape) -> Result<(Tensor<Self>, Tensor<Self>)> {
        let g = ops::elementwise::broadcast("add_x_backward", gy.shape(), b_shape)?;
        Compute::add_x_backward(self, gy, b_shape, &g)
    }
    fn mul_x_backward(&self, gy: &Tensor<Self>, a: &Tensor<Self>, b: &Tensor<Self>) -> Result<(Tensor<Self>, Tensor<Self>)> {
        let g = ops::elementwise::mul_x_backward(gy.shape(), a.shape(), b.shape())?;
        Compute::mul_x_backward(self, gy, a, b, &g)
    }
    fn scale_add_scalar(&self, x: &Tensor<Self>, alpha: f32, beta: f32) -> Result<Tensor<Self>> {
        ops::elementwise::unary("scale_add_scalar", x.shape())?;
        Compute::scale_add_scalar(self, x, alpha, beta)
    }

    fn avg_pool2d(&self, x: &Tensor<Self>, p: &Pool2dParams) -> Result<Tensor<Self>> {
        let (g, y) = ops::pool::pool2d_forward("avg_pool2d", x.shape(), p)?;
        Compute::avg_pool2d(self, x, &g, &y)
    }
    fn avg_pool2d_x_backward(&self, gy: &Tensor<Self>, x_shape: &Shape, p: &Pool2dParams) -> Result<Tensor<Self>> {
        let g = ops::pool::pool2d_x_backward("avg_pool2d_x_backward", gy.shape(), x_shape, p)?;
        Compute::avg_pool2d_x_backward(self, gy, x_shape, &g)
    }
    fn max_pool2d(&self, x: &Tensor<Self>, p: &Pool2dParams) -> Result<Tensor<Self>> {
        let (g, y) = ops::pool::pool2d_forward("max_pool2d", x.shape(), p)?;
        Compute::max_pool2d(self, x, &g, &y)
    }
    fn max_pool2d_x_backward(&self, gy: &Tensor<Self>, x: &Tensor<Self>, p: &Pool2dParams) -> Result<Tensor<Self>> {
        let g = ops::pool::pool2d_x_backward("max_pool2d_x_backward", gy.shape(), x.shape(), p)?;
        Compute::max_pool2d_x_backward(self, gy, x, &g)
    }
    fn global_avg_pool(&self, x: &Tensor<Self>) -> Result<Tensor<Self>> {
        let (n, c, plane) = ops::pool::global_avg_pool(x.shape())?;
        Compute::global_avg_pool(self, x, n, c, plane)
    }
    fn upsample_nearest2x(&self, x: &Tensor<Self>) -> Result<Tensor<Self>> {
        let d = ops::pool::upsample_nearest2x(x.shape())?;
        Compute::upsample_nearest2x(self, x, d)
    }
    fn upsample_nearest2x_x_backward(&self, gy: &Tensor<Self>) -> Result<Tensor<Self>> {
        let d = ops::pool::upsample_nearest2x_x_backward(gy.shape())?;
        Compute::upsample_nearest2x_x_backward(self, gy, d)
    }
    fn resize_bilinear(&self, x: &Tensor<Self>, out_h: usize, out_w: usize) -> Result<Tensor<Self>> {
        let g = ops::pool::resize_bilinear(x.shape(), out_h, out_w)?;
        Compute::resize_bilinear(self, x, &g)
    }
    fn resize_bilinear_x_backward(&self, gy: &Tensor<Self>, in_h: usize, in_w: usize) -> Result<Tensor<Self>> {
        let g = ops::pool::resize_bilinear_x_backward(gy.shape(), in_h, in_w)?;
        Compute::resize_bilinear_x_backward(self, gy, &g)
    }

    fn concat_channels(&self, xs: &[&Tensor<Self>]) -> Result<Tensor<Self>> {
        let shapes: Vec<&Shape> = xs.iter().map(|x| x.shape()).collect();
        let dims = ops::layout::concat_channels(&shapes)?;
        Compute::concat_channels(self, xs, &dims)
    }
    fn concat_channels_gn(&self, xs: &[&Tensor<Self>], next: Option<&GnSpec<'_, Self>>) -> Result<(Tensor<Self>, Option<Tensor<Self>>)> {
        let shapes: Vec<&Shape> = xs.iter().map(|x| x.shape()).collect();
        let dims = ops::layout::concat_channels(&shapes)?;
        let next = next.map(|n| n.operand(&Shape::new(&dims))).transpose()?;
        Compute::concat_channels_gn(self, xs, &dims, next.as_ref())
    }
    fn slice_channels(&self, x: &Tensor<Self>, start: usize, end: usize) -> Result<Tensor<Self>> {
        let dims = ops::layout::slice_channels(x.shape(), start, end)?;
        Compute::slice_channels(self, x, start, &dims)
    }
    fn concat_channels_x_backward(&self, gy: &Tensor<Self>, channels: &[usize]) -> Result<Vec<Tensor<Self>>> {
        ops::layout::concat_channels_x_backward(gy.shape(), channels)?;
        let mut out = Vec::with_capacity(channels.len());
        let mut start = 0;
        for &c in channels {
            out.push(Backend::slice_channels(self, gy, start, start + c)?);
            start += c;
        }
        Ok(out)
    }
    fn gather_channels(&self, x: &Tensor<Self>, ids: &[usize]) -> Result<Tensor<Self>> {
        let dims = ops::layout::gather_channels(x.shape(), ids)?;
        Compute::gather_channels(self, x, ids, &dims)
    }
    fn gather_channels_x_backward(&self, gy: &Tensor<Self>, ids: &[usize], c: usize) -> Result<Tensor<Self>> {
        let dims = ops::layout::gather_channels_x_backward(gy.shape(), ids, c)?;
        Compute::gather_channels_x_backward(self, gy, ids, &dims)
    }

    fn mahalanobis(&self, f: &Tensor<Self>, mean: &Tensor<Self>, linv: &Tensor<Self>) -> Result<Tensor<Self>> {
        let g = ops::padim::mahalanobis("mahalanobis", f.shape(), mean.shape(), linv.shape())?;
        Compute::mahalanobis(self, f, mean, linv, &g)
    }
    fn mahalanobis_x_backward(&self, gd: &Tensor<Self>, f: &Tensor<Self>, mean: &Tensor<Self>, linv: &Tensor<Self>) -> Result<Tensor<Self>> {
        let g = ops::padim::mahalanobis_x_backward(gd.shape(), f.shape(), mean.shape(), linv.shape())?;
        Compute::mahalanobis_x_backward(self, gd, f, mean, linv, &g)
    }

    fn attention_legacy(&self, qkv: &Tensor<Self>, heads: usize) -> Result<Tensor<Self>> {
        let g = ops::attention::attention_legacy("attention_legacy", qkv.shape(), heads)?;
        ops::flops::attention(&g, 2);
        // softmax statistics stay f32 at every precision; the input gradient below is f32
        match Compute::precision(self) {
            Precision::F32 => Compute::attention_legacy(self, qkv, &g),
            p => Compute::attention_legacy_lowp(self, qkv, &g, p),
        }
    }
    fn attention_legacy_x_backward(&self, gy: &Tensor<Self>, qkv: &Tensor<Self>, heads: usize) -> Result<Tensor<Self>> {
        let g = ops::attention::attention_legacy_x_backward(gy.shape(), qkv.shape(), heads)?;
        ops::flops::attention(&g, 4);
        Compute::attention_legacy_x_backward(self, gy, qkv, &g)
    }

    fn timestep_embedding(&self, t: &Tensor<Self>, dim: usize, max_period: f32) -> Result<Tensor<Self>> {
        ops::embedding::timestep_embedding(t.shape(), dim)?;
        Compute::timestep_embedding(self, t, dim, max_period)
    }
    fn embedding(&self, table: &Tensor<Self>, ids: &[usize]) -> Result<Tensor<Self>> {
        let (_, dim) = ops::embedding::embedding(table.shape(), ids)?;
        Compute::embedding(self, table, ids, dim)
    }

    fn embedding_w_backward(&self, gy: &Tensor<Self>, ids: &[usize], rows: usize) -> Result<Tensor<Self>> {
        let dim = ops::embedding::embedding_w_backward(gy.shape(), ids, rows)?;
        Compute::embedding_w_backward(self, gy, ids, rows, dim)
    }

    fn mean_std(&self, x: &Tensor<Self>) -> Result<(f64, f64)> {
        ops::reduce::mean_std(x.shape())?;
        Compute::mean_std(self, x)
    }

    fn adamw_step(&self, param: &Tensor<Self>, grad: &Tensor<Self>, m: &Tensor<Self>, v: &Tensor<Self>, k: &AdamwCoefs) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)> {
        ops::optim::adamw_step(param.shape(), grad.shape(), m.shape(), v.shape())?;
        Compute::adamw_step(self, param, grad, m, v, k)
    }
    fn axpby(&self, a: &Tensor<Self>, b: &Tensor<Self>, alpha: f32, beta: f32) -> Result<Tensor<Self>> {
        ops::optim::axpby(a.shape(), b.shape())?;
        Compute::axpby(self, a, b, alpha, beta)
    }

    fn q_sample(&self, x0: &Tensor<Self>, noise: &Tensor<Self>, sqrt_ab: f32, sqrt_1m_ab: f32) -> Result<Tensor<Self>> {
        ops::diffusion::same_shapes("q_sample", x0.shape(), &[noise.shape()])?;
        Compute::q_sample(self, x0, noise, sqrt_ab, sqrt_1m_ab)
    }
    fn p_mean_variance(&self, xt: &Tensor<Self>, model_out: &Tensor<Self>, c: &StepCoefs) -> Result<(Tensor<Self>, Tensor<Self>, Tensor<Self>)> {
        let (ch, s) = ops::diffusion::p_mean_variance(xt.shape(), model_out.shape(), c)?;
        Compute::p_mean_variance(self, xt, model_out, c, ch, s)
    }
    fn kl_bits(&self, x0: &Tensor<Self>, xt: &Tensor<Self>, p_mean: &Tensor<Self>, p_logvar: &Tensor<Self>, c: &StepCoefs) -> Result<Tensor<Self>> {
        ops::diffusion::same_shapes("kl_bits", x0.shape(), &[xt.shape(), p_mean.shape(), p_logvar.shape()])?;
        Compute::kl_bits(self, x0, xt, p_mean, p_logvar, c)
    }
    fn p_sample(&self, mean: &Tensor<Self>, logvar: &Tensor<Self>, z: &Tensor<Self>, nonzero: bool) -> Result<Tensor<Self>> {
        ops::diffusion::same_shapes("p_sample", mean.shape(), &[logvar.shape(), z.shape()])?;
        Compute::p_sample(self, mean, logvar, z, nonzero)
    }
    fn ddim_step(&self, xt: &Tensor<Self>, pred_x0: &Tensor<Self>, z: &Tensor<Self>, c: &DdimCoefs) -> Result<Tensor<Self>> {
        ops::diffusion::same_shapes("ddim_step", xt.shape(), &[pred_x0.shape(), z.shape()])?;
        Compute::ddim_step(self, xt, pred_x0, z, c)
    }
}
