//! The weight gradients training needs (conv2d_w_backward, linear_w_backward,
//! group_norm_w_backward, embedding_w_backward): against float64 PyTorch autograd
//! (tests/fixtures/weight_grads.safetensors, tools/reference/make_weight_grad_fixtures.py) on the
//! CPU backend and on the CUDA kernels under the emulator's three schedules, and the CPU twins
//! against central differences in f64.
//!
//! Bugs these cases are there to catch: a wrong tap ↔ pixel index in the im2col transpose (any
//! conv case), a second or third GEMM tile in M, N or K never summed (wconv3x3_m70_k220,
//! wconv3x3_n144, wlinear_130x100_rows150), top and left padding swapped (wconv3x3_s2_top1_left0,
//! wconv2x4_s3_asym), the depthwise and pointwise paths (wconv_dw*, wconv1x1_pointwise_130px),
//! a group's weights written to another group (groups2), a scale-shift or SiLU term left out of
//! ∂γ/∂β (wgn_silu_ss), eps ignored (wgn_300_per_group_eps1e-3: variance 1e-4, eps 1e-3), a
//! block-stride loop over more than 256 values (same case), and repeated embedding ids that
//! overwrite instead of adding (wembedding_repeat).

mod common;
use common::fd::{fd_check, Rng};
use common::{check_close, fixture_path};
use ran::backend::cpu::{conv2d, embedding, group_norm, linear};
use ran::backend::cuda::emu::{set_schedule, Schedule};
use ran::backend::cuda::EmulatedCuda;
use ran::backend::{Backend, Conv2dParams, GroupNormParams, Padding2d};
use ran::io::safetensors::SafeTensors;
use ran::{Cpu, Shape, Tensor};
use serde_json::Value;

struct Case<'a> {
    name: String,
    params: Value,
    fx: &'a SafeTensors,
}

impl Case<'_> {
    fn op(&self) -> &str {
        self.params["op"].as_str().unwrap_or("?")
    }
    fn has(&self, k: &str) -> bool {
        self.fx.contains(&format!("{}.{k}", self.name))
    }
    fn host(&self, k: &str) -> (Vec<usize>, Vec<f32>) {
        self.fx.get(&format!("{}.{k}", self.name)).unwrap_or_else(|e| panic!("{e}"))
    }
    fn load<B: Backend>(&self, b: &B, k: &str) -> Tensor<B> {
        let (s, v) = self.host(k);
        b.from_host(&s, &v).unwrap()
    }
    fn usize(&self, k: &str) -> usize {
        self.params[k].as_u64().unwrap_or_else(|| panic!("{}: param {k}", self.name)) as usize
    }
    fn conv_params(&self) -> Conv2dParams {
        let pad: Vec<usize> = self.params["pad"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let s = self.usize("stride");
        Conv2dParams { stride: (s, s), padding: Padding2d::lrtb(pad[0], pad[1], pad[2], pad[3]), groups: self.usize("groups") }
    }
    fn gn_params(&self) -> GroupNormParams {
        GroupNormParams { groups: self.usize("groups"), eps: self.params["eps"].as_f64().unwrap() as f32, silu: self.params["silu"].as_bool().unwrap() }
    }
    fn ids(&self) -> Vec<usize> {
        self.params["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect()
    }
}

fn fixtures() -> SafeTensors {
    SafeTensors::open(fixture_path("weight_grads.safetensors")).expect("tests/fixtures/weight_grads.safetensors (tools/reference/make_weight_grad_fixtures.py)")
}

fn cases(fx: &SafeTensors) -> Vec<Case<'_>> {
    fx.metadata().iter().filter(|(k, _)| !k.starts_with("__")).map(|(k, v)| Case { name: k.clone(), params: serde_json::from_str(v).unwrap(), fx }).collect()
}

/// (atol, rtol) against float64 torch, a few times the largest error seen on the CPU and the
/// emulator (printed by each run: about 40% of the allowance for conv and linear, 25–40% for the
/// rest): f32 sums of up to 220 products (conv, linear), f32 reductions of up to 300 terms
/// (group norm; f64 on the CPU).
fn tolerance(op: &str) -> (f64, f64) {
    match op {
        "conv2d_w_backward" | "linear_w_backward" => (2e-5, 1e-5),
        "group_norm_w_backward" => (4e-6, 2e-6),
        // sums of a few f32 values
        _ => (3e-7, 2e-7),
    }
}

/// The largest |got − want| / (atol + rtol·|want|): 1.0 is the edge of the tolerance.
fn used_fraction(got: &[f32], want: &[f32], atol: f64, rtol: f64) -> f64 {
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).abs() / (atol + rtol * (w as f64).abs())).fold(0.0, f64::max)
}

