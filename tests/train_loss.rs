//! The training loss against upstream guided_diffusion's `training_losses` in float64
//! (tests/fixtures/train_loss.safetensors, tools/reference/make_loss_fixtures.py): per-sample mse
//! and vb, the batch loss with the feature MSE, and its gradient with respect to the model output
//! (ε̂ and v) and the feature prediction, from torch autograd.
//!
//! What the cases catch: vb's gradient reaching ε̂ (upstream detaches it: ∂/∂ε̂ would differ at
//! every t), the decoder NLL at t = 0 and its edge bins (x0 = ±1 at sample 0), the KL for t > 0,
//! a wrong batch normalisation (the feature MSE counts once, not per sample), bits vs nats.

mod common;
use common::{check_close, fixture_path};
use ran::diffusion::{BetaSchedule, Diffusion};
use ran::io::safetensors::SafeTensors;
use ran::train::loss::{diffusion_loss, Batch};

#[test]
fn training_loss_and_its_gradient_match_upstream() {
    let fx = SafeTensors::open(fixture_path("train_loss.safetensors")).unwrap();
    let get = |k: &str| fx.get(k).unwrap();
    let (dims, x0) = get("x0");
    let t: Vec<usize> = get("t").1.iter().map(|&v| v as usize).collect();
    let (eps, xt, out) = (get("eps").1, get("xt").1, get("out").1);
    let (pred, target) = (get("feat_pred").1, get("feat_target").1);
    let d = Diffusion::new(BetaSchedule::parse("linear").unwrap(), 1000, "").unwrap();
    let batch = Batch { x0: &x0, xt: &xt, eps: &eps, dims: [dims[0], dims[1], dims[2], dims[3]], t: &t, out: &out, feat: Some((&pred, &target)) };
    let (terms, grads) = diffusion_loss(&d, &batch).unwrap();
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    // f32 inputs and upstream's f32-extracted coefficients against our f64 tables: ~1e-6 relative
    let mut failures = Vec::new();
    for (what, got, want, atol, rtol) in [
        ("mse", f(&terms.mse), get("mse").1, 1e-7, 1e-5),
        ("vb", f(&terms.vb), get("vb").1, 1e-7, 2e-6),
        ("loss", vec![terms.loss as f32], get("loss").1, 1e-7, 1e-5),
        ("feat_mse", vec![terms.feat_mse.unwrap() as f32], get("feat_mse").1, 1e-7, 1e-6),
        ("g_out", grads.g_out.clone(), get("g_out").1, 1e-8, 3e-5),
        ("g_feat", grads.g_feat.clone().unwrap(), get("g_feat").1, 1e-9, 1e-6),
    ] {
        match check_close(what, &got, &want, atol, rtol) {
            Ok(e) => println!("ok  {what:<8} max abs err {e:.2e}"),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(terms.vb[0] > 10.0 * terms.vb[2], "t = 0 takes the decoder NLL branch, not the KL");
}

#[test]
fn training_loss_refuses_bad_batches() {
    let d = Diffusion::new(BetaSchedule::parse("linear").unwrap(), 1000, "").unwrap();
    let v = vec![0.0f32; 12];
    let out = vec![0.0f32; 24];
    let ok = Batch { x0: &v, xt: &v, eps: &v, dims: [1, 3, 2, 2], t: &[5], out: &out, feat: None };
    assert!(diffusion_loss(&d, &ok).is_ok());
    let e = diffusion_loss(&d, &Batch { t: &[1000], ..ok }).err().unwrap().to_string();
    assert!(e.contains("timestep 1000 outside the 1000-step"), "{e}");
    let e = diffusion_loss(&d, &Batch { out: &v, ..ok }).err().unwrap().to_string();
    assert!(e.contains("the output (ε̂, v) 24"), "{e}");
    let nan = vec![f32::NAN; 24];
    let e = diffusion_loss(&d, &Batch { out: &nan, ..ok }).err().unwrap().to_string();
    assert!(e.contains("not finite"), "{e}");
}
