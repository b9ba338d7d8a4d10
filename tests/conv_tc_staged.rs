//! The tensor-core forward conv with its activation cast in the loader (`conv2d_tc_nchw_*`:
//! kernels/tc_gemm.cuh `TcConvFwdF32Loader`, staged through registers) against the former path
//! that casts first (`RAN_CUDA_CAST_FIRST=1`: `permute_cast_tc_*` / `permute_cast_norm_tc_*`
//! into an NHWC copy, then the cp.async kernels), on the emulator: the same numbers **bit for
//! bit** — the same cast of the same value (and of the same normalised value), the same GEMM — in
//! bf16, f16 and tf32, plain, with a residual, and with a group norm folded in, under every
//! schedule and the race detector; and one launch fewer a conv. The cast-first path's own
//! accuracy against the CPU and PyTorch is tests/conv_tensor_core.rs's (which now runs the loader
//! path) and tests/group_norm_conv.rs's.

mod common;
use common::tc::{first_difference, schedules, uniform, LOW};
use ran::backend::cuda::emu::{set_race_check, set_schedule, Schedule};
use ran::backend::cuda::tensor_core::{conv2d_tc_supported, tc_plan};
use ran::backend::cuda::EmulatedCuda;
use ran::ops::conv::{Conv2dParams, Padding2d};
use ran::ops::precision::Precision;
use ran::ops::GroupNormParams;
use ran::{Backend, Shape, Tensor};
use std::sync::Mutex;

static SCHED: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    n: usize,
    c: usize,
    hw: (usize, usize),
    o: usize,
    k: usize,
    stride: usize,
    pad: (usize, usize, usize, usize), // left, right, top, bottom
    groups: usize,
}

/// Each case names what it bites on (M = o, N = n·ho·wo, K = k²·c; BK = 32, three stages).
const CASES: [Case; 5] = [
    // 128×128 tiles, two in M and in N, N = 162 (rows past N in the second); K = 144: 4.5 steps,
    // so the staged slots wrap and the last step's upper half is past K (zeros)
    Case { name: "large_two_tiles_k_tail", n: 2, c: 16, hw: (9, 9), o: 136, k: 3, stride: 1, pad: (1, 1, 1, 1), groups: 4 },
    // one 64×64 block, K = 576 split in 4: each split's loader starts at a later tap (kt0 > 0)
    Case { name: "split_k", n: 1, c: 64, hw: (6, 6), o: 24, k: 3, stride: 1, pad: (1, 1, 1, 1), groups: 8 },
    // c = 8: a bf16 chunk is a whole tap (tf32: half), 7×7 stride 2 with top ≠ left padding
    Case { name: "c8_7x7_s2_asym", n: 1, c: 8, hw: (13, 12), o: 16, k: 7, stride: 2, pad: (3, 2, 2, 3), groups: 2 },
    // c = 40: a K step crosses taps (the loader's carry), three images (a record of the wrong
    // image shows), padding where the normalised value is not 0
    Case { name: "c40_batch3_pad", n: 3, c: 40, hw: (5, 6), o: 24, k: 3, stride: 1, pad: (1, 1, 1, 1), groups: 8 },
    // the attention block's qkv: 1×1 over T = 50 tokens, 136 outputs (three M tiles)
    Case { name: "qkv_1x1_t50", n: 1, c: 32, hw: (50, 1), o: 136, k: 1, stride: 1, pad: (0, 0, 0, 0), groups: 8 },
];

impl Case {
    fn conv(&self) -> Conv2dParams {
        let (l, r, t, b) = self.pad;
        Conv2dParams { stride: (self.stride, self.stride), padding: Padding2d::lrtb(l, r, t, b), groups: 1 }
    }
    fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.hw.0, self.hw.1]
    }
    fn w_dims(&self) -> [usize; 4] {
        [self.o, self.c, self.k, self.k]
    }
}

struct Inputs {
    x: Tensor<EmulatedCuda>,
    w: Tensor<EmulatedCuda>,
    b: Tensor<EmulatedCuda>,
    res: Tensor<EmulatedCuda>,
    gamma: Tensor<EmulatedCuda>,
    beta: Tensor<EmulatedCuda>,
}

