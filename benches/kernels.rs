//! Every row of the op table (src/optable) at the models' production sizes
//! (src/optable/sizes.rs) on every backend this machine has: the CPU backend always, the GPU when
//! one is there (the CUDA emulator is for correctness, not speed, and is not timed). Prints the
//! median time and GFLOP/s (GEMM-like rows: the table's FLOP count) or GB/s (the rest: the least
//! traffic possible, each input read once and each output written once), and on a GPU the share
//! of the device's fp32 / DRAM peak. PyTorch's side: tools/bench/torch_ops.py; latest figures:
//! benches/RESULTS.md. One convolution is also `ran bench conv` (tools/bench/torch_conv.py).
//!
//!   cargo bench --bench kernels            (all)
//!   cargo bench --bench kernels -- conv    (rows or cases whose name contains "conv")

use ran::backend::cuda::gpu::GpuDevice;
use ran::backend::cuda::Gpu;
use ran::optable::{entries_for, run_method, sizes, Inputs, Work};
use ran::{Backend, Cpu};
use std::time::{Duration, Instant};

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

/// (fp32 TFLOP/s, DRAM GB/s) of the device, when known
fn report(label: &str, d: Duration, w: Work, peaks: Option<(f64, f64)>) {
    let s = d.as_secs_f64();
    let (rate, pct) = match w {
        Work::Flops(f) => (format!("{:9.1} GFLOP/s", f / s / 1e9), peaks.map(|p| 100.0 * f / s / 1e12 / p.0)),
        Work::Bytes(b) => (format!("{:9.1} GB/s   ", b / s / 1e9), peaks.map(|p| 100.0 * b / s / 1e9 / p.1)),
    };
    let pct = pct.map(|p| format!("  {p:5.1}% of peak")).unwrap_or_default();
    println!("{label:<80} {:9.3} ms {rate}{pct}", s * 1e3);
}

fn run<B: Backend>(b: &B, want: &dyn Fn(&str) -> bool, sync: &dyn Fn(), peaks: Option<(f64, f64)>) {
    println!("== {}", b.name());
    for c in sizes::production_cases() {
        let rows: Vec<_> = entries_for(&c).filter(|e| want(&format!("{} {}", e.method, c.name))).collect();
        if rows.is_empty() {
            continue;
        }
        let inputs = match Inputs::load(b, &c) {
            Ok(i) => i,
            Err(e) => {
                println!("{}: cannot load: {e}", c.name);
                continue;
            }
        };
        for e in rows {
            let label = format!("{} — {}", e.method, c.name);
            let out_elems = match run_method(b, e.method, &c, &inputs) {
                Ok(o) => o.iter().map(|(_, t)| t.shape().numel()).sum(),
                Err(err) => {
                    println!("{label}: error {err}");
                    continue;
                }
            };
            let d = time(|| drop(run_method(b, e.method, &c, &inputs).expect("ran once already")), sync);
            report(&label, d, e.work(&c, out_elems), peaks);
        }
    }
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    run(&Cpu, &want, &|| {}, None);
    match GpuDevice::open(0) {
        Ok(dev) => {
            let peaks = dev.peaks();
            if let Some((tf, gbs)) = peaks {
                println!("(device peaks from its attributes: {tf:.1} fp32 TFLOP/s, {gbs:.0} GB/s DRAM)");
            }
            let g = Gpu::new(dev);
            run(&g, &want, &|| g.device().synchronize().unwrap(), peaks);
        }
        Err(e) => println!("== no GPU benchmarks: {e}"),
    }
}
