//! The fused convolutions of EfficientNet's blocks on the CPU (src/backend/cpu/conv_act.rs,
//! depthwise.rs, activation.rs, simd.rs) against the unfused ops and an independent per-pixel
//! loop: conv2d_act (conv + bias + activation, with the planes' means) and conv2d_add (+ residual)
//! on odd sizes (H, W not multiples of any vector width, channel counts not multiples of 8 or 16),
//! batch 2, stride 2 with EfficientNet's asymmetric "same" padding, 3×3 and 5×5, and each vector
//! width the CPU has against the baseline one.

use ran::backend::cpu::activation::{act_into, bias_act};
use ran::backend::cpu::depthwise::{conv2d_depthwise_fused_on, Kernel};
use ran::backend::cpu::pointwise::{bands, out_chunks, pointwise, Mode, Pass};
use ran::backend::cpu::simd::Isa;
use ran::backend::{Activation, Conv2dParams, Padding2d};
use ran::ops::contract::Conv2dGeom;
use ran::optable::sizes::uniform;
use ran::tensor::Shape;
use ran::{Backend, Cpu, Tensor};

const ACTS: [Activation; 4] = [Activation::Silu, Activation::Relu, Activation::Sigmoid, Activation::Relu6];

fn t(dims: &[usize], seed: u64, scale: f32) -> Tensor<Cpu> {
    Cpu.from_host(dims, &uniform(dims.iter().product(), seed).into_iter().map(|v| v * scale).collect::<Vec<_>>()).unwrap()
}

fn host(x: &Tensor<Cpu>) -> Vec<f32> {
    Cpu.to_host(x).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A conv the fused paths see: x [n, c, h, w], o outputs in `groups`, k×k, stride, padding.
struct Case {
    name: &'static str,
    x: [usize; 4],
    o: usize,
    k: usize,
    p: Conv2dParams,
}

fn cases() -> Vec<Case> {
    let same380 = Padding2d::lrtb(0, 1, 0, 1);
    let p = |stride: usize, padding: Padding2d, groups: usize| Conv2dParams { stride: (stride, stride), padding, groups };
    vec![
        // depthwise (the plane-axpy kernel, whose output pass writes each row from its strips'
        // buffer; the row kernel where a tap is not finite): 3×3 stride 1, 5×5 stride 2 with padding 2 and with the
        // asymmetric (0, 1) of B4's static padding, a channel multiplier of 2
        Case { name: "dw3x3 s1", x: [2, 13, 11, 17], o: 13, k: 3, p: p(1, Padding2d::same(1), 13) },
        Case { name: "dw5x5 s2 p2", x: [2, 13, 19, 21], o: 13, k: 5, p: p(2, Padding2d::same(2), 13) },
        Case { name: "dw3x3 s2 same380", x: [2, 11, 15, 18], o: 11, k: 3, p: p(2, same380, 11) },
        Case { name: "dw5x5 s2 same380 odd W", x: [1, 5, 9, 23], o: 5, k: 5, p: p(2, Padding2d::lrtb(1, 2, 1, 2), 5) },
        Case { name: "dw3x3 mult2", x: [2, 3, 7, 9], o: 6, k: 3, p: p(1, Padding2d::same(1), 3) },
        // pointwise (the GEMM + one output pass), one and two groups
        Case { name: "1x1 13->27", x: [2, 13, 9, 7], o: 27, k: 1, p: p(1, Padding2d::default(), 1) },
        Case { name: "1x1 groups2", x: [1, 10, 5, 13], o: 6, k: 1, p: p(1, Padding2d::default(), 2) },
        // the general conv (im2col + GEMM, bias inside) then the activation in place: B4's stem
        Case { name: "stem 3x3 s2 same380", x: [2, 3, 17, 15], o: 11, k: 3, p: p(2, same380, 1) },
        // 65×48 outputs: two im2col bands (42 and 23 rows), run in parallel on two threads, so the
        // bias and activation go into the band loop (conv2d.rs `conv2d_with`)
        Case { name: "stem 3x3 s2 two bands", x: [1, 3, 131, 97], o: 11, k: 3, p: p(2, same380, 1) },
        Case { name: "1x1 s2", x: [1, 9, 11, 11], o: 5, k: 1, p: p(2, Padding2d::default(), 1) },
    ]
}

/// Catches: a fused output pass that differs from the unfused ops in any bit (the bias added
/// after the activation, an activation formula of its own, a −0 turned into +0 by adding a zero
/// bias, a plane or a channel's bias mixed up between images, an unwritten element — the buffers
/// are NaN-poisoned), on every conv path and every activation, with and without bias.
#[test]
fn conv2d_act_is_conv2d_then_activation_bit_for_bit() {
    ran::backend::cpu::buffers::set_poison(true);
    // two threads whatever the machine: the band-parallel paths are the ones taken by `ran bench`
    two_threads().install(conv2d_act_cases)
}

fn two_threads() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap()
}

