//! `--demo`: the shipped toy model, PaDiM fit and data set, next to the sources this binary was
//! built from, or under `RAN_DATA_ROOT` (a folder laid out as the checkout: `weights/demo/`,
//! `examples/demo/`) where the binary runs away from its build tree (benches/gpu.sh's bundle).
//! The demo fills in only what the user left unset.

use super::score_opts::ScoreOpts;
use crate::anomaly::score::FeatureTimestep;
use crate::anomaly::settings::EnsembleKind;
use crate::Error;
use std::path::PathBuf;

fn root() -> PathBuf {
    std::env::var_os("RAN_DATA_ROOT").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// The demo's diffusion model and data set.
pub fn paths() -> crate::Result<(PathBuf, PathBuf)> {
    let model = root().join("weights/demo/unet_demo.safetensors");
    let data = root().join("examples/demo");
    for p in [&model, &data] {
        if !p.exists() {
            return Err(Error::Io {
                path: p.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the demo files ship with the repository: run from a checkout, or set RAN_DATA_ROOT to a folder holding weights/demo and examples/demo",
                ),
            });
        }
    }
    Ok((model, data))
}

/// The PaDiM fit of the demo's brick images.
pub fn padim() -> PathBuf {
    root().join("weights/demo/padim_demo_brick.safetensors")
}

/// The demo's model, extractor and scoring settings, where the user gave none (--model, --alpha, ... still apply).
pub fn score_settings(score: &mut ScoreOpts, model: PathBuf) {
    score.model.get_or_insert(model);
    if score.effnet.is_none() && !score.kl_only {
        score.effnet = Some(root().join("weights/demo/efficientnet_lite0_taps.safetensors"));
        // the extractor comes from the model's metadata (feature_extractor)
        // the demo head was trained on the true timesteps: score it with τ_k unless told otherwise
        score.feature_timestep.get_or_insert(FeatureTimestep::Tau);
        // the toy's feature error has no scale of its own: standardise both maps on normal images
        score.ensemble.get_or_insert(EnsembleKind::Calibrated);
    }
}
