//! Flash attention on the emulator (kernels/attention_flash.cu, the f32 default of
//! `attention_legacy`, and kernels/attention_flash_tc.cu, `CudaBackend::attention_legacy_tc`)
//! under the forward, reverse and random thread schedules (and the race detector under random and
//! `Preempt` where the kernels are instrumented), against f64 references written here.
#![allow(unexpected_cfgs)] // `emu_instrumented` is set by build.rs when kernels are instrumented

use ran::backend::cuda::attention_tc::attention_tc_supported;
use ran::backend::cuda::emu::{set_race_check, set_schedule, Schedule};
use ran::backend::cuda::EmulatedCuda;
use ran::backend::Backend;
use ran::ops::attention::AttentionGeom;
use ran::ops::precision::Precision;
use std::sync::Mutex;

static SCHED: Mutex<()> = Mutex::new(());

/// Uniform in [−scale, scale): the project's seeded generator (optable::sizes), stretched.
fn uniform(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    ran::optable::sizes::uniform(n, seed).into_iter().map(|v| 2.0 * v * scale).collect()
}

fn schedules() -> Vec<(Schedule, bool)> {
    let mut v: Vec<(Schedule, bool)> = Schedule::all(3).into_iter().map(|s| (s, false)).collect();
    if cfg!(emu_instrumented) {
        v.push((Schedule::Random(4), true));
        v.push((Schedule::Preempt(5), true));
    }
    v
}

/// Per head: q, k, v [d][T] slices of qkv [N, 3·H·d, T].
fn head(qkv: &[f32], bh: usize, d: usize, t: usize) -> (&[f32], &[f32], &[f32]) {
    let blk = &qkv[bh * 3 * d * t..][..3 * d * t];
    (&blk[..d * t], &blk[d * t..2 * d * t], &blk[2 * d * t..])
}

/// Scores s[j] = Σ_c q[c,i]·k[c,j] / √d in f64, and a bound on their f32 rounding in the
/// tensor-core kernel: the mma rounds its f32 accumulator once per k16 step (exact products and
/// sums inside a step, as the emulator computes them), then the 1/√d scaling rounds once.
fn scores(q: &[f32], k: &[f32], d: usize, t: usize, i: usize) -> (Vec<f64>, Vec<f64>) {
    let s2 = 1.0 / (d as f64).sqrt();
    let u = 2f64.powi(-24);
    (0..t)
        .map(|j| {
            let (mut s, mut err) = (0.0, 0.0);
            for c in 0..d {
                s += q[c * t + i] as f64 * k[c * t + j] as f64;
                if c % 16 == 15 || c == d - 1 {
                    err += u * s.abs();
                }
            }
            (s * s2, (err * s2 + u * (s * s2).abs()) * 1.01)
        })
        .unzip()
}

/// softmax(s)·vᵀ in f64, [N·H, d, T].
fn reference_f32(qkv: &[f32], g: &AttentionGeom) -> Vec<f64> {
    let (d, t) = (g.d, g.t);
    let mut out = vec![0.0; g.n * g.heads * d * t];
    for bh in 0..g.n * g.heads {
        let (q, k, v) = head(qkv, bh, d, t);
        for i in 0..t {
            let (s, _) = scores(q, k, d, t, i);
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
            let l: f64 = w.iter().sum();
            for c in 0..d {
                out[(bh * d + c) * t + i] = (0..t).map(|j| w[j] * v[c * t + j] as f64).sum::<f64>() / l;
            }
        }
    }
    out
}

fn run_f32(emu: &EmulatedCuda, qkv: &[f32], g: &AttentionGeom) -> Vec<f32> {
    let x = emu.from_host(&[g.n, 3 * g.heads * g.d, g.t], qkv).unwrap();
    let y = emu.attention_legacy(&x, g.heads).unwrap_or_else(|e| panic!("{g:?}: {e}"));
    emu.to_host(&y).unwrap()
}

