//! The 16-byte paths of elementwise.cu and layout.cu and their scalar tails, launched directly on
//! the emulator (which, like a GPU, measures alignment from a buffer's start). The buffers are
//! padded to a multiple of 4 floats and the kernels run on the first n: a float4 that strays past
//! n writes the padding, which must stay zero. Small grids make every thread iterate many times,
//! so the index walks (index_walk.cuh) take their carries. The expected values are computed here
//! element by element, b's index by plain division.

use ran::backend::cuda::device::{Device, LaunchCfg};
use ran::backend::cuda::emu::{EmuBuf, EmuDevice};
use ran::backend::cuda::launch;
use ran::optable::sizes::uniform;

fn cfg(blocks: u32, threads: u32) -> LaunchCfg {
    LaunchCfg { grid: (blocks, 1, 1), block: (threads, 1, 1), smem_bytes: 0 }
}

/// A buffer of `n` values plus padding to a multiple of 4 (so it is 16-byte aligned), and the values.
fn padded(d: &EmuDevice, n: usize, seed: u64) -> (EmuBuf, Vec<f32>) {
    let mut v = uniform(n.next_multiple_of(4).max(4), seed);
    v.iter_mut().skip(n).for_each(|x| *x = 0.0);
    (d.upload(bytemuck::cast_slice(&v)).unwrap(), v[..n].to_vec())
}

fn out(d: &EmuDevice, n: usize) -> EmuBuf {
    d.alloc_zeros(n.next_multiple_of(4).max(4) * 4).unwrap()
}

/// The first n values are `want` (to f32 rounding of one operation: both sides compute the same
/// f32 expression), and the padding after them is untouched (a float4 past n would write it).
fn check(d: &EmuDevice, what: &str, y: &EmuBuf, want: &[f32]) {
    check_within(d, what, y, want, 1e-6);
}

/// `check` with |got − want| ≤ tol·(1 + |want|).
fn check_within(d: &EmuDevice, what: &str, y: &EmuBuf, want: &[f32], tol: f32) {
    let n = want.len();
    let mut got = vec![0.0f32; n.next_multiple_of(4).max(4)];
    d.download(y, bytemuck::cast_slice_mut(&mut got)).unwrap();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}: element {i} of {n}: got {g}, want {w}");
    }
    assert!(got[n..].iter().all(|&v| v == 0.0), "{what}: wrote past element {n}: {:?}", &got[n..]);
}

const GRIDS: [(u32, u32); 3] = [(1, 32), (3, 64), (2, 256)];

#[test]
fn maps_take_the_float4_path_and_the_tail() {
    let d = EmuDevice;
    for n in [1usize, 3, 7, 70, 1001] {
        for (blocks, threads) in GRIDS {
            let c = cfg(blocks, threads);
            let tag = format!("n {n}, {blocks}x{threads}");
            let (x, xv) = padded(&d, n, 3);
            let (g, gv) = padded(&d, n, 4);
            let y = out(&d, n);
            launch::activation_f32(&d, &c, &x, &y, n as i32, 1).unwrap();
            check(&d, &format!("relu, {tag}"), &y, &xv.iter().map(|&v| v.max(0.0)).collect::<Vec<_>>());
            let y = out(&d, n);
            launch::activation_x_backward_f32(&d, &c, &g, &x, &y, n as i32, 1).unwrap();
            check(&d, &format!("relu backward, {tag}"), &y, &xv.iter().zip(&gv).map(|(&v, &g)| if v > 0.0 { g } else { 0.0 }).collect::<Vec<_>>());
            let y = out(&d, n);
            launch::scale_add_scalar_f32(&d, &c, &x, &y, n as i32, 0.5, -2.0).unwrap();
            check(&d, &format!("scale_add_scalar, {tag}"), &y, &xv.iter().map(|&v| 0.5 * v - 2.0).collect::<Vec<_>>());
        }
    }
}

