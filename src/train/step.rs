//! One training step of the paper's recipe (docs/method.md §5): x_t = q_sample(x0, t, ε), the
//! UNet forward (+ feature head), the loss and its gradient (`loss`), the UNet backward, one
//! AdamW step on every parameter and the EMA update — as upstream's TrainLoop.run_step with
//! f32 master weights, a uniform t sampler (weights 1) and no gradient clipping. Under
//! `--precision f16` the loss is scaled for the backward and a step with an overflowed
//! gradient is skipped (`loss_scale`).

use super::loss::{diffusion_loss, Batch, LossTerms};
use super::loss_scale::LossScale;
use crate::backend::{AdamwParams, Backend};
use crate::diffusion::Diffusion;
use crate::models::unet::{Activations, UNet};
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::BTreeMap;

/// The optimiser's and the EMA's state, by parameter name.
pub struct TrainState<B: Backend> {
    /// training steps done (the run's iteration count: the lr anneal, `--steps`, the log)
    pub step: u64,
    /// AdamW updates made (torch's `step`, from 1 after the first; its bias corrections): `step`
    /// less the steps f16 loss scaling skipped (loss_scale.rs)
    pub updates: u64,
    /// AdamW's first and second moments
    pub moments: BTreeMap<String, (Tensor<B>, Tensor<B>)>,
    /// the EMA of the weights (initialised from them, as upstream)
    pub ema: BTreeMap<String, Tensor<B>>,
    /// f16 training's dynamic loss scale (None: the loss is not scaled)
    pub loss_scale: Option<LossScale>,
}

impl<B: Backend> TrainState<B> {
    pub fn new(b: &B, model: &mut UNet<B>) -> Result<Self> {
        let mut moments = BTreeMap::new();
        let mut ema = BTreeMap::new();
        for (name, p) in model.params()? {
            moments.insert(name.clone(), (b.zeros(p.dims())?, b.zeros(p.dims())?));
            ema.insert(name, p);
        }
        Ok(TrainState { step: 0, updates: 0, moments, ema, loss_scale: None })
    }
}

/// Which parameters a step trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrainOnly {
    /// every parameter (the paper's training)
    #[default]
    All,
    /// the feature head alone, the UNet frozen: a forward without a tape and the head's backward
    Head,
}

impl std::str::FromStr for TrainOnly {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" => Ok(TrainOnly::All),
            "head" => Ok(TrainOnly::Head),
            _ => Err(format!("`{s}`: all or head")),
        }
    }
}

impl std::fmt::Display for TrainOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrainOnly::All => "all",
            TrainOnly::Head => "head",
        })
    }
}

/// One batch: x0 and ε [N, 3, H, W] on the backend, per-sample timesteps of the training schedule,
/// class labels of a class-conditional model, and the feature head's target [N, C', S, S].
pub struct StepInputs<'a, B: Backend> {
    pub x0: &'a Tensor<B>,
    pub eps: &'a Tensor<B>,
    pub t: &'a [usize],
    pub y: Option<&'a [usize]>,
    pub feat_target: Option<&'a Tensor<B>>,
    /// the feature term only over the samples with t < this (None: all); a batch with none has
    /// no feature term, and the head no gradient (as torch, whose AdamW then skips it)
    pub feat_max_t: Option<usize>,
    pub only: TrainOnly,
}

/// The samples of a batch the feature term covers.
fn keep_samples(t: &[usize], max_t: Option<usize>) -> Vec<usize> {
    (0..t.len()).filter(|&i| max_t.is_none_or(|m| t[i] < m)).collect()
}

fn gather(v: &[f32], keep: &[usize], per: usize) -> Vec<f32> {
    keep.iter().flat_map(|&i| v[i * per..(i + 1) * per].iter().copied()).collect()
}

/// x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε per sample, in f32 with f32 coefficients, as upstream's q_sample.
fn q_sample_batch(d: &Diffusion, x0: &[f32], eps: &[f32], t: &[usize]) -> Vec<f32> {
    let m = x0.len() / t.len().max(1);
    let mut xt = vec![0.0f32; x0.len()];
    for (i, &ti) in t.iter().enumerate() {
        let ab = d.alphas_cumprod[ti];
        let (a, s) = (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32);
        for j in i * m..(i + 1) * m {
            xt[j] = a * x0[j] + s * eps[j];
        }
    }
    xt
}

