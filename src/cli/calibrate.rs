//! `ran calibrate` on the command line (and its demo).

use super::score_opts::ScoreOpts;
use crate::anomaly::calibration_file::CalibrationFile;
use crate::anomaly::settings::EnsembleKind;
use crate::anomaly::threshold::ThresholdSource;
use crate::backend::select::PrecisionDefault;
use crate::commands::calibrate::CalibrateArgs;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CalibrateCmd {
    /// Normal images of the product: folders, files or patterns such as 'train/*/good/*.png'
    /// (--calibration-images of each class) [demo: its training images].
    #[arg(long, num_args = 1..)]
    normal: Vec<String>,
    /// A labelled validation set in the MVTec test layout (`test/<kind>/`, `good` normal; a
    /// category folder or a data root): the image threshold becomes the F1-optimal one on it
    /// [default: the largest normal calibration score].
    #[arg(long)]
    val: Option<PathBuf>,
    /// The calibration file to write [the demo: ran-demo-calibration.safetensors].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Class of a class-conditional model: index or name (default: a class name in the path).
    #[arg(long)]
    class: Option<String>,
    /// Calibrate the shipped demo model on its training images.
    #[arg(long)]
    demo: bool,
    #[command(flatten)]
    score: ScoreOpts,
}

impl CalibrateCmd {
    pub fn run(mut self) -> ExitCode {
        if self.demo {
            match super::demo::paths() {
                Ok((model, imgs)) => {
                    super::demo::score_settings(&mut self.score, model);
                    if self.normal.is_empty() {
                        self.normal.push(imgs.join("*").join("train").join("good").join("*.png").display().to_string());
                    }
                    self.out.get_or_insert_with(|| "ran-demo-calibration.safetensors".into());
                }
                Err(e) => return super::fail(e),
            }
        }
        match self.score.ensemble {
            None => self.score.ensemble = Some(EnsembleKind::Calibrated),
            Some(EnsembleKind::Calibrated) => {}
            Some(other) => return super::usage(&format!("a calibration is for --ensemble calibrated, not {other}")),
        }
        if self.normal.is_empty() {
            return super::usage("give --normal DIR (normal images of the product) or --demo");
        }
        let Some(out) = self.out else { return super::usage("give --out FILE.safetensors") };
        let (device, precision) = (self.score.device, self.score.precision);
        let Some(score) = self.score.settings() else { return super::usage("give --model MODEL.safetensors (made by `ran convert`)") };
        let args = CalibrateArgs { score, normal: self.normal, val: self.val, out: out.clone(), class: self.class };
        let backend = match super::backend(device, precision, PrecisionDefault::Fast) {
            Ok(b) => b,
            Err(code) => return code,
        };
        match crate::with_backend!(backend, |b| crate::commands::calibrate::run(b, &args)) {
            Ok((f, id)) => print(&f, &id, &out),
            Err(e) => super::fail(e),
        }
    }
}

fn print(f: &CalibrationFile, id: &str, out: &std::path::Path) -> ExitCode {
    for c in f.classes.values() {
        let name = c.name.as_deref().unwrap_or("all");
        match (c.source, c.validation) {
            (ThresholdSource::ValidationF1, Some(v)) => println!(
                "{name}: image threshold {:.4} (F1-optimal on {} normal + {} defective validation images: F1 {:.3}, precision {:.3}, recall {:.3})",
                c.threshold, v.normal, v.defective, v.f1, v.precision, v.recall
            ),
            _ => println!("{name}: image threshold {:.4} (the largest of {} normal calibration scores)", c.threshold, c.calibration.statistics.images),
        }
    }
    println!("calibration {id} written to {} (for model {}…)", out.display(), &f.model_sha256[..16]);
    ExitCode::SUCCESS
}
