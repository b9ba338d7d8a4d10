//! The paper's 553M-parameter UNet (guided-diffusion 256², + feature head) on the CPU backend:
//! load from an f16 safetensors file (memory-mapped; converted to f32 once, tensor by tensor) and
//! one forward pass at 256², timed, with the process's peak RSS; then the full detection of one
//! 256² image (KL + feature maps, EfficientNet-B4) in both feature-timestep modes. The PyTorch side (same flags,
//! same threads, and its FLOP count) is tools/bench/torch_unet.py; figures in benches/RESULTS.md.
//!
//!   cargo bench --bench models

//! (`ran bench unet` / `ran bench detect` time the same workloads without the file round trip.)

use ran::anomaly::score::FeatureTimestep;
use ran::bench::workloads::{self, PAPER_FLAGS};
use ran::io::flags::ModelFlags;
use ran::io::safetensors::{write_streaming, Dtype};
use ran::models::load_unet;
use ran::models::unet::UNet;
use ran::models::weights::{synth_values, Loader, Synthetic};
use ran::{Backend, Cpu};
use std::collections::BTreeMap;
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    ran::sysinfo::peak_rss_mb().unwrap_or(f64::NAN)
}

/// Child process: load the model file and run one forward, so peak RSS covers only that.
fn child(path: &str) {
    let t0 = Instant::now();
    let m: UNet<Cpu> = load_unet(std::path::Path::new(path), &Cpu, &[]).expect("load");
    let load_s = t0.elapsed().as_secs_f64();
    let flags = ModelFlags::parse(PAPER_FLAGS).unwrap();
    let inp = workloads::unet_inputs(&Cpu, &flags, 1).unwrap();
    let mut times = Vec::new();
    for _ in 0..2 {
        let t1 = Instant::now();
        let o = m.forward(&Cpu, &inp.x, &inp.t, inp.y.as_deref()).expect("forward");
        times.push(t1.elapsed().as_secs_f64());
        assert_eq!(o.out.dims(), &[1, 6, 256, 256]);
    }
    println!("load {load_s:.1} s; forward 256² (batch 1): {:.2} s, {:.2} s; peak RSS {:.0} MB", times[0], times[1], peak_rss_mb());

    // the full detection of one 256² image: KL + feature maps with EfficientNet-B4 (random weights)
    let eff = workloads::synthetic_effnet(&Cpu, "efficientnet-b4").unwrap();
    for mode in [FeatureTimestep::RespacedIndex, FeatureTimestep::Tau] {
        let scorer = workloads::scorer(&m, &eff, mode).unwrap();
        let noise = workloads::detect_noise(&Cpu, &scorer.cfg.timesteps, 1, 256).unwrap();
        let t1 = Instant::now();
        let s = scorer.score(&Cpu, &inp.x, &noise, inp.y.as_deref()).expect("score");
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
    shapes.insert("feat_rec1.0.weight".to_string(), vec![workloads::feat_tap_channels(&flags).unwrap()]);
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
