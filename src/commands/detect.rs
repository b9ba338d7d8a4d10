//! `ran detect`: images → anomaly maps, heatmaps, overlays and a results table.

use crate::anomaly::alpha_table::read_alpha_table;
use crate::anomaly::calibration::{calibrate, CalibrationImages, ClassCalibration};
use crate::anomaly::calibration_file::CalibrationFile;
use crate::anomaly::class_score::{rescore_for_class, ClassAlphas};
use crate::anomaly::classes::class_of;
use crate::anomaly::detector::Pipeline;
use crate::anomaly::render::{save_heatmap, save_map16, save_overlay, DisplayRange, Threshold};
use crate::anomaly::settings::{EnsembleKind, ScoreSettings};
use crate::anomaly::threshold::is_defective;
use crate::backend::Backend;
use crate::error::AtPath;
use crate::eval::datasets::MVTEC_CLASSES;
use crate::eval::detect_results::{write_detect_results, DetectRow};
use crate::eval::inputs::collect_inputs;
use crate::io::hash::sha256_file;
use crate::io::image::{center_crop_arr, load_rgb, Image8};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct DetectArgs {
    pub score: ScoreSettings,
    pub inputs: Vec<String>,
    pub out: PathBuf,
    /// class of a class-conditional model: index or name (None: a class name in the path)
    pub class: Option<String>,
    /// outline on the overlay
    pub threshold: Option<Threshold>,
    /// per-category α (JSON {"bottle": 0.3, ...} or lines `name,alpha`)
    pub alpha_table: Option<PathBuf>,
    /// images per UNet batch
    pub batch: usize,
    /// normal images whose map statistics calibrate `--ensemble calibrated`
    pub calibrate: Option<PathBuf>,
    /// a calibration file (`ran calibrate`) instead of `calibrate`
    pub calibration: Option<PathBuf>,
    /// colour scale of heatmaps and overlays
    pub range: DisplayRange,
}

pub struct Outcome {
    pub processed: usize,
    pub failed: Vec<(PathBuf, String)>,
    pub kl_only: bool,
    /// with the calibrated ensemble: how many images score above every normal calibration image
    pub above_normal: Option<usize>,
    /// with the calibrated ensemble: how many images are `defective` (above their class's image threshold)
    pub defective: Option<usize>,
}

