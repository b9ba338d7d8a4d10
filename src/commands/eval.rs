//! `ran eval`: scores every test image of MVTec-AD / BTAD categories and reports pixel AUROC,
//! AU-PRO (FPR ≤ 0.3) and image AUROC per category at the model's resolution (spec §3, §9).
//! Maps are cached per image (`<out>/cache/<category>/<image>.f32`), so an interrupted run
//! resumes; `--shard i/n` scores every n-th image only, and `--merge` computes the metrics from
//! the cached maps of all shards.

use super::detect::{DetectArgs, Pipeline, MVTEC_CLASSES};
use crate::backend::Backend;
use crate::anomaly::score::{combine, topk_mean, Calibration, Ensemble};
use crate::eval::datasets::{categories, test_set, train_images, Layout, BTAD_CLASSES};
use crate::eval::metrics::{au_pro, auroc};
use crate::eval::report;
use crate::io::image::{center_crop_arr, load_gray, load_rgb};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct EvalArgs {
    pub data: PathBuf,
    pub categories: Vec<String>,
    pub shard: Option<(usize, usize)>,
    pub merge: bool,
    /// "mvtec" (the MVTec AD official AU-PRO) or "official-repo" (the anomaly_diff repository's)
    pub pro_variant: String,
    /// α values at which to rescore the ensemble from the cached maps (empty: none)
    pub alpha_sweep: Vec<f32>,
    pub detect: DetectArgs,
}

/// The ensemble at one α of a sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AlphaPoint {
    pub alpha: f32,
    pub pixel_auroc: f64,
    pub image_auroc: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ModeMetrics {
    pub pixel_auroc: f64,
    pub pro: f64,
    pub image_auroc: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CategoryMetrics {
    pub category: String,
    pub images: usize,
    /// the KL map alone and the feature map alone, when the feature score ran
    pub kl_only: Option<ModeMetrics>,
    pub feature_only: Option<ModeMetrics>,
    pub pixel_auroc: f64,
    pub pro: f64,
    pub image_auroc: f64,
    /// the map statistics of `--ensemble calibrated`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// with it, the 99.9th percentile of the ensemble on those normal images (top of the colour scale)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normal_p999: Option<f32>,
    /// each defect kind against the normal test images: where the method works and where not
    pub defects: Vec<DefectMetrics>,
    /// `--alpha-sweep`: the ensemble (weighted, or calibrated when that is the ensemble) at each α
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alpha_sweep: Vec<AlphaPoint>,
}

/// The ensemble's pixel and image AUROC at each α, recombined from the KL and feature maps of
/// `n` images (weighted, or calibrated with `calibration`).
fn sweep_alpha(alphas: &[f32], kl: &[f32], feat: &[f32], calibration: Option<Calibration>, labels: &[bool], img_labels: &[bool], topk: usize) -> Result<Vec<AlphaPoint>> {
    let n = img_labels.len();
    let px = kl.len() / n.max(1);
    if px == 0 || kl.len() != n * px || feat.len() != kl.len() {
        return Err(Error::InvalidArgument(format!("--alpha-sweep: {} KL and {} feature values for {n} images", kl.len(), feat.len())));
    }
    let mut out = Vec::new();
    for &alpha in alphas {
        let e = match calibration {
            Some(c) => Ensemble::Calibrated(alpha, c),
            None => Ensemble::Weighted(alpha),
        };
        let map = combine(e, feat, kl);
        let scores: Vec<f32> = map.chunks(px).map(|m| topk_mean(m, topk)).collect();
        out.push(AlphaPoint { alpha, pixel_auroc: auroc(&map, labels)?, image_auroc: auroc(&scores, img_labels)? });
    }
    Ok(out)
}

/// One defect kind's images together with all normal test images of its category.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DefectMetrics {
    pub defect: String,
    pub images: usize,
    pub ensemble: ModeMetrics,
    pub kl_only: Option<ModeMetrics>,
    pub feature_only: Option<ModeMetrics>,
}

