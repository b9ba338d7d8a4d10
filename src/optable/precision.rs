//! The op table's precision dimension (issue #14): the rows `--precision` reaches, the operands
//! each rounds, and a case with those operands rounded by `Precision::round_slice` — on which the
//! CPU backend is the reference a low-precision kernel is checked against. Products of rounded
//! operands are exact in f32 (at most 11 + 11 significant bits), so only the order of the f32
//! sums differs: the row's own f32 tolerance (`Entry::tolerance`) holds at every precision, about
//! 2⁸ (bf16) to 2¹¹ (tf32, f16) times tighter than the rounding itself moves a result.

use super::case::OpCase;
use super::run::conv_params;
use crate::ops::contract::Conv2dGeom;
use crate::ops::conv::{self, LinearGeom};
use crate::ops::precision::Precision;
use crate::{Error, Result, Shape};

/// Rows whose operands `--precision` rounds, and those operands (bias and every other input
/// stay f32).
pub const ROUNDED_OPERANDS: &[(&str, &[&str])] =
    &[("conv2d", &["x", "w"]), ("conv2d_add", &["x", "w"]), ("conv2d_x_backward", &["gy", "w"]), ("linear", &["x", "w"]), ("linear_x_backward", &["gy", "w"])];

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
        "conv2d" | "conv2d_add" => Geometry::Conv(conv::conv2d(&dims("x")?, &dims("w")?, bias.as_ref(), &conv_params(c)?)?),
        "conv2d_x_backward" => Geometry::Conv(conv::conv2d_x_backward(&dims("gy")?, &dims("w")?, &dims("x")?, &conv_params(c)?)?),
        "linear" => Geometry::Linear(conv::linear(&dims("x")?, &dims("w")?, bias.as_ref())?),
        "linear_x_backward" => Geometry::Linear(conv::linear_x_backward(&dims("gy")?, &dims("w")?)?),
        _ => return Err(Error::InvalidArgument(format!("{method}: not a row --precision reaches"))),
    })
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
        for m in ["conv2d", "conv2d_add", "conv2d_x_backward", "linear", "linear_x_backward"] {
            assert!(rounded_operands(m).is_some(), "{m}");
        }
        assert!(rounded_operands("conv2d_w_backward").is_none());
    }
}
