//! One category of `ran eval`: its maps read back from the cache (the ensemble remade from the
//! KL and feature maps) and its metrics — the ensemble's, each score's alone, per defect kind
//! and at each α of a sweep.

use crate::anomaly::render::NORMAL_QUANTILE;
use crate::anomaly::score::{combine, topk_mean, Calibration, Ensemble};
use crate::anomaly::settings::{EnsembleKind, ScoreSettings};
use crate::eval::alpha_sweep::sweep_alpha;
use crate::eval::cache::{cache_path, read_maps};
use crate::eval::datasets::Sample;
use crate::eval::metrics::{au_pro, auroc, Pro};
use crate::eval::pro_variant::ProVariant;
use crate::eval::results::{CategoryMetrics, DefectMetrics, ModeMetrics};
use crate::io::image::{center_crop_arr, load_gray};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Where a category's maps are cached: `<out>/cache/<category>/`, named after the image's path under `data`.
pub struct CacheOf<'a> {
    pub out: &'a Path,
    pub data: &'a Path,
    pub category: &'a str,
}

impl CacheOf<'_> {
    pub fn path(&self, image: &Path) -> PathBuf {
        cache_path(self.out, self.category, image, self.data)
    }
}

fn without_feature_map(cp: PathBuf) -> Error {
    Error::BadFile { path: cp, msg: "cached without the feature map: --ensemble calibrated needs the feature score (delete the cache)".into() }
}

/// The calibrated ensemble's statistics from the cached maps of the normal training images
/// `train`, and the 99.9th percentile of the ensemble on them.
pub fn calibration_from_cache(cache: &CacheOf, train: &[PathBuf], px: usize, alpha: f32) -> Result<(Calibration, f32)> {
    let mut cal = Vec::new();
    for t in train {
        let cp = cache.path(t);
        let (_, maps) = read_maps(&cp, t, px)?.ok_or_else(|| Error::BadFile { path: cp.clone(), msg: format!("no cached map for the calibration image {}", t.display()) })?;
        if maps.len() != 3 {
            return Err(without_feature_map(cp));
        }
        cal.push((maps[1].clone(), maps[2].clone()));
    }
    let refs: Vec<(&[f32], &[f32])> = cal.iter().map(|(k, f)| (k.as_slice(), f.as_slice())).collect();
    let c = Calibration::from_maps(&refs).map_err(|e| Error::InvalidArgument(format!("{}: {e}", cache.category)))?;
    Ok((c, c.normal_quantile(alpha, &refs, NORMAL_QUANTILE)))
}

/// A category's test images as flat arrays: the ensemble maps, masks (1 = defect), image
/// scores and labels, and (when the feature score ran) the KL and feature maps.
pub struct CategoryMaps {
    pub size: usize,
    pub scores: Vec<f32>,
    pub masks: Vec<u8>,
    pub img_scores: Vec<f32>,
    pub img_labels: Vec<bool>,
    pub kl_maps: Vec<f32>,
    pub feat_maps: Vec<f32>,
}

impl CategoryMaps {
    /// Reads the cached maps of `samples`; the ensemble and the image score are remade from the
    /// cached KL and feature maps (the same f32 arithmetic as the scorer's), so --alpha,
    /// --ensemble and --topk reuse the cache.
    pub fn from_cache(cache: &CacheOf, samples: &[Sample], size: usize, s: &ScoreSettings, calibration: Option<Calibration>) -> Result<Self> {
        let px = size * size;
        let mut m = CategoryMaps { size, scores: Vec::new(), masks: Vec::new(), img_scores: Vec::new(), img_labels: Vec::new(), kl_maps: Vec::new(), feat_maps: Vec::new() };
        for smp in samples {
            let cp = cache.path(&smp.image);
            let (_, mut maps) =
                read_maps(&cp, &smp.image, px)?.ok_or_else(|| Error::BadFile { path: cp.clone(), msg: format!("no cached map for {} (a shard has not run yet?)", smp.image.display()) })?;
            if calibration.is_some() && maps.len() != 3 {
                return Err(without_feature_map(cp));
            }
            if maps.len() == 3 {
                let e = match (calibration, s.ensemble) {
                    (Some(c), _) => Ensemble::Calibrated(s.alpha, c),
                    (None, EnsembleKind::Sum) => Ensemble::Sum,
                    (None, _) => Ensemble::Weighted(s.alpha),
                };
                maps[0] = combine(e, &maps[2], &maps[1]);
            }
            let is = topk_mean(&maps[0], s.topk);
            if maps.len() == 3 {
                m.feat_maps.extend(maps.pop().unwrap_or_default());
                m.kl_maps.extend(maps.pop().unwrap_or_default());
            }
            let map = maps.remove(0);
            let mask: Vec<u8> = match &smp.mask {
                Some(mp) => center_crop_arr(&load_gray(mp)?, size).data.iter().map(|&v| (v == 255) as u8).collect(),
                None => vec![0; px],
            };
            m.img_labels.push(smp.mask.is_some());
            m.img_scores.push(is);
            m.scores.extend(map);
            m.masks.extend(mask);
        }
        Ok(m)
    }

    pub fn n(&self) -> usize {
        self.img_labels.len()
    }

    pub fn pixel_labels(&self) -> Vec<bool> {
        self.masks.iter().map(|&m| m != 0).collect()
    }

