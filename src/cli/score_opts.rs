//! The model, extractor and scoring options of detect, eval and verify, as typed; the options
//! the demo sets are `Option`s, so it sees what the user gave.

use super::options::{parse_device, parse_effnet_arch, Device};
use crate::anomaly::score::FeatureTimestep;
use crate::anomaly::settings::{EnsembleKind, ScoreSettings};
use crate::ops::precision::Precision;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct ScoreOpts {
    /// A model converted by `ran convert` (eval: or a folder of <category>.safetensors models).
    #[arg(long, alias = "models")]
    pub model: Option<PathBuf>,
    /// EfficientNet weights (.pth or safetensors) for the feature score.
    #[arg(long)]
    pub effnet: Option<PathBuf>,
    /// efficientnet-b0 … b7, efficientnet-lite0 … lite4, or custom:WIDTH,DEPTH,IMAGE_SIZE
    /// (default: what the model's metadata declares, else efficientnet-b4 as the paper).
    #[arg(long, value_parser = parse_effnet_arch)]
    pub effnet_arch: Option<String>,
    /// Image size the EfficientNet's static padding is computed for (default: the variant's, 380 for B4).
    #[arg(long)]
    pub effnet_image_size: Option<usize>,
    /// KL score only, even if the model has a feature head.
    #[arg(long)]
    pub kl_only: bool,
    /// Indices of the respaced schedule.
    #[arg(long, value_delimiter = ',', default_value = "5,50,100")]
    pub timesteps: Vec<usize>,
    /// Respacing when the model's flags give none.
    #[arg(long, default_value = "250")]
    pub respacing: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weight of the feature score in the ensemble.
    #[arg(long, default_value_t = 0.5, value_parser = crate::cli::options::parse_alpha, allow_hyphen_values = true)]
    pub alpha: f32,
    /// How the KL and feature maps combine; calibrated: eval uses --calibration-images training
    /// images per category, detect the images --calibrate [default: weighted; the demo: calibrated]
    #[arg(long, value_enum)]
    pub ensemble: Option<EnsembleKind>,
    /// Normal images per category (class) that calibrate `--ensemble calibrated`.
    #[arg(long, default_value_t = 10)]
    pub calibration_images: usize,
    #[arg(long, default_value_t = 64)]
    pub topk: usize,
    /// Timestep of the feature pass: the official code's k, or τ_k (one pass per k)
    /// [default: index; the demo model: tau, the timesteps its head was trained on]
    #[arg(long, value_enum)]
    pub feature_timestep: Option<FeatureTimestep>,
    /// auto (GPU if usable, else CPU), cpu, cuda, cuda:N, emulator
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: Device,
    /// Operands of conv and linear on the CUDA backend: f32, tf32, bf16 or f16 (statistics stay
    /// f32) [default: bf16 on a GPU, f32 on the emulator and the CPU; verify: f32; on the CPU, an emulation of the kernels' rounding]
    #[arg(long, value_parser = super::options::parse_precision)]
    pub precision: Option<Precision>,
}

impl ScoreOpts {
    /// The settings, with the defaults where the user (or the demo) gave none; None without a model.
    pub fn settings(self) -> Option<ScoreSettings> {
        Some(ScoreSettings {
            model: self.model?,
            effnet: self.effnet,
            effnet_arch: self.effnet_arch,
            effnet_image_size: self.effnet_image_size,
            kl_only: self.kl_only,
            timesteps: self.timesteps,
            respacing: self.respacing,
            seed: self.seed,
            alpha: self.alpha,
            ensemble: self.ensemble.unwrap_or(EnsembleKind::Weighted),
            topk: self.topk,
            feature_timestep: self.feature_timestep.unwrap_or(FeatureTimestep::RespacedIndex),
            calibration_images: self.calibration_images,
        })
    }
}
