//! Winograd F(4×4, 3×3) on the CPU (src/backend/cpu/winograd.rs) against a plain float64 loop
//! written here (independent of both conv paths), forward and input gradient.
//!
//! What each case would catch: H, W not multiples of 4 (edge tiles cut wrongly: an 8×8 test
//! misses it), 1×1 and 2×2 images (tiles that are mostly padding), C = 1 and channel counts that
//! are not multiples of the GEMM's or the lanes' blocks, batch > 1 and several tile blocks (a second
//! image's tiles, a block's padded tail lanes), bias and no bias, padding 0 and asymmetric padding,
//! and the flipped, transposed weight of ∂x. The float64 instance checks the algorithm itself at
//! 1e-12; the f32 instance states the rounding error Winograd adds, beside the direct conv's.
//! Every buffer handed out `for_overwrite` is NaN-filled first (buffers::set_poison), so an output
//! element left unwritten fails the test.

use ran::backend::cpu::buffers::set_poison;
use ran::backend::cpu::winograd::{self, Orient};
use ran::backend::cpu::{conv2d as direct, conv_select, winograd_weights, Cpu};
use ran::backend::{Backend, Compute};
use ran::ops::contract::Conv2dGeom;
use ran::ops::conv::{Conv2dParams, Padding2d};
use ran::optable::sizes::uniform;
use ran::Shape;

#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    pad: Padding2d,
    bias: bool,
}

const fn case(n: usize, c: usize, o: usize, h: usize, w: usize, p: usize, bias: bool) -> Case {
    Case { n, c, o, h, w, pad: Padding2d { left: p, right: p, top: p, bottom: p }, bias }
}

const CASES: &[Case] = &[
    case(1, 3, 5, 7, 9, 1, true),     // edge tiles in both axes
    case(2, 4, 3, 6, 5, 1, false),    // batch 2: the second image's tiles
    case(1, 1, 1, 1, 1, 1, true),     // a 1×1 image: one tile, 15 of 16 outputs cut
    case(1, 2, 3, 2, 2, 1, false),    // 2×2
    case(1, 1, 7, 10, 10, 1, true),   // C_in = 1
    case(1, 6, 1, 9, 13, 1, false),   // C_out = 1
    case(3, 37, 19, 13, 11, 1, true), // odd channel counts, 3 images over two tile blocks
    case(2, 5, 6, 9, 7, 0, true),     // padding 0 (output 7×5)
    case(1, 9, 11, 33, 35, 1, true),  // many tiles: several blocks, a ragged last one
];

fn geom(k: &Case) -> Conv2dGeom {
    let p = Conv2dParams { stride: (1, 1), padding: k.pad, groups: 1 };
    let b = Shape::new(&[k.o]);
    ran::ops::conv::conv2d(&Shape::new(&[k.n, k.c, k.h, k.w]), &Shape::new(&[k.o, k.c, 3, 3]), k.bias.then_some(&b), &p).unwrap()
}

