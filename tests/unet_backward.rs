//! The UNet's backward pass (training) against upstream guided_diffusion's autograd in float64
//! (tests/fixtures/unet_grad_*.safetensors, tools/reference/make_unet_grad_fixtures.py): the
//! gradient of L = Σ out·g_out + Σ feat·g_feat with respect to every parameter, on the CPU backend
//! and on the CUDA kernels over the emulator under the three schedules.
//!
//! The two configurations between them take every branch of the backward: scale-shift ResBlocks
//! (∂scale/∂shift back through emb_layers) and the additive embedding, resblock up/down and conv
//! down/up-sampling, skip convolutions, attention at two resolutions with num_head_channels and
//! num_heads, the skip concatenations, the class embedding, learned sigma, and the feature head
//! on output_blocks[10]. A gradient that misses a path (a skip, the shared embedding, the head's
//! resize) is off by O(1) for the parameters upstream of it; one lost to a wrong name is reported
//! as missing.
//!
//! Both ways of taping the forward pass the fixtures (`Activations::Keep`, the default, and
//! `Recompute`, `--recompute`), and on the CPU they give the same bits: a kept activation that is
//! not the one the forward used (stale, or taken before an add) or a recomputation that takes
//! another path than the forward (the timestep projection by another GEMM) differs in the last
//! bits at least, which the fixtures' tolerance could hide.

mod common;
use common::*;
use ran::backend::cuda::emu::{set_schedule, Schedule};
use ran::backend::cuda::EmulatedCuda;
use ran::io::flags::ModelFlags;
use ran::io::safetensors::SafeTensors;
use ran::models::unet::{Activations, UNet};
use ran::models::weights::Loader;
use ran::{Backend, Cpu};

const CONFIGS: &[&str] = &["paperlike", "plain"];
/// Against float64, per parameter tensor: |got − want| ≤ ATOL + REL·max|want|. An element's float32
/// error is set by the magnitudes summed into it, which the tensor's largest entry measures, not
/// by its own (often near-cancelling) value; measured: at most 2e-5·max|want| on the CPU and the
/// emulator, so REL = 1e-4 leaves a 5× margin (printed per run). ATOL covers exact zeros upstream:
/// the bias of a conv feeding a one-channel-per-group norm has gradient Σ of ~500 O(1) terms that
/// cancel, which float32 leaves at up to 1.5e-5 (the kernels sum in f32; the CPU, in f64, at 4e-6).
const ATOL: f64 = 4e-5;
const REL: f64 = 1e-4;

/// A fixture and its model on a backend (the inputs x, t, y, g_out, g_feat read from it).
struct Case<B: Backend> {
    fx: SafeTensors,
    model: UNet<B>,
}

impl<B: Backend> Case<B> {
    fn load(b: &B, name: &str) -> Self {
        let fx = SafeTensors::open(fixture_path(&format!("unet_grad_{name}.safetensors"))).unwrap();
        let flags = ModelFlags::parse(&fx.metadata()["model_flags"]).unwrap();
        let l = Loader::new(&fx, b).ignoring(&["x", "t", "y", "g_out", "g_feat"]).ignoring_prefixes(&["grad.", "gidx."]);
        let model = UNet::load(&flags, &l).unwrap_or_else(|e| panic!("{name}: {e}"));
        l.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
        Case { fx, model }
    }
    fn input(&self, b: &B, k: &str) -> ran::Tensor<B> {
        let (s, v) = self.fx.get(k).unwrap();
        b.from_host(&s, &v).unwrap()
    }
    fn labels(&self) -> Option<Vec<usize>> {
        self.fx.contains("y").then(|| self.fx.get("y").unwrap().1.iter().map(|&v| v as usize).collect())
    }
}

