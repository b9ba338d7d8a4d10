//! PaDiM and the paper's Algorithm 1 against a PyTorch-autograd reference (tests/fixtures/
//! padim_small.safetensors, made by tools/reference/make_padim_fixtures.py in float64 with the
//! textbook Σ⁻¹ = inv(Σ) form): ran's fit on the same 8 training images, the anomaly map, L and
//! ∂L/∂x by the manual backward pass, then one outer iteration of Algorithm 1 step for step — five
//! normalised gradient steps and the denoising step of the UNet — on CPU and emulated CUDA.
//! Then the paper's backbone at full size: torchvision's wide_resnet50_2 at 64² with 500 PaDiM
//! channels (tests/fixtures/padim_wrn50.safetensors; weights from a counter generator both sides
//! share, tests/common `CounterWeights`), map, L and ∂L/∂x on CPU and emulated CUDA.
//! Plus the fit file's round trip and its checks.

mod common;
use common::*;
use ran::anomaly::padim::{fit_stats, host_features, split_ids, Padim, COV_EPS};
use ran::anomaly::padim_file::{self, PadimInfo, PadimStats};
use ran::anomaly::reconstruct::{denoise_step, gradient_step};
use ran::backend::cuda::EmulatedCuda;
use ran::diffusion::{BetaSchedule, Diffusion};
use ran::io::safetensors::{Dtype, SafeTensors};
use ran::models::load_unet;
use ran::models::resnet::{ResNet, ResNetConfig};
use ran::models::weights::Loader;
use ran::{Backend, Cpu};

fn backbone<B: Backend>(b: &B, st: &SafeTensors) -> (ResNet<B>, Vec<String>) {
    let cfg = ResNetConfig::infer(st).unwrap();
    let l = Loader::new(st, b).ignoring_prefixes(ResNet::<B>::unused_prefixes()).ignoring_prefixes(&["basic", "x", "layer"]);
    let net = ResNet::load(&cfg, &l).unwrap();
    l.finish().unwrap();
    let names = l.loaded().into_iter().map(|(n, _)| n).collect();
    (net, names)
}

/// Fits ran's PaDiM on the fixture's training images with the fixture's channels.
fn fit<B: Backend>(b: &B, fx: &SafeTensors, net: ResNet<B>) -> (Padim<B>, PadimStats) {
    let channels: Vec<usize> = serde_json::from_str(&fx.metadata()["channels"]).unwrap();
    let ids = split_ids(&channels, net.channels()).unwrap();
    let (ts, tv) = fx.get("train").unwrap();
    let (feats, (h, w)) = host_features(b, &net, &ids, &b.from_host(&ts, &tv).unwrap()).unwrap();
    let d = channels.len();
    let (mean, linv) = fit_stats(&feats, ts[0], h * w, d, COV_EPS).unwrap();
    let mut sorted = channels.clone();
    sorted.sort_unstable();
    let info = PadimInfo { backbone: "resnet_small".into(), channels: sorted, layer_channels: net.channels(), image_size: (ts[2], ts[3]), feature_size: (h, w), eps: COV_EPS, n_train: ts[0] };
    let padim = Padim { ids, mean: b.from_host(&[h * w, d], &mean).unwrap(), linv: b.from_host(&[h * w, d * (d + 1) / 2], &linv).unwrap(), resnet: net };
    (padim, PadimStats { info, mean, linv })
}

fn check<B: Backend>(b: &B) -> Vec<String> {
    let fx = SafeTensors::open(fixture_path("padim_small.safetensors")).unwrap();
    let rs = SafeTensors::open(fixture_path("resnet_small.safetensors")).unwrap();
    let (net, _) = backbone(b, &rs);
    let (padim, _) = fit(b, &fx, net);
    let m = fx.metadata();
    let (xs, xv) = fx.get("x").unwrap();
    let x = b.from_host(&xs, &xv).unwrap();
    let mut fails = Vec::new();
    let mut cmp = |what: &str, got: &[f32], atol: f64, rtol: f64| {
        let (_, want) = fx.get(what).unwrap();
        match check_close(&format!("[{}] {what}", b.name()), got, &want, atol, rtol) {
            Ok(e) => println!("[{}] {what:<9} max abs err {e:.2e}", b.name()),
            Err(e) => fails.push(e),
        }
    };
    // the map (values ~10) and L: f32 features and factors vs float64 torch
    let lg = padim.loss_and_grad(b, &x).unwrap();
    cmp("map", &b.to_host(&lg.map).unwrap(), 1e-4, 1e-4);
    cmp("loss", &[lg.loss[0] as f32], 0.0, 1e-5);
    // the gradient (|g| ≤ 0.23): through Mahalanobis, the resizes and the whole ResNet
    cmp("grad", &b.to_host(&lg.grad).unwrap(), 2e-6, 1e-4);

    // Algorithm 1: five normalised steps (s·g moves each pixel by ~0.02, so 1e-5 is tight)
    let lr: f32 = m["lr"].parse().unwrap();
    let mut cur = x.clone();
    let mut losses = Vec::new();
    for j in 1..=m["nd"].parse::<usize>().unwrap() {
        let (nx, l) = gradient_step(b, &padim, &cur, lr).unwrap();
        losses.push(l[0] as f32);
        cur = nx;
        cmp(&format!("step{j}"), &b.to_host(&cur).unwrap(), 1e-5, 1e-5);
    }
    cmp("losses", &losses, 0.0, 1e-5);
    let unet = load_unet(&fixture_path("unet_guided_plain.safetensors"), b, &["x", "t", "out"]).unwrap();
    let diffusion = Diffusion::new(BetaSchedule::parse("linear").unwrap(), 1000, "250").unwrap();
    let den = denoise_step(b, &unet, &diffusion, &cur, m["k"].parse().unwrap(), None, None).unwrap();
    cmp("denoised", &b.to_host(&den).unwrap(), 2e-5, 1e-5);
    fails
}

