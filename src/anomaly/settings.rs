//! How images are scored — the model, the extractor and the scoring options — as one set of
//! settings that detect, eval and verify all take (typed: a typo is refused when parsed).

use crate::anomaly::score::{Ensemble, FeatureTimestep, ScoreConfig};
use std::path::PathBuf;

/// `--ensemble`: how the KL and feature maps combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EnsembleKind {
    /// α·feature + (1−α)·KL (the paper)
    Weighted,
    /// feature + KL (the released script)
    Sum,
    /// each map standardised by its pixel mean/std on normal images first
    Calibrated,
}

impl EnsembleKind {
    /// The option's spelling, as results.json records it.
    pub fn name(self) -> &'static str {
        match self {
            EnsembleKind::Weighted => "weighted",
            EnsembleKind::Sum => "sum",
            EnsembleKind::Calibrated => "calibrated",
        }
    }
}

impl std::fmt::Display for EnsembleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug)]
pub struct ScoreSettings {
    /// a model converted by `ran convert` (eval: or a folder of <category>.safetensors models)
    pub model: PathBuf,
    pub effnet: Option<PathBuf>,
    /// None: what the model's metadata declares, else the paper's B4
    pub effnet_arch: Option<String>,
    pub effnet_image_size: Option<usize>,
    pub kl_only: bool,
    /// indices of the respaced schedule
    pub timesteps: Vec<usize>,
    /// respacing when the model's flags give none
    pub respacing: String,
    pub seed: u64,
    /// weight of the feature score
    pub alpha: f32,
    pub ensemble: EnsembleKind,
    pub topk: usize,
    pub feature_timestep: FeatureTimestep,
    /// normal training images per category that calibrate the calibrated ensemble (eval)
    pub calibration_images: usize,
}

impl ScoreSettings {
    /// The scorer's configuration. The calibrated ensemble is scored as weighted: its statistics
    /// come from normal images scored first, and the maps are recombined once they are known.
    pub fn score_config(&self) -> ScoreConfig {
        let ensemble = match self.ensemble {
            EnsembleKind::Sum => Ensemble::Sum,
            EnsembleKind::Weighted | EnsembleKind::Calibrated => Ensemble::Weighted(self.alpha),
        };
        ScoreConfig { timesteps: self.timesteps.clone(), feature_timestep: self.feature_timestep, ensemble, topk: self.topk, batch_timesteps: true }
    }
}
