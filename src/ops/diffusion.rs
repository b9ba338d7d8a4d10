//! The DDPM/DDIM step ops: q_sample, p(x_{t−1}|x_t), the KL in bits, ancestral and DDIM steps.
//! Their per-timestep scalars (`StepCoefs`, `DdimCoefs`) are contract structs made by
//! `diffusion::Diffusion`.

use super::contract::StepCoefs;
use super::{at_least_2d, fits_i32, same_shape};
use crate::tensor::Shape;
use crate::{Error, Result};

/// How p(x_{t−1}|x_t) gets its variance (upstream's ModelVarType).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarType {
    /// Model outputs [ε, v]; log σ² = f·log β + (1−f)·log σ̃²_clipped with f = (v+1)/2.
    LearnedRange,
    /// Model outputs [ε, log σ²].
    Learned,
    /// log σ² = log([σ̃²_1, β_1, β_2, ...])_t.
    FixedLarge,
    /// log σ² = log σ̃²_clipped.
    FixedSmall,
}

impl VarType {
    /// Whether the model's output carries a second block of C channels.
    pub fn learned(self) -> bool {
        matches!(self, VarType::LearnedRange | VarType::Learned)
    }
    /// `StepCoefs::var_type` (kernels/contract.cuh).
    pub fn code(self) -> i32 {
        match self {
            VarType::LearnedRange => 0,
            VarType::Learned => 1,
            VarType::FixedLarge => 2,
            VarType::FixedSmall => 3,
        }
    }
    fn from_code(c: i32) -> Self {
        match c {
            0 => VarType::LearnedRange,
            1 => VarType::Learned,
            2 => VarType::FixedLarge,
            _ => VarType::FixedSmall,
        }
    }
}

impl StepCoefs {
    pub fn var_type(&self) -> VarType {
        VarType::from_code(self.var_type)
    }
    pub fn clip(&self) -> bool {
        self.clip != 0
    }
}

/// (C, S) of x_t [N, C, ...] whose model output must be [N, C or 2C, ...].
pub fn p_mean_variance(xt: &Shape, mo: &Shape, c: &StepCoefs) -> Result<(usize, usize)> {
    let op = "p_mean_variance";
    at_least_2d(op, xt)?;
    let (n, ch, s) = xt.ncs();
    let want = if c.var_type().learned() { 2 * ch } else { ch };
    if mo.rank() < 2 || mo.ncs() != (n, want, s) {
        return Err(Error::shape(op, format!("model output {mo} does not fit x_t {xt} ({want} channels expected for {:?} variance)", c.var_type())));
    }
    fits_i32(op, &[mo])?;
    Ok((ch, s))
}

/// Every tensor of an elementwise step op shaped like the first.
pub fn same_shapes(op: &'static str, first: &Shape, rest: &[&Shape]) -> Result<()> {
    for s in rest {
        same_shape(op, first, s)?;
    }
    fits_i32(op, &[first])
}
