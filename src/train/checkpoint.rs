//! Training checkpoints: one safetensors file in the run's folder holding the model (`model.*`,
//! upstream's state_dict names and shapes, so it also serves as `--init`), the EMA (`ema.*`),
//! AdamW's moments (`adam_m.*`, `adam_v.*`), and in its metadata the step, the AdamW updates
//! made (`adam_updates`: fewer than the steps when f16 loss scaling skipped some), an f16 run's
//! loss scale (`lg_loss_scale`) and the run's settings (the RNG state is the seed and the step:
//! `rng`). Written atomically (temporary file, then
//! rename): a crash or a full disk mid-write leaves the previous checkpoint as it was.

use super::init::build;
use super::loss_scale::LossScale;
use super::step::TrainState;
use crate::backend::Backend;
use crate::io::flags::ModelFlags;
use crate::io::safetensors::{write_streaming, Dtype, SafeTensors};
use crate::models::unet::{state_dict_shape, UNet};
use crate::models::weights::Prefixed;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE: &str = "checkpoint.safetensors";
pub const FORMAT: &str = "ran-train-checkpoint";

/// The run's settings that a resumed run must share, by name.
pub type Settings = BTreeMap<String, String>;

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes the checkpoint of `step` into `dir` (created if needed).
pub fn save<B: Backend>(dir: &Path, b: &B, model: &mut UNet<B>, state: &TrainState<B>, settings: &Settings) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
    let params = model.params()?;
    let mut entries = Vec::with_capacity(4 * params.len());
    let mut values: BTreeMap<String, crate::tensor::Tensor<B>> = BTreeMap::new();
    for (name, p) in &params {
        entries.push((format!("model.{name}"), state_dict_shape(name, p.dims())));
        values.insert(format!("model.{name}"), p.clone());
        let (m, v) = state.moments.get(name).ok_or_else(|| Error::InvalidArgument(format!("no optimiser state for {name}")))?;
        let e = state.ema.get(name).ok_or_else(|| Error::InvalidArgument(format!("no EMA for {name}")))?;
        for (k, t) in [("ema", e), ("adam_m", m), ("adam_v", v)] {
            entries.push((format!("{k}.{name}"), t.dims().to_vec()));
            values.insert(format!("{k}.{name}"), t.clone());
        }
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("step".to_string(), state.step.to_string());
    meta.insert("adam_updates".to_string(), state.updates.to_string());
    if let Some(s) = &state.loss_scale {
        // Display of an f64 is the shortest text that reads back to the same bits
        meta.insert("lg_loss_scale".to_string(), s.lg.to_string());
    }
    meta.insert("rng".to_string(), format!("counter-based: every draw of step s comes from (seed {}, s); resumes at step {}", settings.get("seed").map(String::as_str).unwrap_or("?"), state.step));
    meta.insert("settings".to_string(), serde_json::to_string(settings).map_err(|e| Error::InvalidArgument(e.to_string()))?);
    let file = path_in(dir);
    write_streaming(&file, &entries, |n| b.to_host(&values[n]), &meta, Dtype::F32)?;
    let pretty = serde_json::to_string_pretty(settings).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    crate::io::files::write_bytes_atomic(&dir.join("settings.json"), pretty + "\n")
}

/// The settings and step of the checkpoint in `dir`, read from its header.
pub fn read_header(dir: &Path) -> Result<(SafeTensors, Settings, u64)> {
    let file = path_in(dir);
    if !file.exists() {
        return Err(Error::BadFile { path: dir.to_path_buf(), msg: format!("no {FILE} here: not the folder of a `ran train` run") });
    }
    let st = SafeTensors::open(&file)?;
    let bad = |msg: String| Error::BadFile { path: file.clone(), msg };
    let meta = st.metadata();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!("not a `ran train` checkpoint (metadata format is not {FORMAT})")));
    }
    let step: u64 = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| bad("no step in the metadata".into()))?;
    let settings: Settings = meta.get("settings").and_then(|s| serde_json::from_str(s).ok()).ok_or_else(|| bad("no readable settings in the metadata".into()))?;
    Ok((st, settings, step))
}

/// Refuses to continue a run under other settings, naming every key that differs.
pub fn check_same(dir: &Path, saved: &Settings, now: &Settings) -> Result<()> {
    let keys: std::collections::BTreeSet<&String> = saved.keys().chain(now.keys()).collect();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| saved.get(*k) != now.get(*k))
        .map(|k| format!("{k}: `{}` in the checkpoint, `{}` now", saved.get(k).map(String::as_str).unwrap_or("-"), now.get(k).map(String::as_str).unwrap_or("-")))
        .collect();
    if diff.is_empty() {
        Ok(())
    } else {
        Err(Error::BadFile { path: dir.to_path_buf(), msg: format!("--resume: the run was made with other settings ({})", diff.join("; ")) })
    }
}

/// The model and optimiser state of the checkpoint `st` (opened by `read_header`); the loss
/// scale with `growth` when the checkpoint has one (an f16 run's).
pub fn restore<B: Backend>(b: &B, st: &SafeTensors, flags: &ModelFlags, step: u64, growth: f64) -> Result<(UNet<B>, TrainState<B>)> {
    let bad = |msg: String| Error::BadFile { path: st.path().to_path_buf(), msg };
    let meta = st.metadata();
    // a checkpoint from before f16 training made an AdamW update every step
    let updates = match meta.get("adam_updates") {
        None => step,
        Some(v) => v.parse::<u64>().ok().filter(|&u| u <= step).ok_or_else(|| bad(format!("adam_updates `{v}`: a count of AdamW updates ≤ the step {step}")))?,
    };
    let loss_scale = match meta.get("lg_loss_scale") {
        None => None,
        Some(v) => Some(v.parse::<f64>().map_err(|_| bad(format!("lg_loss_scale `{v}` is not a number"))).and_then(|lg| LossScale::new(lg, growth).map_err(|e| bad(e.to_string())))?),
    };
    let mut model = build(b, flags, &Prefixed { inner: st, prefix: "model.".into() })?;
    let mut moments = BTreeMap::new();
    let mut ema = BTreeMap::new();
    for (name, p) in model.params()? {
        let get = |k: &str| -> Result<crate::tensor::Tensor<B>> {
            let key = format!("{k}.{name}");
            let v = st.get_shaped(&key, p.dims())?;
            b.from_host(p.dims(), &v)
        };
        moments.insert(name.clone(), (get("adam_m")?, get("adam_v")?));
        ema.insert(name.clone(), get("ema")?);
    }
    let want = 4 * moments.len();
    let have = st.names().count();
    if have != want {
        return Err(Error::BadFile { path: st.path().to_path_buf(), msg: format!("{have} tensors, a checkpoint of this model holds {want}") });
    }
    Ok((model, TrainState { step, updates, moments, ema, loss_scale }))
}
