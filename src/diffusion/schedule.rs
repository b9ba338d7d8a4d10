//! Beta schedules, timestep respacing and the derived tables, in f64 exactly as upstream's numpy
//! code computes them (same operation order, Python's round-half-to-even in respacing), so the
//! tables match guided-diffusion to the last bits.

use crate::ops::contract::{DdimCoefs, StepCoefs};
use crate::ops::VarType;
use crate::{Error, Result};
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    Cosine,
}

impl BetaSchedule {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(BetaSchedule::Linear),
            "cosine" => Ok(BetaSchedule::Cosine),
            _ => Err(Error::InvalidArgument(format!("unknown noise schedule `{s}` (linear, cosine)"))),
        }
    }

    /// β_0..β_{T−1}.
    pub fn betas(self, t: usize) -> Vec<f64> {
        match self {
            BetaSchedule::Linear => {
                // numpy.linspace(start, stop, T): start + i·step, the last one exactly stop
                let scale = 1000.0 / t as f64;
                let (start, stop) = (scale * 0.0001, scale * 0.02);
                if t == 1 {
                    return vec![start];
                }
                let step = (stop - start) / (t - 1) as f64;
                (0..t).map(|i| if i == t - 1 { stop } else { i as f64 * step + start }).collect()
            }
            BetaSchedule::Cosine => {
                let abar = |u: f64| ((u + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
                (0..t)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                        (1.0 - abar(t2) / abar(t1)).min(0.999)
                    })
                    .collect()
            }
        }
    }
}

/// Python's round(): half to even.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// upstream `space_timesteps(T, spec)`: "250" (evenly), "10,15,5" (per section), "ddim50"
/// (integer stride), "" (all). Returns the kept original timesteps, ascending.
pub fn space_timesteps(t: usize, spec: &str) -> Result<Vec<usize>> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok((0..t).collect());
    }
    if let Some(n) = spec.strip_prefix("ddim") {
        let want: usize = n.parse().map_err(|_| Error::InvalidArgument(format!("bad respacing `{spec}`")))?;
        for stride in 1..t {
            if t.div_ceil(stride) == want {
                return Ok((0..t).step_by(stride).collect());
            }
        }
        return Err(Error::InvalidArgument(format!("cannot create exactly {want} steps out of {t} with an integer stride")));
    }
    let counts: Vec<usize> = spec.split(',').map(|s| s.trim().parse::<usize>().map_err(|_| Error::InvalidArgument(format!("bad respacing `{spec}`: `{s}` is not a count")))).collect::<Result<_>>()?;
    let (per, extra) = (t / counts.len(), t % counts.len());
    let mut steps = BTreeSet::new();
    let mut start = 0usize;
    for (i, &count) in counts.iter().enumerate() {
        let size = per + usize::from(i < extra);
        if size < count {
            return Err(Error::InvalidArgument(format!("cannot divide a section of {size} steps into {count}")));
        }
        let stride = if count <= 1 { 1.0 } else { (size - 1) as f64 / (count - 1) as f64 };
        let mut cur = 0.0f64;
        for _ in 0..count {
            steps.insert(start + round_half_even(cur) as usize);
            cur += stride;
        }
        start += size;
    }
    Ok(steps.into_iter().collect())
}

/// The kept timesteps of `steps` respaced by `spec`, refused unless at least 2 remain (the
/// posterior tables need a step before the last). Flags, model metadata and references all come
/// through here, so a respacing of 0 or 1 is refused wherever it is given.
pub fn check_respacing(steps: usize, spec: &str) -> Result<Vec<usize>> {
    if steps < 2 {
        return Err(Error::InvalidArgument(format!("diffusion needs at least 2 steps, got {steps}")));
    }
    let keep = space_timesteps(steps, spec)?;
    if keep.len() < 2 {
        return Err(Error::InvalidArgument(format!("respacing `{spec}` keeps {} of {steps} steps; at least 2 are needed", keep.len())));
    }
    Ok(keep)
}

/// The tables of one (possibly respaced) diffusion; index k is the respaced step, whose original
/// timestep is `timestep_map[k]`.
#[derive(Clone, Debug)]
pub struct Diffusion {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub alphas_cumprod_prev: Vec<f64>,
    pub sqrt_recip_alphas_cumprod: Vec<f64>,
    pub sqrt_recipm1_alphas_cumprod: Vec<f64>,
    pub posterior_variance: Vec<f64>,
    pub posterior_log_variance_clipped: Vec<f64>,
    pub posterior_mean_coef1: Vec<f64>,
    pub posterior_mean_coef2: Vec<f64>,
    pub timestep_map: Vec<usize>,
    /// Original number of steps (for rescale_timesteps: the model sees t·1000/T).
    pub original_steps: usize,
}

