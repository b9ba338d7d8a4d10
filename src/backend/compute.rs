//! What a backend implements: each op's computation, given tensors whose shapes `ops` has already
//! checked and the geometry it computed. Nothing here re-checks a shape; `Backend` (mod.rs) is the
//! checked front every caller uses, and it is implemented once, for every `Compute`.

use super::{GroupNormGrads, ScaleShift};
use crate::ops::attention::AttentionGeom;
use crate::ops::contract::{AdamwCoefs, BroadcastGeom, Conv2dGeom, DdimCoefs, GroupNormGeom, Pool2dGeom, StepCoefs};
use crate::ops::conv::LinearGeom;
use crate::ops::padim::MahalanobisGeom;
use crate::ops::pool::ResizeGeom;
use crate::ops::precision::Precision;
use crate::ops::Activation;
use crate::tensor::{HasStorage, Shape, Tensor};
use crate::Result;

type T<B> = Tensor<B>;

pub trait Compute: HasStorage + Sized + Send + Sync + 'static {
    fn name(&self) -> String;
    /// Driver calls made so far, for backends that count them (the CUDA backend); subtract two
    /// snapshots for a scope.
    fn driver_counts(&self) -> Option<crate::backend::driver_counts::DriverCounts> {
        None
    }
    /// `f(inputs)`, as a graph recorded once and replayed where the backend has graphs (CUDA:
    /// backend/cuda/graph.rs); elsewhere simply `f(inputs)`.
    fn graph_forward(&self, _model: u64, inputs: &[&T<Self>], f: &dyn Fn(&[T<Self>]) -> Result<Vec<T<Self>>>) -> Result<Vec<T<Self>>> {
        let ins: Vec<T<Self>> = inputs.iter().map(|&x| x.clone()).collect();
        f(&ins)
    }
    /// `f()` where the backend's parallel loops start cheapest (`Backend::on_workers`).
    fn on_workers<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    // ---- transfers (element count checked) ----
    fn upload(&self, dims: &[usize], data: &[f32]) -> Result<T<Self>>;
    /// `upload` taking ownership, so host-memory storage keeps the buffer instead of copying it.
    fn upload_vec(&self, dims: &[usize], data: Vec<f32>) -> Result<T<Self>> {
        self.upload(dims, &data)
    }
    /// A weight as an f16 file stores it: widened to f32 here (and on every backend but the CPU,
    /// which keeps large ones f16 and widens them per use: cpu/resident.rs).
    fn upload_f16(&self, dims: &[usize], data: Vec<half::f16>) -> Result<T<Self>> {
        let mut v = vec![0.0f32; data.len()];
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(&data[..], &mut v);
        self.upload_vec(dims, v)
    }
    fn download(&self, x: &T<Self>) -> Result<Vec<f32>>;

    // ---- convolution and linear ----
    fn conv2d(&self, x: &T<Self>, w: &T<Self>, bias: Option<&T<Self>>, g: &Conv2dGeom) -> Result<T<Self>>;
    fn conv2d_x_backward(&self, gy: &T<Self>, w: &T<Self>, g: &Conv2dGeom) -> Result<T<Self>>;
    fn linear(&self, x: &T<Self>, w: &T<Self>, bias: Option<&T<Self>>, g: &LinearGeom) -> Result<T<Self>>;
    fn linear_x_backward(&self, gy: &T<Self>, w: &T<Self>, g: &LinearGeom) -> Result<T<Self>>;

    // ---- the same four at a lower operand precision (issue #14) ----
    /// The precision `Backend` asks the four GEMM-like ops above in; F32 (the default, and the
    /// CPU backend's only one) calls them as they are, so the f32 path is untouched by the rest.
    fn precision(&self) -> Precision {
        Precision::F32
    }
    /// `conv2d` with operands rounded to `p` (never F32: `Backend` routes that to `conv2d`).
    /// A backend without a lower-precision kernel computes in f32, as here.
    fn conv2d_lowp(&self, x: &T<Self>, w: &T<Self>, bias: Option<&T<Self>>, g: &Conv2dGeom, _p: Precision) -> Result<T<Self>> {
        self.conv2d(x, w, bias, g)
    }
    fn conv2d_x_backward_lowp(&self, gy: &T<Self>, w: &T<Self>, g: &Conv2dGeom, _p: Precision) -> Result<T<Self>> {
        self.conv2d_x_backward(gy, w, g)
    }
    /// ∂w with ∂y and x rounded to `p` (the bias gradient stays `channel_sum`'s f32 sums).
    fn conv2d_w_backward_lowp(&self, gy: &T<Self>, x: &T<Self>, g: &Conv2dGeom, _p: Precision) -> Result<T<Self>> {
        self.conv2d_w_backward(gy, x, g)
    }
    fn linear_lowp(&self, x: &T<Self>, w: &T<Self>, bias: Option<&T<Self>>, g: &LinearGeom, _p: Precision) -> Result<T<Self>> {
        self.linear(x, w, bias, g)
    }
    fn linear_x_backward_lowp(&self, gy: &T<Self>, w: &T<Self>, g: &LinearGeom, _p: Precision) -> Result<T<Self>> {
        self.linear_x_backward(gy, w, g)
    }
    /// conv2d(x, w, bias) + res (res shaped like the output): as the two ops in sequence, which
    /// is this default; the CPU adds the residual in the conv's output pass and a device backend
    /// in the conv's epilogue, (acc + bias) + res, the same f32 result as add(res, conv) — one
    /// pass (launch) instead of two.
    fn conv2d_add(&self, x: &T<Self>, w: &T<Self>, bias: Option<&T<Self>>, res: &T<Self>, g: &Conv2dGeom) -> Result<T<Self>> {
        let h = self.conv2d(x, w, bias, g)?;
        self.add(res, &h, &crate::ops::elementwise::broadcast("conv2d_add", res.shape(), h.shape())?)
    }
    /// `conv2d_add` with the conv's operands rounded to `p` (never F32).
    fn conv2d_add_lowp(&self, x: &T<Self>, w: &T<Self>, bias: Option<&T<Self>>, res: &T<Self>, g: &Conv2dGeom, p: Precision) -> Result<T<Self>> {
        let h = self.conv2d_lowp(x, w, bias, g, p)?;
        self.add(res, &h, &crate::ops::elementwise::broadcast("conv2d_add", res.shape(), h.shape())?)
    }
    /// act(conv2d(x, w, bias)) and, with `mean`, each output plane's mean [N, O, 1, 1] of it
    /// (squeeze-excite's squeeze): here the three ops in sequence, which is what the CUDA backend
    /// runs; the CPU applies the activation (and sums the mean) in the conv's output pass.
    fn conv2d_act(&self, x: &T<Self>, w: &T<Self>, bias: Option<&T<Self>>, act: Activation, g: &Conv2dGeom, mean: bool) -> Result<(T<Self>, Option<T<Self>>)> {
        let y = self.activation(&self.conv2d(x, w, bias, g)?, act)?;
        let m = if mean { Some(self.global_avg_pool(&y, g.n(), g.o(), g.ho() * g.wo())?) } else { None };
        Ok((y, m))
    }
    /// `conv2d_act` with the conv's operands rounded to `p` (never F32).
    #[allow(clippy::too_many_arguments)]
    fn conv2d_act_lowp(&self, x: &T<Self>, w: &T<Self>, bias: Option<&T<Self>>, act: Activation, g: &Conv2dGeom, mean: bool, p: Precision) -> Result<(T<Self>, Option<T<Self>>)> {
        let y = self.activation(&self.conv2d_lowp(x, w, bias, g, p)?, act)?;
        let m = if mean { Some(self.global_avg_pool(&y, g.n(), g.o(), g.ho() * g.wo())?) } else { None };
        Ok((y, m))
    }
    /// `linear` over w made of row blocks of `parts` rows (Backend::linear_parts): one GEMM here,
    /// which is what a device does; a backend whose GEMM order depends on the width runs one per part.
    fn linear_parts(&self, x: &T<Self>, w: &T<Self>, bias: Option<&T<Self>>, g: &LinearGeom, _parts: &[usize]) -> Result<T<Self>> {
        self.linear(x, w, bias, g)
    }
    /// ∂L/∂w [O, C/groups, KH, KW].
    fn conv2d_w_backward(&self, gy: &T<Self>, x: &T<Self>, g: &Conv2dGeom) -> Result<T<Self>>;
    /// ∂L/∂w [out, in].
    fn linear_w_backward(&self, gy: &T<Self>, x: &T<Self>, g: &LinearGeom) -> Result<T<Self>>;
    /// Σ over N and S of x [n, c, s] → [c]: bias gradients.
    fn channel_sum(&self, x: &T<Self>, n: usize, c: usize, s: usize) -> Result<T<Self>>;

    // ---- normalisation ----
    fn group_norm(&self, x: &T<Self>, gamma: &T<Self>, beta: &T<Self>, ss: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<T<Self>>;
    fn group_norm_x_backward(&self, gy: &T<Self>, x: &T<Self>, gamma: &T<Self>, beta: &T<Self>, ss: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<T<Self>>;
    fn group_norm_w_backward(&self, gy: &T<Self>, x: &T<Self>, gamma: &T<Self>, beta: &T<Self>, ss: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<GroupNormGrads<Self>>;
    /// `group_norm` with scale and shift read from columns of emb [N, E] (g.ss_stride, g.scale_off,
    /// g.shift_off): here the two slices and `group_norm` on them, the unfused sequence (so the CPU's
    /// numbers are the unfused ones); the CUDA kernel reads the columns in place.
    fn group_norm_emb(&self, x: &T<Self>, gamma: &T<Self>, beta: &T<Self>, emb: &T<Self>, g: &GroupNormGeom) -> Result<T<Self>> {
        let (n, c) = (g.n(), g.c());
        let scale = self.slice_channels(emb, g.scale_off as usize, &[n, c])?;
        let shift = self.slice_channels(emb, g.shift_off as usize, &[n, c])?;
        let plain = GroupNormGeom { ss_stride: g.c, scale_off: 0, shift_off: 0, ..*g };
        self.group_norm(x, gamma, beta, Some((&scale, &shift)), &plain)
    }
    /// conv2d (in `p`; + res when given) of act(GN(x)·(1+scale)+shift), scale and shift read from
    /// `emb`'s columns as `group_norm_emb` reads them when `emb` is given (gn.has_ss): here the two
    /// ops in sequence — the CPU's numbers are the unfused ones, bit for bit —; the CUDA backend
    /// normalises the conv's operand as it loads it (no normalised tensor in memory).
    #[allow(clippy::too_many_arguments)]
    fn group_norm_conv2d(
        &self,
        x: &T<Self>,
        gamma: &T<Self>,
        beta: &T<Self>,
        emb: Option<&T<Self>>,
        gn: &GroupNormGeom,
        w: &T<Self>,
        bias: Option<&T<Self>>,
        res: Option<&T<Self>>,
        g: &Conv2dGeom,
        p: Precision,
    ) -> Result<T<Self>> {
        group_norm_then_conv2d(self, x, gamma, beta, emb, gn, w, bias, res, g, p)
    }
    /// conv2d (in `p`; + res) of x, normalised as `group_norm_conv2d` normalises it when `norm`
    /// is given, and the output's group-norm records for `next` where the backend makes them in
    /// the conv's epilogue (`Backend::conv2d_gn`). Here: `rec` unread, the unfused ops, no records.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_gn(
        &self,
        x: &T<Self>,
        _rec: Option<&T<Self>>,
        norm: Option<&GnOperand<'_, Self>>,
        w: &T<Self>,
        bias: Option<&T<Self>>,
        res: Option<&T<Self>>,
        g: &Conv2dGeom,
        p: Precision,
        _next: Option<&GnOperand<'_, Self>>,
    ) -> Result<(T<Self>, Option<T<Self>>)> {
        Ok((conv2d_maybe_norm(self, x, norm, w, bias, res, g, p)?, None))
    }
    /// act(GN(x)) nearest-2× upsampled (`up`) or 2×2 average pooled, from x's records `rec` in
    /// one pass where the backend has one (`Backend::group_norm_resample`); None here: the front
    /// runs group_norm and the resample.
    fn group_norm_resample(&self, _x: &T<Self>, _rec: Option<&T<Self>>, _norm: &GnOperand<'_, Self>, _up: bool) -> Result<Option<T<Self>>> {
        Ok(None)
    }
    /// x [N, C, S] with C = `c`, S = `s`.
    fn channel_affine(&self, x: &T<Self>, scale: &T<Self>, shift: &T<Self>, c: usize, s: usize) -> Result<T<Self>>;
    fn channel_affine_x_backward(&self, gy: &T<Self>, scale: &T<Self>, c: usize, s: usize) -> Result<T<Self>>;

    // ---- elementwise ----
    fn activation(&self, x: &T<Self>, act: Activation) -> Result<T<Self>>;
    fn activation_x_backward(&self, gy: &T<Self>, x: &T<Self>, act: Activation) -> Result<T<Self>>;
    fn add(&self, a: &T<Self>, b: &T<Self>, g: &BroadcastGeom) -> Result<T<Self>>;
    fn mul(&self, a: &T<Self>, b: &T<Self>, g: &BroadcastGeom) -> Result<T<Self>>;
    fn add_x_backward(&self, gy: &T<Self>, b_shape: &Shape, g: &BroadcastGeom) -> Result<(T<Self>, T<Self>)>;
    fn mul_x_backward(&self, gy: &T<Self>, a: &T<Self>, b: &T<Self>, g: &BroadcastGeom) -> Result<(T<Self>, T<Self>)>;
    fn scale_add_scalar(&self, x: &T<Self>, alpha: f32, beta: f32) -> Result<T<Self>>;

    // ---- pooling and resampling ----
    fn avg_pool2d(&self, x: &T<Self>, g: &Pool2dGeom, y: &Shape) -> Result<T<Self>>;
    fn avg_pool2d_x_backward(&self, gy: &T<Self>, x_shape: &Shape, g: &Pool2dGeom) -> Result<T<Self>>;
    fn max_pool2d(&self, x: &T<Self>, g: &Pool2dGeom, y: &Shape) -> Result<T<Self>>;
    fn max_pool2d_x_backward(&self, gy: &T<Self>, x: &T<Self>, g: &Pool2dGeom) -> Result<T<Self>>;
    /// x [n, c, plane] → [n, c, 1, 1].
    fn global_avg_pool(&self, x: &T<Self>, n: usize, c: usize, plane: usize) -> Result<T<Self>>;
    /// x [N, C, H, W] = `x_dims`.
    fn upsample_nearest2x(&self, x: &T<Self>, x_dims: [usize; 4]) -> Result<T<Self>>;
    /// The gradient of an input of `x_dims`.
    fn upsample_nearest2x_x_backward(&self, gy: &T<Self>, x_dims: [usize; 4]) -> Result<T<Self>>;
    fn resize_bilinear(&self, x: &T<Self>, g: &ResizeGeom) -> Result<T<Self>>;
    fn resize_bilinear_x_backward(&self, gy: &T<Self>, g: &ResizeGeom) -> Result<T<Self>>;

    // ---- layout (output dims given) ----
    fn concat_channels(&self, xs: &[&T<Self>], dims: &[usize]) -> Result<T<Self>>;
    /// `concat_channels`, and the result's group-norm records for `next` where the backend makes
    /// them as it copies (`Backend::concat_channels_gn`). Here: no records.
    fn concat_channels_gn(&self, xs: &[&T<Self>], dims: &[usize], _next: Option<&GnOperand<'_, Self>>) -> Result<(T<Self>, Option<T<Self>>)> {
        Ok((self.concat_channels(xs, dims)?, None))
    }
    fn slice_channels(&self, x: &T<Self>, start: usize, dims: &[usize]) -> Result<T<Self>>;
    fn gather_channels(&self, x: &T<Self>, ids: &[usize], dims: &[usize]) -> Result<T<Self>>;
    fn gather_channels_x_backward(&self, gy: &T<Self>, ids: &[usize], dims: &[usize]) -> Result<T<Self>>;

    // ---- PaDiM ----
    fn mahalanobis(&self, f: &T<Self>, mean: &T<Self>, linv: &T<Self>, g: &MahalanobisGeom) -> Result<T<Self>>;
    fn mahalanobis_x_backward(&self, gd: &T<Self>, f: &T<Self>, mean: &T<Self>, linv: &T<Self>, g: &MahalanobisGeom) -> Result<T<Self>>;

    // ---- attention ----
    fn attention_legacy(&self, qkv: &T<Self>, g: &AttentionGeom) -> Result<T<Self>>;
    fn attention_legacy_x_backward(&self, gy: &T<Self>, qkv: &T<Self>, g: &AttentionGeom) -> Result<T<Self>>;
    /// `attention_legacy` with q, k, v and the softmax weights rounded to `p` (never F32); the
    /// softmax statistics stay f32. A backend without a lower-precision kernel computes in f32.
    fn attention_legacy_lowp(&self, qkv: &T<Self>, g: &AttentionGeom, _p: Precision) -> Result<T<Self>> {
        self.attention_legacy(qkv, g)
    }

    // ---- embeddings ----
    fn timestep_embedding(&self, t: &T<Self>, dim: usize, max_period: f32) -> Result<T<Self>>;
    fn embedding(&self, table: &T<Self>, ids: &[usize], dim: usize) -> Result<T<Self>>;
    /// ∂L/∂table [rows, dim] from gy [len(ids), dim] (ids may repeat: their rows add up).
    fn embedding_w_backward(&self, gy: &T<Self>, ids: &[usize], rows: usize, dim: usize) -> Result<T<Self>>;

    // ---- reductions ----
    fn mean_std(&self, x: &T<Self>) -> Result<(f64, f64)>;

    // ---- optimiser ----
    /// (θ, m, v) after one AdamW step.
    fn adamw_step(&self, param: &T<Self>, grad: &T<Self>, m: &T<Self>, v: &T<Self>, k: &AdamwCoefs) -> Result<(T<Self>, T<Self>, T<Self>)>;
    fn axpby(&self, a: &T<Self>, b: &T<Self>, alpha: f32, beta: f32) -> Result<T<Self>>;

    // ---- diffusion step math ----
    fn q_sample(&self, x0: &T<Self>, noise: &T<Self>, sqrt_ab: f32, sqrt_1m_ab: f32) -> Result<T<Self>>;
    /// x_t [N, ch, s]; model_out [N, ch or 2ch, s].
    fn p_mean_variance(&self, xt: &T<Self>, model_out: &T<Self>, c: &StepCoefs, ch: usize, s: usize) -> Result<(T<Self>, T<Self>, T<Self>)>;
    fn kl_bits(&self, x0: &T<Self>, xt: &T<Self>, p_mean: &T<Self>, p_logvar: &T<Self>, c: &StepCoefs) -> Result<T<Self>>;
    fn p_sample(&self, mean: &T<Self>, logvar: &T<Self>, z: &T<Self>, nonzero: bool) -> Result<T<Self>>;
    fn ddim_step(&self, xt: &T<Self>, pred_x0: &T<Self>, z: &T<Self>, c: &DdimCoefs) -> Result<T<Self>>;
}

/// `Compute::group_norm_conv2d` as its two ops: group_norm (group_norm_emb with `emb`), then conv2d
/// (conv2d_add with `res`) in `p` — what the default runs, and a device's fallback.
#[allow(clippy::too_many_arguments)]
/// A group norm as an operand of a fused op (`Compute::conv2d_gn`), its geometry checked: γ, β,
/// emb (the scale-shift columns, at g's stride and offsets) and g.
pub struct GnOperand<'a, C: HasStorage> {
    pub gamma: &'a T<C>,
    pub beta: &'a T<C>,
    pub emb: Option<&'a T<C>>,
    pub g: GroupNormGeom,
}

