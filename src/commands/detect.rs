//! `ran detect`: images → anomaly maps, heatmaps, overlays and a results table.

use crate::anomaly::noise::gaussian;
use crate::anomaly::render::{save_heatmap, save_map16, save_overlay, DisplayRange, Threshold, NORMAL_QUANTILE};
use crate::anomaly::score::{combine, topk_mean, Calibration, Ensemble, FeatureTimestep, ScoreConfig, Scorer};
use crate::backend::Backend;
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::io::image::{center_crop_arr, load_rgb, to_chw};
use crate::models::efficientnet::{EfficientNet, EffNetConfig};
use crate::models::weights::Loader;
use crate::models::{load_unet, open_weights};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// MVTec-AD's categories in the official label order (spec §5).
pub const MVTEC_CLASSES: [&str; 15] =
    ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper"];

#[derive(Clone, Debug)]
pub struct DetectArgs {
    pub inputs: Vec<String>,
    pub model: PathBuf,
    pub effnet: Option<PathBuf>,
    pub effnet_arch: String,
    pub effnet_image_size: Option<usize>,
    pub kl_only: bool,
    pub out: PathBuf,
    pub timesteps: Vec<usize>,
    pub respacing: String,
    pub seed: u64,
    pub alpha: f32,
    pub ensemble: String,
    pub topk: usize,
    pub feature_timestep: String,
    pub class: Option<String>,
    pub classes: Vec<String>,
    /// outline on the overlay: a score or "normal" (see `Threshold`)
    pub threshold: Option<String>,
    /// per-category α (JSON {"bottle": 0.3, ...} or lines `name,alpha`)
    pub alpha_table: Option<PathBuf>,
    /// images per UNet batch
    pub batch: usize,
    /// normal images whose map statistics calibrate `--ensemble calibrated` (detect)
    pub calibrate: Option<PathBuf>,
    /// colour scale of heatmaps and overlays: auto, image or "LO,HI" (see `DisplayRange`)
    pub range: String,
    /// normal training images per category that calibrate `--ensemble calibrated` (eval)
    pub calibration_images: usize,
}

/// Reads a per-category α table; every category must be a known class.
pub fn read_alpha_table(path: &Path, classes: &[String]) -> Result<std::collections::BTreeMap<String, f32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    let bad = |m: String| Error::BadFile { path: path.to_path_buf(), msg: m };
    let mut t = std::collections::BTreeMap::new();
    if text.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        for (k, a) in v.as_object().ok_or_else(|| bad("expected an object {category: alpha}".into()))? {
            t.insert(k.clone(), a.as_f64().ok_or_else(|| bad(format!("α of `{k}` is not a number")))? as f32);
        }
    } else {
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
            let (k, a) = line.split_once([',', ' ', '\t']).ok_or_else(|| bad(format!("line {}: `category,alpha` expected", i + 1)))?;
            t.insert(k.trim().to_string(), a.trim().parse().map_err(|_| bad(format!("line {}: `{}` is not a number", i + 1, a.trim())))?);
        }
    }
    for (k, a) in &t {
        if !classes.contains(k) {
            return Err(bad(format!("unknown category `{k}` (known: {})", classes.join(", "))));
        }
        if !(0.0..=1.0).contains(a) {
            return Err(bad(format!("α of `{k}` is {a}, outside [0, 1]")));
        }
    }
    Ok(t)
}

const IMAGE_EXT: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "PNG", "JPG"];

