//! The seven workloads of `ran bench`, each built from `workloads`, timed by `measure` and
//! returned as a `Report`. Every timed closure ends by reading a result back to the host, which
//! waits for an asynchronous device.

use super::measure::{measure, Plan};
use super::report::{DriverPerRun, Report};
use super::workloads;
use crate::anomaly::score::FeatureTimestep;
use crate::backend::Backend;
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::io::flags::ModelFlags;
use crate::models::unet::Activations;
use crate::train::loss_scale::{apply_gradients_scaled, LossScale};
use crate::train::step::{loss_and_gradients_scaled, StepInputs, TrainState};
use crate::{Error, Result};

fn report(bench: &str, config: String, batch: usize, plan: Plan, f: impl FnMut() -> Result<()>) -> Result<Report> {
    let m = measure(bench, plan, f)?;
    Ok(Report { bench: bench.into(), config, batch, warmup: plan.warmup, stats: m.stats, flops: m.flops, peak_rss_mb: crate::sysinfo::peak_rss_mb(), driver: None })
}

fn positive(name: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::InvalidArgument(format!("{name} must be at least 1")));
    }
    Ok(())
}

/// ", weights stored f16" when they are (the config line says what was timed).
fn stored(f16: bool) -> &'static str {
    if f16 {
        ", weights stored f16"
    } else {
        ""
    }
}

/// One UNet forward (no feature head, as upstream's UNetModel) of `flags` at batch `batch`;
/// `f16_weights`: the random weights rounded to f16 and loaded as from an f16 file.
pub fn unet<B: Backend>(b: &B, flags: &str, batch: usize, f16_weights: bool, plan: Plan) -> Result<Report> {
    positive("--batch", batch)?;
    let f = ModelFlags::parse(flags)?;
    let model = workloads::synthetic_unet_stored(b, &f, false, 1, f16_weights)?;
    let inp = workloads::unet_inputs(b, &f, batch)?;
    let config = format!("UNet forward at {0}x{0}, flags `{flags}`{1}", f.image_size, stored(f16_weights));
    // driver calls of each run (forward + read-back), where the backend counts them
    let mut per_run = Vec::new();
    let mut r = report("unet", config, batch, plan, || {
        let before = b.driver_counts();
        let o = model.forward(b, &inp.x, &inp.t, inp.y.as_deref())?;
        b.to_host(&o.out).map(drop)?;
        if let (Some(a), Some(z)) = (before, b.driver_counts()) {
            per_run.push(z - a);
        }
        Ok(())
    })?;
    if let (Some(first), Some(last)) = (per_run.first(), per_run.last()) {
        // beside the eager counts: the same forward replayed as a graph (recorded at the first
        // call, the cache warm at the third), where the backend has graphs
        let graphed = || -> Result<()> { b.to_host(&model.forward_graphed(b, &inp.x, &inp.t, inp.y.as_deref())?.out).map(drop) };
        graphed()?;
        graphed()?;
        let before = b.driver_counts();
        graphed()?;
        let graph_replay = match (before, b.driver_counts()) {
            (Some(a), Some(z)) if z.graph_launches > a.graph_launches => Some(z - a),
            _ => None,
        };
        r.driver = Some(DriverPerRun { first: *first, last: *last, runs: per_run.len(), graph_replay });
    }
    Ok(r)
}

/// `efficientnet-<variant>` to its last tapped block (what the feature score runs), the taps
/// resized to 16² and concatenated, at `image_size`².
pub fn effnet<B: Backend>(b: &B, variant: &str, image_size: usize, batch: usize, plan: Plan) -> Result<Report> {
    positive("--batch", batch)?;
    positive("--image-size", image_size)?;
    let name = if variant.starts_with("efficientnet-") || variant.starts_with("custom:") { variant.to_string() } else { format!("efficientnet-{variant}") };
    let eff = workloads::synthetic_effnet(b, &name)?;
    let x = workloads::images(b, batch, image_size)?;
    let config = format!("{name} features (to the last tap, resized to 16x16) at {image_size}x{image_size}");
    report("effnet", config, batch, plan, || b.to_host(&eff.features(b, &x, 16)?).map(drop))
}

/// wide_resnet50_2 to layer3, forward + the input gradient of the summed layer outputs.
pub fn wrn50_grad<B: Backend>(b: &B, image_size: usize, batch: usize, plan: Plan) -> Result<Report> {
    positive("--batch", batch)?;
    positive("--image-size", image_size)?;
    let resnet = workloads::synthetic_resnet(b, "wide_resnet50_2")?;
    let x = workloads::images(b, batch, image_size)?;
    let config = format!("wide_resnet50_2 to layer3, forward + input gradient at {image_size}x{image_size}");
    report("wrn50-grad", config, batch, plan, || workloads::backbone_grad(b, &resnet, &x).map(drop))
}

/// The full detection of `batch` images: the UNet of `flags` with the feature head,
/// EfficientNet-B4, timesteps 5, 50, 100, KL + feature maps; `f16_weights` as for `unet` (the
/// UNet's; EfficientNet's stay f32).
pub fn detect<B: Backend>(b: &B, flags: &str, mode: FeatureTimestep, batch: usize, f16_weights: bool, plan: Plan) -> Result<Report> {
    positive("--batch", batch)?;
    let f = ModelFlags::parse(flags)?;
    let unet = workloads::synthetic_unet_stored(b, &f, true, 1, f16_weights)?;
    let eff = workloads::synthetic_effnet(b, "efficientnet-b4")?;
    let scorer = workloads::scorer(&unet, &eff, mode)?;
    let s = f.image_size;
    let inp = workloads::unet_inputs(b, &f, batch)?;
    let noise = workloads::detect_noise(b, &scorer.cfg.timesteps, batch, s)?;
    let config = format!("detect (KL + feature maps, EfficientNet-B4, timesteps 5,50,100, feature timestep {}) at {s}x{s}, flags `{flags}`{}", mode.name(), stored(f16_weights));
    report("detect", config, batch, plan, || scorer.score(b, &inp.x, &noise, inp.y.as_deref()).map(drop))
}

