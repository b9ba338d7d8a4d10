//! Dynamic loss scaling for `--precision f16` training, as upstream's MixedPrecisionTrainer
//! (guided_diffusion/fp16_util.py) does it. The weights stay f32 (they are the master weights:
//! the kernels round the operands of each convolution and linear to f16 as they read them, and
//! every weight gradient, statistic, AdamW and the EMA stay f32). f16 keeps values up to 65504
//! only and loses those below ~6e-8, so the loss is multiplied by 2^lg before the backward (the
//! gradients flowing through the f16 operands are then large enough not to vanish), and:
//!
//! - a gradient holding a non-finite value (an f16 operand past 65504 rounds to inf, which the
//!   GEMMs turn into inf or NaN) means the scale was too large: lg −= 1, and the step is skipped
//!   — no AdamW update (its step count stays), no EMA update (fp16_util.py:193-197,
//!   train_util.py:174-177); the iteration counts all the same, so the learning-rate anneal and
//!   `--steps` go on (train_util.py:167, 177);
//! - otherwise the gradients are divided by the scale (multiplied by the f32 of 1/2^lg), AdamW
//!   steps, and lg += the growth (fp16_util.py:202-207).
//!
//! Constants: lg starts at 20.0 (fp16_util.py:12 INITIAL_LOG_LOSS_SCALE), the growth is 1e-3
//! (train_util.py:37 fp16_scale_growth). lg is an f64 (a Python float upstream), so a run's
//! sequence of scales is upstream's to the bit (tools/reference/make_loss_scale_fixtures.py).
//! Upstream tests the gradients' norm (the f32 norm of each tensor, summed in f64) for inf/NaN;
//! this tests each gradient tensor's f64 mean — non-finite exactly when an element is (f64 sums
//! of f32 values cannot overflow). bf16 has f32's range and needs no scaling.

use super::step::{apply_gradients_to, ParamSet, TrainState};
use crate::backend::{AdamwParams, Backend};
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::BTreeMap;

/// fp16_util.py:12.
pub const INITIAL_LG_LOSS_SCALE: f64 = 20.0;
/// train_util.py:37 (and fp16_util.py:154).
pub const SCALE_GROWTH: f64 = 1e-3;

/// The loss scale 2^lg and its growth per good step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScale {
    pub lg: f64,
    pub growth: f64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale { lg: INITIAL_LG_LOSS_SCALE, growth: SCALE_GROWTH }
    }
}

impl LossScale {
    /// A scale from the command line's values, refused unless its factor and its inverse are
    /// finite, non-zero f32 values.
    pub fn new(lg: f64, growth: f64) -> Result<Self> {
        let s = LossScale { lg, growth };
        if !(lg.is_finite() && growth.is_finite() && growth >= 0.0 && s.factor().is_normal() && s.inverse().is_normal()) {
            return Err(Error::InvalidArgument(format!("loss scale: log2 {lg} with growth {growth}: the scale 2^lg must be a normal f32 (lg in [-126, 126]) and the growth finite and ≥ 0")));
        }
        Ok(s)
    }

    /// What the loss (its gradient) is multiplied by: 2^lg as an f32 (upstream: an f32 loss
    /// times the Python float `2 ** lg_loss_scale`, fp16_util.py:178-179).
    pub fn factor(&self) -> f32 {
        2f64.powf(self.lg) as f32
    }

    /// What the gradients are multiplied by to undo it: the f32 of 1/2^lg (fp16_util.py:203).
    pub fn inverse(&self) -> f32 {
        (1.0 / 2f64.powf(self.lg)) as f32
    }

    /// The scale after a step whose gradients were finite (`true`) or not: lg + growth, or lg − 1.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.lg += self.growth;
        } else {
            self.lg -= 1.0;
        }
    }
}

/// Whether every gradient is finite (one f64 mean per tensor).
pub fn all_finite<B: Backend>(b: &B, grads: &BTreeMap<String, Tensor<B>>) -> Result<bool> {
    for g in grads.values() {
        if g.numel() > 0 && !b.mean_std(g)?.0.is_finite() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One optimiser step from the gradients of the step's loss, multiplied by
/// `state.loss_scale`'s factor when it has one (`loss_and_gradients_scaled`). Without a scale,
/// `apply_gradients_to`. With one: skipped (only `state.step` advances) when a gradient is not
/// finite, else the gradients unscaled, AdamW and the EMA; then the scale updated. Returns
/// whether the step was taken.
pub fn apply_gradients_scaled<B: Backend>(b: &B, params: &mut dyn ParamSet<B>, state: &mut TrainState<B>, grads: &BTreeMap<String, Tensor<B>>, hp: &AdamwParams, ema_rate: f32) -> Result<bool> {
    let Some(scale) = state.loss_scale else {
        apply_gradients_to(b, params, state, grads, hp, ema_rate)?;
        return Ok(true);
    };
    let finite = all_finite(b, grads)?;
    if finite {
        let inv = scale.inverse();
        let mut unscaled = BTreeMap::new();
        for (name, g) in grads {
            unscaled.insert(name.clone(), b.scale_add_scalar(g, inv, 0.0)?);
        }
        apply_gradients_to(b, params, state, &unscaled, hp, ema_rate)?;
    } else {
        state.step += 1;
    }
    if let Some(s) = &mut state.loss_scale {
        s.update(finite);
    }
    Ok(finite)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: the factor or its inverse computed at another lg (or as lg itself), the growth
    // or the drop applied with the wrong sign or size. Exact: 2^20 and 2^-20 are f32 values.
    #[test]
    fn the_scale_is_two_to_the_lg_and_moves_by_upstreams_rule() {
        let mut s = LossScale::default();
        assert_eq!((s.lg, s.growth), (20.0, 1e-3));
        assert_eq!(s.factor(), 1048576.0);
        assert_eq!(s.inverse(), 1.0 / 1048576.0);
        s.update(false);
        assert_eq!(s.lg, 19.0);
        s.update(true);
        assert_eq!(s.lg, 19.0 + 1e-3);
        // 2^19.001 = 524651.5…: the f32 nearest it, not 2^19
        assert!((s.factor() as f64 - 524651.5).abs() < 1.0, "{}", s.factor());
    }

    #[test]
    fn a_scale_outside_f32_is_refused() {
        for (lg, g) in [(200.0, 1e-3), (-200.0, 1e-3), (f64::NAN, 1e-3), (20.0, -1.0), (20.0, f64::INFINITY)] {
            let e = LossScale::new(lg, g).unwrap_err().to_string();
            assert!(e.contains("loss scale"), "{e}");
        }
        assert!(LossScale::new(60.0, 0.0).is_ok());
    }
}