/// conv2d (+ res) of x, or of x normalised by `norm` (`group_norm_conv2d`), in `p`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_maybe_norm<C: Compute>(be: &C, x: &T<C>, norm: Option<&GnOperand<'_, C>>, w: &T<C>, bias: Option<&T<C>>, res: Option<&T<C>>, g: &Conv2dGeom, p: Precision) -> Result<T<C>> {
    if let Some(n) = norm {
        return be.group_norm_conv2d(x, n.gamma, n.beta, n.emb, &n.g, w, bias, res, g, p);
    }
    match (res, p) {
        (None, Precision::F32) => be.conv2d(x, w, bias, g),
        (None, p) => be.conv2d_lowp(x, w, bias, g, p),
        (Some(r), Precision::F32) => be.conv2d_add(x, w, bias, r, g),
        (Some(r), p) => be.conv2d_add_lowp(x, w, bias, r, g, p),
    }
}

pub fn group_norm_then_conv2d<C: Compute>(
    be: &C,
    x: &T<C>,
    gamma: &T<C>,
    beta: &T<C>,
    emb: Option<&T<C>>,
    gn: &GroupNormGeom,
    w: &T<C>,
    bias: Option<&T<C>>,
    res: Option<&T<C>>,
    g: &Conv2dGeom,
    p: Precision,
) -> Result<T<C>> {
    let h = match emb {
        Some(e) => be.group_norm_emb(x, gamma, beta, e, gn)?,
        None => be.group_norm(x, gamma, beta, None, gn)?,
    };
    match (res, p) {
        (None, Precision::F32) => be.conv2d(&h, w, bias, g),
        (None, p) => be.conv2d_lowp(&h, w, bias, g, p),
        (Some(r), Precision::F32) => be.conv2d_add(&h, w, bias, r, g),
        (Some(r), p) => be.conv2d_add_lowp(&h, w, bias, r, g, p),
    }
}
