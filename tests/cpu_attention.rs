//! The CPU backend's flash-style attention (src/backend/cpu/attention.rs: query blocks of 64, key
//! blocks of 256, online softmax) and its blocked input gradient, against f64 references written
//! here as plain loops over the whole T×T score matrix. The shapes are the ones blocking gets wrong:
//! T = 1, T below one block, T with a tail query block and a tail key block, several key blocks
//! whose row maxima grow from block to block with logits near 100 (a missing max subtraction
//! overflows, a skipped rescale of the running sum or of the output rows is off by e^Δm), and
//! several batch·heads (a second head's offsets).
//! Tolerance |got − ref| ≤ ATOL·√T·max|ref| + rtol·|ref| per case (ATOL scaled by the case's
//! largest value, as gradients cancel to near zero, and by √T, the length of the f32 sums),
//! rtol = RTOL·max(1, |z|max): f32 scores carry rounding ∝ |z|. Observed worst: 1.8e-6·max|ref|
//! at T = 600 (forward), 5.3e-7·max|ref| at T = 200 with logits near 100 (gradient), 4.8e-7·|z|max
//! relative at logits 55–77, so the bounds sit 3–5× above. A skipped rescale or an
//! unsubtracted max is off by O(1), a wrong tail or head offset by the whole value.

use ran::backend::cpu::attention::{attention_legacy, attention_legacy_x_backward};

const RTOL: f64 = 2e-6;
const ATOL: f64 = 2e-7;

/// max over heads of |Σ_c q[c,i]·k[c,j]| / √d.
fn max_logit(qkv: &[f32], bh_count: usize, d: usize, t: usize) -> f64 {
    let mut m = 0.0f64;
    for bh in 0..bh_count {
        let [q, k, _] = head(qkv, bh, d, t);
        for i in 0..t {
            for j in 0..t {
                m = m.max((0..d).map(|c| q[c * t + i] * k[c * t + j]).sum::<f64>().abs());
            }
        }
    }
    m / (d as f64).sqrt()
}

fn uniform(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    ran::optable::sizes::uniform(n, seed).into_iter().map(|v| 2.0 * v * scale).collect()
}

/// Head bh's (q, k, v) [d][T] of qkv [N·H, 3d, T], in f64.
fn head(qkv: &[f32], bh: usize, d: usize, t: usize) -> [Vec<f64>; 3] {
    let blk = &qkv[bh * 3 * d * t..][..3 * d * t];
    [0, 1, 2].map(|i| blk[i * d * t..(i + 1) * d * t].iter().map(|&x| x as f64).collect())
}

/// P [T][T] = softmax over s of Σ_c q[c,t]·k[c,s]/√d, exact in f64.
fn probs(q: &[f64], k: &[f64], d: usize, t: usize) -> Vec<Vec<f64>> {
    let s2 = 1.0 / (d as f64).sqrt();
    (0..t)
        .map(|i| {
            let z: Vec<f64> = (0..t).map(|j| (0..d).map(|c| q[c * t + i] * k[c * t + j]).sum::<f64>() * s2).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|&x| (x - m).exp()).collect();
            let l: f64 = e.iter().sum();
            e.into_iter().map(|x| x / l).collect()
        })
        .collect()
}

fn forward_ref(qkv: &[f32], bh_count: usize, d: usize, t: usize) -> Vec<f64> {
    let mut out = vec![0.0; bh_count * d * t];
    for bh in 0..bh_count {
        let [q, k, v] = head(qkv, bh, d, t);
        let p = probs(&q, &k, d, t);
        for c in 0..d {
            for i in 0..t {
                out[(bh * d + c) * t + i] = (0..t).map(|j| p[i][j] * v[c * t + j]).sum();
            }
        }
    }
    out
}

/// ∂L/∂qkv for L = Σ gy·a: gV = gA·P, gP = gAᵀ·V, gZ = P ⊙ (gP − rowsum(gP ⊙ P)) / √d,
/// gQ = K·gZᵀ, gK = Q·gZ.
fn backward_ref(gy: &[f32], qkv: &[f32], bh_count: usize, d: usize, t: usize) -> Vec<f64> {
    let s2 = 1.0 / (d as f64).sqrt();
    let mut g = vec![0.0; qkv.len()];
    for bh in 0..bh_count {
        let [q, k, v] = head(qkv, bh, d, t);
        let ga: Vec<f64> = gy[bh * d * t..][..d * t].iter().map(|&x| x as f64).collect();
        let p = probs(&q, &k, d, t);
        let gp: Vec<Vec<f64>> = (0..t).map(|i| (0..t).map(|j| (0..d).map(|c| ga[c * t + i] * v[c * t + j]).sum()).collect()).collect();
        let gz: Vec<Vec<f64>> = (0..t)
            .map(|i| {
                let dot: f64 = (0..t).map(|j| gp[i][j] * p[i][j]).sum();
                (0..t).map(|j| s2 * p[i][j] * (gp[i][j] - dot)).collect()
            })
            .collect();
        let base = bh * 3 * d * t;
        for c in 0..d {
            for x in 0..t {
                g[base + c * t + x] = (0..t).map(|j| gz[x][j] * k[c * t + j]).sum();
                g[base + (d + c) * t + x] = (0..t).map(|i| gz[i][x] * q[c * t + i]).sum();
                g[base + (2 * d + c) * t + x] = (0..t).map(|i| ga[c * t + i] * p[i][x]).sum();
            }
        }
    }
    g
}