fn conv2d_act_cases() {
    for (ci, c) in cases().iter().enumerate() {
        let x = t(&c.x, 10 + ci as u64, 6.0);
        let w = t(&[c.o, c.x[1] / c.p.groups, c.k, c.k], 20 + ci as u64, 1.0);
        let bias = t(&[c.o], 30 + ci as u64, 2.0);
        for (ai, &act) in ACTS.iter().enumerate() {
            for b in [None, Some(&bias)] {
                let want = host(&Cpu.activation(&Cpu.conv2d(&x, &w, b, &c.p).unwrap(), act).unwrap());
                let (y, m) = Cpu.conv2d_act(&x, &w, b, act, &c.p, ai % 2 == 1).unwrap();
                assert_eq!(m.is_some(), ai % 2 == 1, "{}: a mean when asked for one only", c.name);
                assert_eq!(bits(&host(&y)), bits(&want), "{} {act:?} bias {}", c.name, b.is_some());
            }
        }
    }
}

/// Catches: the squeeze summed over the wrong plane (a row short at odd H, the next image's
/// channel), divided by the wrong count, or taken before the activation. Against
/// global_avg_pool of the unfused output (a sequential f64 sum): the fused sum is in f64 too, in
/// another order, so the two may differ by the final f32 rounding only (the observed difference
/// was not printed this session: the 2-ulp bound passed on every case);
/// allowed 2 ulp (|d| ≤ 2.5e-7·|ref| + 1e-12).
#[test]
fn conv2d_act_means_are_the_planes_means() {
    ran::backend::cpu::buffers::set_poison(true);
    for (ci, c) in cases().iter().enumerate() {
        let x = t(&c.x, 40 + ci as u64, 6.0);
        let w = t(&[c.o, c.x[1] / c.p.groups, c.k, c.k], 50 + ci as u64, 1.0);
        let bias = t(&[c.o], 60 + ci as u64, 2.0);
        for &act in &ACTS {
            let unfused = Cpu.activation(&Cpu.conv2d(&x, &w, Some(&bias), &c.p).unwrap(), act).unwrap();
            let want = host(&Cpu.global_avg_pool(&unfused).unwrap());
            let (_, m) = Cpu.conv2d_act(&x, &w, Some(&bias), act, &c.p, true).unwrap();
            let m = m.unwrap();
            assert_eq!(m.dims(), &[c.x[0], c.o, 1, 1][..], "{}", c.name);
            for (i, (&g, &r)) in host(&m).iter().zip(&want).enumerate() {
                assert!((g - r).abs() as f64 <= 1e-12 + 2.5e-7 * r.abs() as f64, "{} {act:?} plane {i}: {g} vs {r}", c.name);
            }
        }
    }
}

/// Catches: the residual added to the wrong plane or image, the bias dropped or added twice on the
/// pointwise path (which adds it itself), or another rounding order than add(res, conv2d(..)).
#[test]
fn conv2d_add_is_conv2d_plus_residual_bit_for_bit() {
    ran::backend::cpu::buffers::set_poison(true);
    for (ci, c) in cases().iter().enumerate() {
        let x = t(&c.x, 70 + ci as u64, 3.0);
        let w = t(&[c.o, c.x[1] / c.p.groups, c.k, c.k], 80 + ci as u64, 1.0);
        let bias = t(&[c.o], 90 + ci as u64, 2.0);
        let y0 = Cpu.conv2d(&x, &w, None, &c.p).unwrap();
        let res = t(y0.dims(), 100 + ci as u64, 4.0);
        for b in [None, Some(&bias)] {
            let want = host(&Cpu.add(&res, &Cpu.conv2d(&x, &w, b, &c.p).unwrap()).unwrap());
            let got = host(&Cpu.conv2d_add(&x, &w, b, &res, &c.p).unwrap());
            assert_eq!(bits(&got), bits(&want), "{} bias {}", c.name, b.is_some());
        }
    }
}