/// Files named by the inputs: files as given, folders searched recursively for images, globs.
pub fn collect_inputs(inputs: &[String]) -> Result<Vec<PathBuf>> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(d).map_err(|e| Error::Io { path: d.to_path_buf(), source: e })?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXT.contains(&e)) && !p.to_string_lossy().contains("_mask") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for i in inputs {
        let p = Path::new(i);
        if p.is_dir() {
            let before = files.len();
            walk(p, &mut files)?;
            if files.len() == before {
                return Err(Error::InvalidArgument(format!("{i}: no images (png, jpg, bmp) in this folder")));
            }
        } else if i.contains(['*', '?', '[']) {
            let g = glob::glob(i).map_err(|e| Error::InvalidArgument(format!("bad pattern {i}: {e}")))?;
            let before = files.len();
            files.extend(g.filter_map(|r| r.ok()).filter(|p| p.is_file()));
            if files.len() == before {
                return Err(Error::InvalidArgument(format!("{i}: the pattern matches no file")));
            }
        } else {
            files.push(p.to_path_buf());
        }
    }
    if files.is_empty() {
        return Err(Error::InvalidArgument("no input images given".into()));
    }
    Ok(files)
}

/// The class label of `path` for a class-conditional model: --class (index or name), else the
/// first class name contained in the path (the official code's substring rule).
pub fn class_of(path: &Path, explicit: Option<&str>, classes: &[String]) -> Result<usize> {
    if let Some(c) = explicit {
        if let Ok(i) = c.parse::<usize>() {
            return Ok(i);
        }
        return classes.iter().position(|n| n == c).ok_or_else(|| Error::InvalidArgument(format!("unknown class `{c}` (known: {})", classes.join(", "))));
    }
    let s = path.to_string_lossy();
    classes
        .iter()
        .position(|n| s.contains(n.as_str()))
        .ok_or_else(|| Error::InvalidArgument(format!("{}: the model is class-conditional and no class name appears in the path: give --class", path.display())))
}

pub struct Outcome {
    pub processed: usize,
    pub failed: Vec<(PathBuf, String)>,
    pub kl_only: bool,
    /// with the calibrated ensemble: how many images score above every normal calibration image
    pub above_normal: Option<usize>,
}

/// The loaded model, extractor and scoring settings shared by `detect` and `eval`.
pub struct Pipeline<B: Backend> {
    pub unet: crate::models::unet::UNet<B>,
    pub effnet: Option<EfficientNet<B>>,
    pub diffusion: Diffusion,
    pub cfg: ScoreConfig,
}

impl<B: Backend> Pipeline<B> {
    pub fn new(b: &B, a: &DetectArgs) -> Result<Self> {
        let unet = load_unet(&a.model, b, &[])?;
        let f = &unet.flags;
        let diffusion = Diffusion::new(BetaSchedule::parse(&f.noise_schedule)?, f.diffusion_steps, if f.timestep_respacing.is_empty() { &a.respacing } else { &f.timestep_respacing })?;
        if a.timesteps.is_empty() {
            return Err(Error::InvalidArgument("--timesteps: give at least one index of the respaced schedule".into()));
        }
        for &k in &a.timesteps {
            if k == 0 || k >= diffusion.num_steps() {
                return Err(Error::InvalidArgument(format!("--timesteps: {k} is outside 1..{} of the respaced schedule", diffusion.num_steps())));
            }
        }
        let effnet = match (&unet.feat_head, &a.effnet, a.kl_only) {
            (Some(head), Some(p), false) => {
                // explicit --effnet-arch, else the model's declared extractor, else the paper's B4
                let arch = if !a.effnet_arch.is_empty() { a.effnet_arch.clone() } else { crate::models::feature_extractor(&a.model)?.unwrap_or_else(|| "efficientnet-b4".into()) };
                let mut cfg = EffNetConfig::from_name(&arch)?;
                let taps: usize = cfg.tap_channels().iter().sum();
                if taps != head.out_channels() {
                    return Err(Error::InvalidArgument(format!("{arch}'s taps give {taps} channels but the model's feature head predicts {}: give the matching --effnet-arch", head.out_channels())));
                }
                if let Some(s) = a.effnet_image_size {
                    cfg.image_size = s;
                }
                let w = open_weights(p)?;
                let unused = EfficientNet::<B>::unused_prefixes(&cfg);
                let unused: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
                let l = Loader::new(&*w, b).ignoring_prefixes(&unused);
                let e = EfficientNet::load(&cfg, &l)?;
                l.finish()?;
                Some(e)
            }
            (Some(_), None, false) => return Err(Error::InvalidArgument("the model has a feature head: give --effnet FILE (EfficientNet weights, e.g. efficientnet-b4-6ed6700e.pth) or --kl-only".into())),
            _ => None,
        };
        let ensemble = match a.ensemble.as_str() {
            "weighted" => Ensemble::Weighted(a.alpha),
            "sum" => Ensemble::Sum,
            // scored as weighted; the caller recombines once the calibration is known
            "calibrated" => {
                if unet.feat_head.is_none() || effnet.is_none() {
                    return Err(Error::InvalidArgument("--ensemble calibrated combines the KL and feature maps: it needs a model with a feature head and --effnet".into()));
                }
                Ensemble::Weighted(a.alpha)
            }
            o => return Err(Error::InvalidArgument(format!("--ensemble {o}: weighted, sum or calibrated"))),
        };
        let feature_timestep = match a.feature_timestep.as_str() {
            "index" => FeatureTimestep::RespacedIndex,
            "tau" => FeatureTimestep::Tau,
            o => return Err(Error::InvalidArgument(format!("--feature-timestep {o}: index or tau"))),
        };
        Ok(Pipeline { unet, effnet, diffusion, cfg: ScoreConfig { timesteps: a.timesteps.clone(), feature_timestep, ensemble, topk: a.topk, batch_timesteps: true } })
    }

