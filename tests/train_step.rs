//! One whole training step against the official recipe in float64
//! (tests/fixtures/train_step.safetensors, tools/reference/make_train_step_fixtures.py): upstream
//! training_losses + the paper's feature MSE, backward through the UNet and the feature head, one
//! torch.optim.AdamW step over every parameter and one update_ema — on the CPU backend and on the
//! CUDA kernels over the emulator. This checks the pieces' composition (q_sample per sample, the
//! timesteps the model sees, the gradients reaching the right parameters, the moments and the
//! EMA by name); each piece has its own test.

mod common;
use common::{check_close, fixture_path};
use ran::backend::cuda::EmulatedCuda;
use ran::backend::AdamwParams;
use ran::diffusion::{BetaSchedule, Diffusion};
use ran::io::flags::ModelFlags;
use ran::io::safetensors::SafeTensors;
use ran::models::unet::UNet;
use ran::models::weights::Loader;
use ran::train::step::{train_step, StepInputs, TrainState};
use ran::{Backend, Cpu};
use serde_json::Value;

/// AdamW's first step moves a weight by lr·g/(|g| + eps) ≈ lr·sign(g); the reference keeps only
/// elements with a gradient well away from zero, where the float32 gradient's relative error
/// (~1e-5) moves the update by ~1e-5·lr. Weights are O(0.1–1): the f32 rounding of w − lr·… is
/// ~6e-8·|w|.
const ATOL: f64 = 2e-7;
const RTOL: f64 = 1e-6;

fn check<B: Backend>(b: &B) -> Vec<String> {
    let fx = SafeTensors::open(fixture_path("train_step.safetensors")).unwrap();
    let flags = ModelFlags::parse(&fx.metadata()["model_flags"]).unwrap();
    let hyper: Value = serde_json::from_str(&fx.metadata()["hyper"]).unwrap();
    let h = |k: &str| hyper[k].as_f64().unwrap();
    let l = Loader::new(&fx, b).ignoring(&["x0", "eps", "t", "y", "feat_target", "mse", "vb", "feat_mse", "loss"]).ignoring_prefixes(&["idx.", "after.", "ema.", "grad."]);
    let mut model = UNet::load(&flags, &l).unwrap();
    l.finish().unwrap();
    let load = |k: &str| {
        let (s, v) = fx.get(k).unwrap();
        b.from_host(&s, &v).unwrap()
    };
    let host = |k: &str| fx.get(k).unwrap().1;
    let t: Vec<usize> = host("t").iter().map(|&v| v as usize).collect();
    let y: Vec<usize> = host("y").iter().map(|&v| v as usize).collect();
    let d = Diffusion::new(BetaSchedule::parse("linear").unwrap(), 1000, "").unwrap();
    let mut state = TrainState::new(b, &mut model).unwrap();
    let (x0, eps, ft) = (load("x0"), load("eps"), load("feat_target"));
    let inp = StepInputs { x0: &x0, eps: &eps, t: &t, y: Some(&y), feat_target: Some(&ft), feat_max_t: None, only: Default::default() };
    let hp = AdamwParams { lr: h("lr"), beta1: h("beta1"), beta2: h("beta2"), eps: h("eps"), weight_decay: h("weight_decay") };
    let terms = train_step(b, &mut model, &mut state, &d, &inp, &hp, h("ema_rate") as f32).unwrap();
    let mut failures = Vec::new();
    let loss = [terms.loss as f32];
    if let Err(e) = check_close("loss", &loss, &host("loss"), 1e-6, 1e-5) {
        failures.push(e);
    }
    let mut compared = 0;
    for (name, p) in model.params().unwrap() {
        let idx: Vec<usize> = host(&format!("idx.{name}")).iter().map(|&v| v as usize).collect();
        let pick = |v: Vec<f32>| idx.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let after = pick(b.to_host(&p).unwrap());
        let ema = pick(b.to_host(&state.ema[&name]).unwrap());
        for (what, got, key) in [("after", after, format!("after.{name}")), ("ema", ema, format!("ema.{name}"))] {
            match check_close(&format!("[{}] {what} {name}", b.name()), &got, &host(&key), ATOL, RTOL) {
                Ok(_) => compared += 1,
                Err(e) => failures.push(e),
            }
        }
    }
    assert_eq!(state.step, 1);
    println!("[{}] loss {:.6}, {compared} tensors compared", b.name(), terms.loss);
    if failures.is_empty() {
        assert!(compared >= 2 * 380, "only {compared} parameter tensors compared");
    }
    failures
}

#[test]
fn one_training_step_matches_the_official_recipe_on_cpu() {
    let f = check(&Cpu);
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}

#[test]
fn one_training_step_matches_the_official_recipe_on_emulated_cuda() {
    let f = check(&EmulatedCuda::emulated());
    assert!(f.is_empty(), "{} failures:\n{}", f.len(), f.join("\n"));
}
