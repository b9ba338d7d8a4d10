//! Kernels at the UNet's shapes on every backend this machine has: the CPU backend always, the
//! GPU when one is there (the CUDA emulator is for correctness, not speed, and is not timed).
//! Prints the median time and GFLOP/s (compute-bound ops) or GB/s (memory-bound ops), and on a
//! GPU the share of the device's fp32 / DRAM peak. PyTorch's side: tools/bench/torch_ops.py;
//! latest figures: benches/RESULTS.md.
//!
//! One convolution is also `ran bench conv` (tools/bench/torch_conv.py).
//!
//!   cargo bench --bench kernels            (all)
//!   cargo bench --bench kernels -- conv    (names containing "conv")

use ran::backend::cuda::gpu::GpuDevice;
use ran::backend::cuda::Gpu;
use ran::backend::{Backend, GroupNormParams};
use ran::bench::workloads;
use ran::{Cpu, Tensor};
use std::time::{Duration, Instant};

fn rand<B: Backend>(b: &B, dims: &[usize], seed: u64) -> Tensor<B> {
    workloads::rand_tensor(b, dims, seed).unwrap()
}

/// Median wall time over at least 5 runs and ~2 s, after one warm-up run; `sync` waits for the
/// device so asynchronous launches are timed to completion.
fn time(mut f: impl FnMut(), sync: &dyn Fn()) -> Duration {
    f();
    sync();
    let mut v = Vec::new();
    let start = Instant::now();
    while v.len() < 5 || (start.elapsed() < Duration::from_secs(2) && v.len() < 200) {
        let t = Instant::now();
        f();
        sync();
        v.push(t.elapsed());
    }
    v.sort();
    v[v.len() / 2]
}

enum Work {
    Flops(f64),
    Bytes(f64),
}

struct Reporter {
    /// (fp32 TFLOP/s, DRAM GB/s) of the device, when known
    peaks: Option<(f64, f64)>,
}

impl Reporter {
    fn report(&self, name: &str, d: Duration, w: Work) {
        let s = d.as_secs_f64();
        let (rate, pct) = match w {
            Work::Flops(f) => (format!("{:9.1} GFLOP/s", f / s / 1e9), self.peaks.map(|p| 100.0 * f / s / 1e12 / p.0)),
            Work::Bytes(b) => (format!("{:9.1} GB/s   ", b / s / 1e9), self.peaks.map(|p| 100.0 * b / s / 1e9 / p.1)),
        };
        let pct = pct.map(|p| format!("  {p:5.1}% of peak")).unwrap_or_default();
        println!("{name:<48} {:9.3} ms {rate}{pct}", s * 1e3);
    }
}

fn run<B: Backend>(b: &B, want: &dyn Fn(&str) -> bool, sync: &dyn Fn(), r: &Reporter) {
    println!("== {}", b.name());
    for &(c, hw) in &[(256usize, 64usize), (128, 256)] {
        let name = format!("conv2d_3x3 {c}->{c} @{hw}x{hw}");
        let (x, w, bias, p) = {
            let k = workloads::conv_case(b, 1, [c, hw, hw], c, 3).unwrap();
            (k.x, k.w, k.bias, k.p)
        };
        let flops = 2.0 * (c * c * 9 * hw * hw) as f64;
        if want(&name) {
            r.report(&name, time(|| drop(b.conv2d(&x, &w, Some(&bias), &p).unwrap()), sync), Work::Flops(flops));
        }
        let name = format!("conv2d_x_backward_3x3 {c}->{c} @{hw}x{hw}");
        if want(&name) && c == 256 {
            let gy = rand(b, &[1, c, hw, hw], 4);
            r.report(&name, time(|| drop(b.conv2d_x_backward(&gy, &w, x.shape(), &p).unwrap()), sync), Work::Flops(flops));
        }
    }

    let name = "group_norm+silu 256ch @64x64";
    if want(name) {
        let x = rand(b, &[1, 256, 64, 64], 5);
        let (g, be) = (rand(b, &[256], 6), rand(b, &[256], 7));
        let bytes = 2.0 * 4.0 * (256 * 64 * 64) as f64;
        r.report(name, time(|| drop(b.group_norm(&x, &g, &be, &GroupNormParams::gn32(true), None).unwrap()), sync), Work::Bytes(bytes));
    }

    // PaDiM at the paper's size: 500 dims at 64×64 positions, the inverse factors packed (2.1 GB
    // read per pass); memory-bound: GB/s counts the factors' bytes per pass (the backward makes two,
    // z = L⁻¹(f−μ) again and then L⁻ᵀz)
    let (d, p) = (500usize, 64 * 64);
    let packed = d * (d + 1) / 2;
    for back in [false, true] {
        let name = if back { "mahalanobis_x_backward 500 dims @64x64" } else { "mahalanobis 500 dims @64x64" };
        if want(name) {
            let f = rand(b, &[1, d, 64, 64], 10);
            let mean = rand(b, &[p, d], 11);
            let linv = rand(b, &[p, packed], 12);
            let bytes = if back { 2.0 } else { 1.0 } * 4.0 * (p * packed) as f64;
            if back {
                let gd = rand(b, &[1, 1, 64, 64], 13);
                r.report(name, time(|| drop(b.mahalanobis_x_backward(&gd, &f, &mean, &linv).unwrap()), sync), Work::Bytes(bytes));
            } else {
                r.report(name, time(|| drop(b.mahalanobis(&f, &mean, &linv).unwrap()), sync), Work::Bytes(bytes));
            }
        }
    }
    let name = "gather_channels 1024 -> 500 @64x64";
    if want(name) {
        let x = rand(b, &[1, 1024, 64, 64], 14);
        let ids: Vec<usize> = (0..500).map(|i| i * 2).collect();
        let bytes = 2.0 * 4.0 * (500 * 64 * 64) as f64;
        r.report(name, time(|| drop(b.gather_channels(&x, &ids).unwrap()), sync), Work::Bytes(bytes));
    }

    let name = "attention_legacy 4 heads x 64 dims, 1024 tokens";
    if want(name) {
        let qkv = rand(b, &[1, 3 * 256, 1024], 8);
        // QKᵀ and PV: 2 · (2·T·T·d) per head
        let flops = 4.0 * 4.0 * (1024.0 * 1024.0 * 64.0);
        r.report(name, time(|| drop(b.attention_legacy(&qkv, 4).unwrap()), sync), Work::Flops(flops));
    }
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    run(&Cpu, &want, &|| {}, &Reporter { peaks: None });
    match GpuDevice::open(0) {
        Ok(dev) => {
            let peaks = dev.peaks();
            if let Some((tf, gbs)) = peaks {
                println!("(device peaks from its attributes: {tf:.1} fp32 TFLOP/s, {gbs:.0} GB/s DRAM)");
            }
            let g = Gpu::new(dev);
            run(&g, &want, &|| g.device().synchronize().unwrap(), &Reporter { peaks });
        }
        Err(e) => println!("== no GPU benchmarks: {e}"),
    }
}