/// add_rows / mul_rows over every path: b shared by a float4 (inner mod 4 = 0, or one value),
/// four consecutive b values (inner 1: the same shape, or a block of mid mod 4 = 0 values), and
/// the scalar walk (inner 3 with a wrap of 5, inner 1 with mid 6).
#[test]
fn row_broadcasts_take_every_path() {
    let d = EmuDevice;
    // (rows of b repeated, inner, mid): n = reps · mid · inner, or an explicit n for the tails
    let cases: &[(usize, usize, usize)] = &[(5, 40, 3), (2, 16, 7), (1, 1003, 1), (1, 1, 1001), (7, 1, 12), (6, 3, 5), (9, 1, 6), (3, 1, 1)];
    for &(reps, inner, mid) in cases {
        let n = reps * inner * mid;
        let (a, av) = padded(&d, n, 11);
        let (b, bv) = padded(&d, mid, 12);
        for (blocks, threads) in GRIDS {
            let c = cfg(blocks, threads);
            let tag = format!("n {n} inner {inner} mid {mid}, {blocks}x{threads}");
            let bi = |e: usize| bv[(e / inner) % mid];
            let y = out(&d, n);
            launch::add_rows_f32(&d, &c, &a, &b, &y, n as i32, inner as i32, mid as i32).unwrap();
            check(&d, &format!("add_rows, {tag}"), &y, &av.iter().enumerate().map(|(e, &v)| v + bi(e)).collect::<Vec<_>>());
            let y = out(&d, n);
            launch::mul_rows_f32(&d, &c, &a, &b, &y, n as i32, inner as i32, mid as i32).unwrap();
            check(&d, &format!("mul_rows, {tag}"), &y, &av.iter().enumerate().map(|(e, &v)| v * bi(e)).collect::<Vec<_>>());
        }
    }
}

/// The channel affine and the channel copy walk (image, channel) without division: S a multiple
/// of 4 (float4s) and not (floats), with many iterations per thread.
#[test]
fn channel_walks_match_plain_indexing() {
    let d = EmuDevice;
    for (n, c, s) in [(3usize, 5usize, 8usize), (2, 7, 5), (1, 3, 36)] {
        let total = n * c * s;
        let (x, xv) = padded(&d, total, 21);
        let (sc, scv) = padded(&d, c, 22);
        let (sh, shv) = padded(&d, c, 23);
        for (blocks, threads) in GRIDS {
            let cf = cfg(blocks, threads);
            let tag = format!("[{n},{c},{s}], {blocks}x{threads}");
            let ch = |e: usize| (e / s) % c;
            let y = out(&d, total);
            launch::channel_affine_f32(&d, &cf, &x, &sc, &sh, &y, total as i32, c as i32, s as i32).unwrap();
            check(&d, &format!("channel_affine, {tag}"), &y, &xv.iter().enumerate().map(|(e, &v)| v * scv[ch(e)] + shv[ch(e)]).collect::<Vec<_>>());
            let y = out(&d, total);
            launch::channel_affine_x_backward_f32(&d, &cf, &x, &sc, &y, total as i32, c as i32, s as i32).unwrap();
            check(&d, &format!("channel_affine backward, {tag}"), &y, &xv.iter().enumerate().map(|(e, &v)| v * scv[ch(e)]).collect::<Vec<_>>());
            // channels 1..c-1 of x into channels 2.. of a [n, c + 1, s] destination
            let (k, dst_c) = (c - 1, c + 1);
            let y = out(&d, n * dst_c * s);
            launch::copy_channels_f32(&d, &cf, &x, c as i32, 1, &y, dst_c as i32, 2, n as i32, k as i32, s as i32).unwrap();
            let mut want = vec![0.0f32; n * dst_c * s];
            for b in 0..n {
                for j in 0..k {
                    for p in 0..s {
                        want[(b * dst_c + 2 + j) * s + p] = xv[(b * c + 1 + j) * s + p];
                    }
                }
            }
            check(&d, &format!("copy_channels, {tag}"), &y, &want);
        }
    }
}

