//! The EfficientNet feature extractor against the lukemelas package the paper uses
//! (tests/fixtures/effnet_small.*, made by tools/reference/make_effnet_fixtures.py): a scaled-down
//! network with static padding for 76 fed 64×64 inputs (like B4's 380 vs 256), loaded from
//! safetensors and from the torch.save'd .pth, on CPU and emulated CUDA; and B4's structure
//! (parameter count from efficientnet-pytorch, stage ends, the paddings and channels of docs/method.md §2).

mod common;
use common::*;
use ran::backend::cuda::EmulatedCuda;
use ran::backend::Padding2d;
use ran::io::pt::PtFile;
use ran::io::safetensors::SafeTensors;
use ran::models::efficientnet::{EffNetConfig, EfficientNet};
use ran::models::weights::{Loader, Synthetic, Weights};
use ran::{Backend, Cpu};

fn small_cfg(fx: &SafeTensors) -> EffNetConfig {
    let m = fx.metadata();
    EffNetConfig { width: m["width"].parse().unwrap(), depth: m["depth"].parse().unwrap(), image_size: m["image_size"].parse().unwrap(), tap_stages: vec![0, 1, 2, 4], lite: false }
}

fn check<B: Backend>(b: &B, w: &dyn Weights, fx: &SafeTensors, label: &str) -> Vec<String> {
    let cfg = small_cfg(fx);
    let unused = EfficientNet::<B>::unused_prefixes(&cfg);
    let unused: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
    let l = Loader::new(w, b).ignoring(&["x", "features", "tap0", "tap1", "tap2", "tap3"]).ignoring_prefixes(&unused);
    let net = EfficientNet::load(&cfg, &l).unwrap_or_else(|e| panic!("{label}: {e}"));
    l.finish().unwrap_or_else(|e| panic!("{label}: {e}"));
    let (xs, xv) = fx.get("x").unwrap();
    let x = b.from_host(&xs, &xv).unwrap();
    let mut fails = Vec::new();
    let (atol, rtol) = (2e-5, 1e-4);
    for (i, t) in net.taps(b, &x).unwrap().iter().enumerate() {
        let (s, want) = fx.get(&format!("tap{i}")).unwrap();
        assert_eq!(t.dims(), &s[..], "{label} tap{i} shape");
        if let Err(e) = check_close(&format!("[{label}] tap{i}"), &b.to_host(t).unwrap(), &want, atol, rtol) {
            fails.push(e);
        }
    }
    let s: usize = fx.metadata()["feat_size"].parse().unwrap();
    let f = net.features(b, &x, s).unwrap();
    if let Err(e) = check_close(&format!("[{label}] features"), &b.to_host(&f).unwrap(), &fx.get("features").unwrap().1, atol, rtol) {
        fails.push(e);
    }
    fails
}

#[test]
fn small_effnet_matches_efficientnet_pytorch() {
    // whole-written outputs come NaN-filled from the buffer pool: an unwritten element fails here
    ran::backend::cpu::buffers::set_poison(true);
    let fx = SafeTensors::open(fixture_path("effnet_small.safetensors")).unwrap();
    let pth = PtFile::open(fixture_path("effnet_small.pth")).unwrap();
    let mut f = check(&Cpu, &fx, &fx, "cpu safetensors");
    f.extend(check(&Cpu, &pth, &fx, "cpu pth"));
    f.extend(check(&EmulatedCuda::emulated(), &fx, &fx, "cuda-emulator"));
    assert!(f.is_empty(), "{}", f.join("\n"));
    let taps: Vec<usize> = serde_json::from_str(&fx.metadata()["taps"]).unwrap();
    let ends = small_cfg(&fx).stage_ends();
    assert_eq!(taps, vec![ends[0], ends[1], ends[2], ends[4]]);
}

