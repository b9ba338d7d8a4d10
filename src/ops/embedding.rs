//! The sinusoidal timestep embedding and embedding lookup.

use super::{fits_i32, i32_of};
use crate::tensor::Shape;
use crate::{Error, Result};

/// (N, dim) of the embedding of t [N].
pub fn timestep_embedding(t: &Shape, dim: usize) -> Result<(usize, usize)> {
    if t.rank() != 1 || dim == 0 {
        return Err(Error::shape("timestep_embedding", format!("want t [N] and dim > 0, got {t} and {dim}")));
    }
    i32_of("timestep_embedding", t.numel() * dim)?;
    Ok((t.numel(), dim))
}

/// (rows, dim) of table [rows, dim]; every id below rows.
pub fn embedding(table: &Shape, ids: &[usize]) -> Result<(usize, usize)> {
    if table.rank() != 2 {
        return Err(Error::shape("embedding", format!("table must be [rows, dim], got {table}")));
    }
    let (rows, dim) = (table.dim(0), table.dim(1));
    if let Some(&bad) = ids.iter().find(|&&i| i >= rows) {
        return Err(Error::InvalidArgument(format!("embedding index {bad} out of range for a table of {rows} rows")));
    }
    fits_i32("embedding", &[table])?;
    i32_of("embedding", ids.len() * dim)?;
    Ok((rows, dim))
}

/// dim of gy [len(ids), dim], the gradient of rows `ids` of a table of `rows` rows.
pub fn embedding_w_backward(gy: &Shape, ids: &[usize], rows: usize) -> Result<usize> {
    let op = "embedding_w_backward";
    if gy.rank() != 2 || gy.dim(0) != ids.len() {
        return Err(Error::shape(op, format!("gradient {gy} for {} ids (want [ids, dim])", ids.len())));
    }
    if let Some(&bad) = ids.iter().find(|&&i| i >= rows) {
        return Err(Error::InvalidArgument(format!("embedding index {bad} out of range for a table of {rows} rows")));
    }
    fits_i32(op, &[gy])?;
    i32_of(op, rows * gy.dim(1))?;
    Ok(gy.dim(1))
}
