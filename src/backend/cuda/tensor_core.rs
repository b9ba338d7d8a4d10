//! Tensor-core paths of the CUDA backend (issue #14 item 2): conv2d, its input and weight
//! gradients, linear and its input gradient as implicit GEMMs on mma.sync in bf16, f16 or tf32 with f32
//! accumulators (kernels/tc_gemm.cuh, conv2d_tc.cu, linear_tc.cu, tc_support.cu). Operands are
//! cast to the narrow type (round to nearest even; tf32 nearest, ties away): the weights once
//! (weight_cache.rs), the forward conv's x in its loader (below), the other activations into
//! scratch in the layouts the engine reads (NHWC, k-contiguous rows); the results are f32 in the
//! backend's usual NCHW / row-major layouts.
//!
//! The forward conv reads x as it is (f32 NCHW): its loader casts (and normalises, for the folded
//! group norm) each chunk as it stages it into shared memory (`conv2d_tc_nchw_*`), so no cast
//! pass or NHWC copy is made. `RAN_CUDA_CAST_FIRST=1` casts first (`permute_cast_tc_*`, or
//! `permute_cast_norm_tc_*`) and runs the NHWC kernels: the same numbers bit for bit.
//!
//! Each entry point takes the op's checked geometry and a `Precision`. `Precision::F32`, grouped
//! convolutions, empty shapes and shapes the kernels cannot take (channels not a multiple of
//! 16 bytes' worth of elements: 8 for bf16/f16, 4 for tf32) go to the f32 `Compute` op — never a
//! wrong answer. `--precision` reaches them through precision_dispatch.rs.

use super::cached::CachedBuf;
use super::device::{Device, LaunchCfg};
use super::{b, ew, launch, CudaBackend, T};
use crate::backend::compute::GnOperand;
use crate::backend::Compute as _;
use crate::ops::contract::{
    Conv2dGeom, GroupNormGeom, TcGemmGeom, TcPermute, GN_PRE_FLOATS, TCG_BK, TCG_L_BM, TCG_L_BN, TCG_L_SMEM_2, TCG_L_SMEM_4, TCG_L_THREADS, TCG_SPLITK_MAX, TCG_SPLITK_MIN_BLOCKS,
    TCG_SPLITK_MIN_STEPS, TCG_S_BM, TCG_S_BN, TCG_S_SMEM_2, TCG_S_SMEM_4, TCG_S_THREADS,
};
use crate::ops::conv::LinearGeom;
use crate::ops::precision::Precision;
use crate::Result;
use std::sync::Arc;

/// Bytes of one operand element on the tensor cores (tf32 travels as a 32-bit word).
fn elem_bytes(p: Precision) -> usize {
    match p {
        Precision::Bf16 | Precision::F16 => 2,
        Precision::Tf32 | Precision::F32 => 4,
    }
}

/// Bytes of `n` elements cast to `p` as permute_cast_tc_* writes them: 2-byte elements in 32-bit
/// words of two (an odd count's last word padded with a 0 half), tf32 one word each.
fn narrow_bytes(n: usize, p: Precision) -> usize {
    match elem_bytes(p) {
        2 => n.div_ceil(2) * 4,
        _ => n * 4,
    }
}

/// The multiple of elements a GEMM's k-contiguous rows need: one 16-byte cp.async chunk (8 bf16 /
/// f16, 4 tf32), so that chunks are aligned and never straddle two taps of a convolution.
pub fn tc_channel_multiple(p: Precision) -> usize {
    16 / elem_bytes(p)
}

/// `RAN_CUDA_CAST_FIRST`: 1 casts the conv's activation in a pass of its own; unset, empty or 0:
/// in the conv's loader. Read once per process.
pub fn cast_first_from_env() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| super::env_switch("RAN_CUDA_CAST_FIRST", false, "the cast stays in the loader"))
}

fn tc_precision(p: Precision) -> bool {
    p != Precision::F32
}

/// Whether `conv2d_tc` runs this geometry on the tensor cores (else the f32 kernel).
pub fn conv2d_tc_supported(g: &Conv2dGeom, p: Precision) -> bool {
    tc_precision(p) && g.groups() == 1 && g.c() % tc_channel_multiple(p) == 0 && g.n() * g.o() * g.ho() * g.wo() > 0 && g.c() > 0
}

/// Whether `conv2d_x_backward_tc` runs this geometry on the tensor cores: the gradient's channels
/// (`o`) are its GEMM depth.
pub fn conv2d_x_backward_tc_supported(g: &Conv2dGeom, p: Precision) -> bool {
    tc_precision(p) && g.groups() == 1 && g.o() % tc_channel_multiple(p) == 0 && g.n() * g.c() * g.h() * g.w() > 0 && g.o() > 0
}

