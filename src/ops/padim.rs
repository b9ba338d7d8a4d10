//! PaDiM's Mahalanobis distance with packed inverse Cholesky factors.

use super::contract::SMEM_DEFAULT_LIMIT;
use super::fits_i32;
use crate::tensor::Shape;
use crate::{Error, Result};

/// Features f [N, D, H, W] against mean [H·W, D] and linv [H·W, D(D+1)/2].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MahalanobisGeom {
    pub n: usize,
    pub d: usize,
    /// positions H·W
    pub p: usize,
    pub h: usize,
    pub w: usize,
}

impl MahalanobisGeom {
    pub fn dist_dims(&self) -> [usize; 4] {
        [self.n, 1, self.h, self.w]
    }
    /// Shared memory of the CUDA kernels: `vectors` vectors of D floats plus a 32-float scratch.
    pub fn smem_bytes(&self, vectors: usize) -> usize {
        (vectors * self.d + 32) * 4
    }
}

pub fn mahalanobis(op: &'static str, f: &Shape, mean: &Shape, linv: &Shape) -> Result<MahalanobisGeom> {
    if f.rank() != 4 {
        return Err(Error::shape(op, format!("want features [N,D,H,W], got {f}")));
    }
    let (n, d, p) = f.ncs();
    if mean.dims() != [p, d] || linv.dims() != [p, d * (d + 1) / 2] {
        return Err(Error::shape(op, format!("features {f} need mean [{p}, {d}] and packed inverse factors [{p}, {}], got {mean} and {linv}", d * (d + 1) / 2)));
    }
    let g = MahalanobisGeom { n, d, p, h: f.dim(2), w: f.dim(3) };
    // the same limit on every backend: the kernels keep 3 vectors of D floats in shared memory
    if g.smem_bytes(3) > SMEM_DEFAULT_LIMIT as usize {
        return Err(Error::shape(op, format!("{d} dims exceed the CUDA kernel's shared memory (at most 4085; PaDiM uses 100–550)")));
    }
    fits_i32(op, &[f, mean, linv])?;
    Ok(g)
}

pub fn mahalanobis_x_backward(gd: &Shape, f: &Shape, mean: &Shape, linv: &Shape) -> Result<MahalanobisGeom> {
    let op = "mahalanobis_x_backward";
    let g = mahalanobis(op, f, mean, linv)?;
    if gd.dims() != g.dist_dims() {
        return Err(Error::shape(op, format!("gradient {gd} does not fit features {f}")));
    }
    Ok(g)
}
