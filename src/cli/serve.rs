//! `ran serve` on the command line (and its demo).

use super::score_opts::ScoreOpts;
use crate::anomaly::settings::EnsembleKind;
use crate::io::image::ImageLimits;
use crate::serve::routes::Limits;
use crate::serve::worker::{CalibrationSource, WorkerConfig};
use crate::serve::ServeConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeCmd {
    /// A calibration file made by `ran calibrate` for this model and settings [the demo:
    /// calibrated at start on its training images].
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Address to listen on; beyond loopback it needs --token-file or --insecure (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Most images per model pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    batch: u64,
    /// How long the first image of a batch waits for others (milliseconds).
    #[arg(long, default_value_t = 10)]
    max_wait_ms: u64,
    /// Most images accepted and waiting for the model; beyond, requests get 503 with Retry-After.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    queue: u64,
    /// A file holding the Bearer token clients must send (`Authorization: Bearer <token>`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve beyond loopback without a token.
    #[arg(long)]
    insecure: bool,
    /// Largest request body (MiB); beyond: 413.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_body_mb: u64,
    /// Largest request body in bytes (overrides --max-body-mb).
    #[arg(long, hide = true)]
    max_body_bytes: Option<usize>,
    /// Most images in one request; beyond: 413.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_images: u64,
    /// Most pixels an image may decode to (width × height, from its header: decompression bombs).
    #[arg(long, default_value_t = 25_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_pixels: u64,
    /// Seconds a request may wait for its answer; then 504.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_s: u64,
    /// Recent results whose overlay and heatmap are kept for GET /v1/results/{id}/….
    #[arg(long, default_value_t = 256)]
    keep_results: usize,
    /// Serve the shipped demo model.
    #[arg(long)]
    demo: bool,
    #[command(flatten)]
    score: ScoreOpts,
}

impl ServeCmd {
    pub fn run(mut self) -> ExitCode {
        let mut calibration = self.calibration.clone().map(CalibrationSource::File);
        if self.demo {
            match super::demo::paths() {
                Ok((model, imgs)) => {
                    super::demo::score_settings(&mut self.score, model);
                    if calibration.is_none() {
                        calibration = Some(CalibrationSource::Normal(vec![imgs.join("*").join("train").join("good").join("*.png").display().to_string()]));
                    }
                }
                Err(e) => return super::fail(e),
            }
        }
        match self.score.ensemble {
            None => self.score.ensemble = Some(EnsembleKind::Calibrated),
            Some(EnsembleKind::Calibrated) => {}
            Some(other) => return super::usage(&format!("the service scores with the calibrated ensemble, not {other}")),
        }
        let Some(calibration) = calibration else { return super::usage("give --calibration FILE (made by `ran calibrate`) or --demo") };
        let token = match &self.token_file {
            Some(p) => match crate::serve::auth::read_token(p) {
                Ok(t) => Some(t),
                Err(e) => return super::fail(e),
            },
            None => None,
        };
        if let Err(e) = crate::serve::auth::check_bind(&self.bind, token.is_some(), self.insecure) {
            return super::fail(e);
        }
        let (device, precision) = (self.score.device, self.score.precision);
        let Some(score) = self.score.settings() else { return super::usage("give --model MODEL.safetensors (made by `ran convert`)") };
        let cfg = ServeConfig {
            worker: WorkerConfig { score, calibration, device, precision, max_batch: self.batch as usize, max_wait: Duration::from_millis(self.max_wait_ms) },
            bind: self.bind,
            token,
            limits: Limits {
                max_body_bytes: self.max_body_bytes.unwrap_or((self.max_body_mb as usize) << 20),
                max_images: self.max_images as usize,
                image: ImageLimits { max_pixels: self.max_pixels },
                timeout: Duration::from_secs(self.timeout_s),
                queue: self.queue as usize,
            },
            keep_results: self.keep_results,
        };
        if self.demo {
            println!("demo: a toy model trained on CPU on textures (see weights/README.md); calibrating on its training images first");
        }
        match crate::serve::run(cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(e),
        }
    }
}
