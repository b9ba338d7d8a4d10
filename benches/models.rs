//! The paper's 553M-parameter UNet (guided-diffusion 256², + feature head) on the CPU backend:
//! load from an f16 safetensors file (memory-mapped; converted to f32 once, tensor by tensor) and
//! one forward pass at 256², timed, with the process's peak RSS; then the full detection of one
//! 256² image (KL + feature maps, EfficientNet-B4) in both feature-timestep modes. The PyTorch side (same flags,
//! same threads, and its FLOP count) is tools/bench/torch_unet.py; figures in benches/RESULTS.md.
//!
//!   cargo bench --bench models

use ran::anomaly::noise::gaussian;
use ran::anomaly::score::{FeatureTimestep, ScoreConfig, Scorer};
use ran::diffusion::{BetaSchedule, Diffusion};
use ran::io::flags::ModelFlags;
use ran::io::safetensors::{write_streaming, Dtype};
use ran::models::efficientnet::{EffNetConfig, EfficientNet};
use ran::models::load_unet;
use ran::models::unet::UNet;
use ran::models::weights::{synth_values, Loader, Synthetic};
use ran::{Backend, Cpu};
use std::collections::BTreeMap;
use std::time::Instant;

const PAPER_FLAGS: &str = "--image_size 256 --num_channels 256 --num_res_blocks 2 --attention_resolutions 32,16,8 \
--num_head_channels 64 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True \
--num_classes 15 --channel_mult 1,1,2,2,4,4";

fn peak_rss_mb() -> f64 {
    ran::sysinfo::peak_rss_mb().unwrap_or(f64::NAN)
}

/// Child process: load the model file and run one forward, so peak RSS covers only that.
fn child(path: &str) {
    let t0 = Instant::now();
    let m: UNet<Cpu> = load_unet(std::path::Path::new(path), &Cpu, &[]).expect("load");
    let load_s = t0.elapsed().as_secs_f64();
    let x = Cpu.from_host(&[1, 3, 256, 256], &synth_values(7, "x", &[1, 3, 256, 256])).unwrap();
    let t = Cpu.from_host(&[1], &[201.0]).unwrap();
    let mut times = Vec::new();
    for _ in 0..2 {
        let t1 = Instant::now();
        let o = m.forward(&Cpu, &x, &t, Some(&[3])).expect("forward");
        times.push(t1.elapsed().as_secs_f64());
        assert_eq!(o.out.dims(), &[1, 6, 256, 256]);
    }
    println!("load {load_s:.1} s; forward 256² (batch 1): {:.2} s, {:.2} s; peak RSS {:.0} MB", times[0], times[1], peak_rss_mb());

    // the full detection of one 256² image: KL + feature maps with EfficientNet-B4 (random weights)
    let ecfg = EffNetConfig::from_name("efficientnet-b4").unwrap();
    let el = Loader::synthetic(&Cpu, Synthetic { seed: 5, shapes: BTreeMap::new() });
    let eff = EfficientNet::load(&ecfg, &el).unwrap();
    let noise: Vec<_> = [5u64, 50, 100].iter().map(|&k| Cpu.from_host(&[1, 3, 256, 256], &gaussian(0, k, 3 * 256 * 256)).unwrap()).collect();
    for mode in [FeatureTimestep::RespacedIndex, FeatureTimestep::Tau] {
        let scorer =
            Scorer { unet: &m, effnet: Some(&eff), diffusion: Diffusion::new(BetaSchedule::Linear, 1000, "250").unwrap(), cfg: ScoreConfig { feature_timestep: mode, ..ScoreConfig::default() } };
        let t1 = Instant::now();
        let s = scorer.score(&Cpu, &x, &noise, Some(&[3])).expect("score");
        println!("detect 256² (KL + feature, timesteps 5,50,100, feature timestep {mode:?}): {:.1} s per image (score {:.3})", t1.elapsed().as_secs_f64(), s[0].image_score);
    }
}

fn main() {
    if let Ok(p) = std::env::var("RAN_BENCH_MODEL_CHILD") {
        return child(&p);
    }
    let flags = ModelFlags::parse(PAPER_FLAGS).unwrap();
    let mut shapes = BTreeMap::new();
    shapes.insert("label_emb.weight".to_string(), vec![15, 1024]);
    shapes.insert("feat_rec1.0.weight".to_string(), vec![512]);
    // the parameter list, from building the model once on random weights
    let entries: Vec<(String, Vec<usize>)> = {
        let l = Loader::synthetic(&Cpu, Synthetic { seed: 1, shapes });
        UNet::load(&flags, &l).unwrap();
        l.loaded()
    };
    let params: usize = entries.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let path = std::env::temp_dir().join("ran-bench-paper-unet-f16.safetensors");
    let mut meta = BTreeMap::new();
    meta.insert("model_flags".to_string(), PAPER_FLAGS.to_string());
    write_streaming(&path, &entries, |n| Ok(synth_values(1, n, &entries.iter().find(|(k, _)| k == n).unwrap().1)), &meta, Dtype::F16).unwrap();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("paper UNet: {params} parameters in {} tensors, f16 file {:.0} MB, {}", entries.len(), size as f64 / 1e6, Cpu.name());
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe).env("RAN_BENCH_MODEL_CHILD", &path).output().expect("child");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&path);
}
