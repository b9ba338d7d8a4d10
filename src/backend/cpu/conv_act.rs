//! The CPU's fused convolutions, for EfficientNet's blocks (and any conv + BN + activation):
//! y = act(conv2d(x, w) + bias) (`Backend::conv2d_act`), optionally with each output plane's mean
//! (squeeze-excite's squeeze), and y = res + (conv2d(x, w) + bias) (`Backend::conv2d_add`). The
//! output pass is done once, where the data is hot, instead of a bias pass, an activation op with
//! a fresh output and a global pool (or an add) over the whole tensor each:
//!  - depthwise: inside the row loop (depthwise.rs);
//!  - 1×1 stride 1: GEMMs over bands of pixels, each band's rows passed (bias + activation or
//!    residual) right after its GEMM (pointwise.rs: the same sums as conv2d.rs's whole GEMM);
//!  - otherwise (im2col, Winograd): the conv with the bias and activation applied to each im2col
//!    band right after its GEMM where the direct conv runs its bands in parallel (conv2d.rs),
//!    else the conv as it is, bias included, then the activation in place.
//!
//! Every path computes the unfused ops' IEEE operations in their order, so y is bit-identical to
//! conv2d followed by `activation` / `add` (tests/effnet_fused.rs); the means differ from
//! global_avg_pool's sequential f64 sum by f64 roundings only.

use super::activation::{bias_act, bias_res};
use super::buffers::Alloc;
use super::conv_select;
use super::depthwise::{conv2d_depthwise_fused, row_sum_f64};
use super::pointwise::{self, pointwise};
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
    let isa = isa();
    // the pointwise GEMM leaves the bias to its pass; the general conv adds it before its epilogue
    let y = if g.pointwise() {
        pointwise(pointwise::mode(), x, &w.f32(), g, &|i, _, p| bias_act(isa, p, bias.map(|b| b[i % g.o()]), Some(act)))
    } else {
        conv_select::conv2d_then(x, w, bias, g, &|_, _, p| bias_act(isa, p, None, Some(act)))?
    };
    if let Some(m) = means.as_deref_mut() {
        // (after the activation, over each whole plane: the same sums whichever way y was made)
        let mean = |p: &[f32]| (row_sum_f64(p) / plane as f64) as f32;
        if y.len() < 1 << 15 {
            y.chunks(plane).zip(m.iter_mut()).for_each(|(p, mv)| *mv = mean(p));
        } else {
            y.par_chunks(plane).zip(m.par_iter_mut()).for_each(|(p, mv)| *mv = mean(p));
        }
    }
    Ok((y, means))
}

/// res + (conv2d(x, w) + bias), res shaped like the output.
pub fn conv2d_add(x: &[f32], w: &Storage, bias: Option<&[f32]>, res: &[f32], g: &Conv2dGeom) -> Result<Vec<f32>> {
    let plane = g.ho() * g.wo();
    let isa = isa();
    let pass = |i: usize, p0: usize, p: &mut [f32]| bias_res(isa, p, bias.map(|b| b[i % g.o()]), &res[i * plane + p0..][..p.len()]);
    if g.pointwise() {
        return Ok(pointwise(pointwise::mode(), x, &w.f32(), g, &pass));
    }
    // the general conv adds its bias itself
    let mut y = conv_select::conv2d(x, w, bias, g)?;
    y.par_chunks_mut(plane).zip(res.par_chunks(plane)).for_each(|(p, r)| bias_res(isa, p, None, r));
    Ok(y)
}