/// The op table's attention tolerance (src/optable/table.rs): atol 6e-6, rtol 3e-6, both grown by
/// √(T/256) beyond 256 keys, atol by the output's scale, `ts` for logits near 100.
fn worst_f32(got: &[f32], want: &[f64], t: usize, ts: f64) -> f64 {
    let grow = (t as f64 / 256.0).sqrt().max(1.0) * ts;
    let scale = want.iter().fold(1.0f64, |a, &v| a.max(v.abs()));
    got.iter().zip(want).map(|(&a, &r)| (a as f64 - r).abs() / (6e-6 * grow * scale + 3e-6 * grow * r.abs())).fold(0.0, f64::max)
}

/// Catches: a query tile or key tile past the first mishandled (T = 100: 2 query tiles, the second
/// partial, and 4 key tiles, the last with 4 keys), keys past T let into the softmax, T = 1, the
/// (batch, head) slice indexed wrongly (N = 2, H = 3), head dims that are not a multiple of 8 (40)
/// or small (8), the 128 variant, T not a multiple of 4 (the plain-load path), a missing or wrong
/// online rescale (logits near 100: the running max grows from tile to tile, and exp(s − m) with a
/// stale m overflows or drops the earlier tiles), a missing barrier between the stages (race
/// detector, Preempt).
#[test]
fn flash_f32_matches_the_f64_softmax_under_every_schedule() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let emu = EmulatedCuda::emulated();
    // (n, heads, d, t, input scale, tolerance scale)
    let cases = [(2, 3, 64, 100, 1.0, 1.0), (1, 2, 8, 33, 1.0, 1.0), (1, 1, 40, 1, 1.0, 1.0), (1, 1, 16, 96, 10.0, 4.0), (1, 1, 128, 70, 0.5, 1.0)];
    for (ci, &(n, heads, d, t, scale, ts)) in cases.iter().enumerate() {
        let g = AttentionGeom { n, heads, d, t };
        let qkv = uniform(40 + ci as u64, n * 3 * heads * d * t, scale);
        let want = reference_f32(&qkv, &g);
        if scale > 5.0 {
            let (q, k, _) = head(&qkv, 0, d, t);
            let top = (0..t).map(|i| scores(q, k, d, t, i).0.into_iter().fold(f64::NEG_INFINITY, f64::max)).fold(0.0, f64::max);
            assert!(top > 60.0, "the large-logit case should reach logits near 100, got {top}");
        }
        let mut worst = 0.0f64;
        for (sched, race) in schedules() {
            set_schedule(sched);
            let was = set_race_check(race);
            let got = run_f32(&emu, &qkv, &g);
            set_race_check(was);
            let r = worst_f32(&got, &want, t, ts);
            assert!(r <= 1.0, "{g:?} {sched:?} race={race}: error {r:.2}× the tolerance");
            worst = worst.max(r);
        }
        eprintln!("f32 {g:?}: worst error {worst:.3}× the tolerance");
    }
    set_schedule(Schedule::Forward);
}

/// g_qkv of the attention for gy, in f64: gV = Pᵀ·gA, gP = gAᵀ·V, gZ = P ∘ (gP − Σ_s gP·P)/√d,
/// gQ = gZ·Kᵀ, gK = gZᵀ·Qᵀ.
fn reference_grad(qkv: &[f32], gy: &[f32], g: &AttentionGeom) -> Vec<f64> {
    let (d, t) = (g.d, g.t);
    let s2 = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; qkv.len()];
    for bh in 0..g.n * g.heads {
        let (q, k, v) = head(qkv, bh, d, t);
        let ga = &gy[bh * d * t..][..d * t];
        let o = &mut out[bh * 3 * d * t..][..3 * d * t];
        for i in 0..t {
            let (s, _) = scores(q, k, d, t, i);
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
            let l: f64 = w.iter().sum();
            let p: Vec<f64> = w.iter().map(|x| x / l).collect();
            let gp: Vec<f64> = (0..t).map(|j| (0..d).map(|c| ga[c * t + i] as f64 * v[c * t + j] as f64).sum()).collect();
            let dot: f64 = (0..t).map(|j| gp[j] * p[j]).sum();
            for j in 0..t {
                let gz = p[j] * (gp[j] - dot) * s2;
                for c in 0..d {
                    o[c * t + i] += gz * k[c * t + j] as f64;
                    o[(d + c) * t + j] += gz * q[c * t + i] as f64;
                    o[(2 * d + c) * t + j] += p[j] * ga[c * t + i] as f64;
                }
            }
        }
    }
    out
}

