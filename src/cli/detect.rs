//! `ran detect` on the command line (and its demo).

use super::options::{parse_range, parse_threshold};
use super::score_opts::ScoreOpts;
use crate::anomaly::render::{DisplayRange, Threshold};
use crate::anomaly::settings::EnsembleKind;
use crate::backend::select::PrecisionDefault;
use crate::commands::detect::{DetectArgs, Outcome};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DetectCmd {
    /// Images, folders (searched recursively) or glob patterns.
    inputs: Vec<String>,
    /// Run on the shipped demo model and sample images.
    #[arg(long)]
    demo: bool,
    #[command(flatten)]
    score: ScoreOpts,
    /// [default: ran-out; the demo: ran-demo]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Class of a class-conditional model: index or name (default: a class name in the path).
    #[arg(long)]
    class: Option<String>,
    /// Outline on the overlay the pixels whose score exceeds this; `normal` (with the
    /// calibrated ensemble): the 99.9th percentile of the class's normal calibration pixels.
    #[arg(long, allow_hyphen_values = true, value_parser = parse_threshold)]
    threshold: Option<Threshold>,
    /// Colour scale of heatmaps and overlays: auto ([0, 99.9th percentile of the normal
    /// scores] with the calibrated ensemble, else each image's own range), image (each
    /// image's min..max), or LO,HI.
    #[arg(long, default_value = "auto", allow_hyphen_values = true, value_parser = parse_range)]
    range: DisplayRange,
    /// Per-category α: JSON {"bottle": 0.3, ...} or lines `category,alpha`.
    #[arg(long)]
    alpha_table: Option<PathBuf>,
    /// Images per UNet batch (memory permitting).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Normal images of the product (a folder or a pattern such as 'train/*/good/*.png') for
    /// `--ensemble calibrated`: --calibration-images of each class [demo: its training images]
    #[arg(long, conflicts_with = "calibration")]
    calibrate: Option<PathBuf>,
    /// A calibration file made by `ran calibrate` for this model and settings: its statistics,
    /// colour scale and image thresholds instead of calibrating again (implies --ensemble calibrated).
    #[arg(long)]
    calibration: Option<PathBuf>,
}

impl DetectCmd {
    /// The demo's model, extractor, inputs and calibration images where the user gave none.
    fn apply_demo(&mut self) -> crate::Result<()> {
        let (model, imgs) = super::demo::paths()?;
        super::demo::score_settings(&mut self.score, model);
        let model = self.score.model.clone().unwrap_or_default();
        let Some(cats) = crate::models::class_names(&model)? else {
            return Err(crate::Error::BadFile { path: model, msg: "the model names no classes (ran convert --class-names): the demo picks its sample images by class".into() });
        };
        if self.score.ensemble == Some(EnsembleKind::Calibrated) && self.calibrate.is_none() && self.calibration.is_none() {
            self.calibrate = Some(imgs.join("*").join("train").join("good").join("*.png"));
        }
        if self.inputs.is_empty() {
            // per category: one normal image and one of each defect
            for c in &cats {
                for d in ["good", "scratch", "spot", "patch", "hole"] {
                    self.inputs.push(imgs.join(c).join("test").join(d).join("000.png").display().to_string());
                }
            }
        }
        self.out.get_or_insert_with(|| "ran-demo".into());
        println!("demo: a toy model trained on CPU on textures, EfficientNet-Lite0 features (see weights/README.md)");
        Ok(())
    }

    pub fn run(mut self) -> ExitCode {
        if self.calibration.is_some() {
            self.score.ensemble.get_or_insert(EnsembleKind::Calibrated);
        }
        if self.demo {
            if let Err(e) = self.apply_demo() {
                return super::fail(e);
            }
        }
        let (device, precision) = (self.score.device, self.score.precision);
        let Some(score) = self.score.settings() else { return super::usage("give --model MODEL.safetensors (made by `ran convert`)") };
        let out = self.out.unwrap_or_else(|| "ran-out".into());
        let args = DetectArgs {
            score,
            inputs: self.inputs,
            out: out.clone(),
            class: self.class,
            threshold: self.threshold,
            alpha_table: self.alpha_table,
            batch: self.batch,
            calibrate: self.calibrate,
            calibration: self.calibration,
            range: self.range,
        };
        let backend = match super::backend(device, precision, PrecisionDefault::Fast) {
            Ok(b) => b,
            Err(code) => return code,
        };
        match crate::with_backend!(backend, |b| crate::commands::detect::run(b, &args)) {
            Ok(o) => print(&o, &out),
            Err(e) => super::fail(e),
        }
    }
}

fn print(o: &Outcome, out: &Path) -> ExitCode {
    if o.kl_only {
        println!("note: KL score only (the model has no feature head, or --kl-only / no --effnet)");
    }
    println!("{} image(s) scored, {} failed; results in {} (results.csv, report.html beside it)", o.processed, o.failed.len(), out.join("results.json").display());
    if let Some(k) = o.above_normal {
        println!("{k} of them score above every normal calibration image of their class (above_normal in results.json)");
    }
    if let Some(k) = o.defective {
        println!("{k} of them are defective: above their class's image threshold (defective in results.json)");
    }
    super::status(o.failed.is_empty())
}
