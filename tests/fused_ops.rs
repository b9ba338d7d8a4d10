//! The fusions of issue #20 item 3 beyond the op table's value checks (src/optable/fused.rs
//! derives their reference cases from torch's): each fused op is one launch on the CUDA backend,
//! the CPU twin of the stacked projections is each part's own `linear` bit for bit, and the
//! UNet's stacked projections follow a parameter update.

use ran::backend::cuda::EmulatedCuda;
use ran::backend::{Conv2dParams, GroupNormParams};
use ran::bench::workloads::{synthetic_unet, unet_inputs};
use ran::io::flags::ModelFlags;
use ran::models::unet::UNet;
use ran::optable::sizes::uniform;
use ran::{Backend, Cpu, Tensor};

/// A UNet small enough to run in a second: scale-shift ResBlocks, up/down ResBlocks, attention.
const TINY: &str = "--image_size 16 --num_channels 32 --num_res_blocks 1 --attention_resolutions 8 --num_head_channels 32 \
--learn_sigma True --class_cond True --num_classes 3 --channel_mult 1,2 --resblock_updown True --use_scale_shift_norm True";

fn t<B: Backend>(b: &B, dims: &[usize], seed: u64) -> Tensor<B> {
    b.from_host(dims, &uniform(dims.iter().product(), seed)).unwrap()
}

/// Launches `f` makes on the emulated CUDA backend.
fn launches(b: &EmulatedCuda, f: impl FnOnce()) -> u64 {
    let before = b.driver_counts().unwrap().launches;
    f();
    b.driver_counts().unwrap().launches - before
}

/// Catches: a fused op that still runs as its parts (the count per UNet forward in
/// benches/RESULTS.md would not move): conv + residual, the stacked linear, group norm with
/// scale-shift read from packed columns (groups of 64 values: one block each, one launch), a
/// two-part concat.
#[test]
fn each_fused_op_is_one_launch_on_cuda() {
    let b = EmulatedCuda::emulated();
    let (x, w, bias, res) = (t(&b, &[2, 16, 6, 5], 1), t(&b, &[8, 16, 3, 3], 2), t(&b, &[8], 3), t(&b, &[2, 8, 6, 5], 4));
    assert_eq!(launches(&b, || drop(b.conv2d_add(&x, &w, Some(&bias), &res, &Conv2dParams::new(1, 1, 1)).unwrap())), 1, "conv2d_add");
    let (e, wl, bl) = (t(&b, &[2, 24], 5), t(&b, &[40, 24], 6), t(&b, &[40], 7));
    assert_eq!(launches(&b, || drop(b.linear_parts(&e, &wl, Some(&bl), &[16, 8, 16]).unwrap())), 1, "linear_parts");
    let (h, ga, be, emb) = (t(&b, &[2, 32, 4, 4], 8), t(&b, &[32], 9), t(&b, &[32], 10), t(&b, &[2, 70], 11));
    assert_eq!(launches(&b, || drop(b.group_norm_emb(&h, &ga, &be, &GroupNormParams { groups: 8, eps: 1e-5, silu: true }, &emb, 3).unwrap())), 1, "group_norm_emb");
    let (a, c) = (t(&b, &[2, 3, 4, 4], 12), t(&b, &[2, 5, 4, 4], 13));
    assert_eq!(launches(&b, || drop(b.concat_channels(&[&a, &c]).unwrap())), 1, "concat of two");
}

/// Catches: the CPU twin of `linear_parts` running one GEMM over the stacked rows (the gemm
/// crate's order may then differ from the per-block linears and move the demo's numbers), or a
/// part written to the wrong columns or taking the wrong rows of w or the bias.
#[test]
fn cpu_linear_parts_is_each_parts_own_linear_bit_for_bit() {
    let b = Cpu;
    let parts = [5usize, 1, 11, 64];
    let out: usize = parts.iter().sum();
    let (x, w, bias) = (t(&b, &[3, 33], 21), t(&b, &[out, 33], 22), t(&b, &[out], 23));
    let got = b.to_host(&b.linear_parts(&x, &w, Some(&bias), &parts).unwrap()).unwrap();
    let (wv, bv) = (b.to_host(&w).unwrap(), b.to_host(&bias).unwrap());
    let mut off = 0;
    for &k in &parts {
        let wk = b.from_host(&[k, 33], &wv[off * 33..(off + k) * 33]).unwrap();
        let bk = b.from_host(&[k], &bv[off..off + k]).unwrap();
        let want = b.to_host(&b.linear(&x, &wk, Some(&bk)).unwrap()).unwrap();
        for r in 0..3 {
            assert_eq!(&got[r * out + off..r * out + off + k], &want[r * k..(r + 1) * k], "part at {off}, row {r}");
        }
        off += k;
    }
    // parts that do not tile the rows are a shape error, not a panic
    let e = b.linear_parts(&x, &w, Some(&bias), &[5, 1]).unwrap_err().to_string();
    assert!(e.contains("linear_parts") && e.contains("81"), "{e}");
    assert!(b.linear_parts(&x, &w, Some(&bias), &[0, out]).is_err());
}