/// Catches, in the three backward kernels (stats, gK/gV by key tile, gQ by query tile): a wrong
/// lse or δ (every gradient moves), the second and a partial tile of keys (32-wide) and queries
/// (64-wide) at T = 100, T = 1, keys or queries past T let in (NaN from unloaded stages, or extra
/// terms), the (batch, head) slice and the q/k/v thirds of g_qkv mixed up (N = 2, H = 3), d = 40
/// and 8 (partial channel groups), T not a multiple of 4 (plain loads), logits near 100 (P from lse
/// must be exp(s − lse) exactly where the softmax peaks), missing barriers (race detector, Preempt).
#[test]
fn flash_f32_input_gradient_matches_the_f64_gradient_under_every_schedule() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let emu = EmulatedCuda::emulated();
    let cases = [(2, 3, 64, 100, 1.0, 1.0), (1, 2, 8, 33, 1.0, 1.0), (1, 1, 40, 1, 1.0, 1.0), (1, 1, 16, 96, 10.0, 4.0), (1, 1, 128, 70, 0.5, 1.0)];
    for (ci, &(n, heads, d, t, scale, ts)) in cases.iter().enumerate() {
        let g = AttentionGeom { n, heads, d, t };
        let qkv = uniform(90 + ci as u64, n * 3 * heads * d * t, scale);
        let gy = uniform(110 + ci as u64, n * heads * d * t, 1.0);
        let want = reference_grad(&qkv, &gy, &g);
        let mut worst = 0.0f64;
        for (sched, race) in schedules() {
            set_schedule(sched);
            let was = set_race_check(race);
            let x = emu.from_host(&[n, 3 * heads * d, t], &qkv).unwrap();
            let gyt = emu.from_host(&[n, heads * d, t], &gy).unwrap();
            let gx = emu.attention_legacy_x_backward(&gyt, &x, heads).unwrap_or_else(|e| panic!("{g:?}: {e}"));
            let got = emu.to_host(&gx).unwrap();
            set_race_check(was);
            let r = worst_f32(&got, &want, t, ts);
            assert!(r <= 1.0, "{g:?} {sched:?} race={race}: gradient error {r:.2}× the tolerance");
            worst = worst.max(r);
        }
        eprintln!("f32 gradient {g:?}: worst error {worst:.3}× the tolerance");
    }
    set_schedule(Schedule::Forward);
}

