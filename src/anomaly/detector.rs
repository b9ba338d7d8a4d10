//! The loaded model, extractor and scoring settings that detect and eval score images with.

use crate::anomaly::noise::gaussian;
use crate::anomaly::score::{ImageScores, ScoreConfig, Scorer};
use crate::anomaly::settings::{EnsembleKind, ScoreSettings};
use crate::backend::Backend;
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::io::image::{to_chw, Image8};
use crate::models::efficientnet::{EffNetConfig, EfficientNet};
use crate::models::unet::UNet;
use crate::models::weights::Loader;
use crate::models::{load_unet, open_weights};
use crate::{Error, Result};

pub struct Pipeline<B: Backend> {
    pub unet: UNet<B>,
    pub effnet: Option<EfficientNet<B>>,
    pub diffusion: Diffusion,
    pub cfg: ScoreConfig,
}

/// Every timestep must be an index 1..N−1 of the respaced schedule.
fn check_timesteps(timesteps: &[usize], diffusion: &Diffusion) -> Result<()> {
    if timesteps.is_empty() {
        return Err(Error::InvalidArgument("--timesteps: give at least one index of the respaced schedule".into()));
    }
    for &k in timesteps {
        if k == 0 || k >= diffusion.num_steps() {
            return Err(Error::InvalidArgument(format!("--timesteps: {k} is outside 1..{} of the respaced schedule", diffusion.num_steps())));
        }
    }
    Ok(())
}

/// The extractor whose taps the feature head predicts: explicit --effnet-arch, else the model's
/// declared extractor, else the paper's B4.
fn load_effnet<B: Backend>(b: &B, s: &ScoreSettings, path: &std::path::Path, head_channels: usize) -> Result<EfficientNet<B>> {
    let arch = match &s.effnet_arch {
        Some(a) => a.clone(),
        None => crate::models::feature_extractor(&s.model)?.unwrap_or_else(|| "efficientnet-b4".into()),
    };
    let mut cfg = EffNetConfig::from_name(&arch)?;
    let taps: usize = cfg.tap_channels().iter().sum();
    if taps != head_channels {
        return Err(Error::InvalidArgument(format!("{arch}'s taps give {taps} channels but the model's feature head predicts {head_channels}: give the matching --effnet-arch")));
    }
    if let Some(size) = s.effnet_image_size {
        cfg.image_size = size;
    }
    load_extractor(b, &cfg, path, &[])
}

/// The EfficientNet of `cfg` from `path`, every tensor used but the unused stages' and `also_unused`
/// (e.g. the data tensors of a reference file that carries the weights).
pub fn load_extractor<B: Backend>(b: &B, cfg: &EffNetConfig, path: &std::path::Path, also_unused: &[&str]) -> Result<EfficientNet<B>> {
    let w = open_weights(path)?;
    let unused = EfficientNet::<B>::unused_prefixes(cfg);
    let unused: Vec<&str> = unused.iter().map(|s| s.as_str()).chain(also_unused.iter().copied()).collect();
    let l = Loader::new(&*w, b).ignoring_prefixes(&unused);
    let e = EfficientNet::load(cfg, &l)?;
    l.finish()?;
    Ok(e)
}

impl<B: Backend> Pipeline<B> {
    pub fn new(b: &B, s: &ScoreSettings) -> Result<Self> {
        let unet = load_unet(&s.model, b, &[])?;
        let f = &unet.flags;
        let diffusion = Diffusion::new(BetaSchedule::parse(&f.noise_schedule)?, f.diffusion_steps, if f.timestep_respacing.is_empty() { &s.respacing } else { &f.timestep_respacing })?;
        check_timesteps(&s.timesteps, &diffusion)?;
        let effnet = match (&unet.feat_head, &s.effnet, s.kl_only) {
            (Some(head), Some(p), false) => Some(load_effnet(b, s, p, head.out_channels())?),
            (Some(_), None, false) => {
                return Err(Error::InvalidArgument("the model has a feature head: give --effnet FILE (EfficientNet weights, e.g. efficientnet-b4-6ed6700e.pth) or --kl-only".into()))
            }
            _ => None,
        };
        if s.ensemble == EnsembleKind::Calibrated && (unet.feat_head.is_none() || effnet.is_none()) {
            return Err(Error::InvalidArgument("--ensemble calibrated combines the KL and feature maps: it needs a model with a feature head and --effnet".into()));
        }
        Ok(Pipeline { unet, effnet, diffusion, cfg: s.score_config() })
    }

    pub fn scorer(&self) -> Scorer<'_, B> {
        Scorer { unet: &self.unet, effnet: self.effnet.as_ref(), diffusion: self.diffusion.clone(), cfg: self.cfg.clone() }
    }

    /// Scores preprocessed images (each `size`², RGB) with labels `y`, the same seeded noise for all.
    pub fn score_images(&self, b: &B, imgs: &[&Image8], y: Option<&[usize]>, seed: u64) -> Result<Vec<ImageScores>> {
        let n = imgs.len();
        let size = self.unet.flags.image_size;
        let x: Vec<f32> = imgs.iter().flat_map(|img| to_chw(img)).collect();
        let x0 = b.from_host(&[n, 3, size, size], &x)?;
        let noise: Vec<_> = self.cfg.timesteps.iter().map(|&k| b.from_host(&[n, 3, size, size], &gaussian(seed, k as u64, 3 * size * size).repeat(n))).collect::<Result<_>>()?;
        self.scorer().score(b, &x0, &noise, y)
    }
}
