//! `Backend::conv2d_gn` (backend/cuda/gn_out.rs, kernels/gn_out.cuh): a conv that also makes its
//! output's group-norm records in its epilogue, and the conv that normalises by them. On the
//! emulated CUDA backend at f32 against the CPU backend, which runs the unfused ops (conv2d,
//! group_norm, conv2d; itself checked against PyTorch by tests/ops_vs_torch.rs). The records are
//! also checked field by field against the group statistics of the output computed here in f64.
//! The tensor-core producer (bf16) is held to the same record checks, and its y bit for bit to
//! the same conv without records.
//! Under every schedule, with the race detector where the kernels are instrumented.

mod common;
use common::tc::{schedules, uniform};
use ran::backend::cuda::emu::{set_race_check, set_schedule, Schedule};
use ran::backend::cuda::EmulatedCuda;
use ran::backend::GnSpec;
use ran::ops::contract::GN_PRE_FLOATS;
use ran::ops::conv::Conv2dParams;
use ran::ops::GroupNormParams;
use ran::{Backend, Cpu, Tensor};
use std::sync::Mutex;

static SCHED: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    /// the producer's output channels (the records' norm is over them)
    o: usize,
    groups: usize,
    /// the producer normalises its own input (records made by the fold's statistics launch)
    norm_in: bool,
    res: bool,
    /// the consumer norm's scale-shift from emb columns
    emb: bool,
    /// added to the producer's bias: the output's mean, against a spread of ~1
    offset: f32,
}

/// Columns of emb before scale (odd, so a wrong offset shows) and after shift.
const EMB_BEFORE: usize = 3;
const EMB_AFTER: usize = 2;

/// Each case names what it bites on.
const CASES: [Case; 5] = [
    // 96 outputs: two row tiles, the second partial; 3 channels a group, so group 21 (channels
    // 63–65) straddles the row tiles (a merge per row tile alone would be wrong); 16×16 = 4 tiles
    // an image, batch 2 (a tile's moments filed under the wrong image or tile shows)
    Case { name: "two_row_tiles_straddling_group_batch2", n: 2, c: 8, h: 16, w: 16, o: 96, groups: 32, norm_in: false, res: false, emb: false, offset: 0.0 },
    // a normalising producer with a residual, the consumer's scale-shift from emb columns; mean
    // 1000 against a spread of ~1: a variance taken as E[x²] − E[x]² in f32 loses every digit
    Case { name: "norm_in_res_emb_mean_1000", n: 1, c: 32, h: 8, w: 24, o: 64, groups: 16, norm_in: true, res: true, emb: true, offset: 1000.0 },
    // one 64-value tile an image (8×8, the paper's lowest level), batch 3, 2 channels a group
    Case { name: "one_tile_batch3", n: 3, c: 16, h: 8, w: 8, o: 64, groups: 32, norm_in: false, res: true, emb: false, offset: 0.5 },
    // 32×32: 16 tiles an image, so each of a row's 4 merging threads takes 4 (its stride loop)
    Case { name: "sixteen_tiles_an_image", n: 1, c: 8, h: 32, w: 32, o: 64, groups: 32, norm_in: false, res: false, emb: true, offset: 0.0 },
    // 512 groups of one channel: the image's last block has more groups than threads (its loop)
    Case { name: "512_groups_8_row_tiles", n: 1, c: 8, h: 8, w: 8, o: 512, groups: 512, norm_in: false, res: false, emb: false, offset: 0.0 },
];

impl Case {
    fn emb_width(&self) -> usize {
        EMB_BEFORE + 2 * self.o + EMB_AFTER
    }
}

/// The producer's and consumer's parameters, uploaded to one backend.
struct Inputs<B: Backend> {
    x: Tensor<B>,
    in_gamma: Tensor<B>,
    in_beta: Tensor<B>,
    w: Tensor<B>,
    b: Tensor<B>,
    res: Option<Tensor<B>>,
    gamma: Tensor<B>,
    beta: Tensor<B>,
    emb: Option<Tensor<B>>,
    /// the consumer's 3×3 conv over the producer's output
    w2: Tensor<B>,
    b2: Tensor<B>,
}

