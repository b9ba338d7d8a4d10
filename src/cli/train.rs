//! `ran train` on the command line.

use super::options::{parse_device, parse_effnet_arch, Device};
use crate::backend::select::PrecisionDefault;
use crate::ops::precision::Precision;
use crate::train::run::{Summary, TrainArgs};
use crate::train::step::TrainOnly;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct TrainCmd {
    /// Training images: MVTec category folders (<category>/train/good), a data set root holding
    /// them, or plain folders of images (searched recursively). Each category is one class,
    /// named by its folder; several folders train one unified model. Images of any size are
    /// centre-cropped to the model's image size (as detect sees them).
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// The model file written at the end: the EMA weights, flags and class names in its
    /// metadata (what `ran detect --model` reads).
    #[arg(long)]
    out: PathBuf,
    /// Start from this checkpoint (.pt/.pth or safetensors, e.g. 256x256_diffusion.pt): every
    /// tensor the model has is taken from it; the others are initialised fresh and named.
    #[arg(long)]
    init: Option<PathBuf>,
    /// The model's MODEL_FLAGS, e.g. "--image_size 256 --num_channels 256 ..." [default: those
    /// of a ran model given as --init, else the paper's train.sh]
    #[arg(long, allow_hyphen_values = true)]
    flags: Option<String>,
    #[arg(long, default_value_t = 10000)]
    steps: u64,
    #[arg(long, default_value_t = 2)]
    batch: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// The learning rate falls linearly to 0 over this many steps (0: constant) [default: --steps]
    #[arg(long)]
    lr_anneal_steps: Option<u64>,
    /// EMA rate of the weights written to --out.
    #[arg(long, default_value_t = 0.997)]
    ema: f64,
    /// Resolution of the feature head's targets [default: the flags' --feat_shape, else 64 as the paper's training]
    #[arg(long)]
    feat_shape: Option<usize>,
    /// EfficientNet weights (.pth or safetensors): trains the anomaly feature head against its
    /// features of the clean image. Without it the model has no head (and an --init with one is refused).
    #[arg(long)]
    effnet: Option<PathBuf>,
    /// efficientnet-b0 … b7, efficientnet-lite0 … lite4, or custom:WIDTH,DEPTH,IMAGE_SIZE
    /// [default: what a ran --init model declares, else efficientnet-b4 as the paper]
    #[arg(long, value_parser = parse_effnet_arch)]
    effnet_arch: Option<String>,
    /// Random rotation of each training image by up to ±DEG degrees. 0 (the default) is what the
    /// official code actually does: its loader rotates the PIL image after taking the array, so
    /// its training sees no rotation; 5 is what the paper says.
    #[arg(long, default_value_t = 0.0)]
    rotate: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write a checkpoint every N steps (0: only at the end and at Ctrl-C).
    #[arg(long, default_value_t = 1000)]
    save_every: u64,
    /// Continue the run whose folder this is (bit-identical on the CPU backend); its settings
    /// must be this command's.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// The run's folder: checkpoint.safetensors, settings.json, log.jsonl, loss.png [default: --out
    /// with the extension .train; with --resume: that folder]
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// all: every parameter (the paper's training); head: the feature head alone with the UNet
    /// frozen (no UNet backward; with --feature-max-t T, t is drawn from [0, T)). The model
    /// written holds the frozen UNet as it was loaded.
    #[arg(long, default_value = "all")]
    train_only: TrainOnly,
    /// The feature term only on the samples of a batch with t < T (its mean over those; a batch
    /// with none has no feature term); the diffusion terms use every t [default: every t]
    #[arg(long, value_name = "T")]
    feature_max_t: Option<usize>,
    /// auto (GPU if usable, else CPU), cpu, cuda, cuda:N, emulator
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: Device,
    /// Mixed-precision training: the operands of conv and linear (forward and input gradients)
    /// rounded to tf32, bf16 or f16 by the CUDA kernels as they read them, f32 products and sums;
    /// the weights stay f32 (the master weights) and so do the weight gradients, group norm,
    /// softmax, the loss, AdamW and the EMA. bf16 and tf32 need nothing more. f16 (upstream's
    /// fp16 recipe) scales the loss by 2^lg for the backward (see --loss-scale-init): a step
    /// whose gradients overflow f16 is skipped (no AdamW or EMA update, the lr anneal goes on)
    /// and lg drops by 1; each good step unscales the gradients and adds the growth to lg. The
    /// scale goes into log.jsonl (lg_loss_scale, skipped) and the checkpoint. On the CPU an
    /// emulation of the kernels' rounding (slower than f32) [default: f32]
    #[arg(long, value_parser = super::options::parse_precision)]
    precision: Option<Precision>,
    /// f16 only: log2 of the initial loss scale [default: 20, upstream's INITIAL_LOG_LOSS_SCALE]
    #[arg(long, value_name = "LG", allow_hyphen_values = true)]
    loss_scale_init: Option<f64>,
    /// f16 only: what each step without overflow adds to the log2 of the loss scale [default:
    /// 1e-3, upstream's fp16_scale_growth]
    #[arg(long, value_name = "G")]
    loss_scale_growth: Option<f64>,
    /// Keep only each layer's input in the forward and recompute its inner activations in the
    /// backward: the same gradients (bit-identical on the CPU), less memory, 19% more work. Peak
    /// RSS of one step at batch 2 (`ran bench train`), default / --recompute: the demo config 200 /
    /// 171 MB, 128 channels at 64² 2793 / 2784 MB (its peak is AdamW's, after the backward);
    /// estimated for the paper's 553M model at 256²: at most ~18.5 / ~14.4 GB
    /// (benches/RESULTS.md, "training step: stored internals").
    #[arg(long)]
    recompute: bool,
}

