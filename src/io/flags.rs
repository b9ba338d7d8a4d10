//! Model and diffusion flags in the syntax users copy from guided-diffusion / improved-diffusion
//! scripts (`--attention_resolutions 32,16,8 --class_cond True ...`), with each family's defaults.
//! Unknown flags and bad values are errors naming the flag.

use crate::{Error, Result};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// openai/guided-diffusion (the paper's base).
    Guided,
    /// openai/improved-diffusion (script defaults: rescaled timesteps, its channel_mult table).
    Improved,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelFlags {
    pub family: Family,
    pub image_size: usize,
    pub num_channels: usize,
    pub num_res_blocks: usize,
    pub num_heads: usize,
    pub num_heads_upsample: i64,
    pub num_head_channels: i64,
    pub attention_resolutions: Vec<usize>,
    /// empty = the family's default for image_size
    pub channel_mult: Vec<f64>,
    pub dropout: f64,
    pub class_cond: bool,
    pub num_classes: Option<usize>,
    pub use_scale_shift_norm: bool,
    pub resblock_updown: bool,
    pub use_fp16: bool,
    pub use_new_attention_order: bool,
    pub learn_sigma: bool,
    /// the anomaly model's feature resolution (paper code; 16 = its released evaluation)
    pub feat_shape: usize,
    // diffusion
    pub diffusion_steps: usize,
    pub noise_schedule: String,
    pub timestep_respacing: String,
    pub use_kl: bool,
    pub predict_xstart: bool,
    pub rescale_timesteps: bool,
    pub rescale_learned_sigmas: bool,
    pub sigma_small: bool,
    /// the flag string as given (stored in converted files)
    pub source: String,
}

const KNOWN: &[&str] = &[
    "family",
    "image_size",
    "num_channels",
    "num_res_blocks",
    "num_heads",
    "num_heads_upsample",
    "num_head_channels",
    "attention_resolutions",
    "channel_mult",
    "dropout",
    "class_cond",
    "num_classes",
    "use_checkpoint",
    "use_scale_shift_norm",
    "resblock_updown",
    "use_fp16",
    "use_new_attention_order",
    "learn_sigma",
    "feat_shape",
    "diffusion_steps",
    "noise_schedule",
    "timestep_respacing",
    "use_kl",
    "predict_xstart",
    "rescale_timesteps",
    "rescale_learned_sigmas",
    "sigma_small",
];

fn parse_bool(k: &str, v: &str) -> Result<bool> {
    match v {
        "True" | "true" | "1" | "yes" => Ok(true),
        "False" | "false" | "0" | "no" => Ok(false),
        _ => Err(Error::InvalidArgument(format!("flag --{k}: `{v}` is not a boolean (True/False)"))),
    }
}

fn parse_num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T> {
    v.parse().map_err(|_| Error::InvalidArgument(format!("flag --{k}: `{v}` is not a number")))
}

fn parse_list<T: std::str::FromStr>(k: &str, v: &str) -> Result<Vec<T>> {
    if v.trim().is_empty() {
        return Ok(Vec::new());
    }
    v.split(',').map(|s| parse_num(k, s.trim())).collect()
}

