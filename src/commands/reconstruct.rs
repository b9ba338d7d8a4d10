//! `ran reconstruct`: the paper's gradient denoising (Algorithm 1) on images — the
//! reconstruction, a strip of intermediate frames (as the paper's Fig. 7), the per-pixel
//! difference |x0 − x̂| as a heatmap and 16-bit map, the PaDiM map before and after, and
//! reconstruct.json with the loss curve per image; report.html shows them all.

use crate::anomaly::classes::class_of;
use crate::anomaly::padim_file;
use crate::anomaly::reconstruct::{reconstruct, ReconstructConfig};
use crate::anomaly::render::{save_chw, save_heatmap, save_map16, save_strip};
use crate::backend::Backend;
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::error::AtPath;
use crate::eval::datasets::MVTEC_CLASSES;
use crate::eval::inputs::collect_inputs;
use crate::eval::reconstruct_results::{write_reconstruct_results, ReconstructRow};
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
    /// images per batch (Algorithm 1 runs on the batch at once; results do not depend on it)
    pub batch: usize,
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
    std::fs::create_dir_all(&a.out).at_path(&a.out)?;
    let total = (files.len() * a.cfg.iters) as u64;
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} iterations, {elapsed} (eta {eta}) {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let plane = s * s;
    let per = 3 * plane;
    let indexed: Vec<(usize, &PathBuf)> = files.iter().enumerate().collect();
    for chunk in indexed.chunks(a.batch.max(1)) {
        // decode; a bad file is skipped by name and the rest of the batch goes on
        let mut ok = Vec::new();
        for &(i, path) in chunk {
            let prep = (|| -> Result<(Vec<f32>, Option<usize>)> {
                let img = center_crop_arr(&load_rgb(path)?, s);
                let y = match unet.num_classes {
                    Some(_) => Some(class_of(path, a.class.as_deref(), &classes)?),
                    None => None,
                };
                Ok((to_chw(&img), y))
            })();
            match prep {
                Ok((x, y)) => ok.push((i, path, x, y)),
                Err(e) => {
                    pb.suspend(|| eprintln!("skipped {}: {e}", path.display()));
                    failed.push((path.clone(), e.to_string()));
                    pb.inc(a.cfg.iters as u64);
                }
            }
        }
        if ok.is_empty() {
            continue;
        }
        let n = ok.len();
        let res = (|| -> Result<Vec<ReconstructRow>> {
            let x0h: Vec<f32> = ok.iter().flat_map(|o| o.2.iter().copied()).collect();
            let y: Option<Vec<usize>> = unet.num_classes.map(|_| ok.iter().map(|o| o.3.unwrap_or(0)).collect());
            let x0 = b.from_host(&[n, 3, s, s], &x0h)?;
            let map0 = b.to_host(&padim.anomaly_map(b, &x0)?)?;
            let mut frames: Vec<(usize, Vec<f32>)> = vec![(0, x0h.clone())];
            let mut curves: Vec<Vec<f64>> = vec![Vec::new(); n];
            pb.set_message(ok.iter().map(|o| o.1.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()).collect::<Vec<_>>().join(", "));
            let xr = reconstruct(b, &padim, &unet, &diffusion, &x0, y.as_deref(), &a.cfg, |p| {
                for (c, &l) in curves.iter_mut().zip(p.loss) {
                    c.push(l);
                }
                if a.every > 0 && p.iter % a.every == 0 && p.iter < a.cfg.iters {
                    frames.push((p.iter, b.to_host(p.x)?));
                }
                pb.inc(n as u64);
                Ok(())
            })?;
            let xh = b.to_host(&xr)?;
            let map1 = b.to_host(&padim.anomaly_map(b, &xr)?)?;
            frames.push((a.cfg.iters, xh.clone()));
            let mut out = Vec::with_capacity(n);
            for (j, (i, path, x0j, yj)) in ok.iter().enumerate() {
                let img_of = |v: &[f32]| v[j * per..(j + 1) * per].to_vec();
                let (m0, m1) = (&map0[j * plane..(j + 1) * plane], &map1[j * plane..(j + 1) * plane]);
                let xj = img_of(&xh);
                let mut curve = curves[j].clone();
                curve.push(m1.iter().map(|&v| v as f64).sum::<f64>() / plane as f64);
                let diff: Vec<f32> = (0..plane).map(|p| (0..3).map(|c| (x0j[c * plane + p] - xj[c * plane + p]).abs()).sum::<f32>() / 3.0).collect();
                let parent = path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let stem = format!("{:04}_{}_{}", i, parent, path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
                let p = |suffix: &str| a.out.join(format!("{stem}_{suffix}.png"));
                save_chw(&p("input"), x0j, s, s)?;
                save_chw(&p("reconstruction"), &xj, s, s)?;
                let strip: Vec<Vec<f32>> = frames.iter().map(|(_, f)| img_of(f)).collect();
                save_strip(&p("frames"), &strip.iter().map(|f| f.as_slice()).collect::<Vec<_>>(), s, s)?;
                let (lo, hi) = save_map16(&p("diff16"), &diff, s, s)?;
                save_heatmap(&p("diff_heatmap"), &diff, s, s, 0.0, hi)?;
                // PaDiM maps before and after on one scale
                let (plo, phi) = m0.iter().chain(m1).fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                save_heatmap(&p("padim_before"), m0, s, s, plo, phi)?;
                save_heatmap(&p("padim_after"), m1, s, s, plo, phi)?;
                out.push(ReconstructRow {
                    file: path.display().to_string(),
                    class: *yj,
                    padim_loss: curve,
                    diff_min: lo,
                    diff_max: hi,
                    diff_mean: diff.iter().map(|&v| v as f64).sum::<f64>() / plane as f64,
                    frames_at: frames.iter().map(|(k, _)| *k).collect(),
                    reconstruction: p("reconstruction").display().to_string(),
                    frames: p("frames").display().to_string(),
                    diff_heatmap: p("diff_heatmap").display().to_string(),
                    diff16: p("diff16").display().to_string(),
                });
            }
            Ok(out)
        })();
        match res {
            Ok(v) => rows.extend(v),
            Err(e) => {
                for o in &ok {
                    pb.suspend(|| eprintln!("failed {}: {e}", o.1.display()));
                    failed.push((o.1.clone(), e.to_string()));
                }
            }
        }
    }
    pb.finish_and_clear();
    let c = &a.cfg;
    let header = serde_json::json!({
        "model": a.model.display().to_string(), "padim": a.padim.display().to_string(),
        "settings": {"iters": c.iters, "nd": c.nd, "lr": c.lr, "k": c.k, "denoise_noise": c.denoise_noise, "seed": c.seed, "every": a.every, "batch": a.batch, "backend": b.name(), "precision": b.precision().as_str()},
    });
    write_reconstruct_results(&a.out, header, &rows, &failed)?;
    Ok(Outcome { processed: rows.len(), failed })
}