fn assert_close(what: &str, got: &[f32], want: &[f64], logit: f64, t: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let big = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let (atol, rtol) = (ATOL * (t as f64).sqrt() * big, RTOL * logit.max(1.0));
    let mut worst = (0.0f64, 0usize);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let err = (a as f64 - b).abs();
        assert!(err <= atol + rtol * b.abs(), "{what}: element {i} is {a}, reference {b} (|err| {err:e}, max|ref| {big:e})");
        if err > worst.0 {
            worst = (err, i);
        }
    }
    eprintln!("{what}: worst |err| {:e} at {} (|ref| {:e}, max|ref| {big:e}, max|logit| {logit:.1})", worst.0, worst.1, want[worst.1].abs());
}

/// (n·heads, d, T, input scale): scale 1.0 gives logits up to ~d/(4√d)·… ≈ O(1); the large ones
/// put single logits near 100.
const CASES: [(usize, usize, usize, f32); 7] = [
    (1, 8, 1, 0.5),    // T = 1: one key, P = 1
    (1, 16, 40, 0.5),  // below one query block and one key block
    (2, 8, 70, 0.5),   // a tail query block (64 + 6), second head
    (1, 64, 300, 0.5), // a tail key block (256 + 44) at the model's head size
    (3, 4, 130, 0.5),  // three heads, a 2-row tail query block
    (1, 16, 600, 6.0), // three key blocks, logits up to ~±100
    (2, 32, 520, 5.0), // large logits (~±50), tails in both, a second head
];

/// Inputs whose later keys carry larger logits, so each key block raises the row max (the
/// rescale path): k columns scaled up linearly along s.
fn inputs(bh: usize, d: usize, t: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut qkv = uniform(seed, bh * 3 * d * t, scale);
    for h in 0..bh {
        for c in 0..d {
            for s in 0..t {
                qkv[(h * 3 * d + d + c) * t + s] *= 0.5 + s as f32 / t as f32;
            }
        }
    }
    qkv
}

#[test]
fn flash_forward_matches_f64_softmax_attention() {
    for (i, &(bh, d, t, scale)) in CASES.iter().enumerate() {
        let qkv = inputs(bh, d, t, scale, 10 + i as u64);
        let logit = max_logit(&qkv, bh, d, t);
        // one head per batch item, or all heads of one item: the same memory layout
        let got = attention_legacy(&qkv, 1, bh, d, t);
        assert_close(&format!("forward bh{bh} d{d} t{t}"), &got, &forward_ref(&qkv, bh, d, t), logit, t);
        if bh > 1 {
            assert_eq!(attention_legacy(&qkv, bh, 1, d, t), got, "n·heads split differently: same result");
        }
    }
}

#[test]
fn the_large_cases_have_large_logits() {
    // the guard for the rescale cases above: they must really reach large logits
    let m5 = max_logit(&inputs(1, 16, 600, 6.0, 15), 1, 16, 600);
    let m6 = max_logit(&inputs(2, 32, 520, 5.0, 16), 2, 32, 520);
    assert!(m5 > 60.0 && m6 > 30.0, "largest |logit| {m5}, {m6}");
}

#[test]
fn blocked_input_gradient_matches_f64_reference() {
    for (i, &(bh, d, t, scale)) in CASES.iter().enumerate() {
        if t > 320 {
            continue; // the O(T²·d) f64 reference of the longest cases is slow in debug builds
        }
        let qkv = inputs(bh, d, t, scale, 30 + i as u64);
        let gy = uniform(50 + i as u64, bh * d * t, 0.5);
        let got = attention_legacy_x_backward(&gy, &qkv, d, t);
        assert_close(&format!("backward bh{bh} d{d} t{t}"), &got, &backward_ref(&gy, &qkv, bh, d, t), max_logit(&qkv, bh, d, t), t);
    }
}

#[test]
fn input_gradient_at_large_logits() {
    let (bh, d, t) = (1, 16, 200);
    let qkv = inputs(bh, d, t, 6.0, 77);
    let gy = uniform(78, bh * d * t, 0.5);
    let got = attention_legacy_x_backward(&gy, &qkv, d, t);
    let logit = max_logit(&qkv, bh, d, t);
    assert!(logit > 40.0, "largest |logit| {logit}");
    assert_close("backward bh1 d16 t200 (large logits)", &got, &backward_ref(&gy, &qkv, bh, d, t), logit, t);
}
