//! The tensor-core linear (kernels/linear_tc.cu on tc_gemm.cuh; `CudaBackend::linear_tc`,
//! `linear_x_backward_tc`, and the former bf16 entry `linear_tc_bf16`) on the emulator, under
//! every thread schedule and the race detector. The bf16 forward is checked against an f64
//! product of the operands rounded to bf16 first (the `half` crate's rounding, independent of the
//! kernels'), with the tolerance exact-per-mma accumulation implies (docs/emulator.md, "Tensor
//! cores"): |got − ref| ≤ 2·(K/16 + 1)·2⁻²³·Σ|x·w| + 2⁻²³·|ref|; every precision, forward and ∂x,
//! against the CPU backend on operands rounded the same way (tests/common/tc.rs: tight).
#![allow(unexpected_cfgs)] // `emu_instrumented` is set by build.rs when kernels are instrumented

mod common;
use common::tc::{fixture_cases_for, fixture_ratio, rounded, schedules, tight_ratio, uniform, LOW};
use ran::ops::precision::Precision;
use ran::Cpu;

use ran::backend::cuda::emu::{set_race_check, set_schedule, Schedule};
use ran::backend::cuda::tensor_core::{linear_tc_supported, linear_x_backward_tc_supported, tc_plan};
use ran::backend::cuda::EmulatedCuda;
use ran::backend::Backend;
use ran::ops::conv::LinearGeom;
use std::sync::Mutex;

static SCHED: Mutex<()> = Mutex::new(());

/// (reference, Σ|x·w|) per output; `round` rounds the operands to bf16 first.
fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &LinearGeom, round: bool) -> (Vec<f64>, Vec<f64>) {
    let r = |v: f32| if round { half::bf16::from_f32(v).to_f32() as f64 } else { v as f64 };
    let mut y = vec![0.0; g.rows * g.fout];
    let mut mag = vec![0.0; g.rows * g.fout];
    for m in 0..g.rows {
        for n in 0..g.fout {
            let (mut s, mut a) = (bias.map_or(0.0, |b| b[n] as f64), 0.0);
            for k in 0..g.fin {
                let p = r(x[m * g.fin + k]) * r(w[n * g.fin + k]);
                s += p;
                a += p.abs();
            }
            y[m * g.fout + n] = s;
            mag[m * g.fout + n] = a;
        }
    }
    (y, mag)
}

/// The largest |got − ref| / tolerance (≤ 1 passes).
fn worst_ratio(got: &[f32], want: &[f64], mag: &[f64], fin: usize) -> f64 {
    let u = 2f64.powi(-23);
    got.iter().zip(want).zip(mag).map(|((&g, &r), &a)| (g as f64 - r).abs() / (2.0 * (fin / 16 + 1) as f64 * u * a + u * r.abs())).fold(0.0, f64::max)
}

fn run(emu: &EmulatedCuda, x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &LinearGeom) -> Vec<f32> {
    let xt = emu.from_host(&[g.rows, g.fin], x).unwrap();
    let wt = emu.from_host(&[g.fout, g.fin], w).unwrap();
    let bt = bias.map(|b| emu.from_host(&[g.fout], b).unwrap());
    let y = emu.linear_tc_bf16(&xt, &wt, bt.as_ref()).unwrap_or_else(|e| panic!("{g:?}: {e}"));
    emu.to_host(&y).unwrap()
}

/// Catches: a wrong fragment, tile offset or pipeline stage (O(1) errors), rows/columns past M or
/// N written or read unmasked (bounds checker), K not a multiple of the 32-wide step mishandled,
/// operands not rounded to bf16 (the tolerance is 2⁹ times tighter than that error; checked
/// below), a missing barrier between stages (race detector, Preempt), the bias dropped or added
/// twice.
#[test]
fn linear_tc_bf16_matches_the_bf16_rounded_reference_under_every_schedule() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let emu = EmulatedCuda::emulated();
    // (rows, fin, fout, bias): edges in M, N and K; 130 × 64 × 9 and 200 × 40 × 136 on the large
    // tile (two tiles in M, two in N for the latter); 16 × 512 × 24 split-K into 4
    let cases = [(70, 96, 72, true), (64, 32, 64, false), (5, 40, 130, true), (130, 64, 9, true), (200, 40, 136, true), (16, 512, 24, true)];
    let scheds = schedules();
    assert!(tc_plan(200, 136, 40, Precision::Bf16).large && tc_plan(16, 24, 512, Precision::Bf16).splits == 4);
    for (ci, &(rows, fin, fout, with_bias)) in cases.iter().enumerate() {
        let g = LinearGeom { rows, fin, fout };
        assert!(linear_tc_supported(&g, Precision::Bf16), "{g:?}");
        let x = uniform(10 + ci as u64, rows * fin);
        let w = uniform(20 + ci as u64, fout * fin);
        let bias = uniform(30 + ci as u64, fout);
        let bias = with_bias.then_some(&bias[..]);
        let (want, mag) = reference(&x, &w, bias, &g, true);
        let mut worst = 0.0f64;
        for &(sched, race) in &scheds {
            set_schedule(sched);
            let was = set_race_check(race);
            let got = run(&emu, &x, &w, bias, &g);
            set_race_check(was);
            let r = worst_ratio(&got, &want, &mag, fin);
            assert!(r <= 1.0, "{g:?} {sched:?} race={race}: error {r:.2}× the tolerance");
            worst = worst.max(r);
        }
        eprintln!("{g:?}: worst error {worst:.3}× the tolerance");
        // the tolerance is tight: a kernel that did not round its operands would fail it
        let (unrounded, _) = reference(&x, &w, bias, &g, false);
        let as_f32: Vec<f32> = unrounded.iter().map(|&v| v as f32).collect();
        assert!(worst_ratio(&as_f32, &want, &mag, fin) > 4.0, "{g:?}: the tolerance cannot tell bf16 from f32 operands");
    }
    set_schedule(Schedule::Forward);
}

