//! `ran verify`: runs the engine on the inputs stored in a reference file (made with upstream
//! guided_diffusion by tools/reference/dump_reference.py) and reports, per output, the largest
//! absolute and relative errors and pass/fail at a tolerance.
//!   kind=unet: x, t, [y] → out [, feat]
//!   kind=kl:   x0, k, noise, [y] + metadata diffusion_flags → kl (bits per element), pred_xstart
//!   kind=effnet: x → features [N, C, S, S] (weights from --effnet, or --model)
//!   kind=detect: x0, noise_k5/50/100, [y] → kl_map, feat_map, score_map, image_score
//!   kind=train_step: x0, eps, t, [y], [feat_target] + metadata hyper → one training step's loss
//!     terms, named gradients, weights after AdamW and after EMA (verify_train.rs)

use crate::anomaly::settings::ScoreSettings;
use crate::backend::{Backend, VarType};
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::io::flags::ModelFlags;
use crate::io::safetensors::SafeTensors;
use crate::models::load_unet;
use crate::models::unet::UNet;
use crate::{Error, Result};
use std::path::Path;

pub struct Row {
    pub name: String,
    pub max_abs: f64,
    pub max_rel: f64,
    pub pass: bool,
}

pub(super) fn compare(name: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) -> Row {
    let mut row = Row { name: name.to_string(), max_abs: 0.0, max_rel: 0.0, pass: got.len() == want.len() };
    for (&g, &w) in got.iter().zip(want) {
        let e = (g as f64 - w as f64).abs();
        row.max_abs = row.max_abs.max(e);
        row.max_rel = row.max_rel.max(e / (w as f64).abs().max(1e-12));
        #[allow(clippy::neg_cmp_op_on_partial_ord)] // a NaN error must fail
        if !(e <= atol + rtol * (w as f64).abs()) {
            row.pass = false;
        }
    }
    row
}

fn labels(r: &SafeTensors, name: &str) -> Result<Option<Vec<usize>>> {
    if !r.contains(name) {
        return Ok(None);
    }
    let (_, v) = r.get(name)?;
    Ok(Some(v.iter().map(|&x| x as usize).collect()))
}

/// `arch` as given, else what the model file declares, else the paper's B4.
fn load_effnet<B: Backend>(b: &B, path: &Path, arch: Option<&str>, model: &Path) -> Result<crate::models::efficientnet::EfficientNet<B>> {
    let declared = if arch.is_none() { crate::models::feature_extractor(model).ok().flatten() } else { None };
    let cfg = crate::models::efficientnet::EffNetConfig::from_name(arch.or(declared.as_deref()).unwrap_or("efficientnet-b4"))?;
    // a kind=effnet reference carries the weights beside its tensors
    crate::anomaly::detector::load_extractor(b, &cfg, path, &["x", "features", "tap0", "tap1", "tap2", "tap3"])
}

/// `opts`: the model (`opts.model`), and for kind=effnet / kind=detect the extractor and the
/// scoring options (the timesteps come from the reference).
pub fn run<B: Backend>(b: &B, reference: &Path, atol: f64, rtol: f64, opts: &ScoreSettings) -> Result<Vec<Row>> {
    let model = opts.model.as_path();
    let r = SafeTensors::open(reference)?;
    let kind = r.metadata().get("kind").cloned().ok_or_else(|| Error::BadFile { path: reference.to_path_buf(), msg: "no `kind` in the metadata (unet, kl, effnet, detect, train_step)".into() })?;
    if kind == "effnet" {
        let e = load_effnet(b, opts.effnet.as_deref().unwrap_or(model), opts.effnet_arch.as_deref(), model)?;
        let (xs, xv) = r.get("x")?;
        let (fs, want) = r.get("features")?;
        let f = e.features(b, &b.from_host(&xs, &xv)?, *fs.last().unwrap_or(&16))?;
        return Ok(vec![compare("features", &b.to_host(&f)?, &want, atol, rtol)]);
    }
    if kind == "train_step" {
        return super::verify_train::rows(b, model, &r, atol, rtol);
    }
    // A fixture can carry the weights next to the reference tensors: ignore its data tensors.
    let m = load_unet(model, b, &["x", "t", "y", "out", "feat", "x0", "k", "noise", "kl", "pred_xstart"])?;
    let model_path = model;
    let load = |k: &str| -> Result<crate::Tensor<B>> {
        let (s, v) = r.get(k)?;
        b.from_host(&s, &v)
    };
    match kind.as_str() {
        "unet" => {
            let y = labels(&r, "y")?;
            let o = m.forward(b, &load("x")?, &load("t")?, y.as_deref())?;
            let mut rows = vec![compare("out", &b.to_host(&o.out)?, &r.get("out")?.1, atol, rtol)];
            if r.contains("feat") {
                match &o.feat {
                    Some(f) => rows.push(compare("feat", &b.to_host(f)?, &r.get("feat")?.1, atol, rtol)),
                    None => rows.push(Row { name: "feat (model has no feature head)".into(), max_abs: f64::NAN, max_rel: f64::NAN, pass: false }),
                }
            }
            Ok(rows)
        }
        "kl" => kl_rows(b, &m, &r, atol, rtol),
        "detect" => detect_rows(b, &m, &r, atol, rtol, opts, model_path),
        other => Err(Error::BadFile { path: reference.to_path_buf(), msg: format!("unknown reference kind `{other}` (unet, kl, effnet, detect, train_step)") }),
    }
}