fn inputs<B: Backend>(e: &B, c: &Case, seed: u64) -> Inputs<B> {
    let up = |dims: &[usize], v: Vec<f32>| e.from_host(dims, &v).unwrap();
    let scaled = |s: u64, n: usize, k: f32, add: f32| uniform(s, n).into_iter().map(|v| add + k * v).collect::<Vec<_>>();
    let (n, hw) = (c.n, c.h * c.w);
    Inputs {
        x: up(&[n, c.c, c.h, c.w], scaled(seed, n * c.c * hw, 1.5, 0.4)),
        in_gamma: up(&[c.c], scaled(seed + 1, c.c, 0.2, 1.0)),
        in_beta: up(&[c.c], scaled(seed + 2, c.c, 0.5, 0.3)),
        w: up(&[c.o, c.c, 3, 3], scaled(seed + 3, c.o * c.c * 9, 1.0 / (c.c * 3) as f32, 0.0)),
        b: up(&[c.o], scaled(seed + 4, c.o, 1.0, c.offset)),
        res: c.res.then(|| up(&[n, c.o, c.h, c.w], scaled(seed + 5, n * c.o * hw, 1.0, 0.0))),
        gamma: up(&[c.o], scaled(seed + 6, c.o, 0.2, 1.0)),
        beta: up(&[c.o], scaled(seed + 7, c.o, 0.5, 0.3)),
        emb: c.emb.then(|| up(&[n, c.emb_width()], scaled(seed + 8, n * c.emb_width(), 0.3, 0.1))),
        w2: up(&[8, c.o, 3, 3], scaled(seed + 9, 8 * c.o * 9, 1.0 / (c.o * 3) as f32, 0.0)),
        b2: up(&[8], scaled(seed + 10, 8, 1.0, 0.0)),
    }
}

fn conv3() -> Conv2dParams {
    Conv2dParams::new(1, 1, 1)
}

fn in_spec<'a, B: Backend>(t: &'a Inputs<B>) -> GnSpec<'a, B> {
    GnSpec { gamma: &t.in_gamma, beta: &t.in_beta, p: GroupNormParams { groups: 4, eps: 1e-5, silu: true }, emb: None }
}

fn next_spec<'a, B: Backend>(c: &Case, t: &'a Inputs<B>) -> GnSpec<'a, B> {
    GnSpec { gamma: &t.gamma, beta: &t.beta, p: GroupNormParams { groups: c.groups, eps: 1e-5, silu: true }, emb: t.emb.as_ref().map(|e| (e, EMB_BEFORE)) }
}

/// (y, y's records if made, z = the consumer conv of y normalised by them).
fn chain<B: Backend>(e: &B, c: &Case, t: &Inputs<B>) -> (Vec<f32>, Option<Vec<f32>>, Vec<f32>) {
    let ins = c.norm_in.then(|| in_spec(t));
    let next = next_spec(c, t);
    let (y, rec) = e.conv2d_gn(&t.x, None, ins.as_ref(), &t.w, Some(&t.b), t.res.as_ref(), &conv3(), Some(&next)).unwrap_or_else(|err| panic!("{}: {err}", c.name));
    let (z, none) = e.conv2d_gn(&y, rec.as_ref(), Some(&next), &t.w2, Some(&t.b2), None, &conv3(), None).unwrap();
    assert!(none.is_none(), "{}: records made with no norm to make them for", c.name);
    (e.to_host(&y).unwrap(), rec.map(|r| e.to_host(&r).unwrap()), e.to_host(&z).unwrap())
}

fn check(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "{what}: element {i}: got {g}, want {w} (atol {atol}, rtol {rtol})");
    }
}

