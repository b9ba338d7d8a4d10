//! The optimiser's settings checks. Its reference cases (tests/fixtures/optim.safetensors, made
//! by tools/reference/make_optim_fixtures.py: three AdamW steps chained through ran's own state
//! against torch.optim.AdamW in float64, one EMA update against guided_diffusion's update_ema)
//! are rows of the op table (adamw_step, axpby), run on the CPU by tests/ops_vs_torch.rs and on
//! the CUDA kernels under every schedule by tests/backends_agree.rs.
//!
//! What those cases catch: a bias correction of the wrong step (the gradients change scale between
//! steps), weight decay applied to the gradient (L2, Adam) instead of decoupled, eps inside the
//! square root (adamw_tiny_grads: g ≈ 1e-8, so √v ≈ eps), β1 and β2 swapped, the EMA's rate on the
//! wrong tensor.

mod common;
use ran::backend::{AdamwParams, Backend};
use ran::Cpu;

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