/// Whether `conv2d_w_backward_tc` runs this geometry on the tensor cores: every dense conv. Its
/// depth is the output pixels, padded with zeros to whole chunks, so no channel count is refused.
pub fn conv2d_w_backward_tc_supported(g: &Conv2dGeom, p: Precision) -> bool {
    tc_precision(p) && g.groups() == 1 && g.n() * g.ho() * g.wo() > 0 && g.o() * g.kk() > 0
}

/// The weight gradient's GEMM depth: n·ho·wo output pixels, padded to a multiple of 8 (a whole
/// 16-byte chunk of bf16/f16, two of tf32).
pub fn conv2d_w_backward_tc_depth(g: &Conv2dGeom) -> usize {
    (g.n() * g.ho() * g.wo()).next_multiple_of(8)
}

/// Whether `linear_tc` runs this geometry on the tensor cores (`fin` is the depth).
pub fn linear_tc_supported(g: &LinearGeom, p: Precision) -> bool {
    tc_precision(p) && g.fin % tc_channel_multiple(p) == 0 && g.rows * g.fin * g.fout > 0
}

/// Whether `linear_x_backward_tc` runs this geometry on the tensor cores (`fout` is the depth).
pub fn linear_x_backward_tc_supported(g: &LinearGeom, p: Precision) -> bool {
    tc_precision(p) && g.fout % tc_channel_multiple(p) == 0 && g.rows * g.fin * g.fout > 0
}

/// Whether `conv2d_tc_nchw` can make y's group-norm records for the norm `q` over y: the conv
/// on the tensor cores, and every output tile (BN pixels of the plan's tile) in one image.
pub fn conv2d_tc_gn_out_supported(g: &Conv2dGeom, q: &GroupNormGeom, p: Precision) -> bool {
    let hw = g.ho() * g.wo();
    if !conv2d_tc_supported(g, p) || hw == 0 || q.n() != g.n() || q.c() != g.o() || q.s() != hw {
        return false;
    }
    let plan = tc_plan(g.o(), g.n() * hw, g.kh() * g.kw() * g.c(), p);
    hw % (if plan.large { TCG_L_BN } else { TCG_S_BN }) as usize == 0
}

/// How one GEMM of M×N×K is launched: the tile, the grid and the split-K.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcPlan {
    /// The 128×128 tile (else 64×64).
    pub large: bool,
    pub grid: (u32, u32, u32),
    pub splits: usize,
    pub kt_per_split: usize,
    pub smem_bytes: u32,
}

/// The large tile when both M and N exceed the small one (a 64-wide side would leave half of a
/// 128 tile idle); split-K while the grid has fewer than TCG_SPLITK_MIN_BLOCKS blocks (two waves
/// of 132 SMs), each split TCG_SPLITK_MIN_STEPS K steps or more, every split non-empty.
pub fn tc_plan(m: usize, n: usize, k: usize, p: Precision) -> TcPlan {
    let large = m > TCG_S_BM as usize && n > TCG_S_BN as usize;
    let (bm, bn) = if large { (TCG_L_BM, TCG_L_BN) } else { (TCG_S_BM, TCG_S_BN) };
    let (gm, gn) = (m.div_ceil(bm as usize), n.div_ceil(bn as usize));
    let kt = k.div_ceil(TCG_BK as usize).max(1);
    let blocks = gm * gn;
    let mut splits = 1;
    if blocks < TCG_SPLITK_MIN_BLOCKS as usize {
        splits = (TCG_SPLITK_MIN_BLOCKS as usize).div_ceil(blocks).min(kt / TCG_SPLITK_MIN_STEPS as usize).clamp(1, TCG_SPLITK_MAX as usize);
    }
    let kt_per_split = kt.div_ceil(splits);
    let splits = kt.div_ceil(kt_per_split);
    let smem_bytes = match (large, elem_bytes(p)) {
        (true, 2) => TCG_L_SMEM_2,
        (true, _) => TCG_L_SMEM_4,
        (false, 2) => TCG_S_SMEM_2,
        (false, _) => TCG_S_SMEM_4,
    };
    TcPlan { large, grid: (gn as u32, gm as u32, splits as u32), splits, kt_per_split, smem_bytes }
}

/// One of the GEMM kernel families, for picking the kernel by precision and tile.
#[derive(Clone, Copy)]
enum Op {
    Conv,
    ConvDgrad,
    Linear,
}

