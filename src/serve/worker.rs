//! The model worker: one thread owns the backend and the model, takes the queued images in
//! batches (up to `max_batch`, or what arrived within `max_wait` of the first) and scores each
//! batch in one model pass; each image's answer goes back through its own channel.

use crate::anomaly::calibration_file::{file_id, model_id, CalibrationFile, ClassEntry};
use crate::anomaly::detector::Pipeline;
use crate::anomaly::render::{encode_png_rgb, heat, overlay_rgb, DisplayRange};
use crate::anomaly::score::Ensemble;
use crate::anomaly::settings::ScoreSettings;
use crate::anomaly::threshold::is_defective;
use crate::backend::Backend;
use crate::cli::options::Device;
use crate::commands::calibrate::{build, class_list};
use crate::eval::inputs::collect_inputs;
use crate::io::hash::sha256_file;
use crate::io::image::Image8;
use crate::serve::metrics::Metrics;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the handlers need to know of the loaded model and calibration.
pub struct ModelInfo {
    pub image_size: usize,
    /// Some for a class-conditional model
    pub num_classes: Option<usize>,
    pub classes: Vec<String>,
    pub model_id: String,
    pub calibration_id: String,
    pub calibration: BTreeMap<Option<usize>, ClassEntry>,
    pub backend: String,
    /// the operand precision of conv / linear (`--precision`, or the default)
    pub precision: crate::ops::precision::Precision,
}

/// Where the calibration comes from.
#[derive(Clone, Debug)]
pub enum CalibrationSource {
    /// a file made by `ran calibrate`
    File(PathBuf),
    /// normal images, calibrated at start (the demo)
    Normal(Vec<String>),
}

/// One image waiting for the model.
pub struct Job {
    /// preprocessed to the model's size
    pub img: Image8,
    pub class: Option<usize>,
    pub enqueued: Instant,
    /// past it nobody waits for the answer (the request timed out): not scored
    pub deadline: Instant,
    pub reply: tokio::sync::oneshot::Sender<std::result::Result<Scored, String>>,
}

/// An image's answer.
pub struct Scored {
    pub image_score: f32,
    pub map_min: f32,
    pub map_max: f32,
    pub display_range: (f32, f32),
    pub overlay_png: Vec<u8>,
    pub heatmap_png: Vec<u8>,
    pub queue_seconds: f64,
    pub model_seconds: f64,
    pub render_seconds: f64,
    pub batch_size: usize,
}

pub struct WorkerConfig {
    pub score: ScoreSettings,
    pub calibration: CalibrationSource,
    pub device: Device,
    /// `--precision` as given (None: the inference default)
    pub precision: Option<crate::ops::precision::Precision>,
    pub max_batch: usize,
    pub max_wait: Duration,
}