/// Nearest 2× upsampling (one thread per input value, two float2 stores) and its gradient, the
/// bilinear resize and the channel gather walk their indices without division: odd planes, rows
/// and columns, many iterations per thread. Expected values by plain division, here.
#[test]
fn resample_and_gather_walks_match_plain_indexing() {
    let d = EmuDevice;
    for (planes, h, w) in [(3usize, 5usize, 7usize), (2, 1, 1), (1, 4, 6), (5, 3, 2)] {
        let (x, xv) = padded(&d, planes * h * w, 31);
        let (gy, gyv) = padded(&d, planes * 4 * h * w, 32);
        for (blocks, threads) in GRIDS {
            let c = cfg(blocks, threads);
            let tag = format!("[{planes},{h},{w}], {blocks}x{threads}");
            let y = out(&d, planes * 4 * h * w);
            launch::upsample_nearest2x_f32(&d, &c, &x, &y, planes as i32, h as i32, w as i32).unwrap();
            let up = |e: usize| {
                let (ox, oy, p) = (e % (2 * w), (e / (2 * w)) % (2 * h), e / (4 * h * w));
                xv[(p * h + oy / 2) * w + ox / 2]
            };
            check(&d, &format!("upsample_nearest2x, {tag}"), &y, &(0..planes * 4 * h * w).map(up).collect::<Vec<_>>());
            let gx = out(&d, planes * h * w);
            launch::upsample_nearest2x_x_backward_f32(&d, &c, &gy, &gx, planes as i32, h as i32, w as i32).unwrap();
            let down = |e: usize| {
                let (ix, iy, p) = (e % w, (e / w) % h, e / (h * w));
                let g = |dy: usize, dx: usize| gyv[(p * 2 * h + 2 * iy + dy) * 2 * w + 2 * ix + dx];
                g(0, 0) + g(0, 1) + g(1, 0) + g(1, 1)
            };
            check(&d, &format!("upsample_nearest2x backward, {tag}"), &gx, &(0..planes * h * w).map(down).collect::<Vec<_>>());
            // bilinear to (2h + 1) × (w + 3): PyTorch's rule, align_corners = False
            let (ho, wo) = (2 * h + 1, w + 3);
            let y = out(&d, planes * ho * wo);
            launch::resize_bilinear_f32(&d, &c, &x, &y, planes as i32, h as i32, w as i32, ho as i32, wo as i32).unwrap();
            let tap = |o: usize, n_in: usize, n_out: usize| {
                let src = ((o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n_in - 1);
                (i0, (i0 + 1).min(n_in - 1), (src - i0 as f64).clamp(0.0, 1.0))
            };
            let bil = |e: usize| {
                let (ox, oy, p) = (e % wo, (e / wo) % ho, e / (ho * wo));
                let ((y0, y1, ly), (x0, x1, lx)) = (tap(oy, h, ho), tap(ox, w, wo));
                let v = |yy: usize, xx: usize| xv[(p * h + yy) * w + xx] as f64;
                ((1.0 - ly) * ((1.0 - lx) * v(y0, x0) + lx * v(y0, x1)) + ly * ((1.0 - lx) * v(y1, x0) + lx * v(y1, x1))) as f32
            };
            // the kernel's f32 source coordinate (in/out rounded, times up to 11) moves by ~1e-6 of a
            // pixel, times the image's slope (up to 1 per pixel here): 4e-6
            check_within(&d, &format!("resize_bilinear, {tag}"), &y, &(0..planes * ho * wo).map(bil).collect::<Vec<_>>(), 4e-6);
        }
    }
    // gather channels [4, 0, 2] of [3, 5, 7] and back
    let (n, c, s, ids) = (3usize, 5usize, 7usize, [4i32, 0, 2]);
    let k = ids.len();
    let (x, xv) = padded(&d, n * c * s, 33);
    let (gy, gyv) = padded(&d, n * k * s, 34);
    let idb = d.upload(bytemuck::cast_slice(&ids)).unwrap();
    for (blocks, threads) in GRIDS {
        let cf = cfg(blocks, threads);
        let y = out(&d, n * k * s);
        launch::gather_channels_f32(&d, &cf, &x, &idb, &y, n as i32, c as i32, k as i32, s as i32).unwrap();
        let want: Vec<f32> = (0..n * k * s).map(|e| xv[((e / (k * s)) * c + ids[(e / s) % k] as usize) * s + e % s]).collect();
        check(&d, &format!("gather_channels, {blocks}x{threads}"), &y, &want);
        let gx = out(&d, n * c * s);
        launch::gather_channels_x_backward_f32(&d, &cf, &gy, &idb, &gx, n as i32, c as i32, k as i32, s as i32).unwrap();
        let mut want = vec![0.0f32; n * c * s];
        for (e, &g) in gyv.iter().enumerate() {
            want[((e / (k * s)) * c + ids[(e / s) % k] as usize) * s + e % s] = g;
        }
        check(&d, &format!("gather_channels backward, {blocks}x{threads}"), &gx, &want);
    }
}

/// Group norm (+ scale-shift + SiLU) forward, input gradient and parameter gradients, in float64.
struct GnRef {
    y: Vec<f64>,
    gx: Vec<f64>,
    gamma: Vec<f64>,
    beta: Vec<f64>,
    scale: Vec<f64>,
    shift: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
fn gn_reference(x: &[f32], gy: &[f32], ga: &[f32], be: &[f32], sc: &[f32], sh: &[f32], [n, c, s]: [usize; 3], groups: usize, eps: f64) -> GnRef {
    let cpg = c / groups;
    let len = cpg * s;
    let mut r = GnRef { y: vec![0.0; x.len()], gx: vec![0.0; x.len()], gamma: vec![0.0; c], beta: vec![0.0; c], scale: vec![0.0; n * c], shift: vec![0.0; n * c] };
    for b in 0..n {
        for g in 0..groups {
            let o = (b * c + g * cpg) * s;
            let xs: Vec<f64> = x[o..o + len].iter().map(|&v| v as f64).collect();
            let mean = xs.iter().sum::<f64>() / len as f64;
            let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            let (mut gxh, mut xhs) = (vec![0.0; len], vec![0.0; len]);
            for (i, v) in xs.iter().enumerate() {
                let ch = g * cpg + i / s;
                let k = 1.0 + sc[b * c + ch] as f64;
                let (a, bb) = (ga[ch] as f64 * k, be[ch] as f64 * k + sh[b * c + ch] as f64);
                let xh = (v - mean) * rstd;
                let pre = xh * a + bb;
                let sig = 1.0 / (1.0 + (-pre).exp());
                r.y[o + i] = pre * sig;
                let gp = gy[o + i] as f64 * sig * (1.0 + pre * (1.0 - sig));
                gxh[i] = gp * a;
                xhs[i] = xh;
                r.gamma[ch] += gp * k * xh;
                r.beta[ch] += gp * k;
                r.scale[b * c + ch] += gp * (xh * ga[ch] as f64 + be[ch] as f64);
                r.shift[b * c + ch] += gp;
            }
            let m1 = gxh.iter().sum::<f64>() / len as f64;
            let m2 = gxh.iter().zip(&xhs).map(|(a, b)| a * b).sum::<f64>() / len as f64;
            for ((g, a), h) in r.gx[o..o + len].iter_mut().zip(&gxh).zip(&xhs) {
                *g = rstd * (a - m1 - h * m2);
            }
        }
    }
    r
}

/// max |got − want| / max |want|, asserted ≤ tol.
fn within_scaled(what: &str, got: &[f32], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g as f64 - w).abs();
        let e = if e.is_nan() { f64::INFINITY } else { e }; // a NaN (unwritten output) fails
        if e > worst {
            (worst, at) = (e, i);
        }
    }
    let r = worst / scale;
    assert!(r <= tol, "{what}: element {at} got {} want {} (max error {r:.2e} of max |ref| {scale:.3e}, tolerance {tol:.0e})", got[at], want[at]);
    r
}