/// The tensor-core kernel's numerics, in f64: q, k, v rounded to `p`; per query, key tiles of 64 in
/// order, the running max m_t over tiles 0..t, P = exp(s − m_t) rounded to `p` (as an f32 first,
/// as the kernel's expf gives), weights P·exp(m_t − m_final), normalised by their sum (the kernel's
/// l sums the rounded P). Returns (out, tolerance) per element: f32 accumulation of the mma and of
/// the rescales; each weight moved by the f32 rounding η of its exponent s − m, times |v − out|;
/// and for each P within η of a `p` rounding boundary, the step between its two possible roundings
/// times |v − out|.
fn reference_tc(qkv: &[f32], g: &AttentionGeom, p: Precision) -> (Vec<f64>, Vec<f64>) {
    let (d, t) = (g.d, g.t);
    let mut r = qkv.to_vec();
    p.round_slice(&mut r);
    let u = 2f64.powi(-24);
    let mut out = vec![0.0; g.n * g.heads * d * t];
    let mut tol = vec![0.0; out.len()];
    for bh in 0..g.n * g.heads {
        let (q, k, v) = head(&r, bh, d, t);
        for i in 0..t {
            let (s, mag) = scores(q, k, d, t, i);
            let (mut w, mut amb, mut etas) = (vec![0.0; t], vec![0.0; t], vec![0.0; t]);
            let mut m = f64::NEG_INFINITY;
            let mut mt = vec![0.0; t];
            for j0 in (0..t).step_by(64) {
                let j1 = (j0 + 64).min(t);
                m = s[j0..j1].iter().cloned().fold(m, f64::max);
                mt[j0..j1].iter_mut().for_each(|x| *x = m);
            }
            // the kernel's maxima are maxima of its own scores: off by at most the largest score error
            let err_m = mag.iter().cloned().fold(0.0, f64::max);
            let nk = t.div_ceil(64) as f64;
            for j in 0..t {
                let x = s[j] - mt[j];
                // error of the exponent s − m_final of weight j in f32: the two scores', the
                // subtraction, expf (≤ 2 ulp), and per rescale exp(m_old − m_new) its subtraction and expf
                let eta = mag[j] + err_m + u * (x.abs() + (mt[j] - m).abs()) + 4.0 * u * (nk + 1.0);
                let pr = p.round(x.exp() as f32) as f64;
                let (lo, hi) = (p.round((x - eta).exp() as f32) as f64, p.round((x + eta).exp() as f32) as f64);
                let scale = (mt[j] - m).exp();
                w[j] = pr * scale;
                amb[j] = (hi - lo) * scale;
                etas[j] = eta;
            }
            let l: f64 = w.iter().sum();
            for c in 0..d {
                let vc = |j: usize| v[c * t + j] as f64;
                let o = (0..t).map(|j| w[j] * vc(j)).sum::<f64>() / l;
                let spread = (0..t).map(|j| w[j] * (vc(j).abs() + o.abs())).sum::<f64>() / l;
                // a weight's exponent s − m_final is off by ≤ η in f32, which moves it by ≤ η relative
                let moved = (0..t).map(|j| (amb[j] + w[j] * etas[j]) * (vc(j) - o).abs()).sum::<f64>() / l;
                out[(bh * d + c) * t + i] = o;
                tol[(bh * d + c) * t + i] = 4.0 * (t as f64 / 16.0 + nk + 2.0) * u * spread + moved + 1e-30;
            }
        }
    }
    (out, tol)
}

fn run_tc(emu: &EmulatedCuda, qkv: &[f32], g: &AttentionGeom, p: Precision) -> Vec<f32> {
    let x = emu.from_host(&[g.n, 3 * g.heads * g.d, g.t], qkv).unwrap();
    let y = emu.attention_legacy_tc(&x, g, p).unwrap_or_else(|e| panic!("{g:?} {p}: {e}"));
    emu.to_host(&y).unwrap()
}

fn worst_tc(got: &[f32], want: &[f64], tol: &[f64]) -> f64 {
    got.iter().zip(want).zip(tol).map(|((&a, &r), &t)| (a as f64 - r).abs() / t).fold(0.0, f64::max)
}