pub fn run<B: Backend>(b: &B, a: &DetectArgs) -> Result<Outcome> {
    let s = &a.score;
    let files = collect_inputs(&a.inputs)?;
    // a model that carries its class names (ran convert --class-names) maps paths with them
    let classes: Vec<String> = crate::models::class_names(&s.model)?.unwrap_or_else(|| MVTEC_CLASSES.iter().map(|c| c.to_string()).collect());
    let pipe = Pipeline::new(b, s)?;
    let unet = &pipe.unet;
    let scorer = pipe.scorer();
    let calibrated = s.ensemble == EnsembleKind::Calibrated;
    if a.threshold == Some(Threshold::Normal) && !calibrated {
        return Err(Error::InvalidArgument("--threshold normal is the 99.9th percentile of the normal calibration pixels: it needs --ensemble calibrated".into()));
    }
    let alphas = ClassAlphas { default: s.alpha, table: a.alpha_table.as_deref().map(|p| read_alpha_table(p, &classes)).transpose()? };
    let alpha_of = |y: Option<usize>| alphas.of(y.and_then(|c| classes.get(c)).map(|c| c.as_str()));
    // per class: the calibration and the image threshold of the `defective` verdict
    let mut calibration_id = None;
    let calibrations: Option<BTreeMap<Option<usize>, (ClassCalibration, f32)>> = match (calibrated, &a.calibrate, &a.calibration) {
        (_, Some(_), Some(_)) => return Err(Error::InvalidArgument("give --calibrate DIR or --calibration FILE, not both".into())),
        (true, Some(dir), None) => {
            let normal = collect_inputs(&[dir.display().to_string()])?;
            let cs = calibrate(b, &pipe, s, &CalibrationImages { files: &normal, class: a.class.as_deref(), classes: &classes }, &alpha_of)?;
            // without a validation set the threshold is the largest normal score (as `above_normal`)
            Some(cs.into_iter().map(|(y, c)| (y, (c, c.normal_image_max))).collect())
        }
        (true, None, Some(file)) => {
            let (f, id) = CalibrationFile::read(file)?;
            f.check_matches(file, s, b.precision(), &sha256_file(&s.model)?, s.effnet.as_deref().map(sha256_file).transpose()?.as_deref())?;
            for (y, e) in &f.classes {
                if e.alpha != alpha_of(*y) {
                    return Err(Error::InvalidArgument(format!(
                        "{}: class {} was calibrated at α = {}, this run weighs it {}",
                        file.display(),
                        e.name.as_deref().unwrap_or("all"),
                        e.alpha,
                        alpha_of(*y)
                    )));
                }
            }
            calibration_id = Some(id);
            Some(f.classes.into_iter().map(|(y, e)| (y, (e.calibration, e.threshold))).collect())
        }
        (true, None, None) => {
            return Err(Error::InvalidArgument("--ensemble calibrated: give --calibrate DIR, a folder of normal images of the product, or --calibration FILE (ran calibrate)".into()))
        }
        (false, Some(_), _) => return Err(Error::InvalidArgument("--calibrate is for --ensemble calibrated".into())),
        (false, None, Some(_)) => return Err(Error::InvalidArgument("--calibration is for --ensemble calibrated".into())),
        (false, None, None) => None,
    };
    let kl_only = !scorer.has_features();
    std::fs::create_dir_all(&a.out).at_path(&a.out)?;
    let size = unet.flags.image_size;
    let bar = if files.len() > 1 {
        let pb = indicatif::ProgressBar::new(files.len() as u64);
        pb.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images, {elapsed} (eta {eta}) {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        Some(pb)
    } else {
        None
    };
    let mut rows: Vec<DetectRow> = Vec::new();
    let mut failed = Vec::new();
    let report = |bar: &Option<indicatif::ProgressBar>, msg: String| match bar {
        Some(pb) => pb.suspend(|| eprintln!("{msg}")),
        None => eprintln!("{msg}"),
    };
    let indexed: Vec<(usize, &PathBuf)> = files.iter().enumerate().collect();
    for chunk in indexed.chunks(a.batch.max(1)) {
        let t0 = Instant::now();
        // decode and preprocess; a bad file is skipped by name, the rest of the batch goes on
        let mut ok = Vec::new();
        for &(i, path) in chunk {
            let prep = (|| -> Result<(Image8, Option<usize>)> {
                let img = center_crop_arr(&load_rgb(path)?, size);
                let y = match unet.num_classes {
                    Some(_) => Some(class_of(path, a.class.as_deref(), &classes)?),
                    None => None,
                };
                if calibrations.as_ref().is_some_and(|cs| !cs.contains_key(&y)) {
                    let class = y.and_then(|c| classes.get(c).cloned()).unwrap_or_default();
                    let source = if a.calibration.is_some() { "in --calibration" } else { "among --calibrate" };
                    return Err(Error::InvalidArgument(format!("no normal image of class `{class}` {source}")));
                }
                Ok((img, y))
            })();
            match prep {
                Ok((img, y)) => ok.push((i, path, img, y)),
                Err(e) => {
                    report(&bar, format!("skipped {}: {e}", path.display()));
                    failed.push((path.clone(), e.to_string()));
                    if let Some(pb) = &bar {
                        pb.inc(1);
                    }
                }
            }
        }
        if ok.is_empty() {
            continue;
        }
        let n = ok.len();
        let res = (|| -> Result<Vec<DetectRow>> {
            // the same noise for every image (per timestep): a map depends on the seed, not on the batch
            let y: Option<Vec<usize>> = unet.num_classes.map(|_| ok.iter().map(|o| o.3.unwrap_or(0)).collect());
            let imgs: Vec<&Image8> = ok.iter().map(|o| &o.2).collect();
            let scores = pipe.score_images(b, &imgs, y.as_deref(), s.seed)?;
            let secs = t0.elapsed().as_secs_f64() / n as f64;
            let mut out = Vec::new();
            for ((i, path, img, y), mut sc) in ok.iter().zip(scores) {
                let category = y.and_then(|c| classes.get(c).cloned());
                // checked when the image was read: its class has a calibration
                let (class_cal, image_threshold) = calibrations.as_ref().and_then(|cs| cs.get(y).copied()).unzip();
                let alpha = rescore_for_class(&mut sc, scorer.cfg.ensemble, &alphas, category.as_deref(), class_cal.map(|c| c.statistics), s.topk);
                // index, parent folder and name: MVTec-style trees repeat file names per folder
                let parent = path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let stem = format!("{:04}_{}_{}", i, parent, path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
                let p = |suffix: &str| a.out.join(format!("{stem}_{suffix}.png"));
                let (lo, hi) = save_map16(&p("map16"), &sc.score_map, sc.w, sc.h)?;
                let (dlo, dhi) = a.range.resolve((lo, hi), class_cal.map(|c| c.normal_p999));
                save_heatmap(&p("heatmap"), &sc.score_map, sc.w, sc.h, dlo, dhi)?;
                let outline = a.threshold.and_then(|t| t.resolve(class_cal.map(|c| c.normal_p999)));
                save_overlay(&p("overlay"), img, &sc.score_map, dlo, dhi, outline)?;
                out.push(DetectRow {
                    file: path.display().to_string(),
                    class: *y,
                    category,
                    alpha,
                    image_score: sc.image_score,
                    map_min: lo,
                    map_max: hi,
                    display_range: [dlo, dhi],
                    threshold: outline,
                    normal_p999: class_cal.map(|c| c.normal_p999),
                    above_normal: class_cal.map(|c| sc.image_score > c.normal_image_max),
                    image_threshold,
                    defective: image_threshold.map(|t| is_defective(sc.image_score, t)),
                    map16: p("map16").display().to_string(),
                    heatmap: p("heatmap").display().to_string(),
                    overlay: p("overlay").display().to_string(),
                    seconds: secs,
                });
            }
            Ok(out)
        })();
        match res {
            Ok(r) => rows.extend(r),
            Err(e) => {
                for (_, path, _, _) in &ok {
                    report(&bar, format!("failed {}: {e}", path.display()));
                    failed.push(((*path).clone(), e.to_string()));
                }
            }
        }
        if let Some(pb) = &bar {
            pb.inc(n as u64);
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let settings = serde_json::json!({
        "model": s.model.display().to_string(), "model_flags": unet.flags.source, "effnet": s.effnet.as_ref().map(|p| p.display().to_string()),
        "effnet_arch": s.effnet_arch.clone().unwrap_or_default(), "mode": if kl_only { "kl-only" } else { "kl+feature" }, "timesteps": s.timesteps, "respacing": s.respacing,
        "seed": s.seed, "ensemble": s.ensemble.name(), "alpha": s.alpha, "topk": s.topk, "feature_timestep": s.feature_timestep.name(),
        "threshold": a.threshold.map(|t| t.to_string()), "backend": b.name(), "precision": b.precision().as_str(), "image_size": size, "batch": a.batch,
        "alpha_table": a.alpha_table.as_ref().map(|p| p.display().to_string()),
        "calibrate": a.calibrate.as_ref().map(|p| p.display().to_string()), "range": a.range.to_string(),
        "calibration_file": a.calibration.as_ref().map(|p| p.display().to_string()), "calibration_id": calibration_id,
        "calibration": calibrations.as_ref().map(|cs| cs.iter().map(|(y, (c, _))| (y.and_then(|y| classes.get(y).cloned()).unwrap_or_else(|| "all".into()), *c)).collect::<BTreeMap<_, _>>()),
        "image_thresholds": calibrations.as_ref().map(|cs| cs.iter().map(|(y, (_, t))| (y.and_then(|y| classes.get(y).cloned()).unwrap_or_else(|| "all".into()), *t)).collect::<BTreeMap<_, _>>()),
        "map16_scale": "value = map_min + v16 / 65535 * (map_max - map_min)",
    });
    write_detect_results(&a.out, settings, &rows, &failed)?;
    let above_normal = calibrations.as_ref().map(|_| rows.iter().filter(|r| r.above_normal == Some(true)).count());
    let defective = calibrations.as_ref().map(|_| rows.iter().filter(|r| r.defective == Some(true)).count());
    Ok(Outcome { processed: rows.len(), failed, kl_only, above_normal, defective })
}
