//! Which algorithm a CPU conv2d and its input gradient run: the direct conv (conv2d.rs: im2col +
//! GEMM, the reference) or Winograd F(4×4, 3×3) (winograd.rs) for 3×3 stride-1 one-group convs.
//!
//! `RAN_CONV` (read once): `direct` = always direct; `winograd` = Winograd for every conv it can
//! compute (the tests use it to run the fixtures through Winograd); unset or `auto` = Winograd
//! where it wins by measurement (`worth_it` for the forward, `worth_it_x_backward` for ∂x),
//! direct elsewhere.

use super::activation::bias_act;
use super::conv2d;
use super::pointwise;
use super::winograd::{self, Orient, Plan};
use super::winograd_weights::{transformed, Storage};
use crate::ops::contract::Conv2dGeom;
use crate::{Error, Result};
use rayon::prelude::*;
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    Auto,
    Direct,
    Winograd,
}

/// `RAN_CONV`, parsed on first use; a value other than direct / winograd / auto is an error.
pub fn algo() -> Result<ConvAlgo> {
    static ALGO: OnceLock<std::result::Result<ConvAlgo, String>> = OnceLock::new();
    ALGO.get_or_init(|| match std::env::var("RAN_CONV") {
        Err(_) => Ok(ConvAlgo::Auto),
        Ok(v) => match v.trim() {
            "" | "auto" => Ok(ConvAlgo::Auto),
            "direct" => Ok(ConvAlgo::Direct),
            "winograd" => Ok(ConvAlgo::Winograd),
            other => Err(format!("RAN_CONV={other:?}: want direct, winograd or auto")),
        },
    })
    .clone()
    .map_err(Error::InvalidArgument)
}

/// Winograd where both sides have at least 128 channels and there are at least 64 output tiles
/// (a 32² plane). It is faster already from 32 channels (benches/RESULTS.md, "CPU Winograd F(4,3)":
/// 0.54–0.78 of the direct conv's time on the demo UNet's 32- and 64-channel convs), but its
/// rounding differs from the direct conv's, and the shipped demo (32–64 channels) keeps its
/// recorded numbers bit-identical by staying direct. Below 64 tiles the 36 GEMMs are too narrow:
/// the gemm crate repacks U[ξ] for each of them, and 256 → 256 at 16² (16 tiles) took 5–10× the
/// direct conv's time.
pub fn worth_it(p: &Plan) -> bool {
    p.cin >= 128 && p.cout >= 128 && p.tiles() >= 64
}

/// The input gradient's rule: Winograd from 32 channels on either side at ≥ 64 output tiles. No
/// recorded inference number goes through ∂x (it serves training and PaDiM's gradient, both
/// checked against float64 at tolerances that the Winograd error, ~2× the direct conv's, fits), so
/// the forward's 128-channel floor for the demo's bits does not apply; below 32 channels (the
/// UNet's output conv to 6 channels) the 36 GEMMs are too thin to win.
pub fn worth_it_x_backward(p: &Plan) -> bool {
    p.cin >= 32 && p.cout >= 32 && p.tiles() >= 64
}

fn use_winograd(g: &Conv2dGeom, orient: Orient) -> Result<bool> {
    Ok(winograd::eligible(g)
        && match algo()? {
            ConvAlgo::Direct => false,
            ConvAlgo::Winograd => true,
            ConvAlgo::Auto => match orient {
                Orient::Forward => worth_it(&Plan::new(g, orient)),
                Orient::XBackward => worth_it_x_backward(&Plan::new(g, orient)),
            },
        })
}

/// y = conv2d(x, w) + bias by the algorithm chosen above.
pub fn conv2d(x: &[f32], w: &Storage, bias: Option<&[f32]>, g: &Conv2dGeom) -> Result<Vec<f32>> {
    if g.pointwise() {
        // GEMMs over bands of pixels with the bias added to each band right after it (pointwise.rs;
        // the same operations as conv2d.rs's whole GEMM and bias pass)
        let isa = super::simd::isa();
        let pass = |i: usize, _: usize, p: &mut [f32]| bias_act(isa, p, bias.map(|b| b[i % g.o()]), None);
        return Ok(pointwise::pointwise(pointwise::mode(), x, &w.f32(), g, &pass));
    }
    Ok(if use_winograd(g, Orient::Forward)? { winograd::run(x, &transformed(w, g, Orient::Forward), bias, &Plan::new(g, Orient::Forward)) } else { conv2d::conv2d(x, &w.f32(), bias, g) })
}

/// `conv2d`, then `epi` over every output after its bias: the direct conv applies it to each
/// im2col band while the band is in cache where it runs its bands in parallel (conv2d.rs
/// `conv2d_with`); Winograd, and every conv under `RAN_CPU_BANDS=0`, in a pass over the planes.
pub fn conv2d_then(x: &[f32], w: &Storage, bias: Option<&[f32]>, g: &Conv2dGeom, epi: conv2d::Epilogue<f32>) -> Result<Vec<f32>> {
    if !use_winograd(g, Orient::Forward)? && pointwise::mode() == pointwise::Mode::Bands {
        return Ok(conv2d::conv2d_with(x, &w.f32(), bias, g, Some(epi)));
    }
    let mut y = conv2d(x, w, bias, g)?;
    y.par_chunks_mut(g.ho() * g.wo()).enumerate().for_each(|(i, p)| epi(i, 0, p));
    Ok(y)
}

/// ∂L/∂x of conv2d by the algorithm chosen above.
pub fn conv2d_x_backward(gy: &[f32], w: &Storage, g: &Conv2dGeom) -> Result<Vec<f32>> {
    Ok(if use_winograd(g, Orient::XBackward)? { winograd::run(gy, &transformed(w, g, Orient::XBackward), None, &Plan::new(g, Orient::XBackward)) } else { conv2d::conv2d_x_backward(gy, &w.f32(), g) })
}