impl ModelFlags {
    /// Parses a flag string; `--family improved` switches to improved-diffusion's defaults.
    pub fn parse(s: &str) -> Result<Self> {
        let toks: Vec<&str> = s.split_whitespace().collect();
        let mut kv: BTreeMap<String, String> = BTreeMap::new();
        let mut i = 0;
        while i < toks.len() {
            let t = toks[i].strip_prefix("--").ok_or_else(|| Error::InvalidArgument(format!("expected a --flag, found `{}`", toks[i])))?;
            let (k, v) = match t.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = toks.get(i + 1).filter(|v| !v.starts_with("--")).ok_or_else(|| Error::InvalidArgument(format!("flag --{t} has no value")))?;
                    i += 1;
                    (t.to_string(), v.to_string())
                }
            };
            if !KNOWN.contains(&k.as_str()) {
                return Err(Error::InvalidArgument(format!("unknown flag --{k} (known: {})", KNOWN.join(", "))));
            }
            kv.insert(k, v);
            i += 1;
        }
        let family = match kv.get("family").map(|s| s.as_str()) {
            None | Some("guided") => Family::Guided,
            Some("improved") => Family::Improved,
            Some(o) => return Err(Error::InvalidArgument(format!("flag --family: `{o}` (guided, improved)"))),
        };
        let improved = family == Family::Improved;
        let get = |k: &str| kv.get(k).map(|s| s.as_str());
        let b = |k: &str, d: bool| get(k).map(|v| parse_bool(k, v)).unwrap_or(Ok(d));
        let u = |k: &str, d: usize| get(k).map(|v| parse_num::<usize>(k, v)).unwrap_or(Ok(d));
        let i64f = |k: &str, d: i64| get(k).map(|v| parse_num::<i64>(k, v)).unwrap_or(Ok(d));
        let f = ModelFlags {
            family,
            image_size: u("image_size", 64)?,
            num_channels: u("num_channels", 128)?,
            num_res_blocks: u("num_res_blocks", 2)?,
            num_heads: u("num_heads", 4)?,
            num_heads_upsample: i64f("num_heads_upsample", -1)?,
            num_head_channels: i64f("num_head_channels", -1)?,
            attention_resolutions: parse_list("attention_resolutions", get("attention_resolutions").unwrap_or("16,8"))?,
            channel_mult: parse_list("channel_mult", get("channel_mult").unwrap_or(""))?,
            dropout: get("dropout").map(|v| parse_num("dropout", v)).unwrap_or(Ok(0.0))?,
            class_cond: b("class_cond", false)?,
            num_classes: get("num_classes").map(|v| parse_num("num_classes", v)).transpose()?,
            use_scale_shift_norm: b("use_scale_shift_norm", true)?,
            resblock_updown: b("resblock_updown", false)?,
            use_fp16: b("use_fp16", false)?,
            use_new_attention_order: b("use_new_attention_order", false)?,
            learn_sigma: b("learn_sigma", false)?,
            feat_shape: u("feat_shape", 16)?,
            diffusion_steps: u("diffusion_steps", if improved { 4000 } else { 1000 })?,
            noise_schedule: get("noise_schedule").unwrap_or("linear").to_string(),
            timestep_respacing: get("timestep_respacing").unwrap_or("").to_string(),
            use_kl: b("use_kl", false)?,
            predict_xstart: b("predict_xstart", false)?,
            rescale_timesteps: b("rescale_timesteps", improved)?,
            rescale_learned_sigmas: b("rescale_learned_sigmas", improved)?,
            sigma_small: b("sigma_small", false)?,
            source: s.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        b("use_checkpoint", false)?; // accepted (training-only), no effect on inference
        if f.num_channels == 0 || f.num_res_blocks == 0 || f.image_size == 0 {
            return Err(Error::InvalidArgument("image_size, num_channels and num_res_blocks must be positive".into()));
        }
        f.validate()?;
        if let Some(r) = f.attention_resolutions.iter().find(|&&r| r == 0 || f.image_size % r != 0) {
            return Err(Error::InvalidArgument(format!("attention resolution {r} does not divide image_size {}", f.image_size)));
        }
        Ok(f)
    }

    /// Settings that no model can run with, refused where flags enter (the command line, a
    /// model's metadata, a reference file), so `convert` never writes an unusable model.
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.num_heads == 0 {
            return bad("flag --num_heads: 0 (at least one attention head)".into());
        }
        if self.num_heads_upsample == 0 || self.num_heads_upsample < -1 {
            return bad(format!("flag --num_heads_upsample: {} (-1 = num_heads, or at least 1)", self.num_heads_upsample));
        }
        if self.num_head_channels == 0 || self.num_head_channels < -1 {
            return bad(format!("flag --num_head_channels: {} (-1 = use num_heads, or at least 1)", self.num_head_channels));
        }
        // upper bounds far above any released model, so that a typo cannot ask for terabytes
        if self.feat_shape == 0 || self.feat_shape > 1024 {
            return bad(format!("flag --feat_shape: {} (1 … 1024; the paper's is 16)", self.feat_shape));
        }
        if self.image_size > 8192 {
            return bad(format!("flag --image_size: {} (at most 8192)", self.image_size));
        }
        if self.diffusion_steps > 100_000 {
            return bad(format!("flag --diffusion_steps: {} (at most 100000; upstream uses 1000 or 4000)", self.diffusion_steps));
        }
        if self.num_classes == Some(0) {
            return bad("flag --num_classes: 0".into());
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return bad(format!("flag --dropout: {} (a probability in [0, 1))", self.dropout));
        }
        if let Some(m) = self.channel_mult.iter().find(|m| !(m.is_finite() && **m > 0.0 && (**m * self.num_channels as f64) >= 1.0 && **m <= 1024.0)) {
            return bad(format!("flag --channel_mult: {m} (each multiplier finite and positive, giving at least one channel)"));
        }
        crate::diffusion::schedule::BetaSchedule::parse(&self.noise_schedule).map_err(|e| Error::InvalidArgument(format!("flag --noise_schedule: {e}")))?;
        crate::diffusion::schedule::check_respacing(self.diffusion_steps, &self.timestep_respacing)
            .map_err(|e| Error::InvalidArgument(format!("flags --diffusion_steps {} --timestep_respacing `{}`: {e}", self.diffusion_steps, self.timestep_respacing)))?;
        Ok(())
    }

    /// channel_mult as given, else the family's default for image_size.
    pub fn channel_mult(&self) -> Result<Vec<f64>> {
        if !self.channel_mult.is_empty() {
            return Ok(self.channel_mult.clone());
        }
        let v: &[f64] = match (self.family, self.image_size) {
            (Family::Guided, 512) => &[0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
            (_, 256) => &[1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
            (Family::Guided, 128) => &[1.0, 1.0, 2.0, 3.0, 4.0],
            (_, 64) => &[1.0, 2.0, 3.0, 4.0],
            (Family::Improved, 32) => &[1.0, 2.0, 2.0, 2.0],
            _ => return Err(Error::InvalidArgument(format!("no default channel_mult for image_size {}: give --channel_mult", self.image_size))),
        };
        Ok(v.to_vec())
    }

    /// The `ds` factors (image_size / resolution) at which attention runs.
    pub fn attention_ds(&self) -> Vec<usize> {
        self.attention_resolutions.iter().map(|r| self.image_size / r).collect()
    }

    pub fn out_channels(&self) -> usize {
        if self.learn_sigma {
            6
        } else {
            3
        }
    }
}
