//! A whole training run (`ran train`): data, the initial model, the loop of `train_step`s with
//! the recipe's schedule (docs/method.md §5: uniform t, lr annealed linearly to 0, EMA), the log
//! and loss curve, checkpoints every `save_every` steps and at Ctrl-C, and the output model (the
//! EMA weights, in the format `ran detect --model` reads).

use super::checkpoint::{self, Settings};
use super::data::{self, rotated_chw, TrainData};
use super::init::{build, initial};
use super::log::{Log, StepRecord};
use super::loss_scale::{apply_gradients_scaled, LossScale, INITIAL_LG_LOSS_SCALE, SCALE_GROWTH};
use super::rng::{batch_indices, SplitMix, NOISE, ROTATION, TIMESTEPS};
use super::step::{loss_and_gradients_scaled, StepInputs, TrainOnly, TrainState};
use super::{interrupt, plot};
use crate::anomaly::detector::load_extractor;
use crate::backend::{AdamwParams, Backend};
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::io::flags::ModelFlags;
use crate::io::image::ImageLimits;
use crate::io::safetensors::{write_streaming, Dtype, SafeTensors};
use crate::models::efficientnet::{EffNetConfig, EfficientNet};
use crate::models::unet::{state_dict_shape, Activations, UNet};
use crate::ops::precision::Precision;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The paper's MODEL_FLAGS (train.sh), the default without --flags and without a ran model as --init.
pub const PAPER_FLAGS: &str = "--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_scale_shift_norm True";

#[derive(Clone, Debug)]
pub struct TrainArgs {
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
    pub init: Option<PathBuf>,
    pub flags: Option<String>,
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    /// None: `steps`; 0: no annealing
    pub lr_anneal_steps: Option<u64>,
    pub ema: f64,
    /// None: the flags' feat_shape, else 64 (the paper's training)
    pub feat_shape: Option<usize>,
    pub effnet: Option<PathBuf>,
    /// None: the --init model's declared extractor, else efficientnet-b4
    pub effnet_arch: Option<String>,
    pub rotate: f64,
    pub seed: u64,
    /// 0: only at the end
    pub save_every: u64,
    pub resume: Option<PathBuf>,
    /// the run's folder (checkpoint, log, curve); None: beside --out, `<out>.train`
    pub run_dir: Option<PathBuf>,
    /// every parameter, or the feature head alone (t then drawn below `feature_max_t`)
    pub train_only: TrainOnly,
    /// the feature term only on samples with t < this (None: all)
    pub feature_max_t: Option<usize>,
    /// keep only each layer's input in the forward and recompute the rest in the backward (the
    /// same results, less memory, more time)
    pub recompute: bool,
    /// f16 loss scaling: log2 of the initial scale (None: upstream's 20) and its growth per
    /// good step (None: upstream's 1e-3); refused at other precisions
    pub loss_scale_init: Option<f64>,
    pub loss_scale_growth: Option<f64>,
}

pub struct Summary {
    pub run_dir: PathBuf,
    pub classes: Vec<String>,
    pub images: usize,
    pub start_step: u64,
    /// steps completed when the run stopped
    pub step: u64,
    pub interrupted: bool,
    pub fresh: Vec<String>,
    pub last: Option<StepRecord>,
}

/// The learning rate of step `step` (0-based) under a linear anneal over `anneal` steps (0: none),
/// as upstream's TrainLoop (train_util.py:153-178, 220-226): the optimiser is built with `lr`,
/// and `_anneal_lr` runs after each step with that step's index, setting the next one's rate, so
/// steps 0 and 1 both train at `lr` and step j ≥ 1 at lr·(1 − (j − 1)/anneal).
pub fn annealed_lr(lr: f64, anneal: u64, step: u64) -> f64 {
    if anneal == 0 {
        return lr;
    }
    lr * (1.0 - (step.saturating_sub(1) as f64 / anneal as f64).min(1.0))
}

/// An error of step `step` (1-based), said once, with `note` after it.
fn at_step(step: u64, e: Error, note: &str) -> Error {
    let msg = match e {
        Error::InvalidArgument(m) => m,
        e => e.to_string(),
    };
    Error::InvalidArgument(format!("step {step}: {msg}{note}"))
}

