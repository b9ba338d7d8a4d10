//! `Backend::group_norm_conv2d` on the emulated CUDA backend (backend/cuda/norm_conv.rs: the
//! kernels group_norm_coefs_f32, conv2d_norm_f32 and permute_cast_norm_tc_*): group norm folded into
//! the conv that consumes it must give group_norm → conv2d's numbers **bit for bit** — one
//! arithmetic (kernels/gn_pre.cuh) over the same statistics (the same one-block or split
//! decomposition) — at f32 and on the tensor cores, under every schedule, with one launch fewer
//! where the group norm is split. Its accuracy against PyTorch's float64 (fixture cases
//! `gnconv*`) is the op table's: tests/ops_vs_torch.rs (CPU) and tests/backends_agree.rs (emulator).

mod common;
use common::tc::{first_difference, schedules, uniform};
use ran::backend::cuda::emu::{set_race_check, set_schedule, Schedule};
use ran::backend::cuda::norm_split;
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
    groups: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: (usize, usize, usize, usize), // left, right, top, bottom
    silu: bool,
    /// scale-shift from columns of a packed emb row (group_norm_emb)
    emb: bool,
    res: bool,
    bias: bool,
    /// the group norm is split over blocks (checked against norm_split)
    split: bool,
}

/// Columns of emb before scale (odd, so a wrong offset shows) and after shift.
const EMB_BEFORE: usize = 3;
const EMB_AFTER: usize = 2;

/// Each case names what it bites on.
const CASES: [Case; 4] = [
    // one block per group; batch 2 with different scale-shift per image (a record of the wrong
    // image shows); padding with bb ≠ 0 (normalising the zero padding shows at every border)
    Case { name: "one_block_emb_res_batch2", n: 2, c: 16, hw: (7, 9), groups: 4, o: 8, k: 3, stride: 1, pad: (1, 1, 1, 1), silu: true, emb: true, res: true, bias: true, split: false },
    // 6,384-value groups, split: the last block of each group merges (the counter, run twice)
    Case { name: "split_emb_res", n: 1, c: 32, hw: (56, 57), groups: 16, o: 16, k: 3, stride: 1, pad: (1, 1, 1, 1), silu: true, emb: true, res: true, bias: true, split: true },
    // the attention block's qkv: a 1×1 over [N, C, T, 1], no SiLU, T odd (no 16-byte paths);
    // 136 outputs: three tiles in M (f32 64-row, tensor-core 64-row), so the loader serves each
    Case { name: "1x1_t50_no_silu_three_m_tiles", n: 1, c: 32, hw: (50, 1), groups: 8, o: 136, k: 1, stride: 1, pad: (0, 0, 0, 0), silu: false, emb: false, res: false, bias: true, split: false },
    // stride 2, padding only bottom/right, batch 3 of split groups (6,560 values), no bias
    Case { name: "s2_asym_batch3_split", n: 3, c: 16, hw: (40, 41), groups: 4, o: 8, k: 3, stride: 2, pad: (0, 1, 0, 1), silu: true, emb: false, res: false, bias: false, split: true },
];

impl Case {
    fn conv(&self) -> Conv2dParams {
        let (l, r, t, b) = self.pad;
        Conv2dParams { stride: (self.stride, self.stride), padding: Padding2d::lrtb(l, r, t, b), groups: 1 }
    }
    fn gn(&self) -> GroupNormParams {
        GroupNormParams { groups: self.groups, eps: 1e-5, silu: self.silu }
    }
    fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.hw.0, self.hw.1]
    }
    fn y_dims(&self) -> [usize; 4] {
        let (l, r, t, b) = self.pad;
        [self.n, self.o, (self.hw.0 + t + b - self.k) / self.stride + 1, (self.hw.1 + l + r - self.k) / self.stride + 1]
    }
    fn emb_width(&self) -> usize {
        EMB_BEFORE + 2 * self.c + EMB_AFTER
    }
}

struct Inputs {
    x: Tensor<EmulatedCuda>,
    gamma: Tensor<EmulatedCuda>,
    beta: Tensor<EmulatedCuda>,
    emb: Option<Tensor<EmulatedCuda>>,
    w: Tensor<EmulatedCuda>,
    b: Option<Tensor<EmulatedCuda>>,
    res: Option<Tensor<EmulatedCuda>>,
}

fn inputs(e: &EmulatedCuda, c: &Case, seed: u64) -> Inputs {
    let up = |dims: &[usize], v: Vec<f32>| e.from_host(dims, &v).unwrap();
    let nx: usize = c.x_dims().iter().product();
    let ny: usize = c.y_dims().iter().product();
    // mean 0.4, and β, shift away from 0: act(bb) ≠ 0 where the padding is
    let x = uniform(seed, nx).into_iter().map(|v| 0.4 + 1.5 * v).collect();
    let gamma = uniform(seed + 1, c.c).into_iter().map(|v| 1.0 + 0.2 * v).collect();
    let beta = uniform(seed + 2, c.c).into_iter().map(|v| 0.3 + 0.5 * v).collect();
    let emb = c.emb.then(|| up(&[c.n, c.emb_width()], uniform(seed + 3, c.n * c.emb_width()).into_iter().map(|v| 0.3 * v + 0.1).collect()));
    let w = uniform(seed + 4, c.o * c.c * c.k * c.k).into_iter().map(|v| v / (c.c * c.k * c.k) as f32).collect();
    Inputs {
        x: up(&c.x_dims(), x),
        gamma: up(&[c.c], gamma),
        beta: up(&[c.c], beta),
        emb,
        w: up(&[c.o, c.c, c.k, c.k], w),
        b: c.bias.then(|| up(&[c.o], uniform(seed + 5, c.o))),
        res: c.res.then(|| up(&c.y_dims(), uniform(seed + 6, ny))),
    }
}