/// The metrics of every defect kind: the images of that kind plus the normal ones (`good`/`ok`).
/// A kind without normal images to compare with, or without a single defective pixel, is left out.
fn per_defect(samples: &[crate::eval::datasets::Sample], maps: [&[f32]; 3], masks: &[u8], img_labels: &[bool], size: usize, topk: usize) -> Vec<DefectMetrics> {
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

fn cache_path(out: &Path, category: &str, image: &Path, root: &Path) -> PathBuf {
    let rel = image.strip_prefix(root).unwrap_or(image).to_string_lossy().replace(['/', '\\'], "__");
    out.join("cache").join(category).join(format!("{rel}.f32"))
}

/// What the cached maps of a category depend on: the model file (path, size, modification time),
/// the extractor and the scoring settings of the KL and feature maps. Kept as `cache/<category>/settings.json`.
fn cache_settings(a: &DetectArgs, model: &Path) -> serde_json::Value {
    let file = |p: &Path| {
        let m = std::fs::metadata(p).ok();
        let mtime = m.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        serde_json::json!({"path": std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string(), "bytes": m.map(|m| m.len()), "modified": mtime})
    };
    serde_json::json!({
        "model": file(model), "effnet": a.effnet.as_deref().map(file), "effnet_arch": a.effnet_arch, "effnet_image_size": a.effnet_image_size,
        "kl_only": a.kl_only, "timesteps": a.timesteps, "respacing": a.respacing, "seed": a.seed, "feature_timestep": a.feature_timestep,
        // not the ensemble, α or top-k: the metrics remake those from the cached KL and feature maps
    })
}

/// Refuses a cache made with other settings (its maps would silently answer for another run);
/// records the settings of a new one.
fn check_cache_settings(out: &Path, category: &str, settings: &serde_json::Value) -> Result<()> {
    let dir = out.join("cache").join(category);
    let p = dir.join("settings.json");
    match std::fs::read_to_string(&p) {
        Ok(old) => {
            let old: serde_json::Value = serde_json::from_str(&old).map_err(|e| Error::BadFile { path: p.clone(), msg: format!("not JSON ({e}): delete the cache") })?;
            if &old == settings {
                return Ok(());
            }
            let keys = settings.as_object().map(|o| o.keys().filter(|k| old.get(k.as_str()) != settings.get(k.as_str())).cloned().collect::<Vec<_>>()).unwrap_or_default();
            Err(Error::BadFile {
                path: p,
                msg: format!("the cached maps were made with other settings (different: {}): give another --out or delete {}", keys.join(", "), dir.display()),
            })
        }
        Err(_) => {
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io { path: dir.clone(), source: e })?;
            std::fs::write(&p, serde_json::to_string_pretty(settings).unwrap_or_default()).map_err(|e| Error::Io { path: p.clone(), source: e })
        }
    }
}

/// Cache file: [number of maps, image score, score map, (KL map, feature map)] as little-endian f32.
fn write_maps(p: &Path, score: f32, maps: &[&[f32]]) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::Io { path: d.to_path_buf(), source: e })?;
    }
    let mut v = vec![maps.len() as f32, score];
    for m in maps {
        v.extend_from_slice(m);
    }
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, bytemuck::cast_slice::<f32, u8>(&v)).map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, p).map_err(|e| Error::Io { path: p.to_path_buf(), source: e })
}

/// (image score, maps) of a cached image, None when not cached yet.
fn read_maps(p: &Path, px: usize) -> Result<Option<(f32, Vec<Vec<f32>>)>> {
    let bad = || Error::BadFile { path: p.to_path_buf(), msg: "cached maps do not fit (another model or resolution?): delete the cache".into() };
    match std::fs::read(p) {
        Err(_) => Ok(None),
        Ok(b) => {
            let v: Vec<f32> = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let k = *v.first().ok_or_else(bad)? as usize;
            if b.len() % 4 != 0 || k == 0 || k > 3 || v.len() != 2 + k * px {
                return Err(bad());
            }
            Ok(Some((v[1], (0..k).map(|i| v[2 + i * px..2 + (i + 1) * px].to_vec()).collect())))
        }
    }
}

fn mode_metrics(maps: &[f32], masks: &[u8], labels: &[bool], img_labels: &[bool], n: usize, size: usize, topk: usize) -> Result<ModeMetrics> {
    let px = size * size;
    let scores: Vec<f32> = (0..n).map(|i| crate::anomaly::score::topk_mean(&maps[i * px..(i + 1) * px], topk)).collect();
    Ok(ModeMetrics { pixel_auroc: auroc(maps, labels)?, pro: au_pro(maps, masks, n, size, size, 0.3)?.au_pro, image_auroc: auroc(&scores, img_labels)? })
}