fn check_config<B: Backend>(b: &B, name: &str, mode: Activations) -> Vec<String> {
    let c = Case::load(b, name);
    let (fx, model) = (&c.fx, &c.model);
    let load = |k: &str| c.input(b, k);
    let y = c.labels();
    let (o, tape) = model.forward_train_as(b, &load("x"), &load("t"), y.as_deref(), mode).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(o.feat.is_some(), fx.contains("g_feat"), "{name}: feature head");
    let g_feat = fx.contains("g_feat").then(|| load("g_feat"));
    let grads = model.backward(b, tape, &load("g_out"), g_feat.as_ref()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut failures = Vec::new();
    let (mut compared, mut worst) = (0, 0.0f64);
    let keys: Vec<String> = fx.names().filter(|k| k.starts_with("grad.")).map(String::from).collect();
    for key in &keys {
        let pname = &key["grad.".len()..];
        let Some(g) = grads.get(pname) else {
            failures.push(format!("[{}] {name}: no gradient for {pname}", b.name()));
            continue;
        };
        let (wshape, _) = fx.get(pname).unwrap();
        assert_eq!(g.dims(), &wshape[..], "{name}: ∂{pname} takes the parameter's shape");
        let all = b.to_host(g).unwrap();
        let got: Vec<f32> = match fx.contains(&format!("gidx.{pname}")) {
            true => fx.get(&format!("gidx.{pname}")).unwrap().1.iter().map(|&i| all[i as usize]).collect(),
            false => all,
        };
        let (_, want) = fx.get(key).unwrap();
        let tol = ATOL + REL * want.iter().fold(0.0f64, |a, &w| a.max((w as f64).abs()));
        match check_close(&format!("[{}] {name} ∂{pname}", b.name()), &got, &want, tol, 0.0) {
            Ok(err) => {
                compared += 1;
                worst = worst.max(err / tol);
            }
            Err(e) => failures.push(e),
        }
    }
    let extra: Vec<&String> = grads.keys().filter(|k| !fx.contains(&format!("grad.{k}"))).collect();
    if !extra.is_empty() {
        failures.push(format!("[{}] {name}: gradients for parameters upstream does not have: {extra:?}", b.name()));
    }
    println!("[{}] {name} ({mode:?}): {compared} parameter gradients, the worst element uses {:.0}% of its tolerance", b.name(), 100.0 * worst);
    assert!(compared >= 100, "{name}: only {compared} gradients compared");
    failures
}

#[test]
fn unet_parameter_gradients_match_upstream_on_cpu() {
    let modes = [Activations::Keep, Activations::Recompute];
    let f: Vec<String> = CONFIGS.iter().flat_map(|c| modes.iter().flat_map(move |&m| check_config(&Cpu, c, m))).collect();
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}

/// Keeping the inner activations and recomputing them give the same outputs and gradients, bit
/// for bit, on the CPU; the training forward's outputs are the inference forward's bits; and the
/// kept tape holds more than the recomputing one (which keeps the layers' inputs only).
#[test]
fn kept_and_recomputed_activations_give_bit_identical_gradients_on_cpu() {
    let b = &Cpu;
    for name in CONFIGS {
        let c = Case::load(b, name);
        let (x, t, y) = (c.input(b, "x"), c.input(b, "t"), c.labels());
        let g_out = c.input(b, "g_out");
        let g_feat = c.fx.contains("g_feat").then(|| c.input(b, "g_feat"));
        let plain = c.model.forward(b, &x, &t, y.as_deref()).unwrap();
        let mut runs = Vec::new();
        for mode in [Activations::Keep, Activations::Recompute] {
            let (o, tape) = c.model.forward_train_as(b, &x, &t, y.as_deref(), mode).unwrap();
            assert_eq!(b.to_host(&o.out).unwrap(), b.to_host(&plain.out).unwrap(), "{name} {mode:?}: the training forward's output is the forward's");
            assert_eq!(o.feat.as_ref().map(|f| b.to_host(f).unwrap()), plain.feat.as_ref().map(|f| b.to_host(f).unwrap()), "{name} {mode:?}: the feature head's output");
            let floats = (tape.internal_floats(), tape.input_floats());
            let grads = c.model.backward(b, tape, &g_out, g_feat.as_ref()).unwrap();
            let host: Vec<(String, Vec<f32>)> = grads.iter().map(|(k, v)| (k.clone(), b.to_host(v).unwrap())).collect();
            runs.push((floats.0, floats.1, host));
        }
        let (keep, recompute) = (&runs[0], &runs[1]);
        assert_eq!(recompute.0, 0, "{name}: the recomputing tape keeps no internals");
        assert!(keep.0 > keep.1, "{name}: the kept internals ({} floats) outweigh the layers' inputs ({})", keep.0, keep.1);
        assert_eq!(keep.1, recompute.1, "{name}: both keep every layer's input");
        assert_eq!(keep.2.len(), recompute.2.len(), "{name}: the same parameters get gradients");
        assert!(keep.2.len() >= 100, "{name}: {} gradients", keep.2.len());
        for ((k1, g1), (k2, g2)) in keep.2.iter().zip(&recompute.2) {
            assert_eq!(k1, k2);
            let differ = g1.iter().zip(g2).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{name}: ∂{k1} differs in {differ} of {} elements between kept and recomputed activations", g1.len());
        }
        println!("{name}: {} gradients bit-identical; internals kept {} floats beside {} of layer inputs", keep.2.len(), keep.0, keep.1);
    }
}

#[test]
fn unet_parameter_gradients_match_upstream_on_emulated_cuda_under_every_schedule() {
    let gpu = EmulatedCuda::emulated();
    let mut f = Vec::new();
    // the default tape under two schedules, the recomputing one under the third
    for (sched, config, mode) in [(Schedule::Forward, "paperlike", Activations::Keep), (Schedule::Reverse, "plain", Activations::Keep), (Schedule::Random(3), "paperlike", Activations::Recompute)] {
        set_schedule(sched);
        f.extend(check_config(&gpu, config, mode));
    }
    set_schedule(Schedule::Forward);
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}
