//! The CPU's fused convolutions, for EfficientNet's blocks (and any conv + BN + activation):
//! y = act(conv2d(x, w) + bias) (`Backend::conv2d_act`), optionally with each output plane's mean
//! (squeeze-excite's squeeze), and y = res + (conv2d(x, w) + bias) (`Backend::conv2d_add`). The
//! output pass is done once, where the data is hot, instead of a bias pass, an activation op with
//! a fresh output and a global pool (or an add) over the whole tensor each:
//!  - depthwise: inside the row loop (depthwise.rs);
//!  - 1×1 stride 1: the conv's own GEMM (the same call as conv2d.rs, so the same sums), then one
//!    pass per plane adding the bias and applying the activation or the residual;
//!  - otherwise (im2col, Winograd): the conv as it is, bias included, then the activation in place.
//!
//! Every path computes the unfused ops' IEEE operations in their order, so y is bit-identical to
//! conv2d followed by `activation` / `add` (tests/effnet_fused.rs); the means differ from
//! global_avg_pool's sequential f64 sum by f64 roundings only.

use super::activation::{bias_act, bias_res};
use super::buffers::Alloc;
use super::conv_select;
use super::depthwise::{conv2d_depthwise_fused, row_sum_f64};
use super::matmul::{matmul, MatRef};
use super::simd::isa;
use super::winograd_weights::Storage;
use crate::ops::contract::Conv2dGeom;
use crate::ops::Activation;
use crate::Result;
use rayon::prelude::*;

/// (act(conv2d(x, w) + bias), the planes' means when `want_mean`).
pub fn conv2d_act(x: &[f32], w: &Storage, bias: Option<&[f32]>, act: Activation, g: &Conv2dGeom, want_mean: bool) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let plane = g.ho() * g.wo();
    // every element is written: by the depthwise loop, the GEMM or the conv, then the pass below
    let mut means = want_mean.then(|| f32::for_overwrite(g.n() * g.o()));
    if g.depthwise() {
        let mut y = f32::for_overwrite(g.n() * g.o() * plane);
        conv2d_depthwise_fused(x, &w.f32(), bias, Some(act), &mut y, means.as_deref_mut(), g);
        return Ok((y, means));
    }
    // the general conv adds its bias itself; the pointwise GEMM leaves it to the pass below
    let (mut y, bias) = if g.pointwise() { (pointwise(x, &w.f32(), g), bias) } else { (conv_select::conv2d(x, w, bias, g)?, None) };
    let isa = isa();
    let pass = |i: usize, p: &mut [f32]| {
        bias_act(isa, p, bias.map(|b| b[i % g.o()]), Some(act));
        (row_sum_f64(p) / plane as f64) as f32
    };
    match means.as_deref_mut() {
        Some(m) => y.par_chunks_mut(plane).zip(m.par_iter_mut()).enumerate().for_each(|(i, (p, mv))| *mv = pass(i, p)),
        None => y.par_chunks_mut(plane).enumerate().for_each(|(i, p)| bias_act(isa, p, bias.map(|b| b[i % g.o()]), Some(act))),
    }
    Ok((y, means))
}

/// res + (conv2d(x, w) + bias), res shaped like the output.
pub fn conv2d_add(x: &[f32], w: &Storage, bias: Option<&[f32]>, res: &[f32], g: &Conv2dGeom) -> Result<Vec<f32>> {
    let plane = g.ho() * g.wo();
    let (mut y, bias) = if g.pointwise() { (pointwise(x, &w.f32(), g), bias) } else { (conv_select::conv2d(x, w, bias, g)?, None) };
    let isa = isa();
    y.par_chunks_mut(plane).zip(res.par_chunks(plane)).enumerate().for_each(|(i, (p, r))| bias_res(isa, p, bias.map(|b| b[i % g.o()]), r));
    Ok(y)
}

/// A 1×1 stride-1 conv without its bias: conv2d.rs's GEMM per image and group, the same call.
fn pointwise(x: &[f32], w: &[f32], g: &Conv2dGeom) -> Vec<f32> {
    let (cg, og, kk, hw) = (g.cg(), g.og(), g.kk(), g.h() * g.w());
    let mut y = f32::for_overwrite(g.n() * g.o() * hw);
    for ni in 0..g.n() {
        for gi in 0..g.groups() {
            let xg = &x[(ni * g.c() + gi * cg) * hw..][..cg * hw];
            let yg = &mut y[(ni * g.o() + gi * og) * hw..][..og * hw];
            let wg = MatRef::row_major(&w[gi * og * kk..][..og * kk], kk);
            matmul(og, hw, kk, yg, hw, wg, MatRef::row_major(xg, hw), false, true);
        }
    }
    y
}