#[test]
fn b4_structure_matches_the_package_and_the_spec() {
    let fx = SafeTensors::open(fixture_path("effnet_small.safetensors")).unwrap();
    let cfg = EffNetConfig::from_name("efficientnet-b4").unwrap();
    let ends: Vec<usize> = serde_json::from_str(&fx.metadata()["b4_stage_ends"]).unwrap();
    assert_eq!(cfg.stage_ends(), ends);
    assert_eq!(cfg.tap_channels(), vec![24, 32, 56, 160], "docs/method.md §2: 272 channels");
    let l = Loader::synthetic(&Cpu, Synthetic { seed: 3, shapes: Default::default() });
    let net = EfficientNet::load(&cfg, &l).unwrap();
    // parameters only (the package's named_parameters excludes BN running statistics)
    let params: usize = l.loaded().iter().filter(|(n, _)| !n.contains("running_")).map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(params, fx.metadata()["b4_feature_params"].parse::<usize>().unwrap(), "B4 parameters through the last tap (block 21)");
    // docs/method.md §2: static padding for 380 — stem and 3×3/s2 depthwise (blocks 2, 10) (0,1,0,1), 5×5/s2 (block 6) 2
    let asym = Padding2d::lrtb(0, 1, 0, 1);
    assert_eq!(net.stem_padding(), asym);
    let p = net.depthwise_paddings();
    assert_eq!((p[2], p[10], p[6]), (asym, asym, Padding2d::same(2)));
    assert_eq!(p[3], Padding2d::same(1), "stride-1 3×3");
    assert_eq!(p[7], Padding2d::same(2), "stride-1 5×5");
    assert_eq!(p.len(), 22, "blocks after the last tap (21) are not built");
    // at 256 the taps come out at strides 2, 4, 8, 16
    let x = Cpu.from_host(&[1, 3, 256, 256], &vec![0.1; 3 * 256 * 256]).unwrap();
    let shapes: Vec<Vec<usize>> = net.taps(&Cpu, &x).unwrap().iter().map(|t| t.dims().to_vec()).collect();
    assert_eq!(shapes, vec![vec![1, 24, 128, 128], vec![1, 32, 64, 64], vec![1, 56, 32, 32], vec![1, 160, 16, 16]]);
}

/// EfficientNet-Lite (efficientnet-lite-pytorch): ReLU6, no squeeze-excite, unscaled stem and
/// first/last stages, on CPU and emulated CUDA.
#[test]
fn lite_effnet_matches_efficientnet_lite_pytorch() {
    let fx = SafeTensors::open(fixture_path("effnet_lite_small.safetensors")).unwrap();
    let m = fx.metadata();
    let cfg = EffNetConfig { width: m["width"].parse().unwrap(), depth: m["depth"].parse().unwrap(), image_size: m["image_size"].parse().unwrap(), tap_stages: vec![0, 1, 2, 4], lite: true };
    let ends: Vec<usize> = serde_json::from_str(&m["stage_ends"]).unwrap();
    assert_eq!(cfg.stage_ends(), ends);
    let mut fails = run_lite(&Cpu, &cfg, &fx, "cpu");
    fails.extend(run_lite(&EmulatedCuda::emulated(), &cfg, &fx, "emulator"));
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    let lite0 = EffNetConfig::from_name("efficientnet-lite0").unwrap();
    assert!(lite0.lite && lite0.image_size == 224);
}

fn run_lite<B: Backend>(b: &B, cfg: &EffNetConfig, fx: &SafeTensors, label: &str) -> Vec<String> {
    let l = Loader::new(fx, b).ignoring(&["x", "features", "tap0", "tap1", "tap2", "tap3"]);
    let net = EfficientNet::load(cfg, &l).unwrap_or_else(|e| panic!("{label}: {e}"));
    l.finish().unwrap_or_else(|e| panic!("{label}: {e}"));
    let (xs, xv) = fx.get("x").unwrap();
    let x = b.from_host(&xs, &xv).unwrap();
    let mut fails = Vec::new();
    for (i, t) in net.taps(b, &x).unwrap().iter().enumerate() {
        if let Err(e) = check_close(&format!("[lite {label}] tap{i}"), &b.to_host(t).unwrap(), &fx.get(&format!("tap{i}")).unwrap().1, 2e-5, 1e-4) {
            fails.push(e);
        }
    }
    let f = net.features(b, &x, 8).unwrap();
    if let Err(e) = check_close(&format!("[lite {label}] features"), &b.to_host(&f).unwrap(), &fx.get("features").unwrap().1, 2e-5, 1e-4) {
        fails.push(e);
    }
    fails
}