/// Runs one case; returns (gradient name, values) pairs to compare with the fixture's.
fn run<B: Backend>(b: &B, c: &Case) -> ran::Result<Vec<(String, Vec<f32>)>> {
    let gy = c.load(b, "gy");
    let mut out = Vec::new();
    match c.op() {
        "conv2d_w_backward" => {
            let (x, w) = (c.load(b, "x"), c.load(b, "w"));
            let (gw, gb) = b.conv2d_w_backward(&gy, &x, w.shape(), &c.conv_params(), c.has("b"))?;
            assert_eq!(gw.shape(), w.shape(), "{}: ∂w takes w's shape", c.name);
            out.push(("g_w".into(), b.to_host(&gw)?));
            if let Some(gb) = gb {
                out.push(("g_b".into(), b.to_host(&gb)?));
            }
        }
        "linear_w_backward" => {
            let x = c.load(b, "x");
            let (gw, gb) = b.linear_w_backward(&gy, &x, c.has("b"))?;
            out.push(("g_w".into(), b.to_host(&gw)?));
            if let Some(gb) = gb {
                out.push(("g_b".into(), b.to_host(&gb)?));
            }
        }
        "group_norm_w_backward" => {
            let (x, gamma, beta) = (c.load(b, "x"), c.load(b, "gamma"), c.load(b, "beta"));
            let ss = c.has("scale").then(|| (c.load(b, "scale"), c.load(b, "shift")));
            let r = b.group_norm_w_backward(&gy, &x, &gamma, &beta, &c.gn_params(), ss.as_ref().map(|(a, s)| (a, s)))?;
            out.push(("g_gamma".into(), b.to_host(&r.gamma)?));
            out.push(("g_beta".into(), b.to_host(&r.beta)?));
            match (r.scale_shift, &ss) {
                (Some((gs, gsh)), Some((s, _))) => {
                    assert_eq!(gs.shape(), s.shape(), "{}: ∂scale takes scale's shape", c.name);
                    out.push(("g_scale".into(), b.to_host(&gs)?));
                    out.push(("g_shift".into(), b.to_host(&gsh)?));
                }
                (None, None) => {}
                _ => panic!("{}: scale-shift gradients present iff scale-shift is", c.name),
            }
        }
        "embedding_w_backward" => {
            let table = c.load(b, "table");
            out.push(("g_table".into(), b.to_host(&b.embedding_w_backward(&gy, &c.ids(), table.dims()[0])?)?));
        }
        other => panic!("{}: unknown op {other}", c.name),
    }
    Ok(out)
}

