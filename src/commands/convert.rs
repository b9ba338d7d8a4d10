//! `ran convert`: a PyTorch checkpoint (or safetensors) + the flags it was trained with → one
//! self-describing safetensors file (flags in `__metadata__.model_flags`), after checking that the
//! flags build a model that uses every tensor with the right shape.

use crate::backend::cpu::Cpu;
use crate::io::flags::ModelFlags;
use crate::io::safetensors::{write_streaming, Dtype};
use crate::models::open_weights;
use crate::models::unet::UNet;
use crate::models::weights::Loader;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

pub struct Summary {
    pub tensors: usize,
    pub params: usize,
    pub bytes: u64,
    pub feature_head: bool,
}

/// `class_names`: the categories of a class-conditional model in label order (stored in the
/// metadata, so detect/eval can map folder names to labels).
/// `dtype`: how the weights are stored (computation stays f32).
pub fn run(checkpoint: &Path, flags: &str, out: &Path, dtype: Dtype, class_names: &[String], feature_extractor: Option<&str>) -> Result<Summary> {
    let flags = ModelFlags::parse(flags)?;
    crate::io::files::refuse_overwriting_input(out, &[checkpoint])?;
    let w = open_weights(checkpoint)?;
    // Build the model once: every tensor named, shaped and used as the flags say.
    let l = Loader::new(&*w, &Cpu);
    let model = UNet::load(&flags, &l)?;
    l.finish()?;
    let names = w.names();
    let entries: Vec<(String, Vec<usize>)> = names.iter().map(|n| Ok((n.clone(), w.shape(n)?))).collect::<Result<_>>()?;
    let params = entries.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    let mut meta = BTreeMap::new();
    meta.insert("model_flags".to_string(), flags.source.clone());
    meta.insert("format".to_string(), "ran-unet".to_string());
    if !class_names.is_empty() {
        if model.num_classes != Some(class_names.len()) {
            return Err(Error::InvalidArgument(format!("{} class names for a model with {:?} classes", class_names.len(), model.num_classes)));
        }
        meta.insert("class_names".to_string(), class_names.join(","));
    }
    if let Some(fe) = feature_extractor {
        let cfg = crate::models::efficientnet::EffNetConfig::from_name(fe)?;
        let out_ch =
            model.feat_head.as_ref().map(|h| h.out_channels()).ok_or_else(|| Error::InvalidArgument("--feature-extractor given but the checkpoint has no feature head (feat_rec1.*)".into()))?;
        let taps: usize = cfg.tap_channels().iter().sum();
        if taps != out_ch {
            return Err(Error::InvalidArgument(format!("{fe}'s taps give {taps} channels, the feature head predicts {out_ch}")));
        }
        meta.insert("feature_extractor".to_string(), fe.to_string());
    }
    meta.insert("converted_from".to_string(), checkpoint.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
    write_streaming(out, &entries, |n| w.get(n).map(|(_, v)| v), &meta, dtype)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Summary { tensors: entries.len(), params, bytes, feature_head: model.feat_head.is_some() })
}
