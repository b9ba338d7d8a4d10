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
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut magic)).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    if n == 4 && &magic == b"PK\x03\x04" {
        Ok(Box::new(PtFile::open(path)?))
    } else {
        Ok(Box::new(SafeTensors::open(path)?))
    }
}

/// A model converted by `ran convert`: safetensors whose metadata carries `model_flags`.
pub fn load_unet<B: Backend>(path: &Path, backend: &B, ignore: &[&str]) -> Result<unet::UNet<B>> {
    let st = SafeTensors::open(path)?;
    let flags_s = st.metadata().get("model_flags").ok_or_else(|| Error::BadFile {
        path: path.to_path_buf(),
        msg: "no model_flags in the metadata: convert the checkpoint with `ran convert --flags ...` first".into(),
    })?;
    let flags = ModelFlags::parse(flags_s)?;
    let l = weights::Loader::new(&st, backend).ignoring(ignore);
    let m = unet::UNet::load(&flags, &l)?;
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
