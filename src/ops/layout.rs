//! Channel concat, slice and gather (index_select along dim 1).

use super::{at_least_2d, fits_i32, i32_of};
use crate::tensor::Shape;
use crate::{Error, Result};

/// Output dims of a channel concat; every part must match the first outside dim 1.
pub fn concat_channels(parts: &[&Shape]) -> Result<Vec<usize>> {
    let op = "concat_channels";
    let first = parts.first().ok_or_else(|| Error::shape(op, "no tensors"))?;
    at_least_2d(op, first)?;
    let mut dims = first.dims().to_vec();
    dims[1] = 0;
    for s in parts {
        let ok = s.rank() == dims.len() && s.dim(0) == dims[0] && s.dims()[2..] == dims[2..];
        if !ok {
            return Err(Error::shape(op, format!("{first} and {s} differ outside dim 1")));
        }
        dims[1] += s.dim(1);
    }
    i32_of(op, dims.iter().product())?;
    Ok(dims)
}

/// The parts' channel counts must add up to the gradient's.
pub fn concat_channels_x_backward(gy: &Shape, channels: &[usize]) -> Result<()> {
    at_least_2d("concat_channels_x_backward", gy)?;
    let sum: usize = channels.iter().sum();
    if sum != gy.dim(1) {
        return Err(Error::shape("concat_channels_x_backward", format!("parts sum to {sum} channels, gradient has {}", gy.dim(1))));
    }
    Ok(())
}

/// Output dims of x[:, start..end].
pub fn slice_channels(x: &Shape, start: usize, end: usize) -> Result<Vec<usize>> {
    let op = "slice_channels";
    at_least_2d(op, x)?;
    if start > end || end > x.dim(1) {
        return Err(Error::shape(op, format!("range {start}..{end} outside {} channels", x.dim(1))));
    }
    fits_i32(op, &[x])?;
    let mut dims = x.dims().to_vec();
    dims[1] = end - start;
    Ok(dims)
}

/// Distinct channel ids below c.
fn channel_ids(op: &'static str, c: usize, ids: &[usize]) -> Result<()> {
    let mut seen = vec![false; c];
    for &i in ids {
        if i >= c {
            return Err(Error::shape(op, format!("channel {i} out of range for {c} channels")));
        }
        if std::mem::replace(&mut seen[i], true) {
            return Err(Error::shape(op, format!("channel {i} selected twice")));
        }
    }
    Ok(())
}

/// Output dims of x[:, ids].
pub fn gather_channels(x: &Shape, ids: &[usize]) -> Result<Vec<usize>> {
    let op = "gather_channels";
    at_least_2d(op, x)?;
    channel_ids(op, x.dim(1), ids)?;
    fits_i32(op, &[x])?;
    let mut dims = x.dims().to_vec();
    dims[1] = ids.len();
    Ok(dims)
}

/// Dims of the input gradient [N, c, ...] given gy [N, len(ids), ...].
pub fn gather_channels_x_backward(gy: &Shape, ids: &[usize], c: usize) -> Result<Vec<usize>> {
    let op = "gather_channels_x_backward";
    at_least_2d(op, gy)?;
    if gy.dim(1) != ids.len() {
        return Err(Error::shape(op, format!("gradient {gy} for {} ids", ids.len())));
    }
    channel_ids(op, c, ids)?;
    let mut dims = gy.dims().to_vec();
    dims[1] = c;
    i32_of(op, dims.iter().product())?;
    Ok(dims)
}