impl Diffusion {
    /// `steps` of `schedule`, respaced by `respacing` (upstream's `timestep_respacing`).
    pub fn new(schedule: BetaSchedule, steps: usize, respacing: &str) -> Result<Self> {
        let keep = check_respacing(steps, respacing)?;
        let base = Self::from_betas(schedule.betas(steps), (0..steps).collect(), steps);
        let mut betas = Vec::with_capacity(keep.len());
        let mut last = 1.0f64;
        for &i in &keep {
            let ab = base.alphas_cumprod[i];
            betas.push(1.0 - ab / last);
            last = ab;
        }
        Ok(Self::from_betas(betas, keep, steps))
    }

    fn from_betas(betas: Vec<f64>, timestep_map: Vec<usize>, original_steps: usize) -> Self {
        let n = betas.len();
        let mut ac = Vec::with_capacity(n);
        let mut p = 1.0f64;
        for b in &betas {
            p *= 1.0 - b;
            ac.push(p);
        }
        let prev: Vec<f64> = std::iter::once(1.0).chain(ac[..n - 1].iter().copied()).collect();
        let post_var: Vec<f64> = (0..n).map(|i| betas[i] * (1.0 - prev[i]) / (1.0 - ac[i])).collect();
        let clipped: Vec<f64> = (0..n).map(|i| if i == 0 { post_var[1].ln() } else { post_var[i].ln() }).collect();
        Diffusion {
            sqrt_recip_alphas_cumprod: ac.iter().map(|a| (1.0 / a).sqrt()).collect(),
            sqrt_recipm1_alphas_cumprod: ac.iter().map(|a| (1.0 / a - 1.0).sqrt()).collect(),
            posterior_mean_coef1: (0..n).map(|i| betas[i] * prev[i].sqrt() / (1.0 - ac[i])).collect(),
            posterior_mean_coef2: (0..n).map(|i| (1.0 - prev[i]) * (1.0 - betas[i]).sqrt() / (1.0 - ac[i])).collect(),
            posterior_variance: post_var,
            posterior_log_variance_clipped: clipped,
            alphas_cumprod_prev: prev,
            alphas_cumprod: ac,
            betas,
            timestep_map,
            original_steps,
        }
    }

    pub fn num_steps(&self) -> usize {
        self.betas.len()
    }

    fn check(&self, k: usize) -> Result<()> {
        if k >= self.num_steps() {
            return Err(Error::InvalidArgument(format!("timestep index {k} outside the {}-step schedule", self.num_steps())));
        }
        Ok(())
    }

    /// The timestep value the model is given at respaced index k (upstream's _WrappedModel).
    pub fn model_timestep(&self, k: usize, rescale_timesteps: bool) -> f32 {
        let t = self.timestep_map[k] as f64;
        if rescale_timesteps {
            (t * 1000.0 / self.original_steps as f64) as f32
        } else {
            t as f32
        }
    }

    /// (√ᾱ_k, √(1−ᾱ_k)) for q_sample, as f32 like upstream's `.float()` extraction.
    pub fn q_sample_coefs(&self, k: usize) -> Result<(f32, f32)> {
        self.check(k)?;
        let ab = self.alphas_cumprod[k];
        Ok((ab.sqrt() as f32, (1.0 - ab).sqrt() as f32))
    }

    /// Everything p_mean_variance and kl_bits need at step k.
    pub fn step_coefs(&self, k: usize, var_type: VarType, clip: bool) -> Result<StepCoefs> {
        self.check(k)?;
        let fixed_logvar = match var_type {
            // upstream: log(append(posterior_variance[1], betas[1:]))
            VarType::FixedLarge => (if k == 0 { self.posterior_variance[1] } else { self.betas[k] }).ln(),
            _ => self.posterior_log_variance_clipped[k],
        };
        Ok(StepCoefs {
            sqrt_recip_ab: self.sqrt_recip_alphas_cumprod[k] as f32,
            sqrt_recipm1_ab: self.sqrt_recipm1_alphas_cumprod[k] as f32,
            c1: self.posterior_mean_coef1[k] as f32,
            c2: self.posterior_mean_coef2[k] as f32,
            post_logvar_clipped: self.posterior_log_variance_clipped[k] as f32,
            log_beta: self.betas[k].ln() as f32,
            fixed_logvar: fixed_logvar as f32,
            var_type: var_type.code(),
            clip: clip as i32,
        })
    }

    pub fn ddim_coefs(&self, k: usize, eta: f32) -> Result<DdimCoefs> {
        self.check(k)?;
        Ok(DdimCoefs {
            sqrt_recip_ab: self.sqrt_recip_alphas_cumprod[k] as f32,
            sqrt_recipm1_ab: self.sqrt_recipm1_alphas_cumprod[k] as f32,
            ab: self.alphas_cumprod[k] as f32,
            ab_prev: self.alphas_cumprod_prev[k] as f32,
            eta,
            nonzero: (k != 0) as i32,
        })
    }
}
