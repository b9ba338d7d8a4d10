//! guided-diffusion's legacy QKV attention.

use super::{at_least_2d, fits_i32};
use crate::tensor::Shape;
use crate::{Error, Result};

/// (N, d, T) of qkv [N, 3·heads·d, T...].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionGeom {
    pub n: usize,
    pub heads: usize,
    pub d: usize,
    pub t: usize,
}

impl AttentionGeom {
    /// [N, heads·d, T...] of the output for qkv's dims.
    pub fn y_dims(&self, qkv: &Shape) -> Vec<usize> {
        let mut dims = qkv.dims().to_vec();
        dims[1] = self.heads * self.d;
        dims
    }
}

pub fn attention_legacy(op: &'static str, qkv: &Shape, heads: usize) -> Result<AttentionGeom> {
    at_least_2d(op, qkv)?;
    let (n, c3, t) = qkv.ncs();
    if heads == 0 || c3 % (3 * heads) != 0 {
        return Err(Error::shape(op, format!("{c3} channels are not 3·heads·d for heads={heads}")));
    }
    fits_i32(op, &[qkv])?;
    Ok(AttentionGeom { n, heads, d: c3 / (3 * heads), t })
}

pub fn attention_legacy_x_backward(gy: &Shape, qkv: &Shape, heads: usize) -> Result<AttentionGeom> {
    let op = "attention_legacy_x_backward";
    let g = attention_legacy(op, qkv, heads)?;
    if gy.rank() < 2 || gy.ncs() != (g.n, heads * g.d, g.t) {
        return Err(Error::shape(op, format!("gradient {gy} does not match qkv {qkv}")));
    }
    Ok(g)
}