/// Catches: the row kernel's tap ranges or its even/odd split at stride 2 reading a wrong column
/// (an off-by-one at the asymmetric padding, the last column of an odd width), against a
/// per-pixel loop written here: the taps in (ky, kx) order from zero, the bias last — the same f32
/// operations, so the same bits.
#[test]
fn depthwise_rows_match_a_per_pixel_loop() {
    for (ci, c) in cases().iter().enumerate().filter(|(_, c)| c.p.groups == c.x[1] && c.k > 1) {
        let x = t(&c.x, 110 + ci as u64, 4.0);
        let w = t(&[c.o, 1, c.k, c.k], 120 + ci as u64, 1.0);
        let bias = t(&[c.o], 130 + ci as u64, 1.0);
        let got = host(&Cpu.conv2d(&x, &w, Some(&bias), &c.p).unwrap());
        let (xv, wv, bv) = (host(&x), host(&w), host(&bias));
        let [n, ch, h, wd] = c.x;
        let (s, pl, pt, og) = (c.p.stride.0, c.p.padding.left, c.p.padding.top, c.o / ch);
        let ho = (h + c.p.padding.top + c.p.padding.bottom - c.k) / s + 1;
        let wo = (wd + c.p.padding.left + c.p.padding.right - c.k) / s + 1;
        let mut want = Vec::new();
        for ni in 0..n {
            for oc in 0..c.o {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = 0.0f32;
                        for ky in 0..c.k {
                            for kx in 0..c.k {
                                let (iy, ix) = ((oy * s + ky) as isize - pt as isize, (ox * s + kx) as isize - pl as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    acc += xv[((ni * ch + oc / og) * h + iy as usize) * wd + ix as usize] * wv[(oc * c.k + ky) * c.k + kx];
                                }
                            }
                        }
                        want.push(acc + bv[oc]);
                    }
                }
            }
        }
        assert_eq!(bits(&got), bits(&want), "{}", c.name);
    }
}

/// Catches: a vector width whose loop computes anything but the baseline's operations (an FMA
/// contraction, another exp, NaN or ±0 handled otherwise, a tail element skipped): each width the
/// CPU has against the baseline SSE2 loops, bit for bit, on values that include NaN, ±∞, ±0,
/// exp's clamp range and a length that is no multiple of 16.
#[test]
fn every_vector_width_gives_the_baseline_bits() {
    let mut x: Vec<f32> = uniform(1000, 7).into_iter().map(|v| v * 200.0).collect();
    x.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 87.5, -87.5, 88.7, -103.0, 1e-40, -1e-40, 6.0, -6.0, 5.999_999_5]);
    let widths: Vec<Isa> = [Isa::Avx2, Isa::Avx512].into_iter().filter(|&i| i.capped() == i).collect();
    eprintln!("vector widths checked against the baseline: {widths:?}");
    for &act in &ACTS {
        let mut base = vec![0.0f32; x.len()];
        act_into(Isa::Base, &mut base, &x, act);
        for &isa in &widths {
            let mut y = vec![0.0f32; x.len()];
            act_into(isa, &mut y, &x, act);
            assert_eq!(bits(&y), bits(&base), "activation {act:?} at {isa:?}");
        }
        for bias in [None, Some(0.0f32), Some(-1.25)] {
            let mut base = x.clone();
            bias_act(Isa::Base, &mut base, bias, Some(act));
            for &isa in &widths {
                let mut y = x.clone();
                bias_act(isa, &mut y, bias, Some(act));
                assert_eq!(bits(&y), bits(&base), "bias {bias:?} + {act:?} at {isa:?}");
            }
        }
    }
    // the depthwise plane kernels, with the activation and the means, on the stride-2 and odd
    // cases: each width and both kernels against the row kernel at the baseline width
    for (ci, c) in cases().iter().enumerate().filter(|(_, c)| c.p.groups == c.x[1] && c.k > 1) {
        let xt = t(&c.x, 140 + ci as u64, 5.0);
        let w = host(&t(&[c.o, 1, c.k, c.k], 150 + ci as u64, 1.0));
        let b = host(&t(&[c.o], 160 + ci as u64, 1.0));
        let g = geom(&xt, c);
        let run = |isa: Isa, kernel: Kernel| {
            let mut y = vec![f32::NAN; g.n() * g.o() * g.ho() * g.wo()];
            let mut m = vec![f32::NAN; g.n() * g.o()];
            conv2d_depthwise_fused_on(isa, kernel, &host(&xt), &w, Some(&b), Some(Activation::Silu), &mut y, Some(&mut m), &g);
            (bits(&y), bits(&m))
        };
        let base = run(Isa::Base, Kernel::Rows);
        for isa in [Isa::Base].into_iter().chain(widths.iter().copied()) {
            for kernel in [Kernel::Rows, Kernel::Axpy] {
                assert_eq!(run(isa, kernel), base, "depthwise {} at {isa:?}, {kernel:?} kernel", c.name);
            }
        }
    }
}

