//! Helpers of the tensor-core tests (tests/{conv,linear}_tensor_core.rs): random operands, the
//! two tolerances, and the emulator schedules each case runs under.
//!
//! Tight (against the CPU backend's f32 op on operands rounded by `Precision::round_slice`): the
//! kernel and the reference multiply the same numbers and differ only in how f32 sums them
//! (the emulator's mma adds 16 or 8 exact products per rounding; the CPU adds one at a time), a
//! random walk of K roundings of partial sums no larger than max|ref|:
//!   |got − ref| ≤ TIGHT · 2⁻²³ · √K · max|ref|,  TIGHT = 2  (≈ 2.4e-7 · √K · max|ref|).
//! Observed on the emulator (2026-12-01, every case of both files): at most 0.22 of it.
//! Rounding the operands to bf16 / f16 / tf32 moves a result by ~2⁻⁹ / 2⁻¹² · √K · rms(x·w),
//! 10–1000× that, so a kernel that skipped or misrounded an operand fails it (each test checks
//! that the unrounded f32 result does, by more than 2×; observed 12–3000×).
//!
//! Fixture (against PyTorch's float64 result): the rounding of both operands moves each product
//! by at most (2u + u²)|x·w| with u = 2^-(mantissa bits + 1) of the precision, so
//!   |got − ref| ≤ ((2u + u²) + 2⁻²⁰) · Σ|x·w| (+ |b|), a bound, not an estimate; the 2⁻²⁰ covers
//! f32 summation and the fixture's f32 storage.
#![allow(dead_code)]

use ran::backend::cuda::emu::{instrumented, Schedule};
use ran::ops::precision::Precision;

pub const TIGHT: f64 = 2.0;
pub const LOW: [Precision; 3] = [Precision::Bf16, Precision::F16, Precision::Tf32];

/// The first element where `a` and `b` differ in any bit: (index, a's value, b's value).
pub fn first_difference(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    a.iter().zip(b).enumerate().find(|(_, (x, y))| x.to_bits() != y.to_bits()).map(|(i, (x, y))| (i, *x, *y))
}

/// Uniform in [−1, 1).
pub fn uniform(seed: u64, n: usize) -> Vec<f32> {
    // the project's seeded generator (optable::sizes), stretched to [−1, 1)
    ran::optable::sizes::uniform(n, seed).into_iter().map(|v| 2.0 * v).collect()
}

pub fn rounded(p: Precision, v: &[f32]) -> Vec<f32> {
    let mut r = v.to_vec();
    p.round_slice(&mut r);
    r
}

pub fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// max_i |got − want| / (TIGHT · 2⁻²³ · √K · max|want|): ≤ 1 passes.
pub fn tight_ratio(got: &[f32], want: &[f32], k: usize) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
    let tol = TIGHT * 2f64.powi(-23) * (k as f64).sqrt() * scale;
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).abs() / tol).fold(0.0, |m, r| if r.is_nan() { f64::INFINITY } else { m.max(r) })
}

/// max_i |got − want| / (((2u + u²) + 2⁻²⁰) · mag_i): ≤ 1 passes; mag = Σ|x·w| (+|b|) per output.
pub fn fixture_ratio(got: &[f32], want: &[f32], mag: &[f32], p: Precision) -> f64 {
    assert_eq!(got.len(), want.len());
    let u = 2f64.powi(-(p.mantissa_bits() as i32 + 1));
    let c = 2.0 * u + u * u + 2f64.powi(-20);
    got.iter().zip(want).zip(mag).map(|((&g, &w), &m)| (g as f64 - w as f64).abs() / (c * m as f64 + 1e-30)).fold(0.0, |m, r| if r.is_nan() { f64::INFINITY } else { m.max(r) })
}

/// The schedules a case runs under: forward, reverse and random; with the race detector compiled
/// in, also random and preempting with the detector on (`race` = true).
pub fn schedules() -> Vec<(Schedule, bool)> {
    let mut s: Vec<(Schedule, bool)> = Schedule::all(3).into_iter().map(|s| (s, false)).collect();
    if instrumented() {
        s.push((Schedule::Random(4), true));
        s.push((Schedule::Preempt(5), true));
    }
    s
}

/// The fixture cases of one op (tests/fixtures, PyTorch float64).
pub fn fixture_cases_for(op: &str) -> Vec<ran::optable::OpCase> {
    super::fixture_cases().into_iter().filter(|c| c.op() == op).collect()
}