/// The tensors an optimiser step updates, by name: the UNet's parameters, or any named set.
pub trait ParamSet<B: Backend> {
    /// Calls `f` on every tensor, which it may replace.
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor<B>) -> Result<()>) -> Result<()>;
}

impl<B: Backend> ParamSet<B> for UNet<B> {
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor<B>) -> Result<()>) -> Result<()> {
        self.visit_params_mut(f)
    }
}

impl<B: Backend> ParamSet<B> for BTreeMap<String, Tensor<B>> {
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Tensor<B>) -> Result<()>) -> Result<()> {
        self.iter_mut().try_for_each(|(n, t)| f(n, t))
    }
}

/// Runs one step: updates the model's weights, the moments and the EMA; returns the loss terms.
/// `hp.lr` is this step's learning rate (the caller anneals it).
pub fn train_step<B: Backend>(b: &B, model: &mut UNet<B>, state: &mut TrainState<B>, d: &Diffusion, inp: &StepInputs<B>, hp: &AdamwParams, ema_rate: f32) -> Result<LossTerms> {
    let (terms, grads) = loss_and_gradients(b, model, d, inp)?;
    apply_gradients(b, model, state, &grads, hp, ema_rate)?;
    Ok(terms)
}

/// The forward pass, the loss terms and ∂loss/∂w by parameter name (`ran verify` compares them);
/// the weights are left as they are.
pub fn loss_and_gradients<B: Backend>(b: &B, model: &UNet<B>, d: &Diffusion, inp: &StepInputs<B>) -> Result<(LossTerms, BTreeMap<String, Tensor<B>>)> {
    loss_and_gradients_as(b, model, d, inp, Activations::Keep)
}

/// `loss_and_gradients` with the forward keeping every inner activation for the backward, or
/// only each layer's input (`Activations::Recompute`, `--recompute`: less memory, ~0.5 of a
/// forward more work); the same bits either way on the CPU backend.
pub fn loss_and_gradients_as<B: Backend>(b: &B, model: &UNet<B>, d: &Diffusion, inp: &StepInputs<B>, act: Activations) -> Result<(LossTerms, BTreeMap<String, Tensor<B>>)> {
    loss_and_gradients_scaled(b, model, d, inp, act, None)
}