/// What records are checked against: y [n, c, hw], its norm's groups, γ, β, emb [n, emb_width]
/// (scale at EMB_BEFORE, shift at EMB_BEFORE + c), and the shift x0 expected of each (image, group).
struct Expect<'a> {
    name: &'a str,
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
    gamma: &'a [f32],
    beta: &'a [f32],
    emb: Option<&'a [f32]>,
    x0: &'a dyn Fn(usize, usize) -> f32,
}

/// The records of y against its group statistics in f64, and a, bb from γ, β and emb.
fn check_records(x: &Expect, y: &[f32], rec: &[f32]) {
    let (hw, cpg, c) = (x.hw, x.c / x.groups, x.c);
    let width = EMB_BEFORE + 2 * c + EMB_AFTER;
    assert_eq!(rec.len(), x.n * c * GN_PRE_FLOATS as usize, "{}: records", x.name);
    for img in 0..x.n {
        for g in 0..x.groups {
            let vals = &y[(img * c + g * cpg) * hw..(img * c + (g + 1) * cpg) * hw];
            let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            let rstd = 1.0 / (var + 1e-5).sqrt();
            for ch in g * cpg..(g + 1) * cpg {
                let r = &rec[(img * c + ch) * GN_PRE_FLOATS as usize..][..GN_PRE_FLOATS as usize];
                let at = format!("{} image {img} channel {ch}", x.name);
                assert_eq!(r[0], (x.x0)(img, g), "{at}: x0");
                // the mean to a few ulps of its magnitude, 1/σ to a few 1e-6 of itself
                let m = r[0] as f64 + r[1] as f64;
                assert!((m - mean).abs() <= 1e-6 + 4e-7 * mean.abs(), "{at}: mean {m} against {mean}");
                assert!((r[2] as f64 - rstd).abs() <= 2e-6 * rstd, "{at}: 1/σ {} against {rstd}", r[2]);
                let k = x.emb.map_or(1.0, |e| 1.0 + e[img * width + EMB_BEFORE + ch]);
                let sh = x.emb.map_or(0.0, |e| e[img * width + EMB_BEFORE + c + ch]);
                assert_eq!((r[3], r[4]), (x.gamma[ch] * k, x.beta[ch] * k + sh), "{at}: a, bb");
                assert_eq!(&r[5..], &[0.0; 3], "{at}: padding");
            }
        }
    }
}

/// Runs `chain` twice under every schedule (the race detector where instrumented) and checks
/// each call: `check_y` and `check_z` against the case's references, the records against y's
/// f64 statistics (x0 = the bias of the group's first channel, the shift its moments are taken
/// from), and the second call's records bit for bit the first's (fixed merge trees; a counter
/// not put back to 0 would change them).
fn chain_under_every_schedule(e: &EmulatedCuda, c: &Case, t: &Inputs<EmulatedCuda>, check_y: &dyn Fn(&str, &[f32]), check_z: &dyn Fn(&str, &[f32])) {
    let host = |x: &Tensor<EmulatedCuda>| e.to_host(x).unwrap();
    let emb = t.emb.as_ref().map(host);
    let (bias, gamma, beta) = (host(&t.b), host(&t.gamma), host(&t.beta));
    let cpg = c.o / c.groups;
    let x0 = |_: usize, g: usize| bias[g * cpg];
    for (sched, race) in schedules() {
        set_schedule(sched);
        let was = set_race_check(race);
        let mut first = None;
        for call in 0..2 {
            let at = format!("{} {sched:?} race={race} call {call}", c.name);
            let (y, rec, z) = chain(e, c, t);
            let rec = rec.unwrap_or_else(|| panic!("{at}: no records made"));
            check_y(&at, &y);
            let x = Expect { name: c.name, n: c.n, c: c.o, hw: c.h * c.w, groups: c.groups, gamma: &gamma, beta: &beta, emb: emb.as_deref(), x0: &x0 };
            check_records(&x, &y, &rec);
            check_z(&at, &z);
            match &first {
                None => first = Some(rec),
                Some(f) => assert!(f.iter().zip(&rec).all(|(a, b)| a.to_bits() == b.to_bits()), "{at}: records differ from the first call's"),
            }
        }
        set_race_check(was);
    }
    set_schedule(Schedule::Forward);
}