/// The plain definition in float64: y[o][oy][ox] = b[o] + Σ x[c][oy − pt + ky][ox − pl + kx]·w[o][c][ky][kx].
fn ref_forward(x: &[f64], w: &[f64], b: Option<&[f64]>, g: &Conv2dGeom) -> Vec<f64> {
    let (ho, wo) = (g.ho(), g.wo());
    let mut y = vec![0.0; g.n() * g.o() * ho * wo];
    for ni in 0..g.n() {
        for o in 0..g.o() {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = b.map_or(0.0, |b| b[o]);
                    for c in 0..g.c() {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((oy + ky) as isize - g.pt() as isize, (ox + kx) as isize - g.pl() as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h() && (ix as usize) < g.w() {
                                    acc += x[((ni * g.c() + c) * g.h() + iy as usize) * g.w() + ix as usize] * w[((o * g.c() + c) * 3 + ky) * 3 + kx];
                                }
                            }
                        }
                    }
                    y[((ni * g.o() + o) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    y
}

/// ∂L/∂x by scattering every output's gradient back over the taps that read each input.
fn ref_x_backward(gy: &[f64], w: &[f64], g: &Conv2dGeom) -> Vec<f64> {
    let (ho, wo) = (g.ho(), g.wo());
    let mut gx = vec![0.0; g.n() * g.c() * g.h() * g.w()];
    for ni in 0..g.n() {
        for o in 0..g.o() {
            for oy in 0..ho {
                for ox in 0..wo {
                    let v = gy[((ni * g.o() + o) * ho + oy) * wo + ox];
                    for c in 0..g.c() {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((oy + ky) as isize - g.pt() as isize, (ox + kx) as isize - g.pl() as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < g.h() && (ix as usize) < g.w() {
                                    gx[((ni * g.c() + c) * g.h() + iy as usize) * g.w() + ix as usize] += v * w[((o * g.c() + c) * 3 + ky) * 3 + kx];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    gx
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

/// (max |got − ref|, max |ref|); NaN counts as infinite error.
fn err(got: impl IntoIterator<Item = f64>, want: &[f64]) -> (f64, f64) {
    let mut e = 0.0f64;
    let mut n = 0;
    for (g, &r) in got.into_iter().zip(want) {
        let d = (g - r).abs();
        e = if d.is_nan() { f64::INFINITY } else { e.max(d) };
        n += 1;
    }
    assert_eq!(n, want.len(), "output has the wrong length");
    (e, want.iter().fold(0.0, |m: f64, v| m.max(v.abs())))
}

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    gy: Vec<f32>,
}

/// Unit-scale data: x, ∂y uniform in [−1, 1), w scaled like a trained conv's (1/√K), bias in [−1, 1).
fn data(g: &Conv2dGeom, seed: u64) -> Data {
    let k = (g.c() * 9) as f32;
    let u = |n, s| uniform(n, seed * 10 + s).into_iter().map(|v| 2.0 * v).collect::<Vec<f32>>();
    Data { x: u(g.n() * g.c() * g.h() * g.w(), 1), w: u(g.o() * g.c() * 9, 2).into_iter().map(|v| v / k.sqrt()).collect(), b: u(g.o(), 3), gy: u(g.n() * g.o() * g.ho() * g.wo(), 4) }
}

/// The f32 error bound: `RTOL_F32 · ε · √K · max|ref|` with K = C·9 (the sum's length);
/// a few times the largest observed ratio (printed by the tests).
const RTOL_F32: f64 = 16.0;

fn f32_tol(k: usize, max_ref: f64) -> f64 {
    RTOL_F32 * f32::EPSILON as f64 * (k as f64).sqrt() * max_ref
}

#[test]
fn winograd_in_float64_is_the_convolution() {
    set_poison(true);
    for (i, k) in CASES.iter().enumerate() {
        let g = geom(k);
        let d = data(&g, i as u64);
        let (x, w, b, gy) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.gy));
        let b = k.bias.then_some(&b[..]);
        let (e, m) = err(winograd::conv2d(&x, &w, b, &g), &ref_forward(&x, &w, b, &g));
        assert!(e <= 1e-12 * m.max(1.0), "{k:?} forward: error {e:e}, max|ref| {m}");
        let (e, m) = err(winograd::conv2d_x_backward(&gy, &w, &g), &ref_x_backward(&gy, &w, &g));
        assert!(e <= 1e-12 * m.max(1.0), "{k:?} x-backward: error {e:e}, max|ref| {m}");
    }
}

/// Asymmetric padding (EfficientNet's static "same" style) and padding 2: Plan's signed offsets.
#[test]
fn winograd_handles_any_padding() {
    set_poison(true);
    for (i, pad) in [Padding2d::lrtb(0, 1, 0, 1), Padding2d::lrtb(2, 0, 1, 2), Padding2d::same(2)].into_iter().enumerate() {
        let k = Case { n: 2, c: 3, o: 4, h: 9, w: 6, pad, bias: true };
        let g = geom(&k);
        let d = data(&g, 100 + i as u64);
        let (x, w, b, gy) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.gy));
        let (e, m) = err(winograd::conv2d(&x, &w, Some(&b), &g), &ref_forward(&x, &w, Some(&b), &g));
        assert!(e <= 1e-12 * m.max(1.0), "{pad:?} forward: error {e:e}");
        let (e, m) = err(winograd::conv2d_x_backward(&gy, &w, &g), &ref_x_backward(&gy, &w, &g));
        assert!(e <= 1e-12 * m.max(1.0), "{pad:?} x-backward: error {e:e}");
    }
}

/// f32 Winograd and f32 direct conv against the float64 loop: the error table of benches/RESULTS.md.
fn f32_errors(label: &str, k: &Case, seed: u64) {
    let g = geom(k);
    let d = data(&g, seed);
    let (x, w, b, gy) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.gy));
    let bias = k.bias.then_some(&d.b[..]);
    let y_ref = ref_forward(&x, &w, k.bias.then_some(&b[..]), &g);
    let gx_ref = ref_x_backward(&gy, &w, &g);
    let (ew, m) = err(f64s(&winograd::conv2d(&d.x, &d.w, bias, &g)), &y_ref);
    let (ed, _) = err(f64s(&direct::conv2d(&d.x, &d.w, bias, &g)), &y_ref);
    let (ewb, mb) = err(f64s(&winograd::conv2d_x_backward(&d.gy, &d.w, &g)), &gx_ref);
    let (edb, _) = err(f64s(&direct::conv2d_x_backward(&d.gy, &d.w, &g)), &gx_ref);
    let (tf, tb) = (f32_tol(g.c() * 9, m), f32_tol(g.o() * 9, mb));
    let rel = |e: f64, m: f64, k: usize| e / (f32::EPSILON as f64 * (k as f64).sqrt() * m);
    println!(
        "{label:<28} fwd: winograd {ew:.2e} ({:.2} ε√K·max|ref|), direct {ed:.2e}, max|ref| {m:.2}, tol {tf:.2e} | ∂x: winograd {ewb:.2e} ({:.2}), direct {edb:.2e}, max|ref| {mb:.2}, tol {tb:.2e}",
        rel(ew, m, g.c() * 9),
        rel(ewb, mb, g.o() * 9)
    );
    assert!(ew <= tf, "{label} {k:?} forward: winograd error {ew:e} > {tf:e}");
    assert!(ewb <= tb, "{label} {k:?} x-backward: winograd error {ewb:e} > {tb:e}");
}

#[test]
fn winograd_in_float32_stays_within_the_stated_error() {
    set_poison(true);
    for (i, k) in CASES.iter().enumerate() {
        f32_errors(&format!("{}x{}->{} @{}x{} n{}", k.c, 3, k.o, k.h, k.w, k.n), k, 200 + i as u64);
    }
}

/// The UNet's largest K on unit-scale data: 256 → 256 channels (K = 2304) at 32², and 512 at 16².
#[test]
fn winograd_float32_error_at_the_unets_largest_k() {
    set_poison(true);
    f32_errors("256->256 @32x32", &case(1, 256, 256, 32, 32, 1, true), 300);
    f32_errors("512->512 @16x16", &case(1, 512, 512, 16, 16, 1, true), 301);
}

/// Through the backend: the transformed weight is kept for the weight's tensor, reused, and not
/// confused with a new weight that gets the same (pooled, reused) buffer after the first is freed.
#[test]
fn the_backend_caches_transformed_weights_per_tensor_and_never_aliases_a_freed_one() {
    set_poison(true);
    let k = case(1, 128, 128, 32, 30, 1, true);
    let g = geom(&k);
    let auto = conv_select::algo().unwrap();
    let p = Conv2dParams::new(1, 1, 1);
    let cpu = Cpu;
    for round in 0..3u64 {
        let d = data(&g, 400 + round);
        let x = cpu.upload(&[1, 128, 32, 30], &d.x).unwrap();
        let w = cpu.upload(&[128, 128, 3, 3], &d.w).unwrap();
        let b = cpu.upload(&[128], &d.b).unwrap();
        let gy = cpu.upload(&[1, 128, 32, 30], &d.gy).unwrap();
        let y_ref = ref_forward(&f64s(&d.x), &f64s(&d.w), Some(&f64s(&d.b)), &g);
        let gx_ref = ref_x_backward(&f64s(&d.gy), &f64s(&d.w), &g);
        for call in 0..2 {
            let y = Backend::conv2d(&cpu, &x, &w, Some(&b), &p).unwrap();
            let gx = Backend::conv2d_x_backward(&cpu, &gy, &w, x.shape(), &p).unwrap();
            let (e, m) = err(f64s(&cpu.download(&y).unwrap()), &y_ref);
            assert!(e <= f32_tol(128 * 9, m), "round {round} call {call}: forward error {e:e}");
            let (e, m) = err(f64s(&cpu.download(&gx).unwrap()), &gx_ref);
            assert!(e <= f32_tol(128 * 9, m), "round {round} call {call}: x-backward error {e:e}");
        }
        // 128 → 128 channels with 64 tiles is at the auto threshold; RAN_CONV=direct must not touch the cache
        let winograd_on = auto != conv_select::ConvAlgo::Direct;
        assert_eq!(winograd_weights::is_cached(w.storage(), Orient::Forward), winograd_on, "{auto:?}");
        assert_eq!(winograd_weights::is_cached(w.storage(), Orient::XBackward), winograd_on, "{auto:?}");
        // w is dropped here; the next round's weight may well get the same buffer and address
    }
}

/// The input gradient's rule (`conv_select::worth_it_x_backward`): from 32 channels on either side
/// and 64 output tiles ∂x takes Winograd, while the forward of the same conv stays direct below 128
/// channels (the demo UNet's recorded numbers are forward numbers); the UNet's 32 → 6 output conv
/// and 16² planes at batch 2 (32 tiles) keep the direct ∂x. The weight cache tells which path ran;
/// ∂x is within the f32 bound either way. A rule that also moved the forward, or missed the ∂x,
/// fails here; under RAN_CONV=direct nothing is cached, under RAN_CONV=winograd everything.
#[test]
fn the_input_gradient_takes_winograd_from_32_channels_the_forward_from_128() {
    let auto = conv_select::algo().unwrap();
    let (forced, on) = (auto == conv_select::ConvAlgo::Winograd, auto != conv_select::ConvAlgo::Direct);
    let cpu = Cpu;
    let p = Conv2dParams::new(1, 1, 1);
    // (n, c, o, h, w, ∂x by Winograd under auto)
    for (n, c, o, h, wd, dx_winograd) in [(2, 64, 64, 32, 32, true), (2, 32, 32, 64, 64, true), (2, 32, 6, 64, 64, false), (2, 64, 64, 16, 16, false)] {
        let k = case(n, c, o, h, wd, 1, true);
        let g = geom(&k);
        let d = data(&g, 500 + c as u64 + o as u64);
        let x = cpu.upload(&[n, c, h, wd], &d.x).unwrap();
        let w = cpu.upload(&[o, c, 3, 3], &d.w).unwrap();
        let b = cpu.upload(&[o], &d.b).unwrap();
        let gy = cpu.upload(&[n, o, h, wd], &d.gy).unwrap();
        Backend::conv2d(&cpu, &x, &w, Some(&b), &p).unwrap();
        let gx = Backend::conv2d_x_backward(&cpu, &gy, &w, x.shape(), &p).unwrap();
        let (e, m) = err(f64s(&cpu.download(&gx).unwrap()), &ref_x_backward(&f64s(&d.gy), &f64s(&d.w), &g));
        let what = format!("{c} → {o} @{h}×{wd}, batch {n} ({auto:?})");
        println!("{what}: ∂x error {:.2} × ε·√K·max|ref|", e / (f32::EPSILON as f64 * ((o * 9) as f64).sqrt() * m));
        assert!(e <= f32_tol(o * 9, m), "{what}: x-backward error {e:e}");
        assert_eq!(winograd_weights::is_cached(w.storage(), Orient::Forward), forced, "{what}: the forward's path");
        assert_eq!(winograd_weights::is_cached(w.storage(), Orient::XBackward), forced || (on && dx_winograd), "{what}: ∂x's path");
    }
}

#[test]
fn a_bad_ran_conv_is_a_named_error() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ran")).args(["bench", "conv", "--shape", "8x8x8", "--kernel", "3", "--iters", "1"]).env("RAN_CONV", "fast").output().unwrap();
    let se = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && se.contains("RAN_CONV=\"fast\"") && se.contains("direct, winograd or auto") && !se.contains("panicked"), "{se}");
}

/// The weight transform runs 8 kernels at a time (`winograd_transform::kernels`) with the scalar
/// form (`kernel`) for the last columns: both must give the same bits, or a weight's transform
/// would depend on whether its column fell in a full group of 8 (the cases above check the
/// lane-to-column mapping through the convolution; this checks the arithmetic itself).
#[test]
fn the_lane_weight_transform_is_the_scalar_one_bit_for_bit() {
    use ran::backend::cpu::winograd_transform::{kernel, kernels, LANES};
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    };
    for _ in 0..64 {
        let g: [[f64; LANES]; 9] = std::array::from_fn(|_| std::array::from_fn(|_| next()));
        let u = kernels(&g);
        for l in 0..LANES {
            let want = kernel(&std::array::from_fn(|i| g[i][l]));
            for xi in 0..36 {
                assert_eq!(u[xi][l].to_bits(), want[xi].to_bits(), "lane {l}, ξ {xi}");
            }
        }
    }
}
