//! How each Backend method of the op table runs from a case's named tensors and parameters.
//! The same function serves the fixture tests (CPU vs torch), the cross-backend suite (emulator
//! or GPU vs torch and vs CPU) and the benchmarks (inputs loaded once, the method timed alone).

use super::case::OpCase;
use crate::backend::VarType;
use crate::backend::{fold_batch_norm, Activation, AdamwParams, Backend, Conv2dParams, GnSpec, GroupNormParams, Padding2d, Pool2dParams};
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;

/// A case's tensors on one backend, loaded once (so a benchmark times the op, not the upload).
pub struct Inputs<B: Backend> {
    pub tensors: BTreeMap<String, Tensor<B>>,
}

impl<B: Backend> Inputs<B> {
    pub fn load(b: &B, c: &OpCase) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for (k, (s, v)) in &c.tensors {
            tensors.insert(k.clone(), b.from_host(s, v)?);
        }
        Ok(Inputs { tensors })
    }

    pub fn get(&self, k: &str) -> Result<&Tensor<B>> {
        self.tensors.get(k).ok_or_else(|| Error::InvalidArgument(format!("op case has no tensor `{k}`")))
    }

    fn opt(&self, k: &str) -> Option<&Tensor<B>> {
        self.tensors.get(k)
    }
}

/// Outputs of one method: (name, tensor), named as the fixture names the reference.
pub type Outputs<B> = Vec<(String, Tensor<B>)>;

pub(crate) fn conv_params(c: &OpCase) -> Result<Conv2dParams> {
    let pad = c.usizes("pad")?;
    if pad.len() != 4 {
        return Err(Error::InvalidArgument(format!("op case {}: pad must be [left, right, top, bottom]", c.name)));
    }
    let s = c.usize("stride")?;
    Ok(Conv2dParams { stride: (s, s), padding: Padding2d::lrtb(pad[0], pad[1], pad[2], pad[3]), groups: c.usize("groups")? })
}

fn gn_params(c: &OpCase) -> Result<GroupNormParams> {
    Ok(GroupNormParams { groups: c.usize("groups")?, eps: c.f64("eps")? as f32, silu: c.bool("silu")? })
}

/// The norm a `conv2d_gn` / `concat_channels_gn` case's output meets next (gamma, beta,
/// gn_groups, and emb's columns from `offset`).
fn next_norm<'a, B: Backend>(c: &OpCase, t: &'a Inputs<B>) -> Result<GnSpec<'a, B>> {
    let emb = match t.opt("emb") {
        Some(e) => Some((e, c.usize("offset")?)),
        None => None,
    };
    Ok(GnSpec { gamma: t.get("gamma")?, beta: t.get("beta")?, p: GroupNormParams { groups: c.usize("gn_groups")?, eps: c.f64("eps")? as f32, silu: c.bool("silu")? }, emb })
}

/// The case's 3×3 conv (w2, b2, padding 1) of silu(next(y)), from y's records where made.
fn next_conv<B: Backend>(b: &B, t: &Inputs<B>, y: &Tensor<B>, rec: Option<&Tensor<B>>, next: &GnSpec<'_, B>) -> Result<Tensor<B>> {
    Ok(b.conv2d_gn(y, rec, Some(next), t.get("w2")?, t.opt("b2"), None, &Conv2dParams::new(1, 1, 1), None)?.0)
}

fn pool_params(c: &OpCase) -> Result<Pool2dParams> {
    Ok(Pool2dParams::new(c.usize("kernel")?, c.usize("stride")?, c.usize("padding")?))
}

fn var_type(s: &str) -> Result<VarType> {
    Ok(match s {
        "learned_range" => VarType::LearnedRange,
        "learned" => VarType::Learned,
        "fixed_large" => VarType::FixedLarge,
        "fixed_small" => VarType::FixedSmall,
        _ => return Err(Error::InvalidArgument(format!("variance type `{s}`"))),
    })
}

/// The diffusion of a step case (its schedule's parameters under `schedule_params`) and step k.
fn step_diffusion(c: &OpCase) -> Result<(Diffusion, usize)> {
    let s = &c.params["schedule_params"];
    let sched = BetaSchedule::parse(s["noise_schedule"].as_str().unwrap_or("?"))?;
    let steps = s["steps"].as_u64().ok_or_else(|| Error::InvalidArgument(format!("op case {}: schedule steps", c.name)))? as usize;
    let d = Diffusion::new(sched, steps, s["timestep_respacing"].as_str().unwrap_or(""))?;
    Ok((d, c.usize("k")?))
}

