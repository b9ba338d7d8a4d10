//! Group norm (+ fused scale-shift and SiLU), the channel affine of folded batch norm.

use super::contract::GroupNormGeom;
use super::{at_least_2d, channel_vector, fits_i32, i32_of, same_shape};
use crate::tensor::Shape;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormParams {
    pub groups: usize,
    pub eps: f32,
    /// Apply SiLU after the (scale-shifted) normalisation, as `normalization(ch) → SiLU` in the UNet.
    pub silu: bool,
}

impl GroupNormParams {
    /// guided-diffusion's GroupNorm32: 32 groups, eps 1e-5.
    pub fn gn32(silu: bool) -> Self {
        GroupNormParams { groups: 32, eps: 1e-5, silu }
    }
}

impl GroupNormGeom {
    /// Channels per group.
    pub fn cpg(&self) -> usize {
        self.c() / self.groups()
    }
}

/// x [N, C, *], γ and β [C], optional scale and shift [N, C] (or [N, C, 1, 1]).
pub fn group_norm(x: &Shape, gamma: &Shape, beta: &Shape, p: &GroupNormParams, ss: Option<(&Shape, &Shape)>) -> Result<GroupNormGeom> {
    group_norm_checked("group_norm", x, gamma, beta, p, ss)
}

pub fn group_norm_x_backward(gy: &Shape, x: &Shape, gamma: &Shape, beta: &Shape, p: &GroupNormParams, ss: Option<(&Shape, &Shape)>) -> Result<GroupNormGeom> {
    same_shape("group_norm_x_backward", x, gy)?;
    group_norm_checked("group_norm_x_backward", x, gamma, beta, p, ss)
}

pub fn group_norm_w_backward(gy: &Shape, x: &Shape, gamma: &Shape, beta: &Shape, p: &GroupNormParams, ss: Option<(&Shape, &Shape)>) -> Result<GroupNormGeom> {
    same_shape("group_norm_w_backward", x, gy)?;
    group_norm_checked("group_norm_w_backward", x, gamma, beta, p, ss)
}

fn group_norm_checked(op: &'static str, x: &Shape, gamma: &Shape, beta: &Shape, p: &GroupNormParams, ss: Option<(&Shape, &Shape)>) -> Result<GroupNormGeom> {
    at_least_2d(op, x)?;
    let (n, c, s) = x.ncs();
    if p.groups == 0 || c % p.groups != 0 {
        return Err(Error::shape(op, format!("{c} channels do not split into {} groups", p.groups)));
    }
    if !p.eps.is_finite() || p.eps < 0.0 {
        return Err(Error::shape(op, format!("eps {} must be finite and non-negative", p.eps)));
    }
    channel_vector(op, "gamma", gamma, c)?;
    channel_vector(op, "beta", beta, c)?;
    if let Some((scale, shift)) = ss {
        for (what, t) in [("scale", scale), ("shift", shift)] {
            if t.numel() != n * c || t.dims().first() != Some(&n) {
                return Err(Error::shape(op, format!("{what} has shape {t}, want [{n}, {c}] (or [{n}, {c}, 1, 1])")));
            }
        }
    }
    fits_i32(op, &[x])?;
    let v = |u: usize| i32_of(op, u);
    Ok(GroupNormGeom { n: v(n)?, c: v(c)?, s: v(s)?, groups: v(p.groups)?, eps: p.eps, silu: p.silu as i32, has_ss: ss.is_some() as i32, ss_stride: v(c)?, scale_off: 0, shift_off: 0 })
}

/// `group_norm` with scale-shift read from a packed projection `emb` [N, E] (or [N, E, 1, …]):
/// scale = emb[:, offset .. offset + C], shift = emb[:, offset + C .. offset + 2C], upstream's
/// `scale, shift = th.chunk(emb_out, 2, dim=1)` of one ResBlock's columns.
pub fn group_norm_emb(x: &Shape, gamma: &Shape, beta: &Shape, p: &GroupNormParams, emb: &Shape, offset: usize) -> Result<GroupNormGeom> {
    const OP: &str = "group_norm_emb";
    let g = group_norm_checked(OP, x, gamma, beta, p, None)?;
    at_least_2d(OP, emb)?;
    let (n, c) = (g.n(), g.c());
    let (en, e, es) = emb.ncs();
    if en != n || es != 1 {
        return Err(Error::shape(OP, format!("emb has shape {emb}, want [{n}, E] for x {x}")));
    }
    if offset + 2 * c > e {
        return Err(Error::shape(OP, format!("scale and shift at columns {offset}..{} of {c} channels each run past emb's {e} columns", offset + 2 * c)));
    }
    fits_i32(OP, &[emb])?;
    let v = |u: usize| i32_of(OP, u);
    Ok(GroupNormGeom { has_ss: 1, ss_stride: v(e)?, scale_off: v(offset)?, shift_off: v(offset + c)?, ..g })
}

/// (C, S) of a channel affine over x [N, C, *] with scale (and shift) of C values.
pub fn channel_affine(op: &'static str, x: &Shape, scale: &Shape, shift: Option<&Shape>) -> Result<(usize, usize)> {
    at_least_2d(op, x)?;
    let (_, c, s) = x.ncs();
    channel_vector(op, "scale", scale, c)?;
    if let Some(sh) = shift {
        channel_vector(op, "shift", sh, c)?;
    }
    fits_i32(op, &[x])?;
    Ok((c, s))
}

/// Folds inference batch norm into the per-channel affine that `channel_affine` applies:
/// scale = γ/√(var+eps), shift = β − mean·scale.
pub fn fold_batch_norm(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f32) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = gamma.len();
    if beta.len() != c || mean.len() != c || var.len() != c {
        return Err(Error::shape("fold_batch_norm", format!("γ {c}, β {}, mean {}, var {} values", beta.len(), mean.len(), var.len())));
    }
    let mut scale = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for i in 0..c {
        let s = (gamma[i] as f64 / (var[i] as f64 + eps as f64).sqrt()) as f32;
        scale.push(s);
        shift.push((beta[i] as f64 - mean[i] as f64 * s as f64) as f32);
    }
    Ok((scale, shift))
}