/// The flags of the run: --flags, else those a ran model given as --init carries, else the
/// paper's; with the feature resolution of --feat-shape and the checks training needs.
fn resolve_flags(a: &TrainArgs, head: bool) -> Result<ModelFlags> {
    let init_meta = |key: &str| -> Option<String> {
        let p = a.init.as_ref()?;
        SafeTensors::open(p).ok()?.metadata().get(key).cloned()
    };
    let mut s = a.flags.clone().or_else(|| init_meta("model_flags")).unwrap_or_else(|| PAPER_FLAGS.to_string());
    let given = ModelFlags::parse(&s)?;
    if head {
        let in_flags = s.contains("feat_shape");
        match (a.feat_shape, in_flags) {
            (Some(f), true) if f != given.feat_shape => return Err(Error::InvalidArgument(format!("--feat-shape {f} but the flags say --feat_shape {}", given.feat_shape))),
            (_, true) => {}
            (f, false) => s = format!("{s} --feat_shape {}", f.unwrap_or(64)),
        }
    }
    let f = ModelFlags::parse(&s)?;
    let refuse = |why: &str| Err(Error::InvalidArgument(format!("training: {why}")));
    if !f.learn_sigma {
        return refuse("the paper's loss trains the variance channels: the flags need --learn_sigma True");
    }
    if f.use_new_attention_order {
        return refuse("--use_new_attention_order True is not supported (the paper's model uses the legacy order)");
    }
    if f.dropout != 0.0 {
        return refuse("dropout is not implemented (the paper trains with --dropout 0)");
    }
    if f.use_kl || f.predict_xstart {
        return refuse("the paper's loss is the ε-MSE + VB (--use_kl False --predict_xstart False)");
    }
    if f.image_size == 0 {
        return refuse("--image_size must be positive");
    }
    Ok(f)
}

fn check_args(a: &TrainArgs) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    if a.steps == 0 {
        return bad("--steps must be at least 1".into());
    }
    if a.batch == 0 {
        return bad("--batch must be at least 1".into());
    }
    if !(a.lr.is_finite() && a.lr >= 0.0) {
        return bad(format!("--lr {}: a finite learning rate ≥ 0", a.lr));
    }
    if !(0.0..1.0).contains(&a.ema) {
        return bad(format!("--ema {}: the EMA rate is in [0, 1)", a.ema));
    }
    if !(a.rotate.is_finite() && (0.0..=180.0).contains(&a.rotate)) {
        return bad(format!("--rotate {}: degrees in [0, 180]", a.rotate));
    }
    if a.feat_shape == Some(0) {
        return bad("--feat-shape must be positive".into());
    }
    if a.train_only == TrainOnly::Head && a.effnet.is_none() {
        return bad("--train-only head trains the feature head: give --effnet (the extractor whose features it learns)".into());
    }
    Ok(())
}

/// The loss scale of a fresh run at precision `p`: f16 only (its range needs it; bf16 has f32's).
fn initial_scale(a: &TrainArgs, p: Precision) -> Result<Option<LossScale>> {
    if p != Precision::F16 {
        if a.loss_scale_init.is_some() || a.loss_scale_growth.is_some() {
            return Err(Error::InvalidArgument(format!("--loss-scale-init / --loss-scale-growth scale the loss of f16 training; this run computes in {p}")));
        }
        return Ok(None);
    }
    LossScale::new(a.loss_scale_init.unwrap_or(INITIAL_LG_LOSS_SCALE), a.loss_scale_growth.unwrap_or(SCALE_GROWTH)).map(Some)
}

/// The settings a resumed run must share with the run it continues.
fn settings(a: &TrainArgs, flags: &ModelFlags, data: &TrainData, anneal: u64, arch: Option<&str>, p: Precision, scale: Option<&LossScale>) -> Settings {
    let name = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let mut s = BTreeMap::new();
    s.insert("flags".into(), flags.source.clone());
    s.insert("data".into(), a.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","));
    s.insert("classes".into(), data.classes.join(","));
    s.insert("images".into(), data.images.len().to_string());
    s.insert("init".into(), name(&a.init));
    s.insert("batch".into(), a.batch.to_string());
    s.insert("lr".into(), format!("{:e}", a.lr));
    s.insert("lr_anneal_steps".into(), anneal.to_string());
    s.insert("ema".into(), a.ema.to_string());
    s.insert("effnet".into(), name(&a.effnet));
    s.insert("effnet_arch".into(), arch.unwrap_or("").to_string());
    s.insert("rotate".into(), a.rotate.to_string());
    s.insert("seed".into(), a.seed.to_string());
    // only when set, so a checkpoint of a run from before these options still resumes
    if a.train_only != TrainOnly::All {
        s.insert("train_only".into(), a.train_only.to_string());
    }
    if let Some(m) = a.feature_max_t {
        s.insert("feature_max_t".into(), m.to_string());
    }
    if p != Precision::F32 {
        s.insert("precision".into(), p.to_string());
    }
    if let Some(ls) = scale {
        s.insert("loss_scale_init".into(), ls.lg.to_string());
        s.insert("loss_scale_growth".into(), ls.growth.to_string());
    }
    s
}