/// Catches: a shape the kernel cannot take (fin not a multiple of 8: its 16-byte rows would be
/// misaligned) computed on the tensor cores anyway, or refused, instead of falling back to the f32
/// kernel; the fallback's result is the f32 product, tighter than bf16 could give.
#[test]
fn linear_tc_bf16_falls_back_to_f32_for_shapes_it_cannot_take() {
    let emu = EmulatedCuda::emulated();
    let g = LinearGeom { rows: 33, fin: 30, fout: 20 };
    assert!(!linear_tc_supported(&g, Precision::Bf16));
    let (x, w, bias) = (uniform(1, 33 * 30), uniform(2, 20 * 30), uniform(3, 20));
    let got = run(&emu, &x, &w, Some(&bias), &g);
    let (f32_ref, mag) = reference(&x, &w, Some(&bias), &g, false);
    let worst = got.iter().zip(&f32_ref).zip(&mag).map(|((&a, &r), &m)| (a as f64 - r).abs() / (1e-6 * m + 1e-7)).fold(0.0, f64::max);
    assert!(worst <= 1.0, "fallback differs from the f32 product: {worst:.2}× 1e-6·Σ|xw|");
    let (bf_ref, _) = reference(&x, &w, Some(&bias), &g, true);
    assert!(worst_ratio(&got, &bf_ref, &mag, g.fin) > 4.0, "the fallback looks bf16-rounded");
}

/// The CPU backend's f32 linear (or ∂x) on the given operands.
fn cpu_linear(g: &LinearGeom, forward: bool, a: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let cpu = Cpu;
    let wt = cpu.from_host(&[g.fout, g.fin], w).unwrap();
    let y = if forward {
        let bt = bias.map(|b| cpu.from_host(&[g.fout], b).unwrap());
        cpu.linear(&cpu.from_host(&[g.rows, g.fin], a).unwrap(), &wt, bt.as_ref()).unwrap()
    } else {
        cpu.linear_x_backward(&cpu.from_host(&[g.rows, g.fout], a).unwrap(), &wt).unwrap()
    };
    cpu.to_host(&y).unwrap()
}

fn emu_linear(emu: &EmulatedCuda, g: &LinearGeom, forward: bool, a: &[f32], w: &[f32], bias: Option<&[f32]>, p: Precision) -> Vec<f32> {
    let wt = emu.from_host(&[g.fout, g.fin], w).unwrap();
    let y = if forward {
        let bt = bias.map(|b| emu.from_host(&[g.fout], b).unwrap());
        emu.linear_tc(&emu.from_host(&[g.rows, g.fin], a).unwrap(), &wt, bt.as_ref(), g, p)
    } else {
        emu.linear_x_backward_tc(&emu.from_host(&[g.rows, g.fout], a).unwrap(), &wt, g, p)
    };
    emu.to_host(&y.unwrap_or_else(|e| panic!("{g:?} {p}: {e}"))).unwrap()
}