/// Starts the worker thread: it loads the model and calibration, answers `ready`, then serves
/// `jobs` until every sender is gone and the queue is empty.
pub fn spawn(cfg: WorkerConfig, jobs: Receiver<Job>, metrics: Arc<Metrics>, ready: tokio::sync::oneshot::Sender<Result<Arc<ModelInfo>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let backend = match cfg.device.backend_at(cfg.precision, crate::backend::select::PrecisionDefault::Fast) {
            Ok(b) => b,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        crate::with_backend!(backend, |b| {
            let loaded = load(b, &cfg);
            match loaded {
                Ok((pipe, info)) => {
                    let info = Arc::new(info);
                    if ready.send(Ok(info.clone())).is_ok() {
                        serve_batches(b, &pipe, &cfg, &info, &jobs, &metrics);
                    }
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        })
    })
}

fn load<B: Backend>(b: &B, cfg: &WorkerConfig) -> Result<(Pipeline<B>, ModelInfo)> {
    let s = &cfg.score;
    let classes = class_list(&s.model)?;
    let pipe = Pipeline::new(b, s)?;
    let model_sha = sha256_file(&s.model)?;
    let (file, calibration_id) = match &cfg.calibration {
        CalibrationSource::File(p) => {
            let (f, id) = CalibrationFile::read(p)?;
            f.check_matches(p, s, b.precision(), &model_sha, s.effnet.as_deref().map(sha256_file).transpose()?.as_deref())?;
            if let Some(e) = f.classes.values().find(|e| e.alpha != s.alpha) {
                return Err(Error::InvalidArgument(format!(
                    "{}: class {} was calibrated at α = {}, the service weighs {} (--alpha)",
                    p.display(),
                    e.name.as_deref().unwrap_or("all"),
                    e.alpha,
                    s.alpha
                )));
            }
            (f, id)
        }
        CalibrationSource::Normal(inputs) => {
            let normal = collect_inputs(inputs)?;
            let f = build(b, &pipe, s, &normal, None, None, &classes)?;
            let id = file_id(&f.encode(Path::new("calibration"))?);
            (f, id)
        }
    };
    let info = ModelInfo {
        image_size: pipe.unet.flags.image_size,
        num_classes: pipe.unet.num_classes,
        classes,
        model_id: model_id(&model_sha),
        calibration_id,
        calibration: file.classes,
        backend: b.name().to_string(),
        precision: b.precision(),
    };
    Ok((pipe, info))
}

/// The next batch: the first job (waiting as long as it takes), then what arrives within
/// `max_wait` of it, up to `max_batch`. None once the queue is closed and empty.
fn next_batch(jobs: &Receiver<Job>, max_batch: usize, max_wait: Duration) -> Option<Vec<Job>> {
    let first = jobs.recv().ok()?;
    let until = Instant::now() + max_wait;
    let mut batch = vec![first];
    while batch.len() < max_batch {
        let now = Instant::now();
        if now >= until {
            break;
        }
        match jobs.recv_timeout(until - now) {
            Ok(j) => batch.push(j),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

fn serve_batches<B: Backend>(b: &B, pipe: &Pipeline<B>, cfg: &WorkerConfig, info: &ModelInfo, jobs: &Receiver<Job>, metrics: &Metrics) {
    while let Some(mut batch) = next_batch(jobs, cfg.max_batch.max(1), cfg.max_wait) {
        metrics.queue_depth.fetch_sub(batch.len(), Ordering::Relaxed);
        // a request that timed out or hung up waits for nothing: not scored
        let now = Instant::now();
        batch.retain(|j| !j.reply.is_closed() && now < j.deadline);
        if batch.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        match score_batch(b, pipe, &cfg.score, info, &batch) {
            Ok(results) => {
                metrics.batch(batch.len(), t0.elapsed().as_secs_f64());
                for (job, mut r) in batch.into_iter().zip(results) {
                    r.queue_seconds = t0.duration_since(job.enqueued).as_secs_f64();
                    let _ = job.reply.send(Ok(r));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Scores the batch's images in one model pass, each recombined with its class's calibration
/// (as detect does), with its heatmap and overlay on the class's colour scale.
pub fn score_batch<B: Backend>(b: &B, pipe: &Pipeline<B>, s: &ScoreSettings, info: &ModelInfo, batch: &[Job]) -> Result<Vec<Scored>> {
    let t0 = Instant::now();
    let imgs: Vec<&Image8> = batch.iter().map(|j| &j.img).collect();
    let y: Option<Vec<usize>> = info.num_classes.map(|_| batch.iter().map(|j| j.class.unwrap_or(0)).collect());
    let scores = pipe.score_images(b, &imgs, y.as_deref(), s.seed)?;
    let model_seconds = t0.elapsed().as_secs_f64();
    let mut out = Vec::with_capacity(batch.len());
    for (job, mut sc) in batch.iter().zip(scores) {
        let t1 = Instant::now();
        let entry = info.calibration.get(&job.class).ok_or_else(|| Error::InvalidArgument("the image's class has no calibration".into()))?;
        sc.reweight(Ensemble::Calibrated(entry.alpha, entry.calibration.statistics), s.topk);
        let (lo, hi) = sc.score_map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let (dlo, dhi) = DisplayRange::Auto.resolve((lo, hi), Some(entry.calibration.normal_p999));
        let heatmap_png = encode_png_rgb(sc.w, sc.h, heat(&sc.score_map, dlo, dhi))?;
        let overlay_png = encode_png_rgb(sc.w, sc.h, overlay_rgb(&job.img, &sc.score_map, dlo, dhi, None))?;
        out.push(Scored {
            image_score: sc.image_score,
            map_min: lo,
            map_max: hi,
            display_range: (dlo, dhi),
            overlay_png,
            heatmap_png,
            queue_seconds: 0.0,
            model_seconds,
            render_seconds: t1.elapsed().as_secs_f64(),
            batch_size: batch.len(),
        });
    }
    Ok(out)
}

impl ModelInfo {
    /// The class of an upload: `explicit` (an index or a name), else the only calibrated class,
    /// else a class name in the upload's file name; None for a model without classes.
    pub fn class_for(&self, explicit: Option<&str>, name: &str) -> std::result::Result<Option<usize>, String> {
        if self.num_classes.is_none() {
            return Ok(None);
        }
        let known = || self.calibration.keys().filter_map(|y| y.and_then(|c| self.classes.get(c).cloned())).collect::<Vec<_>>().join(", ");
        let y = match explicit {
            Some(c) => match c.parse::<usize>() {
                Ok(i) => i,
                Err(_) => self.classes.iter().position(|n| n == c).ok_or_else(|| format!("unknown class `{c}` (calibrated: {})", known()))?,
            },
            None if self.calibration.len() == 1 => return Ok(*self.calibration.keys().next().expect("one")),
            None => self.classes.iter().position(|n| name.contains(n.as_str())).ok_or_else(|| format!("{name}: give the class (`class` field or ?class=; calibrated: {})", known()))?,
        };
        if !self.calibration.contains_key(&Some(y)) {
            return Err(format!("class `{}` has no calibration (calibrated: {})", self.classes.get(y).cloned().unwrap_or_else(|| y.to_string()), known()));
        }
        Ok(Some(y))
    }

    pub fn is_defective(&self, class: Option<usize>, score: f32) -> Option<(bool, f32)> {
        self.calibration.get(&class).map(|e| (is_defective(score, e.threshold), e.threshold))
    }
}
