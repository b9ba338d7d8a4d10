//! Every row of the op table (src/optable) at the models' production sizes
//! (src/optable/sizes.rs) on every backend this machine has: the CPU backend always, the GPU when
//! one is there (the CUDA emulator is for correctness, not speed, and is not timed). Prints the
//! median time and GFLOP/s (GEMM-like rows: the table's FLOP count) or GB/s (the rest: the least
//! traffic possible, each input read once and each output written once), and on a GPU the share
//! of the device's fp32 peak and of its bf16 tensor peak (FLOP rows) or of its DRAM bandwidth
//! (byte rows). `--gpu-only` skips the CPU; `--precision bf16|f16|tf32` times, after the f32 rows,
//! the rows that precision reaches on the GPU (the tensor-core GEMMs of
//! `optable::precision::ROUNDED_OPERANDS`, and attention) with the GPU backend at that precision
//! (backend "cuda-bf16" in the JSON); RAN_BENCH_JSON=FILE appends one JSON line per row. PyTorch's side: tools/bench/torch_ops.py; latest figures:
//! benches/RESULTS.md. One convolution is also `ran bench conv` (tools/bench/torch_conv.py).
//!
//!   cargo bench --bench kernels            (all)
//!   cargo bench --bench kernels -- conv    (rows or cases whose name contains "conv")
//!   cargo bench --bench kernels -- --gpu-only group_norm

use ran::backend::cuda::gpu::GpuDevice;
use ran::backend::cuda::Gpu;
use ran::ops::precision::Precision;
use ran::optable::{entries_for, precision::rounded_operands, run_method, sizes, Inputs, Work};
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

/// The ceilings a row's rate is a share of. Every kernel of the op table today is f32 FMA on the
/// CUDA cores; the bf16 tensor peak is printed beside it because that is what PyTorch's
/// cuDNN/cuBLAS conv and attention reach in bf16/fp16 (tools/bench/gpu_kernels.py), so the two
/// columns say how far each kernel is from its own unit and from the fastest path on the chip.
#[derive(Clone, Copy, Debug)]
struct Peaks {
    fp32_tflops: f64,
    /// dense bf16 tensor-core TFLOP/s (no sparsity)
    tensor_tflops: f64,
    dram_gbs: f64,
}

impl Peaks {
    /// From the device's attributes: fp32 from SMs × lanes × clock; the tensor peak as the
    /// datasheets' ratio of dense bf16 to fp32 for the architecture (H100/H200 SXM 989.4 / 66.9,
    /// A100 312 / 19.5, L40S 362 / 91.6, A40 149.7 / 37.4). RAN_BENCH_PEAKS=fp32,tensor,gbs
    /// (TFLOP/s, TFLOP/s, GB/s) overrides them, e.g. 67,989,4800 for the H200's datasheet.
    fn of(dev: &GpuDevice) -> Option<Peaks> {
        if let Ok(v) = std::env::var("RAN_BENCH_PEAKS") {
            let f: Vec<f64> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            match f[..] {
                [fp32_tflops, tensor_tflops, dram_gbs] => return Some(Peaks { fp32_tflops, tensor_tflops, dram_gbs }),
                _ => eprintln!("RAN_BENCH_PEAKS={v}: want three numbers fp32,tensor,gbs (TFLOP/s, TFLOP/s, GB/s); using the device's attributes"),
            }
        }
        let (fp32_tflops, dram_gbs) = dev.peaks()?;
        let ratio = match dev.compute_capability() {
            90.. => 989.4 / 66.9,
            80 => 16.0,
            _ => 4.0,
        };
        Some(Peaks { fp32_tflops, tensor_tflops: fp32_tflops * ratio, dram_gbs })
    }
}