/// Runs Backend method `method` on case `c` with its tensors `t` already on `b`.
pub fn run_method<B: Backend>(b: &B, method: &str, c: &OpCase, t: &Inputs<B>) -> Result<Outputs<B>> {
    let one = |k: &str, y: Tensor<B>| Ok(vec![(k.to_string(), y)]);
    let g = |k: &str| t.get(k);
    match method {
        "conv2d" => one("y", b.conv2d(g("x")?, g("w")?, t.opt("b"), &conv_params(c)?)?),
        "conv2d_add" => one("y", b.conv2d_add(g("x")?, g("w")?, t.opt("b"), g("res")?, &conv_params(c)?)?),
        "conv2d_act" => {
            let (y, m) = b.conv2d_act(g("x")?, g("w")?, t.opt("b"), Activation::parse(c.str("act")?)?, &conv_params(c)?, c.bool("mean")?)?;
            Ok([("y".to_string(), y)].into_iter().chain(m.map(|m| ("mean".to_string(), m))).collect())
        }
        "conv2d_x_backward" => one("g_x", b.conv2d_x_backward(g("gy")?, g("w")?, g("x")?.shape(), &conv_params(c)?)?),
        "conv2d_w_backward" => {
            let (gw, gb) = b.conv2d_w_backward(g("gy")?, g("x")?, g("w")?.shape(), &conv_params(c)?, t.opt("b").is_some())?;
            Ok([("g_w".to_string(), gw)].into_iter().chain(gb.map(|gb| ("g_b".to_string(), gb))).collect())
        }
        "linear" => one("y", b.linear(g("x")?, g("w")?, t.opt("b"))?),
        "linear_parts" => one("y", b.linear_parts(g("x")?, g("w")?, t.opt("b"), &c.usizes("parts")?)?),
        "group_norm_emb" => one("y", b.group_norm_emb(g("x")?, g("gamma")?, g("beta")?, &gn_params(c)?, g("emb")?, c.usize("offset")?)?),
        "group_norm_conv2d" => {
            // the norm's groups under "gn_groups" ("groups" is the conv's)
            let gn = GroupNormParams { groups: c.usize("gn_groups")?, eps: c.f64("eps")? as f32, silu: c.bool("silu")? };
            let emb = match t.opt("emb") {
                Some(e) => Some((e, c.usize("offset")?)),
                None => None,
            };
            one("y", b.group_norm_conv2d(g("x")?, g("gamma")?, g("beta")?, &gn, emb, g("w")?, t.opt("b"), t.opt("res"), &conv_params(c)?)?)
        }
        // the producer's output y, and z = the next norm's 3×3 conv from the records it made
        "conv2d_gn" => {
            let ins = match (t.opt("in_gamma"), t.opt("in_beta")) {
                (Some(ga), Some(be)) => Some(GnSpec { gamma: ga, beta: be, p: GroupNormParams { groups: c.usize("in_groups")?, eps: c.f64("eps")? as f32, silu: true }, emb: None }),
                _ => None,
            };
            let next = next_norm(c, t)?;
            let (y, rec) = b.conv2d_gn(g("x")?, None, ins.as_ref(), g("w")?, t.opt("b"), t.opt("res"), &conv_params(c)?, Some(&next))?;
            let z = next_conv(b, t, &y, rec.as_ref(), &next)?;
            Ok(vec![("y".to_string(), y), ("z".to_string(), z)])
        }
        "concat_channels_gn" => {
            let next = next_norm(c, t)?;
            let (y, rec) = b.concat_channels_gn(&[g("a")?, g("b")?], Some(&next))?;
            let z = next_conv(b, t, &y, rec.as_ref(), &next)?;
            Ok(vec![("y".to_string(), y), ("z".to_string(), z)])
        }
        // the records from the concat of the case's two parts (so the one-pass kernel runs)
        "group_norm_resample" => {
            let gn = GnSpec { gamma: g("gamma")?, beta: g("beta")?, p: GroupNormParams { groups: c.usize("gn_groups")?, eps: c.f64("eps")? as f32, silu: c.bool("silu")? }, emb: None };
            let (x, rec) = b.concat_channels_gn(&[g("a")?, g("b")?], Some(&gn))?;
            one("y", b.group_norm_resample(&x, rec.as_ref(), &gn, c.bool("up")?)?)
        }
        "linear_x_backward" => one("g_x", b.linear_x_backward(g("gy")?, g("w")?)?),
        "linear_w_backward" => {
            let (gw, gb) = b.linear_w_backward(g("gy")?, g("x")?, c.has("b") || c.bool("bias").unwrap_or(false))?;
            Ok([("g_w".to_string(), gw)].into_iter().chain(gb.map(|gb| ("g_b".to_string(), gb))).collect())
        }
        "group_norm" | "group_norm_x_backward" | "group_norm_w_backward" => {
            let p = gn_params(c)?;
            let ss = match (t.opt("scale"), t.opt("shift")) {
                (Some(a), Some(s)) => Some((a, s)),
                _ => None,
            };
            let (x, ga, be) = (g("x")?, g("gamma")?, g("beta")?);
            match method {
                "group_norm" => one("y", b.group_norm(x, ga, be, &p, ss)?),
                "group_norm_x_backward" => one("g_x", b.group_norm_x_backward(g("gy")?, x, ga, be, &p, ss)?),
                _ => {
                    let r = b.group_norm_w_backward(g("gy")?, x, ga, be, &p, ss)?;
                    let mut out = vec![("g_gamma".to_string(), r.gamma), ("g_beta".to_string(), r.beta)];
                    if let Some((gs, gsh)) = r.scale_shift {
                        out.push(("g_scale".to_string(), gs));
                        out.push(("g_shift".to_string(), gsh));
                    }
                    Ok(out)
                }
            }
        }
        "channel_affine" | "channel_affine_x_backward" => {
            // the fixture's batch norm (eval mode), folded into a per-channel affine as the models do
            let v = |k: &str| c.host(k).map(|h| h.1.clone());
            let (scale, shift) = fold_batch_norm(&v("weight")?, &v("bias")?, &v("mean")?, &v("var")?, c.f64("eps")? as f32)?;
            let (sc, sh) = (b.from_host(&[scale.len()], &scale)?, b.from_host(&[shift.len()], &shift)?);
            if method == "channel_affine" {
                one("y", b.channel_affine(g("x")?, &sc, &sh)?)
            } else {
                one("g_x", b.channel_affine_x_backward(g("gy")?, &sc)?)
            }
        }
        "activation" => one("y", b.activation(g("x")?, Activation::parse(c.str("act")?)?)?),
        "activation_x_backward" => one("g_x", b.activation_x_backward(g("gy")?, g("x")?, Activation::parse(c.str("act")?)?)?),
        "add" => one("y", b.add(g("a")?, g("b")?)?),
        "mul" => one("y", b.mul(g("a")?, g("b")?)?),
        "add_x_backward" | "mul_x_backward" => {
            let (ga, gb) = if method == "add_x_backward" { b.add_x_backward(g("gy")?, g("b")?.shape())? } else { b.mul_x_backward(g("gy")?, g("a")?, g("b")?)? };
            Ok(vec![("g_a".to_string(), ga), ("g_b".to_string(), gb)])
        }
        "scale_add_scalar" => one("y", b.scale_add_scalar(g("x")?, c.f64("alpha")? as f32, c.f64("beta")? as f32)?),
        "avg_pool2d" => one("y", b.avg_pool2d(g("x")?, &pool_params(c)?)?),
        "avg_pool2d_x_backward" => one("g_x", b.avg_pool2d_x_backward(g("gy")?, g("x")?.shape(), &pool_params(c)?)?),
        "max_pool2d" => one("y", b.max_pool2d(g("x")?, &pool_params(c)?)?),
        "max_pool2d_x_backward" => one("g_x", b.max_pool2d_x_backward(g("gy")?, g("x")?, &pool_params(c)?)?),
        "global_avg_pool" => one("y", b.global_avg_pool(g("x")?)?),
        "upsample_nearest2x" => one("y", b.upsample_nearest2x(g("x")?)?),
        "upsample_nearest2x_x_backward" => one("g_x", b.upsample_nearest2x_x_backward(g("gy")?)?),
        "resize_bilinear" => {
            let size = c.usizes("size")?;
            one("y", b.resize_bilinear(g("x")?, size[0], size[1])?)
        }
        "resize_bilinear_x_backward" => {
            let x = g("x")?;
            one("g_x", b.resize_bilinear_x_backward(g("gy")?, x.dims()[2], x.dims()[3])?)
        }
        "concat_channels" => {
            let parts: Vec<&Tensor<B>> = ["a", "b", "c"].iter().filter_map(|k| t.opt(k)).collect();
            one("y", b.concat_channels(&parts)?)
        }
        "concat_channels_x_backward" => {
            let names: Vec<&str> = ["a", "b", "c"].into_iter().filter(|k| t.opt(k).is_some()).collect();
            let chans: Vec<usize> = names.iter().map(|k| t.tensors[*k].dims()[1]).collect();
            Ok(names.iter().map(|k| format!("g_{k}")).zip(b.concat_channels_x_backward(g("gy")?, &chans)?).collect())
        }
        "slice_channels" => one("y", b.slice_channels(g("x")?, c.usize("start")?, c.usize("end")?)?),
        "gather_channels" => one("y", b.gather_channels(g("x")?, &c.usizes("ids")?)?),
        "gather_channels_x_backward" => one("g_x", b.gather_channels_x_backward(g("gy")?, &c.usizes("ids")?, g("x")?.dims()[1])?),
        "mahalanobis" => one("y", b.mahalanobis(g("f")?, g("mean")?, g("linv")?)?),
        "mahalanobis_x_backward" => one("g_f", b.mahalanobis_x_backward(g("gy")?, g("f")?, g("mean")?, g("linv")?)?),
        "attention_legacy" => one("y", b.attention_legacy(g("qkv")?, c.usize("heads")?)?),
        "attention_legacy_x_backward" => one("g_qkv", b.attention_legacy_x_backward(g("gy")?, g("qkv")?, c.usize("heads")?)?),
        "timestep_embedding" => one("y", b.timestep_embedding(g("t")?, c.usize("dim")?, c.f64("max_period")? as f32)?),
        "embedding" => one("y", b.embedding(g("table")?, &c.usizes("ids")?)?),
        "embedding_w_backward" => one("g_table", b.embedding_w_backward(g("gy")?, &c.usizes("ids")?, g("table")?.dims()[0])?),
        "mean_std" => {
            let (m, s) = b.mean_std(g("x")?)?;
            one("y", b.from_host(&[2], &[m as f32, s as f32])?)
        }
        "adamw_step" => {
            // `steps` chained steps through the backend's own state (bias corrections 1..=steps)
            let hp = AdamwParams { lr: c.f64("lr")?, beta1: c.f64("beta1")?, beta2: c.f64("beta2")?, eps: c.f64("eps")?, weight_decay: c.f64("weight_decay")? };
            let mut p = g("param0")?.clone();
            let mut m = b.zeros(p.dims())?;
            let mut v = b.zeros(p.dims())?;
            let mut out = Vec::new();
            for s in 1..=c.usize("steps").unwrap_or(3) as u64 {
                (p, m, v) = b.adamw_step(&p, g(&format!("grad{s}"))?, &m, &v, &hp.at_step(s)?)?;
                out.extend([(format!("param{s}"), p.clone()), (format!("m{s}"), m.clone()), (format!("v{s}"), v.clone())]);
            }
            Ok(out)
        }
        "axpby" => {
            let rate = c.f64("rate")? as f32;
            one("ema1", b.axpby(g("ema0")?, g("param")?, rate, 1.0 - rate)?)
        }
        "q_sample" => {
            let (d, k) = step_diffusion(c)?;
            let (sa, s1) = d.q_sample_coefs(k)?;
            one("xt", b.q_sample(g("x0")?, g("noise")?, sa, s1)?)
        }
        "p_mean_variance" | "kl_bits" => {
            let (d, k) = step_diffusion(c)?;
            let sc = d.step_coefs(k, var_type(c.str("var_type")?)?, c.bool("clip")?)?;
            if method == "kl_bits" {
                one("kl_bits", b.kl_bits(g("x0")?, g("xt")?, g("p_mean")?, g("p_logvar")?, &sc)?)
            } else {
                let (mean, logvar, px0) = b.p_mean_variance(g("xt")?, g("model_out")?, &sc)?;
                Ok(vec![("p_mean".to_string(), mean), ("p_logvar".to_string(), logvar), ("pred_xstart".to_string(), px0)])
            }
        }
        "p_sample" => one("p_sample", b.p_sample(g("p_mean")?, g("p_logvar")?, g("z")?, c.usize("k")? != 0)?),
        "ddim_step" => {
            let (d, k) = step_diffusion(c)?;
            one("ddim", b.ddim_step(g("xt")?, g("pred_xstart")?, g("z")?, &d.ddim_coefs(k, c.f64("eta")? as f32)?)?)
        }
        other => Err(Error::InvalidArgument(format!("op table: no runner for Backend method `{other}`"))),
    }
}
