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
use std::sync::Mutex;

/// The emulator's schedule and race detector are process-wide: the tests take turns.
static SCHED: Mutex<()> = Mutex::new(());

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
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
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

/// The production-size cases on the emulator, where they are cheap enough (elementwise rows: the
/// GPU check runs them all on the device). Catches: a generated case's random tensor taken for a
/// reference output (the diffusion step's xt, p_mean, ... are inputs of its later rows: the first
/// H200 run failed q_sample and p_mean_variance against them), and a tolerance that ignores the
/// length of a broadcast input's gradient sum (4,096 terms for an nc11 scale at 64²).
#[test]
fn emulated_cuda_matches_the_cpu_on_the_elementwise_production_cases() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = EmulatedCuda::emulated();
    let cheap = ["diffusion step 3x256x256", "mul bcast nc11 256ch @64x64"];
    let cases: Vec<OpCase> = sizes::production_cases().into_iter().filter(|c| cheap.contains(&c.name.as_str())).collect();
    assert_eq!(cases.len(), cheap.len(), "production cases renamed: {cheap:?}");
    set_schedule(Schedule::Forward);
    let r = check_cases(&gpu, "emulator production sizes", &cases, 1.0);
    r.print("emulator production sizes");
    let mut failures = r.failures.clone();
    failures.extend(rows_checked(&r, &cases).err());
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