/// Catches: a tile's moments filed under the wrong image, tile or channel; a group merged only
/// within one row tile; sums of squares far from the data's mean (case mean_1000); the residual
/// or bias left out of the statistics; scale-shift at the wrong emb offset; a counter not put back
/// to 0 (the second call's merges would be wrong or never run: NaN-filled records); a missing
/// fence or barrier (race detector: plain loads of another block's moments, or two blocks
/// writing one record); and the consumer normalising by anything but these records.
#[test]
fn records_made_in_the_epilogue_normalise_the_next_conv() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    for (ci, c) in CASES.iter().enumerate() {
        let seed = 11 + 20 * ci as u64;
        let cpu = inputs(&Cpu, c, seed);
        let (y_cpu, rec_cpu, z_cpu) = chain(&Cpu, c, &cpu);
        assert!(rec_cpu.is_none(), "{}: the CPU makes no records", c.name);
        let e = EmulatedCuda::emulated();
        let t = inputs(&e, c, seed);
        // y: two summation orders of a 3×3 conv (~1e-6 of the bias offset's magnitude); z: y's
        // rounding difference divided by σ ~ 1, through a second conv
        chain_under_every_schedule(&e, c, &t, &|at, y| check(&format!("{at}: y"), y, &y_cpu, 1e-5, 2e-6), &|at, z| check(&format!("{at}: z"), z, &z_cpu, 2e-4, 1e-4));
    }
}

/// The tensor-core producer (bf16, `conv2d_tc_nchw_*` with its records, tc_gemm.cuh
/// `tc_gn_out`): each case names the tile, split-K and merge path it bites on.
const TC_CASES: [Case; 3] = [
    // large tile (192 > 64 outputs, 512 pixels): two row tiles of 128, the second partial, group
    // 42 (channels 126–128) across them; K = 288 in 2 splits, so the records come from each
    // tile's last split (a split that made them from its partials would be wrong); batch 2
    Case { name: "tc_large_two_row_tiles_split_k", n: 2, c: 32, h: 16, w: 16, o: 192, groups: 64, norm_in: false, res: true, emb: false, offset: 0.5 },
    // small tile (64 outputs): 16 tiles an image (the merging threads' stride loop), 2 splits; a
    // normalising producer, scale-shift from emb, mean 1000 against a spread of ~1
    Case { name: "tc_small_split_k_norm_in_mean_1000", n: 1, c: 32, h: 32, w: 32, o: 64, groups: 32, norm_in: true, res: false, emb: true, offset: 1000.0 },
    // large tile with no split (K = 144: 5 steps), batch 3, 2 tiles an image
    Case { name: "tc_large_no_split_batch3", n: 3, c: 16, h: 16, w: 16, o: 128, groups: 32, norm_in: false, res: true, emb: false, offset: 0.0 },
];