/// conv2d of x [batch, c, h, w] with `out` filters of k×k, stride 1, padding k/2, with bias.
pub fn conv<B: Backend>(b: &B, [c, h, w]: [usize; 3], out: usize, k: usize, batch: usize, plan: Plan) -> Result<Report> {
    for (n, v) in [("--batch", batch), ("--kernel", k), ("--out", out), ("channels", c), ("height", h), ("width", w)] {
        positive(n, v)?;
    }
    let case = workloads::conv_case(b, batch, [c, h, w], out, k)?;
    let config = format!("conv2d {c}->{out} {k}x{k} stride 1 padding {} at {h}x{w}", k / 2);
    report("conv", config, batch, plan, || b.to_host(&b.conv2d(&case.x, &case.w, Some(&case.bias), &case.p)?).map(drop))
}

/// guided-diffusion's QKVAttentionLegacy on qkv [batch, 3·heads·d, tokens] (seeded uniform
/// values in [-0.5, 0.5)), with `backward` also its input gradient for a seeded output gradient.
pub fn attention<B: Backend>(b: &B, tokens: usize, heads: usize, d: usize, batch: usize, backward: bool, plan: Plan) -> Result<Report> {
    for (n, v) in [("--tokens", tokens), ("--heads", heads), ("--head-dim", d), ("--batch", batch)] {
        positive(n, v)?;
    }
    let qkv = workloads::rand_tensor(b, &[batch, 3 * heads * d, tokens], 1)?;
    let gy = workloads::rand_tensor(b, &[batch, heads * d, tokens], 2)?;
    let what = if backward { "forward + input gradient" } else { "forward" };
    let config = format!("attention_legacy {what}, {heads} heads x {d} channels, {tokens} tokens");
    report("attention", config, batch, plan, || {
        let y = b.attention_legacy(&qkv, heads)?;
        if backward {
            b.to_host(&b.attention_legacy_x_backward(&gy, &qkv, heads)?).map(drop)?;
        }
        b.to_host(&y).map(drop)
    })
}

/// One training step of `flags` with the feature head at batch `batch`, as `ran train` runs it:
/// q_sample, the UNet forward + head, the paper's loss (ε-MSE + VB + feature MSE), the backward
/// pass, AdamW on every parameter and the EMA update. The feature target is a fixed random
/// tensor (the EfficientNet forward that makes it is `ran bench effnet`'s). `recompute`: the
/// forward keeps only each layer's input and the backward rebuilds the rest (`--recompute`).
pub fn train<B: Backend>(b: &B, flags: &str, batch: usize, recompute: bool, plan: Plan) -> Result<Report> {
    positive("--batch", batch)?;
    let f = ModelFlags::parse(flags)?;
    let mut model = workloads::synthetic_unet(b, &f, true, 1)?;
    let mut state = TrainState::new(b, &mut model)?;
    // f16 training scales its loss as `ran train` does (the unscaling and the overflow check are
    // part of its step)
    if b.precision() == crate::ops::precision::Precision::F16 {
        state.loss_scale = Some(LossScale::default());
    }
    let d = Diffusion::new(BetaSchedule::parse(&f.noise_schedule)?, f.diffusion_steps, "")?;
    let s = f.image_size;
    let x0 = workloads::rand_tensor(b, &[batch, 3, s, s], 11)?;
    let eps = workloads::rand_tensor(b, &[batch, 3, s, s], 12)?;
    // spread over the schedule, the same for every run
    let t: Vec<usize> = (0..batch).map(|i| (100 + 397 * i) % f.diffusion_steps).collect();
    let y = workloads::unet_inputs(b, &f, batch)?.y;
    let head = model.feat_head.as_ref().ok_or_else(|| Error::InvalidArgument("the bench model has no feature head".into()))?;
    let target = workloads::rand_tensor(b, &[batch, head.out_channels(), head.feat_shape, head.feat_shape], 13)?;
    let hp = crate::backend::AdamwParams { lr: 1e-4, ..Default::default() };
    let act = if recompute { Activations::Recompute } else { Activations::Keep };
    let what = if recompute { "bwd recomputing each layer's internals" } else { "bwd" };
    let config = format!("training step (fwd + head + loss + {what} + AdamW + EMA) at {0}x{0}, flags `{flags}`", f.image_size);
    report("train", config, batch, plan, || {
        let inp = StepInputs { x0: &x0, eps: &eps, t: &t, y: y.as_deref(), feat_target: Some(&target), feat_max_t: None, only: Default::default() };
        let (terms, grads) = loss_and_gradients_scaled(b, &model, &d, &inp, act, state.loss_scale.map(|s| s.factor()))?;
        apply_gradients_scaled(b, &mut model, &mut state, &grads, &hp, 0.997)?;
        if terms.loss.is_finite() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!("the bench's training step gave a non-finite loss {:?}", terms.loss)))
        }
    })
}
