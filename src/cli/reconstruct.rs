//! `ran reconstruct` on the command line (and its demo).

use super::options::{parse_device, Device};
use crate::anomaly::reconstruct::ReconstructConfig;
use crate::backend::select::PrecisionDefault;
use crate::commands::reconstruct::{Outcome, ReconstructArgs};
use crate::ops::precision::Precision;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ReconstructCmd {
    /// Images, folders (searched recursively) or glob patterns.
    inputs: Vec<String>,
    /// Run on the shipped demo model, backbone fit and sample images.
    #[arg(long)]
    demo: bool,
    /// A diffusion model converted by `ran convert`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A fit made by `ran fit-padim` at the model's image size.
    #[arg(long)]
    padim: Option<PathBuf>,
    /// [default: ran-reconstruct; the demo: ran-demo-reconstruct]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Outer iterations (each: --nd gradient steps and one denoising step) [default: 100; the demo: 20]
    #[arg(long)]
    iters: Option<usize>,
    /// Gradient steps per denoising step (N_d).
    #[arg(long, default_value_t = 5)]
    nd: usize,
    /// Step size s; the weight decay is √(1−s²).
    #[arg(long, default_value_t = 0.02)]
    lr: f32,
    /// Respaced index of the denoising step.
    #[arg(long, default_value_t = 8)]
    k: usize,
    /// Add σ·z to the posterior mean (the stochastic variant); the official code adds none.
    #[arg(long)]
    denoise_noise: bool,
    /// Keep a frame for the strip every this many iterations (0: first and last only) [default: 10; the demo: 4]
    #[arg(long)]
    every: Option<usize>,
    /// Respacing when the model's flags give none.
    #[arg(long, default_value = "250")]
    respacing: String,
    /// Class of a class-conditional model: index or name (default: a class name in the path).
    #[arg(long)]
    class: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per batch (memory permitting; the results do not depend on it).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// auto (GPU if usable, else CPU), cpu, cuda, cuda:N, emulator
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
    /// Operands of conv and linear on the CUDA backend: f32, tf32, bf16 or f16 (statistics stay
    /// f32) [default: bf16 on a GPU, f32 on the emulator and the CPU; on the CPU, an emulation of the kernels' rounding]
    #[arg(long, value_parser = super::options::parse_precision)]
    precision: Option<Precision>,
}

impl ReconstructCmd {
    /// The demo's model, fit, inputs and shorter run where the user gave none.
    fn apply_demo(&mut self) -> crate::Result<()> {
        let (model, imgs) = super::demo::paths()?;
        self.model.get_or_insert(model);
        self.padim.get_or_insert_with(super::demo::padim);
        if self.inputs.is_empty() {
            for d in ["scratch", "spot", "patch", "hole"] {
                self.inputs.push(imgs.join("brick/test").join(d).join("000.png").display().to_string());
            }
        }
        self.out.get_or_insert_with(|| "ran-demo-reconstruct".into());
        let iters = *self.iters.get_or_insert(20);
        self.every.get_or_insert(4);
        println!("demo: the toy diffusion model and a PaDiM fit on the demo's brick images (see weights/README.md); {iters} iterations");
        Ok(())
    }

    pub fn run(mut self) -> ExitCode {
        if self.demo {
            if let Err(e) = self.apply_demo() {
                return super::fail(e);
            }
        }
        let (Some(model), Some(padim)) = (self.model, self.padim) else {
            return super::usage("give --model MODEL.safetensors (ran convert) and --padim FIT.safetensors (ran fit-padim), or --demo");
        };
        let out = self.out.unwrap_or_else(|| "ran-reconstruct".into());
        let cfg = ReconstructConfig { iters: self.iters.unwrap_or(100), nd: self.nd, lr: self.lr, k: self.k, denoise_noise: self.denoise_noise, seed: self.seed };
        let args = ReconstructArgs { inputs: self.inputs, model, padim, out: out.clone(), cfg, every: self.every.unwrap_or(10), respacing: self.respacing, class: self.class, batch: self.batch };
        let backend = match super::backend(self.device, self.precision, PrecisionDefault::Fast) {
            Ok(b) => b,
            Err(code) => return code,
        };
        match crate::with_backend!(backend, |b| crate::commands::reconstruct::run(b, &args)) {
            Ok(o) => print(&o, &out),
            Err(e) => super::fail(e),
        }
    }
}

fn print(o: &Outcome, out: &Path) -> ExitCode {
    println!("{} image(s) reconstructed, {} failed; results in {} (report.html beside it)", o.processed, o.failed.len(), out.join("reconstruct.json").display());
    super::status(o.failed.is_empty())
}
