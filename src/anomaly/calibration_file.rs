//! A calibration as a file (`ran calibrate --out cal.safetensors`): per class the calibrated
//! ensemble's normal statistics, the 99.9th percentile of the normal pixels (the colour scale)
//! and the image threshold of the `defective` verdict. detect and serve read it instead of
//! rescoring normal images. It records the SHA-256 of the model and extractor files and the
//! scoring settings, and is refused for any other model or settings: its numbers mean nothing there.
//! That includes the operand precision (`--precision`): maps made in bf16 are not f32's, so a
//! calibration made in one is refused in another, as the eval cache refuses them (eval/cache.rs).
//!
//! Layout: one f32 tensor `class.<index>` (or `class.all` for a model without classes) of
//! `FIELDS`, stored exactly; the rest as JSON strings in the metadata.

use crate::anomaly::calibration::ClassCalibration;
use crate::anomaly::score::Calibration;
use crate::anomaly::settings::ScoreSettings;
use crate::anomaly::threshold::{F1Threshold, ThresholdSource};
use crate::io::safetensors::{encode_f32, SafeTensors};
use crate::ops::precision::Precision;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

const FORMAT: &str = "ran-calibration";
const VERSION: &str = "1";
/// The values of a class tensor, in order.
const FIELDS: [&str; 8] = ["kl_mean", "kl_std", "feat_mean", "feat_std", "normal_p999", "normal_image_max", "threshold", "alpha"];

/// What a class's numbers depend on besides the model files: a different value gives other maps.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordedSettings {
    pub timesteps: Vec<usize>,
    pub respacing: String,
    pub seed: u64,
    pub topk: usize,
    pub feature_timestep: String,
    pub effnet_arch: Option<String>,
    pub effnet_image_size: Option<usize>,
    /// the operand precision the maps were made in; absent for f32, so the files of before
    /// (all f32) stay valid
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

impl RecordedSettings {
    pub fn of(s: &ScoreSettings, precision: Precision) -> Self {
        RecordedSettings {
            timesteps: s.timesteps.clone(),
            respacing: s.respacing.clone(),
            seed: s.seed,
            topk: s.topk,
            feature_timestep: s.feature_timestep.name().into(),
            effnet_arch: s.effnet_arch.clone(),
            effnet_image_size: s.effnet_image_size,
            precision: (precision != Precision::F32).then(|| precision.as_str().to_string()),
        }
    }
}

/// One class of a calibration.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassEntry {
    /// the class name (None: a model without classes)
    pub name: Option<String>,
    pub calibration: ClassCalibration,
    /// the α its calibrated ensemble was weighted with
    pub alpha: f32,
    /// image score above which an image is `defective`
    pub threshold: f32,
    pub source: ThresholdSource,
    /// the F1-optimal threshold's quality on the validation set
    pub validation: Option<F1Threshold>,
}