/// Catches: the padded kernel used on a channel with an infinite tap (its padding's 0·∞ would
/// put NaN at the border where the row kernel, which skips padding taps, has ±∞ or a number):
/// such a channel must take the row kernel, the others keep theirs.
#[test]
fn a_channel_with_an_infinite_tap_takes_the_row_kernel() {
    let c = &cases()[1]; // dw5x5 s2 p2, two images
    let x = host(&t(&c.x, 170, 3.0));
    let mut w = host(&t(&[c.o, 1, c.k, c.k], 171, 1.0));
    w[3 * 25] = f32::INFINITY; // channel 3, tap (0, 0): it reads the padding at the top-left border
    let g = geom(&Cpu.from_host(&c.x, &x).unwrap(), c);
    let run = |kernel: Kernel| {
        let mut y = vec![f32::NAN; g.n() * g.o() * g.ho() * g.wo()];
        conv2d_depthwise_fused_on(Isa::detected(), kernel, &x, &w, None, None, &mut y, None, &g);
        y
    };
    let (rows, axpy) = (run(Kernel::Rows), run(Kernel::Axpy));
    assert!(rows.iter().any(|v| v.is_infinite()), "the infinite tap reaches the output");
    // NaN where the row kernel has NaN (∞ − ∞ inside the image), the same bits elsewhere
    for (i, (&r, &b)) in rows.iter().zip(&axpy).enumerate() {
        assert!(r.to_bits() == b.to_bits() || (r.is_nan() && b.is_nan()), "element {i}: rows {r}, axpy {b}");
    }
}

fn geom(x: &Tensor<Cpu>, c: &Case) -> Conv2dGeom {
    ran::ops::conv::conv2d(x.shape(), &ran::tensor::Shape::new(&[c.o, c.x[1] / c.p.groups, c.k, c.k]), None, &c.p).unwrap()
}

/// Catches: the fused op skipping the conv's shape checks (a bias of the wrong length would read
/// past it) or the mean's (an empty output plane).
#[test]
fn conv2d_act_refuses_bad_shapes_with_the_ops_name() {
    let (x, w) = (t(&[1, 4, 5, 5], 1, 1.0), t(&[6, 4, 1, 1], 2, 1.0));
    let e = Cpu.conv2d_act(&x, &w, Some(&t(&[5], 3, 1.0)), Activation::Silu, &Conv2dParams::default(), false).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("bias"), "{e}");
    let e = Cpu.conv2d_act(&x, &t(&[6, 3, 1, 1], 4, 1.0), None, Activation::Silu, &Conv2dParams::default(), true).unwrap_err().to_string();
    assert!(e.contains("conv2d"), "{e}");
}

