//! The op table's precision dimension (issue #14): the rows `--precision` reaches, the operands
//! each rounds, a case with those operands rounded by `Precision::round_slice` — on which the CPU
//! backend (backend/rounded_cpu.rs does the same) is the reference a low-precision kernel is
//! checked against — and the tolerance of that check.
//!
//! The tolerance, per case: products of rounded operands are exact in f32 (at most 11 + 11
//! significant bits), so the kernel and the reference differ only in how f32 sums the K products
//! of each output (the emulated mma adds 16 or 8 exact products per rounding, split-K adds its
//! partials in split order, the CPU has its own blocking). Each addition rounds by at most 2⁻²⁴ of
//! a partial sum; K of them with random signs walk like √K, with partial sums no larger than the
//! GEMM's outputs G (before a residual or an activation):
//!   |got − ref| ≤ TC_TIGHT · 2⁻²³ · √K · max|G|  +  2⁻²³·|ref| (the bias add; 2⁻²² with the
//!   residual's add),  TC_TIGHT = 2 — the bound of tests/common/tc.rs;
//! conv2d_act scales the walk by the activation's largest slope (1.1, SiLU's) and adds the f32
//! activation's own error (the CPU's fast exp: rtol 5e-7; the planes' means: 1e-6·max|ref|).
//! Rounding the operands moves a result by ~2⁻⁹ (bf16) or 2⁻¹² (tf32, f16) of √K·rms(x·w), and
//! max|G| is a few √K·rms(x·w): about 2¹¹/√K (bf16) or 2⁸/√K (tf32, f16) times the bound, so the
//! f32 result of the unrounded operands fails it up to K of a few thousand (the cross-backend
//! suite checks that on every tensor-core case).

use super::case::OpCase;
use super::run::conv_params;
use super::table::Tol;
use crate::backend::cuda::precision_dispatch::{route, GemmOp, Route};
use crate::ops::contract::Conv2dGeom;
use crate::ops::conv::{self, LinearGeom};
use crate::ops::precision::Precision;
use crate::{Error, Result, Shape};

/// Rows whose operands `--precision` rounds, and those operands (bias and every other input
/// stay f32).
/// Every GEMM row that `Backend` sends to `Compute::*_lowp` (backend/mod.rs): conv2d_act and
/// linear_parts reach the tensor cores too (as conv2d then the activation, and as one linear).
/// Attention's forward also takes a tensor-core kernel at bf16/f16, but its P = softmax weights
/// are rounded inside the op, not an operand: tests/attention_flash.rs checks it against its
/// rounding points (and rounded_cpu.rs mirrors them).
pub const ROUNDED_OPERANDS: &[(&str, &[&str])] = &[
    ("conv2d", &["x", "w"]),
    ("conv2d_add", &["x", "w"]),
    ("conv2d_act", &["x", "w"]),
    ("conv2d_x_backward", &["gy", "w"]),
    ("conv2d_w_backward", &["gy", "x"]),
    ("linear", &["x", "w"]),
    ("linear_parts", &["x", "w"]),
    ("linear_x_backward", &["gy", "w"]),
];

/// Outputs of those rows computed from the unrounded operands: conv2d_w_backward's bias gradient
/// is `channel_sum`'s f32 sums of ∂y on every backend (only ∂w's GEMM rounds ∂y).
pub const F32_OUTPUTS: &[(&str, &str)] = &[("conv2d_w_backward", "g_b")];

pub fn f32_output(method: &str, out: &str) -> bool {
    F32_OUTPUTS.contains(&(method, out))
}

pub fn rounded_operands(method: &str) -> Option<&'static [&'static str]> {
    ROUNDED_OPERANDS.iter().find(|(m, _)| *m == method).map(|(_, o)| *o)
}

/// `c` with the operands of `method` rounded to `p` (the reference's inputs).
pub fn rounded_case(c: &OpCase, method: &str, p: Precision) -> Result<OpCase> {
    let ops = rounded_operands(method).ok_or_else(|| Error::InvalidArgument(format!("{method}: not a row --precision reaches")))?;
    let mut r = c.clone();
    for k in ops {
        match r.tensors.get_mut(*k) {
            Some((_, v)) => p.round_slice(v),
            None => return Err(Error::InvalidArgument(format!("op case {}: no tensor `{k}`", c.name))),
        }
    }
    Ok(r)
}

/// The geometry of a precision row on case `c`, for the backend's dispatch to route it.
pub enum Geometry {
    Conv(Conv2dGeom),
    Linear(LinearGeom),
}

pub fn geometry(c: &OpCase, method: &str) -> Result<Geometry> {
    let dims = |k: &str| -> Result<Shape> { c.dims(k).map(Shape::new) };
    let bias = c.has("b").then(|| dims("b")).transpose()?;
    Ok(match method {
        "conv2d" | "conv2d_add" | "conv2d_act" => Geometry::Conv(conv::conv2d(&dims("x")?, &dims("w")?, bias.as_ref(), &conv_params(c)?)?),
        "conv2d_x_backward" => Geometry::Conv(conv::conv2d_x_backward(&dims("gy")?, &dims("w")?, &dims("x")?, &conv_params(c)?)?),
        "conv2d_w_backward" => Geometry::Conv(conv::conv2d_w_backward(&dims("gy")?, &dims("x")?, &dims("w")?, &conv_params(c)?)?),
        "linear" | "linear_parts" => Geometry::Linear(conv::linear(&dims("x")?, &dims("w")?, bias.as_ref())?),
        "linear_x_backward" => Geometry::Linear(conv::linear_x_backward(&dims("gy")?, &dims("w")?)?),
        _ => return Err(Error::InvalidArgument(format!("{method}: not a row --precision reaches"))),
    })
}

