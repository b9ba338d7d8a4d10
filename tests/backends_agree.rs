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

/// The precision dimension (issue #14): every fixture case of conv2d, conv2d_x_backward, linear
/// and linear_x_backward on the emulator at tf32, bf16 and f16. Where the dispatch routes it to a
/// tensor-core kernel, the reference is the CPU backend on the operands rounded the same way
/// (`optable::precision::rounded_case`) with the row's own f32 tolerance — products of rounded
/// operands are exact, only the summation order differs, so a wrong fragment or an operand not
/// rounded fails it; where it routes to the f32 kernel (a shape or precision without one), the
/// reference is the CPU on the case as it is, as in the f32 suite. Forward schedule.
///
/// Catches: a low-precision kernel that rounds differently from `Precision::round` (tf32's ties
/// away from zero, bf16/f16 to even), rounds the bias, or drops a K tile; a fallback that is not f32.
#[test]
fn low_precision_rows_match_the_cpu_on_operands_rounded_the_same_way() {
    use ran::backend::cuda::precision_dispatch::{route, GemmOp, Route};
    use ran::ops::precision::Precision;
    use ran::optable::compare::compare;
    use ran::optable::precision::{geometry, rounded_case, rounded_operands, Geometry};
    use ran::optable::{entries_for, run_method, Inputs};
    use ran::{Backend, Cpu};
    set_schedule(Schedule::Forward);
    let cases: Vec<OpCase> = fixture_cases().into_iter().filter(|c| !c.is_large()).collect();
    let mut failures = Vec::new();
    let mut checked = std::collections::BTreeMap::<(String, &str, &str), (usize, f64)>::new();
    for p in [Precision::Tf32, Precision::Bf16, Precision::F16] {
        let gpu = EmulatedCuda::emulated().with_precision(p);
        for c in &cases {
            for e in entries_for(c).filter(|e| rounded_operands(e.method).is_some()) {
                let r = match geometry(c, e.method).unwrap() {
                    Geometry::Conv(g) if e.method == "conv2d" || e.method == "conv2d_add" => route(GemmOp::Conv2d(&g), p),
                    Geometry::Conv(g) => route(GemmOp::Conv2dXBackward(&g), p),
                    Geometry::Linear(g) if e.method == "linear" => route(GemmOp::Linear(&g), p),
                    Geometry::Linear(g) => route(GemmOp::LinearXBackward(&g), p),
                };
                let reference = if r == Route::TensorCore { rounded_case(c, e.method, p).unwrap() } else { c.clone() };
                let got = run_method(&gpu, e.method, c, &Inputs::load(&gpu, c).unwrap()).unwrap_or_else(|err| panic!("{p} {} {}: {err}", c.name, e.method));
                let want = run_method(&Cpu, e.method, &reference, &Inputs::load(&Cpu, &reference).unwrap()).unwrap();
                for ((k, gt), (_, wt)) in got.iter().zip(&want) {
                    let (g, w) = (gpu.to_host(gt).unwrap(), Cpu.to_host(wt).unwrap());
                    let tol = e.tolerance(c, k, &w);
                    let cmp = compare(&g, &w, tol).unwrap();
                    let row = checked.entry((p.to_string(), e.method, if r == Route::TensorCore { "tensor core" } else { "f32" })).or_insert((0, 0.0));
                    row.0 += 1;
                    row.1 = row.1.max(cmp.used);
                    if !cmp.passes() {
                        failures.push(format!("{p} {} {}.{k} ({r:?}): element {} got {} want {} (atol {:e}, rtol {:e})", c.name, e.method, cmp.worst, g[cmp.worst], w[cmp.worst], tol.atol, tol.rtol));
                    }
                }
            }
        }
    }
    for ((p, m, route), (n, used)) in &checked {
        println!("  {p:<5} {m:<18} {route:<12} {n:>3} cmp  uses {:5.1}% of tolerance", 100.0 * used);
    }
    // every precision reached all five rows
    assert_eq!(checked.keys().map(|(p, m, _)| (p.clone(), *m)).collect::<std::collections::BTreeSet<_>>().len(), 15, "{checked:?}");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