/// Catches: a wrong ldmatrix address or fragment (Q's .trans, K's .trans, V's plain; O(1) errors),
/// P's C-to-A fragment reuse mixed up, q, k, v or P not rounded, or rounded at another point
/// (checked below: a reference without P's rounding fails the tolerance), the running max or the
/// rescale wrong (logits near 100 in bf16), the second query and key tiles and a partial last one
/// (T = 100, 130), the zero pad of T to a multiple of 8 (T = 1, 130), d = 48 (a d64 variant with a
/// k16 step skipped), the d128 variant, N·H > 1 (the head's slice), a missing barrier (race
/// detector, Preempt).
#[test]
fn flash_tc_matches_the_rounded_reference_under_every_schedule() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let emu = EmulatedCuda::emulated();
    // (n, heads, d, t, scale)
    let cases = [(2, 2, 64, 100, 1.0), (1, 1, 16, 1, 1.0), (1, 2, 48, 130, 1.0), (1, 1, 32, 80, 8.0), (1, 1, 128, 40, 0.7)];
    for p in [Precision::Bf16, Precision::F16] {
        for (ci, &(n, heads, d, t, scale)) in cases.iter().enumerate() {
            let g = AttentionGeom { n, heads, d, t };
            assert!(attention_tc_supported(&g), "{g:?}");
            let qkv = uniform(70 + ci as u64, n * 3 * heads * d * t, scale);
            let (want, tol) = reference_tc(&qkv, &g, p);
            let mut worst = 0.0f64;
            for (sched, race) in schedules() {
                set_schedule(sched);
                let was = set_race_check(race);
                let got = run_tc(&emu, &qkv, &g, p);
                set_race_check(was);
                let r = worst_tc(&got, &want, &tol);
                assert!(r <= 1.0, "{p} {g:?} {sched:?} race={race}: error {r:.2}× the tolerance");
                worst = worst.max(r);
            }
            eprintln!("{p} {g:?}: worst error {worst:.3}× the tolerance");
            if t > 16 {
                // the tolerance is tight: the same numerics without P's rounding fail it
                let unrounded_p = reference_without_p_rounding(&qkv, &g, p);
                let as_f32: Vec<f32> = unrounded_p.iter().map(|&v| v as f32).collect();
                let r = worst_tc(&as_f32, &want, &tol);
                eprintln!("{p} {g:?}: P unrounded would be {r:.1}× the tolerance");
                assert!(r > 4.0, "{p} {g:?}: the tolerance cannot tell whether P is rounded ({r:.2}×)");
            }
        }
    }
    set_schedule(Schedule::Forward);
}

/// softmax of the rounded operands' scores with P kept exact (f64).
fn reference_without_p_rounding(qkv: &[f32], g: &AttentionGeom, p: Precision) -> Vec<f64> {
    let mut r = qkv.to_vec();
    p.round_slice(&mut r);
    reference_f32(&r, g)
}

/// Catches: a shape the tensor-core kernel cannot take (d = 40, not whole k16 steps) or an f32/tf32
/// request computed on it, or refused, instead of the f32 flash kernel; the fallback's result meets
/// the f32 tolerance, which a bf16 result would not.
#[test]
fn flash_tc_falls_back_to_f32_for_f32_and_shapes_it_cannot_take() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    set_schedule(Schedule::Forward);
    let emu = EmulatedCuda::emulated();
    for (g, p) in [
        (AttentionGeom { n: 1, heads: 2, d: 40, t: 50 }, Precision::Bf16),
        (AttentionGeom { n: 1, heads: 1, d: 32, t: 50 }, Precision::F32),
        (AttentionGeom { n: 1, heads: 1, d: 32, t: 50 }, Precision::Tf32),
    ] {
        let qkv = uniform(5, 3 * g.heads * g.d * g.t, 1.0);
        let want = reference_f32(&qkv, &g);
        let got = run_tc(&emu, &qkv, &g, p);
        let r = worst_f32(&got, &want, g.t, 1.0);
        assert!(r <= 1.0, "{p} {g:?}: the fallback is {r:.2}× the f32 tolerance");
    }
    let g = AttentionGeom { n: 1, heads: 1, d: 32, t: 50 };
    let qkv = uniform(5, 3 * g.d * g.t, 1.0);
    let bf = run_tc(&emu, &qkv, &g, Precision::Bf16);
    assert!(worst_f32(&bf, &reference_f32(&qkv, &g), g.t, 1.0) > 4.0, "bf16 looks like f32: the fallback check cannot tell them apart");
}