/// One timed row: printed, and appended as a JSON line to RAN_BENCH_JSON when set.
fn report(backend: &str, method: &str, case: &str, d: Duration, w: Work, peaks: Option<Peaks>) {
    let s = d.as_secs_f64();
    let label = format!("{method} — {case}");
    let (rate, pct, row) = match w {
        Work::Flops(f) => {
            let tflops = f / s / 1e12;
            let pct = peaks.map(|p| (100.0 * tflops / p.fp32_tflops, 100.0 * tflops / p.tensor_tflops));
            let txt = pct.map(|(a, b)| format!("  {a:5.1}% of fp32 peak, {b:5.2}% of bf16 tensor peak")).unwrap_or_default();
            (format!("{:9.1} GFLOP/s", tflops * 1e3), txt, serde_json::json!({"gflop": f / 1e9, "tflops": tflops, "pct_fp32_peak": pct.map(|p| p.0), "pct_tensor_peak": pct.map(|p| p.1)}))
        }
        Work::Bytes(b) => {
            let gbs = b / s / 1e9;
            let pct = peaks.map(|p| 100.0 * gbs / p.dram_gbs);
            let txt = pct.map(|p| format!("  {p:5.1}% of DRAM bandwidth")).unwrap_or_default();
            (format!("{gbs:9.1} GB/s   "), txt, serde_json::json!({"gbytes": b / 1e9, "gbs": gbs, "pct_dram": pct}))
        }
    };
    println!("{label:<80} {:9.3} ms {rate}{pct}", s * 1e3);
    if let Some(path) = std::env::var_os("RAN_BENCH_JSON") {
        let mut row = row;
        row["backend"] = backend.into();
        row["method"] = method.into();
        row["case"] = case.into();
        row["ms"] = (s * 1e3).into();
        row["peaks"] = peaks.map(|p| serde_json::json!({"fp32_tflops": p.fp32_tflops, "tensor_bf16_tflops": p.tensor_tflops, "dram_gbs": p.dram_gbs})).unwrap_or_default();
        use std::io::Write;
        let line = format!("{row}\n");
        if let Err(e) = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| f.write_all(line.as_bytes())) {
            eprintln!("RAN_BENCH_JSON {}: {e}", std::path::Path::new(&path).display());
        }
    }
}

fn run<B: Backend>(b: &B, kind: &str, want: &dyn Fn(&str) -> bool, sync: &dyn Fn(), peaks: Option<Peaks>) {
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
            report(kind, e.method, &c.name, d, e.work(&c, out_elems), peaks);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --gpu-only: the GPU check (benches/gpu.sh) has minutes, and the CPU rows are in RESULTS.md
    let gpu_only = args.iter().any(|a| a == "--gpu-only");
    let precision = match args.iter().position(|a| a == "--precision") {
        Some(i) => match args.get(i + 1).map(|v| v.parse::<Precision>()) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                eprintln!("--precision: {e}");
                std::process::exit(2)
            }
            None => {
                eprintln!("--precision needs a value: bf16, f16 or tf32");
                std::process::exit(2)
            }
        },
        None => None,
    };
    let value_of_precision = args.iter().position(|a| a == "--precision").map(|i| i + 1);
    let filter: Vec<&String> = args.iter().enumerate().filter(|(i, a)| !a.starts_with("--") && Some(*i) != value_of_precision).map(|(_, a)| a).collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if !gpu_only {
        run(&Cpu, "cpu", &want, &|| {}, None);
    }
    match GpuDevice::open(0) {
        Ok(dev) => {
            let peaks = Peaks::of(&dev);
            if let Some(p) = peaks {
                println!("(device peaks: {:.1} fp32 TFLOP/s, {:.0} bf16 tensor TFLOP/s, {:.0} GB/s DRAM)", p.fp32_tflops, p.tensor_tflops, p.dram_gbs);
            }
            let mut g = Gpu::new(dev);
            run(&g, "cuda", &want, &|| g.device().synchronize().unwrap(), peaks);
            if let Some(p) = precision.filter(|p| *p != Precision::F32) {
                g.set_precision(p);
                let lowp = |name: &str| want(name) && name.split(' ').next().is_some_and(|m| rounded_operands(m).is_some() || m == "attention_legacy");
                run(&g, &format!("cuda-{p}"), &lowp, &|| g.device().synchronize().unwrap(), peaks);
            }
        }
        Err(e) => println!("== no GPU benchmarks: {e}"),
    }
}
