//! Models, written to read like the PyTorch modules they mirror, generic over the backend.

pub mod efficientnet;
pub mod layers;
pub mod resnet;
pub mod unet;
pub mod weights;

use crate::backend::Backend;
use crate::io::flags::ModelFlags;
use crate::io::pt::PtFile;
use crate::io::safetensors::SafeTensors;
use crate::{Error, Result};
use std::path::Path;

/// A weight file by its content: a PyTorch zip checkpoint (.pt/.pth) or safetensors.
pub fn open_weights(path: &Path) -> Result<Box<dyn weights::Weights>> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut f = crate::io::files::open_regular(path)?;
    let n = f.read(&mut head).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    use crate::io::sniff::Kind;
    match crate::io::sniff::sniff(&head[..n]) {
        // the .pt reader names empty zips and legacy checkpoints as such
        Kind::Zip | Kind::EmptyZip | Kind::LegacyTorch => Ok(Box::new(PtFile::open(path)?)),
        // (a safetensors header length can look like a pickle's first bytes: its reader decides)
        Kind::Pickle | Kind::Other => Ok(Box::new(SafeTensors::open(path)?)),
    }
}

/// An error about a model's settings, as an error about the model file it came from.
pub fn in_model_file(path: &Path, e: Error) -> Error {
    match e {
        Error::InvalidArgument(msg) => Error::BadFile { path: path.to_path_buf(), msg: format!("model metadata: {msg}") },
        e => e,
    }
}

/// A model converted by `ran convert`: safetensors whose metadata carries `model_flags`.
pub fn load_unet<B: Backend>(path: &Path, backend: &B, ignore: &[&str]) -> Result<unet::UNet<B>> {
    let st = SafeTensors::open(path)?;
    let flags_s = st
        .metadata()
        .get("model_flags")
        .ok_or_else(|| Error::BadFile { path: path.to_path_buf(), msg: "no model_flags in the metadata: convert the checkpoint with `ran convert --flags ...` first".into() })?;
    let flags = ModelFlags::parse(flags_s).map_err(|e| in_model_file(path, e))?;
    let l = weights::Loader::new(&st, backend).ignoring(ignore);
    let m = unet::UNet::load(&flags, &l).map_err(|e| in_model_file(path, e))?;
    l.finish()?;
    Ok(m)
}

/// The class names a converted model carries (`ran convert --class-names`), if any.
pub fn class_names(path: &Path) -> Result<Option<Vec<String>>> {
    let st = SafeTensors::open(path)?;
    Ok(st.metadata().get("class_names").map(|s| s.split(',').map(|c| c.trim().to_string()).collect()))
}

/// The feature extractor a converted model declares (`ran convert --feature-extractor`), if any.
pub fn feature_extractor(path: &Path) -> Result<Option<String>> {
    let st = SafeTensors::open(path)?;
    Ok(st.metadata().get("feature_extractor").cloned())
}
