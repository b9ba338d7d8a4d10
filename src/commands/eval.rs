//! `ran eval`: scores every test image of MVTec-AD / BTAD categories and reports pixel AUROC,
//! AU-PRO (FPR ≤ 0.3) and image AUROC per category at the model's resolution (docs/method.md §3, §9).
//! Maps are cached per image (src/eval/cache.rs), so an interrupted run resumes; `--shard i/n`
//! scores every n-th image only, and `--merge` computes the metrics from the cached maps of all
//! shards.

use crate::anomaly::calibration::ClassCalibration;
use crate::anomaly::calibration_file::CalibrationFile;
use crate::anomaly::detector::Pipeline;
use crate::anomaly::settings::{EnsembleKind, ScoreSettings};
use crate::anomaly::threshold::verdict_quality;
use crate::backend::Backend;
use crate::eval::alpha_sweep::write_alpha_table;
use crate::eval::cache::{cache_settings, check_cache_settings, read_maps, write_maps};
use crate::eval::category::{calibration_from_cache, category_metrics, CacheOf, CategoryMaps, Measure};
use crate::eval::datasets::{categories, test_set, train_images, Layout, BTAD_CLASSES, MVTEC_CLASSES};
use crate::eval::pictures::Pictures;
use crate::eval::pro_variant::ProVariant;
use crate::eval::results::CategoryMetrics;
use crate::eval::tables::{write_report, write_tables};
use crate::io::hash::sha256_file;
use crate::io::image::{center_crop_arr, load_rgb};
use crate::ops::precision::Precision;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct EvalArgs {
    pub score: ScoreSettings,
    pub data: PathBuf,
    /// output folder: metrics, pictures and the map cache
    pub out: PathBuf,
    pub categories: Vec<String>,
    pub shard: Option<(usize, usize)>,
    pub merge: bool,
    pub pro_variant: ProVariant,
    /// α values at which to rescore the ensemble from the cached maps (empty: none)
    pub alpha_sweep: Vec<f32>,
    /// a calibration file (`ran calibrate`): its statistics instead of the training images', and
    /// its image thresholds' verdicts measured on the test set
    pub calibration: Option<PathBuf>,
}

/// A category's entry of the calibration file, checked against this run's model and settings.
fn file_calibration(file: &Path, f: &CalibrationFile, s: &ScoreSettings, precision: Precision, model: &Path, cat: &str, key: Option<usize>) -> Result<(ClassCalibration, f32)> {
    f.check_matches(file, s, precision, &sha256_file(model)?, s.effnet.as_deref().map(sha256_file).transpose()?.as_deref())?;
    let e = f.classes.get(&key).ok_or_else(|| Error::InvalidArgument(format!("{}: no calibration for category `{cat}`: run `ran calibrate` with its normal images", file.display())))?;
    if e.alpha != s.alpha {
        return Err(Error::InvalidArgument(format!("{}: `{cat}` was calibrated at α = {}, this run weighs it {}", file.display(), e.alpha, s.alpha)));
    }
    Ok((e.calibration, e.threshold))
}

/// The model of a category: the one model, or `<category>.safetensors` in a folder of them.
fn model_for(model: &Path, cat: &str) -> Result<PathBuf> {
    if !model.is_dir() {
        return Ok(model.to_path_buf());
    }
    let p = model.join(format!("{cat}.safetensors"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::InvalidArgument(format!("no model for category `{cat}`: expected {}", p.display())))
    }
}

/// The image size of a model, from its flags (for --merge, which loads no model).
fn image_size_of(model: &Path) -> Result<usize> {
    let st = crate::io::safetensors::SafeTensors::open(model)?;
    let flags = crate::io::flags::ModelFlags::parse(st.metadata().get("model_flags").map(|s| s.as_str()).unwrap_or("")).map_err(|e| crate::models::in_model_file(model, e))?;
    Ok(flags.image_size)
}

