//! The calibrated ensemble's statistics per class, from normal images.

use crate::anomaly::classes::class_of;
use crate::anomaly::detector::Pipeline;
use crate::anomaly::render::NORMAL_QUANTILE;
use crate::anomaly::score::{combine, topk_mean, Calibration, Ensemble};
use crate::anomaly::settings::ScoreSettings;
use crate::backend::Backend;
use crate::io::image::{center_crop_arr, load_rgb};
use crate::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A class's calibration: the map statistics of its normal images, and where their calibrated
/// ensemble reaches (at the class's α): the 99.9th percentile of the pixels (top of the colour
/// scale) and the highest image score.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ClassCalibration {
    pub statistics: Calibration,
    pub normal_p999: f32,
    pub normal_image_max: f32,
}

/// Which normal images calibrate, and how their classes are found (as the inputs' are).
pub struct CalibrationImages<'a> {
    pub files: &'a [PathBuf],
    /// --class, else the class name in each path
    pub class: Option<&'a str>,
    pub classes: &'a [String],
}

/// One calibration per class of the normal images, at most `s.calibration_images` of each class
/// (the first in name order). A model without classes has one calibration (key None).
/// `alpha_of` gives a class's α.
pub fn calibrate<B: Backend>(b: &B, pipe: &Pipeline<B>, s: &ScoreSettings, normal: &CalibrationImages, alpha_of: &dyn Fn(Option<usize>) -> f32) -> Result<BTreeMap<Option<usize>, ClassCalibration>> {
    let size = pipe.unet.flags.image_size;
    // per class: the (KL map, feature map) of each calibration image
    type Maps = Vec<(Vec<f32>, Vec<f32>)>;
    let mut maps: BTreeMap<Option<usize>, Maps> = BTreeMap::new();
    let bar = indicatif::ProgressBar::new(normal.files.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("calibration {bar:30} {pos}/{len} images considered ({eta})").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    for path in normal.files {
        bar.inc(1);
        let y = match pipe.unet.num_classes {
            Some(_) => Some(class_of(path, normal.class, normal.classes)?),
            None => None,
        };
        let group = maps.entry(y).or_default();
        if group.len() >= s.calibration_images.max(1) {
            continue;
        }
        let img = center_crop_arr(&load_rgb(path)?, size);
        let sc = pipe.score_images(b, &[&img], y.map(|c| vec![c]).as_deref(), s.seed)?.remove(0);
        group.push((sc.kl_map, sc.feat_map.unwrap_or_default()));
    }
    bar.finish_and_clear();
    let mut out = BTreeMap::new();
    for (y, m) in maps {
        let refs: Vec<(&[f32], &[f32])> = m.iter().map(|(k, f)| (k.as_slice(), f.as_slice())).collect();
        let c = Calibration::from_maps(&refs)?;
        let top = c.normal_quantile(alpha_of(y), &refs, NORMAL_QUANTILE);
        let image_max = refs.iter().map(|(k, f)| topk_mean(&combine(Ensemble::Calibrated(alpha_of(y), c), f, k), s.topk)).fold(f32::NEG_INFINITY, f32::max);
        let name = y.map(|c| format!(" of {}", normal.classes.get(c).cloned().unwrap_or_else(|| format!("class {c}")))).unwrap_or_default();
        eprintln!(
            "calibrated on {} normal images{name}: KL {:.3} ± {:.3}, feature {:.4} ± {:.4}; 99.9% of their pixels below {top:.2}, image scores up to {image_max:.2}",
            c.images, c.kl_mean, c.kl_std, c.feat_mean, c.feat_std
        );
        out.insert(y, ClassCalibration { statistics: c, normal_p999: top, normal_image_max: image_max });
    }
    Ok(out)
}