fn kernel_name(op: Op, p: Precision, large: bool) -> &'static str {
    use Precision::*;
    match (op, large, p) {
        (Op::Conv, true, Bf16) => "conv2d_tc_bf16",
        (Op::Conv, true, F16) => "conv2d_tc_f16",
        (Op::Conv, true, _) => "conv2d_tc_tf32",
        (Op::Conv, false, Bf16) => "conv2d_tc_small_bf16",
        (Op::Conv, false, F16) => "conv2d_tc_small_f16",
        (Op::Conv, false, _) => "conv2d_tc_small_tf32",
        (Op::ConvDgrad, true, Bf16) => "conv2d_x_backward_tc_bf16",
        (Op::ConvDgrad, true, F16) => "conv2d_x_backward_tc_f16",
        (Op::ConvDgrad, true, _) => "conv2d_x_backward_tc_tf32",
        (Op::ConvDgrad, false, Bf16) => "conv2d_x_backward_tc_small_bf16",
        (Op::ConvDgrad, false, F16) => "conv2d_x_backward_tc_small_f16",
        (Op::ConvDgrad, false, _) => "conv2d_x_backward_tc_small_tf32",
        (Op::Linear, true, Bf16) => "linear_tc_bf16",
        (Op::Linear, true, F16) => "linear_tc_f16",
        (Op::Linear, true, _) => "linear_tc_tf32",
        (Op::Linear, false, Bf16) => "linear_tc_small_bf16",
        (Op::Linear, false, F16) => "linear_tc_small_f16",
        (Op::Linear, false, _) => "linear_tc_small_tf32",
    }
}

fn nchw_kernel_name(p: Precision, large: bool) -> &'static str {
    use Precision::*;
    match (large, p) {
        (true, Bf16) => "conv2d_tc_nchw_bf16",
        (true, F16) => "conv2d_tc_nchw_f16",
        (true, _) => "conv2d_tc_nchw_tf32",
        (false, Bf16) => "conv2d_tc_nchw_small_bf16",
        (false, F16) => "conv2d_tc_nchw_small_f16",
        (false, _) => "conv2d_tc_nchw_small_tf32",
    }
}

/// The narrow operands and the f32 results of one GEMM launch.
struct Gemm<'a, B> {
    a: &'a B,
    b: &'a B,
    bias: Option<&'a B>,
    /// a residual shaped like `out`, added after the bias (`t.has_res`)
    res: Option<&'a B>,
    out: &'a B,
    t: TcGemmGeom,
}

impl<D: Device> CudaBackend<D> {
    /// y = conv2d(x, w) + bias with x and w rounded to `p`, products summed in f32 on the tensor
    /// cores; groups > 1, `F32`, and channel counts the kernels cannot take use `Compute::conv2d`.
    pub fn conv2d_tc(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        if !conv2d_tc_supported(g, p) {
            return self.conv2d(x, w, bias, g);
        }
        self.conv2d_tc_epilogue(x, w, bias, None, g, p)
    }

    /// `conv2d_tc` + res (shaped like y), added in the engine's epilogue after the bias (and in
    /// split-K's reduction): (acc + bias) + res, the separate add's f32 result; unsupported
    /// shapes take the fused f32 kernel.
    pub fn conv2d_add_tc(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, res: &T<D>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        if !conv2d_tc_supported(g, p) {
            return self.conv2d_add(x, w, bias, res, g);
        }
        self.conv2d_tc_epilogue(x, w, bias, Some(res), g, p)
    }

    fn conv2d_tc_epilogue(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, res: Option<&T<D>>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        if !self.cast_first {
            return Ok(self.conv2d_tc_nchw(x, None, w, bias, res, g, p, None)?.0);
        }
        let (n, c, h, wd) = (g.n(), g.c(), g.h(), g.w());
        let xn = self.permute_cast(x, [n, h, wd, c], [c * h * wd, wd, 1, h * wd], p)?; // NHWC
        self.conv2d_tc_of_nhwc(&xn, w, bias, res, g, p)
    }