    pub fn scorer(&self) -> Scorer<'_, B> {
        Scorer { unet: &self.unet, effnet: self.effnet.as_ref(), diffusion: self.diffusion.clone(), cfg: self.cfg.clone() }
    }

    /// Scores preprocessed images (each `size`², RGB) with labels `y`, the same seeded noise for all.
    pub fn score_images(&self, b: &B, imgs: &[&crate::io::image::Image8], y: Option<&[usize]>, seed: u64) -> Result<Vec<crate::anomaly::score::ImageScores>> {
        let n = imgs.len();
        let size = self.unet.flags.image_size;
        let x: Vec<f32> = imgs.iter().flat_map(|img| to_chw(img)).collect();
        let x0 = b.from_host(&[n, 3, size, size], &x)?;
        let noise: Vec<_> = self.cfg.timesteps.iter().map(|&k| b.from_host(&[n, 3, size, size], &gaussian(seed, k as u64, 3 * size * size).repeat(n))).collect::<Result<_>>()?;
        self.scorer().score(b, &x0, &noise, y)
    }
}

/// A class's calibration: the map statistics of its normal images, and where their calibrated
/// ensemble reaches (at the class's α): the 99.9th percentile of the pixels (top of the colour
/// scale) and the highest image score.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ClassCalibration {
    pub statistics: Calibration,
    pub normal_p999: f32,
    pub normal_image_max: f32,
}