/// The class's entry in the metadata (what the tensor does not hold).
#[derive(serde::Serialize, serde::Deserialize)]
struct ClassMeta {
    name: Option<String>,
    images: usize,
    threshold_source: ThresholdSource,
    validation: Option<F1Threshold>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CalibrationFile {
    pub model_sha256: String,
    pub effnet_sha256: Option<String>,
    pub settings: RecordedSettings,
    pub classes: BTreeMap<Option<usize>, ClassEntry>,
}

fn key(y: Option<usize>) -> String {
    y.map(|c| c.to_string()).unwrap_or_else(|| "all".into())
}

impl CalibrationFile {
    /// The file's bytes (safetensors).
    pub fn encode(&self, path: &Path) -> Result<Vec<u8>> {
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("version".to_string(), VERSION.to_string());
        meta.insert("model_sha256".to_string(), self.model_sha256.clone());
        if let Some(e) = &self.effnet_sha256 {
            meta.insert("effnet_sha256".to_string(), e.clone());
        }
        meta.insert("settings".to_string(), to_json(path, &self.settings)?);
        let classes: BTreeMap<String, ClassMeta> =
            self.classes.iter().map(|(y, c)| (key(*y), ClassMeta { name: c.name.clone(), images: c.calibration.statistics.images, threshold_source: c.source, validation: c.validation })).collect();
        meta.insert("classes".to_string(), to_json(path, &classes)?);
        let values: Vec<(String, Vec<f32>)> = self
            .classes
            .iter()
            .map(|(y, c)| {
                let s = c.calibration.statistics;
                (format!("class.{}", key(*y)), vec![s.kl_mean, s.kl_std, s.feat_mean, s.feat_std, c.calibration.normal_p999, c.calibration.normal_image_max, c.threshold, c.alpha])
            })
            .collect();
        const SHAPE: [usize; 1] = [FIELDS.len()];
        let tensors: Vec<(&str, &[usize], &[f32])> = values.iter().map(|(n, v)| (n.as_str(), &SHAPE[..], v.as_slice())).collect();
        encode_f32(path, &tensors, &meta)
    }

    /// Writes the file atomically; returns its id.
    pub fn write(&self, path: &Path) -> Result<String> {
        let bytes = self.encode(path)?;
        crate::io::files::write_bytes_atomic(path, &bytes)?;
        Ok(file_id(&bytes))
    }

    /// Reads a calibration file; returns it with its id. Every problem names the file.
    pub fn read(path: &Path) -> Result<(Self, String)> {
        let bad = |msg: String| Error::BadFile { path: path.to_path_buf(), msg };
        let st = SafeTensors::open(path)?;
        let m = st.metadata();
        if m.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad("not a calibration file (no `format: ran-calibration` in its metadata; make one with `ran calibrate`)".into()));
        }
        if m.get("version").map(String::as_str) != Some(VERSION) {
            return Err(bad(format!("calibration format version {:?}, this ran reads {VERSION}", m.get("version"))));
        }
        let get = |k: &str| m.get(k).ok_or_else(|| bad(format!("metadata `{k}` is missing")));
        let settings: RecordedSettings = serde_json::from_str(get("settings")?).map_err(|e| bad(format!("metadata `settings`: {e}")))?;
        let metas: BTreeMap<String, ClassMeta> = serde_json::from_str(get("classes")?).map_err(|e| bad(format!("metadata `classes`: {e}")))?;
        if metas.is_empty() {
            return Err(bad("calibrates no class".into()));
        }
        let mut classes = BTreeMap::new();
        for (k, cm) in metas {
            let y = match k.as_str() {
                "all" => None,
                _ => Some(k.parse::<usize>().map_err(|_| bad(format!("class key `{k}`: an index or `all` expected")))?),
            };
            let name = format!("class.{k}");
            let v = st.get_shaped(&name, &[FIELDS.len()])?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::BadTensor { path: path.to_path_buf(), name, msg: format!("{} is {}", FIELDS[i], v[i]) });
            }
            if v[1] <= 0.0 || v[3] <= 0.0 {
                return Err(Error::BadTensor { path: path.to_path_buf(), name, msg: "a standard deviation is not positive".into() });
            }
            let statistics = Calibration { kl_mean: v[0], kl_std: v[1], feat_mean: v[2], feat_std: v[3], images: cm.images };
            let calibration = ClassCalibration { statistics, normal_p999: v[4], normal_image_max: v[5] };
            classes.insert(y, ClassEntry { name: cm.name, calibration, alpha: v[7], threshold: v[6], source: cm.threshold_source, validation: cm.validation });
        }
        let f = CalibrationFile { model_sha256: get("model_sha256")?.clone(), effnet_sha256: m.get("effnet_sha256").cloned(), settings, classes };
        let bytes = crate::io::files::read_regular(path)?;
        Ok((f, file_id(&bytes)))
    }

    /// Refuses to apply this calibration (read from `path`) to another model, extractor, scoring
    /// settings or precision (the backend's) than it was made with, naming what differs.
    pub fn check_matches(&self, path: &Path, s: &ScoreSettings, precision: Precision, model_sha256: &str, effnet_sha256: Option<&str>) -> Result<()> {
        let bad = |msg: String| Error::InvalidArgument(format!("{}: {msg}", path.display()));
        if self.model_sha256 != model_sha256 {
            return Err(bad(format!(
                "calibrated for another model (SHA-256 {}…, {} is {}…): run `ran calibrate` for this model",
                &self.model_sha256[..12.min(self.model_sha256.len())],
                s.model.display(),
                &model_sha256[..12]
            )));
        }
        if self.effnet_sha256.as_deref() != effnet_sha256 {
            return Err(bad("calibrated with another EfficientNet file: run `ran calibrate` with this --effnet".into()));
        }
        let ours = RecordedSettings::of(s, precision);
        if self.settings != ours {
            let a = serde_json::to_value(&self.settings).unwrap_or_default();
            let b = serde_json::to_value(&ours).unwrap_or_default();
            // the keys of either side: `precision` is absent for f32
            let keys: std::collections::BTreeSet<&String> = a.as_object().into_iter().chain(b.as_object()).flat_map(|o| o.keys()).collect();
            let shown = |v: Option<&serde_json::Value>, k: &str| match v {
                Some(v) => v.to_string(),
                None if k == "precision" => "\"f32\"".to_string(),
                None => "none".to_string(),
            };
            let diff: Vec<String> =
                keys.into_iter().filter(|k| a.get(k.as_str()) != b.get(k.as_str())).map(|k| format!("{k} {} (this run: {})", shown(a.get(k.as_str()), k), shown(b.get(k.as_str()), k))).collect();
            let hint = if diff.iter().any(|d| d.starts_with("precision ")) { "; run `ran calibrate` with this --precision (and --device)" } else { "" };
            return Err(bad(format!("calibrated with other scoring settings: {}{hint}", diff.join(", "))));
        }
        Ok(())
    }
}

