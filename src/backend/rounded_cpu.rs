//! The CPU backend as `--device cpu` runs it: `Cpu` itself at f32, and at tf32/bf16/f16 the CPU
//! proxy of the CUDA backend's lower precisions (issue #14's accuracy check without a GPU). The
//! proxy rounds the operands of conv2d (and conv2d_add, conv2d_act, which call it), conv2d_x_backward,
//! linear (and linear_parts), linear_x_backward with
//! `Precision::round_slice` — the host twin of the kernels' casts — and multiplies in f32, where
//! `precision_dispatch::route` sends the shape to a tensor-core kernel (elsewhere the kernel is the
//! f32 one, and so is the proxy); attention's forward at bf16/f16 follows the tensor-core flash
//! kernel's rounding points (cpu/attention_rounded.rs). Products of rounded operands are exact in
//! f32, so the proxy and the kernels differ only in the order of the f32 sums
//! (tests/backends_agree.rs checks that on the emulator, row by row and precision by precision,
//! at the bound of `optable::precision::tensor_core_tolerance`).
//!
//! Every other op, and every op at f32, is `Cpu`'s own: the tensors share `Cpu`'s storage, so
//! handing one on is a reference-count increment.

use super::cpu::{attention_rounded, Cpu};
use super::cuda::precision_dispatch::{route, GemmOp, Route};
use super::{Compute, GroupNormGrads, ScaleShift};
use crate::ops::attention::AttentionGeom;
use crate::ops::contract::{AdamwCoefs, BroadcastGeom, Conv2dGeom, DdimCoefs, GroupNormGeom, Pool2dGeom, StepCoefs};
use crate::ops::conv::LinearGeom;
use crate::ops::padim::MahalanobisGeom;
use crate::ops::pool::ResizeGeom;
use crate::ops::precision::Precision;
use crate::ops::Activation;
use crate::tensor::{HasStorage, Shape, Tensor};
use crate::Result;

#[derive(Clone, Debug, Default)]
pub struct RoundedCpu {
    precision: Precision,
}

impl RoundedCpu {
    pub fn new(precision: Precision) -> Self {
        RoundedCpu { precision }
    }
}

impl HasStorage for RoundedCpu {
    type Storage = <Cpu as HasStorage>::Storage;
}

type T = Tensor<RoundedCpu>;
type C = Tensor<Cpu>;

/// The same tensor as `Cpu`'s (shared storage).
fn d(t: &T) -> C {
    Tensor::from_parts(t.shape().clone(), t.storage().clone())
}
fn u(t: C) -> T {
    Tensor::from_parts(t.shape().clone(), t.storage().clone())
}
fn u2((a, b): (C, C)) -> (T, T) {
    (u(a), u(b))
}
fn ss(s: ScaleShift<'_, RoundedCpu>) -> Option<(C, C)> {
    s.map(|(a, b)| (d(a), d(b)))
}
fn ss_ref(s: &Option<(C, C)>) -> ScaleShift<'_, Cpu> {
    s.as_ref().map(|(a, b)| (a, b))
}

impl RoundedCpu {
    /// `t` with its values rounded to `p` (a new tensor; `t` is untouched).
    fn rounded(&self, t: &T, p: Precision) -> Result<C> {
        let mut v = t.storage().f32().to_vec();
        p.round_slice(&mut v);
        Cpu.upload_vec(t.dims(), v)
    }
}

