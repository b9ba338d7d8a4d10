//! Reductions to host scalars.

use crate::tensor::Shape;
use crate::{Error, Result};

/// Mean and unbiased std need at least two values.
pub fn mean_std(x: &Shape) -> Result<()> {
    if x.numel() < 2 {
        return Err(Error::shape("mean_std", format!("std needs at least 2 values, tensor {x} has {}", x.numel())));
    }
    Ok(())
}