pub fn run<B: Backend>(b: &B, a: &EvalArgs) -> Result<Vec<CategoryMetrics>> {
    if !["mvtec", "official-repo"].contains(&a.pro_variant.as_str()) {
        return Err(Error::InvalidArgument(format!("--pro-variant {}: mvtec or official-repo", a.pro_variant)));
    }
    if let Some(bad) = a.alpha_sweep.iter().find(|x| !(0.0..=1.0).contains(*x)) {
        return Err(Error::InvalidArgument(format!("--alpha-sweep {bad}: α must lie in [0, 1]")));
    }
    if !a.alpha_sweep.is_empty() && a.detect.kl_only {
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
    let per_category = a.detect.model.is_dir();
    let model_for = |cat: &str| -> Result<PathBuf> {
        if !per_category {
            return Ok(a.detect.model.clone());
        }
        let p = a.detect.model.join(format!("{cat}.safetensors"));
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::InvalidArgument(format!("no model for category `{cat}`: expected {}", p.display())))
        }
    };
    let mut results = Vec::new();
    let (mut pictures, mut galleries) = (Vec::new(), Vec::new());
    let mut pipe: Option<Pipeline<B>> = None;
    for cat in &cats {
        let model = model_for(cat)?;
        if !a.merge && (per_category || pipe.is_none()) {
            pipe = Some(Pipeline::new(b, &DetectArgs { model: model.clone(), ..a.detect.clone() })?);
        }
        let size = match &pipe {
            Some(p) => p.unet.flags.image_size,
            None => crate::io::flags::ModelFlags::parse(crate::io::safetensors::SafeTensors::open(&model)?.metadata().get("model_flags").map(|s| s.as_str()).unwrap_or(""))?.image_size,
        };
        let model_names = crate::models::class_names(&model)?;
        let names: Vec<&str> = match &model_names {
            Some(n) => n.iter().map(|s| s.as_str()).collect(),
            None if layout == Layout::Btad => BTAD_CLASSES.to_vec(),
            None => MVTEC_CLASSES.to_vec(),
        };
        let samples = test_set(&a.data, cat, layout)?;
        check_cache_settings(&a.detect.out, cat, &cache_settings(&a.detect, &model))?;
        let label = names.iter().position(|n| n == cat);
        let px = size * size;
        let bar = indicatif::ProgressBar::new(samples.len() as u64);
        bar.set_style(indicatif::ProgressStyle::with_template(&format!("{cat:<12} {{bar:30}} {{pos}}/{{len}} ({{eta}}) {{msg}}")).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        // scores an image into the cache unless it is there already
        let ensure_cached = |image: &Path| -> Result<()> {
            let cp = cache_path(&a.detect.out, cat, image, &a.data);
            if read_maps(&cp, px)?.is_some() {
                return Ok(());
            }
            let Some(p) = &pipe else { return Ok(()) };
            let img = center_crop_arr(&load_rgb(image)?, size);
            let y = match (p.unet.num_classes, label) {
                (Some(_), Some(l)) => Some(vec![l]),
                (Some(_), None) => return Err(Error::InvalidArgument(format!("the model is class-conditional and `{cat}` is not a known category name"))),
                (None, _) => None,
            };
            let sc = p.score_images(b, &[&img], y.as_deref(), a.detect.seed)?.remove(0);
            match &sc.feat_map {
                Some(f) => write_maps(&cp, sc.image_score, &[&sc.score_map, &sc.kl_map, f]),
                None => write_maps(&cp, sc.image_score, &[&sc.score_map]),
            }
        };
        for (i, s) in samples.iter().enumerate() {
            bar.inc(1);
            if a.shard.is_some_and(|(k, n)| i % n != k) {
                continue;
            }
            ensure_cached(&s.image)?;
        }
        // the calibrated ensemble: map statistics of the first training images (shard 0 scores them)
        let calibrated = a.detect.ensemble == "calibrated";
        let train = if calibrated { train_images(&a.data, cat, layout, a.detect.calibration_images)? } else { Vec::new() };
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
        let calibration = if calibrated {
            let mut cal = Vec::new();
            for t in &train {
                let cp = cache_path(&a.detect.out, cat, t, &a.data);
                let (_, maps) = read_maps(&cp, px)?.ok_or_else(|| Error::BadFile { path: cp.clone(), msg: format!("no cached map for the calibration image {}", t.display()) })?;
                if maps.len() != 3 {
                    return Err(Error::BadFile { path: cp, msg: "cached without the feature map: --ensemble calibrated needs the feature score (delete the cache)".into() });
                }
                cal.push((maps[1].clone(), maps[2].clone()));
            }
            let refs: Vec<(&[f32], &[f32])> = cal.iter().map(|(k, f)| (k.as_slice(), f.as_slice())).collect();
            let c = Calibration::from_maps(&refs).map_err(|e| Error::InvalidArgument(format!("{cat}: {e}")))?;
            Some((c, c.normal_quantile(a.detect.alpha, &refs, crate::anomaly::render::NORMAL_QUANTILE)))
        } else {
            None
        };
        let (calibration, normal_p999) = (calibration.map(|c| c.0), calibration.map(|c| c.1));
        let (mut scores, mut masks, mut img_scores, mut img_labels) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut kl_maps, mut feat_maps) = (Vec::new(), Vec::new());
        for s in &samples {
            let cp = cache_path(&a.detect.out, cat, &s.image, &a.data);
            let (_, mut maps) = read_maps(&cp, px)?.ok_or_else(|| Error::BadFile { path: cp.clone(), msg: format!("no cached map for {} (a shard has not run yet?)", s.image.display()) })?;
            if calibration.is_some() && maps.len() != 3 {
                return Err(Error::BadFile { path: cp, msg: "cached without the feature map: --ensemble calibrated needs the feature score (delete the cache)".into() });
            }
            // the ensemble and the image score are remade from the cached KL and feature maps (the
            // same f32 arithmetic as the scorer's), so --alpha, --ensemble and --topk reuse the cache
            if maps.len() == 3 {
                let e = match (calibration, a.detect.ensemble.as_str()) {
                    (Some(c), _) => Ensemble::Calibrated(a.detect.alpha, c),
                    (None, "sum") => Ensemble::Sum,
                    (None, _) => Ensemble::Weighted(a.detect.alpha),
                };
                maps[0] = combine(e, &maps[2], &maps[1]);
            }
            let is = topk_mean(&maps[0], a.detect.topk);
            if maps.len() == 3 {
                feat_maps.extend(maps.pop().unwrap_or_default());
                kl_maps.extend(maps.pop().unwrap_or_default());
            }
            let map = maps.remove(0);
            let m: Vec<u8> = match &s.mask {
                Some(mp) => center_crop_arr(&load_gray(mp)?, size).data.iter().map(|&v| (v == 255) as u8).collect(),
                None => vec![0; px],
            };
            img_labels.push(s.mask.is_some());
            img_scores.push(is);
            scores.extend(map);
            masks.extend(m);
        }
        let n = samples.len();
        let labels: Vec<bool> = masks.iter().map(|&m| m != 0).collect();
        let pa = auroc(&scores, &labels).map_err(|e| Error::InvalidArgument(format!("{cat}: pixel AUROC: {e}")))?;
        let pro_curve = au_pro(&scores, &masks, n, size, size, 0.3).map_err(|e| Error::InvalidArgument(format!("{cat}: AU-PRO: {e}")))?;
        let ia = auroc(&img_scores, &img_labels).map_err(|e| Error::InvalidArgument(format!("{cat}: image AUROC: {e}")))?;
        // pictures: ROC (pixel, image) and PRO curves; overlays of the best and worst images
        let dir = a.detect.out.join(cat);
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io { path: dir.clone(), source: e })?;
        let (rx, ry) = report::roc_curve(&scores, &labels);
        let (ix, iy) = report::roc_curve(&img_scores, &img_labels);
        report::plot(&dir.join("roc.png"), 1.0, &[([200, 30, 30], &rx, &ry), ([30, 30, 200], &ix, &iy)])?;
        report::plot(&dir.join("pro.png"), 0.3, &[([30, 140, 30], &pro_curve.fpr, &pro_curve.pro)])?;
        let mut order: Vec<usize> = (0..n).collect();
        // "worst": anomalous images scored lowest and normal ones scored highest, and the reverse
        order.sort_by(|&x, &y| {
            let m = |i: usize| if img_labels[i] { -img_scores[i] } else { img_scores[i] };
            m(y).total_cmp(&m(x))
        });
        let mut gallery = Vec::new();
        for (title, picks) in [("worst", order.iter().take(6).copied().collect::<Vec<_>>()), ("best", order.iter().rev().take(6).copied().collect())] {
            let mut items = Vec::new();
            for i in picks {
                let s = &samples[i];
                let map = &scores[i * px..(i + 1) * px];
                let img = center_crop_arr(&load_rgb(&s.image)?, size);
                let own = map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                // the calibrated ensemble: one colour scale for all, red beyond 99.9% of the normal pixels
                let (lo, hi) = crate::anomaly::render::DisplayRange::Auto.resolve(own, normal_p999);
                let name = format!("{title}_{i:04}.png");
                crate::anomaly::render::save_overlay(&dir.join(&name), &img, map, lo, hi, None)?;
                items.push(report::GalleryItem { overlay: format!("{cat}/{name}"), caption: format!("{} ({}) score {:.3}", s.image.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(), s.defect, img_scores[i]) });
            }
            gallery.push((format!("{cat}: {title} images"), items));
        }
        galleries.extend(gallery);
        pictures.push((format!("{cat}: ROC (red pixels, blue images)"), format!("{cat}/roc.png")));
        pictures.push((format!("{cat}: PRO to FPR 0.3"), format!("{cat}/pro.png")));
        let pro = if a.pro_variant == "official-repo" {
            crate::eval::metrics::pro_official_repo(&scores, &masks, n, size, size, 0.3).map_err(|e| Error::InvalidArgument(format!("{cat}: PRO: {e}")))?
        } else {
            pro_curve.au_pro
        };
        let split = kl_maps.len() == scores.len();
        let mode = |m: &[f32]| mode_metrics(m, &masks, &labels, &img_labels, n, size, a.detect.topk).map_err(|e| Error::InvalidArgument(format!("{cat}: {e}")));
        let (kl_only, feature_only) = if split { (Some(mode(&kl_maps)?), Some(mode(&feat_maps)?)) } else { (None, None) };
        let alpha_sweep = if split && !a.alpha_sweep.is_empty() {
            sweep_alpha(&a.alpha_sweep, &kl_maps, &feat_maps, calibration, &labels, &img_labels, a.detect.topk).map_err(|e| Error::InvalidArgument(format!("{cat}: {e}")))?
        } else {
            Vec::new()
        };
        let defects = per_defect(&samples, [&scores, if split { &kl_maps } else { &[] }, if split { &feat_maps } else { &[] }], &masks, &img_labels, size, a.detect.topk);
        results.push(CategoryMetrics { category: cat.clone(), images: n, kl_only, feature_only, pixel_auroc: pa, pro, image_auroc: ia, calibration, normal_p999, defects, alpha_sweep });
    }
    if !a.alpha_sweep.is_empty() && !results.is_empty() {
        if results.iter().any(|m| m.alpha_sweep.is_empty()) {
            return Err(Error::InvalidArgument("--alpha-sweep recombines the KL and feature maps: it needs the feature score (a model with a feature head and --effnet)".into()));
        }
        write_alpha_table(&a.detect.out, &results)?;
    }
    if !results.is_empty() {
        write_tables(&a.detect.out, &results, &a.pro_variant)?;
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|m| vec![m.category.clone(), m.images.to_string(), format!("{:.4}", m.pixel_auroc), format!("{:.4}", m.pro), format!("{:.4}", m.image_auroc)])
            .collect();
        let f = |m: &Option<ModeMetrics>| m.as_ref().map(|m| format!("{:.4}", m.pixel_auroc)).unwrap_or_else(|| "–".into());
        let defect_rows: Vec<Vec<String>> = results
            .iter()
            .flat_map(|m| {
                m.defects.iter().map(|d| {
                    let e = &d.ensemble;
                    vec![format!("{} / {}", m.category, d.defect), d.images.to_string(), format!("{:.4}", e.pixel_auroc), f(&d.kl_only), f(&d.feature_only), format!("{:.4}", e.pro), format!("{:.4}", e.image_auroc)]
                })
            })
            .collect();
        // the α sweep: pixel AUROC per category at each α (empty without --alpha-sweep)
        let alpha_header: Vec<String> = std::iter::once("category".to_string()).chain(a.alpha_sweep.iter().map(|x| format!("α = {x}"))).collect();
        let alpha_rows: Vec<Vec<String>> = results
            .iter()
            .filter(|m| !m.alpha_sweep.is_empty())
            .map(|m| std::iter::once(m.category.clone()).chain(m.alpha_sweep.iter().map(|p| format!("{:.4}", p.pixel_auroc))).collect())
            .collect();
        let tables = [
            report::Table { caption: String::new(), header: vec!["category", "images", "pixel AUROC", "PRO (0.3)", "image AUROC"], rows },
            report::Table {
                caption: "Per defect kind (its images and the category's normal ones)".into(),
                header: vec!["category / defect", "images", "pixel AUROC", "KL only", "feature only", "PRO (0.3)", "image AUROC"],
                rows: defect_rows,
            },
            report::Table {
                caption: "Pixel AUROC of the ensemble at each α (--alpha-sweep; chosen on the test set: an upper bound)".into(),
                header: alpha_header.iter().map(|s| s.as_str()).collect(),
                rows: alpha_rows,
            },
        ];
        report::write_html(&a.detect.out.join("report.html"), "ran eval", &tables, &pictures, &galleries)?;
    }
    Ok(results)
}