/// The extractor whose taps the head learns, with its architecture's name.
fn extractor<B: Backend>(b: &B, a: &TrainArgs) -> Result<Option<(EfficientNet<B>, String, usize)>> {
    let Some(p) = &a.effnet else { return Ok(None) };
    let declared = a.init.as_ref().and_then(|i| SafeTensors::open(i).ok()).and_then(|st| st.metadata().get("feature_extractor").cloned());
    let arch = a.effnet_arch.clone().or(declared).unwrap_or_else(|| "efficientnet-b4".into());
    let cfg = EffNetConfig::from_name(&arch)?;
    let taps = cfg.tap_channels().iter().sum();
    Ok(Some((load_extractor(b, &cfg, p, &[])?, arch, taps)))
}

/// The batch of step `step`: x0 [N, 3, S, S] on the host, the labels, timesteps and ε.
fn draw_batch(a: &TrainArgs, data: &TrainData, d: &Diffusion, step: u64) -> (Vec<f32>, Vec<usize>, Vec<usize>, Vec<f32>) {
    let idx = batch_indices(a.seed, step, a.batch, data.images.len());
    let mut rot = SplitMix::stream(a.seed, ROTATION, step);
    let mut x0 = Vec::with_capacity(a.batch * 3 * data.size * data.size);
    let mut y = Vec::with_capacity(a.batch);
    for &i in &idx {
        let (img, label) = &data.images[i];
        let deg = if a.rotate > 0.0 { (2.0 * rot.uniform() - 1.0) * a.rotate } else { 0.0 };
        x0.extend(rotated_chw(img, deg));
        y.push(*label);
    }
    let mut tr = SplitMix::stream(a.seed, TIMESTEPS, step);
    // training the head alone, only the timesteps its term covers are worth a step
    let t_end = match (a.train_only, a.feature_max_t) {
        (TrainOnly::Head, Some(m)) => m,
        _ => d.num_steps(),
    };
    let t = (0..a.batch).map(|_| tr.below(t_end as u64) as usize).collect();
    let mut nr = SplitMix::stream(a.seed, NOISE, step);
    let eps = (0..x0.len()).map(|_| nr.normal() as f32).collect();
    (x0, y, t, eps)
}

/// Writes the EMA weights as a model file detect, eval and reconstruct read.
fn write_model<B: Backend>(b: &B, out: &Path, model: &mut UNet<B>, state: &TrainState<B>, classes: &[String], arch: Option<&str>, steps: u64) -> Result<()> {
    let params = model.params()?;
    let entries: Vec<(String, Vec<usize>)> = params.iter().map(|(n, p)| (n.clone(), state_dict_shape(n, p.dims()))).collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "ran-unet".to_string());
    meta.insert("model_flags".to_string(), model.flags.source.clone());
    if model.num_classes.is_some() {
        meta.insert("class_names".to_string(), classes.join(","));
    }
    if let Some(arch) = arch {
        meta.insert("feature_extractor".to_string(), arch.to_string());
    }
    meta.insert("trained_by".to_string(), format!("ran train, {steps} steps (EMA weights)"));
    write_streaming(out, &entries, |n| b.to_host(&state.ema[n]), &meta, Dtype::F32)
}