/// Catches, on the tensor cores (bf16): the records made from anything but the tile's final
/// values (a split's partials, the values before bias or residual), a tile filed under the wrong
/// image or pixel range (128 or 64 pixels a tile), the merge's row loop (128 rows, 64 threads a
/// pass) skipping rows, the records' counters colliding with split-K's in their shared buffer
/// (the second call would find them non-zero), missing fences (race detector); and y changed by
/// making them (bit for bit the conv without records).
#[test]
fn tensor_core_conv_makes_the_records_in_its_epilogue() {
    use ran::ops::precision::Precision;
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    for (ci, c) in TC_CASES.iter().enumerate() {
        let seed = 211 + 20 * ci as u64;
        let e = EmulatedCuda::emulated().with_precision(Precision::Bf16);
        let t = inputs(&e, c, seed);
        let host = |x: &Tensor<EmulatedCuda>| e.to_host(x).unwrap();
        let ins = c.norm_in.then(|| in_spec(&t));
        let next = next_spec(c, &t);
        // the same conv with no records asked for, and its consumer making its own statistics
        set_schedule(Schedule::Forward);
        let (y_plain, none) = e.conv2d_gn(&t.x, None, ins.as_ref(), &t.w, Some(&t.b), t.res.as_ref(), &conv3(), None).unwrap();
        assert!(none.is_none());
        let (z_plain, _) = e.conv2d_gn(&y_plain, None, Some(&next), &t.w2, Some(&t.b2), None, &conv3(), None).unwrap();
        let (y_plain, z_plain) = (host(&y_plain), host(&z_plain));
        // z: the consumer's bf16 operands from records that differ from the statistics launch's
        // in the last bits (another merge order): a few flipped bf16 roundings, ~1e-5 each; a
        // wrong normalisation is O(0.1)
        chain_under_every_schedule(&e, c, &t, &|at, y| assert!(y.iter().zip(&y_plain).all(|(a, b)| a.to_bits() == b.to_bits()), "{at}: y differs from the conv without records"), &|at, z| {
            check(&format!("{at}: z"), z, &z_plain, 2e-3, 1e-3)
        });
    }
    // a 12×12 output: 144 pixels an image, no whole 64-pixel tiles, so no records (the consumer
    // makes its own) and the same y
    let e = EmulatedCuda::emulated().with_precision(Precision::Bf16);
    let c = Case { name: "tc_12x12", n: 2, c: 16, h: 12, w: 12, o: 64, groups: 32, norm_in: false, res: false, emb: false, offset: 0.0 };
    let t = inputs(&e, &c, 5);
    let (_, rec, _) = chain(&e, &c, &t);
    assert!(rec.is_none(), "144 pixels an image: a tensor-core tile spans two images");
}

/// Catches: records made where a tile would span two images (ho·wo not a multiple of 64) or for
/// a grouped conv, instead of leaving them to the consumer; and misuse of records named.
#[test]
fn where_it_cannot_make_records_it_says_none_and_misuse_is_an_error() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    set_schedule(Schedule::Forward);
    let e = EmulatedCuda::emulated();
    let c = Case { name: "12x12", n: 2, c: 8, h: 12, w: 12, o: 64, groups: 32, norm_in: false, res: false, emb: false, offset: 0.0 };
    let t = inputs(&e, &c, 5);
    let cpu = inputs(&Cpu, &c, 5);
    let (y, rec, z) = chain(&e, &c, &t);
    assert!(rec.is_none(), "144 pixels an image: a 64-column tile spans two images");
    let (y_cpu, _, z_cpu) = chain(&Cpu, &c, &cpu);
    check("12x12 y", &y, &y_cpu, 1e-5, 2e-6);
    check("12x12 z", &z, &z_cpu, 2e-4, 1e-4);
    // a grouped producer
    let wg = e.from_host(&[64, 4, 3, 3], &uniform(9, 64 * 36)).unwrap();
    let next = next_spec(&c, &t);
    let (_, rec) = e.conv2d_gn(&t.x, None, None, &wg, Some(&t.b), None, &Conv2dParams::new(1, 1, 2), Some(&next)).unwrap();
    assert!(rec.is_none(), "groups = 2");
    // records without their norm, and records of the wrong shape
    let bad = e.from_host(&[2, 8, 4], &[0.0; 64]).unwrap();
    let err = e.conv2d_gn(&t.x, Some(&bad), None, &t.w, None, None, &conv3(), None).unwrap_err().to_string();
    assert!(err.contains("without the norm"), "{err}");
    let ins = in_spec(&t);
    let err = e.conv2d_gn(&t.x, Some(&bad), Some(&ins), &t.w, None, None, &conv3(), None).unwrap_err().to_string();
    assert!(err.contains("expected [2, 8, 8]"), "{err}");
    // a next norm whose channels are not the output's
    let small = GnSpec { gamma: &t.in_gamma, beta: &t.in_beta, p: GroupNormParams::gn32(true), emb: None };
    assert!(e.conv2d_gn(&t.x, None, None, &t.w, None, None, &conv3(), Some(&small)).is_err(), "8 γ for 64 channels");
}