/// The best α of each category's sweep (the first of equals), as alpha_table.json for
/// `detect --alpha-table`.
pub fn best_alpha(m: &CategoryMetrics) -> Option<&AlphaPoint> {
    m.alpha_sweep.iter().fold(None, |best: Option<&AlphaPoint>, p| match best {
        Some(b) if b.pixel_auroc >= p.pixel_auroc => Some(b),
        _ => Some(p),
    })
}

fn write_alpha_table(out: &Path, r: &[CategoryMetrics]) -> Result<()> {
    let table: std::collections::BTreeMap<&str, f32> = r.iter().filter_map(|m| best_alpha(m).map(|p| (m.category.as_str(), p.alpha))).collect();
    std::fs::create_dir_all(out).map_err(|e| Error::Io { path: out.to_path_buf(), source: e })?;
    let p = out.join("alpha_table.json");
    std::fs::write(&p, serde_json::to_string_pretty(&table).unwrap_or_default()).map_err(|e| Error::Io { path: p.clone(), source: e })
}

/// The printed summary: per category the ensemble's row with each score alone under it, the
/// means, and the pixel AUROC of every defect kind (where the method works and where not).
pub fn summary(r: &[CategoryMetrics]) -> String {
    use std::fmt::Write;
    // (pixel AUROC, PRO, image AUROC)
    type Row = (f64, f64, f64);
    let mut o = String::new();
    let row = |o: &mut String, label: &str, images: String, m: Row| {
        let _ = writeln!(o, "{label:<18} {images:>7} {:>12.4} {:>9.4} {:>12.4}", m.0, m.1, m.2);
    };
    let _ = writeln!(o, "{:<18} {:>7} {:>12} {:>9} {:>12}", "category", "images", "pixel AUROC", "PRO", "image AUROC");
    for m in r {
        row(&mut o, &m.category, m.images.to_string(), (m.pixel_auroc, m.pro, m.image_auroc));
        for (label, x) in [("  KL only", &m.kl_only), ("  feature only", &m.feature_only)] {
            if let Some(x) = x {
                row(&mut o, label, String::new(), (x.pixel_auroc, x.pro, x.image_auroc));
            }
        }
    }
    let n = r.len() as f64;
    let mean = |f: &dyn Fn(&CategoryMetrics) -> Option<Row>| -> Option<Row> {
        let v: Option<Vec<_>> = r.iter().map(f).collect();
        v.map(|v| v.iter().fold((0.0, 0.0, 0.0), |a, x| (a.0 + x.0 / n, a.1 + x.1 / n, a.2 + x.2 / n)))
    };
    let triple = |m: &ModeMetrics| (m.pixel_auroc, m.pro, m.image_auroc);
    for (label, m) in [
        ("mean", mean(&|m| Some((m.pixel_auroc, m.pro, m.image_auroc)))),
        ("mean, KL only", mean(&|m| m.kl_only.as_ref().map(triple))),
        ("mean, feature only", mean(&|m| m.feature_only.as_ref().map(triple))),
    ] {
        if let Some(m) = m {
            row(&mut o, label, String::new(), m);
        }
    }
    if r.iter().all(|m| !m.alpha_sweep.is_empty()) {
        // α means something else in each ensemble: say which one the table is for
        let which = if r.iter().all(|m| m.calibration.is_some()) { "calibrated" } else { "weighted" };
        let _ = writeln!(o, "best α per category for --ensemble {which} (chosen on the test set: an upper bound; alpha_table.json):");
        for m in r {
            if let Some(b) = best_alpha(m) {
                let _ = writeln!(o, "  {:<12} α = {:<4} pixel AUROC {:.4} (image AUROC {:.4})", m.category, b.alpha, b.pixel_auroc, b.image_auroc);
            }
        }
        let best: f64 = r.iter().filter_map(best_alpha).map(|b| b.pixel_auroc).sum::<f64>() / n;
        let _ = writeln!(o, "  {:<12} pixel AUROC {best:.4}", "mean");
    }
    let _ = writeln!(o, "pixel AUROC per defect kind (ensemble / KL only / feature only):");
    let f = |x: &Option<ModeMetrics>| x.as_ref().map(|x| format!("{:.2}", x.pixel_auroc)).unwrap_or_else(|| "–".into());
    for m in r {
        let kinds: Vec<String> = m.defects.iter().map(|d| format!("{} {:.2}/{}/{}", d.defect, d.ensemble.pixel_auroc, f(&d.kl_only), f(&d.feature_only))).collect();
        let _ = writeln!(o, "  {:<12} {}", m.category, kinds.join("  "));
    }
    o
}