pub fn run<B: Backend>(b: &B, a: &EvalArgs) -> Result<Vec<CategoryMetrics>> {
    let s = &a.score;
    if let Some(bad) = a.alpha_sweep.iter().find(|x| !(0.0..=1.0).contains(*x)) {
        return Err(Error::InvalidArgument(format!("--alpha-sweep {bad}: α must lie in [0, 1]")));
    }
    if !a.alpha_sweep.is_empty() && s.kl_only {
        return Err(Error::InvalidArgument("--alpha-sweep recombines the KL and feature maps: not with --kl-only".into()));
    }
    let (layout, all) = categories(&a.data)?;
    let cats: Vec<String> = if a.categories.is_empty() { all.clone() } else { a.categories.clone() };
    for c in &cats {
        if !all.contains(c) {
            return Err(Error::InvalidArgument(format!("category `{c}` not found under {} (found: {})", a.data.display(), all.join(", "))));
        }
    }
    // one unified model, or a folder with one model per category (<category>.safetensors)
    let per_category = s.model.is_dir();
    let calibrated = s.ensemble == EnsembleKind::Calibrated;
    let cal_file = match (&a.calibration, calibrated) {
        (Some(f), true) => Some((f.as_path(), CalibrationFile::read(f)?.0)),
        (Some(_), false) => return Err(Error::InvalidArgument("--calibration is for --ensemble calibrated".into())),
        (None, _) => None,
    };
    let mut results = Vec::new();
    let mut pictures = Pictures::default();
    let mut pipe: Option<Pipeline<B>> = None;
    for cat in &cats {
        let model = model_for(&s.model, cat)?;
        if !a.merge && (per_category || pipe.is_none()) {
            pipe = Some(Pipeline::new(b, &ScoreSettings { model: model.clone(), ..s.clone() })?);
        }
        let size = match &pipe {
            Some(p) => p.unet.flags.image_size,
            None => image_size_of(&model)?,
        };
        let model_names = crate::models::class_names(&model)?;
        let names: Vec<&str> = match &model_names {
            Some(n) => n.iter().map(|s| s.as_str()).collect(),
            None if layout == Layout::Btad => BTAD_CLASSES.to_vec(),
            None => MVTEC_CLASSES.to_vec(),
        };
        let samples = test_set(&a.data, cat, layout)?;
        check_cache_settings(&a.out, cat, &cache_settings(s, &model, &a.data, b.precision()))?;
        let cache = CacheOf { out: &a.out, data: &a.data, category: cat };
        let label = names.iter().position(|n| n == cat);
        // a class-conditional model's calibration is keyed by the class index, else by None
        let from_file = match cal_file {
            Some((file, ref f)) => {
                let key = match (&model_names, pipe.as_ref().and_then(|p| p.unet.num_classes)) {
                    (None, None) => None,
                    _ => Some(label.ok_or_else(|| Error::InvalidArgument(format!("the model is class-conditional and `{cat}` is not a known category name")))?),
                };
                Some(file_calibration(file, f, s, b.precision(), &model, cat, key)?)
            }
            None => None,
        };
        let px = size * size;
        // checked before hours of scoring, not when the metrics run out of memory afterwards
        crate::sysinfo::check_memory(
            &format!("eval of `{cat}` ({} images at {size}×{size})", samples.len()),
            metrics_memory_estimate(samples.len() + s.calibration_images, px),
            "the model's image size or the images per category",
        )?;
        let bar = indicatif::ProgressBar::new(samples.len() as u64);
        bar.set_style(indicatif::ProgressStyle::with_template(&format!("{cat:<12} {{bar:30}} {{pos}}/{{len}} ({{eta}}) {{msg}}")).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        // scores an image into the cache unless it is there already
        let ensure_cached = |image: &Path| -> Result<()> {
            let cp = cache.path(image);
            if read_maps(&cp, image, px)?.is_some() {
                return Ok(());
            }
            let Some(p) = &pipe else { return Ok(()) };
            let img = center_crop_arr(&load_rgb(image)?, size);
            let y = match (p.unet.num_classes, label) {
                (Some(_), Some(l)) => Some(vec![l]),
                (Some(_), None) => return Err(Error::InvalidArgument(format!("the model is class-conditional and `{cat}` is not a known category name"))),
                (None, _) => None,
            };
            let sc = p.score_images(b, &[&img], y.as_deref(), s.seed)?.remove(0);
            match &sc.feat_map {
                Some(f) => write_maps(&cp, image, sc.image_score, &[&sc.score_map, &sc.kl_map, f]),
                None => write_maps(&cp, image, sc.image_score, &[&sc.score_map]),
            }
        };
        for (i, smp) in samples.iter().enumerate() {
            bar.inc(1);
            if a.shard.is_some_and(|(k, n)| i % n != k) {
                continue;
            }
            ensure_cached(&smp.image)?;
        }
        // the calibrated ensemble: map statistics of the first training images (shard 0 scores them)
        let train = if calibrated && from_file.is_none() { train_images(&a.data, cat, layout, s.calibration_images)? } else { Vec::new() };
        if a.shard.is_none_or(|(k, _)| k == 0) && !train.is_empty() {
            bar.set_length((samples.len() + train.len()) as u64);
            bar.set_message("calibration");
            for t in &train {
                bar.inc(1);
                ensure_cached(t)?;
            }
        }
        bar.finish_and_clear();
        if a.shard.is_some() && !a.merge {
            continue; // a shard only fills the cache
        }
        let calibration = match from_file {
            Some((c, _)) => Some((c.statistics, c.normal_p999)),
            None if calibrated => Some(calibration_from_cache(&cache, &train, px, s.alpha)?),
            None => None,
        };
        let maps = CategoryMaps::from_cache(&cache, &samples, size, s, calibration.map(|c| c.0))?;
        let pro_curve = maps.pro_curve().map_err(|e| Error::InvalidArgument(format!("{cat}: AU-PRO: {e}")))?;
        let how = Measure { pro_variant: a.pro_variant, topk: s.topk, alpha_sweep: &a.alpha_sweep };
        let mut metrics = category_metrics(cat, &samples, &maps, &pro_curve, calibration, &how)?;
        if let Some((_, threshold)) = from_file {
            let scored: Vec<(f32, bool)> = maps.img_scores.iter().copied().zip(maps.img_labels.iter().copied()).collect();
            metrics.verdicts = Some(verdict_quality(&scored, threshold));
        }
        // pictures: ROC (pixel, image) and PRO curves; overlays of the best and worst images
        pictures.add_category(&a.out, cat, &samples, &maps, &pro_curve, calibration.map(|c| c.1))?;
        results.push(metrics);
    }
    if !a.alpha_sweep.is_empty() && !results.is_empty() {
        if results.iter().any(|m| m.alpha_sweep.is_empty()) {
            return Err(Error::InvalidArgument("--alpha-sweep recombines the KL and feature maps: it needs the feature score (a model with a feature head and --effnet)".into()));
        }
        write_alpha_table(&a.out, &results)?;
    }
    if !results.is_empty() {
        write_tables(&a.out, &results, a.pro_variant, b.precision())?;
        write_report(&a.out, &results, &a.alpha_sweep, &pictures)?;
    }
    Ok(results)
}

/// An upper estimate of the memory the metrics of one category need, in bytes: per image and
/// pixel the cached maps (score, KL, feature: 3 f32), the mask, and the pixel-AUROC and PRO
/// working sets (score–label pairs sorted, component labels: ~16 bytes).
pub fn metrics_memory_estimate(images: usize, px: usize) -> u64 {
    (images as u64) * (px as u64) * (3 * 4 + 1 + 16)
}