pub fn run<B: Backend>(b: &B, a: &TrainArgs) -> Result<Summary> {
    check_args(a)?;
    let inputs: Vec<&Path> = a.init.iter().chain(a.effnet.iter()).map(PathBuf::as_path).collect();
    crate::io::files::refuse_overwriting_input(&a.out, &inputs)?;
    let effnet = extractor(b, a)?;
    let flags = resolve_flags(a, effnet.is_some())?;
    let data = data::load(&a.data, flags.image_size, &ImageLimits::default())?;
    let anneal = a.lr_anneal_steps.unwrap_or(a.steps);
    let arch = effnet.as_ref().map(|e| e.1.as_str());
    let precision = b.precision();
    let scale0 = initial_scale(a, precision)?;
    let now = settings(a, &flags, &data, anneal, arch, precision, scale0.as_ref());
    let run_dir = a.resume.clone().or_else(|| a.run_dir.clone()).unwrap_or_else(|| a.out.with_extension("train"));
    let d = Diffusion::new(BetaSchedule::parse(&flags.noise_schedule)?, flags.diffusion_steps, "")?;
    if let Some(m) = a.feature_max_t {
        if m == 0 || m > d.num_steps() {
            return Err(Error::InvalidArgument(format!("--feature-max-t {m}: a timestep in 1..={} (the training schedule's steps)", d.num_steps())));
        }
        if effnet.is_none() {
            return Err(Error::InvalidArgument("--feature-max-t limits the feature term: give --effnet".into()));
        }
    }

    let (mut model, mut state, fresh) = match &a.resume {
        Some(dir) => {
            let (st, saved, step) = checkpoint::read_header(dir)?;
            checkpoint::check_same(dir, &saved, &now)?;
            let (m, s) = checkpoint::restore(b, &st, &flags, step, scale0.map_or(0.0, |s| s.growth))?;
            if s.loss_scale.is_some() != scale0.is_some() {
                return Err(Error::BadFile {
                    path: dir.clone(),
                    msg: format!(
                        "--resume: the checkpoint {} a loss scale, this {precision} run {}",
                        if s.loss_scale.is_some() { "has" } else { "has no" },
                        if scale0.is_some() { "needs one" } else { "has none" }
                    ),
                });
            }
            (m, s, Vec::new())
        }
        None => {
            if checkpoint::path_in(&run_dir).exists() {
                return Err(Error::BadFile { path: run_dir, msg: "holds the checkpoint of an earlier run: continue it with --resume, or remove it".into() });
            }
            let init = initial(&flags, data.classes.len(), effnet.as_ref().map(|e| e.2), a.init.as_deref(), a.seed)?;
            let mut m = build(b, &flags, &init.weights)?;
            let mut s = TrainState::new(b, &mut m)?;
            s.loss_scale = scale0;
            (m, s, init.fresh)
        }
    };
    if state.step > a.steps {
        return Err(Error::InvalidArgument(format!("--steps {}: the checkpoint is already at step {}", a.steps, state.step)));
    }
    match (&a.init, fresh.len()) {
        (_, 0) => {}
        (None, k) => eprintln!("no --init: all {k} tensors initialised fresh"),
        (Some(_), _) => eprintln!("initialised fresh: {}", fresh.join(", ")),
    }
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::Io { path: run_dir.clone(), source: e })?;
    let mut log = Log::open(&run_dir, state.step)?;
    interrupt::install();

    let start = state.step;
    let n = a.batch;
    let s = flags.image_size;
    let y_on = model.num_classes.is_some();
    let bar = indicatif::ProgressBar::new(a.steps);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps, {per_sec}, eta {eta} {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    bar.set_position(start);
    bar.reset_eta();
    let save = |model: &mut UNet<B>, state: &TrainState<B>, log: &Log| -> Result<()> {
        checkpoint::save(&run_dir, b, model, state, &now)?;
        plot::save(&run_dir.join("loss.png"), &log.records)
    };
    let mut interrupted = false;
    let mut last_saved = a.resume.as_ref().map(|_| start);
    while state.step < a.steps {
        if interrupt::requested() {
            interrupted = true;
            break;
        }
        let step = state.step;
        let t0 = Instant::now();
        let (x0h, y, t, epsh) = draw_batch(a, &data, &d, step);
        let x0 = b.from_host(&[n, 3, s, s], &x0h)?;
        let eps = b.from_host(&[n, 3, s, s], &epsh)?;
        let target = match (&effnet, &model.feat_head) {
            (Some((e, _, _)), Some(h)) => Some(e.features(b, &x0, h.feat_shape).map_err(|e| at_step(step + 1, e, ""))?),
            _ => None,
        };
        let lr = annealed_lr(a.lr, anneal, step);
        let hp = AdamwParams { lr, ..AdamwParams::default() };
        let inp = StepInputs { x0: &x0, eps: &eps, t: &t, y: if y_on { Some(&y) } else { None }, feat_target: target.as_ref(), feat_max_t: a.feature_max_t, only: a.train_only };
        let act = if a.recompute { Activations::Recompute } else { Activations::Keep };
        let scale = state.loss_scale;
        let step_result = loss_and_gradients_scaled(b, &model, &d, &inp, act, scale.map(|s| s.factor()))
            .and_then(|(terms, grads)| apply_gradients_scaled(b, &mut model, &mut state, &grads, &hp, a.ema as f32).map(|took| (terms, took)))
            .and_then(|r| match state.loss_scale {
                // gradients that stay non-finite at every scale are not an overflow (NaN weights)
                Some(s) if LossScale::new(s.lg, s.growth).is_err() && !r.1 => {
                    Err(Error::InvalidArgument(format!("the gradients are not finite even with the loss scaled by 2^{}: not an f16 overflow", s.lg + 1.0)))
                }
                Some(s) if LossScale::new(s.lg, s.growth).is_err() => Err(Error::InvalidArgument(format!("the loss scale grew to 2^{}, past f32's range (--loss-scale-growth {})", s.lg, s.growth))),
                _ => Ok(r),
            });
        let (terms, took) = match step_result {
            Ok(t) => t,
            Err(e) => {
                bar.abandon();
                // the weights were not updated: the checkpoint on disk stays the last good one
                let kept = match last_saved {
                    Some(k) => format!("; stopped, the last good checkpoint (step {k}) in {} is kept", run_dir.display()),
                    None => "; stopped, no checkpoint written".to_string(),
                };
                return Err(at_step(step + 1, e, &kept));
            }
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let rec = StepRecord {
            step: state.step,
            lr,
            mse: mean(&terms.mse),
            vb: mean(&terms.vb),
            feat_mse: terms.feat_mse,
            loss: terms.loss,
            seconds: t0.elapsed().as_secs_f64(),
            lg_loss_scale: scale.map(|s| s.lg),
            skipped: !took,
        };
        if let (false, Some(s)) = (took, &state.loss_scale) {
            bar.suspend(|| eprintln!("step {}: f16 gradients overflowed, step skipped; lg_loss_scale now {}", state.step, s.lg));
        }
        let scale_note = scale.map(|s| format!(", f16 scale 2^{:.3}", s.lg)).unwrap_or_default();
        bar.set_message(format!("loss {:.4} (mse {:.4}, vb {:.4}{}{scale_note})", rec.loss, rec.mse, rec.vb, rec.feat_mse.map(|f| format!(", feat {f:.4}")).unwrap_or_default()));
        bar.inc(1);
        log.push(rec)?;
        if state.step == a.steps || (a.save_every > 0 && state.step % a.save_every == 0) {
            save(&mut model, &state, &log)?;
            last_saved = Some(state.step);
        }
    }
    bar.finish_and_clear();
    if interrupted {
        save(&mut model, &state, &log)?;
    } else {
        write_model(b, &a.out, &mut model, &state, &data.classes, arch, a.steps)?;
    }
    Ok(Summary { run_dir, classes: data.classes, images: data.images.len(), start_step: start, step: state.step, interrupted, fresh, last: log.records.last().cloned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::image::Image8;

    fn args(only: TrainOnly, max_t: Option<usize>) -> TrainArgs {
        TrainArgs {
            data: vec![],
            out: PathBuf::from("x.safetensors"),
            init: None,
            flags: None,
            steps: 1,
            batch: 16,
            lr: 1e-4,
            lr_anneal_steps: None,
            ema: 0.0,
            feat_shape: None,
            effnet: None,
            effnet_arch: None,
            rotate: 0.0,
            seed: 3,
            save_every: 0,
            resume: None,
            run_dir: None,
            train_only: only,
            feature_max_t: max_t,
            recompute: false,
            loss_scale_init: None,
            loss_scale_growth: None,
        }
    }

    /// Training the head alone draws t below --feature-max-t (train_head.py's t ∈ [0, 400));
    /// training everything draws every t, whatever --feature-max-t says.
    #[test]
    fn the_head_alone_trains_on_the_timesteps_of_its_term() {
        let img = Image8 { w: 2, h: 2, c: 3, data: vec![0; 12] };
        let data = TrainData { classes: vec!["a".into()], images: vec![(img, 0)], size: 2 };
        let d = Diffusion::new(BetaSchedule::Linear, 1000, "").unwrap();
        let ts = |a: &TrainArgs| (0..50).flat_map(|s| draw_batch(a, &data, &d, s).2).collect::<Vec<_>>();
        let head = ts(&args(TrainOnly::Head, Some(400)));
        assert!(head.iter().all(|&t| t < 400) && head.iter().any(|&t| t >= 360), "{head:?}");
        let all = ts(&args(TrainOnly::All, Some(400)));
        assert!(all.iter().filter(|&&t| t >= 400).count() > 400, "every t: about 60% of 800 draws ≥ 400");
        assert_eq!(ts(&args(TrainOnly::Head, None)), all, "without T the head draws as the full step");
    }
}