/// A calibration's id: the start of its file's SHA-256.
pub fn file_id(bytes: &[u8]) -> String {
    crate::io::hash::sha256_bytes(bytes)[..16].to_string()
}

/// The model's id in results: the start of its file's SHA-256.
pub fn model_id(model_sha256: &str) -> String {
    model_sha256[..16.min(model_sha256.len())].to_string()
}

fn to_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::BadFile { path: path.to_path_buf(), msg: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::score::FeatureTimestep;
    use crate::anomaly::settings::EnsembleKind;

    fn settings() -> ScoreSettings {
        ScoreSettings {
            model: "m.safetensors".into(),
            effnet: None,
            effnet_arch: None,
            effnet_image_size: None,
            kl_only: false,
            timesteps: vec![5, 50],
            respacing: "250".into(),
            seed: 0,
            alpha: 0.5,
            ensemble: EnsembleKind::Calibrated,
            topk: 64,
            feature_timestep: FeatureTimestep::Tau,
            calibration_images: 10,
        }
    }

    fn sample() -> CalibrationFile {
        let entry = |name: &str, p: f32, t: f32, v: Option<F1Threshold>| ClassEntry {
            name: Some(name.into()),
            calibration: ClassCalibration { statistics: Calibration { kl_mean: -1.0e-7, kl_std: 0.585, feat_mean: 24.1136, feat_std: 7.1704, images: 10 }, normal_p999: p, normal_image_max: 3.93 },
            alpha: 0.5,
            threshold: t,
            source: if v.is_some() { ThresholdSource::ValidationF1 } else { ThresholdSource::NormalMax },
            validation: v,
        };
        let f1 = F1Threshold { threshold: 2.75, f1: 6.0 / 7.0, precision: 0.75, recall: 1.0, normal: 3, defective: 4 };
        CalibrationFile {
            model_sha256: "ab".repeat(32),
            effnet_sha256: Some("cd".repeat(32)),
            settings: RecordedSettings::of(&settings(), Precision::F32),
            classes: [(Some(0), entry("brick", 4.76, 3.93, None)), (Some(2), entry("moon", 7.180_001, 2.75, Some(f1)))].into(),
        }
    }

    /// Written and read back, every number is the same f32 (detect must give the same verdicts
    /// from the file as from the calibration it was made from).
    #[test]
    fn round_trips_exactly() {
        let d = std::env::temp_dir().join(format!("ran-calfile-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("cal.safetensors");
        let f = sample();
        let id = f.write(&p).unwrap();
        let (g, id2) = CalibrationFile::read(&p).unwrap();
        assert_eq!(g, f);
        assert_eq!(id, id2);
        assert_eq!(id.len(), 16);
        g.check_matches(&p, &settings(), Precision::F32, &"ab".repeat(32), Some(&"cd".repeat(32))).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_other_models_settings_and_files() {
        let d = std::env::temp_dir().join(format!("ran-calfile-bad-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("cal.safetensors");
        let f = sample();
        f.write(&p).unwrap();
        let e = f.check_matches(&p, &settings(), Precision::F32, &"ef".repeat(32), Some(&"cd".repeat(32))).unwrap_err().to_string();
        assert!(e.contains("another model") && e.contains("cal.safetensors"), "{e}");
        let e = f.check_matches(&p, &settings(), Precision::F32, &"ab".repeat(32), None).unwrap_err().to_string();
        assert!(e.contains("another EfficientNet"), "{e}");
        let mut s = settings();
        s.seed = 3;
        let e = f.check_matches(&p, &s, Precision::F32, &"ab".repeat(32), Some(&"cd".repeat(32))).unwrap_err().to_string();
        assert!(e.contains("seed 0 (this run: 3)"), "{e}");
        // a safetensors file that is no calibration (a model, say) is named as such
        crate::io::safetensors::write_f32(&p, &[("w", &[1], &[1.0])], &BTreeMap::new()).unwrap();
        let e = CalibrationFile::read(&p).unwrap_err().to_string();
        assert!(e.contains("not a calibration file"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Catches: a calibration applied in another precision than it was made in (either way: the
    /// f32 file has no `precision` key, so a diff over one side's keys alone would miss it), the
    /// precision lost in the file, a message that does not say which precision and what to do.
    #[test]
    fn refuses_another_precision() {
        let d = std::env::temp_dir().join(format!("ran-calfile-precision-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("cal.safetensors");
        let (m, e) = ("ab".repeat(32), "cd".repeat(32));
        let f32_file = sample();
        f32_file.write(&p).unwrap();
        let err = f32_file.check_matches(&p, &settings(), Precision::Bf16, &m, Some(&e)).unwrap_err().to_string();
        assert!(err.contains("cal.safetensors") && err.contains(r#"precision "f32" (this run: "bf16")"#) && err.contains("--precision"), "{err}");
        let mut bf = sample();
        bf.settings = RecordedSettings::of(&settings(), Precision::Bf16);
        bf.write(&p).unwrap();
        let (back, _) = CalibrationFile::read(&p).unwrap();
        assert_eq!(back.settings.precision.as_deref(), Some("bf16"));
        back.check_matches(&p, &settings(), Precision::Bf16, &m, Some(&e)).unwrap();
        let err = back.check_matches(&p, &settings(), Precision::F32, &m, Some(&e)).unwrap_err().to_string();
        assert!(err.contains(r#"precision "bf16" (this run: "f32")"#), "{err}");
        let err = back.check_matches(&p, &settings(), Precision::Tf32, &m, Some(&e)).unwrap_err().to_string();
        assert!(err.contains(r#"precision "bf16" (this run: "tf32")"#), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