/// The calibrated ensemble's statistics, one per class: the normal images `dir` (a folder or a
/// pattern) holds, their classes from their paths like the inputs', at most
/// `a.calibration_images` of each class (the first in name order). A model without classes has
/// one calibration (key None). `alpha_of` gives a class's α.
pub fn calibrate<B: Backend>(b: &B, pipe: &Pipeline<B>, a: &DetectArgs, dir: &Path, alpha_of: &dyn Fn(Option<usize>) -> f32) -> Result<BTreeMap<Option<usize>, ClassCalibration>> {
    let files = collect_inputs(&[dir.display().to_string()])?;
    let size = pipe.unet.flags.image_size;
    // per class: the (KL map, feature map) of each calibration image
    type Maps = Vec<(Vec<f32>, Vec<f32>)>;
    let mut maps: BTreeMap<Option<usize>, Maps> = BTreeMap::new();
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("calibration {bar:30} {pos}/{len} images considered ({eta})").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    for path in &files {
        bar.inc(1);
        let y = match pipe.unet.num_classes {
            Some(_) => Some(class_of(path, a.class.as_deref(), &a.classes)?),
            None => None,
        };
        let group = maps.entry(y).or_default();
        if group.len() >= a.calibration_images.max(1) {
            continue;
        }
        let img = center_crop_arr(&load_rgb(path)?, size);
        let s = pipe.score_images(b, &[&img], y.map(|c| vec![c]).as_deref(), a.seed)?.remove(0);
        group.push((s.kl_map, s.feat_map.unwrap_or_default()));
    }
    bar.finish_and_clear();
    let mut out = BTreeMap::new();
    for (y, m) in maps {
        let refs: Vec<(&[f32], &[f32])> = m.iter().map(|(k, f)| (k.as_slice(), f.as_slice())).collect();
        let c = Calibration::from_maps(&refs)?;
        let top = c.normal_quantile(alpha_of(y), &refs, NORMAL_QUANTILE);
        let image_max = refs.iter().map(|(k, f)| topk_mean(&combine(Ensemble::Calibrated(alpha_of(y), c), f, k), a.topk)).fold(f32::NEG_INFINITY, f32::max);
        let name = y.map(|c| format!(" of {}", a.classes.get(c).cloned().unwrap_or_else(|| format!("class {c}")))).unwrap_or_default();
        eprintln!(
            "calibrated on {} normal images{name}: KL {:.3} ± {:.3}, feature {:.4} ± {:.4}; 99.9% of their pixels below {top:.2}, image scores up to {image_max:.2}",
            c.images, c.kl_mean, c.kl_std, c.feat_mean, c.feat_std
        );
        out.insert(y, ClassCalibration { statistics: c, normal_p999: top, normal_image_max: image_max });
    }
    Ok(out)
}

