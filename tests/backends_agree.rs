//! The cross-backend op suite (ggml's test-backend-ops): every fixture case — every op and every
//! input gradient — runs on the CUDA backend over the CPU emulator of CUDA, i.e. the real
//! kernels/*.cu and the real launch code, and is compared with the PyTorch fixture and with the
//! CPU backend. Repeated under the emulator's forward, reverse and random thread schedules, since
//! a race that forward order hides shows up in the others.

mod common;
use common::*;
use ran::backend::cuda::emu::{set_schedule, Schedule};
use ran::backend::cuda::EmulatedCuda;
use ran::Cpu;

#[test]
fn emulated_cuda_matches_pytorch_and_cpu_under_every_schedule() {
    let fx = ops_fixtures();
    let all = cases(&fx);
    let gpu = EmulatedCuda::emulated();
    let mut failures = Vec::new();
    for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Random(7)] {
        set_schedule(sched);
        let mut checked = 0;
        for c in &all {
            let (atol, rtol) = tolerance(c.op());
            let got = match run_case(&gpu, c) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("[{sched:?}] {}: error {e}", c.name));
                    continue;
                }
            };
            let cpu = run_case(&Cpu, c).expect("CPU backend runs every case");
            for ((k, g), (_, cpu_v)) in got.iter().zip(&cpu) {
                let (_, want) = c.host(k);
                for (what, reference) in [("pytorch", &want), ("cpu", cpu_v)] {
                    match check_close(&format!("[{sched:?}] {}.{k} vs {what}", c.name), g, reference, atol, rtol) {
                        Ok(_) => checked += 1,
                        Err(e) => failures.push(e),
                    }
                }
            }
        }
        println!("{sched:?}: {checked} comparisons");
        assert!(checked >= 180, "{sched:?}: only {checked} comparisons ran");
    }
    set_schedule(Schedule::Forward);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