/// Catches: a pointwise task that reads x or w or writes y at a wrong offset (a column at a band
/// boundary or a row at an output chunk's skipped or written twice — the buffers are
/// NaN-poisoned —, the next image's or group's plane), a pass handed the wrong plane or first
/// pixel, and a task small enough (≤ 64 pixels beside ≤ 64 outputs) for the gemm crate to block
/// a depth k > 512 otherwise than the whole GEMM: tasks against the whole-plane GEMM bit for bit,
/// raw and with bias + SiLU, on B4's 16² expand and project (two bands × four output chunks,
/// k = 960), 95² (B4 at 380²: 9025 pixels, a tail band), k = 672 with 56 outputs on 385 pixels
/// (a 49-pixel tail merged into the band before it; chunks of 24, 24 and 8 outputs), two groups
/// and two images, and 128² (43 bands).
#[test]
fn pointwise_bands_give_the_whole_gemms_bits() {
    ran::backend::cpu::buffers::set_poison(true);
    let shapes: [([usize; 4], usize, usize); 6] =
        [([1, 160, 16, 16], 960, 1), ([1, 960, 16, 16], 160, 1), ([2, 56, 95, 95], 336, 1), ([1, 672, 5, 77], 56, 1), ([2, 10, 13, 21], 6, 2), ([1, 24, 128, 128], 144, 1)];
    let pool = two_threads();
    for (si, &(xd, o, groups)) in shapes.iter().enumerate() {
        let (cg, og, hw) = (xd[1] / groups, o / groups, xd[2] * xd[3]);
        let b = bands(hw, cg, og, 2);
        assert!(b.len() >= 2 && b.iter().all(|&(_, len)| len > 64), "{xd:?}: bands {b:?}");
        let x = host(&t(&xd, 200 + si as u64, 3.0));
        let w = host(&t(&[o, cg, 1, 1], 210 + si as u64, 1.0));
        let bias = host(&t(&[o], 220 + si as u64, 2.0));
        let g = ran::ops::conv::conv2d(&Shape::new(&xd), &Shape::new(&[o, cg, 1, 1]), None, &Conv2dParams { groups, ..Default::default() }).unwrap();
        let none = |_: usize, _: usize, _: &mut [f32]| {};
        let silu = |i: usize, _: usize, p: &mut [f32]| bias_act(Isa::detected(), p, Some(bias[i % o]), Some(Activation::Silu));
        for (name, pass) in [("raw", &none as Pass), ("bias + silu", &silu as Pass)] {
            let whole = pool.install(|| pointwise(Mode::Whole, &x, &w, &g, pass));
            let banded = pool.install(|| pointwise(Mode::Bands, &x, &w, &g, pass));
            assert!(whole.iter().all(|v| v.is_finite()), "{xd:?} {name}: the whole GEMM left values unwritten");
            assert_eq!(bits(&banded), bits(&whole), "{xd:?} → {o} ({groups} groups) {name}");
        }
    }
}