pub fn run<B: Backend>(b: &B, a: &DetectArgs) -> Result<Outcome> {
    let files = collect_inputs(&a.inputs)?;
    // a model that carries its class names (ran convert --class-names) maps paths with them
    let mut a = a.clone();
    if let Some(names) = crate::models::class_names(&a.model)? {
        a.classes = names;
    }
    let a = &a;
    let pipe = Pipeline::new(b, a)?;
    let unet = &pipe.unet;
    let scorer = pipe.scorer();
    let range = DisplayRange::parse(&a.range)?;
    let threshold = a.threshold.as_deref().map(Threshold::parse).transpose()?;
    if threshold == Some(Threshold::Normal) && a.ensemble != "calibrated" {
        return Err(Error::InvalidArgument("--threshold normal is the 99.9th percentile of the normal calibration pixels: it needs --ensemble calibrated".into()));
    }
    let alpha_table = match &a.alpha_table {
        Some(p) => Some(read_alpha_table(p, &a.classes)?),
        None => None,
    };
    let alpha_of = |y: Option<usize>| -> f32 {
        let cat = y.and_then(|c| a.classes.get(c));
        alpha_table.as_ref().zip(cat).and_then(|(t, c)| t.get(c).copied()).unwrap_or(a.alpha)
    };
    let calibrations = match (a.ensemble.as_str(), &a.calibrate) {
        ("calibrated", Some(dir)) => Some(calibrate(b, &pipe, a, dir, &alpha_of)?),
        ("calibrated", None) => return Err(Error::InvalidArgument("--ensemble calibrated: give --calibrate DIR, a folder of normal images of the product".into())),
        (_, Some(_)) => return Err(Error::InvalidArgument("--calibrate is for --ensemble calibrated".into())),
        _ => None,
    };
    let kl_only = !scorer.has_features();
    let f = &unet.flags;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::Io { path: a.out.clone(), source: e })?;
    let size = f.image_size;
    let bar = if files.len() > 1 {
        let pb = indicatif::ProgressBar::new(files.len() as u64);
        pb.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images, {elapsed} (eta {eta}) {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        Some(pb)
    } else {
        None
    };
    let mut rows = Vec::new();
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
            let prep = (|| -> Result<(crate::io::image::Image8, Option<usize>)> {
                let img = center_crop_arr(&load_rgb(path)?, size);
                let y = match unet.num_classes {
                    Some(_) => Some(class_of(path, a.class.as_deref(), &a.classes)?),
                    None => None,
                };
                if calibrations.as_ref().is_some_and(|cs| !cs.contains_key(&y)) {
                    let class = y.and_then(|c| a.classes.get(c).cloned()).unwrap_or_default();
                    return Err(Error::InvalidArgument(format!("no normal image of class `{class}` among --calibrate")));
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
        let res = (|| -> Result<Vec<serde_json::Value>> {
            // the same noise for every image (per timestep): a map depends on the seed, not on the batch
            let y: Option<Vec<usize>> = unet.num_classes.map(|_| ok.iter().map(|o| o.3.unwrap_or(0)).collect());
            let imgs: Vec<&crate::io::image::Image8> = ok.iter().map(|o| &o.2).collect();
            let scores = pipe.score_images(b, &imgs, y.as_deref(), a.seed)?;
            let secs = t0.elapsed().as_secs_f64() / n as f64;
            let mut out = Vec::new();
            for ((i, path, img, y), mut s) in ok.iter().zip(scores) {
                let category = y.and_then(|c| a.classes.get(c).cloned());
                // checked when the image was read: its class has a calibration
                let class_cal = calibrations.as_ref().and_then(|cs| cs.get(y).copied());
                let calibration = class_cal.map(|c| c.statistics);
                if let Some(c) = calibration {
                    s.reweight(Ensemble::Calibrated(a.alpha, c), a.topk);
                }
                let mut alpha = a.alpha;
                if let (Some(t), Some(cat)) = (&alpha_table, &category) {
                    if let Some(&al) = t.get(cat) {
                        alpha = al;
                        match (scorer.cfg.ensemble, calibration) {
                            (_, Some(c)) => s.reweight(Ensemble::Calibrated(al, c), a.topk),
                            (Ensemble::Weighted(_), None) => s.reweight(Ensemble::Weighted(al), a.topk),
                            _ => {}
                        }
                    }
                }
                // index, parent folder and name: MVTec-style trees repeat file names per folder
                let parent = path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let stem = format!("{:04}_{}_{}", i, parent, path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
                let p = |suffix: &str| a.out.join(format!("{stem}_{suffix}.png"));
                let (lo, hi) = save_map16(&p("map16"), &s.score_map, s.w, s.h)?;
                let (dlo, dhi) = range.resolve((lo, hi), class_cal.map(|c| c.normal_p999));
                save_heatmap(&p("heatmap"), &s.score_map, s.w, s.h, dlo, dhi)?;
                let outline = threshold.and_then(|t| t.resolve(class_cal.map(|c| c.normal_p999)));
                save_overlay(&p("overlay"), img, &s.score_map, dlo, dhi, outline)?;
                out.push(serde_json::json!({
                    "file": path.display().to_string(), "class": y, "category": category, "alpha": alpha, "image_score": s.image_score,
                    "map_min": lo, "map_max": hi, "display_range": [dlo, dhi], "threshold": outline, "normal_p999": class_cal.map(|c| c.normal_p999),
                    // above every normal calibration image of its class: worth a look
                    "above_normal": class_cal.map(|c| s.image_score > c.normal_image_max), "map16": p("map16").display().to_string(),
                    "heatmap": p("heatmap").display().to_string(), "overlay": p("overlay").display().to_string(), "seconds": secs,
                }));
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
        "model": a.model.display().to_string(), "model_flags": unet.flags.source, "effnet": a.effnet.as_ref().map(|p| p.display().to_string()),
        "effnet_arch": a.effnet_arch, "mode": if kl_only { "kl-only" } else { "kl+feature" }, "timesteps": a.timesteps, "respacing": a.respacing,
        "seed": a.seed, "ensemble": a.ensemble, "alpha": a.alpha, "topk": a.topk, "feature_timestep": a.feature_timestep,
        "threshold": a.threshold, "backend": b.name(), "image_size": size, "batch": a.batch,
        "alpha_table": a.alpha_table.as_ref().map(|p| p.display().to_string()),
        "calibrate": a.calibrate.as_ref().map(|p| p.display().to_string()), "range": a.range,
        "calibration": calibrations.as_ref().map(|cs| cs.iter().map(|(y, c)| (y.and_then(|y| a.classes.get(y).cloned()).unwrap_or_else(|| "all".into()), *c)).collect::<BTreeMap<_, _>>()),
        "map16_scale": "value = map_min + v16 / 65535 * (map_max - map_min)",
    });
    let failed_json: Vec<_> = failed.iter().map(|(p, e)| serde_json::json!({"file": p.display().to_string(), "error": e})).collect();
    let json = serde_json::json!({"settings": settings, "images": rows, "failed": failed_json});
    let jp = a.out.join("results.json");
    std::fs::write(&jp, serde_json::to_string_pretty(&json).unwrap_or_default()).map_err(|e| Error::Io { path: jp.clone(), source: e })?;
    let mut csv = String::from("file,class,image_score,map_min,map_max,seconds,above_normal\n");
    for r in &rows {
        csv.push_str(&format!(
            "\"{}\",{},{},{},{},{:.3},{}\n",
            r["file"].as_str().unwrap_or("").replace('"', "\"\""),
            r["class"].as_u64().map(|c| c.to_string()).unwrap_or_default(),
            r["image_score"],
            r["map_min"],
            r["map_max"],
            r["seconds"].as_f64().unwrap_or(0.0),
            r["above_normal"].as_bool().map(|b| b.to_string()).unwrap_or_default()
        ));
    }
    let cp = a.out.join("results.csv");
    std::fs::write(&cp, csv).map_err(|e| Error::Io { path: cp.clone(), source: e })?;
    write_report(&a.out, &rows, &failed)?;
    let above_normal = calibrations.as_ref().map(|_| rows.iter().filter(|r| r["above_normal"].as_bool() == Some(true)).count());
    Ok(Outcome { processed: rows.len(), failed, kl_only, above_normal })
}

/// report.html: the images from the highest score down, as a table and as overlays.
fn write_report(out: &Path, rows: &[serde_json::Value], failed: &[(PathBuf, String)]) -> Result<()> {
    use crate::eval::report::{write_html, GalleryItem, Table};
    let mut order: Vec<&serde_json::Value> = rows.iter().collect();
    let score = |r: &serde_json::Value| r["image_score"].as_f64().unwrap_or(f64::NAN);
    order.sort_by(|x, y| score(y).total_cmp(&score(x)));
    let name = |r: &serde_json::Value| r["file"].as_str().unwrap_or("").to_string();
    let above = |r: &serde_json::Value| match r["above_normal"].as_bool() {
        Some(true) => "yes".to_string(),
        Some(false) => "no".into(),
        None => "–".into(),
    };
    let table = Table {
        caption: "Images, highest score first (above normal: the score exceeds every normal calibration image of its class)".into(),
        header: vec!["file", "category", "image score", "above normal"],
        rows: order.iter().map(|r| vec![name(r), r["category"].as_str().unwrap_or("").to_string(), format!("{:.4}", score(r)), above(r)]).collect(),
    };
    let failed_table = Table {
        caption: "Not scored".into(),
        header: vec!["file", "error"],
        rows: failed.iter().map(|(p, e)| vec![p.display().to_string(), e.clone()]).collect(),
    };
    // overlays next to report.html: link them by file name
    let items: Vec<GalleryItem> = order
        .iter()
        .map(|r| {
            let overlay = Path::new(r["overlay"].as_str().unwrap_or("")).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let file = Path::new(&name(r)).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            GalleryItem { overlay, caption: format!("{file} ({}) {:.3}{}", r["category"].as_str().unwrap_or("–"), score(r), if above(r) == "yes" { " ▲" } else { "" }) }
        })
        .collect();
    write_html(&out.join("report.html"), "ran detect", &[table, failed_table], &[], &[("Overlays, highest score first".into(), items)])
}
