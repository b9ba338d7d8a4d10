//! The cross-backend op suite (ggml's test-backend-ops): every fixture case — every op and every
//! input gradient — runs on the CUDA backend and is compared with the PyTorch fixture and with the
//! CPU backend. Without a GPU the CUDA backend runs over the CPU emulator of CUDA (the real
//! kernels/*.cu and the real launch code), under the emulator's forward, reverse and random thread
//! schedules, since a race that forward order hides shows up in the others; where the emulator is
//! built with its instrumented kernels, also with the race detector on and under preemption
//! points (switches at shared-memory accesses). With
//! `--features gpu-tests` (benches/gpu.sh) the same table runs on the real device.

mod common;
use common::*;
use ran::backend::cuda::emu::{instrumented, set_race_check, set_schedule, Schedule};
use ran::backend::cuda::EmulatedCuda;
use ran::{Backend, Cpu};

/// Runs every case on `b`; returns the number of comparisons and the failures.
fn check_backend<B: Backend>(b: &B, label: &str, atol_scale: f64) -> (usize, Vec<String>) {
    let fx = ops_fixtures();
    let mut failures = Vec::new();
    let mut checked = 0;
    for c in &cases(&fx) {
        let (atol, rtol) = tolerance(c.op());
        let atol = atol * atol_scale;
        let got = match run_case(b, c) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("[{label}] {}: error {e}", c.name));
                continue;
            }
        };
        let cpu = run_case(&Cpu, c).expect("CPU backend runs every case");
        for ((k, g), (_, cpu_v)) in got.iter().zip(&cpu) {
            let (_, want) = c.host(k);
            for (what, reference) in [("pytorch", &want), ("cpu", cpu_v)] {
                match check_close(&format!("[{label}] {}.{k} vs {what}", c.name), g, reference, atol, rtol) {
                    Ok(_) => checked += 1,
                    Err(e) => failures.push(e),
                }
            }
        }
    }
    println!("{label}: {checked} comparisons, {} failures", failures.len());
    (checked, failures)
}

#[test]
fn emulated_cuda_matches_pytorch_and_cpu_under_every_schedule() {
    let gpu = EmulatedCuda::emulated();
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    // the race detector costs ~5× here (kernels/README.md): worth it on the op table
    let was = set_race_check(true);
    let mut schedules = Schedule::all(7).to_vec();
    if instrumented() {
        schedules.push(Schedule::Preempt(7));
    }
    for sched in schedules {
        set_schedule(sched);
        let (checked, f) = check_backend(&gpu, &format!("emulator {sched:?}"), 1.0);
        counts.push((sched, checked));
        failures.extend(f);
    }
    set_schedule(Schedule::Forward);
    set_race_check(was);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    for (sched, checked) in counts {
        assert!(checked >= 180, "{sched:?}: only {checked} comparisons ran");
    }
}

/// On the device, FMA contraction and the math library's last-ulp differences are the GPU's own:
/// the absolute tolerances are 4× the CPU's.
#[test]
#[cfg_attr(not(feature = "gpu-tests"), ignore = "needs an NVIDIA GPU: benches/gpu.sh runs it with --features gpu-tests")]
fn real_gpu_matches_pytorch_and_cpu() {
    let dev = ran::backend::cuda::gpu::GpuDevice::open(0).unwrap_or_else(|e| panic!("gpu-tests asked for a GPU: {e}"));
    let gpu = ran::backend::cuda::Gpu::new(dev);
    println!("{}", gpu.name());
    let (checked, failures) = check_backend(&gpu, "gpu", 4.0);
    assert!(checked >= 180, "only {checked} comparisons ran");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
