//! `CudaBackend::with_precision` on the emulator: conv2d, conv2d_x_backward, linear and
//! linear_x_backward go where `precision_dispatch::route` says. A tensor-core route must match
//! the CPU backend run on operands rounded with `Precision::round_slice` (the `half` crate's
//! rounding, independent of the kernels') within the accumulation tolerance, and be told apart
//! from f32 by it; an f32 route (F32 itself, a shape or precision without a tensor-core kernel)
//! must be the f32 kernel bit for bit.

use ran::backend::cuda::precision_dispatch::{route, GemmOp, Route};
use ran::backend::cuda::EmulatedCuda;
use ran::backend::rounded_cpu::RoundedCpu;
use ran::backend::{Backend, Conv2dParams, Padding2d};
use ran::ops::conv;
use ran::ops::precision::Precision;
use ran::tensor::Shape;
use ran::{Cpu, Tensor};

fn uniform(seed: u64, n: usize) -> Vec<f32> {
    // the project's seeded generator (optable::sizes), stretched to [−1, 1)
    ran::optable::sizes::uniform(n, seed).into_iter().map(|v| 2.0 * v).collect()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Conv { n: usize, c: usize, h: usize, o: usize, k: usize, stride: usize },
    ConvX { n: usize, c: usize, h: usize, o: usize, k: usize, stride: usize },
    Linear { rows: usize, fin: usize, fout: usize },
    LinearX { rows: usize, fin: usize, fout: usize },
}

/// The op's two operands (rounded at a low precision) and the bias (never rounded).
struct Inputs {
    a: (Vec<usize>, Vec<f32>),
    w: (Vec<usize>, Vec<f32>),
    bias: Option<(Vec<usize>, Vec<f32>)>,
    /// terms per output: the K of the accumulation
    k: usize,
}

fn params(k: usize, stride: usize) -> Conv2dParams {
    Conv2dParams { stride: (stride, stride), padding: Padding2d::lrtb(k / 2, k / 2, k / 2, k / 2), groups: 1 }
}

fn out_hw(h: usize, k: usize, stride: usize) -> usize {
    (h + 2 * (k / 2) - k) / stride + 1
}

fn inputs(op: Op, seed: u64) -> Inputs {
    let t = |dims: Vec<usize>, s: u64| {
        let n = dims.iter().product();
        (dims, uniform(seed * 10 + s, n))
    };
    match op {
        Op::Conv { n, c, h, o, k, .. } => Inputs { a: t(vec![n, c, h, h], 1), w: t(vec![o, c, k, k], 2), bias: Some(t(vec![o], 3)), k: c * k * k },
        Op::ConvX { n, c, h, o, k, stride } => {
            let ho = out_hw(h, k, stride);
            Inputs { a: t(vec![n, o, ho, ho], 1), w: t(vec![o, c, k, k], 2), bias: None, k: o * k * k }
        }
        Op::Linear { rows, fin, fout } => Inputs { a: t(vec![rows, fin], 1), w: t(vec![fout, fin], 2), bias: Some(t(vec![fout], 3)), k: fin },
        Op::LinearX { rows, fin, fout } => Inputs { a: t(vec![rows, fout], 1), w: t(vec![fout, fin], 2), bias: None, k: fout },
    }
}

fn run<B: Backend>(b: &B, op: Op, i: &Inputs) -> Vec<f32> {
    let up = |(d, v): &(Vec<usize>, Vec<f32>)| -> Tensor<B> { b.from_host(d, v).unwrap() };
    let (a, w) = (up(&i.a), up(&i.w));
    let bias = i.bias.as_ref().map(up);
    let y = match op {
        Op::Conv { k, stride, .. } => b.conv2d(&a, &w, bias.as_ref(), &params(k, stride)),
        Op::ConvX { n, c, h, k, stride, .. } => b.conv2d_x_backward(&a, &w, &Shape::new(&[n, c, h, h]), &params(k, stride)),
        Op::Linear { .. } => b.linear(&a, &w, bias.as_ref()),
        Op::LinearX { .. } => b.linear_x_backward(&a, &w),
    }
    .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    b.to_host(&y).unwrap()
}

