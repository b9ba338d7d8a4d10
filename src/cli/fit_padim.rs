//! `ran fit-padim` on the command line.

use super::options::{parse_device, parse_resnet_arch, Device, PadimDtype};
use crate::backend::select::PrecisionDefault;
use crate::commands::fit_padim::{FitArgs, FitOutcome};
use crate::ops::precision::Precision;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct FitPadimCmd {
    /// Normal training images: folders (searched recursively), files or globs.
    #[arg(long, required = true, num_args = 1..)]
    train: Vec<String>,
    /// torchvision ResNet weights (.pth or safetensors): wide_resnet50_2 as the paper, or
    /// resnet18/34/50, wide_resnet101_2.
    #[arg(long)]
    backbone: PathBuf,
    /// Check the weights are this architecture (default: inferred from the names and shapes).
    #[arg(long, value_parser = parse_resnet_arch)]
    arch: Option<String>,
    /// Channels kept out of the layer1–3 concatenation (1792 for wide_resnet50_2).
    #[arg(long, default_value_t = 500)]
    dims: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image size (the diffusion model's): images are resized and centre-cropped to it.
    #[arg(long, default_value_t = 256)]
    image_size: usize,
    #[arg(long)]
    out: PathBuf,
    /// Storage of the statistics and backbone (computation stays f32).
    #[arg(long, value_enum, default_value = "f32")]
    dtype: PadimDtype,
    /// Images per backbone batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// auto (GPU if usable, else CPU), cpu, cuda, cuda:N, emulator
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
    /// Operands of conv and linear on the CUDA backend: f32, tf32, bf16 or f16 (statistics stay
    /// f32) [default: bf16 on a GPU, f32 on the emulator and the CPU; on the CPU, an emulation of the kernels' rounding]
    #[arg(long, value_parser = super::options::parse_precision)]
    precision: Option<Precision>,
}

impl FitPadimCmd {
    pub fn run(self) -> ExitCode {
        let args = FitArgs {
            train: self.train,
            backbone: self.backbone,
            arch: self.arch,
            dims: self.dims,
            seed: self.seed,
            image_size: self.image_size,
            out: self.out.clone(),
            dtype: self.dtype.dtype(),
            batch: self.batch,
        };
        let backend = match super::backend(self.device, self.precision, PrecisionDefault::Fast) {
            Ok(b) => b,
            Err(code) => return code,
        };
        match crate::with_backend!(backend, |b| crate::commands::fit_padim::run(b, &args)) {
            Ok(o) => print(&o, &self.out),
            Err(e) => super::fail(e),
        }
    }
}

fn print(o: &FitOutcome, out: &Path) -> ExitCode {
    let i = &o.info;
    println!(
        "wrote {}: {} images, {} dims at {}×{} positions, {:.1} MB; peak RSS {}",
        out.display(),
        o.images,
        i.channels.len(),
        i.feature_size.0,
        i.feature_size.1,
        o.bytes as f64 / 1e6,
        o.peak_rss_mb.map(|m| format!("{m:.0} MB")).unwrap_or_else(|| "unknown".into())
    );
    if !o.skipped.is_empty() {
        println!("{} image(s) skipped", o.skipped.len());
    }
    super::status(o.skipped.is_empty())
}