/// Where the CUDA backend's dispatch (`precision_dispatch::route`) sends row `method` of `c` at `p`.
pub fn route_of(c: &OpCase, method: &str, p: Precision) -> Result<Route> {
    Ok(match geometry(c, method)? {
        Geometry::Conv(g) if method == "conv2d_x_backward" => route(GemmOp::Conv2dXBackward(&g), p),
        Geometry::Conv(g) if method == "conv2d_w_backward" => route(GemmOp::Conv2dWBackward(&g), p),
        Geometry::Conv(g) => route(GemmOp::Conv2d(&g), p),
        Geometry::Linear(g) if method == "linear_x_backward" => route(GemmOp::LinearXBackward(&g), p),
        Geometry::Linear(g) => route(GemmOp::Linear(&g), p),
    })
}

/// The row's GEMM (M, N, K) as the tensor-core engine launches it (backend/cuda/tensor_core.rs):
/// conv2d M = o, N = n·ho·wo, K = kh·kw·c; its ∂x M = c, N = n·h·w, K = kh·kw·o; its ∂w M = o,
/// N = c·kh·kw, K = n·ho·wo padded to whole chunks (`conv2d_w_backward_tc_depth`); linear M = rows,
/// N = fout, K = fin; its ∂x N = fin, K = fout.
pub fn gemm_mnk(c: &OpCase, method: &str) -> Result<(usize, usize, usize)> {
    Ok(match geometry(c, method)? {
        Geometry::Conv(g) if method == "conv2d_x_backward" => (g.c(), g.n() * g.h() * g.w(), g.kh() * g.kw() * g.o()),
        Geometry::Conv(g) if method == "conv2d_w_backward" => (g.o(), g.kk(), crate::backend::cuda::tensor_core::conv2d_w_backward_tc_depth(&g)),
        Geometry::Conv(g) => (g.o(), g.n() * g.ho() * g.wo(), g.kh() * g.kw() * g.c()),
        Geometry::Linear(g) if method == "linear_x_backward" => (g.rows, g.fin, g.fout),
        Geometry::Linear(g) => (g.rows, g.fout, g.fin),
    })
}

/// The row whose output is the GEMM's own result G, before conv2d_add's residual or
/// conv2d_act's activation (linear_parts is one linear).
pub fn gemm_row(method: &str) -> &str {
    match method {
        "conv2d_add" | "conv2d_act" => "conv2d",
        "linear_parts" => "linear",
        m => m,
    }
}

/// See the module's comment.
pub const TC_TIGHT: f64 = 2.0;

/// The tolerance of output `out` of a tensor-core row against the rounding CPU reference: K the
/// GEMM's depth, `gemm_max` = max|G| of the reference's GEMM, `reference` the reference output.
pub fn tensor_core_tolerance(method: &str, out: &str, k: usize, gemm_max: f64, reference: &[f32]) -> Tol {
    let u = 2f64.powi(-23);
    let walk = TC_TIGHT * u * (k as f64).sqrt() * gemm_max;
    match (method, out) {
        ("conv2d_act", "mean") => Tol { atol: 1.1 * walk + 1e-6 * reference.iter().fold(0.0f64, |a, &v| a.max(v.abs() as f64)), rtol: 5e-7 },
        ("conv2d_act", _) => Tol { atol: 1.1 * walk, rtol: 5e-7 },
        ("conv2d_add", _) => Tol { atol: walk, rtol: 2.0 * u },
        _ => Tol { atol: walk, rtol: u },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Catches: the reference rounding the bias (the kernels add it in f32) or not rounding an
    /// operand, and a row --precision reaches missing from the list.
    #[test]
    fn only_the_operands_are_rounded() {
        let mut c = OpCase::new("t", serde_json::json!({"op": "linear"}));
        let v = vec![0.1f32, 1.0 + 2f32.powi(-9), -3.3];
        for k in ["x", "w", "b"] {
            c.tensors.insert(k.into(), (vec![1, 3], v.clone()));
        }
        let r = rounded_case(&c, "linear", Precision::Bf16).unwrap();
        let bf: Vec<f32> = v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
        assert_eq!(r.tensors["x"].1, bf);
        assert_eq!(r.tensors["w"].1, bf);
        assert_eq!(r.tensors["b"].1, v);
        assert_ne!(bf, v);
        for m in ["conv2d", "conv2d_add", "conv2d_act", "conv2d_x_backward", "conv2d_w_backward", "linear", "linear_parts", "linear_x_backward"] {
            assert!(rounded_operands(m).is_some(), "{m}");
        }
        assert!(rounded_operands("linear_w_backward").is_none());
    }
}
