//! Gaussian diffusion against upstream guided_diffusion (tests/fixtures/diffusion.safetensors from
//! tools/reference/make_diffusion_fixtures.py) and against the reference table of docs/method.md §7:
//! schedule tables in f64. The per-element step math (q_sample, p_mean_variance, kl_bits,
//! p_sample, ddim_step) against upstream's step tensors of the same file is a set of op-table rows,
//! run on the CPU by tests/ops_vs_torch.rs and on kernels/scheduler.cu under every emulator
//! schedule by tests/backends_agree.rs.

mod common;
use common::*;
use ran::backend::VarType;
use ran::diffusion::{space_timesteps, BetaSchedule, Diffusion};
use ran::io::safetensors::SafeTensors;
use ran::{Backend, Cpu};
use serde_json::Value;

fn fixtures() -> SafeTensors {
    SafeTensors::open(fixture_path("diffusion.safetensors")).expect("tests/fixtures/diffusion.safetensors")
}

fn entries(fx: &SafeTensors, kind: &str) -> Vec<(String, Value)> {
    fx.metadata().iter().filter(|(k, _)| !k.starts_with("__")).map(|(k, v)| (k.clone(), serde_json::from_str::<Value>(v).unwrap())).filter(|(_, v)| v["kind"] == kind).collect()
}

fn diffusion_of(p: &Value) -> Diffusion {
    let sched = BetaSchedule::parse(p["noise_schedule"].as_str().unwrap()).unwrap();
    Diffusion::new(sched, p["steps"].as_u64().unwrap() as usize, p["timestep_respacing"].as_str().unwrap()).unwrap()
}

#[test]
fn schedule_tables_match_upstream() {
    let fx = fixtures();
    let scheds = entries(&fx, "schedule");
    assert!(scheds.len() >= 5);
    for (name, p) in &scheds {
        let d = diffusion_of(p);
        let tables: [(&str, &Vec<f64>); 9] = [
            ("betas", &d.betas),
            ("alphas_cumprod", &d.alphas_cumprod),
            ("alphas_cumprod_prev", &d.alphas_cumprod_prev),
            ("sqrt_recip_alphas_cumprod", &d.sqrt_recip_alphas_cumprod),
            ("sqrt_recipm1_alphas_cumprod", &d.sqrt_recipm1_alphas_cumprod),
            ("posterior_variance", &d.posterior_variance),
            ("posterior_log_variance_clipped", &d.posterior_log_variance_clipped),
            ("posterior_mean_coef1", &d.posterior_mean_coef1),
            ("posterior_mean_coef2", &d.posterior_mean_coef2),
        ];
        for (t, got) in tables {
            let (_, want) = fx.get_f64(&format!("{name}.{t}")).unwrap();
            assert_eq!(got.len(), want.len(), "{name}.{t} length");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // f64 throughout; only libm's last bit in cos/sqrt/ln may differ from numpy's
                assert!((g - w).abs() <= 1e-12 * w.abs() + 1e-300, "{name}.{t}[{i}]: {g} vs {w}");
            }
        }
        let (_, tmap) = fx.get_f64(&format!("{name}.timestep_map")).unwrap();
        assert_eq!(d.timestep_map, tmap.iter().map(|&v| v as usize).collect::<Vec<_>>(), "{name}.timestep_map");
    }
}

/// docs/method.md §7's table (numpy float64, printed to 7 significant digits) for linear 1000 → "250".
#[test]
fn respaced_linear_schedule_matches_the_spec_table() {
    let d = Diffusion::new(BetaSchedule::Linear, 1000, "250").unwrap();
    assert_eq!(d.num_steps(), 250);
    // k, τ, β', ᾱ', c1, c2, postlogvar_clip, log β'
    let rows: [(usize, usize, f64, f64, f64, f64, f64, f64); 4] = [
        (5, 20, 1.872758e-3, 0.9937354, 0.2982860, 0.7017130, -6.633636, -6.280343),
        (8, 32, 2.827229e-3, 0.9862739, 0.2048455, 0.7951506, -6.096266, -5.868458),
        (50, 201, 1.619678e-2, 0.6536534, 0.03811865, 0.9610501, -4.154507, -4.122943),
        (100, 401, 3.184453e-2, 0.1920064, 0.01755142, 0.9762581, -3.454737, -3.446890),
    ];
    let close = |a: f64, b: f64, what: &str, k: usize| assert!((a - b).abs() <= 5e-7 * b.abs().max(1e-3), "k={k} {what}: {a} vs spec {b}");
    for (k, tau, beta, ab, c1, c2, plv, lb) in rows {
        assert_eq!(d.timestep_map[k], tau, "τ at k={k}");
        close(d.betas[k], beta, "β'", k);
        close(d.alphas_cumprod[k], ab, "ᾱ'", k);
        close(d.posterior_mean_coef1[k], c1, "c1", k);
        close(d.posterior_mean_coef2[k], c2, "c2", k);
        close(d.posterior_log_variance_clipped[k], plv, "postlogvar", k);
        close(d.betas[k].ln(), lb, "log β'", k);
    }
    assert_eq!(d.timestep_map[0], 0);
    assert_eq!(d.timestep_map[249], 999);
    close(d.betas[0], 1.0e-4, "β'", 0);
    close(d.posterior_log_variance_clipped[0], -9.364628, "postlogvar", 0);
    close(d.betas[249], 7.751934e-2, "β'", 249);
    close(d.alphas_cumprod[249], 4.03583e-5, "ᾱ'", 249);
    assert_eq!(d.model_timestep(5, false), 20.0);
    assert_eq!(d.model_timestep(5, true), 20.0);
}

#[test]
fn bad_schedules_are_errors() {
    assert!(space_timesteps(1000, "ddim999").unwrap_err().to_string().contains("integer stride"));
    assert!(space_timesteps(10, "20").unwrap_err().to_string().contains("cannot divide"));
    assert!(space_timesteps(1000, "abc").unwrap_err().to_string().contains("not a count"));
    assert!(BetaSchedule::parse("sigmoid").is_err());
    let d = Diffusion::new(BetaSchedule::Linear, 1000, "250").unwrap();
    assert!(d.step_coefs(250, VarType::LearnedRange, true).unwrap_err().to_string().contains("outside"));
    assert_eq!(space_timesteps(1000, "ddim50").unwrap().len(), 50);
}

#[test]
fn model_output_shape_is_checked() {
    let d = Diffusion::new(BetaSchedule::Linear, 1000, "250").unwrap();
    let sc = d.step_coefs(5, VarType::LearnedRange, true).unwrap();
    let xt = Cpu.zeros(&[1, 3, 4, 4]).unwrap();
    let mo = Cpu.zeros(&[1, 3, 4, 4]).unwrap(); // learned range needs 6 channels
    let e = Cpu.p_mean_variance(&xt, &mo, &sc).unwrap_err().to_string();
    assert!(e.contains("6 channels"), "{e}");
}
