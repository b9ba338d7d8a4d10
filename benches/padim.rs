//! One gradient step of the paper's gradient denoising on the CPU backend: wide_resnet50_2 to
//! layer3 at 256² (random weights), the PaDiM embedding (500 of 1792 channels at 64²), the
//! Mahalanobis map with 4096 packed inverse factors, and the manual backward to the input — i.e.
//! `Padim::loss_and_grad`, what Algorithm 1 runs N_d times per iteration. Also the forward alone.
//! GFLOP/s counts the convolutions (forward 2·MACs; the backward to the input as much again) and
//! the Mahalanobis products. PyTorch autograd on the same work: tools/bench/torch_padim_step.py.
//! The backbone alone is also `ran bench wrn50-grad` (tools/bench/torch_wrn50_grad.py).
//!
//!   cargo bench --bench padim

use ran::anomaly::padim::{random_channels, split_ids, Padim};
use ran::backend::cpu::mahalanobis::packed_len;
use ran::backend::cuda::gpu::GpuDevice;
use ran::backend::cuda::Gpu;
use ran::bench::workloads;
use ran::models::resnet::{BlockKind, ResNetConfig};
use ran::{Backend, Cpu};
use std::time::Instant;

/// Forward MACs of the convolutions of a torchvision ResNet up to layer3 at s×s.
fn conv_macs(cfg: &ResNetConfig, s: usize) -> f64 {
    let mut macs = 3.0 * 64.0 * 49.0 * (s / 2 * s / 2) as f64;
    let (mut inp, mut hw) = (64usize, s / 4);
    for (li, (&n, planes)) in cfg.blocks.iter().zip([64usize, 128, 256]).enumerate() {
        let width = planes * cfg.width_per_group / 64;
        for bi in 0..n {
            let stride = if bi == 0 && li > 0 { 2 } else { 1 };
            let out_hw = hw / stride;
            let o = (out_hw * out_hw) as f64;
            let out = planes * 4;
            assert_eq!(cfg.block, BlockKind::Bottleneck);
            macs += (inp * width) as f64 * (hw * hw) as f64 + (width * width * 9) as f64 * o + (width * out) as f64 * o;
            if bi == 0 {
                macs += (inp * out) as f64 * o;
            }
            inp = out;
            hw = out_hw;
        }
    }
    macs
}

fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f(); // warm-up
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    ts[reps / 2]
}

/// Times the map, the gradient step and the backbone alone on backend `b`.
fn run<B: Backend>(b: &B, label: &str) {
    let cfg = ResNetConfig::from_name("wide_resnet50_2").unwrap();
    let resnet = workloads::synthetic_resnet(b, "wide_resnet50_2").unwrap();
    let (s, d) = (256usize, 500usize);
    let p = (s / 4) * (s / 4);
    let ids = split_ids(&random_channels(1792, d, 0).unwrap(), resnet.channels()).unwrap();
    // statistics: zero mean, L⁻¹ = 0.5·I plus a small lower-triangular part (values do not change the work)
    let mut lp = vec![0.0f32; packed_len(d)];
    for i in 0..d {
        for j in 0..=i {
            lp[i * (i + 1) / 2 + j] = if i == j { 0.5 } else { 1e-3 * ((i * 7 + j * 3) % 11) as f32 };
        }
    }
    let linv: Vec<f32> = lp.iter().copied().cycle().take(p * packed_len(d)).collect();
    let padim = Padim { resnet, ids, mean: b.zeros(&[p, d]).unwrap(), linv: b.from_host(&[p, packed_len(d)], &linv).unwrap() };
    drop(linv);
    let x = b.from_host(&[1, 3, s, s], &ran::anomaly::noise::gaussian(1, 0, 3 * s * s)).unwrap();
    let reps = 3;
    // every timed closure ends with a read-back, which waits for the device
    let t_fwd = time(reps, || {
        b.to_host(&padim.anomaly_map(b, &x).unwrap()).unwrap();
    });
    let t_step = time(reps, || {
        let lg = padim.loss_and_grad(b, &x).unwrap();
        b.mean_std(&lg.grad).unwrap();
    });
    // the backbone alone: forward to layer3 and the input gradient of Σ layer outputs
    let t_bb = time(reps, || {
        workloads::backbone_grad(b, &padim.resnet, &x).unwrap();
    });
    let conv = 2.0 * conv_macs(&cfg, s);
    let maha = 2.0 * (p * packed_len(d)) as f64; // one packed mat-vec per position
    let (fwd_flop, step_flop) = (conv + maha, 2.0 * conv + 3.0 * maha);
    println!("[{label}] wide_resnet50_2 to layer3 at {s}², PaDiM {d} dims at {}², batch 1 (median of {reps})", s / 4);
    println!("  forward (map)            {:7.3} s  {:6.1} GFLOP/s ({:.1} GFLOP)", t_fwd, fwd_flop / t_fwd / 1e9, fwd_flop / 1e9);
    println!("  gradient step (fwd+bwd)  {:7.3} s  {:6.1} GFLOP/s ({:.1} GFLOP)", t_step, step_flop / t_step / 1e9, step_flop / 1e9);
    println!("  backbone fwd+bwd only    {:7.3} s  {:6.1} GFLOP/s ({:.1} GFLOP)", t_bb, 2.0 * conv / t_bb / 1e9, 2.0 * conv / 1e9);
}

fn main() {
    run(&Cpu, &format!("cpu, {} threads", rayon::current_num_threads()));
    println!("  peak RSS {:.0} MB", ran::sysinfo::peak_rss_mb().unwrap_or(f64::NAN));
    match GpuDevice::open(0) {
        Ok(dev) => run(&Gpu::new(dev), "gpu"),
        Err(e) => println!("== no GPU run: {e}"),
    }
}