fn route_of(op: Op, p: Precision) -> Route {
    let i = inputs(op, 0);
    let (a, w, o) = (Shape::new(&i.a.0), Shape::new(&i.w.0), Shape::new(&i.w.0[..1]));
    match op {
        Op::Conv { k, stride, .. } => route(GemmOp::Conv2d(&conv::conv2d(&a, &w, Some(&o), &params(k, stride)).unwrap()), p),
        Op::ConvX { n, c, h, k, stride, .. } => route(GemmOp::Conv2dXBackward(&conv::conv2d_x_backward(&a, &w, &Shape::new(&[n, c, h, h]), &params(k, stride)).unwrap()), p),
        Op::Linear { .. } => route(GemmOp::Linear(&conv::linear(&a, &w, Some(&o)).unwrap()), p),
        Op::LinearX { .. } => route(GemmOp::LinearXBackward(&conv::linear_x_backward(&a, &w).unwrap()), p),
    }
}

/// |got − ref| ≤ 2·(K/16 + 1)·2⁻²³·Σ|a·w| + 2⁻²³·|ref|: products of rounded operands are exact in
/// f32 (at most 11 + 11 significant bits), so only the f32 accumulation differs — per 16-wide
/// mma step one rounding, plus the f32 sum of the steps (as tests/linear_tensor_core.rs).
/// Σ|a·w| is the same op on |a| and |w| without bias. The largest error / tolerance.
fn worst_ratio(got: &[f32], want: &[f32], mag: &[f32], k: usize) -> f64 {
    let u = 2f64.powi(-23);
    got.iter().zip(want).zip(mag).map(|((&g, &r), &m)| (g as f64 - r as f64).abs() / (2.0 * (k / 16 + 1) as f64 * u * m as f64 + u * (r as f64).abs() + 1e-30)).fold(0.0, f64::max)
}

fn rounded(i: &Inputs, p: Precision, abs: bool) -> Inputs {
    let r = |(d, v): &(Vec<usize>, Vec<f32>)| {
        let mut v = v.clone();
        p.round_slice(&mut v);
        if abs {
            v.iter_mut().for_each(|x| *x = x.abs());
        }
        (d.clone(), v)
    };
    Inputs { a: r(&i.a), w: r(&i.w), bias: if abs { None } else { i.bias.clone() }, k: i.k }
}

/// Shapes with channels / features multiples of 8 (what 16-byte tensor-core loads need) and
/// shapes without (fin 30, 3 input channels): the latter must fall back on every branch.
const OPS: [Op; 8] = [
    Op::Conv { n: 2, c: 16, h: 9, o: 24, k: 3, stride: 1 },
    Op::Conv { n: 1, c: 3, h: 8, o: 8, k: 3, stride: 2 },
    Op::ConvX { n: 2, c: 16, h: 8, o: 16, k: 3, stride: 1 },
    Op::ConvX { n: 1, c: 3, h: 7, o: 8, k: 1, stride: 1 },
    Op::Linear { rows: 33, fin: 64, fout: 40 },
    Op::Linear { rows: 33, fin: 30, fout: 20 },
    Op::LinearX { rows: 17, fin: 24, fout: 32 },
    Op::LinearX { rows: 5, fin: 6, fout: 10 },
];

/// Catches: a precision the backend was given but did not use (bf16 linear computed in f32), a
/// tensor-core kernel used for a shape its route says it cannot take, a fallback that is not the
/// f32 kernel, operands rounded the wrong way (the tolerance is ~2⁸ tighter than bf16's
/// rounding error and is shown to reject the f32 result), the bias rounded.
#[test]
fn each_precision_runs_where_the_route_says() {
    let f32_emu = EmulatedCuda::emulated();
    let mut tensor_core_routes = 0;
    for p in [Precision::Tf32, Precision::Bf16, Precision::F16] {
        let emu = EmulatedCuda::emulated().with_precision(p);
        assert_eq!(emu.precision(), p);
        for (n, &op) in OPS.iter().enumerate() {
            let i = inputs(op, n as u64);
            let got = run(&emu, op, &i);
            let f32_got = run(&f32_emu, op, &i);
            match route_of(op, p) {
                Route::F32 => {
                    assert!(got.iter().zip(&f32_got).all(|(a, b)| a.to_bits() == b.to_bits()), "{p} {op:?}: the f32 route is not the f32 kernel bit for bit");
                }
                Route::TensorCore => {
                    tensor_core_routes += 1;
                    let want = run(&Cpu, op, &rounded(&i, p, false));
                    let mag = run(&Cpu, op, &rounded(&i, p, true));
                    let r = worst_ratio(&got, &want, &mag, i.k);
                    assert!(r <= 1.0, "{p} {op:?}: {r:.2}× the tolerance off the {p}-rounded reference");
                    eprintln!("{p} {op:?}: {r:.3}× the tolerance");
                    assert!(got.iter().zip(&f32_got).any(|(a, b)| a.to_bits() != b.to_bits()), "{p} {op:?}: identical to f32: the operands were not rounded");
                    assert!(worst_ratio(&f32_got, &want, &mag, i.k) > 4.0, "{p} {op:?}: the tolerance cannot tell {p} from f32 operands");
                }
            }
        }
    }
    // bf16 linear has a tensor-core kernel on every branch: the test must have checked one
    assert!(tensor_core_routes >= 1);
    assert_eq!(route_of(OPS[4], Precision::Bf16), Route::TensorCore);
}

