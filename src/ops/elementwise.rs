//! Activations, broadcast add/mul, the scalar affine.

use super::contract::BroadcastGeom;
use super::{fits_i32, i32_of, same_shape};
use crate::tensor::Shape;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    Relu,
    Sigmoid,
    /// min(max(x, 0), 6): EfficientNet-Lite's activation
    Relu6,
}

impl Activation {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "silu" | "swish" => Ok(Activation::Silu),
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            "relu6" => Ok(Activation::Relu6),
            _ => Err(Error::InvalidArgument(format!("unknown activation `{s}` (silu, relu, sigmoid, relu6)"))),
        }
    }
    /// The `act` argument of elementwise.cu.
    pub fn code(self) -> i32 {
        match self {
            Activation::Silu => 0,
            Activation::Relu => 1,
            Activation::Sigmoid => 2,
            Activation::Relu6 => 3,
        }
    }
}

/// One tensor in, one of the same shape out.
pub fn unary(op: &'static str, x: &Shape) -> Result<()> {
    fits_i32(op, &[x])
}

/// Two same-shaped tensors (gradient and input, or two inputs).
pub fn binary_same(op: &'static str, a: &Shape, b: &Shape) -> Result<()> {
    same_shape(op, a, b)?;
    fits_i32(op, &[a])
}

/// `b` broadcasts to `a` (same rank ≤ 4; each dim of b equal to a's or 1).
pub fn broadcast(op: &'static str, a: &Shape, b: &Shape) -> Result<BroadcastGeom> {
    let ok = a.rank() == b.rank() && a.dims().iter().zip(b.dims()).all(|(&x, &y)| x == y || y == 1);
    if !ok {
        return Err(Error::shape(op, format!("{b} does not broadcast to {a} (same rank, each dim equal or 1)")));
    }
    if a.rank() > 4 {
        return Err(Error::shape(op, format!("broadcast supports rank ≤ 4, got {a}")));
    }
    fits_i32(op, &[a])?;
    let pad = 4 - a.rank();
    let mut s = BroadcastGeom { dims: [1; 4], bstride: [0; 4], bdims: [1; 4] };
    for d in 0..a.rank() {
        s.dims[pad + d] = i32_of(op, a.dims()[d])?;
        s.bdims[pad + d] = i32_of(op, b.dims()[d])?;
    }
    let mut stride = 1;
    for d in (0..4).rev() {
        s.bstride[d] = if s.bdims[d] == 1 { 0 } else { stride };
        stride *= s.bdims[d];
    }
    Ok(s)
}

/// mul_x_backward: gy and a share a shape, b broadcasts to it.
pub fn mul_x_backward(gy: &Shape, a: &Shape, b: &Shape) -> Result<BroadcastGeom> {
    same_shape("mul_x_backward", a, gy)?;
    broadcast("mul_x_backward", a, b)
}
