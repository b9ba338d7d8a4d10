//! The tensor-core convolution (`CudaBackend::conv2d_tc`, `conv2d_x_backward_tc`; kernels/
//! conv2d_tc.cu on tc_gemm.cuh) on the emulator, bf16, f16 and tf32, under forward / reverse /
//! random schedules (and the race detector where compiled in), against the CPU backend's f32 op
//! on operands rounded the same way (tight) and against PyTorch's float64 fixtures (a bound).
//! Tolerances: tests/common/tc.rs. The forward here is the loader-cast kernels
//! (`conv2d_tc_nchw_*`, the default); the cast-first NHWC forward kernels are held to them bit
//! for bit by tests/conv_tc_staged.rs.

mod common;
use common::tc::{abs, fixture_cases_for, fixture_ratio, rounded, schedules, tight_ratio, uniform, LOW};
use ran::backend::cuda::emu::{set_race_check, set_schedule, Schedule};
use ran::backend::cuda::tensor_core::{conv2d_tc_supported, conv2d_x_backward_tc_supported, tc_plan};
use ran::backend::cuda::EmulatedCuda;
use ran::ops::contract::Conv2dGeom;
use ran::ops::conv::{Conv2dParams, Padding2d};
use ran::ops::precision::Precision;
use ran::{Backend, Cpu, Shape};
use std::sync::Mutex;

static SCHED: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    n: usize,
    c: usize,
    hw: (usize, usize),
    o: usize,
    k: (usize, usize),
    stride: usize,
    pad: (usize, usize, usize, usize), // left, right, top, bottom
    bias: bool,
    /// x (forward) or ∂y (∂x) scaled: 2⁻¹⁶ puts them among f16's subnormals (10 bits no longer
    /// kept), where f16 and tf32 round differently, so a precision wired to the other's
    /// conversion or mma shows; elsewhere in [−1, 1) the two round identically.
    scale: f32,
}

impl Case {
    fn params(&self) -> Conv2dParams {
        let (l, r, t, b) = self.pad;
        Conv2dParams { stride: (self.stride, self.stride), padding: Padding2d::lrtb(l, r, t, b), groups: 1 }
    }
    fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.hw.0, self.hw.1]
    }
    fn w_dims(&self) -> [usize; 4] {
        [self.o, self.c, self.k.0, self.k.1]
    }
    fn geom(&self) -> Conv2dGeom {
        ran::ops::conv::conv2d(&Shape::new(&self.x_dims()), &Shape::new(&self.w_dims()), self.bias.then(|| Shape::new(&[self.o])).as_ref(), &self.params()).unwrap()
    }
}

/// Each case names what it bites on. M = o (forward) or c (∂x); N = output (input) pixels.
const FORWARD: [Case; 5] = [
    // two 128×128 tiles in M and in N; K = 144: 4.5 K steps (not a multiple of 32, 5 steps not of 3 stages)
    Case { name: "3x3_two_tiles_mn", n: 2, c: 16, hw: (9, 9), o: 136, k: (3, 3), stride: 1, pad: (1, 1, 1, 1), bias: true, scale: 1.0 },
    // one 64×64 block, K = 576: split-K into 4 (18 K steps), the reduction adds the bias
    Case { name: "3x3_split_k", n: 1, c: 64, hw: (6, 6), o: 24, k: (3, 3), stride: 1, pad: (1, 1, 1, 1), bias: true, scale: 1.0 },
    // 7×7 stride 2, top ≠ left padding, c = 8: a chunk is one whole tap, K = 392 split in 3
    Case { name: "7x7_s2_asym_f16_subnormal_x", n: 1, c: 8, hw: (13, 12), o: 16, k: (7, 7), stride: 2, pad: (3, 2, 2, 3), bias: false, scale: 1.0 / 65536.0 },
    // 1×1 on the large tile with one K step (fewer steps than pipeline stages)
    Case { name: "1x1_one_k_step", n: 2, c: 24, hw: (5, 7), o: 72, k: (1, 1), stride: 1, pad: (0, 0, 0, 0), bias: true, scale: 1.0 },
    // stride 2, asymmetric padding (pad only bottom/right, as TF "same"), bias off
    Case { name: "3x3_s2_same", n: 2, c: 32, hw: (11, 10), o: 40, k: (3, 3), stride: 2, pad: (0, 1, 0, 1), bias: false, scale: 1.0 },
];