/// Catches: the stacked projections kept after `visit_params_mut` replaced the blocks' weights
/// (an optimiser step): the forward would keep projecting with the old ones.
#[test]
fn the_stacked_projections_follow_a_parameter_update() {
    let b = Cpu;
    let f = ModelFlags::parse(TINY).unwrap();
    let inp = unet_inputs(&b, &f, 2).unwrap();
    let out = |m: &UNet<Cpu>| b.to_host(&m.forward(&b, &inp.x, &inp.t, inp.y.as_deref()).unwrap().out).unwrap();
    let bump = |m: &mut UNet<Cpu>| {
        m.visit_params_mut(&mut |name, t| {
            if name.ends_with("emb_layers.1.bias") {
                *t = b.scale_add_scalar(t, 1.0, 0.25)?;
            }
            Ok(())
        })
        .unwrap()
    };
    let mut m = synthetic_unet(&b, &f, false, 1).unwrap();
    let before = out(&m);
    bump(&mut m);
    let after = out(&m);
    assert_ne!(before, after, "the update did not reach the forward");
    // the same update made before any forward gives the same numbers
    let mut fresh = synthetic_unet(&b, &f, false, 1).unwrap();
    bump(&mut fresh);
    assert_eq!(out(&fresh), after);
}

/// Catches: the residual dropped or added twice on the tensor-core path, in the direct epilogue
/// or in split-K's reduction (the op table's low-precision suite runs only small convs, which
/// take no split-K). Against the CPU on the same bf16-rounded operands: the products are exact,
/// only the f32 summation order differs — the kernel's |err| ≤ 2·(K/16 + 1)·2⁻²³·Σ|a·b|
/// (kernels/README.md) plus the CPU's sequential sum's K·2⁻²⁴·Σ|a·b|; at K = 288 and
/// Σ|a·b| ≤ 288·0.25 that is 1.6e-3, and a lost residual (values up to 0.5) is ~300× it.
#[test]
fn conv2d_add_on_the_tensor_cores_adds_the_residual_once_with_and_without_split_k() {
    use ran::backend::cuda::precision_dispatch::{route, GemmOp, Route};
    use ran::backend::cuda::tensor_core::tc_plan;
    use ran::ops::precision::Precision;
    let p = Precision::Bf16;
    let gpu = EmulatedCuda::emulated().with_precision(p);
    for (c, o, hw, want_splits) in [(32usize, 16usize, 6usize, true), (16, 8, 9, false)] {
        let k = 9 * c;
        assert_eq!(tc_plan(o, hw * hw, k, p).splits > 1, want_splits, "c {c}: the plan this case is for");
        let g = ran::ops::conv::conv2d(&ran::Shape::new(&[1, c, hw, hw]), &ran::Shape::new(&[o, c, 3, 3]), Some(&ran::Shape::new(&[o])), &Conv2dParams::new(1, 1, 1)).unwrap();
        assert_eq!(route(GemmOp::Conv2d(&g), p), Route::TensorCore, "c {c}");
        let (mut xv, mut wv) = (uniform(c * hw * hw, 31), uniform(o * k, 32));
        p.round_slice(&mut xv);
        p.round_slice(&mut wv);
        let (bv, rv) = (uniform(o, 33), uniform(o * hw * hw, 34));
        let prm = Conv2dParams::new(1, 1, 1);
        let on = |xb: &EmulatedCuda| {
            let (x, w, bias, res) =
                (xb.from_host(&[1, c, hw, hw], &xv).unwrap(), xb.from_host(&[o, c, 3, 3], &wv).unwrap(), xb.from_host(&[o], &bv).unwrap(), xb.from_host(&[1, o, hw, hw], &rv).unwrap());
            xb.to_host(&xb.conv2d_add(&x, &w, Some(&bias), &res, &prm).unwrap()).unwrap()
        };
        let got = on(&gpu);
        let cpu = Cpu;
        let (x, w, bias, res) =
            (cpu.from_host(&[1, c, hw, hw], &xv).unwrap(), cpu.from_host(&[o, c, 3, 3], &wv).unwrap(), cpu.from_host(&[o], &bv).unwrap(), cpu.from_host(&[1, o, hw, hw], &rv).unwrap());
        let want = cpu.to_host(&cpu.conv2d_add(&x, &w, Some(&bias), &res, &prm).unwrap()).unwrap();
        let sum_ab = k as f64 * 0.25;
        let tol = 2.0 * (k as f64 / 16.0 + 1.0) * 2f64.powi(-23) * sum_ab + k as f64 * 2f64.powi(-24) * sum_ab;
        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() as f64).fold(0.0, f64::max);
        assert!(worst <= tol, "c {c}: max |got − want| {worst:e} > {tol:e}");
    }
}
