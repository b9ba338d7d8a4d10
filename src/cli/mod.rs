//! The `ran` command line: typed arguments per command (parse-time checks), the demo's settings,
//! and one printing function per command. main.rs parses and calls `run`.

pub mod bench;
pub mod calibrate;
pub mod convert;
pub mod demo;
pub mod detect;
pub mod eval;
pub mod fit_padim;
pub mod info;
pub mod kernels;
pub mod metrics;
pub mod options;
pub mod reconstruct;
pub mod score_opts;
pub mod serve;
pub mod train;
pub mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ran", version, about = "Removing Anomalies as Noises: diffusion-based defect localization")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Refuse images that decode to more pixels than this (checked from the file's header, before
    /// any pixel is decoded or resized): a guard against decompression bombs. K/M/G suffixes.
    #[arg(long, global = true, value_parser = options::parse_max_pixels, default_value = "64M")]
    pub max_pixels: u64,
}

#[derive(Subcommand)]
pub enum Command {
    /// Version, available backends, and why CUDA is or is not usable here.
    Info,
    /// The CUDA kernels built into this binary; `--report` adds ptxas's registers / shared memory /
    /// spills per kernel for sm_90.
    Kernels {
        #[arg(long)]
        report: bool,
        /// Global-memory bytes and FLOPs per kernel at the 553M UNet's shapes, counted by the CUDA
        /// emulator (exact per block, the grid sampled): bytes ÷ the minimum, FLOP/B, the H200
        /// roofline lower bound.
        #[arg(long)]
        traffic: bool,
        /// With --traffic: one JSON object per op and line.
        #[arg(long, requires = "traffic")]
        json: bool,
        /// With --traffic: at most this many sampled blocks per launch (0: every block; slow).
        #[arg(long, requires = "traffic", default_value_t = 24)]
        max_blocks: u32,
    },
    /// Convert a PyTorch checkpoint (.pt/.pth) or safetensors + its training flags into one
    /// self-describing safetensors model file.
    Convert(convert::ConvertCmd),
    /// Run the engine on the inputs of a reference file (tools/reference/dump_reference.py) and
    /// report the largest errors per output; exit status 1 when any exceeds the tolerance.
    Verify(verify::VerifyCmd),
    /// Find and outline defects: anomaly maps (16-bit PNG), heatmaps, overlays, results.json/csv, report.html.
    Detect(detect::DetectCmd),
    /// Evaluate on MVTec-AD / BTAD: pixel AUROC, AU-PRO (FPR ≤ 0.3), image AUROC per category and per defect kind; report.html.
    Eval(eval::EvalCmd),
    /// Fit PaDiM (the loss of the gradient denoising) on normal images: ResNet layer1–3 features,
    /// a seeded subset of channels, per-position Gaussians; writes one file with the backbone.
    FitPadim(fit_padim::FitPadimCmd),
    /// Gradient denoising (the paper's Algorithm 1): turn anomalous images into normal ones.
    /// Writes the reconstruction, a strip of frames, |x0 − x̂| as a heatmap, PaDiM maps before and
    /// after, reconstruct.json with the loss curves, and report.html.
    Reconstruct(reconstruct::ReconstructCmd),
    /// Metrics for anomaly maps made by any tool: pixel AUROC, AU-PRO (0.3), image AUROC.
    Metrics(metrics::MetricsCmd),
    /// Train (or fine-tune) a model on normal images with the paper's recipe: ε-MSE + VB +
    /// feature MSE, AdamW, EMA; checkpoints, --resume, a JSON-lines log and a loss curve.
    Train(train::TrainCmd),
    /// Time a workload on random weights (UNet, EfficientNet, the ResNet gradient, detection, one
    /// conv): median/min/max ms, GFLOP/s, % of the machine's ceiling; `--json` for scripts.
    Bench(bench::BenchCmd),
    /// Calibrate the calibrated ensemble once, into a file: per class the normal map statistics,
    /// the colour scale and the image threshold of the `defective` verdict (F1-optimal with --val).
    Calibrate(calibrate::CalibrateCmd),
    /// An inspection service: POST images to /v1/detect for a score, a verdict, a heatmap and an
    /// overlay; batches requests for the model; /healthz, /readyz, /metrics, a web page at /.
    Serve(serve::ServeCmd),
}

pub fn run(cli: Cli) -> ExitCode {
    crate::io::image::ImageLimits::set_process_default(cli.max_pixels);
    match cli.command {
        Command::Info => info::info(),
        Command::Kernels { report, traffic: false, .. } => info::kernels(report),
        Command::Kernels { traffic: true, json, max_blocks, .. } => kernels::traffic(json, max_blocks),
        Command::Convert(c) => c.run(),
        Command::Verify(c) => c.run(),
        Command::Detect(c) => c.run(),
        Command::Eval(c) => c.run(),
        Command::FitPadim(c) => c.run(),
        Command::Reconstruct(c) => c.run(),
        Command::Metrics(c) => c.run(),
        Command::Train(c) => c.run(),
        Command::Bench(c) => c.run(),
        Command::Calibrate(c) => c.run(),
        Command::Serve(c) => c.run(),
    }
}

/// The backend for `--device` at `--precision` (or the command's default), or the exit status
/// after saying why not.
pub fn backend(
    device: options::Device,
    precision: Option<crate::ops::precision::Precision>,
    default: crate::backend::select::PrecisionDefault,
) -> Result<crate::backend::select::AnyBackend, ExitCode> {
    device.backend_at(precision, default).map_err(fail)
}

/// Says what went wrong; exit status 2.
pub fn fail(e: crate::Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// A missing argument, said in words; exit status 2.
pub fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

/// Exit status 0 when nothing failed, else 1 (some inputs were skipped).
pub fn status(all_ok: bool) -> ExitCode {
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Catches: a command that runs a model (it has --device) without --precision — e.g. one
    /// added later; tests/cli_options.rs runs the flag on each of today's.
    #[test]
    fn every_command_with_a_device_takes_a_precision() {
        fn walk(c: &clap::Command, path: String, found: &mut Vec<String>) {
            let has = |id: &str| c.get_arguments().any(|a| a.get_id() == id);
            if has("device") {
                assert!(has("precision"), "`{path}` has --device but no --precision");
                found.push(path.clone());
            }
            for s in c.get_subcommands() {
                walk(s, format!("{path} {}", s.get_name()), found);
            }
        }
        let mut found = Vec::new();
        walk(&super::Cli::command(), "ran".into(), &mut found);
        // detect eval verify calibrate serve fit-padim reconstruct train + 7 bench workloads
        assert_eq!(found.len(), 15, "{found:?}");
    }
}