/// ∂x cases: the depth is o (a multiple of 8), M = c.
const BACKWARD: [Case; 5] = [
    Case { name: "dx_3x3_two_tiles_mn", n: 2, c: 136, hw: (9, 9), o: 16, k: (3, 3), stride: 1, pad: (1, 1, 1, 1), bias: false, scale: 1.0 },
    // stride 2 with top ≠ left: taps whose (iy + pt − ky) is odd reach no output; split-K (K = 288)
    Case { name: "dx_3x3_s2_asym_split", n: 1, c: 24, hw: (11, 11), o: 32, k: (3, 3), stride: 2, pad: (1, 0, 0, 1), bias: false, scale: 1.0 },
    Case { name: "dx_7x7_s2_asym_f16_subnormal_gy", n: 1, c: 8, hw: (13, 12), o: 16, k: (7, 7), stride: 2, pad: (3, 2, 2, 3), bias: false, scale: 1.0 / 65536.0 },
    Case { name: "dx_1x1", n: 2, c: 72, hw: (5, 7), o: 24, k: (1, 1), stride: 1, pad: (0, 0, 0, 0), bias: false, scale: 1.0 },
    // a 1×1 stride 2: three input pixels in four get no gradient (zeros, not garbage)
    Case { name: "dx_1x1_s2", n: 1, c: 16, hw: (8, 9), o: 8, k: (1, 1), stride: 2, pad: (0, 0, 0, 0), bias: false, scale: 1.0 },
];

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    gy: Vec<f32>,
}

fn data(c: &Case, seed: u64) -> Data {
    let g = c.geom();
    let nx: usize = c.x_dims().iter().product();
    let nw: usize = c.w_dims().iter().product();
    let scaled = |v: Vec<f32>| v.into_iter().map(|a| a * c.scale).collect();
    Data { x: scaled(uniform(seed, nx)), w: uniform(seed + 1, nw), b: uniform(seed + 2, c.o), gy: scaled(uniform(seed + 3, g.y_dims().iter().product())) }
}

/// The CPU backend's f32 forward (or ∂x) on the given operands.
fn cpu_op(c: &Case, forward: bool, x_or_gy: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let cpu = Cpu;
    let g = c.geom();
    let wt = cpu.from_host(&c.w_dims(), w).unwrap();
    let y = if forward {
        let xt = cpu.from_host(&c.x_dims(), x_or_gy).unwrap();
        let bt = b.map(|b| cpu.from_host(&[c.o], b).unwrap());
        cpu.conv2d(&xt, &wt, bt.as_ref(), &c.params()).unwrap()
    } else {
        let gyt = cpu.from_host(&g.y_dims(), x_or_gy).unwrap();
        cpu.conv2d_x_backward(&gyt, &wt, &Shape::new(&c.x_dims()), &c.params()).unwrap()
    };
    cpu.to_host(&y).unwrap()
}

fn emu_op(emu: &EmulatedCuda, c: &Case, forward: bool, d: &Data, p: Precision) -> Vec<f32> {
    let g = c.geom();
    let wt = emu.from_host(&c.w_dims(), &d.w).unwrap();
    let y = if forward {
        let xt = emu.from_host(&c.x_dims(), &d.x).unwrap();
        let bt = c.bias.then(|| emu.from_host(&[c.o], &d.b).unwrap());
        emu.conv2d_tc(&xt, &wt, bt.as_ref(), &g, p)
    } else {
        let gyt = emu.from_host(&g.y_dims(), &d.gy).unwrap();
        emu.conv2d_x_backward_tc(&gyt, &wt, &g, p)
    };
    emu.to_host(&y.unwrap_or_else(|e| panic!("{} {p}: {e}", c.name))).unwrap()
}

