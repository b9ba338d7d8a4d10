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

mod common;
use common::*;
use ran::backend::cuda::emu::{set_schedule, Schedule};
use ran::backend::cuda::EmulatedCuda;
use ran::io::flags::ModelFlags;
use ran::io::safetensors::SafeTensors;
use ran::models::unet::UNet;
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

fn check_config<B: Backend>(b: &B, name: &str) -> Vec<String> {
    let fx = SafeTensors::open(fixture_path(&format!("unet_grad_{name}.safetensors"))).unwrap();
    let flags = ModelFlags::parse(&fx.metadata()["model_flags"]).unwrap();
    let l = Loader::new(&fx, b).ignoring(&["x", "t", "y", "g_out", "g_feat"]).ignoring_prefixes(&["grad.", "gidx."]);
    let model = UNet::load(&flags, &l).unwrap_or_else(|e| panic!("{name}: {e}"));
    l.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
    let load = |k: &str| {
        let (s, v) = fx.get(k).unwrap();
        b.from_host(&s, &v).unwrap()
    };
    let y: Option<Vec<usize>> = fx.contains("y").then(|| fx.get("y").unwrap().1.iter().map(|&v| v as usize).collect());
    let (o, tape) = model.forward_train(b, &load("x"), &load("t"), y.as_deref()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(o.feat.is_some(), fx.contains("g_feat"), "{name}: feature head");
    let g_feat = fx.contains("g_feat").then(|| load("g_feat"));
    let grads = model.backward(b, &tape, &load("g_out"), g_feat.as_ref()).unwrap_or_else(|e| panic!("{name}: {e}"));
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
    println!("[{}] {name}: {compared} parameter gradients, the worst element uses {:.0}% of its tolerance", b.name(), 100.0 * worst);
    assert!(compared >= 100, "{name}: only {compared} gradients compared");
    failures
}

#[test]
fn unet_parameter_gradients_match_upstream_on_cpu() {
    let f: Vec<String> = CONFIGS.iter().flat_map(|c| check_config(&Cpu, c)).collect();
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}

#[test]
fn unet_parameter_gradients_match_upstream_on_emulated_cuda_under_every_schedule() {
    let gpu = EmulatedCuda::emulated();
    let mut f = Vec::new();
    for (sched, config) in [(Schedule::Forward, "paperlike"), (Schedule::Reverse, "plain"), (Schedule::Random(3), "paperlike")] {
        set_schedule(sched);
        f.extend(check_config(&gpu, config));
    }
    set_schedule(Schedule::Forward);
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}
