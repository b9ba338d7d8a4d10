//! The whole scoring pipeline against the same pipeline built from the upstream packages with
//! identical noise (tests/fixtures/detect_paperlike.safetensors, made by
//! tools/reference/make_detect_fixtures.py): KL map, feature map (both feature-timestep modes),
//! ensemble and image score, timesteps batched through the UNet or not, on the CPU backend and on
//! emulated CUDA.

mod common;
use common::*;
use ran::anomaly::score::{Ensemble, FeatureTimestep, ScoreConfig, Scorer};
use ran::backend::cuda::EmulatedCuda;
use ran::diffusion::{BetaSchedule, Diffusion};
use ran::io::flags::ModelFlags;
use ran::io::safetensors::SafeTensors;
use ran::models::efficientnet::{EffNetConfig, EfficientNet};
use ran::models::unet::UNet;
use ran::models::weights::Loader;
use ran::{Backend, Cpu};

fn run<B: Backend>(b: &B) -> Vec<String> {
    let mfx = SafeTensors::open(fixture_path("unet_guided_paperlike.safetensors")).unwrap();
    let flags = ModelFlags::parse(&mfx.metadata()["model_flags"]).unwrap();
    let l = Loader::new(&mfx, b).ignoring(&["x", "t", "y", "out", "feat"]);
    let unet = UNet::load(&flags, &l).unwrap();
    l.finish().unwrap();
    let efx = SafeTensors::open(fixture_path("effnet_b4w.safetensors")).unwrap();
    let m = efx.metadata();
    let ecfg = EffNetConfig { width: m["width"].parse().unwrap(), depth: m["depth"].parse().unwrap(), image_size: m["image_size"].parse().unwrap(), tap_stages: vec![0, 1, 2, 4], lite: false };
    let el = Loader::new(&efx, b);
    let eff = EfficientNet::load(&ecfg, &el).unwrap();
    el.finish().unwrap();
    let fx = SafeTensors::open(fixture_path("detect_paperlike.safetensors")).unwrap();
    let load = |k: &str| {
        let (s, v) = fx.get(k).unwrap();
        b.from_host(&s, &v).unwrap()
    };
    let y: Vec<usize> = fx.get("y").unwrap().1.iter().map(|&v| v as usize).collect();
    let noise = vec![load("noise_k5"), load("noise_k50"), load("noise_k100")];
    let mut fails = Vec::new();
    let (atol, rtol) = (1e-4, 1e-4);
    for (mode, feat_key, batch_timesteps) in [(FeatureTimestep::RespacedIndex, "feat_map", true), (FeatureTimestep::Tau, "feat_map_tau", true), (FeatureTimestep::RespacedIndex, "feat_map", false)] {
        let scorer = Scorer {
            unet: &unet,
            effnet: Some(&eff),
            diffusion: Diffusion::new(BetaSchedule::Linear, 1000, "250").unwrap(),
            cfg: ScoreConfig { feature_timestep: mode, batch_timesteps, ..ScoreConfig::default() },
        };
        let s = scorer.score(b, &load("x0"), &noise, Some(&y)).unwrap();
        let cat = |f: &dyn Fn(&ran::anomaly::score::ImageScores) -> Vec<f32>| s.iter().flat_map(f).collect::<Vec<f32>>();
        let mut cmp = |what: &str, got: Vec<f32>, key: &str| {
            if let Err(e) = check_close(&format!("[{}] {mode:?} batch_timesteps={batch_timesteps} {what}", b.name()), &got, &fx.get(key).unwrap().1, atol, rtol) {
                fails.push(e);
            }
        };
        cmp("kl_map", cat(&|i| i.kl_map.clone()), "kl_map");
        cmp("feat_map", cat(&|i| i.feat_map.clone().unwrap()), feat_key);
        if mode == FeatureTimestep::RespacedIndex && batch_timesteps {
            cmp("score_map", cat(&|i| i.score_map.clone()), "score_map");
            cmp("image_score", s.iter().map(|i| i.image_score).collect(), "image_score");
            // the released script's sum is twice the α = 0.5 ensemble
            let sum = Scorer { cfg: ScoreConfig { ensemble: Ensemble::Sum, ..ScoreConfig::default() }, ..scorer };
            let s2 = sum.score(b, &load("x0"), &noise, Some(&y)).unwrap();
            let twice: Vec<f32> = fx.get("score_map").unwrap().1.iter().map(|v| 2.0 * v).collect();
            if let Err(e) = check_close("sum ensemble", &s2.iter().flat_map(|i| i.score_map.clone()).collect::<Vec<_>>(), &twice, 2.0 * atol, rtol) {
                fails.push(e);
            }
        }
    }
    fails
}

#[test]
fn detection_pipeline_matches_upstream_on_cpu() {
    let f = run(&Cpu);
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn detection_pipeline_matches_upstream_on_emulated_cuda() {
    let f = run(&EmulatedCuda::emulated());
    assert!(f.is_empty(), "{}", f.join("\n"));
}

/// The same reference on the real device (benches/gpu.sh runs it with --ignored).
#[test]
#[ignore = "needs an NVIDIA GPU: benches/gpu.sh runs it"]
fn detection_pipeline_matches_upstream_on_the_gpu() {
    let dev = ran::backend::cuda::gpu::GpuDevice::open(0).unwrap_or_else(|e| panic!("asked for a GPU: {e}"));
    let f = run(&ran::backend::cuda::Gpu::new(dev));
    assert!(f.is_empty(), "{}", f.join("\n"));
}