/// Catches, in both launch shapes of the group-norm kernels (one block per group: norm_split::
/// fused and fused_x_backward; split chunks, moments merged per block): a tail block of a group
/// whose size is not a multiple of the chunk, chunks that cross a channel (the coefficient walk),
/// groups that start off a 16-byte boundary, a single-value group (variance 0), batch 2 (the image
/// of a block), and statistics that lose the variance under a large mean (mean 100, σ 0.01: raw
/// sums Σx, Σx² keep no digit of it; Chan's merge without its between-chunk term is off by the
/// spread of the chunk means). Tolerance: max |got − ref| ≤ tol·max |ref| per output, f64 reference.
#[test]
fn group_norm_paths_match_float64() {
    // the split kernels' shared memory is checked here (the op table's group-norm cases are small
    // enough for the one-block kernels now): every access, when the build has the detector
    let race = ran::backend::cuda::emu::instrumented() && !ran::backend::cuda::emu::set_race_check(true);
    group_norm_cases(&ran::backend::cuda::EmulatedCuda::emulated(), true);
    if race {
        ran::backend::cuda::emu::set_race_check(false);
    }
}

/// The CPU backend's group-norm gradients on the same cases and reference (backend/cpu/group_norm.rs:
/// x̂ and the SiLU's derivative in f64 with the vectorised exp, lane sums), at the same tolerance.
/// What it catches: a backward that formed pre = x̂·a + b in f32 as the forward's fold x·k + m
/// (at mean 100, σ 0.01, x·k and m are ~1e4 with f32 rounding ~5e-4, so pre would be ~1e-3 off by
/// that arithmetic); an exp or a sum off by more than f32 rounding; a channel's coefficients or an
/// image's scale-shift taken from another. The CPU forward is not checked here: it uses that f32
/// fold, which by the same arithmetic misses the 1e-6 bound in the mean-100 cases.
#[test]
fn cpu_group_norm_gradients_match_float64() {
    group_norm_cases(&ran::Cpu, false);
}

