//! `ran reconstruct`: the paper's gradient denoising (Algorithm 1) on images — the
//! reconstruction, a strip of intermediate frames (as the paper's Fig. 7), the per-pixel
//! difference |x0 − x̂| as a heatmap and 16-bit map, the PaDiM map before and after, and
//! reconstruct.json with the loss curve per image.

use crate::anomaly::padim_file;
use crate::anomaly::reconstruct::{reconstruct, ReconstructConfig};
use crate::anomaly::render::{save_chw, save_heatmap, save_map16, save_strip};
use crate::backend::Backend;
use crate::commands::detect::{class_of, collect_inputs, MVTEC_CLASSES};
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::io::image::{center_crop_arr, load_rgb, to_chw};
use crate::models::load_unet;
use crate::{Error, Result};
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct ReconstructArgs {
    pub inputs: Vec<String>,
    pub model: PathBuf,
    pub padim: PathBuf,
    pub out: PathBuf,
    pub cfg: ReconstructConfig,
    /// keep a frame every this many iterations (0: only the first and last)
    pub every: usize,
    pub respacing: String,
    pub class: Option<String>,
}

pub struct Outcome {
    pub processed: usize,
    pub failed: Vec<(PathBuf, String)>,
}

pub fn run<B: Backend>(b: &B, a: &ReconstructArgs) -> Result<Outcome> {
    let files = collect_inputs(&a.inputs)?;
    let unet = load_unet(&a.model, b, &[])?;
    let f = &unet.flags;
    let diffusion = Diffusion::new(BetaSchedule::parse(&f.noise_schedule)?, f.diffusion_steps, if f.timestep_respacing.is_empty() { &a.respacing } else { &f.timestep_respacing })?;
    a.cfg.check(&diffusion)?;
    // the fit's metadata first: a mismatch fails before gigabytes of statistics are read
    let info = padim_file::read_info(&crate::io::safetensors::SafeTensors::open(&a.padim)?)?;
    let s = f.image_size;
    if info.image_size != (s, s) {
        return Err(Error::InvalidArgument(format!(
            "{} was fitted on {}×{} images but {} works at {s}×{s}: refit with --image-size {s}",
            a.padim.display(),
            info.image_size.0,
            info.image_size.1,
            a.model.display()
        )));
    }
    let (padim, _) = padim_file::load(&a.padim, b)?;
    let classes: Vec<String> = crate::models::class_names(&a.model)?.unwrap_or_else(|| MVTEC_CLASSES.iter().map(|c| c.to_string()).collect());
    std::fs::create_dir_all(&a.out).map_err(|e| Error::Io { path: a.out.clone(), source: e })?;
    let total = (files.len() * a.cfg.iters) as u64;
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} iterations, {elapsed} (eta {eta}) {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let res = (|| -> Result<serde_json::Value> {
            let img = center_crop_arr(&load_rgb(path)?, s);
            let y = match unet.num_classes {
                Some(_) => Some(vec![class_of(path, a.class.as_deref(), &classes)?]),
                None => None,
            };
            let x0h = to_chw(&img);
            let x0 = b.from_host(&[1, 3, s, s], &x0h)?;
            let map0 = b.to_host(&padim.anomaly_map(b, &x0)?)?;
            let mut frames: Vec<(usize, Vec<f32>)> = vec![(0, x0h.clone())];
            let mut curve: Vec<f64> = Vec::new();
            pb.set_message(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let xr = reconstruct(b, &padim, &unet, &diffusion, &x0, y.as_deref(), &a.cfg, |p| {
                curve.push(p.loss[0]);
                if a.every > 0 && p.iter % a.every == 0 && p.iter < a.cfg.iters {
                    frames.push((p.iter, b.to_host(p.x)?));
                }
                pb.inc(1);
                Ok(())
            })?;
            let xh = b.to_host(&xr)?;
            let map1 = b.to_host(&padim.anomaly_map(b, &xr)?)?;
            let final_loss = map1.iter().map(|&v| v as f64).sum::<f64>() / map1.len() as f64;
            curve.push(final_loss);
            frames.push((a.cfg.iters, xh.clone()));
            let plane = s * s;
            let diff: Vec<f32> = (0..plane).map(|p| (0..3).map(|c| (x0h[c * plane + p] - xh[c * plane + p]).abs()).sum::<f32>() / 3.0).collect();
            let parent = path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let stem = format!("{:04}_{}_{}", i, parent, path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
            let p = |suffix: &str| a.out.join(format!("{stem}_{suffix}.png"));
            save_chw(&p("input"), &x0h, s, s)?;
            save_chw(&p("reconstruction"), &xh, s, s)?;
            save_strip(&p("frames"), &frames.iter().map(|(_, f)| f.as_slice()).collect::<Vec<_>>(), s, s)?;
            let (lo, hi) = save_map16(&p("diff16"), &diff, s, s)?;
            save_heatmap(&p("diff_heatmap"), &diff, s, s, 0.0, hi)?;
            // PaDiM maps before and after on one scale
            let (plo, phi) = map0.iter().chain(&map1).fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            save_heatmap(&p("padim_before"), &map0, s, s, plo, phi)?;
            save_heatmap(&p("padim_after"), &map1, s, s, plo, phi)?;
            Ok(serde_json::json!({
                "file": path.display().to_string(), "class": y.map(|v| v[0]),
                "padim_loss": curve, "diff_min": lo, "diff_max": hi, "diff_mean": diff.iter().map(|&v| v as f64).sum::<f64>() / plane as f64,
                "frames_at": frames.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
                "reconstruction": p("reconstruction").display().to_string(), "frames": p("frames").display().to_string(),
                "diff_heatmap": p("diff_heatmap").display().to_string(), "diff16": p("diff16").display().to_string(),
            }))
        })();
        match res {
            Ok(v) => rows.push(v),
            Err(e) => {
                pb.suspend(|| eprintln!("skipped {}: {e}", path.display()));
                failed.push((path.clone(), e.to_string()));
                pb.set_position(((i + 1) * a.cfg.iters) as u64);
            }
        }
    }
    pb.finish_and_clear();
    let c = &a.cfg;
    let summary = serde_json::json!({
        "model": a.model.display().to_string(), "padim": a.padim.display().to_string(),
        "settings": {"iters": c.iters, "nd": c.nd, "lr": c.lr, "k": c.k, "denoise_noise": c.denoise_noise, "seed": c.seed, "every": a.every},
        "images": rows, "failed": failed.iter().map(|(p, e)| serde_json::json!({"file": p.display().to_string(), "error": e})).collect::<Vec<_>>(),
    });
    let jp = a.out.join("reconstruct.json");
    std::fs::write(&jp, serde_json::to_string_pretty(&summary).unwrap_or_default()).map_err(|e| Error::Io { path: jp, source: e })?;
    Ok(Outcome { processed: rows.len(), failed })
}