    /// `conv2d_add_tc` (`conv2d_tc` without `res`) of act(GN(x)·(1+scale)+shift): x normalised
    /// by its (image, channel) records `coef` (kernels/gn_pre.cuh) as it is cast to NHWC, then the
    /// same GEMM. Shapes the tensor cores cannot take run the f32 kernel that normalises in its
    /// loader (CudaBackend::conv2d_norm_f32).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv2d_norm_tc(&self, x: &T<D>, coef: &T<D>, silu: bool, w: &T<D>, bias: Option<&T<D>>, res: Option<&T<D>>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        if !conv2d_tc_supported(g, p) {
            return self.conv2d_norm_f32(x, coef, silu, w, bias, res, g);
        }
        if !self.cast_first {
            return Ok(self.conv2d_tc_nchw(x, Some((coef, silu)), w, bias, res, g, p, None)?.0);
        }
        let (n, c, h, wd) = (g.n(), g.c(), g.h(), g.w());
        let dims = [n, h, wd, c];
        let nn = x.numel();
        let out = self.dev.alloc(narrow_bytes(nn, p))?; // every word written
        let pm = TcPermute { d: dims.map(|v| v as i32), ss: [c * h * wd, wd, 1, h * wd].map(|v| v as i32) };
        let cfg = ew(if elem_bytes(p) == 2 { nn.div_ceil(2) } else { nn });
        let silu = silu as i32;
        match p {
            Precision::Bf16 => launch::permute_cast_norm_tc_bf16(&self.dev, &cfg, b(x), b(coef), &out, &pm, silu)?,
            Precision::F16 => launch::permute_cast_norm_tc_f16(&self.dev, &cfg, b(x), b(coef), &out, &pm, silu)?,
            Precision::Tf32 | Precision::F32 => launch::permute_cast_norm_tc_tf32(&self.dev, &cfg, b(x), b(coef), &out, &pm, silu)?,
        }
        self.conv2d_tc_of_nhwc(&out, w, bias, res, g, p)
    }

    /// The tensor-core conv of f32 NCHW x, cast (and normalised by `norm`'s records, then SiLU
    /// when its flag says) in the loader: `conv2d_tc_nchw_*`. With `next`, the same launch makes
    /// y's records for that norm (tc_gemm.cuh `tc_gn_out`), returned beside y; the caller checks
    /// `conv2d_tc_gn_out_supported` first.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv2d_tc_nchw(
        &self,
        x: &T<D>,
        norm: Option<(&T<D>, bool)>,
        w: &T<D>,
        bias: Option<&T<D>>,
        res: Option<&T<D>>,
        g: &Conv2dGeom,
        p: Precision,
        next: Option<&GnOperand<'_, Self>>,
    ) -> Result<(T<D>, Option<T<D>>)> {
        let (n, c, o, kh, kw) = (g.n(), g.c(), g.o(), g.kh(), g.kw());
        let hw = g.ho() * g.wo();
        let wn = self.weight_cast(w, [o, kh, kw, c], [c * kh * kw, kw, 1, kh * kw], p)?; // [o][kh][kw][c]
        let y = self.alloc(&g.y_dims())?;
        let mut t = gemm_geom(o, n * hw, kh * kw * c, hw, bias.is_some(), false);
        t.has_res = res.is_some() as i32;
        let coef = norm.map_or(b(x), |(r, _)| b(r)); // unread without a norm
        let (on, silu) = (norm.is_some() as i32, norm.is_some_and(|(_, s)| s) as i32);
        let out = b(&y);
        // the records' buffers and their counters (after split-K's in one zeroed buffer)
        let plan = tc_plan(o, n * hw, kh * kw * c, p);
        let bn = if plan.large { TCG_L_BN } else { TCG_S_BN } as usize;
        let gn = match next {
            Some(q) => {
                let tiles = hw / bn;
                let part = self.alloc(&[n * o * tiles * 2])?; // every tile's moments written before they are read
                let chm = self.alloc(&[n * o * 2])?; // every channel's, likewise
                let rec = self.alloc(&[n, o, GN_PRE_FLOATS as usize])?; // every record written in full
                Some((q, part, chm, rec))
            }
            None => None,
        };
        let gn_counters = if gn.is_some() { n * plan.grid.1 as usize + n } else { 0 };
        let q_geom = next.map_or(GroupNormGeom::default(), |q| q.g);
        let dummy = b(x); // unread where gn = 0 or a norm has no scale-shift
        let (part, chm, rec, gamma, beta, sc, sh) = match &gn {
            Some((q, part, chm, rec)) => {
                let (sc, sh) = q.emb.map_or((q.gamma, q.beta), |e| (e, e)); // unread without scale-shift
                (b(part), b(chm), b(rec), b(q.gamma), b(q.beta), b(sc), b(sh))
            }
            None => (dummy, dummy, dummy, dummy, dummy, dummy, dummy),
        };
        let on_gn = gn.is_some() as i32;
        self.gemm_plan(
            |large| nchw_kernel_name(p, large),
            p,
            &mut t,
            bias.map(b),
            res.map(b),
            b(x),
            gn_counters,
            |name, cfg, ws, cnt, bias, res, t| {
                let (x, wn) = (b(x), &*wn);
                macro_rules! go {
                    ($k:ident) => {
                        launch::$k(&self.dev, cfg, x, coef, wn, bias, res, out, ws, cnt, g, t, on, silu, part, chm, gamma, beta, sc, sh, rec, &q_geom, on_gn)
                    };
                }
                match name {
                    "conv2d_tc_nchw_bf16" => go!(conv2d_tc_nchw_bf16),
                    "conv2d_tc_nchw_f16" => go!(conv2d_tc_nchw_f16),
                    "conv2d_tc_nchw_tf32" => go!(conv2d_tc_nchw_tf32),
                    "conv2d_tc_nchw_small_bf16" => go!(conv2d_tc_nchw_small_bf16),
                    "conv2d_tc_nchw_small_f16" => go!(conv2d_tc_nchw_small_f16),
                    "conv2d_tc_nchw_small_tf32" => go!(conv2d_tc_nchw_small_tf32),
                    _ => unreachable!("nchw_kernel_name returns only these"),
                }
            },
        )?;
        Ok((y, gn.map(|(_, _, _, rec)| rec)))
    }

    /// The tensor-core conv of an operand already cast to NHWC in `p`.
    fn conv2d_tc_of_nhwc(&self, xn: &CachedBuf<D>, w: &T<D>, bias: Option<&T<D>>, res: Option<&T<D>>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        let (n, c, o, kh, kw) = (g.n(), g.c(), g.o(), g.kh(), g.kw());
        let wn = self.weight_cast(w, [o, kh, kw, c], [c * kh * kw, kw, 1, kh * kw], p)?; // [o][kh][kw][c]
        let y = self.alloc(&g.y_dims())?;
        let mut t = gemm_geom(o, n * g.ho() * g.wo(), kh * kw * c, g.ho() * g.wo(), bias.is_some(), false);
        t.has_res = res.is_some() as i32;
        self.gemm(Op::Conv, p, Some(g), Gemm { a: &*wn, b: xn, bias: bias.map(b), res: res.map(b), out: b(&y), t })?;
        Ok(y)
    }

    /// ∂x of conv2d from ∂y with w rounded to `p` (∂y too), on the tensor cores; fallbacks as for
    /// `conv2d_tc` (here the depth is `o`, so `o` must be a multiple of `tc_channel_multiple`).
    pub fn conv2d_x_backward_tc(&self, gy: &T<D>, w: &T<D>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        if !conv2d_x_backward_tc_supported(g, p) {
            return self.conv2d_x_backward(gy, w, g);
        }
        let (n, c, h, wd, o, kh, kw) = (g.n(), g.c(), g.h(), g.w(), g.o(), g.kh(), g.kw());
        let (ho, wo) = (g.ho(), g.wo());
        let gyn = self.permute_cast(gy, [n, ho, wo, o], [o * ho * wo, wo, 1, ho * wo], p)?; // NHWC
        let wn = self.weight_cast(w, [c, kh, kw, o], [kh * kw, kw, 1, c * kh * kw], p)?; // [c][kh][kw][o]
        let gx = self.alloc(&g.x_dims())?;
        let t = gemm_geom(c, n * h * wd, kh * kw * o, h * wd, false, false);
        self.gemm(Op::ConvDgrad, p, Some(g), Gemm { a: &*wn, b: &gyn, bias: None, res: None, out: b(&gx), t })?;
        Ok(gx)
    }

    /// ∂w of conv2d (groups 1) from ∂y and x, both rounded to `p`, on the tensor cores: one GEMM
    /// M = o, N = c·kh·kw, K = n·ho·wo (padded to kp) over two k-contiguous operands made by
    /// `im2col_rows_cast` — ∂y as [o][kp], x's transposed im2col as [c·kh·kw][kp] — and the plain
    /// rows kernel (linear_tc's); the output [o][c·kh·kw] is ∂w's own layout. K is long and M·N
    /// small, so split-K does most of the spreading. Grouped convs and `F32` take the f32 kernel.
    /// The im2col costs (c·kh·kw)·kp narrow elements of scratch (604 MB at 256 channels, 256²,
    /// batch 2, bf16): built whole, not in K slices (a later step if memory asks for it).
    pub fn conv2d_w_backward_tc(&self, gy: &T<D>, x: &T<D>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        if !conv2d_w_backward_tc_supported(g, p) {
            return self.conv2d_w_backward(gy, x, g);
        }
        let (o, kk, kp) = (g.o(), g.kk(), conv2d_w_backward_tc_depth(g));
        // ∂y as the im2col of a 1×1 stride-1 conv over it: rows o, k = (img, oy, ox)
        let gy_geom = Conv2dGeom { c: g.o, h: g.ho, w: g.wo, kh: 1, kw: 1, sh: 1, sw: 1, pt: 0, pl: 0, ..*g };
        let a = self.im2col_rows_cast(gy, &gy_geom, kp, p)?;
        let bm = self.im2col_rows_cast(x, g, kp, p)?;
        let gw = self.alloc(&[o, g.cg(), g.kh(), g.kw()])?;
        let t = gemm_geom(o, kk, kp, kk, false, false);
        self.gemm(Op::Linear, p, None, Gemm { a: &a, b: &bm, bias: None, res: None, out: b(&gw), t })?;
        Ok(gw)
    }

    /// y = x·wᵀ + bias (x [rows, fin], w [fout, fin]) with x and w rounded to `p`, on the tensor
    /// cores; `F32` and `fin` not a multiple of `tc_channel_multiple` use `Compute::linear`.
    pub fn linear_tc(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, g: &LinearGeom, p: Precision) -> Result<T<D>> {
        if !linear_tc_supported(g, p) {
            return self.linear(x, w, bias, g);
        }
        let xn = self.permute_cast(x, [1, 1, g.rows, g.fin], [0, 0, g.fin, 1], p)?;
        let wn = self.weight_cast(w, [1, 1, g.fout, g.fin], [0, 0, g.fin, 1], p)?;
        let y = self.alloc(&[g.rows, g.fout])?;
        let t = gemm_geom(g.rows, g.fout, g.fin, g.fout, bias.is_some(), true);
        self.gemm(Op::Linear, p, None, Gemm { a: &xn, b: &*wn, bias: bias.map(b), res: None, out: b(&y), t })?;
        Ok(y)
    }

    /// ∂x = ∂y·w (∂y [rows, fout], w [fout, fin]) with both rounded to `p`, on the tensor cores;
    /// `F32` and `fout` not a multiple of `tc_channel_multiple` use `Compute::linear_x_backward`.
    pub fn linear_x_backward_tc(&self, gy: &T<D>, w: &T<D>, g: &LinearGeom, p: Precision) -> Result<T<D>> {
        if !linear_x_backward_tc_supported(g, p) {
            return self.linear_x_backward(gy, w, g);
        }
        let gyn = self.permute_cast(gy, [1, 1, g.rows, g.fout], [0, 0, g.fout, 1], p)?;
        let wt = self.weight_cast(w, [1, 1, g.fin, g.fout], [0, 0, 1, g.fin], p)?; // wᵀ [fin][fout]
        let gx = self.alloc(&[g.rows, g.fin])?;
        let t = gemm_geom(g.rows, g.fin, g.fout, g.fin, false, false);
        self.gemm(Op::Linear, p, None, Gemm { a: &gyn, b: &*wt, bias: None, res: None, out: b(&gx), t })?;
        Ok(gx)
    }

    /// The former bf16-only entry point: `linear_tc` in bf16 (shape checked here).
    pub fn linear_tc_bf16(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>) -> Result<T<D>> {
        let g = crate::ops::conv::linear(x.shape(), w.shape(), bias.map(|t| t.shape()))?;
        self.linear_tc(x, w, bias, &g, Precision::Bf16)
    }

    /// Launches one GEMM: the kernel for (op, precision, tile).
    fn gemm(&self, op: Op, p: Precision, conv: Option<&Conv2dGeom>, gm: Gemm<'_, CachedBuf<D>>) -> Result<()> {
        let mut t = gm.t;
        self.gemm_plan(
            |large| kernel_name(op, p, large),
            p,
            &mut t,
            gm.bias,
            gm.res,
            gm.a,
            0,
            |name, cfg, ws, cnt, bias, res, t| launch_by_name(&self.dev, name, cfg, gm.a, gm.b, bias, res, gm.out, ws, cnt, conv, t),
        )
    }

    /// The plan of t's GEMM (tile, grid, split-K, written into `t`) and the launch of the kernel
    /// `name_of(large tile)` by `go(name, cfg, ws, cnt, bias, res, t)`: with split-K, `ws` holds the splits'
    /// partials and `cnt` a zeroed counter per output tile (the tile's last block sums the
    /// partials into `out`, tc_gemm.cuh `tc_splitk_finish`), followed by `extra_counters` more
    /// (the group-norm records', `tc_gn_out`). `dummy`: any live buffer, passed for an absent
    /// bias or residual (has_bias / has_res say 0).
    #[allow(clippy::too_many_arguments)]
    fn gemm_plan(
        &self,
        name_of: impl FnOnce(bool) -> &'static str,
        p: Precision,
        t: &mut TcGemmGeom,
        bias: Option<&CachedBuf<D>>,
        res: Option<&CachedBuf<D>>,
        dummy: &CachedBuf<D>,
        extra_counters: usize,
        go: impl FnOnce(&'static str, &LaunchCfg, &CachedBuf<D>, &CachedBuf<D>, &CachedBuf<D>, &CachedBuf<D>, &TcGemmGeom) -> Result<()>,
    ) -> Result<()> {
        let plan = tc_plan(t.m as usize, t.n as usize, t.k as usize, p);
        t.splits = plan.splits as i32;
        t.kt_per_split = plan.kt_per_split as i32;
        let threads = if plan.large { TCG_L_THREADS } else { TCG_S_THREADS };
        let cfg = LaunchCfg { grid: plan.grid, block: (threads, 1, 1), smem_bytes: plan.smem_bytes };
        let name = name_of(plan.large);
        // every split's block writes its whole tile of partials (each split non-empty, tc_plan);
        // without split-K ws is unread
        let ws = self.dev.alloc(if plan.splits > 1 { plan.splits * t.m as usize * t.n as usize * 4 } else { 4 })?;
        let bias = bias.unwrap_or(dummy);
        let res = res.unwrap_or(dummy);
        // the counters are shared with the group-norm records' (each launch leaves them 0; one stream)
        let counters = if plan.splits > 1 { plan.grid.0 as usize * plan.grid.1 as usize } else { 0 } + extra_counters;
        let cnt = if counters > 0 { Some(self.gn_counters(counters)?) } else { None };
        go(name, &cfg, &ws, cnt.as_deref().unwrap_or(&ws), bias, res, t)?;
        Ok(())
    }

    /// `permute_cast` of a weight, made once per weight, layout and precision (weight_cache.rs).
    fn weight_cast(&self, w: &T<D>, dims: [usize; 4], src_strides: [usize; 4], p: Precision) -> Result<Arc<CachedBuf<D>>> {
        // made now even inside a graph capture: the copy outlives the graph (CachedDevice::eager)
        self.dev.eager(|| self.weights.get_or_make(w.storage(), (dims, src_strides, p), || self.permute_cast(w, dims, src_strides, p)))
    }

    /// `t` cast to `p` into a scratch buffer of the narrow type, row-major over `dims`, element
    /// (i0..i3) taken from t's element Σ i_k·`src_strides`[k] (a reorder of t's elements).
    fn permute_cast(&self, t: &T<D>, dims: [usize; 4], src_strides: [usize; 4], p: Precision) -> Result<CachedBuf<D>> {
        let n = t.numel();
        debug_assert_eq!(n, dims.iter().product::<usize>());
        // every word written (not zeroed first: the emulator's fresh buffers are NaN, so a word
        // left unwritten fails the tests)
        let out = self.dev.alloc(narrow_bytes(n, p))?;
        let pm = TcPermute { d: dims.map(|v| v as i32), ss: src_strides.map(|v| v as i32) };
        let cfg = ew(if elem_bytes(p) == 2 { n.div_ceil(2) } else { n });
        match p {
            Precision::Bf16 => launch::permute_cast_tc_bf16(&self.dev, &cfg, b(t), &out, &pm)?,
            Precision::F16 => launch::permute_cast_tc_f16(&self.dev, &cfg, b(t), &out, &pm)?,
            Precision::Tf32 | Precision::F32 => launch::permute_cast_tc_tf32(&self.dev, &cfg, b(t), &out, &pm)?,
        }
        Ok(out)
    }

    /// The rows (ci, ky, kx) of `t`'s transposed im2col under `g`, cast to `p`, each `kp` long
    /// (zeros past n·ho·wo): kernels/tc_support.cu `im2col_rows_cast_tc_*`.
    fn im2col_rows_cast(&self, t: &T<D>, g: &Conv2dGeom, kp: usize, p: Precision) -> Result<CachedBuf<D>> {
        debug_assert!(kp % 2 == 0 && kp >= g.n() * g.ho() * g.wo());
        let n = g.c() * g.kh() * g.kw() * kp;
        // not zeroed: the kernel writes every element, the K padding too (the emulator's fresh
        // buffers are NaN, so a pad column left unwritten fails the tests)
        let out = self.dev.alloc(n * elem_bytes(p))?;
        let cfg = ew(if elem_bytes(p) == 2 { n / 2 } else { n });
        let kp = i32::try_from(kp).map_err(|_| crate::Error::InvalidArgument(format!("conv2d_w_backward on the tensor cores: {kp} output pixels (padded) exceed the kernels' 32-bit index")))?;
        match p {
            Precision::Bf16 => launch::im2col_rows_cast_tc_bf16(&self.dev, &cfg, b(t), &out, g, kp)?,
            Precision::F16 => launch::im2col_rows_cast_tc_f16(&self.dev, &cfg, b(t), &out, g, kp)?,
            Precision::Tf32 | Precision::F32 => launch::im2col_rows_cast_tc_tf32(&self.dev, &cfg, b(t), &out, g, kp)?,
        }
        Ok(out)
    }
}