fn inputs(e: &EmulatedCuda, c: &Case, seed: u64) -> Inputs {
    let up = |dims: &[usize], v: Vec<f32>| e.from_host(dims, &v).unwrap();
    let g = ran::ops::conv::conv2d(&Shape::new(&c.x_dims()), &Shape::new(&c.w_dims()), None, &c.conv()).unwrap();
    let ny: usize = g.y_dims().iter().product();
    let nx: usize = c.x_dims().iter().product();
    Inputs {
        // mean 0.4: the norm has something to take away
        x: up(&c.x_dims(), uniform(seed, nx).into_iter().map(|v| 0.4 + 1.5 * v).collect()),
        w: up(&c.w_dims(), uniform(seed + 1, c.o * c.c * c.k * c.k)),
        b: up(&[c.o], uniform(seed + 2, c.o)),
        res: up(&g.y_dims(), uniform(seed + 3, ny)),
        gamma: up(&[c.c], uniform(seed + 4, c.c).into_iter().map(|v| 1.0 + 0.2 * v).collect()),
        // β away from 0: act(β) ≠ 0, so normalising the zero padding would show
        beta: up(&[c.c], uniform(seed + 5, c.c).into_iter().map(|v| 0.3 + 0.5 * v).collect()),
    }
}

/// The three forms: plain conv + bias, conv + bias + residual, group norm + SiLU folded in.
fn run(e: &EmulatedCuda, c: &Case, t: &Inputs) -> [Vec<f32>; 3] {
    let host = |y: ran::Result<Tensor<EmulatedCuda>>| e.to_host(&y.unwrap_or_else(|err| panic!("{}: {err}", c.name))).unwrap();
    let gn = GroupNormParams { groups: c.groups, eps: 1e-5, silu: true };
    [
        host(e.conv2d(&t.x, &t.w, Some(&t.b), &c.conv())),
        host(e.conv2d_add(&t.x, &t.w, Some(&t.b), &t.res, &c.conv())),
        host(e.group_norm_conv2d(&t.x, &t.gamma, &t.beta, &gn, None, &t.w, Some(&t.b), None, &c.conv())),
    ]
}

/// Catches: a staged chunk stored into the wrong slot or before the slot is free (values, and the
/// race detector), put before its loads landed in registers or for the wrong stage, the K tail or
/// rows past N not zero, padding normalised instead of zero, a record of the wrong image or
/// channel, SiLU or the norm dropped, the split-K loader started at the wrong tap, the tap carry
/// wrong when a step crosses taps, tf32's 4-element chunk packed as bf16's pairs (or the reverse).
#[test]
fn the_loaders_cast_gives_the_cast_first_paths_numbers_bit_for_bit() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    for (ci, c) in CASES.iter().enumerate() {
        let g = ran::ops::conv::conv2d(&Shape::new(&c.x_dims()), &Shape::new(&c.w_dims()), None, &c.conv()).unwrap();
        for p in LOW {
            assert!(conv2d_tc_supported(&g, p), "{} {p}: not on the tensor cores", c.name);
            let first = EmulatedCuda::emulated().with_precision(p).with_cast_first(true);
            let staged = EmulatedCuda::emulated().with_precision(p).with_cast_first(false);
            set_schedule(Schedule::Forward);
            let want = run(&first, c, &inputs(&first, c, 11 + 10 * ci as u64));
            assert!(want.iter().flatten().all(|v| v.is_finite()), "{} {p}: the cast-first reference is not finite", c.name);
            let t = inputs(&staged, c, 11 + 10 * ci as u64);
            for (sched, race) in schedules() {
                // the race detector is slow: the barriers are the same code at every precision
                if race && p != Precision::Bf16 {
                    continue;
                }
                set_schedule(sched);
                let was = set_race_check(race);
                let got = run(&staged, c, &t);
                set_race_check(was);
                for (form, (gf, wf)) in ["conv2d", "conv2d_add", "group_norm_conv2d"].iter().zip(got.iter().zip(&want)) {
                    if let Some((i, a, b)) = first_difference(gf, wf) {
                        panic!("{} {p} {form} {sched:?} race={race}: element {i} of {}: loader cast {a}, cast first {b}", c.name, gf.len());
                    }
                }
            }
            set_schedule(Schedule::Forward);
            // the point: the cast pass is gone (weights' narrow copies are cached by now)
            let count = |e: &EmulatedCuda| {
                let t = inputs(e, c, 3);
                let before = e.driver_counts().unwrap();
                drop(run(e, c, &t));
                (e.driver_counts().unwrap() - before).launches
            };
            let (ls, lf) = (count(&staged), count(&first));
            assert_eq!(ls + 3, lf, "{} {p}: {ls} launches with the loader's cast, {lf} casting first", c.name);
            eprintln!("{} {p}: bit for bit; plan {:?}", c.name, tc_plan(c.o, g.n() * g.ho() * g.wo(), g.kk(), p));
        }
    }
}