/// Runs every case in every low precision and schedule against the rounded CPU reference.
fn check_tight(cases: &[Case], forward: bool) {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let emu = EmulatedCuda::emulated();
    for (ci, c) in cases.iter().enumerate() {
        let g = c.geom();
        let d = data(c, 100 + 10 * ci as u64);
        let depth = if forward { g.kk() } else { g.o() * g.kh() * g.kw() };
        for p in LOW {
            assert!(if forward { conv2d_tc_supported(&g, p) } else { conv2d_x_backward_tc_supported(&g, p) }, "{} {p}: not on the tensor cores", c.name);
            let b = c.bias.then_some(&d.b[..]);
            let src = if forward { &d.x } else { &d.gy };
            let want = cpu_op(c, forward, &rounded(p, src), &rounded(p, &d.w), b);
            if c.scale != 1.0 && p == Precision::F16 {
                let tf = cpu_op(c, forward, &rounded(Precision::Tf32, src), &rounded(Precision::Tf32, &d.w), b);
                assert!(tight_ratio(&tf, &want, depth) > 4.0, "{}: f16 and tf32 references do not differ", c.name);
            }
            let mut worst = 0.0f64;
            for (sched, race) in schedules() {
                // the race detector is slow: one precision suffices for the barriers, which are the same code
                if race && p != Precision::Bf16 {
                    continue;
                }
                set_schedule(sched);
                let was = set_race_check(race);
                let got = emu_op(&emu, c, forward, &d, p);
                set_race_check(was);
                let r = tight_ratio(&got, &want, depth);
                assert!(r <= 1.0, "{} {p} {sched:?} race={race}: error {r:.2}× the tight tolerance", c.name);
                worst = worst.max(r);
            }
            // the tolerance is finer than the operand rounding: the f32 result fails it
            let unrounded = cpu_op(c, forward, src, &d.w, b);
            let r32 = tight_ratio(&unrounded, &want, depth);
            assert!(r32 > 2.0, "{} {p}: the tight tolerance cannot tell {p} from f32 operands ({r32:.2}×)", c.name);
            let (m, n) = if forward { (g.o(), g.n() * g.ho() * g.wo()) } else { (g.c(), g.n() * g.h() * g.w()) };
            eprintln!("{} {p}: worst {worst:.3}× tight tolerance (f32 operands: {r32:.1}×), plan {:?}", c.name, tc_plan(m, n, depth, p));
        }
    }
    set_schedule(Schedule::Forward);
}

/// Catches: a wrong fragment / swizzle / stage (O(1) errors), the second tile in M or N
/// mis-addressed, K tails past a 32-step or a stage count, im2col with the wrong tap order,
/// stride or padding side (top vs left), the bias dropped or doubled (also through split-K's
/// reduction), operands not rounded or rounded to the wrong type, a missing barrier (race detector).
#[test]
fn conv2d_tc_matches_the_rounded_cpu_reference() {
    // the cases reach what they claim: two large tiles in M and N, a split-K, the small tile
    let g0 = FORWARD[0].geom();
    let pl = tc_plan(g0.o(), g0.n() * g0.ho() * g0.wo(), g0.kk(), Precision::Bf16);
    assert!(pl.large && pl.grid.0 == 2 && pl.grid.1 == 2 && pl.splits == 1, "{pl:?}");
    let g1 = FORWARD[1].geom();
    let pl = tc_plan(g1.o(), g1.n() * g1.ho() * g1.wo(), g1.kk(), Precision::Bf16);
    assert!(!pl.large && pl.splits == 4, "{pl:?}");
    check_tight(&FORWARD, true);
}

/// As above for ∂x, whose im2col inverts the stride (taps that reach no output are zeros) and
/// swaps the roles: M = in channels, K = out channels × taps.
#[test]
fn conv2d_x_backward_tc_matches_the_rounded_cpu_reference() {
    let g1 = BACKWARD[1].geom();
    let pl = tc_plan(g1.c(), g1.n() * g1.h() * g1.w(), g1.o() * g1.kh() * g1.kw(), Precision::Bf16);
    assert!(pl.splits > 1, "{pl:?}");
    check_tight(&BACKWARD, false);
}

