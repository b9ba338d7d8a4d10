//! The bf16 tensor-core linear (kernels/linear_tc.cu, `CudaBackend::linear_tc_bf16`, not the
//! default path) on the emulator, under every thread schedule and the race detector, against an
//! f64 product of the operands rounded to bf16 first (the `half` crate's rounding, independent of
//! the kernels'), with the tolerance exact-per-mma accumulation implies (docs/emulator.md,
//! "Tensor cores"): |got − ref| ≤ 2·(K/16 + 1)·2⁻²³·Σ|x·w| + 2⁻²³·|ref|.
#![allow(unexpected_cfgs)] // `emu_instrumented` is set by build.rs when kernels are instrumented

use ran::backend::cuda::emu::{set_race_check, set_schedule, Schedule};
use ran::backend::cuda::tensor_core::linear_tc_bf16_supported;
use ran::backend::cuda::EmulatedCuda;
use ran::backend::Backend;
use ran::ops::conv::LinearGeom;
use std::sync::Mutex;

static SCHED: Mutex<()> = Mutex::new(());

fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 * 2.0 - 1.0
        })
        .collect()
}

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
    let cases = [(70, 96, 72, true), (64, 32, 64, false), (5, 40, 130, true), (130, 64, 9, true)];
    let mut scheds: Vec<(Schedule, bool)> = Schedule::all(3).into_iter().map(|s| (s, false)).collect();
    if cfg!(emu_instrumented) {
        scheds.push((Schedule::Random(4), true));
        scheds.push((Schedule::Preempt(5), true));
    }
    for (ci, &(rows, fin, fout, with_bias)) in cases.iter().enumerate() {
        let g = LinearGeom { rows, fin, fout };
        assert!(linear_tc_bf16_supported(&g), "{g:?}");
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
    assert!(!linear_tc_bf16_supported(&g));
    let (x, w, bias) = (uniform(1, 33 * 30), uniform(2, 20 * 30), uniform(3, 20));
    let got = run(&emu, &x, &w, Some(&bias), &g);
    let (f32_ref, mag) = reference(&x, &w, Some(&bias), &g, false);
    let worst = got.iter().zip(&f32_ref).zip(&mag).map(|((&a, &r), &m)| (a as f64 - r).abs() / (1e-6 * m + 1e-7)).fold(0.0, f64::max);
    assert!(worst <= 1.0, "fallback differs from the f32 product: {worst:.2}× 1e-6·Σ|xw|");
    let (bf_ref, _) = reference(&x, &w, Some(&bias), &g, true);
    assert!(worst_ratio(&got, &bf_ref, &mag, g.fin) > 4.0, "the fallback looks bf16-rounded");
}
