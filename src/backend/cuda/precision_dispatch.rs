//! The one place the CUDA backend maps a lower operand precision (`--precision tf32|bf16|f16`)
//! to a kernel. `Backend` (backend/mod.rs) sends conv2d, conv2d_x_backward, conv2d_w_backward, linear,
//! linear_x_backward and attention_legacy (its forward) here when `CudaBackend::precision` is not F32; F32 never comes here, so it
//! stays the f32 kernels exactly. Every fallback below is `Compute`'s f32 method, which is the
//! plain f32 kernel (never this dispatch again: no recursion, whatever a tensor-core function
//! falls back to).
//!
//! Which shapes and precisions take a tensor-core kernel is said once, by `route`, so the tests
//! check the dispatch against the same answer (tests/precision_dispatch.rs).
//!
//! The tensor-core functions (tensor_core.rs) say themselves which shapes they take (the
//! `*_supported` predicates) and fall back to the f32 kernel otherwise; `route` is those predicates.

use super::attention_tc::attention_tc_supported;
use super::device::Device;
use super::tensor_core::{conv2d_tc_supported, conv2d_w_backward_tc_supported, conv2d_x_backward_tc_supported, linear_tc_supported, linear_x_backward_tc_supported};
use super::{CudaBackend, T};
use crate::ops::attention::AttentionGeom;
use crate::ops::contract::Conv2dGeom;
use crate::ops::conv::LinearGeom;
use crate::ops::precision::Precision;
use crate::Result;

/// The six ops that `--precision` reaches.
#[derive(Clone, Copy, Debug)]
pub enum GemmOp<'a> {
    Conv2d(&'a Conv2dGeom),
    Conv2dXBackward(&'a Conv2dGeom),
    /// ∂w (training's mixed precision; the bias gradient stays f32)
    Conv2dWBackward(&'a Conv2dGeom),
    Linear(&'a LinearGeom),
    LinearXBackward(&'a LinearGeom),
    /// the forward only (kernels/attention_flash_tc.cu: bf16 and f16; its input gradient is f32)
    Attention(&'a AttentionGeom),
}

/// Where a shape at a precision runs: `TensorCore` rounds the operands to the precision,
/// `F32` is the f32 kernel (for F32, and for shapes or precisions the tensor-core kernels cannot take).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    TensorCore,
    F32,
}

pub fn route(op: GemmOp<'_>, p: Precision) -> Route {
    let tc = match op {
        GemmOp::Conv2d(g) => conv2d_tc_supported(g, p),
        GemmOp::Conv2dXBackward(g) => conv2d_x_backward_tc_supported(g, p),
        GemmOp::Conv2dWBackward(g) => conv2d_w_backward_tc_supported(g, p),
        GemmOp::Linear(g) => linear_tc_supported(g, p),
        GemmOp::LinearXBackward(g) => linear_x_backward_tc_supported(g, p),
        GemmOp::Attention(g) => matches!(p, Precision::Bf16 | Precision::F16) && attention_tc_supported(g) && g.n * g.heads * g.t > 0,
    };
    if tc {
        Route::TensorCore
    } else {
        Route::F32
    }
}

pub(super) fn conv2d<D: Device>(cb: &CudaBackend<D>, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
    cb.conv2d_tc(x, w, bias, g, p)
}

/// conv2d + residual: routed as conv2d (the residual changes only the epilogue).
pub(super) fn conv2d_add<D: Device>(cb: &CudaBackend<D>, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, res: &T<D>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
    cb.conv2d_add_tc(x, w, bias, res, g, p)
}

pub(super) fn conv2d_x_backward<D: Device>(cb: &CudaBackend<D>, gy: &T<D>, w: &T<D>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
    cb.conv2d_x_backward_tc(gy, w, g, p)
}

pub(super) fn conv2d_w_backward<D: Device>(cb: &CudaBackend<D>, gy: &T<D>, x: &T<D>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
    cb.conv2d_w_backward_tc(gy, x, g, p)
}

pub(super) fn linear<D: Device>(cb: &CudaBackend<D>, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, g: &LinearGeom, p: Precision) -> Result<T<D>> {
    cb.linear_tc(x, w, bias, g, p)
}

pub(super) fn linear_x_backward<D: Device>(cb: &CudaBackend<D>, gy: &T<D>, w: &T<D>, g: &LinearGeom, p: Precision) -> Result<T<D>> {
    cb.linear_x_backward_tc(gy, w, g, p)
}

pub(super) fn attention_legacy<D: Device>(cb: &CudaBackend<D>, qkv: &T<D>, g: &AttentionGeom, p: Precision) -> Result<T<D>> {
    cb.attention_legacy_tc(qkv, g, p)
}