/// The precision dimension (issue #14): every GEMM row that `--precision` reaches (conv2d,
/// conv2d_add, conv2d_act, conv2d_x_backward, linear, linear_parts, linear_x_backward:
/// `optable::precision::ROUNDED_OPERANDS`) at tf32, bf16 and f16 on the emulator, on the small
/// fixture cases and the tensor-core cases (`optable::tc_cases`: a second tile, split-K and a K
/// tail for every row) under the forward, reverse and random schedules (the race detector on at
/// bf16: the barriers are the same code at every precision), and on the large fixture cases under
/// the forward one, as the f32 suite. The reference is the CPU backend at the same precision
/// (`RoundedCpu`: the operands rounded where `route` sends the shape to a tensor-core kernel, f32
/// elsewhere). A tensor-core route is held to `precision::tensor_core_tolerance` (f32 summation of
/// K exact products of rounded operands, stated per case in the log: K, max|G| and the bound);
/// the f32 result of the unrounded operands must fail that bound (else it could not tell a kernel
/// that skips the rounding), and the proxy must agree with the plain CPU on
/// `precision::rounded_case` (the operand list and the proxy round the same tensors). An f32
/// route is held to the row's own f32 tolerance against the unrounded CPU result.
///
/// Catches: a low-precision kernel that rounds differently from `Precision::round` (tf32's ties
/// away from zero, bf16/f16 to even), rounds the bias or the residual, drops or repeats a K tile or
/// a split, mis-addresses the second tile or the K tail, applies the activation or the planes'
/// means to the wrong values; a row that `--precision` reaches missing from the operand list; a
/// fallback that is not f32; a missing barrier (race detector).
#[test]
fn low_precision_rows_match_the_rounding_cpu_under_every_schedule() {
    use ran::backend::cuda::precision_dispatch::Route;
    use ran::backend::cuda::tensor_core::tc_plan;
    use ran::backend::rounded_cpu::RoundedCpu;
    use ran::ops::precision::Precision;
    use ran::optable::compare::compare;
    use ran::optable::precision::{f32_output, gemm_mnk, gemm_row, rounded_case, rounded_operands, route_of, tensor_core_tolerance, ROUNDED_OPERANDS};
    use ran::optable::tc_cases::tensor_core_cases;
    use ran::optable::{entries_for, run_method, Inputs, Outputs};
    use ran::{Backend, Cpu};
    use std::collections::{BTreeMap, BTreeSet};
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    fn host<B: Backend>(b: &B, o: Outputs<B>) -> Vec<(String, Vec<f32>)> {
        o.into_iter().map(|(k, t)| (k, b.to_host(&t).unwrap())).collect()
    }
    fn run<B: Backend>(b: &B, m: &str, c: &OpCase) -> Vec<(String, Vec<f32>)> {
        let o = run_method(b, m, c, &Inputs::load(b, c).unwrap()).unwrap_or_else(|e| panic!("{} {} {m}: {e}", b.name(), c.name));
        host(b, o)
    }
    let (large, small): (Vec<OpCase>, Vec<OpCase>) = fixture_cases().into_iter().partition(|c| c.is_large());
    let every: Vec<OpCase> = small.into_iter().chain(tensor_core_cases()).collect();
    let runs: [(&[OpCase], Vec<Schedule>); 2] = [(every.as_slice(), Schedule::all(7).to_vec()), (large.as_slice(), vec![Schedule::Forward])];
    let mut failures = Vec::new();
    // (precision, row, route) → (comparisons, largest share of the tolerance used)
    let mut checked = BTreeMap::<(String, &str, &str), (usize, f64)>::new();
    // per row: whether a tensor-core case had a second tile, split-K, a K tail
    let mut reached = BTreeMap::<&str, [bool; 3]>::new();
    let mut least_unrounded = f64::INFINITY;
    for p in [Precision::Tf32, Precision::Bf16, Precision::F16] {
        let gpu = EmulatedCuda::emulated().with_precision(p);
        let proxy = RoundedCpu::new(p);
        for (cases, schedules) in &runs {
            for c in cases.iter() {
                for e in entries_for(c).filter(|e| rounded_operands(e.method).is_some()) {
                    let m = e.method;
                    let tc = route_of(c, m, p).unwrap() == Route::TensorCore;
                    let want = run(&proxy, m, c);
                    let tols: Vec<_> = if tc {
                        let (gm, gn, k) = gemm_mnk(c, m).unwrap();
                        let plan = tc_plan(gm, gn, k, p);
                        let r = reached.entry(m).or_default();
                        r[0] |= plan.grid.0 > 1 || plan.grid.1 > 1;
                        r[1] |= plan.splits > 1;
                        r[2] |= k % 32 != 0;
                        let gemm = run(&proxy, gemm_row(m), c);
                        let gmax = gemm[0].1.iter().fold(0.0f64, |a, &v| a.max(v.abs() as f64));
                        let tols: Vec<_> = want.iter().map(|(k_out, w)| tensor_core_tolerance(m, k_out, k, gmax, w)).collect();
                        println!(
                            "  {p:<5} {:<44} {m:<18} K {k:>5}  max|G| {gmax:8.3}  grid {}x{}x{} ({} tile)  atol {:.2e} rtol {:.1e}",
                            c.name,
                            plan.grid.0,
                            plan.grid.1,
                            plan.splits,
                            if plan.large { "128" } else { "64" },
                            tols[0].atol,
                            tols[0].rtol
                        );
                        // the proxy is the plain CPU on the rounded operands of the list (on the
                        // unrounded ones for the outputs that stay f32)
                        let rc = rounded_case(c, m, p).unwrap();
                        let (on_rounded, on_f32) = (run(&Cpu, m, &rc), run(&Cpu, m, c));
                        for (((k_out, a), (_, a32)), (_, w)) in on_rounded.iter().zip(&on_f32).zip(&want) {
                            let a = if f32_output(m, k_out) { a32 } else { a };
                            let cmp = compare(a, w, e.tolerance(c, k_out, w)).unwrap();
                            if !cmp.passes() {
                                failures.push(format!("{p} {} {m}.{k_out}: RoundedCpu differs from the CPU on rounded_case at {} ({} vs {})", c.name, cmp.worst, w[cmp.worst], a[cmp.worst]));
                            }
                        }
                        // the bound tells rounded operands from f32 ones
                        let unrounded = run(&Cpu, m, c);
                        let r = unrounded.iter().zip(&want).zip(&tols).map(|(((_, a), (_, w)), t)| compare(a, w, *t).unwrap().used).fold(0.0, f64::max);
                        least_unrounded = least_unrounded.min(r);
                        if r <= 2.0 {
                            failures.push(format!("{p} {} {m}: the tensor-core bound cannot tell {p} operands from f32 ones (unrounded uses {r:.2}× of it)", c.name));
                        }
                        tols
                    } else {
                        want.iter().map(|(k_out, w)| e.tolerance(c, k_out, w)).collect()
                    };
                    let route = if tc { "tensor core" } else { "f32" };
                    for &sched in schedules {
                        set_schedule(sched);
                        let was = set_race_check(p == Precision::Bf16);
                        let got = run(&gpu, m, c);
                        set_race_check(was);
                        for (((k_out, g), (_, w)), t) in got.iter().zip(&want).zip(&tols) {
                            let cmp = compare(g, w, *t).unwrap();
                            let row = checked.entry((p.to_string(), m, route)).or_insert((0, 0.0));
                            row.0 += 1;
                            row.1 = row.1.max(cmp.used);
                            if !cmp.passes() {
                                failures.push(format!(
                                    "{p} {sched:?} {} {m}.{k_out} ({route}): element {} got {} want {} (atol {:e}, rtol {:e})",
                                    c.name, cmp.worst, g[cmp.worst], w[cmp.worst], t.atol, t.rtol
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    set_schedule(Schedule::Forward);
    for ((p, m, route), (n, used)) in &checked {
        println!("  {p:<5} {m:<18} {route:<12} {n:>3} cmp  uses {:5.1}% of tolerance", 100.0 * used);
    }
    println!("  unrounded operands: at least {least_unrounded:.1}× the tensor-core bound");
    // every precision reached every row of the list on the tensor cores
    let rows: BTreeSet<&str> = ROUNDED_OPERANDS.iter().map(|(m, _)| *m).collect();
    assert_eq!(rows.len(), 8);
    let on_tc: BTreeSet<(String, &str)> = checked.keys().filter(|k| k.2 == "tensor core").map(|(p, m, _)| (p.clone(), *m)).collect();
    assert_eq!(on_tc.len(), 3 * rows.len(), "(precision, row) pairs on the tensor cores: {on_tc:?}");
    for m in &rows {
        assert_eq!(reached.get(m), Some(&[true; 3]), "{m}: [second tile, split-K, K tail] reached by its tensor-core cases");
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
