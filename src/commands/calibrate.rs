//! `ran calibrate`: normal images (and optionally a labelled validation set) → a calibration file
//! that detect and serve apply without rescoring normal images.

use crate::anomaly::calibration::{calibrate, CalibrationImages};
use crate::anomaly::calibration_file::{CalibrationFile, ClassEntry, RecordedSettings};
use crate::anomaly::classes::class_of;
use crate::anomaly::detector::Pipeline;
use crate::anomaly::score::Ensemble;
use crate::anomaly::settings::{EnsembleKind, ScoreSettings};
use crate::anomaly::threshold::{f1_optimal, ThresholdSource};
use crate::backend::Backend;
use crate::eval::datasets::{categories, test_set, Sample, MVTEC_CLASSES};
use crate::eval::inputs::collect_inputs;
use crate::io::files::refuse_overwriting_input;
use crate::io::hash::sha256_file;
use crate::io::image::{center_crop_arr, load_rgb};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct CalibrateArgs {
    pub score: ScoreSettings,
    /// normal images: folders, files or patterns
    pub normal: Vec<String>,
    /// a labelled validation set in the MVTec test layout (a category folder or a data root)
    pub val: Option<PathBuf>,
    pub out: PathBuf,
    /// class of a class-conditional model (default: a class name in each path)
    pub class: Option<String>,
}

/// The classes a model's paths are matched against: its own names, else MVTec's.
pub fn class_list(model: &Path) -> Result<Vec<String>> {
    Ok(crate::models::class_names(model)?.unwrap_or_else(|| MVTEC_CLASSES.iter().map(|c| c.to_string()).collect()))
}

/// The test images of a validation folder: `DIR/test/<kind>/…` (one category) or
/// `DIR/<category>/test/<kind>/…` (a data root).
fn validation_samples(dir: &Path) -> Result<Vec<Sample>> {
    if dir.join("test").is_dir() {
        let (root, cat) = match (dir.parent(), dir.file_name()) {
            (Some(p), Some(n)) => (if p.as_os_str().is_empty() { Path::new(".") } else { p }, n.to_string_lossy().into_owned()),
            _ => return Err(Error::BadFile { path: dir.to_path_buf(), msg: "cannot name the category of this folder".into() }),
        };
        let (layout, _) = categories(root)?;
        return test_set(root, &cat, layout);
    }
    let (layout, cats) = categories(dir)?;
    let mut v = Vec::new();
    for c in cats {
        v.extend(test_set(dir, &c, layout)?);
    }
    Ok(v)
}

/// The calibration of `pipe` on the normal images, with image thresholds: each class's largest
/// normal score, or the F1-optimal threshold on its images of the validation set.
pub fn build<B: Backend>(b: &B, pipe: &Pipeline<B>, s: &ScoreSettings, normal: &[PathBuf], val: Option<&Path>, class: Option<&str>, classes: &[String]) -> Result<CalibrationFile> {
    if s.ensemble != EnsembleKind::Calibrated {
        return Err(Error::InvalidArgument("a calibration file is for the calibrated ensemble (--ensemble calibrated)".into()));
    }
    let alpha_of = |_: Option<usize>| s.alpha;
    let cals = calibrate(b, pipe, s, &CalibrationImages { files: normal, class, classes }, &alpha_of)?;
    let name_of = |y: Option<usize>| y.map(|c| classes.get(c).cloned().unwrap_or_else(|| format!("class {c}")));
    let mut entries: BTreeMap<Option<usize>, ClassEntry> = cals
        .iter()
        .map(|(y, c)| (*y, ClassEntry { name: name_of(*y), calibration: *c, alpha: alpha_of(*y), threshold: c.normal_image_max, source: ThresholdSource::NormalMax, validation: None }))
        .collect();
    if let Some(dir) = val {
        let samples = validation_samples(dir)?;
        let size = pipe.unet.flags.image_size;
        let mut scored: BTreeMap<Option<usize>, Vec<(f32, bool)>> = BTreeMap::new();
        let bar = indicatif::ProgressBar::new(samples.len() as u64);
        bar.set_style(indicatif::ProgressStyle::with_template("validation {bar:30} {pos}/{len} images ({eta})").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        for smp in &samples {
            bar.inc(1);
            let y = match pipe.unet.num_classes {
                Some(_) => Some(class_of(&smp.image, class, classes)?),
                None => None,
            };
            let Some(entry) = entries.get(&y) else {
                return Err(Error::InvalidArgument(format!("{}: its class `{}` has no normal image among --normal", smp.image.display(), name_of(y).unwrap_or_default())));
            };
            let img = center_crop_arr(&load_rgb(&smp.image)?, size);
            let mut sc = pipe.score_images(b, &[&img], y.map(|c| vec![c]).as_deref(), s.seed)?.remove(0);
            sc.reweight(Ensemble::Calibrated(entry.alpha, entry.calibration.statistics), s.topk);
            scored.entry(y).or_default().push((sc.image_score, smp.mask.is_some()));
        }
        bar.finish_and_clear();
        for (y, v) in scored {
            let t = f1_optimal(&v).map_err(|e| Error::InvalidArgument(format!("{} (class {}): {e}", dir.display(), name_of(y).unwrap_or_else(|| "all".into()))))?;
            let e = entries.get_mut(&y).expect("checked above");
            e.threshold = t.threshold;
            e.source = ThresholdSource::ValidationF1;
            e.validation = Some(t);
        }
    }
    Ok(CalibrationFile { model_sha256: sha256_file(&s.model)?, effnet_sha256: s.effnet.as_deref().map(sha256_file).transpose()?, settings: RecordedSettings::of(s, b.precision()), classes: entries })
}

/// Calibrates and writes the file atomically; returns the calibration and its id.
pub fn run<B: Backend>(b: &B, a: &CalibrateArgs) -> Result<(CalibrationFile, String)> {
    let s = &a.score;
    let mut inputs: Vec<&Path> = vec![&s.model];
    inputs.extend(s.effnet.as_deref());
    refuse_overwriting_input(&a.out, &inputs)?;
    let classes = class_list(&s.model)?;
    let pipe = Pipeline::new(b, s)?;
    let normal = collect_inputs(&a.normal)?;
    let f = build(b, &pipe, s, &normal, a.val.as_deref(), a.class.as_deref(), &classes)?;
    let id = f.write(&a.out)?;
    Ok((f, id))
}
