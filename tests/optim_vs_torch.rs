//! The optimiser ops against their references (tests/fixtures/optim.safetensors, made by
//! tools/reference/make_optim_fixtures.py): three AdamW steps chained through ran's own state
//! against torch.optim.AdamW in float64, and one EMA update against guided_diffusion's update_ema,
//! on the CPU backend and on the CUDA kernels under the emulator's three schedules.
//!
//! What the cases catch: a bias correction of the wrong step (the gradients change scale between
//! steps), weight decay applied to the gradient (L2, Adam) instead of decoupled, eps inside the
//! square root (adamw_tiny_grads: g ≈ 1e-8, so √v ≈ eps), β1 and β2 swapped, the EMA's rate on the
//! wrong tensor.

mod common;
use common::{check_close, fixture_path};
use ran::backend::cuda::emu::{set_schedule, Schedule};
use ran::backend::cuda::EmulatedCuda;
use ran::backend::{AdamwParams, Backend};
use ran::io::safetensors::SafeTensors;
use ran::Cpu;
use serde_json::Value;

/// (atol, rtol) against float64 torch: a few float32 roundings per step, compounded over three
/// steps; the updates are ~lr in size, so the absolute part is scaled to lr.
fn tolerance(lr: f64) -> (f64, f64) {
    (2e-2 * lr, 2e-6)
}

fn check_adamw<B: Backend>(b: &B, label: &str) -> Vec<String> {
    let fx = SafeTensors::open(fixture_path("optim.safetensors")).expect("tests/fixtures/optim.safetensors");
    let mut failures = Vec::new();
    let mut cases = 0;
    for (name, meta) in fx.metadata().iter().filter(|(k, _)| !k.starts_with("__")) {
        let m: Value = serde_json::from_str(meta).unwrap();
        let get = |k: &str| {
            let (s, v) = fx.get(&format!("{name}.{k}")).unwrap();
            b.from_host(&s, &v).unwrap()
        };
        let host = |k: &str| fx.get(&format!("{name}.{k}")).unwrap().1;
        match m["op"].as_str() {
            Some("adamw_step") => {
                cases += 1;
                let f = |k: &str| m[k].as_f64().unwrap();
                let hp = AdamwParams { lr: f("lr"), beta1: f("beta1"), beta2: f("beta2"), eps: f("eps"), weight_decay: f("weight_decay") };
                let (atol, rtol) = tolerance(hp.lr);
                let mut p = get("param0");
                let mut mm = b.zeros(p.dims()).unwrap();
                let mut vv = b.zeros(p.dims()).unwrap();
                for t in 1..=3u64 {
                    let k = hp.at_step(t).unwrap();
                    (p, mm, vv) = b.adamw_step(&p, &get(&format!("grad{t}")), &mm, &vv, &k).unwrap();
                    for (what, got) in [("param", &p), ("m", &mm), ("v", &vv)] {
                        let want = host(&format!("{what}{t}"));
                        // the moments' scale is the gradients', not lr's: their absolute part is
                        // f32 rounding of the largest term (m cancels to ~1e-3 of it in places)
                        let scale = want.iter().fold(0.0f64, |a, &v| a.max(v.abs() as f64));
                        let (a, r) = if what == "param" { (atol, rtol) } else { (1e-6 * scale, 2e-6) };
                        if let Err(e) = check_close(&format!("[{label}] {name} step {t} {what}"), &b.to_host(got).unwrap(), &want, a, r) {
                            failures.push(e);
                        }
                    }
                }
            }
            Some("axpby") => {
                cases += 1;
                let rate = m["rate"].as_f64().unwrap() as f32;
                let ema = b.axpby(&get("ema0"), &get("param"), rate, 1.0 - rate).unwrap();
                if let Err(e) = check_close(&format!("[{label}] ema"), &b.to_host(&ema).unwrap(), &host("ema1"), 1e-7, 1e-6) {
                    failures.push(e);
                }
            }
            other => panic!("{name}: unknown op {other:?}"),
        }
    }
    assert_eq!(cases, 4, "{label}: every fixture case ran");
    failures
}

#[test]
fn cpu_optimiser_matches_torch() {
    let f = check_adamw(&Cpu, "cpu");
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn emulated_cuda_optimiser_matches_torch_under_every_schedule() {
    let gpu = EmulatedCuda::emulated();
    let mut failures = Vec::new();
    for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Random(5)] {
        set_schedule(sched);
        failures.extend(check_adamw(&gpu, &format!("emulator {sched:?}")));
    }
    set_schedule(Schedule::Forward);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn adamw_settings_are_checked() {
    let bad = [AdamwParams { lr: f64::NAN, ..Default::default() }, AdamwParams { beta1: 1.0, ..Default::default() }, AdamwParams { eps: -1.0, ..Default::default() }];
    for p in bad {
        assert!(p.at_step(1).is_err(), "{p:?} accepted");
    }
    assert!(AdamwParams::default().at_step(0).is_err(), "steps count from 1, as torch's");
    let (p, g) = (Cpu.zeros(&[3]).unwrap(), Cpu.zeros(&[4]).unwrap());
    let e = Cpu.adamw_step(&p, &g, &p, &p, &AdamwParams::default().at_step(1).unwrap()).unwrap_err().to_string();
    assert!(e.contains("gradient [4] does not match the parameter [3]"), "{e}");
}