/// Per sample: x_t = q_sample(x0, k, noise), one UNet pass at τ_k, p(x_{k−1}|x_k) with x̂0
/// clipped, KL(q ‖ p) in bits per element (docs/method.md §1).
fn kl_rows<B: Backend>(b: &B, m: &UNet<B>, r: &SafeTensors, atol: f64, rtol: f64) -> Result<Vec<Row>> {
    let dflags = r.metadata().get("diffusion_flags").cloned().unwrap_or_default();
    let f = ModelFlags::parse(&format!("{} {}", m.flags.source, dflags)).map_err(|e| crate::models::in_model_file(r.path(), e))?;
    let d = Diffusion::new(BetaSchedule::parse(&f.noise_schedule)?, f.diffusion_steps, &f.timestep_respacing)?;
    let var = if f.learn_sigma {
        VarType::LearnedRange
    } else if f.sigma_small {
        VarType::FixedSmall
    } else {
        VarType::FixedLarge
    };
    let (shape, x0) = r.get("x0")?;
    let noise = r.get("noise")?.1;
    let ks: Vec<usize> = r.get("k")?.1.iter().map(|&v| v as usize).collect();
    let y = labels(r, "y")?;
    let Some((&n, rest)) = shape.split_first() else {
        return Err(Error::BadFile { path: r.path().to_path_buf(), msg: format!("x0 has shape {shape:?}: want [N, C, H, W]") });
    };
    let per = rest.iter().product::<usize>();
    if n == 0 || ks.len() != n || noise.len() != x0.len() {
        return Err(Error::BadFile { path: r.path().to_path_buf(), msg: "k, noise and x0 disagree on the batch".into() });
    }
    let one = [1usize].iter().chain(&shape[1..]).copied().collect::<Vec<_>>();
    let (mut kl, mut px0) = (Vec::with_capacity(x0.len()), Vec::with_capacity(x0.len()));
    for i in 0..n {
        let k = ks[i];
        let xs = b.from_host(&one, &x0[i * per..(i + 1) * per])?;
        let ns = b.from_host(&one, &noise[i * per..(i + 1) * per])?;
        let (sa, s1) = d.q_sample_coefs(k)?;
        let xt = b.q_sample(&xs, &ns, sa, s1)?;
        let t = b.from_host(&[1], &[d.model_timestep(k, f.rescale_timesteps)])?;
        let yi = y.as_ref().map(|y| vec![y[i]]);
        let out = m.forward(b, &xt, &t, yi.as_deref())?.out;
        let c = d.step_coefs(k, var, true)?;
        let (mean, lv, p) = b.p_mean_variance(&xt, &out, &c)?;
        kl.extend(b.to_host(&b.kl_bits(&xs, &xt, &mean, &lv, &c)?)?);
        px0.extend(b.to_host(&p)?);
    }
    Ok(vec![compare("kl", &kl, &r.get("kl")?.1, atol, rtol), compare("pred_xstart", &px0, &r.get("pred_xstart")?.1, atol, rtol)])
}

/// The whole scoring pipeline on the reference's images and noises (docs/method.md §1–§3).
fn detect_rows<B: Backend>(b: &B, m: &UNet<B>, r: &SafeTensors, atol: f64, rtol: f64, o: &ScoreSettings, model: &Path) -> Result<Vec<Row>> {
    use crate::anomaly::score::{ScoreConfig, Scorer};
    let eff = match &o.effnet {
        Some(p) => Some(load_effnet(b, p, o.effnet_arch.as_deref(), model)?),
        None => None,
    };
    let dflags = r.metadata().get("diffusion_flags").cloned().unwrap_or_default();
    let f = ModelFlags::parse(&format!("{} {}", m.flags.source, dflags)).map_err(|e| crate::models::in_model_file(r.path(), e))?;
    let d = Diffusion::new(BetaSchedule::parse(&f.noise_schedule)?, f.diffusion_steps, &f.timestep_respacing)?;
    let ks: Vec<usize> = r.metadata().get("timesteps").map(|s| s.split(',').filter_map(|v| v.trim().parse().ok()).collect()).unwrap_or_else(|| vec![5, 50, 100]);
    let load = |k: &str| -> Result<crate::Tensor<B>> {
        let (s, v) = r.get(k)?;
        b.from_host(&s, &v)
    };
    let noise: Vec<_> = ks.iter().map(|k| load(&format!("noise_k{k}"))).collect::<Result<_>>()?;
    let scorer = Scorer { unet: m, effnet: eff.as_ref(), diffusion: d, cfg: ScoreConfig { timesteps: ks, ..o.score_config() } };
    let y = labels(r, "y")?;
    let s = scorer.score(b, &load("x0")?, &noise, y.as_deref())?;
    let cat = |f: &dyn Fn(&crate::anomaly::score::ImageScores) -> Vec<f32>| s.iter().flat_map(f).collect::<Vec<f32>>();
    let mut rows = vec![compare("kl_map", &cat(&|i| i.kl_map.clone()), &r.get("kl_map")?.1, atol, rtol)];
    if r.contains("feat_map") {
        match s.first().ok_or_else(|| Error::BadFile { path: r.path().to_path_buf(), msg: "an empty batch (x0 with no image)".into() })?.feat_map {
            Some(_) => rows.push(compare("feat_map", &cat(&|i| i.feat_map.clone().unwrap_or_default()), &r.get("feat_map")?.1, atol, rtol)),
            None => rows.push(Row { name: "feat_map (no --effnet or no head)".into(), max_abs: f64::NAN, max_rel: f64::NAN, pass: false }),
        }
    }
    rows.push(compare("score_map", &cat(&|i| i.score_map.clone()), &r.get("score_map")?.1, atol, rtol));
    rows.push(compare("image_score", &s.iter().map(|i| i.image_score).collect::<Vec<_>>(), &r.get("image_score")?.1, atol, rtol));
    Ok(rows)
}
