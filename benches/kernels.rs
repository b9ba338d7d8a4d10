//! CPU backend kernels at the UNet's shapes. Prints the median time and GFLOP/s (compute-bound
//! ops) or GB/s (memory-bound ops). The PyTorch side of the same shapes is
//! tools/bench/torch_ops.py; latest figures in benches/RESULTS.md.
//!
//!   cargo bench --bench kernels            (all)
//!   cargo bench --bench kernels -- conv    (names containing "conv")

use ran::backend::{Backend, Conv2dParams, GroupNormParams};
use ran::{Cpu, Tensor};
use std::time::{Duration, Instant};

fn rand(b: &Cpu, dims: &[usize], seed: u64) -> Tensor<Cpu> {
    let n: usize = dims.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    b.from_host(dims, &v).unwrap()
}

/// Median wall time over at least 5 runs and ~2 s, after one warm-up run.
fn time(mut f: impl FnMut()) -> Duration {
    f();
    let mut v = Vec::new();
    let start = Instant::now();
    while v.len() < 5 || (start.elapsed() < Duration::from_secs(2) && v.len() < 200) {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    v.sort();
    v[v.len() / 2]
}

enum Work {
    Flops(f64),
    Bytes(f64),
}

fn report(name: &str, d: Duration, w: Work) {
    let s = d.as_secs_f64();
    let rate = match w {
        Work::Flops(f) => format!("{:8.1} GFLOP/s", f / s / 1e9),
        Work::Bytes(b) => format!("{:8.1} GB/s", b / s / 1e9),
    };
    println!("{name:<44} {:9.3} ms  {rate}", s * 1e3);
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let b = Cpu;
    println!("ran CPU kernels, {} (median of runs)", b.name());

    for &(c, hw) in &[(256usize, 64usize), (128, 256)] {
        let name = format!("conv2d_3x3 {c}->{c} @{hw}x{hw}");
        let x = rand(&b, &[1, c, hw, hw], 1);
        let w = rand(&b, &[c, c, 3, 3], 2);
        let bias = rand(&b, &[c], 3);
        let p = Conv2dParams::new(1, 1, 1);
        let flops = 2.0 * (c * c * 9 * hw * hw) as f64;
        if want(&name) {
            report(&name, time(|| drop(b.conv2d(&x, &w, Some(&bias), &p).unwrap())), Work::Flops(flops));
        }
        let name = format!("conv2d_x_backward_3x3 {c}->{c} @{hw}x{hw}");
        if want(&name) && c == 256 {
            let gy = rand(&b, &[1, c, hw, hw], 4);
            report(&name, time(|| drop(b.conv2d_x_backward(&gy, &w, x.shape(), &p).unwrap())), Work::Flops(flops));
        }
    }

    let name = "group_norm+silu 256ch @64x64";
    if want(name) {
        let x = rand(&b, &[1, 256, 64, 64], 5);
        let (g, be) = (rand(&b, &[256], 6), rand(&b, &[256], 7));
        let bytes = 2.0 * 4.0 * (256 * 64 * 64) as f64;
        report(name, time(|| drop(b.group_norm(&x, &g, &be, &GroupNormParams::gn32(true), None).unwrap())), Work::Bytes(bytes));
    }

    let name = "attention_legacy 4 heads x 64 dims, 1024 tokens";
    if want(name) {
        let qkv = rand(&b, &[1, 3 * 256, 1024], 8);
        // QKᵀ and PV: 2 · (2·T·T·d) per head
        let flops = 4.0 * 4.0 * (1024.0 * 1024.0 * 64.0);
        report(name, time(|| drop(b.attention_legacy(&qkv, 4).unwrap())), Work::Flops(flops));
    }
}
