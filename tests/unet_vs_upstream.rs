//! The UNet against upstream guided_diffusion's UNetModel (+ the paper's feature head) on small
//! random-weight configurations (tests/fixtures/unet_*.safetensors, made by
//! tools/reference/make_unet_fixtures.py): class-conditional, scale-shift on/off, resblock
//! up/down on/off, num_heads vs num_head_channels, legacy and new attention order, attention at
//! two resolutions, learned sigma, rescaled timesteps, the feature head. Runs on the CPU backend
//! and on the CUDA backend over the emulator.

mod common;
use common::*;
use ran::backend::cuda::EmulatedCuda;
use ran::io::flags::ModelFlags;
use ran::io::safetensors::SafeTensors;
use ran::models::unet::UNet;
use ran::models::weights::Loader;
use ran::{Backend, Cpu};

const CONFIGS: &[&str] = &["guided_paperlike", "guided_plain", "improved_style"];
/// The reference is upstream's float32 forward; through ~40 layers the two f32 summation orders
/// drift apart by a few 1e-6 (measured max 6e-6 on outputs of magnitude ~1).
const ATOL: f64 = 3e-5;
const RTOL: f64 = 1e-4;

fn check_config<B: Backend>(b: &B, name: &str) -> Vec<String> {
    let fx = SafeTensors::open(fixture_path(&format!("unet_{name}.safetensors"))).unwrap();
    let flags = ModelFlags::parse(&fx.metadata()["model_flags"]).unwrap();
    let l = Loader::new(&fx, b).ignoring(&["x", "t", "y", "out", "feat"]);
    let model = UNet::load(&flags, &l).unwrap_or_else(|e| panic!("{name}: {e}"));
    l.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
    let load = |k: &str| {
        let (s, v) = fx.get(k).unwrap();
        b.from_host(&s, &v).unwrap()
    };
    let y: Option<Vec<usize>> = fx.contains("y").then(|| fx.get("y").unwrap().1.iter().map(|&v| v as usize).collect());
    let o = model.forward(b, &load("x"), &load("t"), y.as_deref()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut failures = Vec::new();
    let mut cmp = |what: &str, got: &ran::Tensor<B>| {
        let (shape, want) = fx.get(what).unwrap();
        assert_eq!(got.dims(), &shape[..], "{name}.{what} shape");
        match check_close(&format!("[{}] {name}.{what}", b.name()), &b.to_host(got).unwrap(), &want, ATOL, RTOL) {
            Ok(err) => println!("ok  {name}.{what}: max abs err {err:.2e}"),
            Err(e) => failures.push(e),
        }
    };
    cmp("out", &o.out);
    match (&o.feat, fx.contains("feat")) {
        (Some(f), true) => cmp("feat", f),
        (None, false) => {}
        _ => failures.push(format!("{name}: feature head presence differs from the fixture")),
    }
    failures
}

#[test]
fn unet_matches_upstream_on_cpu() {
    // whole-written outputs come NaN-filled from the buffer pool: an unwritten element fails here
    ran::backend::cpu::buffers::set_poison(true);
    let f: Vec<String> = CONFIGS.iter().flat_map(|c| check_config(&Cpu, c)).collect();
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn unet_matches_upstream_on_emulated_cuda() {
    let gpu = EmulatedCuda::emulated();
    let f: Vec<String> = CONFIGS.iter().flat_map(|c| check_config(&gpu, c)).collect();
    assert!(f.is_empty(), "{}", f.join("\n"));
}

/// The same references on the real device (benches/gpu.sh runs it with --ignored). The kernels are
/// the emulator's, so the tolerance is the same; FMA contraction on the device stays far inside it.
#[test]
#[ignore = "needs an NVIDIA GPU: benches/gpu.sh runs it"]
fn unet_matches_upstream_on_the_gpu() {
    let dev = ran::backend::cuda::gpu::GpuDevice::open(0).unwrap_or_else(|e| panic!("asked for a GPU: {e}"));
    let gpu = ran::backend::cuda::Gpu::new(dev);
    let f: Vec<String> = CONFIGS.iter().flat_map(|c| check_config(&gpu, c)).collect();
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn wrong_flags_or_weights_are_named_errors() {
    let fx = SafeTensors::open(fixture_path("unet_guided_plain.safetensors")).unwrap();
    // more channels than the checkpoint has: the first conv's shape is named
    let flags = ModelFlags::parse(&fx.metadata()["model_flags"].replace("--num_channels 32", "--num_channels 64")).unwrap();
    let e = UNet::load(&flags, &Loader::new(&fx, &Cpu)).err().expect("must fail").to_string();
    assert!(e.contains("time_embed.0.weight") && e.contains("expects"), "{e}");
    // attention at a resolution the checkpoint lacks: a missing tensor is named
    let flags = ModelFlags::parse(&fx.metadata()["model_flags"].replace("--attention_resolutions 8", "--attention_resolutions 16")).unwrap();
    let e = UNet::load(&flags, &Loader::new(&fx, &Cpu)).err().expect("must fail").to_string();
    assert!(e.contains("missing") || e.contains("expects"), "{e}");
    // tensors the model does not use are reported
    let flags = ModelFlags::parse(&fx.metadata()["model_flags"]).unwrap();
    let l = Loader::new(&fx, &Cpu);
    UNet::load(&flags, &l).unwrap();
    let e = l.finish().unwrap_err().to_string();
    assert!(e.contains("does not use") && e.contains("out"), "{e}");
    // flag syntax
    assert!(ModelFlags::parse("--num_chanels 32").unwrap_err().to_string().contains("unknown flag --num_chanels"));
    assert!(ModelFlags::parse("--class_cond maybe").unwrap_err().to_string().contains("not a boolean"));
    assert!(ModelFlags::parse("--image_size").unwrap_err().to_string().contains("no value"));
}