fn fused(e: &EmulatedCuda, c: &Case, t: &Inputs) -> Vec<f32> {
    let y = e.group_norm_conv2d(&t.x, &t.gamma, &t.beta, &c.gn(), t.emb.as_ref().map(|m| (m, EMB_BEFORE)), &t.w, t.b.as_ref(), t.res.as_ref(), &c.conv());
    e.to_host(&y.unwrap_or_else(|err| panic!("{}: {err}", c.name))).unwrap()
}

/// The two ops the fold replaces, on the same backend and precision.
fn unfused(e: &EmulatedCuda, c: &Case, t: &Inputs) -> Vec<f32> {
    let h = match &t.emb {
        Some(m) => e.group_norm_emb(&t.x, &t.gamma, &t.beta, &c.gn(), m, EMB_BEFORE).unwrap(),
        None => e.group_norm(&t.x, &t.gamma, &t.beta, &c.gn(), None).unwrap(),
    };
    let y = match &t.res {
        Some(r) => e.conv2d_add(&h, &t.w, t.b.as_ref(), r, &c.conv()).unwrap(),
        None => e.conv2d(&h, &t.w, t.b.as_ref(), &c.conv()).unwrap(),
    };
    e.to_host(&y).unwrap()
}

fn launches(e: &EmulatedCuda, f: impl Fn()) -> u64 {
    let before = e.driver_counts().unwrap();
    f();
    (e.driver_counts().unwrap() - before).launches
}

/// Catches: a conv that normalises its zero padding (bb ≠ 0 there), a record taken for the wrong
/// image or channel, scale-shift read at the wrong emb offset, SiLU applied when it is off (or not
/// when on), the residual or bias dropped or doubled, the tensor-core operand cast without the
/// normalisation, the split's merge different from group_norm's (any change of a bit), a missing
/// barrier (race detector), and a group counter not put back to 0 (the second call's last block
/// would be wrong: the result of the second call differs).
#[test]
fn the_fold_gives_group_norm_then_conv2d_bit_for_bit() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    for (ci, c) in CASES.iter().enumerate() {
        let x = Shape::new(&c.x_dims());
        let geom = ran::ops::norm::group_norm(&x, &Shape::new(&[c.c]), &Shape::new(&[c.c]), &c.gn(), None).unwrap();
        let split = norm_split::fused(&geom).is_none() && norm_split::plan(&geom).is_some_and(|p| p.split.splits > 1);
        assert_eq!(split, c.split, "{}: the case does not reach the decomposition it names", c.name);
        for p in [Precision::F32, Precision::Bf16, Precision::F16, Precision::Tf32] {
            let e = EmulatedCuda::emulated().with_precision(p);
            let t = inputs(&e, c, 7 + 10 * ci as u64);
            set_schedule(Schedule::Forward);
            let want = unfused(&e, c, &t);
            assert!(want.iter().all(|v| v.is_finite()), "{} {p}: the unfused reference is not finite", c.name);
            for (sched, race) in schedules() {
                // the race detector is slow: the barriers are the same code at every precision
                if race && p != Precision::Bf16 {
                    continue;
                }
                set_schedule(sched);
                let was = set_race_check(race);
                for call in 0..2 {
                    let got = fused(&e, c, &t);
                    if let Some((i, g, w)) = first_difference(&got, &want) {
                        panic!("{} {p} {sched:?} race={race} call {call}: element {i} of {}: got {g}, the two ops give {w}", c.name, got.len());
                    }
                }
                set_race_check(was);
            }
            set_schedule(Schedule::Forward);
            // the point of the fold: the group norm's apply launch is gone where it was split
            // (the weights' narrow copies are cached by the calls above, so both counts are steady)
            let (lf, lu) = (launches(&e, || drop(fused(&e, c, &t))), launches(&e, || drop(unfused(&e, c, &t))));
            assert_eq!(lf + c.split as u64, lu, "{} {p}: {lf} launches folded, {lu} unfused", c.name);
        }
    }
}

/// Catches: the fold reached for a depthwise conv (which its loader does not take) and giving a
/// wrong answer, or an error, instead of the two ops.
#[test]
fn what_it_cannot_fold_runs_as_the_two_ops() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    set_schedule(Schedule::Forward);
    let e = EmulatedCuda::emulated();
    let c = Case { name: "depthwise", n: 1, c: 8, hw: (5, 6), groups: 2, o: 8, k: 3, stride: 1, pad: (1, 1, 1, 1), silu: true, emb: false, res: false, bias: true, split: false };
    let t = inputs(&e, &c, 99);
    let dw = Conv2dParams { groups: 8, ..c.conv() };
    let w = e.from_host(&[8, 1, 3, 3], &uniform(5, 72)).unwrap();
    let got = e.to_host(&e.group_norm_conv2d(&t.x, &t.gamma, &t.beta, &c.gn(), None, &w, t.b.as_ref(), None, &dw).unwrap()).unwrap();
    let h = e.group_norm(&t.x, &t.gamma, &t.beta, &c.gn(), None).unwrap();
    let want = e.to_host(&e.conv2d(&h, &w, t.b.as_ref(), &dw).unwrap()).unwrap();
    assert_eq!(first_difference(&got, &want), None, "depthwise");
}