/// Catches: a shape the kernels cannot take (channels not a multiple of 8 for bf16/f16 — or 4 for
/// tf32 — groups > 1, `F32`) computed on the tensor cores anyway, or refused, instead of going to
/// the f32 kernel; the fallback result is the f32 one (tight against unrounded operands, and
/// visibly not rounded).
#[test]
fn shapes_the_kernels_cannot_take_fall_back_to_f32() {
    let emu = EmulatedCuda::emulated();
    let c3 = Case { name: "c3", n: 1, c: 3, hw: (9, 8), o: 16, k: (3, 3), stride: 1, pad: (1, 1, 1, 1), bias: true, scale: 1.0 };
    let c12 = Case { name: "c12", c: 12, ..c3 };
    for (c, p) in [(c3, Precision::Bf16), (c3, Precision::Tf32), (c12, Precision::F16), (c3, Precision::F32)] {
        let g = c.geom();
        assert!(!conv2d_tc_supported(&g, p), "{} {p}", c.name);
        let d = data(&c, 7);
        let got = emu_op(&emu, &c, true, &d, p);
        let want = cpu_op(&c, true, &d.x, &d.w, Some(&d.b));
        assert!(tight_ratio(&got, &want, g.kk()) <= 1.0, "{} {p}: the fallback differs from f32", c.name);
        if p != Precision::F32 {
            let r = cpu_op(&c, true, &rounded(p, &d.x), &rounded(p, &d.w), Some(&d.b));
            assert!(tight_ratio(&got, &r, g.kk()) > 2.0, "{} {p}: the fallback looks rounded", c.name);
        }
    }
    // c = 12 is a whole number of tf32 chunks: that one does run on the tensor cores
    assert!(conv2d_tc_supported(&c12.geom(), Precision::Tf32));
    // ∂x: its depth is o; o = 12 falls back for bf16
    let dx = Case { name: "dx_o12", o: 12, c: 16, ..c3 };
    let g = dx.geom();
    assert!(!conv2d_x_backward_tc_supported(&g, Precision::Bf16));
    let d = data(&dx, 9);
    let got = emu_op(&emu, &dx, false, &d, Precision::Bf16);
    assert!(tight_ratio(&got, &cpu_op(&dx, false, &d.gy, &d.w, None), g.o() * 9) <= 1.0);
    // groups = 2 (from the ops layer's geometry) is never on the tensor cores
    let grouped = ran::ops::conv::conv2d(&Shape::new(&[1, 16, 5, 5]), &Shape::new(&[16, 8, 3, 3]), None, &Conv2dParams { stride: (1, 1), padding: Padding2d::same(1), groups: 2 }).unwrap();
    assert!(!conv2d_tc_supported(&grouped, Precision::Bf16) && !conv2d_x_backward_tc_supported(&grouped, Precision::Bf16));
}

/// Every conv2d fixture case (PyTorch float64, tests/fixtures/ops.safetensors) the tensor cores
/// can take, forward (y) and ∂x (g_x), in each precision, within the operand-rounding bound.
/// Catches what the CPU-relative check shares with the CPU backend (a geometry both get wrong).
#[test]
fn conv2d_tc_matches_the_float64_fixtures_within_the_rounding_bound() {
    let emu = EmulatedCuda::emulated();
    let cpu = Cpu;
    let mut ran = 0;
    for case in fixture_cases_for("conv2d") {
        let pad = case.usizes("pad").unwrap(); // F.pad's order: left, right, top, bottom
        let s = case.usize("stride").unwrap();
        let params = Conv2dParams { stride: (s, s), padding: Padding2d::lrtb(pad[0], pad[1], pad[2], pad[3]), groups: case.usize("groups").unwrap() };
        let (xs, x) = case.host("x").unwrap();
        let (ws, w) = case.host("w").unwrap();
        let b = case.tensors.get("b");
        let g = ran::ops::conv::conv2d(&Shape::new(xs), &Shape::new(ws), b.map(|(s, _)| Shape::new(s)).as_ref(), &params).unwrap();
        let (gys, gy) = case.host("gy").unwrap();
        for p in LOW {
            let xt = emu.from_host(xs, x).unwrap();
            let wt = emu.from_host(ws, w).unwrap();
            if conv2d_tc_supported(&g, p) {
                let bt = b.map(|(s, v)| emu.from_host(s, v).unwrap());
                let got = emu.to_host(&emu.conv2d_tc(&xt, &wt, bt.as_ref(), &g, p).unwrap()).unwrap();
                let mag_t = cpu.conv2d(&cpu.from_host(xs, &abs(x)).unwrap(), &cpu.from_host(ws, &abs(w)).unwrap(), b.map(|(s, v)| cpu.from_host(s, &abs(v)).unwrap()).as_ref(), &params).unwrap();
                let r = fixture_ratio(&got, &case.host("y").unwrap().1, &cpu.to_host(&mag_t).unwrap(), p);
                assert!(r <= 1.0, "{} {p} y: {r:.2}× the rounding bound", case.name);
                eprintln!("{} {p} y: {r:.3}× the rounding bound", case.name);
                ran += 1;
            }
            if conv2d_x_backward_tc_supported(&g, p) {
                let gyt = emu.from_host(gys, gy).unwrap();
                let got = emu.to_host(&emu.conv2d_x_backward_tc(&gyt, &wt, &g, p).unwrap()).unwrap();
                let mag_t = cpu.conv2d_x_backward(&cpu.from_host(gys, &abs(gy)).unwrap(), &cpu.from_host(ws, &abs(w)).unwrap(), &Shape::new(xs), &params).unwrap();
                let r = fixture_ratio(&got, &case.host("g_x").unwrap().1, &cpu.to_host(&mag_t).unwrap(), p);
                assert!(r <= 1.0, "{} {p} g_x: {r:.2}× the rounding bound", case.name);
                eprintln!("{} {p} g_x: {r:.3}× the rounding bound", case.name);
                ran += 1;
            }
        }
    }
    // forward: 5 cases (c = 16, 40, 24, 200, 8) × 3 precisions + conv3x3_s1_p1_bias (c = 4) in
    // tf32; ∂x: conv3x3_bands (o = 8) × 3, and in tf32 big_conv3x3_m100 (o = 100), conv1x1_s2 and
    // conv7x7_s2_p3 (o = 4)
    assert_eq!(ran, 22, "fixture runs that reached the tensor cores");
}

