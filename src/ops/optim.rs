//! Optimiser updates: one AdamW step per parameter tensor, and the blend of two tensors (EMA).

use super::contract::AdamwCoefs;
use super::{fits_i32, same_shape};
use crate::tensor::Shape;
use crate::{Error, Result};

/// torch.optim.AdamW's hyper-parameters (amsgrad off).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamwParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamwParams {
    /// torch's defaults except weight decay 0 (the paper's training: lr 1e-4, wd 0).
    fn default() -> Self {
        AdamwParams { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

impl AdamwParams {
    /// The kernel's scalars for step `t` (1-based, as torch counts), bias corrections in f64.
    pub fn at_step(&self, t: u64) -> Result<AdamwCoefs> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if t == 0 || !ok(self.lr) || !ok(self.eps) || !ok(self.weight_decay) || !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(Error::InvalidArgument(format!("AdamW: step {t} (from 1), lr/eps/weight decay finite and ≥ 0, betas in [0, 1): got {self:?}")));
        }
        let t = t as f64;
        let bc1 = 1.0 - self.beta1.powf(t);
        let bc2 = 1.0 - self.beta2.powf(t);
        Ok(AdamwCoefs {
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            eps: self.eps as f32,
            step_size: (self.lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
        })
    }
}

/// param, grad and both moments share one shape.
pub fn adamw_step(param: &Shape, grad: &Shape, m: &Shape, v: &Shape) -> Result<()> {
    for (what, s) in [("gradient", grad), ("first moment", m), ("second moment", v)] {
        if s != param {
            return Err(Error::shape("adamw_step", format!("{what} {s} does not match the parameter {param}")));
        }
    }
    fits_i32("adamw_step", &[param])
}

pub fn axpby(a: &Shape, b: &Shape) -> Result<()> {
    same_shape("axpby", a, b)?;
    fits_i32("axpby", &[a])
}
