//! The op layer: every op's shape rules, checked once, in front of every backend. Each function
//! here takes the shapes (and parameters) of one op, refuses what the op cannot take with an error
//! naming it, and returns the geometry the backends compute with — for kernels that take a struct,
//! the very `#[repr(C)]` struct of kernels/contract.cuh (`contract`), so the CPU backend, the CUDA
//! launch and the kernel read one definition. `backend::Backend` calls these before handing the
//! tensors to a backend's `backend::Compute`; no backend checks a shape itself.
//!
//! Sizes are limited to 2³¹−1 elements per tensor on every backend (the kernels' 32-bit indexing),
//! so a job that runs on the CPU also runs on the GPU.

pub mod attention;
pub mod contract;
pub mod conv;
pub mod diffusion;
pub mod elementwise;
pub mod embedding;
pub mod flops;
pub mod layout;
pub mod norm;
pub mod optim;
pub mod padim;
pub mod pool;
pub mod precision;
pub mod reduce;

pub use conv::{Conv2dParams, Padding2d};
pub use diffusion::VarType;
pub use elementwise::Activation;
pub use norm::GroupNormParams;
pub use pool::Pool2dParams;
pub use precision::Precision;

use crate::tensor::Shape;
use crate::{Error, Result};

/// `v` as the kernels' `int`.
pub fn i32_of(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::shape(op, format!("size {v} exceeds the kernels' 32-bit indexing")))
}

/// Every tensor of an op within the 32-bit indexing limit.
pub fn fits_i32(op: &'static str, shapes: &[&Shape]) -> Result<()> {
    for s in shapes {
        i32_of(op, s.numel())?;
    }
    Ok(())
}

pub fn same_shape(op: &'static str, a: &Shape, b: &Shape) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("shapes differ: {a} vs {b}")));
    }
    Ok(())
}

/// Per-channel vector: `v` must hold exactly `c` values (any shape, e.g. [C] or [1,C,1,1]).
pub fn channel_vector(op: &'static str, what: &str, v: &Shape, c: usize) -> Result<()> {
    if v.numel() != c {
        return Err(Error::shape(op, format!("{what} has shape {v}, want {c} values (one per channel)")));
    }
    Ok(())
}

pub fn dims4(op: &'static str, s: &Shape) -> Result<[usize; 4]> {
    match s.dims() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Error::shape(op, format!("want a 4-d [N,C,H,W] tensor, got {s}"))),
    }
}

pub fn at_least_2d(op: &'static str, s: &Shape) -> Result<()> {
    if s.rank() < 2 {
        return Err(Error::shape(op, format!("want [N, C, ...], got {s}")));
    }
    Ok(())
}

/// Element count of `dims` matches `len` (host uploads).
pub fn host_len(dims: &[usize], len: usize) -> Result<()> {
    let n: usize = dims.iter().product();
    if n != len {
        return Err(Error::shape("from_host", format!("shape {dims:?} needs {n} values, got {len}")));
    }
    fits_i32("from_host", &[&Shape::new(dims)])
}

/// x viewed as `dims` (same element count).
pub fn reshape(x: &Shape, dims: &[usize]) -> Result<Shape> {
    let s = Shape::new(dims);
    if s.numel() != x.numel() {
        return Err(Error::shape("reshape", format!("cannot view {x} as {s}")));
    }
    Ok(s)
}