/// Runs the cases of `group_norm_paths_match_float64` on `b`; the forward output too when `forward`.
fn group_norm_cases<B: ran::Backend>(b: &B, forward: bool) {
    use ran::backend::GroupNormParams;
    // observed ≤ 2.9e-7 of max |ref| on every output and case, under forward, reverse and random
    // schedules (f32 sums of up to 8,198 values); a raw one-pass variance at mean 100 is off by O(1)
    const TOL: f64 = 1e-6;
    // (what, [n, c, s], groups, mean, spread (× uniform in [−½, ½)))
    let cases: &[(&str, [usize; 3], usize, f32, f32)] = &[
        ("fused, groups of 50, batch 2", [2, 6, 25], 3, 0.3, 2.0),
        ("fused, single-value groups", [3, 4, 1], 4, 0.0, 1.0),
        ("fused, mean 100 σ 0.01", [2, 4, 64], 2, 100.0, 0.0346),
        ("fused forward, split gradient of 31 chunks of 132 (last 40), float4s, chunks across channels", [1, 2, 2000], 1, 0.1, 1.0),
        ("split, 63 chunks of 132 (last 14), chunks across channels, 2nd group unaligned", [2, 2, 4099], 1, -0.2, 1.0),
        ("split, mean 100 σ 0.01, 64 chunks, batch 2", [2, 4, 4096], 2, 100.0, 0.0346),
    ];
    for &(what, [n, c, s], groups, mean, spread) in cases {
        let x: Vec<f32> = uniform(n * c * s, 41).iter().map(|u| mean + spread * u).collect();
        let gy = uniform(n * c * s, 42);
        let (ga, be) = (uniform(c, 43).iter().map(|u| 1.0 + u).collect::<Vec<_>>(), uniform(c, 44));
        let (sc, sh) = (uniform(n * c, 45), uniform(n * c, 46));
        let r = gn_reference(&x, &gy, &ga, &be, &sc, &sh, [n, c, s], groups, 1e-5);
        let t = |v: &[f32], d: &[usize]| b.from_host(d, v).unwrap();
        let (xt, gyt) = (t(&x, &[n, c, s]), t(&gy, &[n, c, s]));
        let (gat, bet, sct, sht) = (t(&ga, &[c]), t(&be, &[c]), t(&sc, &[n, c]), t(&sh, &[n, c]));
        let p = GroupNormParams { groups, eps: 1e-5, silu: true };
        let ss = Some((&sct, &sht));
        let h = |t: &ran::Tensor<B>| b.to_host(t).unwrap();
        let y = if forward { within_scaled(&format!("{what}: y"), &h(&b.group_norm(&xt, &gat, &bet, &p, ss).unwrap()), &r.y, TOL) } else { f64::NAN };
        let gx = h(&b.group_norm_x_backward(&gyt, &xt, &gat, &bet, &p, ss).unwrap());
        let w = b.group_norm_w_backward(&gyt, &xt, &gat, &bet, &p, ss).unwrap();
        let (dsc, dsh) = w.scale_shift.unwrap();
        let ratios = [
            y,
            within_scaled(&format!("{what}: gx"), &gx, &r.gx, TOL),
            within_scaled(&format!("{what}: ∂γ"), &h(&w.gamma), &r.gamma, TOL),
            within_scaled(&format!("{what}: ∂β"), &h(&w.beta), &r.beta, TOL),
            within_scaled(&format!("{what}: ∂scale"), &h(&dsc), &r.scale, TOL),
            within_scaled(&format!("{what}: ∂shift"), &h(&dsh), &r.shift, TOL),
        ];
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.1e}")).collect();
        eprintln!("[{}] {what}: max error / max |ref| (y, gx, ∂γ, ∂β, ∂scale, ∂shift) = {}", b.name(), shown.join(", "));
    }
}

/// `exp_f64` (the CPU group norms' backward) against libm over its whole clamped range and near 0,
/// where the reduced argument is the input itself; clamped inputs stay positive and finite.
#[test]
fn exp_f64_matches_libm() {
    use ran::backend::cpu::real::exp_f64;
    let mut worst = 0.0f64;
    let mut x = -708.0f64;
    while x <= 709.0 {
        worst = worst.max(((exp_f64(x) - x.exp()) / x.exp()).abs());
        x += 0.000_731;
    }
    for i in -2000..=2000 {
        let x = i as f64 * 1e-7;
        worst = worst.max(((exp_f64(x) - x.exp()) / x.exp()).abs());
    }
    eprintln!("exp_f64: worst relative error against libm {worst:.2e}");
    assert!(worst < 1e-15, "worst relative error {worst:e}");
    assert_eq!(exp_f64(0.0), 1.0);
    assert!(exp_f64(-1e6) > 0.0 && exp_f64(1e6).is_finite(), "clamped, not 0 or ∞");
}