/// Catches, for the decoder's concat that makes the records as it copies (`concat2_gn_f32`): a
/// group straddling the two parts merged as two (channels 39–41 below), a plane taken from the
/// wrong part or image, moments far from their data (parts at 1000 and −3 against spreads of 1),
/// scale-shift at the wrong emb offset, the counter not put back (second call), a plain load of
/// another block's moments (race detector), the copy itself changed (bit for bit against the
/// CPU's concat), and the float4 path (64-value planes) as well as the scalar one (108).
#[test]
fn the_concat_makes_records_as_it_copies() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let e = EmulatedCuda::emulated();
    for (ci, &(n, ca, cb, h, w, groups, emb)) in [(2usize, 40usize, 56usize, 9usize, 12usize, 32usize, true), (1, 64, 64, 8, 8, 32, false)].iter().enumerate() {
        let name = format!("concat {n}x({ca}+{cb})x{h}x{w}");
        let (c, hw) = (ca + cb, h * w);
        let seed = 200 + 10 * ci as u64;
        let level = |s: u64, k: usize, at: f32| (0..n * k * hw).map(|j| at + (j / hw) as f32 * 0.01).zip(uniform(s, n * k * hw)).map(|(a, v)| a + v).collect::<Vec<f32>>();
        let (va, vb) = (level(seed, ca, 1000.0), level(seed + 1, cb, -3.0));
        let gamma: Vec<f32> = uniform(seed + 2, c).into_iter().map(|v| 1.0 + 0.2 * v).collect();
        let beta: Vec<f32> = uniform(seed + 3, c).into_iter().map(|v| 0.3 + 0.5 * v).collect();
        let width = EMB_BEFORE + 2 * c + EMB_AFTER;
        let ve: Vec<f32> = uniform(seed + 4, n * width).into_iter().map(|v| 0.1 + 0.3 * v).collect();
        let w2: Vec<f32> = uniform(seed + 5, 8 * c * 9).into_iter().map(|v| v / (3 * c) as f32).collect();
        // the CPU: concat, then the norm's conv computing its own statistics
        let cpu = |dims: &[usize], v: &[f32]| Cpu.from_host(dims, v).unwrap();
        let (ca_t, cb_t, g_t, b_t, e_t, w_t) = (cpu(&[n, ca, h, w], &va), cpu(&[n, cb, h, w], &vb), cpu(&[c], &gamma), cpu(&[c], &beta), cpu(&[n, width], &ve), cpu(&[8, c, 3, 3], &w2));
        let spec = GnSpec { gamma: &g_t, beta: &b_t, p: GroupNormParams { groups, eps: 1e-5, silu: true }, emb: emb.then_some((&e_t, EMB_BEFORE)) };
        let (y_cpu, none) = Cpu.concat_channels_gn(&[&ca_t, &cb_t], Some(&spec)).unwrap();
        assert!(none.is_none(), "the CPU makes no records");
        let z_cpu = Cpu.to_host(&Cpu.conv2d_gn(&y_cpu, None, Some(&spec), &w_t, None, None, &conv3(), None).unwrap().0).unwrap();
        let y_cpu = Cpu.to_host(&y_cpu).unwrap();
        let up = |dims: &[usize], v: &[f32]| e.from_host(dims, v).unwrap();
        let (ca_e, cb_e, g_e, b_e, e_e, w_e) = (up(&[n, ca, h, w], &va), up(&[n, cb, h, w], &vb), up(&[c], &gamma), up(&[c], &beta), up(&[n, width], &ve), up(&[8, c, 3, 3], &w2));
        let spec_e = GnSpec { gamma: &g_e, beta: &b_e, p: GroupNormParams { groups, eps: 1e-5, silu: true }, emb: emb.then_some((&e_e, EMB_BEFORE)) };
        for (sched, race) in schedules() {
            set_schedule(sched);
            let was = set_race_check(race);
            for call in 0..2 {
                let at = format!("{name} {sched:?} race={race} call {call}");
                let (y, rec) = e.concat_channels_gn(&[&ca_e, &cb_e], Some(&spec_e)).unwrap();
                let rec = rec.unwrap_or_else(|| panic!("{at}: no records made"));
                let z = e.to_host(&e.conv2d_gn(&y, Some(&rec), Some(&spec_e), &w_e, None, None, &conv3(), None).unwrap().0).unwrap();
                let y = e.to_host(&y).unwrap();
                assert!(y.iter().zip(&y_cpu).all(|(a, b)| a.to_bits() == b.to_bits()), "{at}: the concatenation differs from the CPU's");
                let cpg = c / groups;
                // x0: the first value of the group's first plane
                let x0 = |img: usize, g: usize| y[(img * c + g * cpg) * hw];
                let x = Expect { name: &at, n, c, hw, groups, gamma: &gamma, beta: &beta, emb: emb.then_some(&ve[..]), x0: &x0 };
                check_records(&x, &y, &e.to_host(&rec).unwrap());
                // z: the statistics' rounding (~1e-6 of 1/σ), through a 3×3 conv
                check(&format!("{at}: z"), &z, &z_cpu, 2e-5, 1e-5);
            }
            set_race_check(was);
        }
        set_schedule(Schedule::Forward);
    }
}