impl TrainCmd {
    pub fn run(self) -> ExitCode {
        let args = TrainArgs {
            data: self.data,
            out: self.out,
            init: self.init,
            flags: self.flags,
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            lr_anneal_steps: self.lr_anneal_steps,
            ema: self.ema,
            feat_shape: self.feat_shape,
            effnet: self.effnet,
            effnet_arch: self.effnet_arch,
            rotate: self.rotate,
            seed: self.seed,
            save_every: self.save_every,
            resume: self.resume,
            run_dir: self.run_dir,
            train_only: self.train_only,
            feature_max_t: self.feature_max_t,
            recompute: self.recompute,
            loss_scale_init: self.loss_scale_init,
            loss_scale_growth: self.loss_scale_growth,
        };
        let backend = match super::backend(self.device, self.precision, PrecisionDefault::F32) {
            Ok(b) => b,
            Err(code) => return code,
        };
        match crate::with_backend!(backend, |b| crate::train::run::run(b, &args)) {
            Ok(s) => print(&s, &args),
            Err(e) => super::fail(e),
        }
    }
}

fn print(s: &Summary, a: &TrainArgs) -> ExitCode {
    let last =
        s.last.as_ref().map(|r| format!(", last loss {:.5} (mse {:.5}, vb {:.5}{})", r.loss, r.mse, r.vb, r.feat_mse.map(|f| format!(", feat_mse {f:.5}")).unwrap_or_default())).unwrap_or_default();
    println!("{} images of {} class(es) ({}); steps {} → {}{last}", s.images, s.classes.len(), s.classes.join(", "), s.start_step, s.step);
    if s.interrupted {
        println!("interrupted: checkpoint at step {} in {} (continue with --resume {})", s.step, s.run_dir.display(), s.run_dir.display());
        return ExitCode::from(130);
    }
    println!("wrote {} (EMA weights); checkpoint, log.jsonl and loss.png in {}", a.out.display(), s.run_dir.display());
    ExitCode::SUCCESS
}