/// The weight gradient (`conv2d_w_backward_tc`: ∂y and x's transposed im2col as k-contiguous rows
/// over output pixels, padded to whole chunks) on every dense fixture case of
/// tests/fixtures/weight_grads.safetensors (PyTorch float64 autograd), in each precision, within the
/// operand-rounding bound; grouped and depthwise cases take the f32 kernel and must equal it.
/// Catches: a tap ↔ row or pixel ↔ column index swapped in the im2col rows, padding columns not
/// zero (K = n·ho·wo is rarely a multiple of 8 here), the images of a batch not all summed, top
/// and left padding swapped; the tight check on the rounding CPU under every schedule is
/// tests/backends_agree.rs (op-table cases with a second tile, split-K and a K tail).
#[test]
fn conv2d_w_backward_tc_matches_the_float64_fixtures_within_the_rounding_bound() {
    use ran::backend::cuda::tensor_core::conv2d_w_backward_tc_supported;
    let emu = EmulatedCuda::emulated();
    let cpu = Cpu;
    let (mut on_tc, mut fallback) = (0, 0);
    for case in fixture_cases_for("conv2d_w_backward") {
        let pad = case.usizes("pad").unwrap();
        let s = case.usize("stride").unwrap();
        let params = Conv2dParams { stride: (s, s), padding: Padding2d::lrtb(pad[0], pad[1], pad[2], pad[3]), groups: case.usize("groups").unwrap() };
        let (xs, x) = case.host("x").unwrap();
        let (ws, _) = case.host("w").unwrap();
        let (gys, gy) = case.host("gy").unwrap();
        let g = ran::ops::conv::conv2d_w_backward(&Shape::new(gys), &Shape::new(xs), &Shape::new(ws), &params).unwrap();
        let want = case.host("g_w").unwrap().1.to_vec();
        for p in LOW {
            let got = emu.to_host(&emu.conv2d_w_backward_tc(&emu.from_host(gys, gy).unwrap(), &emu.from_host(xs, x).unwrap(), &g, p).unwrap()).unwrap();
            if conv2d_w_backward_tc_supported(&g, p) {
                let mag = cpu.conv2d_w_backward(&cpu.from_host(gys, &abs(gy)).unwrap(), &cpu.from_host(xs, &abs(x)).unwrap(), &Shape::new(ws), &params, false).unwrap().0;
                let r = fixture_ratio(&got, &want, &cpu.to_host(&mag).unwrap(), p);
                assert!(r <= 1.0, "{} {p} g_w: {r:.2}× the rounding bound", case.name);
                eprintln!("{} {p} g_w: {r:.3}× the rounding bound", case.name);
                on_tc += 1;
            } else {
                let f32_gw = cpu.conv2d_w_backward(&cpu.from_host(gys, gy).unwrap(), &cpu.from_host(xs, x).unwrap(), &Shape::new(ws), &params, false).unwrap().0;
                let r = tight_ratio(&got, &cpu.to_host(&f32_gw).unwrap(), g.n() * g.ho() * g.wo());
                assert!(r <= 1.0, "{} {p}: the f32 fallback differs from the CPU's f32 ∂w ({r:.2}×)", case.name);
                fallback += 1;
            }
        }
    }
    eprintln!("conv2d_w_backward fixtures: {on_tc} on the tensor cores, {fallback} on the f32 kernel");
    assert!(on_tc >= 3 * 5 && fallback >= 3, "fixture runs: {on_tc} on the tensor cores, {fallback} fallbacks");
}
