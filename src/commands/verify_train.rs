//! `ran verify` on a kind=train_step reference (tools/reference/make_train_step_fixtures.py):
//! one training step of the model on the reference's x0, eps, t, y, feat_target, compared with
//! upstream's loss terms (mse, vb per sample, feat_mse, loss), the gradients it holds
//! (`grad.<name>`), and every parameter after one AdamW step and one EMA update (`after.<name>`,
//! `ema.<name>`), each at the flat indices `idx.<name>`. The AdamW / EMA settings come from the
//! metadata `hyper` (JSON: lr, beta1, beta2, eps, weight_decay, ema_rate).

use super::verify::{compare, Row};
use crate::backend::{AdamwParams, Backend};
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::io::flags::ModelFlags;
use crate::io::safetensors::SafeTensors;
use crate::models::unet::UNet;
use crate::models::weights::Loader;
use crate::train::step::{apply_gradients, loss_and_gradients, StepInputs, TrainState};
use crate::{Error, Result};
use std::path::Path;

/// The reference's tensors that are not weights.
const DATA: [&str; 9] = ["x0", "eps", "t", "y", "feat_target", "mse", "vb", "feat_mse", "loss"];
const DATA_PREFIXES: [&str; 4] = ["idx.", "after.", "ema.", "grad."];

fn bad(r: &SafeTensors, msg: String) -> Error {
    Error::BadFile { path: r.path().to_path_buf(), msg }
}

fn hyper(r: &SafeTensors) -> Result<(AdamwParams, f32)> {
    let s = r.metadata().get("hyper").ok_or_else(|| bad(r, "no `hyper` in the metadata (JSON: lr, beta1, beta2, eps, weight_decay, ema_rate)".into()))?;
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| bad(r, format!("metadata `hyper` is not JSON: {e}")))?;
    let h = |k: &str| v[k].as_f64().ok_or_else(|| bad(r, format!("metadata `hyper` has no number `{k}`")));
    Ok((AdamwParams { lr: h("lr")?, beta1: h("beta1")?, beta2: h("beta2")?, eps: h("eps")?, weight_decay: h("weight_decay")? }, h("ema_rate")? as f32))
}

/// Per-parameter comparisons folded into one row named after the worst parameter.
fn fold(what: &str, rows: Vec<Row>) -> Row {
    let n = rows.len();
    let worst = rows.iter().max_by(|a, b| a.max_abs.total_cmp(&b.max_abs)).map(|r| r.name.clone()).unwrap_or_default();
    Row {
        name: format!("{what} ({n} tensors, worst {worst})"),
        max_abs: rows.iter().map(|r| r.max_abs).fold(0.0, f64::max),
        max_rel: rows.iter().map(|r| r.max_rel).fold(0.0, f64::max),
        // a NaN error fails its own row, so `all` sees it; no tensor compared is a failure
        pass: n > 0 && rows.iter().all(|r| r.pass),
    }
}

pub fn rows<B: Backend>(b: &B, model: &Path, r: &SafeTensors, atol: f64, rtol: f64) -> Result<Vec<Row>> {
    let st = SafeTensors::open(model)?;
    let flags_s = st.metadata().get("model_flags").ok_or_else(|| Error::BadFile { path: model.to_path_buf(), msg: "no model_flags in the metadata".into() })?;
    let flags = ModelFlags::parse(flags_s).map_err(|e| crate::models::in_model_file(model, e))?;
    let l = Loader::new(&st, b).ignoring(&DATA).ignoring_prefixes(&DATA_PREFIXES);
    let mut m = UNet::load(&flags, &l).map_err(|e| crate::models::in_model_file(model, e))?;
    l.finish()?;
    let (hp, ema_rate) = hyper(r)?;
    let d = Diffusion::new(BetaSchedule::parse(&flags.noise_schedule)?, flags.diffusion_steps, "")?;
    let load = |k: &str| -> Result<crate::Tensor<B>> {
        let (s, v) = r.get(k)?;
        b.from_host(&s, &v)
    };
    let ints = |k: &str| -> Result<Vec<usize>> { Ok(r.get(k)?.1.iter().map(|&v| v as usize).collect()) };
    let t = ints("t")?;
    let y = if r.contains("y") { Some(ints("y")?) } else { None };
    let (x0, eps) = (load("x0")?, load("eps")?);
    let ft = if r.contains("feat_target") { Some(load("feat_target")?) } else { None };
    let inp = StepInputs { x0: &x0, eps: &eps, t: &t, y: y.as_deref(), feat_target: ft.as_ref(), feat_max_t: None, only: Default::default() };
    let (terms, grads) = loss_and_gradients(b, &m, &d, &inp)?;

    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut out = vec![compare("mse", &f32s(&terms.mse), &r.get("mse")?.1, atol, rtol), compare("vb", &f32s(&terms.vb), &r.get("vb")?.1, atol, rtol)];
    if r.contains("feat_mse") {
        match terms.feat_mse {
            Some(f) => out.push(compare("feat_mse", &[f as f32], &r.get("feat_mse")?.1, atol, rtol)),
            None => out.push(Row { name: "feat_mse (model has no feature head)".into(), max_abs: f64::NAN, max_rel: f64::NAN, pass: false }),
        }
    }
    out.push(compare("loss", &[terms.loss as f32], &r.get("loss")?.1, atol, rtol));

    // the same flat indices pick from the gradient, the updated weights and the EMA
    let pick = |name: &str, v: Vec<f32>| -> Result<Vec<f32>> {
        let idx = ints(&format!("idx.{name}"))?;
        idx.iter().map(|&i| v.get(i).copied().ok_or_else(|| bad(r, format!("idx.{name} holds {i}, past the {} elements of {name}", v.len())))).collect()
    };
    let grad_names: Vec<String> = r.names().filter_map(|n| n.strip_prefix("grad.")).map(str::to_string).collect();
    for name in &grad_names {
        let g = grads.get(name).ok_or_else(|| bad(r, format!("grad.{name}: the model has no parameter `{name}` that the loss reaches")))?;
        out.push(compare(&format!("grad {name}"), &pick(name, b.to_host(g)?)?, &r.get(&format!("grad.{name}"))?.1, atol, rtol));
    }

    let mut state = TrainState::new(b, &mut m)?;
    apply_gradients(b, &mut m, &mut state, &grads, &hp, ema_rate)?;
    let (mut after, mut ema) = (Vec::new(), Vec::new());
    for (name, p) in m.params()? {
        if !r.contains(&format!("idx.{name}")) {
            return Err(bad(r, format!("no idx.{name}: the reference does not cover the model's parameter `{name}`")));
        }
        after.push(compare(&name, &pick(&name, b.to_host(&p)?)?, &r.get(&format!("after.{name}"))?.1, atol, rtol));
        ema.push(compare(&name, &pick(&name, b.to_host(&state.ema[&name])?)?, &r.get(&format!("ema.{name}"))?.1, atol, rtol));
    }
    out.push(fold("after AdamW", after));
    out.push(fold("after EMA", ema));
    Ok(out)
}