    /// Whether the KL and feature maps are there (the feature score ran).
    pub fn split(&self) -> bool {
        self.kl_maps.len() == self.scores.len()
    }

    /// The MVTec AU-PRO curve of the ensemble (plotted whatever the reported variant).
    pub fn pro_curve(&self) -> Result<Pro> {
        au_pro(&self.scores, &self.masks, self.n(), self.size, self.size, 0.3)
    }
}

fn mode_metrics(maps: &[f32], masks: &[u8], labels: &[bool], img_labels: &[bool], n: usize, size: usize, topk: usize) -> Result<ModeMetrics> {
    let px = size * size;
    let scores: Vec<f32> = (0..n).map(|i| topk_mean(&maps[i * px..(i + 1) * px], topk)).collect();
    Ok(ModeMetrics { pixel_auroc: auroc(maps, labels)?, pro: au_pro(maps, masks, n, size, size, 0.3)?.au_pro, image_auroc: auroc(&scores, img_labels)? })
}

/// The metrics of every defect kind: the images of that kind plus the normal ones (`good`/`ok`).
/// A kind without normal images to compare with, or without a single defective pixel, is left out.
fn per_defect(samples: &[Sample], maps: [&[f32]; 3], masks: &[u8], img_labels: &[bool], size: usize, topk: usize) -> Vec<DefectMetrics> {
    let px = size * size;
    let normal: Vec<usize> = (0..samples.len()).filter(|&i| !img_labels[i]).collect();
    let mut kinds: Vec<&str> = samples.iter().zip(img_labels).filter(|(_, &l)| l).map(|(s, _)| s.defect.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut out = Vec::new();
    for kind in kinds {
        let idx: Vec<usize> = (0..samples.len()).filter(|&i| img_labels[i] && samples[i].defect == kind).chain(normal.iter().copied()).collect();
        let pick = |m: &[f32]| -> Vec<f32> { idx.iter().flat_map(|&i| m[i * px..(i + 1) * px].iter().copied()).collect() };
        let mk: Vec<u8> = idx.iter().flat_map(|&i| masks[i * px..(i + 1) * px].iter().copied()).collect();
        let labels: Vec<bool> = mk.iter().map(|&m| m != 0).collect();
        let il: Vec<bool> = idx.iter().map(|&i| img_labels[i]).collect();
        let mode = |m: &[f32]| if m.is_empty() { None } else { mode_metrics(&pick(m), &mk, &labels, &il, idx.len(), size, topk).ok() };
        if let Some(ensemble) = mode(maps[0]) {
            out.push(DefectMetrics { defect: kind.to_string(), images: idx.len() - normal.len(), ensemble, kl_only: mode(maps[1]), feature_only: mode(maps[2]) });
        }
    }
    out
}

/// How a category is measured.
pub struct Measure<'a> {
    pub pro_variant: ProVariant,
    pub topk: usize,
    /// α values of `--alpha-sweep` (empty: none)
    pub alpha_sweep: &'a [f32],
}

/// The metrics of a category from its maps; `pro_curve` is `m.pro_curve()` (computed once for
/// the metrics and the plot).
pub fn category_metrics(cat: &str, samples: &[Sample], m: &CategoryMaps, pro_curve: &Pro, calibration: Option<(Calibration, f32)>, how: &Measure) -> Result<CategoryMetrics> {
    let (n, size) = (m.n(), m.size);
    let labels = m.pixel_labels();
    fn in_cat<'a>(cat: &'a str, what: &'static str) -> impl Fn(Error) -> Error + 'a {
        move |e| Error::InvalidArgument(format!("{cat}: {what}{e}"))
    }
    let pixel_auroc = auroc(&m.scores, &labels).map_err(in_cat(cat, "pixel AUROC: "))?;
    let image_auroc = auroc(&m.img_scores, &m.img_labels).map_err(in_cat(cat, "image AUROC: "))?;
    let pro = match how.pro_variant {
        ProVariant::Mvtec => pro_curve.au_pro,
        v => v.au_pro(&m.scores, &m.masks, n, size, size).map_err(in_cat(cat, "PRO: "))?,
    };
    let split = m.split();
    let mode = |maps: &[f32]| mode_metrics(maps, &m.masks, &labels, &m.img_labels, n, size, how.topk).map_err(in_cat(cat, ""));
    let (kl_only, feature_only) = if split { (Some(mode(&m.kl_maps)?), Some(mode(&m.feat_maps)?)) } else { (None, None) };
    let alpha_sweep = if split && !how.alpha_sweep.is_empty() {
        sweep_alpha(how.alpha_sweep, &m.kl_maps, &m.feat_maps, calibration.map(|c| c.0), &labels, &m.img_labels, how.topk).map_err(in_cat(cat, ""))?
    } else {
        Vec::new()
    };
    let empty: &[f32] = &[];
    let defects = per_defect(samples, [&m.scores, if split { &m.kl_maps } else { empty }, if split { &m.feat_maps } else { empty }], &m.masks, &m.img_labels, size, how.topk);
    Ok(CategoryMetrics {
        category: cat.to_string(),
        images: n,
        kl_only,
        feature_only,
        pixel_auroc,
        pro,
        image_auroc,
        calibration: calibration.map(|c| c.0),
        normal_p999: calibration.map(|c| c.1),
        verdicts: None,
        defects,
        alpha_sweep,
    })
}