/// `loss_and_gradients_as` with the loss multiplied by `loss_scale` for the backward (f16 loss
/// scaling: the gradients returned are those of the scaled loss; the terms are the loss's own).
/// The loss's gradient with respect to the outputs is multiplied in f32 before it enters the
/// backward, as upstream's `(loss * 2 ** lg).backward()` multiplies an f32 loss.
pub fn loss_and_gradients_scaled<B: Backend>(
    b: &B,
    model: &UNet<B>,
    d: &Diffusion,
    inp: &StepInputs<B>,
    act: Activations,
    loss_scale: Option<f32>,
) -> Result<(LossTerms, BTreeMap<String, Tensor<B>>)> {
    let dims = inp.x0.dims().to_vec();
    if dims.len() != 4 || inp.eps.dims() != &dims[..] || inp.t.len() != dims[0] {
        return Err(Error::shape("train_step", format!("x0 {:?}, ε {:?} and {} timesteps do not describe one batch", dims, inp.eps.dims(), inp.t.len())));
    }
    if let Some(&bad) = inp.t.iter().find(|&&t| t >= d.num_steps()) {
        return Err(Error::InvalidArgument(format!("timestep {bad} outside the {}-step training schedule", d.num_steps())));
    }
    let (x0h, epsh) = (b.to_host(inp.x0)?, b.to_host(inp.eps)?);
    let xth = q_sample_batch(d, &x0h, &epsh, inp.t);
    let xt = b.from_host(&dims, &xth)?;
    let taus: Vec<f32> = inp.t.iter().map(|&t| d.model_timestep(t, model.flags.rescale_timesteps)).collect();
    let tt = b.from_host(&[taus.len()], &taus)?;
    let (out, tape, tap) = match inp.only {
        TrainOnly::All => {
            let (o, t) = model.forward_train_as(b, &xt, &tt, inp.y, act)?;
            (o, Some(t), None)
        }
        TrainOnly::Head => {
            let (o, src) = model.forward_with_tap(b, &xt, &tt, inp.y)?;
            if src.is_none() || inp.feat_target.is_none() {
                return Err(Error::InvalidArgument("training the feature head alone needs a model with the head and its target (--effnet)".into()));
            }
            (o, None, src)
        }
    };
    let outh = b.to_host(&out.out)?;
    let keep = keep_samples(inp.t, inp.feat_max_t);
    let feat = match (&out.feat, inp.feat_target) {
        (Some(p), Some(tg)) => {
            if p.dims() != tg.dims() {
                return Err(Error::shape("train_step", format!("feature head output {:?} against a target of {:?}", p.dims(), tg.dims())));
            }
            let per = p.dims().iter().product::<usize>() / dims[0];
            Some((gather(&b.to_host(p)?, &keep, per), gather(&b.to_host(tg)?, &keep, per), per))
        }
        (None, Some(_)) => return Err(Error::InvalidArgument("a feature target for a model without the feature head".into())),
        _ => None,
    };
    if outh.len() != 2 * x0h.len() {
        return Err(Error::InvalidArgument("training needs a learned-sigma model (--learn_sigma True): its loss trains the variance channels".into()));
    }
    let feat_kept = feat.as_ref().filter(|_| !keep.is_empty()).map(|(p, t, _)| (&p[..], &t[..]));
    let batch = Batch { x0: &x0h, xt: &xth, eps: &epsh, dims: [dims[0], dims[1], dims[2], dims[3]], t: inp.t, out: &outh, feat: feat_kept };
    let (terms, mut g) = diffusion_loss(d, &batch)?;
    if let Some(f) = loss_scale {
        g.g_out.iter_mut().for_each(|v| *v *= f);
        g.g_feat.iter_mut().flatten().for_each(|v| *v *= f);
    }
    // ∂feat back to the whole batch: zero on the samples the term leaves out
    let g_feat = match (&g.g_feat, &out.feat, &feat) {
        (Some(v), Some(p), Some((_, _, per))) => {
            let mut full = vec![0.0f32; p.dims().iter().product()];
            for (k, &i) in keep.iter().enumerate() {
                full[i * per..(i + 1) * per].copy_from_slice(&v[k * per..(k + 1) * per]);
            }
            Some(b.from_host(p.dims(), &full)?)
        }
        _ => None,
    };
    let grads = match (tape, tap) {
        (Some(tape), _) => {
            let g_out = b.from_host(out.out.dims(), &g.g_out)?;
            model.backward(b, tape, &g_out, g_feat.as_ref())?
        }
        (None, Some(src)) => match &g_feat {
            Some(gf) => model.head_gradients(b, &src, gf)?,
            None => BTreeMap::new(),
        },
        (None, None) => unreachable!("a head-only step has the tap"),
    };
    Ok((terms, grads))
}

/// One AdamW step on every parameter a gradient reaches, then the EMA update.
pub fn apply_gradients<B: Backend>(b: &B, model: &mut UNet<B>, state: &mut TrainState<B>, grads: &BTreeMap<String, Tensor<B>>, hp: &AdamwParams, ema_rate: f32) -> Result<()> {
    apply_gradients_to(b, model, state, grads, hp, ema_rate)
}

/// `apply_gradients` on any set of named parameters: one training step and one AdamW update.
pub fn apply_gradients_to<B: Backend>(b: &B, params: &mut dyn ParamSet<B>, state: &mut TrainState<B>, grads: &BTreeMap<String, Tensor<B>>, hp: &AdamwParams, ema_rate: f32) -> Result<()> {
    let k = hp.at_step(state.updates + 1)?;
    state.step += 1;
    state.updates += 1;
    let TrainState { moments, ema, .. } = state;
    params.visit_mut(&mut |name, p| {
        // a parameter no gradient reaches (the head without a target) keeps its value, as with
        // torch, where its .grad stays None and AdamW skips it
        let Some(gr) = grads.get(name) else { return Ok(()) };
        let gr = b.reshape(gr, p.dims())?;
        let (m, v) = moments.get(name).ok_or_else(|| Error::InvalidArgument(format!("no optimiser state for {name}")))?;
        let (p2, m2, v2) = b.adamw_step(p, &gr, m, v, &k)?;
        let e = ema.get(name).ok_or_else(|| Error::InvalidArgument(format!("no EMA for {name}")))?;
        let e2 = b.axpby(e, &p2, ema_rate, 1.0 - ema_rate)?;
        *p = p2;
        moments.insert(name.to_string(), (m2, v2));
        ema.insert(name.to_string(), e2);
        Ok(())
    })?;
    Ok(())
}