fn write_tables(out: &Path, r: &[CategoryMetrics], pro_variant: &str) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::Io { path: out.to_path_buf(), source: e })?;
    let mean = |f: &dyn Fn(&CategoryMetrics) -> f64| r.iter().map(f).sum::<f64>() / r.len() as f64;
    let mut means = serde_json::json!({"pixel_auroc": mean(&|m| m.pixel_auroc), "pro": mean(&|m| m.pro), "image_auroc": mean(&|m| m.image_auroc)});
    if r.iter().all(|m| m.kl_only.is_some()) {
        let mm = |f: &dyn Fn(&CategoryMetrics) -> &ModeMetrics| serde_json::json!({
            "pixel_auroc": mean(&|m| f(m).pixel_auroc), "pro": mean(&|m| f(m).pro), "image_auroc": mean(&|m| f(m).image_auroc)});
        means["kl_only"] = mm(&|m| m.kl_only.as_ref().expect("checked"));
        means["feature_only"] = mm(&|m| m.feature_only.as_ref().expect("checked"));
    }
    let json = serde_json::json!({
        "categories": r,
        "mean": means,
        "pro_definition": if pro_variant == "official-repo" {
            "anomaly_diff repository: sklearn roc_curve thresholds with FPR <= 0.3 (about 1000), mean region coverage, trapezoids from (0,0), rectangle tail to 0.3, / 0.3"
        } else {
            "MVTec AD official: 8-connected regions, FPR over anomaly-free pixels, integrated to 0.3, / 0.3"
        },
    });
    let p = out.join("metrics.json");
    std::fs::write(&p, serde_json::to_string_pretty(&json).unwrap_or_default()).map_err(|e| Error::Io { path: p.clone(), source: e })?;
    // the KL-only and feature-only columns stay empty when only the KL score ran
    let opt = |m: &Option<ModeMetrics>| m.as_ref().map(|m| format!("{:.6},{:.6},{:.6}", m.pixel_auroc, m.pro, m.image_auroc)).unwrap_or_else(|| ",,".into());
    let mut csv = String::from("category,images,pixel_auroc,pro,image_auroc,kl_pixel_auroc,kl_pro,kl_image_auroc,feature_pixel_auroc,feature_pro,feature_image_auroc\n");
    for m in r {
        csv.push_str(&format!("{},{},{:.6},{:.6},{:.6},{},{}\n", m.category, m.images, m.pixel_auroc, m.pro, m.image_auroc, opt(&m.kl_only), opt(&m.feature_only)));
    }
    let p = out.join("metrics.csv");
    std::fs::write(&p, csv).map_err(|e| Error::Io { path: p.clone(), source: e })?;
    let mut csv = String::from("category,defect,images,pixel_auroc,pro,image_auroc,kl_pixel_auroc,kl_pro,kl_image_auroc,feature_pixel_auroc,feature_pro,feature_image_auroc\n");
    for m in r {
        for d in &m.defects {
            let e = &d.ensemble;
            csv.push_str(&format!("{},{},{},{:.6},{:.6},{:.6},{},{}\n", m.category, d.defect, d.images, e.pixel_auroc, e.pro, e.image_auroc, opt(&d.kl_only), opt(&d.feature_only)));
        }
    }
    let p = out.join("defects.csv");
    std::fs::write(&p, csv).map_err(|e| Error::Io { path: p.clone(), source: e })
}