/// Every case on `b` against the fixture (and, for another backend, against the CPU's result);
/// returns the failures, prints the largest error per op and the tolerance's margin over it.
fn check<B: Backend>(b: &B, label: &str) -> Vec<String> {
    let fx = fixtures();
    let mut failures = Vec::new();
    let mut worst: std::collections::BTreeMap<String, f64> = Default::default();
    let mut compared = 0;
    for c in &cases(&fx) {
        let (atol, rtol) = tolerance(c.op());
        let got = match run(b, c) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("[{label}] {}: {e}", c.name));
                continue;
            }
        };
        let cpu = run(&Cpu, c).expect("the CPU backend runs every case");
        assert_eq!(got.len(), c.params["grads"].as_array().unwrap().len(), "{}: every listed gradient computed", c.name);
        for ((k, g), (_, cpu_v)) in got.iter().zip(&cpu) {
            let (_, want) = c.host(k);
            for (what, reference) in [("pytorch", &want), ("cpu", cpu_v)] {
                match check_close(&format!("[{label}] {}.{k} vs {what}", c.name), g, reference, atol, rtol) {
                    Ok(_) => {
                        compared += 1;
                        let w = worst.entry(c.op().to_string()).or_default();
                        *w = w.max(used_fraction(g, reference, atol, rtol));
                    }
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    for (op, f) in &worst {
        let (atol, rtol) = tolerance(op);
        println!("{label}: {op:<24} atol {atol:.0e} rtol {rtol:.0e}: the worst element uses {:.0}% of its allowance ({:.1}× margin)", 100.0 * f, 1.0 / f.max(1e-12));
    }
    assert!(compared >= 2 * 30, "{label}: only {compared} comparisons ran");
    failures
}

#[test]
fn cpu_weight_gradients_match_pytorch() {
    let f = check(&Cpu, "cpu");
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}

#[test]
fn emulated_cuda_weight_gradients_match_pytorch_and_cpu_under_every_schedule() {
    let gpu = EmulatedCuda::emulated();
    let mut failures = Vec::new();
    for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Random(11)] {
        set_schedule(sched);
        failures.extend(check(&gpu, &format!("emulator {sched:?}")));
    }
    set_schedule(Schedule::Forward);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn conv2d_w_backward_matches_finite_differences() {
    let mut r = Rng(9);
    // (name, x dims, w dims, stride, padding l r t b, groups): dense, strided with top ≠ left,
    // grouped, depthwise, pointwise
    let cases: [(&str, [usize; 4], [usize; 4], usize, [usize; 4], usize); 5] = [
        ("3x3 s1 p1", [2, 3, 5, 6], [4, 3, 3, 3], 1, [1, 1, 1, 1], 1),
        ("3x3 s2 top 1 left 0", [1, 2, 7, 6], [3, 2, 3, 3], 2, [0, 1, 1, 0], 1),
        ("3x3 groups 2", [1, 4, 5, 5], [4, 2, 3, 3], 1, [1, 1, 1, 1], 2),
        ("depthwise 3x3 s2", [2, 3, 6, 7], [3, 1, 3, 3], 2, [1, 0, 0, 1], 3),
        ("pointwise", [2, 4, 3, 5], [5, 4, 1, 1], 1, [0, 0, 0, 0], 1),
    ];
    for (name, xs, ws, stride, pad, groups) in cases {
        let p = Conv2dParams { stride: (stride, stride), padding: Padding2d::lrtb(pad[0], pad[1], pad[2], pad[3]), groups };
        let g = ran::ops::conv::conv2d(&Shape::new(&xs), &Shape::new(&ws), None, &p).unwrap();
        let x = r.vec(xs.iter().product());
        let w = r.vec(ws.iter().product());
        let gy = r.vec(Shape::new(&g.y_dims()).numel());
        let gw = conv2d::conv2d_w_backward(&gy, &x, &g);
        fd_check(&format!("conv2d_w_backward {name}"), &w, &gy, |v| conv2d::conv2d(&x, v, None, &g), &gw);
    }
}

#[test]
fn linear_and_embedding_w_backward_match_finite_differences() {
    let mut r = Rng(10);
    let (n, fin, fout) = (4, 6, 5);
    let (x, w, gy) = (r.vec(n * fin), r.vec(fout * fin), r.vec(n * fout));
    let gw = linear::linear_w_backward(&gy, &x, n, fin, fout);
    fd_check("linear_w_backward", &w, &gy, |v| linear::linear(&x, v, None, n, fin, fout), &gw);
    let (rows, dim, ids) = (5, 3, [1usize, 4, 1, 1, 0]);
    let (table, gy) = (r.vec(rows * dim), r.vec(ids.len() * dim));
    let gt = embedding::embedding_w_backward(&gy, rows, dim, &ids);
    fd_check("embedding_w_backward repeated ids", &table, &gy, |v| embedding::embedding(v, dim, &ids), &gt);
}

#[test]
fn group_norm_w_backward_matches_finite_differences() {
    let mut r = Rng(12);
    let (n, c, s, groups) = (2, 6, 5, 3);
    for (silu, with_ss) in [(false, false), (true, false), (false, true), (true, true)] {
        let p = GroupNormParams { groups, eps: 1e-5, silu };
        let g = ran::ops::norm::group_norm(&Shape::new(&[n, c, s]), &Shape::new(&[c]), &Shape::new(&[c]), &p, None).unwrap();
        let g = ran::ops::contract::GroupNormGeom { has_ss: with_ss as i32, ..g };
        let x = r.vec(n * c * s);
        let (gamma, beta) = (r.vec(c).iter().map(|v| 1.0 + 0.3 * v).collect::<Vec<_>>(), r.vec(c));
        let (sc, sh) = (r.vec(n * c), r.vec(n * c));
        let gy = r.vec(n * c * s);
        let ss = with_ss.then_some((&sc[..], &sh[..]));
        let (gg, gb, gss) = group_norm::group_norm_w_backward(&gy, &x, &gamma, &beta, ss, &g);
        let tag = format!("silu {silu}, scale-shift {with_ss}");
        fd_check(&format!("group_norm ∂γ ({tag})"), &gamma, &gy, |v| group_norm::group_norm(&x, v, &beta, ss, &g), &gg);
        fd_check(&format!("group_norm ∂β ({tag})"), &beta, &gy, |v| group_norm::group_norm(&x, &gamma, v, ss, &g), &gb);
        if let Some((gs, gsh)) = gss {
            fd_check(&format!("group_norm ∂scale ({tag})"), &sc, &gy, |v| group_norm::group_norm(&x, &gamma, &beta, Some((v, &sh[..])), &g), &gs);
            fd_check(&format!("group_norm ∂shift ({tag})"), &sh, &gy, |v| group_norm::group_norm(&x, &gamma, &beta, Some((&sc[..], v)), &g), &gsh);
        } else {
            assert!(!with_ss, "scale-shift gradients missing");
        }
    }
}