/// Every precision, forward and ∂x, against the CPU backend on operands rounded the same way
/// (tight: f32 summation order only). Catches: f16 or tf32 wired to the bf16 mma or conversion
/// (the operands would round differently), ∂x reading w untransposed (wᵀ is its B operand), the
/// bias per row instead of per column, split-K's partials summed wrongly, the large tile's
/// second block row / column mis-addressed.
#[test]
fn linear_tc_and_its_x_backward_match_the_rounded_cpu_reference_in_every_precision() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let emu = EmulatedCuda::emulated();
    // (rows, fin, fout): both depths (fin, fout) multiples of 8; a large-tile case in each
    // direction (M = rows and N = fout / fin above 64), a split-K in each, a small edge case
    // (5, 72, 40) has x and ∂y scaled by 2⁻¹⁶, among f16's subnormals, where f16 and tf32 round
    // differently (in [−1, 1) they agree): a precision wired to the other's kernel shows there
    let cases = [(200, 40, 136), (16, 512, 24), (16, 24, 512), (5, 72, 40), (130, 136, 48)];
    for (ci, &(rows, fin, fout)) in cases.iter().enumerate() {
        let g = LinearGeom { rows, fin, fout };
        let scale = if ci == 3 { 1.0 / 65536.0 } else { 1.0 };
        let x: Vec<f32> = uniform(40 + ci as u64, rows * fin).into_iter().map(|v| v * scale).collect();
        let w = uniform(50 + ci as u64, fout * fin);
        let gy: Vec<f32> = uniform(60 + ci as u64, rows * fout).into_iter().map(|v| v * scale).collect();
        let bias = uniform(70 + ci as u64, fout);
        for p in LOW {
            for forward in [true, false] {
                assert!(if forward { linear_tc_supported(&g, p) } else { linear_x_backward_tc_supported(&g, p) });
                let (a, depth) = if forward { (&x, fin) } else { (&gy, fout) };
                let b = (forward && scale == 1.0).then_some(&bias[..]); // a bias of ~1 would hide 2⁻¹⁶-scale products
                let want = cpu_linear(&g, forward, &rounded(p, a), &rounded(p, &w), b);
                if scale != 1.0 && p == Precision::F16 {
                    let tf = cpu_linear(&g, forward, &rounded(Precision::Tf32, a), &rounded(Precision::Tf32, &w), b);
                    assert!(tight_ratio(&tf, &want, depth) > 4.0, "{g:?}: f16 and tf32 references do not differ");
                }
                let mut worst = 0.0f64;
                for &(sched, race) in &schedules() {
                    if race && p != Precision::Bf16 {
                        continue; // the barriers are one code for every precision
                    }
                    set_schedule(sched);
                    let was = set_race_check(race);
                    let got = emu_linear(&emu, &g, forward, a, &w, b, p);
                    set_race_check(was);
                    let r = tight_ratio(&got, &want, depth);
                    assert!(r <= 1.0, "{g:?} {p} forward={forward} {sched:?} race={race}: {r:.2}× the tight tolerance");
                    worst = worst.max(r);
                }
                let r32 = tight_ratio(&cpu_linear(&g, forward, a, &w, b), &want, depth);
                assert!(r32 > 2.0, "{g:?} {p} forward={forward}: the tolerance cannot tell {p} from f32 ({r32:.2}×)");
                eprintln!("{g:?} {p} forward={forward}: worst {worst:.3}× tight (f32 operands {r32:.1}×)");
            }
        }
    }
    set_schedule(Schedule::Forward);
}

/// The linear fixtures (PyTorch float64) the tensor cores can take: big_linear's ∂x (fout = 100)
/// in tf32; the others have fin / fout not a multiple of 4 and must fall back (exact f32).
#[test]
fn linear_tc_matches_the_float64_fixtures_within_the_rounding_bound() {
    let emu = EmulatedCuda::emulated();
    let mut on_tc = 0;
    for case in fixture_cases_for("linear") {
        let (xs, x) = case.host("x").unwrap();
        let (ws, w) = case.host("w").unwrap();
        let (_, gy) = case.host("gy").unwrap();
        let g = LinearGeom { rows: xs[0], fin: xs[1], fout: ws[0] };
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        for p in LOW {
            let b = case.tensors.get("b").map(|(_, v)| &v[..]);
            let got = emu_linear(&emu, &g, true, x, w, b, p);
            let mag = cpu_linear(&g, true, &abs(x), &abs(w), b.map(abs).as_deref());
            let r = fixture_ratio(&got, &case.host("y").unwrap().1, &mag, p);
            assert!(r <= 1.0, "{} {p} y: {r:.2}× the rounding bound", case.name);
            let got = emu_linear(&emu, &g, false, gy, w, None, p);
            let mag = cpu_linear(&g, false, &abs(gy), &abs(w), None);
            let r = fixture_ratio(&got, &case.host("g_x").unwrap().1, &mag, p);
            assert!(r <= 1.0, "{} {p} g_x: {r:.2}× the rounding bound", case.name);
            on_tc += linear_tc_supported(&g, p) as usize + linear_x_backward_tc_supported(&g, p) as usize;
        }
    }
    assert_eq!(on_tc, 1, "fixture runs on the tensor cores (big_linear ∂x in tf32)");
}