impl Compute for RoundedCpu {
    fn name(&self) -> String {
        match self.precision {
            Precision::F32 => Cpu.name(),
            p => format!("{}, {p} operands emulated (f32 accumulation)", Cpu.name()),
        }
    }
    fn precision(&self) -> Precision {
        self.precision
    }
    fn on_workers<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        Cpu.on_workers(f)
    }

    fn upload(&self, dims: &[usize], data: &[f32]) -> Result<T> {
        Cpu.upload(dims, data).map(u)
    }
    fn upload_vec(&self, dims: &[usize], data: Vec<f32>) -> Result<T> {
        Cpu.upload_vec(dims, data).map(u)
    }
    fn upload_f16(&self, dims: &[usize], data: Vec<half::f16>) -> Result<T> {
        Cpu.upload_f16(dims, data).map(u)
    }
    fn download(&self, x: &T) -> Result<Vec<f32>> {
        Cpu.download(&d(x))
    }

    fn conv2d(&self, x: &T, w: &T, bias: Option<&T>, g: &Conv2dGeom) -> Result<T> {
        Cpu.conv2d(&d(x), &d(w), bias.map(d).as_ref(), g).map(u)
    }
    // the fused convs at f32 (the other precisions take the `_lowp` defaults: the rounded conv,
    // then the op): `Cpu`'s output passes, not the trait's composition of three ops
    fn conv2d_act(&self, x: &T, w: &T, bias: Option<&T>, act: Activation, g: &Conv2dGeom, mean: bool) -> Result<(T, Option<T>)> {
        let (y, m) = Cpu.conv2d_act(&d(x), &d(w), bias.map(d).as_ref(), act, g, mean)?;
        Ok((u(y), m.map(u)))
    }
    fn conv2d_add(&self, x: &T, w: &T, bias: Option<&T>, res: &T, g: &Conv2dGeom) -> Result<T> {
        Cpu.conv2d_add(&d(x), &d(w), bias.map(d).as_ref(), &d(res), g).map(u)
    }
    fn conv2d_x_backward(&self, gy: &T, w: &T, g: &Conv2dGeom) -> Result<T> {
        Cpu.conv2d_x_backward(&d(gy), &d(w), g).map(u)
    }
    fn linear(&self, x: &T, w: &T, bias: Option<&T>, g: &LinearGeom) -> Result<T> {
        Cpu.linear(&d(x), &d(w), bias.map(d).as_ref(), g).map(u)
    }
    // one GEMM per part (each part's own `linear` bits) and a stacked f16 weight widened part by
    // part, as `Cpu` (the trait's default widens the whole stack and runs one GEMM)
    fn linear_parts(&self, x: &T, w: &T, bias: Option<&T>, g: &LinearGeom, parts: &[usize]) -> Result<T> {
        Cpu.linear_parts(&d(x), &d(w), bias.map(d).as_ref(), g, parts).map(u)
    }
    fn linear_x_backward(&self, gy: &T, w: &T, g: &LinearGeom) -> Result<T> {
        Cpu.linear_x_backward(&d(gy), &d(w), g).map(u)
    }

    // the four GEMM-like ops where the CUDA backend's route takes a tensor-core kernel: the
    // operands rounded (bias never), f32 products and sums; elsewhere f32 as the kernels are
    fn conv2d_lowp(&self, x: &T, w: &T, bias: Option<&T>, g: &Conv2dGeom, p: Precision) -> Result<T> {
        if route(GemmOp::Conv2d(g), p) == Route::F32 {
            return self.conv2d(x, w, bias, g);
        }
        Cpu.conv2d(&self.rounded(x, p)?, &self.rounded(w, p)?, bias.map(d).as_ref(), g).map(u)
    }
    fn conv2d_x_backward_lowp(&self, gy: &T, w: &T, g: &Conv2dGeom, p: Precision) -> Result<T> {
        if route(GemmOp::Conv2dXBackward(g), p) == Route::F32 {
            return self.conv2d_x_backward(gy, w, g);
        }
        Cpu.conv2d_x_backward(&self.rounded(gy, p)?, &self.rounded(w, p)?, g).map(u)
    }
    fn linear_lowp(&self, x: &T, w: &T, bias: Option<&T>, g: &LinearGeom, p: Precision) -> Result<T> {
        if route(GemmOp::Linear(g), p) == Route::F32 {
            return self.linear(x, w, bias, g);
        }
        Cpu.linear(&self.rounded(x, p)?, &self.rounded(w, p)?, bias.map(d).as_ref(), g).map(u)
    }
    fn linear_x_backward_lowp(&self, gy: &T, w: &T, g: &LinearGeom, p: Precision) -> Result<T> {
        if route(GemmOp::LinearXBackward(g), p) == Route::F32 {
            return self.linear_x_backward(gy, w, g);
        }
        Cpu.linear_x_backward(&self.rounded(gy, p)?, &self.rounded(w, p)?, g).map(u)
    }
    fn attention_legacy_lowp(&self, qkv: &T, g: &AttentionGeom, p: Precision) -> Result<T> {
        if route(GemmOp::Attention(g), p) == Route::F32 {
            return self.attention_legacy(qkv, g);
        }
        let y = attention_rounded::attention_legacy_rounded(&qkv.storage().f32(), g.n * g.heads, g.d, g.t, p);
        self.upload_vec(&g.y_dims(qkv.shape()), y)
    }

    fn conv2d_w_backward(&self, gy: &T, x: &T, g: &Conv2dGeom) -> Result<T> {
        Cpu.conv2d_w_backward(&d(gy), &d(x), g).map(u)
    }
    fn conv2d_w_backward_lowp(&self, gy: &T, x: &T, g: &Conv2dGeom, p: Precision) -> Result<T> {
        if route(GemmOp::Conv2dWBackward(g), p) == Route::F32 {
            return self.conv2d_w_backward(gy, x, g);
        }
        Cpu.conv2d_w_backward(&self.rounded(gy, p)?, &self.rounded(x, p)?, g).map(u)
    }
    fn linear_w_backward(&self, gy: &T, x: &T, g: &LinearGeom) -> Result<T> {
        Cpu.linear_w_backward(&d(gy), &d(x), g).map(u)
    }
    fn channel_sum(&self, x: &T, n: usize, c: usize, s: usize) -> Result<T> {
        Cpu.channel_sum(&d(x), n, c, s).map(u)
    }

    fn group_norm(&self, x: &T, gamma: &T, beta: &T, s: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<T> {
        let s = ss(s);
        Cpu.group_norm(&d(x), &d(gamma), &d(beta), ss_ref(&s), g).map(u)
    }
    fn group_norm_x_backward(&self, gy: &T, x: &T, gamma: &T, beta: &T, s: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<T> {
        let s = ss(s);
        Cpu.group_norm_x_backward(&d(gy), &d(x), &d(gamma), &d(beta), ss_ref(&s), g).map(u)
    }
    fn group_norm_w_backward(&self, gy: &T, x: &T, gamma: &T, beta: &T, s: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<GroupNormGrads<Self>> {
        let s = ss(s);
        let r = Cpu.group_norm_w_backward(&d(gy), &d(x), &d(gamma), &d(beta), ss_ref(&s), g)?;
        Ok(GroupNormGrads { gamma: u(r.gamma), beta: u(r.beta), scale_shift: r.scale_shift.map(u2) })
    }
    fn channel_affine(&self, x: &T, scale: &T, shift: &T, c: usize, s: usize) -> Result<T> {
        Cpu.channel_affine(&d(x), &d(scale), &d(shift), c, s).map(u)
    }
    fn channel_affine_x_backward(&self, gy: &T, scale: &T, c: usize, s: usize) -> Result<T> {
        Cpu.channel_affine_x_backward(&d(gy), &d(scale), c, s).map(u)
    }

    fn activation(&self, x: &T, act: Activation) -> Result<T> {
        Cpu.activation(&d(x), act).map(u)
    }
    fn activation_x_backward(&self, gy: &T, x: &T, act: Activation) -> Result<T> {
        Cpu.activation_x_backward(&d(gy), &d(x), act).map(u)
    }
    fn add(&self, a: &T, b: &T, g: &BroadcastGeom) -> Result<T> {
        Cpu.add(&d(a), &d(b), g).map(u)
    }
    fn mul(&self, a: &T, b: &T, g: &BroadcastGeom) -> Result<T> {
        Cpu.mul(&d(a), &d(b), g).map(u)
    }
    fn add_x_backward(&self, gy: &T, b_shape: &Shape, g: &BroadcastGeom) -> Result<(T, T)> {
        Cpu.add_x_backward(&d(gy), b_shape, g).map(u2)
    }
    fn mul_x_backward(&self, gy: &T, a: &T, b: &T, g: &BroadcastGeom) -> Result<(T, T)> {
        Cpu.mul_x_backward(&d(gy), &d(a), &d(b), g).map(u2)
    }
    fn scale_add_scalar(&self, x: &T, alpha: f32, beta: f32) -> Result<T> {
        Cpu.scale_add_scalar(&d(x), alpha, beta).map(u)
    }

    fn avg_pool2d(&self, x: &T, g: &Pool2dGeom, y: &Shape) -> Result<T> {
        Cpu.avg_pool2d(&d(x), g, y).map(u)
    }
    fn avg_pool2d_x_backward(&self, gy: &T, x_shape: &Shape, g: &Pool2dGeom) -> Result<T> {
        Cpu.avg_pool2d_x_backward(&d(gy), x_shape, g).map(u)
    }
    fn max_pool2d(&self, x: &T, g: &Pool2dGeom, y: &Shape) -> Result<T> {
        Cpu.max_pool2d(&d(x), g, y).map(u)
    }
    fn max_pool2d_x_backward(&self, gy: &T, x: &T, g: &Pool2dGeom) -> Result<T> {
        Cpu.max_pool2d_x_backward(&d(gy), &d(x), g).map(u)
    }
    fn global_avg_pool(&self, x: &T, n: usize, c: usize, plane: usize) -> Result<T> {
        Cpu.global_avg_pool(&d(x), n, c, plane).map(u)
    }
    fn upsample_nearest2x(&self, x: &T, x_dims: [usize; 4]) -> Result<T> {
        Cpu.upsample_nearest2x(&d(x), x_dims).map(u)
    }
    fn upsample_nearest2x_x_backward(&self, gy: &T, x_dims: [usize; 4]) -> Result<T> {
        Cpu.upsample_nearest2x_x_backward(&d(gy), x_dims).map(u)
    }
    fn resize_bilinear(&self, x: &T, g: &ResizeGeom) -> Result<T> {
        Cpu.resize_bilinear(&d(x), g).map(u)
    }
    fn resize_bilinear_x_backward(&self, gy: &T, g: &ResizeGeom) -> Result<T> {
        Cpu.resize_bilinear_x_backward(&d(gy), g).map(u)
    }

    fn concat_channels(&self, xs: &[&T], dims: &[usize]) -> Result<T> {
        let xs: Vec<C> = xs.iter().map(|x| d(x)).collect();
        let refs: Vec<&C> = xs.iter().collect();
        Cpu.concat_channels(&refs, dims).map(u)
    }
    fn slice_channels(&self, x: &T, start: usize, dims: &[usize]) -> Result<T> {
        Cpu.slice_channels(&d(x), start, dims).map(u)
    }
    fn gather_channels(&self, x: &T, ids: &[usize], dims: &[usize]) -> Result<T> {
        Cpu.gather_channels(&d(x), ids, dims).map(u)
    }
    fn gather_channels_x_backward(&self, gy: &T, ids: &[usize], dims: &[usize]) -> Result<T> {
        Cpu.gather_channels_x_backward(&d(gy), ids, dims).map(u)
    }

    fn mahalanobis(&self, f: &T, mean: &T, linv: &T, g: &MahalanobisGeom) -> Result<T> {
        Cpu.mahalanobis(&d(f), &d(mean), &d(linv), g).map(u)
    }
    fn mahalanobis_x_backward(&self, gd: &T, f: &T, mean: &T, linv: &T, g: &MahalanobisGeom) -> Result<T> {
        Cpu.mahalanobis_x_backward(&d(gd), &d(f), &d(mean), &d(linv), g).map(u)
    }

    fn attention_legacy(&self, qkv: &T, g: &AttentionGeom) -> Result<T> {
        Cpu.attention_legacy(&d(qkv), g).map(u)
    }
    fn attention_legacy_x_backward(&self, gy: &T, qkv: &T, g: &AttentionGeom) -> Result<T> {
        Cpu.attention_legacy_x_backward(&d(gy), &d(qkv), g).map(u)
    }

    fn timestep_embedding(&self, t: &T, dim: usize, max_period: f32) -> Result<T> {
        Cpu.timestep_embedding(&d(t), dim, max_period).map(u)
    }
    fn embedding(&self, table: &T, ids: &[usize], dim: usize) -> Result<T> {
        Cpu.embedding(&d(table), ids, dim).map(u)
    }
    fn embedding_w_backward(&self, gy: &T, ids: &[usize], rows: usize, dim: usize) -> Result<T> {
        Cpu.embedding_w_backward(&d(gy), ids, rows, dim).map(u)
    }

    fn mean_std(&self, x: &T) -> Result<(f64, f64)> {
        Cpu.mean_std(&d(x))
    }

    fn adamw_step(&self, param: &T, grad: &T, m: &T, v: &T, k: &AdamwCoefs) -> Result<(T, T, T)> {
        let (a, b, c) = Cpu.adamw_step(&d(param), &d(grad), &d(m), &d(v), k)?;
        Ok((u(a), u(b), u(c)))
    }
    fn axpby(&self, a: &T, b: &T, alpha: f32, beta: f32) -> Result<T> {
        Cpu.axpby(&d(a), &d(b), alpha, beta).map(u)
    }

    fn q_sample(&self, x0: &T, noise: &T, sqrt_ab: f32, sqrt_1m_ab: f32) -> Result<T> {
        Cpu.q_sample(&d(x0), &d(noise), sqrt_ab, sqrt_1m_ab).map(u)
    }
    fn p_mean_variance(&self, xt: &T, model_out: &T, c: &StepCoefs, ch: usize, s: usize) -> Result<(T, T, T)> {
        let (a, b, x) = Cpu.p_mean_variance(&d(xt), &d(model_out), c, ch, s)?;
        Ok((u(a), u(b), u(x)))
    }
    fn kl_bits(&self, x0: &T, xt: &T, p_mean: &T, p_logvar: &T, c: &StepCoefs) -> Result<T> {
        Cpu.kl_bits(&d(x0), &d(xt), &d(p_mean), &d(p_logvar), c).map(u)
    }
    fn p_sample(&self, mean: &T, logvar: &T, z: &T, nonzero: bool) -> Result<T> {
        Cpu.p_sample(&d(mean), &d(logvar), &d(z), nonzero).map(u)
    }
    fn ddim_step(&self, xt: &T, pred_x0: &T, z: &T, c: &DdimCoefs) -> Result<T> {
        Cpu.ddim_step(&d(xt), &d(pred_x0), &d(z), c).map(u)
    }
}
