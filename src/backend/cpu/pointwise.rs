//! The CPU's 1×1 stride-1 convolution (EfficientNet's expand and project convs, the UNet's skip
//! convs) as GEMMs over bands of pixels, each band's output pass (bias, activation, residual)
//! applied to its rows while they are still in cache, instead of one GEMM over the whole plane
//! followed by a pass that reads the whole output again from memory. The bands — cut further
//! by output channels where they are fewer than four per thread (16² planes) — are the parallel
//! tasks, one single-threaded GEMM each, so a conv has one parallel loop instead of the GEMM's
//! own and the pass's.
//!
//! The same sums as the whole GEMM: the gemm crate sums each output over k in depth blocks whose
//! size depends on k alone (gemm-common `kernel_params`), except on its path for products of at
//! most 64 × 64 (blocks of 512), which no task takes (every band has more than 64 pixels), and
//! on its matrix-vector paths (one output; no chunk has fewer than 8);
//! the pass is the same IEEE operations on the same values (tests/effnet_fused.rs checks the bits
//! against the whole GEMM on B4's sizes at 256² and 380², odd planes and a merged tail band).
//!
//! `RAN_CPU_BANDS=0` (read once) keeps the whole-plane GEMM and pass, for comparisons (and the
//! im2col convs' pass over the planes after the conv: conv_select.rs `conv2d_then`).

use super::buffers::Alloc;
use super::matmul::{matmul, matmul_raw, MatRef, SendPtr};
use crate::ops::contract::Conv2dGeom;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Bytes of a band's operands (its columns of x and of y) that a band aims at: well inside a
/// core's L2 (2 MiB here), so the pass reads what the GEMM has just written.
const BAND_BYTES: usize = 256 << 10;
/// Fewest pixels in a band: two of the AVX-512 micro-kernel's 64-row tiles, and above the 64 of
/// the gemm crate's small-product path (whose depth blocks differ).
const MIN_BAND: usize = 128;
/// Below this many outputs the pass over the planes runs on the calling thread.
const SEQ_PASS: usize = 1 << 15;
/// Tasks per thread a product is cut into at least (by output channels where the pixel bands are
/// too few: B4's 16² planes have two), so that a thread that joins late, woken from sleep, still
/// finds work instead of the other doing its half after its own.
const TASKS_PER_THREAD: usize = 4;

/// How a pointwise conv is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// one GEMM per image and group over the whole plane, then the pass over every plane
    Whole,
    /// GEMMs over bands of pixels, each followed by its pass (where banding can pay)
    Bands,
}

/// `RAN_CPU_BANDS`: `0` = whole planes, otherwise (default) bands.
pub fn mode() -> Mode {
    static M: OnceLock<Mode> = OnceLock::new();
    *M.get_or_init(|| if std::env::var("RAN_CPU_BANDS").as_deref().map(str::trim) == Ok("0") { Mode::Whole } else { Mode::Bands })
}

/// The bands (first pixel, pixels) of a plane of `hw` pixels for a product with `cg` inputs and
/// `og` outputs per group: about `BAND_BYTES` of operands each, at least one per thread where each
/// keeps `MIN_BAND` pixels, every band longer than 64 pixels. One band is the whole plane.
pub fn bands(hw: usize, cg: usize, og: usize, threads: usize) -> Vec<(usize, usize)> {
    let target = (BAND_BYTES / (4 * (cg + og)).max(1)).max(MIN_BAND);
    let nb = hw.div_ceil(target).max(threads.min(hw / MIN_BAND)).max(1);
    if nb == 1 {
        return vec![(0, hw)];
    }
    // every band but the last has more than hw / nb ≥ 64 pixels (nb ≤ ⌈hw / target⌉ or ≤ hw / 128)
    let len = hw.div_ceil(nb).next_multiple_of(16);
    let mut v: Vec<(usize, usize)> = (0..hw).step_by(len).map(|p0| (p0, len.min(hw - p0))).collect();
    if v.len() > 1 && v[v.len() - 1].1 <= 64 {
        let (_, last) = v.pop().unwrap_or_default();
        if let Some(b) = v.last_mut() {
            b.1 += last;
        }
    }
    v
}