#[test]
fn padim_gradient_and_algorithm1_match_torch_autograd_cpu() {
    let f = check(&Cpu);
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn padim_gradient_and_algorithm1_match_torch_autograd_emulated_cuda() {
    let f = check(&EmulatedCuda::emulated());
    assert!(f.is_empty(), "{}", f.join("\n"));
}

/// The paper's backbone itself: torchvision's wide_resnet50_2 (68.9 M layer1–3 parameters, from
/// the shared counter generator) at 64², PaDiM with 500 of 1792 channels fitted on 4 images.
fn check_wrn50<B: Backend>(b: &B) -> Vec<String> {
    let fx = SafeTensors::open(fixture_path("padim_wrn50.safetensors")).unwrap();
    let m = fx.metadata();
    let w = CounterWeights { shapes: serde_json::from_str(&m["state_dict_shapes"]).unwrap() };
    let cfg = ResNetConfig::infer(&w).unwrap();
    assert_eq!(cfg, ResNetConfig::from_name("wide_resnet50_2").unwrap());
    let l = Loader::new(&w, b);
    let net = ResNet::load(&cfg, &l).unwrap();
    l.finish().unwrap();
    let (padim, _) = fit(b, &fx, net);
    let (xs, xv) = fx.get("x").unwrap();
    let lg = padim.loss_and_grad(b, &b.from_host(&xs, &xv).unwrap()).unwrap();
    let mut fails = Vec::new();
    // map values ~9–17 after 19 residual blocks in f32 vs f64; |grad| ≤ 0.027
    for (what, got, atol, rtol) in [("map", b.to_host(&lg.map).unwrap(), 2e-4, 1e-4), ("loss", vec![lg.loss[0] as f32], 0.0, 2e-5), ("grad", b.to_host(&lg.grad).unwrap(), 2e-6, 2e-4)] {
        let (_, want) = fx.get(what).unwrap();
        match check_close(&format!("[{}] wide_resnet50_2 {what}", b.name()), &got, &want, atol, rtol) {
            Ok(e) => println!("[{}] wide_resnet50_2 {what:<5} max abs err {e:.2e}", b.name()),
            Err(e) => fails.push(e),
        }
    }
    fails
}

#[test]
fn wide_resnet50_2_padim_gradient_matches_torch_autograd_cpu() {
    let f = check_wrn50(&Cpu);
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn padim_file_round_trips_and_rejects_bad_files() {
    let b = Cpu;
    let fx = SafeTensors::open(fixture_path("padim_small.safetensors")).unwrap();
    let rs = SafeTensors::open(fixture_path("resnet_small.safetensors")).unwrap();
    let (net, names) = backbone(&b, &rs);
    let (padim, stats) = fit(&b, &fx, net);
    let dir = std::env::temp_dir().join(format!("ran_padim_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("padim.safetensors");
    padim_file::save(&path, &rs, &names, &stats, Dtype::F32, &Default::default()).unwrap();
    let (back, info) = padim_file::load(&path, &b).unwrap();
    assert_eq!(info, stats.info);
    let (xs, xv) = fx.get("x").unwrap();
    let x = b.from_host(&xs, &xv).unwrap();
    assert_eq!(b.to_host(&back.anomaly_map(&b, &x).unwrap()).unwrap(), b.to_host(&padim.anomaly_map(&b, &x).unwrap()).unwrap());

    // a model file is not a fit; a fit at another image size is refused by the map
    let err = padim_file::load(&fixture_path("unet_guided_plain.safetensors"), &b).err().unwrap().to_string();
    assert!(err.contains("unet_guided_plain.safetensors") && err.contains("ran fit-padim"), "{err}");
    let big = b.from_host(&[1, 3, 64, 64], &vec![0.0; 3 * 64 * 64]).unwrap();
    let err = back.anomaly_map(&b, &big).err().unwrap().to_string();
    assert!(err.contains("image size of the fit"), "{err}");
    // NaN statistics are named
    let mut bad = PadimStats { info: stats.info.clone(), mean: stats.mean.clone(), linv: stats.linv.clone() };
    bad.linv[5] = f32::NAN;
    padim_file::save(&path, &rs, &names, &bad, Dtype::F32, &Default::default()).unwrap();
    let err = padim_file::load(&path, &b).err().unwrap().to_string();
    assert!(err.contains("linv") && err.contains("NaN"), "{err}");
    // too few images, non-finite features
    assert!(fit_stats(&[0.0; 10], 1, 5, 2, COV_EPS).is_err());
    let mut feats = vec![0.5f32; 3 * 2 * 2];
    feats[3] = f32::INFINITY;
    assert!(fit_stats(&feats, 3, 2, 2, COV_EPS).unwrap_err().to_string().contains("position"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wide_resnet50_2_padim_gradient_matches_torch_autograd_emulated_cuda() {
    let f = check_wrn50(&EmulatedCuda::emulated());
    assert!(f.is_empty(), "{}", f.join("\n"));
}