/// Catches: bands that leave a pixel out, overlap, or end with a band of ≤ 64 pixels (the gemm
/// crate's small-product path), a split that leaves a thread idle where each of two bands
/// could keep 128 pixels, and output chunks that leave an output out, overlap or end with fewer
/// than 8 (its matrix-vector path at 1): every plane size 1 … 3000 and B4's sizes at 256² and
/// 380², thin and wide convs, every output count 1 … 1000, 1, 2 and 16 threads.
#[test]
fn pointwise_bands_and_chunks_cover_the_product_once() {
    let sizes = (1..=3000).chain([4096, 9025, 16384, 36100]);
    for hw in sizes {
        for (cg, og) in [(24, 144), (960, 160), (672, 56), (3, 5)] {
            for threads in [1, 2, 16] {
                let b = bands(hw, cg, og, threads);
                let mut next = 0;
                for &(p0, len) in &b {
                    assert!(p0 == next && len > 0, "hw {hw} ({cg} → {og}, {threads} threads): {b:?}");
                    next = p0 + len;
                }
                assert_eq!(next, hw, "hw {hw}: {b:?}");
                assert!(b.len() == 1 || b.iter().all(|&(_, len)| len > 64), "hw {hw} ({cg} → {og}): {b:?}");
                if threads >= 2 && hw >= 256 {
                    assert!(b.len() >= 2, "hw {hw} ({cg} → {og}, {threads} threads): one band");
                }
            }
        }
    }
    // output chunks: every count 1 … 1000 cut among 1 … 9 pixel tasks
    for og in 1..=1000 {
        for tasks in 1..10 {
            for threads in [1, 2, 16] {
                let c = out_chunks(og, tasks, 128, threads);
                let mut next = 0;
                for &(o0, len) in &c {
                    assert!(o0 == next && len > 0, "{og} outputs, {tasks} tasks: {c:?}");
                    next = o0 + len;
                }
                assert_eq!(next, og, "{og} outputs: {c:?}");
                assert!(c.len() == 1 || c.iter().all(|&(_, len)| len >= 8), "{og} outputs, {tasks} tasks: {c:?}");
            }
        }
        // no cut where a band has ≤ 64 pixels (the product could take the small-product path)
        assert_eq!(out_chunks(og, 1, 64, 2), vec![(0, og)]);
    }
    assert_eq!(out_chunks(960, 2, 128, 2).len(), 4, "B4's 16² expand: two bands × four chunks");
}

/// Catches: `on_workers` running its function on the wrong thread (with RAN_CPU_ON_WORKERS=1 a
/// pool thread, otherwise — the default — the calling one) or losing its result; from a thread
/// outside the pool and from inside it.
#[test]
fn on_workers_runs_the_function_on_a_pool_thread() {
    let off = !std::env::var("RAN_CPU_ON_WORKERS").is_ok_and(|v| v.trim() == "1");
    let outside = std::thread::spawn(|| Cpu.on_workers(|| (rayon::current_thread_index(), 7))).join().unwrap();
    assert_eq!(outside.1, 7);
    assert_eq!(outside.0.is_some(), !off, "RAN_CPU_ON_WORKERS off: {off}");
    let inside = two_threads().install(|| (rayon::current_thread_index(), Cpu.on_workers(rayon::current_thread_index)));
    assert_eq!(inside.0, inside.1, "already on a worker: the same thread");
}

/// Catches: the CLI's CPU backend (`RoundedCpu`, what `--device cpu` runs at every precision)
/// taking the trait's default of an op the CPU backend implements itself. The values are the
/// same bits either way, so no value test sees it, only the time: conv2d_act and conv2d_add ran
/// as the trait's three-op compositions and the forward off the workers in every `ran bench
/// effnet` and `ran detect` until this test; linear_parts ran as one GEMM over the stacked parts
/// (other bits than `Cpu`'s per-part GEMMs, and the whole f16 stack widened at once). Read from
/// the two impl blocks' sources.
#[test]
fn the_clis_cpu_backend_forwards_what_the_cpu_backend_implements() {
    let fns = |src: &str, marker: &str| -> std::collections::BTreeSet<String> {
        let start = src.find(marker).unwrap_or_else(|| panic!("{marker}"));
        let body = &src[start..start + src[start..].find("\n}\n").expect("end of the impl")];
        body.split("\n    fn ").skip(1).map(|r| r.split(['(', '<']).next().unwrap().trim().to_string()).collect()
    };
    let cpu = fns(include_str!("../src/backend/cpu/mod.rs"), "impl Compute for Cpu");
    let cli = fns(include_str!("../src/backend/rounded_cpu.rs"), "impl Compute for RoundedCpu");
    assert!(cpu.len() >= 50 && cpu.contains("conv2d_act"), "read {} methods of Cpu", cpu.len());
    let missing: Vec<&String> = cpu.difference(&cli).collect();
    assert!(missing.is_empty(), "RoundedCpu leaves to the trait's default: {missing:?}");
    let off = !std::env::var("RAN_CPU_ON_WORKERS").is_ok_and(|v| v.trim() == "1");
    let on = std::thread::spawn(|| ran::backend::rounded_cpu::RoundedCpu::default().on_workers(rayon::current_thread_index)).join().unwrap();
    assert_eq!(on.is_some(), !off, "RoundedCpu::on_workers from outside the pool");
}