fn gemm_geom(m: usize, n: usize, k: usize, hw: usize, has_bias: bool, bias_on_n: bool) -> TcGemmGeom {
    let v = |u: usize| u as i32; // ops bounded every tensor by 2³¹−1 elements
    TcGemmGeom { m: v(m), n: v(n), k: v(k), hw: v(hw), kt_per_split: 0, splits: 0, has_bias: has_bias as i32, bias_on_n: bias_on_n as i32, has_res: 0 }
}

/// The typed launch of the kernel `name` (one of `kernel_name`'s).
#[allow(clippy::too_many_arguments)]
fn launch_by_name<D: Device>(
    dev: &D,
    name: &'static str,
    cfg: &LaunchCfg,
    a: &D::Buf,
    bm: &D::Buf,
    bias: &D::Buf,
    res: &D::Buf,
    out: &D::Buf,
    ws: &D::Buf,
    cnt: &D::Buf,
    conv: Option<&Conv2dGeom>,
    t: &TcGemmGeom,
) -> Result<()> {
    let conv = || conv.expect("a conv kernel gets its geometry");
    match name {
        "conv2d_tc_bf16" => launch::conv2d_tc_bf16(dev, cfg, bm, a, bias, res, out, ws, cnt, conv(), t),
        "conv2d_tc_f16" => launch::conv2d_tc_f16(dev, cfg, bm, a, bias, res, out, ws, cnt, conv(), t),
        "conv2d_tc_tf32" => launch::conv2d_tc_tf32(dev, cfg, bm, a, bias, res, out, ws, cnt, conv(), t),
        "conv2d_tc_small_bf16" => launch::conv2d_tc_small_bf16(dev, cfg, bm, a, bias, res, out, ws, cnt, conv(), t),
        "conv2d_tc_small_f16" => launch::conv2d_tc_small_f16(dev, cfg, bm, a, bias, res, out, ws, cnt, conv(), t),
        "conv2d_tc_small_tf32" => launch::conv2d_tc_small_tf32(dev, cfg, bm, a, bias, res, out, ws, cnt, conv(), t),
        "conv2d_x_backward_tc_bf16" => launch::conv2d_x_backward_tc_bf16(dev, cfg, bm, a, res, out, ws, cnt, conv(), t),
        "conv2d_x_backward_tc_f16" => launch::conv2d_x_backward_tc_f16(dev, cfg, bm, a, res, out, ws, cnt, conv(), t),
        "conv2d_x_backward_tc_tf32" => launch::conv2d_x_backward_tc_tf32(dev, cfg, bm, a, res, out, ws, cnt, conv(), t),
        "conv2d_x_backward_tc_small_bf16" => launch::conv2d_x_backward_tc_small_bf16(dev, cfg, bm, a, res, out, ws, cnt, conv(), t),
        "conv2d_x_backward_tc_small_f16" => launch::conv2d_x_backward_tc_small_f16(dev, cfg, bm, a, res, out, ws, cnt, conv(), t),
        "conv2d_x_backward_tc_small_tf32" => launch::conv2d_x_backward_tc_small_tf32(dev, cfg, bm, a, res, out, ws, cnt, conv(), t),
        "linear_tc_bf16" => launch::linear_tc_bf16(dev, cfg, a, bm, bias, res, out, ws, cnt, t),
        "linear_tc_f16" => launch::linear_tc_f16(dev, cfg, a, bm, bias, res, out, ws, cnt, t),
        "linear_tc_tf32" => launch::linear_tc_tf32(dev, cfg, a, bm, bias, res, out, ws, cnt, t),
        "linear_tc_small_bf16" => launch::linear_tc_small_bf16(dev, cfg, a, bm, bias, res, out, ws, cnt, t),
        "linear_tc_small_f16" => launch::linear_tc_small_f16(dev, cfg, a, bm, bias, res, out, ws, cnt, t),
        "linear_tc_small_tf32" => launch::linear_tc_small_tf32(dev, cfg, a, bm, bias, res, out, ws, cnt, t),
        _ => unreachable!("kernel_name returns only these"),
    }
}
