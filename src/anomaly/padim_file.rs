//! The file `ran fit-padim` writes and `ran reconstruct` reads: one safetensors file holding the
//! backbone it was fitted with (`backbone.*`, torchvision names, layer1–3 only) and the
//! statistics (`mean` [P, D], `linv` [P, D(D+1)/2], see padim.rs), so a fit cannot be paired with
//! another backbone by mistake. Metadata: format, backbone, channels (global ids into the
//! layer1–3 concatenation), image and feature sizes, ε, the number of training images.

use super::padim::Padim;
use crate::backend::cpu::mahalanobis::packed_len;
use crate::backend::Backend;
use crate::io::safetensors::{write_streaming_chunks, Dtype, SafeTensors};
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::models::weights::{Loader, Prefixed, Weights};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT: &str = "ran-padim/1";

/// What the metadata says about a fit.
#[derive(Clone, Debug, PartialEq)]
pub struct PadimInfo {
    pub backbone: String,
    pub channels: Vec<usize>,
    pub layer_channels: [usize; 3],
    /// (H, W) of the images the statistics were fitted on
    pub image_size: (usize, usize),
    /// (h, w) of the embedding (layer1's resolution)
    pub feature_size: (usize, usize),
    pub eps: f64,
    pub n_train: usize,
}

/// The statistics of a fit on the host.
pub struct PadimStats {
    pub info: PadimInfo,
    pub mean: Vec<f32>,
    pub linv: Vec<f32>,
}

/// Writes backbone + statistics; `backbone_names` are the tensors the backbone used.
pub fn save(path: &Path, backbone: &dyn Weights, backbone_names: &[String], stats: &PadimStats, dtype: Dtype, extra_meta: &BTreeMap<String, String>) -> Result<()> {
    save_streamed(path, backbone, backbone_names, &stats.info, dtype, extra_meta, |sink| {
        sink(&stats.linv)?;
        Ok(stats.mean.clone())
    })
}

/// `save` with the inverse factors produced while writing: `stats` pushes them to the sink in
/// order and returns the mean (written after them), so the factors never sit in memory whole.
pub fn save_streamed(
    path: &Path,
    backbone: &dyn Weights,
    backbone_names: &[String],
    i: &PadimInfo,
    dtype: Dtype,
    extra_meta: &BTreeMap<String, String>,
    mut stats: impl FnMut(&mut dyn FnMut(&[f32]) -> Result<()>) -> Result<Vec<f32>>,
) -> Result<()> {
    let (p, d) = (i.feature_size.0 * i.feature_size.1, i.channels.len());
    let mut meta = extra_meta.clone();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("backbone".into(), i.backbone.clone());
    meta.insert("channels".into(), serde_json::to_string(&i.channels).unwrap_or_default());
    meta.insert("layer_channels".into(), serde_json::to_string(&i.layer_channels).unwrap_or_default());
    meta.insert("image_size".into(), format!("{}x{}", i.image_size.0, i.image_size.1));
    meta.insert("feature_size".into(), format!("{}x{}", i.feature_size.0, i.feature_size.1));
    meta.insert("eps".into(), i.eps.to_string());
    meta.insert("n_train".into(), i.n_train.to_string());
    let mut entries: Vec<(String, Vec<usize>)> = Vec::new();
    for n in backbone_names {
        entries.push((format!("backbone.{n}"), backbone.shape(n)?));
    }
    entries.push(("linv".into(), vec![p, packed_len(d)]));
    entries.push(("mean".into(), vec![p, d]));
    let mut mean: Option<Vec<f32>> = None;
    write_streaming_chunks(
        path,
        &entries,
        |name, sink| match name {
            "linv" => {
                mean = Some(stats(sink)?);
                Ok(())
            }
            "mean" => sink(mean.as_deref().unwrap_or(&[])),
            n => sink(&backbone.get(n.strip_prefix("backbone.").unwrap_or(n))?.1),
        },
        &meta,
        dtype,
    )
}

fn bad(path: &Path, msg: String) -> Error {
    Error::BadFile { path: path.to_path_buf(), msg }
}

fn size_of(path: &Path, meta: &BTreeMap<String, String>, key: &str) -> Result<(usize, usize)> {
    let s = meta.get(key).ok_or_else(|| bad(path, format!("no `{key}` in the metadata")))?;
    let (a, b) = s.split_once('x').ok_or_else(|| bad(path, format!("`{key}` = {s:?}, expected HxW")))?;
    match (a.trim().parse(), b.trim().parse()) {
        (Ok(h), Ok(w)) => Ok((h, w)),
        _ => Err(bad(path, format!("`{key}` = {s:?}, expected HxW"))),
    }
}

pub fn read_info(st: &SafeTensors) -> Result<PadimInfo> {
    let path = st.path();
    let m = st.metadata();
    if m.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(path, format!("not a PaDiM fit of ran (metadata format {:?}, want {FORMAT:?}): make one with `ran fit-padim`", m.get("format"))));
    }
    let json = |k: &str| -> Result<serde_json::Value> {
        let s = m.get(k).ok_or_else(|| bad(path, format!("no `{k}` in the metadata")))?;
        serde_json::from_str(s).map_err(|e| bad(path, format!("`{k}`: {e}")))
    };
    let channels: Vec<usize> = serde_json::from_value(json("channels")?).map_err(|e| bad(path, format!("`channels`: {e}")))?;
    let layer_channels: [usize; 3] = serde_json::from_value(json("layer_channels")?).map_err(|e| bad(path, format!("`layer_channels`: {e}")))?;
    let num = |k: &str| -> Result<f64> { m.get(k).and_then(|s| s.parse().ok()).ok_or_else(|| bad(path, format!("`{k}` missing or not a number"))) };
    Ok(PadimInfo {
        backbone: m.get("backbone").cloned().unwrap_or_default(),
        channels,
        layer_channels,
        image_size: size_of(path, m, "image_size")?,
        feature_size: size_of(path, m, "feature_size")?,
        eps: num("eps")?,
        n_train: num("n_train")? as usize,
    })
}

/// Loads a fit onto a backend, checking every shape.
pub fn load<B: Backend>(path: &Path, b: &B) -> Result<(Padim<B>, PadimInfo)> {
    let st = SafeTensors::open(path)?;
    let info = read_info(&st)?;
    let pre = Prefixed { inner: &st, prefix: "backbone.".into() };
    let cfg = ResNetConfig::infer(&pre)?;
    let l = Loader::new(&pre, b).ignoring_prefixes(ResNet::<B>::unused_prefixes());
    let resnet = ResNet::load(&cfg, &l)?;
    l.finish()?;
    if resnet.channels() != info.layer_channels {
        return Err(bad(path, format!("backbone has layer channels {:?} but the fit says {:?}", resnet.channels(), info.layer_channels)));
    }
    let ids = super::padim::split_ids(&info.channels, info.layer_channels).map_err(|e| bad(path, e.to_string()))?;
    let (p, d) = (info.feature_size.0 * info.feature_size.1, info.channels.len());
    // (the reader refuses NaN and infinite values by tensor name)
    let stat = |name: &str, shape: &[usize]| b.from_host_vec(shape, st.get_shaped(name, shape)?);
    let (mean, linv) = (stat("mean", &[p, d])?, stat("linv", &[p, packed_len(d)])?);
    Ok((Padim { resnet, ids, mean, linv }, info))
}
