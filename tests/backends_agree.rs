//! The cross-backend suite (ggml's test-backend-ops): every op-table case with an independent
//! reference — every op, input and weight gradient, optimiser step and diffusion step — runs on
//! the CUDA backend and is compared with the reference and with the CPU backend. Without a GPU the
//! CUDA backend runs over the CPU emulator of CUDA (the real kernels/*.cu and the real launch
//! code) under the emulator's forward, reverse and random thread schedules, with the race
//! detector on, and where the emulator is built with its instrumented kernels, also under
//! preemption points (switches at shared-memory accesses). The large cases (several tiles,
//! 1024-token attention) run once, forward schedule with the race detector. With
//! `--features gpu-tests` (benches/gpu.sh) the same table runs on the real device, plus the
//! production-size cases against the CPU.

mod common;
use common::table::{check_cases, Report};
use common::*;
use ran::backend::cuda::emu::{instrumented, set_race_check, set_schedule, Schedule};
use ran::backend::cuda::EmulatedCuda;
use ran::optable::{sizes, OpCase};

fn rows_checked(r: &Report, cases: &[OpCase]) -> Result<(), String> {
    let want: std::collections::BTreeSet<&str> = cases.iter().flat_map(|c| ran::optable::entries_for(c).map(|e| e.method).collect::<Vec<_>>()).collect();
    let missing: Vec<_> = want.iter().filter(|m| !r.rows.contains_key(*m)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("rows without a comparison: {missing:?}"))
    }
}

#[test]
fn emulated_cuda_matches_the_references_and_cpu_under_every_schedule() {
    let gpu = EmulatedCuda::emulated();
    let (large, small): (Vec<OpCase>, Vec<OpCase>) = fixture_cases().into_iter().partition(|c| c.is_large());
    let mut failures = Vec::new();
    // the race detector costs ~5× here (kernels/README.md): worth it on the op table
    let was = set_race_check(true);
    let mut schedules = Schedule::all(7).to_vec();
    if instrumented() {
        schedules.push(Schedule::Preempt(7));
    }
    for sched in schedules {
        set_schedule(sched);
        let label = format!("emulator {sched:?}");
        let r = check_cases(&gpu, &label, &small, 1.0);
        r.print(&label);
        failures.extend(r.failures.iter().cloned());
        failures.extend(rows_checked(&r, &small).err().map(|e| format!("[{label}] {e}")));
    }
    set_schedule(Schedule::Forward);
    let r = check_cases(&gpu, "emulator large cases", &large, 1.0);
    r.print("emulator large cases");
    failures.extend(r.failures.iter().cloned());
    failures.extend(rows_checked(&r, &large).err());
    set_race_check(was);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// On the device, FMA contraction and the math library's last-ulp differences are the GPU's own:
/// the absolute tolerances are 4× the CPU's.
#[test]
#[cfg_attr(not(feature = "gpu-tests"), ignore = "needs an NVIDIA GPU: benches/gpu.sh runs it with --features gpu-tests")]
fn real_gpu_matches_the_references_and_cpu() {
    let dev = ran::backend::cuda::gpu::GpuDevice::open(0).unwrap_or_else(|e| panic!("gpu-tests asked for a GPU: {e}"));
    let gpu = ran::backend::cuda::Gpu::new(dev);
    println!("{}", ran::Backend::name(&gpu));
    let cases = fixture_cases();
    let r = check_cases(&gpu, "gpu", &cases, 4.0);
    r.print("gpu");
    let prod = sizes::production_cases();
    let p = check_cases(&gpu, "gpu production sizes", &prod, 4.0);
    p.print("gpu production sizes");
    let mut failures: Vec<String> = r.failures.iter().chain(&p.failures).cloned().collect();
    failures.extend(rows_checked(&r, &cases).err());
    failures.extend(rows_checked(&p, &prod).err());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