/// The output-channel chunks (first, count) of a product of `og` outputs cut into `tasks` pixel
/// tasks whose shortest band has `min_band` pixels: about `TASKS_PER_THREAD` tasks per thread,
/// chunks of 16 outputs or more (a last one of fewer than 8 joins the one before), and only
/// where every band has more than 64 pixels, so no product falls on the gemm crate's
/// small-product path (nor, with ≥ 8 outputs, on its matrix-vector one). One chunk: all outputs.
pub fn out_chunks(og: usize, tasks: usize, min_band: usize, threads: usize) -> Vec<(usize, usize)> {
    let want = TASKS_PER_THREAD * threads;
    if threads < 2 || tasks == 0 || tasks >= want || min_band <= 64 || og < 32 {
        return vec![(0, og)];
    }
    let nc = want.div_ceil(tasks).min(og / 16).max(1);
    let len = og.div_ceil(nc).next_multiple_of(8);
    let mut v: Vec<(usize, usize)> = (0..og).step_by(len).map(|o0| (o0, len.min(og - o0))).collect();
    if v.len() > 1 && v[v.len() - 1].1 < 8 {
        let (_, last) = v.pop().unwrap_or_default();
        if let Some(c) = v.last_mut() {
            c.1 += last;
        }
    }
    v
}

/// A pass over output rows: `pass(plane, p0, seg)` where `seg` is y[plane][p0 .. p0 + seg.len()]
/// (plane = n·O + o), called once for every pixel of every plane.
pub type Pass<'a> = super::conv2d::Epilogue<'a, f32>;

/// y = conv1x1(x, w) without bias, then `pass` over every output, by `mode`.
pub fn pointwise(mode: Mode, x: &[f32], w: &[f32], g: &Conv2dGeom, pass: Pass) -> Vec<f32> {
    debug_assert!(g.pointwise());
    let (cg, og, kk, hw) = (g.cg(), g.og(), g.kk(), g.h() * g.w());
    let mut y = f32::for_overwrite(g.n() * g.o() * hw);
    // banding needs the crate's general path in both forms: k ≥ 3 (its k ≤ 2 path), ≥ 2 outputs
    // (its matrix-vector path)
    let threads = rayon::current_num_threads();
    let (split, chunks) = if mode == Mode::Bands && kk > 2 && og > 1 {
        let split = bands(hw, cg, og, threads);
        let shortest = split.iter().map(|b| b.1).min().unwrap_or(0);
        let chunks = out_chunks(og, g.n() * g.groups() * split.len(), shortest, threads);
        (split, chunks)
    } else {
        (vec![(0, hw)], vec![(0, og)])
    };
    if split.len() * chunks.len() == 1 {
        for ni in 0..g.n() {
            for gi in 0..g.groups() {
                let xg = &x[(ni * g.c() + gi * cg) * hw..][..cg * hw];
                let yg = &mut y[(ni * g.o() + gi * og) * hw..][..og * hw];
                let wg = MatRef::row_major(&w[gi * og * kk..][..og * kk], kk);
                matmul(og, hw, kk, yg, hw, wg, MatRef::row_major(xg, hw), false, true);
            }
        }
        if y.len() < SEQ_PASS {
            y.chunks_mut(hw).enumerate().for_each(|(i, p)| pass(i, 0, p));
        } else {
            y.par_chunks_mut(hw).enumerate().for_each(|(i, p)| pass(i, 0, p));
        }
        return y;
    }
    // (image, group, band, output chunk)
    let mut tasks = Vec::with_capacity(g.n() * g.groups() * split.len() * chunks.len());
    for ni in 0..g.n() {
        for gi in 0..g.groups() {
            for &band in &split {
                tasks.extend(chunks.iter().map(|&chunk| (ni, gi, band, chunk)));
            }
        }
    }
    let dst = SendPtr(y.as_mut_ptr());
    tasks.par_iter().for_each(|&(ni, gi, (p0, len), (o0, olen))| {
        let xg = &x[(ni * g.c() + gi * cg) * hw..][..cg * hw];
        let wg = MatRef::row_major(&w[(gi * og + o0) * kk..][..olen * kk], kk);
        let plane0 = ni * g.o() + gi * og + o0;
        // x's columns p0 .. p0 + len of its cg rows (the last row ends inside xg: p0 + len ≤ hw)
        let xb = MatRef { data: &xg[p0..], rs: hw, cs: 1 };
        // SAFETY: the tasks' (image, group, band, chunk) blocks of y are disjoint and inside y:
        // rows plane0 .. plane0 + olen of hw values, columns p0 .. p0 + len.
        unsafe { matmul_raw(olen, len, kk, dst.at(plane0 * hw + p0), (hw, 1), wg, xb, false, false) };
        for o in 0..olen {
            // SAFETY: as above; this task's row segment, which nothing else touches meanwhile.
            let seg = unsafe { std::slice::from_raw_parts_mut(dst.at((plane0 + o) * hw + p0), len) };
            pass(plane0 + o, p0, seg);
        }
    });
    y
}