/// Catches, for the up/down ResBlock's in_norm → resample from the records (one pass): a record
/// taken for the wrong plane (batch 2, 64 planes), SiLU dropped, the pool's window misplaced or
/// its odd last row and column not dropped (9×11), the upsample's 2×2 copies misplaced, and a
/// call with no records not falling back to the two ops.
#[test]
fn group_norm_resample_reads_the_records() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let e = EmulatedCuda::emulated();
    let c = CASES[0];
    let t = inputs(&e, &c, 31);
    let cpu = inputs(&Cpu, &c, 31);
    // records from a conv (16×16) and from a concat (9×11: odd, 99-value planes)
    let (n, h, w) = (2usize, 9usize, 11usize);
    let part = |s: u64| uniform(s, n * 48 * h * w).into_iter().map(|v| 0.2 + v).collect::<Vec<f32>>();
    let (pa, pb) = (part(41), part(42));
    for (sched, race) in schedules() {
        set_schedule(sched);
        let was = set_race_check(race);
        let at = format!("{sched:?} race={race}");
        let next = next_spec(&c, &t);
        let (y, rec) = e.conv2d_gn(&t.x, None, None, &t.w, Some(&t.b), None, &conv3(), Some(&next)).unwrap();
        let rec = rec.expect("16×16: records made");
        let cnext = next_spec(&c, &cpu);
        let y_cpu = Cpu.conv2d_gn(&cpu.x, None, None, &cpu.w, Some(&cpu.b), None, &conv3(), None).unwrap().0;
        for up in [true, false] {
            let got = e.to_host(&e.group_norm_resample(&y, Some(&rec), &next, up).unwrap()).unwrap();
            let want = Cpu.to_host(&Cpu.group_norm_resample(&y_cpu, None, &cnext, up).unwrap()).unwrap();
            // y's two summation orders (~1e-6) and the statistics' rounding (~1e-6 of 1/σ)
            check(&format!("{at} conv records up={up}"), &got, &want, 2e-5, 1e-5);
            let plain = e.to_host(&e.group_norm_resample(&y, None, &next, up).unwrap()).unwrap();
            check(&format!("{at} no records up={up}"), &plain, &want, 2e-5, 1e-5);
        }
        // the concat's records of 96 channels for a 32-group norm (3 a group; γ, β from the case)
        let (ea, eb) = (e.from_host(&[n, 48, h, w], &pa).unwrap(), e.from_host(&[n, 48, h, w], &pb).unwrap());
        let (ca, cb) = (Cpu.from_host(&[n, 48, h, w], &pa).unwrap(), Cpu.from_host(&[n, 48, h, w], &pb).unwrap());
        let (cat, crec) = e.concat_channels_gn(&[&ea, &eb], Some(&next)).unwrap();
        let crec = crec.expect("a two-part concat makes records");
        let cat_cpu = Cpu.concat_channels(&[&ca, &cb]).unwrap();
        for up in [true, false] {
            let got = e.to_host(&e.group_norm_resample(&cat, Some(&crec), &next, up).unwrap()).unwrap();
            let want = Cpu.to_host(&Cpu.group_norm_resample(&cat_cpu, None, &cnext, up).unwrap()).unwrap();
            let dims = if up { [n, 96, 2 * h, 2 * w] } else { [n, 96, h / 2, w / 2] };
            assert_eq!(got.len(), dims.iter().product::<usize>(), "{at} concat up={up}: size");
            check(&format!("{at} concat records up={up}"), &got, &want, 1e-5, 1e-5);
        }
        set_race_check(was);
    }
    set_schedule(Schedule::Forward);
}

