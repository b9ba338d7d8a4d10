//! `ran bench unet|effnet|wrn50-grad|detect|train|conv|attention`: the options of each workload and the common
//! ones (iterations, device, threads, ceiling, --json); the work is in src/bench/.

use super::options::{parse_device, Device};
use crate::anomaly::score::FeatureTimestep;
use crate::backend::select::PrecisionDefault;
use crate::bench::measure::Plan;
use crate::bench::report::{commit, Ceiling, Machine, Report};
use crate::bench::{run, workloads};
use crate::ops::precision::Precision;
use crate::Backend;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct BenchCmd {
    #[command(subcommand)]
    what: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// One UNet forward (random seeded weights, no feature head) of guided-diffusion MODEL_FLAGS.
    Unet {
        /// guided-diffusion MODEL_FLAGS [default: the paper's 553M config at 256²]
        #[arg(long, default_value = workloads::PAPER_FLAGS, allow_hyphen_values = true)]
        flags: String,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// random weights rounded to f16 and loaded as from an f16 file (the CPU keeps them in
        /// f16 unless RAN_CPU_F16_WEIGHTS=0)
        #[arg(long)]
        f16_weights: bool,
        #[command(flatten)]
        common: Common,
    },
    /// EfficientNet features (to the last tapped block, as the feature score runs them).
    Effnet {
        /// b0 … b7, lite0 … lite4, or a full efficientnet-* name
        #[arg(long, default_value = "b4")]
        variant: String,
        #[arg(long, default_value_t = 256)]
        image_size: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[command(flatten)]
        common: Common,
    },
    /// wide_resnet50_2 to layer3: forward and input gradient (one gradient-denoising backbone pass).
    #[command(name = "wrn50-grad")]
    Wrn50Grad {
        #[arg(long, default_value_t = 256)]
        image_size: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Full detection (KL + feature maps, EfficientNet-B4, timesteps 5, 50, 100) of seeded images.
    Detect {
        /// guided-diffusion MODEL_FLAGS [default: the paper's 553M config at 256²]
        #[arg(long, default_value = workloads::PAPER_FLAGS, allow_hyphen_values = true)]
        flags: String,
        #[arg(long, value_enum, default_value = "index")]
        feature_timestep: FeatureTimestep,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// random weights rounded to f16 and loaded as from an f16 file (the CPU keeps them in
        /// f16 unless RAN_CPU_F16_WEIGHTS=0)
        #[arg(long)]
        f16_weights: bool,
        #[command(flatten)]
        common: Common,
    },
    /// One training step of the UNet with the feature head: the paper's loss, backward, AdamW, EMA.
    Train {
        /// guided-diffusion MODEL_FLAGS [default: the demo's config, 32 channels at 64²]
        #[arg(long, default_value = workloads::DEMO_FLAGS, allow_hyphen_values = true)]
        flags: String,
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// recompute each layer's inner activations in the backward instead of keeping them
        /// (`ran train --recompute`: less memory, more work)
        #[arg(long)]
        recompute: bool,
        #[command(flatten)]
        common: Common,
    },
    /// One conv2d, stride 1, padding kernel/2, with bias.
    Conv {
        /// input CxHxW, e.g. 256x64x64
        #[arg(long, value_parser = parse_chw, default_value = "256x64x64")]
        shape: [usize; 3],
        #[arg(long, default_value_t = 3)]
        kernel: usize,
        /// output channels [default: C]
        #[arg(long)]
        out: Option<usize>,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[command(flatten)]
        common: Common,
    },
    /// guided-diffusion's legacy QKV attention: qkv [batch, 3·heads·d, tokens] → [batch, heads·d, tokens].
    Attention {
        #[arg(long, default_value_t = 1024)]
        tokens: usize,
        #[arg(long, default_value_t = 4)]
        heads: usize,
        /// channels per head
        #[arg(long, default_value_t = 64)]
        head_dim: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// also time the input gradient (forward + backward per iteration)
        #[arg(long)]
        backward: bool,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// timed iterations
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// untimed runs first (the first run, timed or not, also counts the FLOPs)
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// cpu, cuda, cuda:N, emulator, auto
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Operands of conv and linear on the CUDA backend: f32, tf32, bf16 or f16 (statistics stay
    /// f32) [default: bf16 on a GPU, f32 on the emulator and the CPU; on the CPU, an emulation of the kernels' rounding]
    #[arg(long, value_parser = super::options::parse_precision)]
    precision: Option<Precision>,
    /// CPU threads (rayon's pool) [default: RAYON_NUM_THREADS, else one per core]
    #[arg(long)]
    threads: Option<usize>,
    /// the machine's f32 GFLOP/s to take percentages of [default: 155 per thread, measured on the
    /// project's dev machine; tools/bench/compare.sh measures it here]
    #[arg(long)]
    ceiling: Option<f64>,
    /// end with one JSON object on the last line
    #[arg(long)]
    json: bool,
    /// no progress lines on stderr
    #[arg(long)]
    quiet: bool,
}

fn parse_chw(s: &str) -> Result<[usize; 3], String> {
    let v: Vec<Result<usize, _>> = s.split('x').map(str::parse::<usize>).collect();
    match v.as_slice() {
        [Ok(c), Ok(h), Ok(w)] if *c > 0 && *h > 0 && *w > 0 => Ok([*c, *h, *w]),
        _ => Err("CxHxW with positive integers expected, e.g. 256x64x64".into()),
    }
}

impl BenchCmd {
    pub fn run(self) -> ExitCode {
        let common = match &self.what {
            Workload::Unet { common, .. }
            | Workload::Effnet { common, .. }
            | Workload::Wrn50Grad { common, .. }
            | Workload::Detect { common, .. }
            | Workload::Conv { common, .. }
            | Workload::Attention { common, .. }
            | Workload::Train { common, .. } => common,
        };
        if let Some(n) = common.threads {
            if n == 0 {
                return super::usage("--threads must be at least 1");
            }
            if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n).build_global() {
                return super::usage(&format!("--threads {n}: {e}"));
            }
        }
        if common.ceiling.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return super::usage("--ceiling must be a positive number of GFLOP/s");
        }
        let plan = Plan { warmup: common.warmup, iters: common.iters, progress: !common.quiet };
        let (json, ceiling) = (common.json, common.ceiling);
        // training has no mixed-precision path yet: f32 unless asked
        let default = if matches!(self.what, Workload::Train { .. }) { PrecisionDefault::F32 } else { PrecisionDefault::Fast };
        let any = match super::backend(common.device, common.precision, default) {
            Ok(b) => b,
            Err(code) => return code,
        };
        let threads = rayon::current_num_threads();
        let result = crate::with_backend!(any, |b| self.what.run(b, plan).map(|r| (r, b.name(), b.precision())));
        match result {
            Ok((r, device, precision)) => {
                let m = Machine { device, precision, threads, commit: commit(), ceiling: Ceiling::new(ceiling, threads) };
                r.print(&m, json);
                ExitCode::SUCCESS
            }
            Err(e) => super::fail(e),
        }
    }
}

impl Workload {
    fn run<B: Backend>(&self, b: &B, plan: Plan) -> crate::Result<Report> {
        match self {
            Workload::Unet { flags, batch, f16_weights, .. } => run::unet(b, flags, *batch, *f16_weights, plan),
            Workload::Effnet { variant, image_size, batch, .. } => run::effnet(b, variant, *image_size, *batch, plan),
            Workload::Wrn50Grad { image_size, batch, .. } => run::wrn50_grad(b, *image_size, *batch, plan),
            Workload::Detect { flags, feature_timestep, batch, f16_weights, .. } => run::detect(b, flags, *feature_timestep, *batch, *f16_weights, plan),
            Workload::Train { flags, batch, recompute, .. } => run::train(b, flags, *batch, *recompute, plan),
            Workload::Conv { shape, kernel, out, batch, .. } => run::conv(b, *shape, out.unwrap_or(shape[0]), *kernel, *batch, plan),
            Workload::Attention { tokens, heads, head_dim, batch, backward, .. } => run::attention(b, *tokens, *heads, *head_dim, *batch, *backward, plan),
        }
    }
}