/// Catches: F32 routed anywhere but the f32 kernels (its results are today's, bit for bit).
#[test]
fn f32_routes_every_shape_to_the_f32_kernels() {
    for op in OPS {
        assert_eq!(route_of(op, Precision::F32), Route::F32, "{op:?}");
    }
    let emu = EmulatedCuda::emulated();
    assert_eq!(emu.precision(), Precision::F32, "the emulator's default");
    let explicit = EmulatedCuda::emulated().with_precision(Precision::Bf16).with_precision(Precision::F32);
    for (n, &op) in OPS.iter().enumerate() {
        let i = inputs(op, 100 + n as u64);
        let (a, b) = (run(&emu, op, &i), run(&explicit, op, &i));
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{op:?}");
    }
}

/// `Cpu` itself is f32; `--device cpu` without `--precision` is `RoundedCpu` at f32, which is
/// `Cpu` bit for bit on every routed op.
#[test]
fn the_cpu_backend_reports_f32() {
    assert_eq!(Cpu.precision(), Precision::F32);
    let plain = RoundedCpu::default();
    assert_eq!(plain.precision(), Precision::F32);
    for (n, &op) in OPS.iter().enumerate() {
        let i = inputs(op, 200 + n as u64);
        assert!(bits_equal(&run(&plain, op, &i), &run(&Cpu, op, &i)), "{op:?}");
    }
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Catches, in the CPU proxy of the kernels' rounding (`--device cpu --precision p`,
/// backend/rounded_cpu.rs, what the accuracy table runs on): an operand left unrounded or rounded
/// another way (tf32 nearest-even instead of ties away, bf16 truncated), the bias rounded, a shape
/// the kernels run in f32 rounded by the proxy or the reverse. The proxy must be the CPU's f32 op
/// on operands rounded by `Precision::round_slice` bit for bit, and agree with the emulator's
/// tensor-core kernels on the same inputs within the accumulation tolerance (`worst_ratio`, the
/// one the kernels meet against that reference), which f32 operands are shown to miss.
#[test]
fn the_cpu_proxy_matches_the_tensor_core_kernels() {
    let mut tensor_core_routes = 0;
    for p in [Precision::Tf32, Precision::Bf16, Precision::F16] {
        let emu = EmulatedCuda::emulated().with_precision(p);
        let proxy = RoundedCpu::new(p);
        assert_eq!(proxy.precision(), p);
        for (n, &op) in OPS.iter().enumerate() {
            let i = inputs(op, 300 + n as u64);
            let got = run(&proxy, op, &i);
            match route_of(op, p) {
                Route::F32 => assert!(bits_equal(&got, &run(&Cpu, op, &i)), "{p} {op:?}: the kernels run this in f32, the proxy must too"),
                Route::TensorCore => {
                    tensor_core_routes += 1;
                    assert!(bits_equal(&got, &run(&Cpu, op, &rounded(&i, p, false))), "{p} {op:?}: not the f32 op on {p}-rounded operands");
                    let kernel = run(&emu, op, &i);
                    let mag = run(&Cpu, op, &rounded(&i, p, true));
                    let r = worst_ratio(&kernel, &got, &mag, i.k);
                    eprintln!("{p} {op:?}: kernel vs proxy {r:.3}× the tolerance");
                    assert!(r <= 1.0, "{p} {op:?}: the tensor-core kernel is {r:.2}× the tolerance off the proxy");
                    assert!(worst_ratio(&run(&Cpu, op, &i), &got, &mag, i.k) > 4.0, "{p} {op:?}: the tolerance cannot tell the proxy from f32");
                }
            }
        }
    }
    assert!(tensor_core_routes >= 6, "{tensor_core_routes}");
}

fn attention_run<B: Backend>(b: &B, dims: &[usize], qkv: &[f32], heads: usize) -> Vec<f32> {
    let x = b.from_host(dims, qkv).unwrap();
    b.to_host(&b.attention_legacy(&x, heads).unwrap()).unwrap()
}

/// Catches: attention not routed under --precision bf16/f16 (the emulator would equal its f32
/// kernel), routed at tf32 or for a head dim the tensor-core kernel cannot take (d = 40), and a
/// proxy that does not follow the kernel's rounding points (q, k, v; P against the running max
/// of 64-key tiles): the kernel and the proxy sum in other orders, so a P near a rounding boundary
/// may round either way in one of them — the bound is 2^-(bits+1)·max|v| per element (one flip),
/// observed far below; the f32 attention is shown to be much farther from the proxy.
#[test]
fn attention_is_routed_and_the_cpu_proxy_follows_its_rounding() {
    // (n, heads, d, t): two query tiles and a partial key tile (t = 100); d = 40 falls back
    for (n, heads, d, t) in [(1, 2, 64, 100), (1, 1, 32, 70), (1, 2, 40, 30)] {
        let g = ran::ops::attention::AttentionGeom { n, heads, d, t };
        let dims = [n, 3 * heads * d, t];
        let qkv: Vec<f32> = uniform(400 + d as u64, dims.iter().product()).into_iter().map(|v| 3.0 * v).collect();
        let vmax = qkv.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        let f32_cpu = attention_run(&Cpu, &dims, &qkv, heads);
        let f32_emu = attention_run(&EmulatedCuda::emulated(), &dims, &qkv, heads);
        for p in [Precision::Tf32, Precision::Bf16, Precision::F16] {
            let proxy = attention_run(&RoundedCpu::new(p), &dims, &qkv, heads);
            let kernel = attention_run(&EmulatedCuda::emulated().with_precision(p), &dims, &qkv, heads);
            match route(GemmOp::Attention(&g), p) {
                Route::F32 => {
                    assert!(matches!(p, Precision::Tf32) || d == 40, "{p} {g:?}");
                    assert!(bits_equal(&proxy, &f32_cpu), "{p} {g:?}: the proxy's fallback is not the CPU's f32 attention");
                    assert!(bits_equal(&kernel, &f32_emu), "{p} {g:?}: the emulator's fallback is not its f32 attention");
                }
                Route::TensorCore => {
                    assert!(d != 40 && !matches!(p, Precision::Tf32), "{p} {g:?}");
                    let worst = |a: &[f32]| a.iter().zip(&proxy).map(|(x, y)| (*x as f64 - *y as f64).abs()).fold(0.0, f64::max);
                    let bound = 2f64.powi(-(p.mantissa_bits() as i32 + 1)) * vmax;
                    let (k, f) = (worst(&kernel), worst(&f32_cpu));
                    eprintln!("{p} {g:?}: |kernel − proxy| ≤ {k:.2e}, |f32 − proxy| ≤ {f:.2e}, bound {bound:.2e}");
                    assert!(k <= bound, "{p} {g:?}: the kernel is {k:.3e} off the proxy (bound {bound:.3e})");
                    assert!(f > 4.0 * k, "{p} {g:?}: the proxy is as close to f32 ({f:.2e}) as to the kernel ({k:.2e})");
                }
            }
        }
    }
}

/// Catches: the weight cast made at every call (the second call launches as many kernels as the
/// first), a kept copy served for another weight (a weight made after the first dropped, maybe at
/// its address, must give its own result), dropped weights' copies kept, and one layout's copy
/// served for another (linear's w and linear_x_backward's wᵀ, the same storage).
#[test]
fn weights_are_cast_once_and_never_served_for_another() {
    let emu = EmulatedCuda::emulated().with_precision(Precision::Bf16);
    let launches = || emu.driver_counts().expect("the emulator counts launches").launches;
    let stats = || emu.weight_cache().stats();
    for (n, op) in [Op::Linear { rows: 33, fin: 64, fout: 40 }, Op::Conv { n: 2, c: 16, h: 9, o: 24, k: 3, stride: 1 }].into_iter().enumerate() {
        emu.weight_cache().clear();
        assert_eq!(route_of(op, Precision::Bf16), Route::TensorCore);
        let i = inputs(op, 500 + n as u64);
        let up = |(d, v): &(Vec<usize>, Vec<f32>)| emu.from_host(d, v).unwrap();
        let (a, bias) = (up(&i.a), i.bias.as_ref().map(up));
        let call = |w: &Tensor<EmulatedCuda>| {
            let y = match op {
                Op::Conv { k, stride, .. } => emu.conv2d(&a, w, bias.as_ref(), &params(k, stride)),
                _ => emu.linear(&a, w, bias.as_ref()),
            };
            emu.to_host(&y.unwrap()).unwrap()
        };
        let w = up(&i.w);
        let s0 = stats();
        let l0 = launches();
        let first = call(&w);
        let l1 = launches();
        let second = call(&w);
        let l2 = launches();
        assert_eq!(l1 - l0, l2 - l1 + 1, "{op:?}: the second call must skip exactly the weight's cast");
        assert!(bits_equal(&first, &second), "{op:?}");
        // hits and misses count from the backend's start, as driver counts do
        assert_eq!((stats().entries, stats().hits - s0.hits, stats().misses - s0.misses), (1, 1, 1), "{op:?}");
        assert!(bits_equal(&first, &run(&emu, op, &i)), "{op:?}: the kept copy changed the result");
        drop(w);
        // another weight after the first dropped (2w: other values, the same shape)
        let mut other = i.w.clone();
        other.1.iter_mut().for_each(|v| *v *= 2.0);
        let w2 = up(&other);
        let l3 = launches();
        let got = call(&w2);
        assert_eq!(launches() - l3, l1 - l0, "{op:?}: a new weight is cast");
        // the dropped weights' copies (w's and run()'s) went at the insert: only live weights stay
        assert_eq!(stats().entries, 1, "{op:?}: {:?}", stats());
        let want = run(&emu, op, &Inputs { a: i.a.clone(), w: other.clone(), bias: i.bias.clone(), k: i.k });
        assert!(bits_equal(&got, &want), "{op:?}: served the dropped weight's copy");
        if let Op::Linear { .. } = op {
            let gy = up(&(vec![33, 40], uniform(600, 33 * 40)));
            let gx = emu.to_host(&emu.linear_x_backward(&gy, &w2).unwrap()).unwrap();
            assert_eq!(stats().entries, 2, "w and wᵀ of w2: {:?}", stats());
            let want = run(&emu, Op::LinearX { rows: 33, fin: 64, fout: 40 }, &Inputs { a: (vec![33, 40], uniform(600, 33 * 40)), w: other.clone(), bias: None, k: 40 });
            assert!(bits_equal(&gx, &want), "wᵀ served linear's copy of w");
        }
    }
}

/// Catches: a weight's narrow copy made inside a graph capture being recorded instead of made
/// (a capture that fails then leaves the cache holding a copy that was never written — NaN in the
/// emulator's fresh buffers — and every later eager call reads it; a capture that succeeds would
/// redo the cast at every replay).
#[test]
fn a_weight_cast_inside_a_failed_capture_is_made_not_recorded() {
    let emu = EmulatedCuda::emulated().with_precision(Precision::Bf16);
    let op = Op::Linear { rows: 33, fin: 64, fout: 40 };
    assert_eq!(route_of(op, Precision::Bf16), Route::TensorCore);
    let i = inputs(op, 700);
    let up = |(d, v): &(Vec<usize>, Vec<f32>)| emu.from_host(d, v).unwrap();
    let (a, w, bias) = (up(&i.a), up(&i.w), i.bias.as_ref().map(up));
    let failing = |v: &[Tensor<EmulatedCuda>]| {
        let y = emu.linear(&v[0], &w, bias.as_ref())?;
        Ok(vec![emu.add(&y, &emu.reshape(&y, &[40, 33])?)?]) // [33, 40] + [40, 33]: a shape error
    };
    assert!(emu.graph_forward(ran::backend::new_graph_id(), &[&a], &failing).is_err());
    assert_eq!(emu.weight_cache().stats().entries, 1, "the cast inside the capture was kept");
    let got = emu.to_host(&emu.linear(&a, &w, bias.as_ref()).unwrap()).unwrap();
    assert!(got.iter().all(|v| v.is_finite()), "the kept copy was never written");
    assert!(bits_equal(&got, &run(&emu, op, &i)), "the copy made inside the capture differs from an eager one");
}