/// Catches a bug in the grid-stride loops of gn_upsample_nearest2x_f32 and gn_avg_pool2x2_f32
/// (a grid is at most EW_MAX_BLOCKS × EW_BLOCK = 1,048,576 threads: 1,081,600 inputs make each
/// thread's walk step once) and in concat2_gn_f32's loop over a plane longer than its block
/// (67,600 values, float4 path).
#[test]
fn group_norm_resample_past_one_grid() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    set_schedule(Schedule::Forward);
    let e = EmulatedCuda::emulated();
    let (n, c, h, w) = (1usize, 16usize, 260usize, 260usize);
    assert!(n * c * h * w > (ran::ops::contract::EW_MAX_BLOCKS * ran::ops::contract::EW_BLOCK) as usize);
    let (va, vb) = (uniform(51, n * 8 * h * w), uniform(52, n * 8 * h * w).into_iter().map(|v| v + 0.5).collect::<Vec<f32>>());
    let gamma: Vec<f32> = uniform(53, c).into_iter().map(|v| 1.0 + 0.2 * v).collect();
    let beta: Vec<f32> = uniform(54, c).into_iter().map(|v| 0.3 + 0.5 * v).collect();
    let (ea, eb, eg, ebt) = (e.from_host(&[n, 8, h, w], &va).unwrap(), e.from_host(&[n, 8, h, w], &vb).unwrap(), e.from_host(&[c], &gamma).unwrap(), e.from_host(&[c], &beta).unwrap());
    let (ca, cb, cg, cbt) = (Cpu.from_host(&[n, 8, h, w], &va).unwrap(), Cpu.from_host(&[n, 8, h, w], &vb).unwrap(), Cpu.from_host(&[c], &gamma).unwrap(), Cpu.from_host(&[c], &beta).unwrap());
    let p = GroupNormParams { groups: 4, eps: 1e-5, silu: true };
    let (se, sc) = (GnSpec { gamma: &eg, beta: &ebt, p, emb: None }, GnSpec { gamma: &cg, beta: &cbt, p, emb: None });
    let (cat, rec) = e.concat_channels_gn(&[&ea, &eb], Some(&se)).unwrap();
    let rec = rec.expect("a two-part concat makes records");
    let cat_cpu = Cpu.concat_channels(&[&ca, &cb]).unwrap();
    for up in [true, false] {
        let got = e.to_host(&e.group_norm_resample(&cat, Some(&rec), &se, up).unwrap()).unwrap();
        let want = Cpu.to_host(&Cpu.group_norm_resample(&cat_cpu, None, &sc, up).unwrap()).unwrap();
        // the statistics' rounding over 270,400-value groups (~1e-6 of 1/σ)
        check(&format!("260x260 up={up}"), &got, &want, 2e-5, 1e-5);
    }
}
