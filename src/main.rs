//! `ran` command line.

use clap::{Parser, Subcommand};
use ran::Backend;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ran", version, about = "Removing Anomalies as Noises: diffusion-based defect localization")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, available backends, and why CUDA is or is not usable here.
    Info,
    /// The CUDA kernels built into this binary; `--report` adds ptxas's registers / shared memory /
    /// spills per kernel for sm_90.
    Kernels {
        #[arg(long)]
        report: bool,
    },
    /// Convert a PyTorch checkpoint (.pt/.pth) or safetensors + its training flags into one
    /// self-describing safetensors model file.
    Convert {
        /// ema_0.997_010000.pt, model.safetensors, ...
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// The MODEL_FLAGS string from the training script, e.g. "--image_size 256 --num_channels 256 ..."
        #[arg(long, allow_hyphen_values = true)]
        flags: String,
        #[arg(long)]
        out: std::path::PathBuf,
        /// Storage type of the weights: f32, f16 or bf16 (computation stays f32).
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Category names of a class-conditional model, in label order (e.g. the 15 MVTec names).
        #[arg(long, value_delimiter = ',')]
        class_names: Vec<String>,
        /// The EfficientNet the feature head was trained against (e.g. efficientnet-b4,
        /// efficientnet-lite0), recorded in the metadata so detect/eval pick it by default.
        #[arg(long)]
        feature_extractor: Option<String>,
    },
    /// Run the engine on the inputs of a reference file (tools/reference/dump_reference.py) and
    /// report the largest errors per output; exit status 1 when any exceeds the tolerance.
    Verify {
        #[arg(long)]
        reference: std::path::PathBuf,
        #[arg(long, default_value_t = 1e-4)]
        atol: f64,
        #[arg(long, default_value_t = 1e-3)]
        rtol: f64,
        /// --model (required), and for kind=effnet / kind=detect the extractor and scoring options
        #[command(flatten)]
        score: ScoreOpts,
    },
    /// Find and outline defects: anomaly maps (16-bit PNG), heatmaps, overlays, results.json/csv, report.html.
    Detect {
        /// Images, folders (searched recursively) or glob patterns.
        inputs: Vec<String>,
        /// Run on the shipped demo model and sample images.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        score: ScoreOpts,
        #[arg(long, default_value = "ran-out")]
        out: std::path::PathBuf,
        /// Class of a class-conditional model: index or name (default: a class name in the path).
        #[arg(long)]
        class: Option<String>,
        /// Outline on the overlay the pixels whose score exceeds this; `normal` (with the
        /// calibrated ensemble): the 99.9th percentile of the class's normal calibration pixels.
        #[arg(long, allow_hyphen_values = true)]
        threshold: Option<String>,
        /// Colour scale of heatmaps and overlays: auto ([0, 99.9th percentile of the normal
        /// scores] with the calibrated ensemble, else each image's own range), image (each
        /// image's min..max), or LO,HI.
        #[arg(long, default_value = "auto", allow_hyphen_values = true)]
        range: String,
        /// Per-category α: JSON {"bottle": 0.3, ...} or lines `category,alpha`.
        #[arg(long)]
        alpha_table: Option<std::path::PathBuf>,
        /// Images per UNet batch (memory permitting).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Normal images of the product (a folder or a pattern such as 'train/*/good/*.png') for
        /// `--ensemble calibrated`: --calibration-images of each class [demo: its training images]
        #[arg(long)]
        calibrate: Option<std::path::PathBuf>,
    },
    /// Evaluate on MVTec-AD / BTAD: pixel AUROC, AU-PRO (FPR ≤ 0.3), image AUROC per category and per defect kind; report.html.
    Eval {
        /// Root of the data set (MVTec-AD or BTAD layout).
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        /// Evaluate the shipped demo model on the shipped demo data set.
        #[arg(long)]
        demo: bool,
        /// Categories to evaluate (default: all found).
        #[arg(long, value_delimiter = ',')]
        categories: Vec<String>,
        #[command(flatten)]
        score: ScoreOpts,
        /// Output folder: metrics.json/csv and the map cache (resumable).
        #[arg(long, default_value = "ran-eval")]
        out: std::path::PathBuf,
        /// Score only images i, i+n, ... (i/n); run `--merge` once all shards are done.
        #[arg(long)]
        shard: Option<String>,
        /// Compute the metrics from the cached maps of all shards.
        #[arg(long)]
        merge: bool,
        /// mvtec (the MVTec AD official AU-PRO) or official-repo (the paper repository's own PRO,
        /// for comparing with its published numbers).
        #[arg(long, default_value = "mvtec")]
        pro_variant: String,
        /// Also score the ensemble at each of these α (from the cached maps) and write the best per
        /// category to alpha_table.json (for detect --alpha-table). Chosen on the test set, as the
        /// paper's per-category best results: an upper bound, not an estimate.
        #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1")]
        alpha_sweep: Option<Vec<f32>>,
    },
    /// Fit PaDiM (the loss of the gradient denoising) on normal images: ResNet layer1–3 features,
    /// a seeded subset of channels, per-position Gaussians; writes one file with the backbone.
    FitPadim {
        /// Normal training images: folders (searched recursively), files or globs.
        #[arg(long, required = true, num_args = 1..)]
        train: Vec<String>,
        /// torchvision ResNet weights (.pth or safetensors): wide_resnet50_2 as the paper, or
        /// resnet18/34/50, wide_resnet101_2.
        #[arg(long)]
        backbone: std::path::PathBuf,
        /// Check the weights are this architecture (default: inferred from the names and shapes).
        #[arg(long)]
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
        out: std::path::PathBuf,
        /// Storage of the statistics and backbone: f32 or f16 (computation stays f32).
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Images per backbone batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Gradient denoising (the paper's Algorithm 1): turn anomalous images into normal ones.
    /// Writes the reconstruction, a strip of frames, |x0 − x̂| as a heatmap, PaDiM maps before and
    /// after, reconstruct.json with the loss curves, and report.html.
    Reconstruct {
        /// Images, folders (searched recursively) or glob patterns.
        inputs: Vec<String>,
        /// Run on the shipped demo model, backbone fit and sample images.
        #[arg(long)]
        demo: bool,
        /// A diffusion model converted by `ran convert`.
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        /// A fit made by `ran fit-padim` at the model's image size.
        #[arg(long)]
        padim: Option<std::path::PathBuf>,
        #[arg(long, default_value = "ran-reconstruct")]
        out: std::path::PathBuf,
        /// Outer iterations (each: --nd gradient steps and one denoising step).
        #[arg(long, default_value_t = 100)]
        iters: usize,
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
        /// Keep a frame for the strip every this many iterations (0: first and last only).
        #[arg(long, default_value_t = 10)]
        every: usize,
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
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Metrics for anomaly maps made by any tool: pixel AUROC, AU-PRO (0.3), image AUROC.
    Metrics {
        /// safetensors with `maps` [N,H,W], `masks` [N,H,W] and optional `image_labels` [N]
        #[arg(long)]
        input: Option<std::path::PathBuf>,
        /// folder of PNG maps (8- or 16-bit grayscale)
        #[arg(long)]
        maps: Option<std::path::PathBuf>,
        /// folder of PNG masks named like the maps (optionally with `_mask`); no mask = normal
        #[arg(long)]
        gt: Option<std::path::PathBuf>,
        /// write the metrics as JSON here
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 64)]
        topk: usize,
        #[arg(long, default_value = "mvtec")]
        pro_variant: String,
    },
}

/// Model, extractor and scoring options shared by detect and eval.
#[derive(clap::Args)]
struct ScoreOpts {
    /// A model converted by `ran convert` (eval: or a folder of <category>.safetensors models).
    #[arg(long, alias = "models")]
    model: Option<std::path::PathBuf>,
    /// EfficientNet weights (.pth or safetensors) for the feature score.
    #[arg(long)]
    effnet: Option<std::path::PathBuf>,
    /// efficientnet-b0 … b7, efficientnet-lite0 … lite4, or custom:WIDTH,DEPTH,IMAGE_SIZE
    /// (default: what the model's metadata declares, else efficientnet-b4 as the paper).
    #[arg(long)]
    effnet_arch: Option<String>,
    /// Image size the EfficientNet's static padding is computed for (default: the variant's, 380 for B4).
    #[arg(long)]
    effnet_image_size: Option<usize>,
    /// KL score only, even if the model has a feature head.
    #[arg(long)]
    kl_only: bool,
    /// Indices of the respaced schedule.
    #[arg(long, value_delimiter = ',', default_value = "5,50,100")]
    timesteps: Vec<usize>,
    /// Respacing when the model's flags give none.
    #[arg(long, default_value = "250")]
    respacing: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weight of the feature score in the ensemble.
    #[arg(long, default_value_t = 0.5)]
    alpha: f32,
    /// weighted (α·feature + (1−α)·KL, the paper), sum (the released script), or calibrated
    /// (each map standardised by its pixel mean/std on normal images first: eval uses
    /// --calibration-images training images per category, detect the images --calibrate)
    /// [default: weighted; the demo: calibrated]
    #[arg(long)]
    ensemble: Option<String>,
    /// Normal images per category (class) that calibrate `--ensemble calibrated`.
    #[arg(long, default_value_t = 10)]
    calibration_images: usize,
    #[arg(long, default_value_t = 64)]
    topk: usize,
    /// Timestep of the feature pass: index (the official code's k) or tau (τ_k; one pass per k)
    /// [default: index; the demo model: tau, the timesteps its head was trained on]
    #[arg(long)]
    feature_timestep: Option<String>,
    /// auto (GPU if usable, else CPU), cpu, cuda, cuda:N, emulator
    #[arg(long, default_value = "auto")]
    device: String,
}

impl ScoreOpts {
    #[allow(clippy::too_many_arguments)]
    fn detect_args(self, inputs: Vec<String>, out: std::path::PathBuf, class: Option<String>, threshold: Option<String>, alpha_table: Option<std::path::PathBuf>, batch: usize, calibrate: Option<std::path::PathBuf>, range: String) -> Option<ran::commands::detect::DetectArgs> {
        Some(ran::commands::detect::DetectArgs {
            inputs,
            model: self.model?,
            effnet: self.effnet,
            effnet_arch: self.effnet_arch.unwrap_or_default(),
            effnet_image_size: self.effnet_image_size,
            kl_only: self.kl_only,
            out,
            timesteps: self.timesteps,
            respacing: self.respacing,
            seed: self.seed,
            alpha: self.alpha,
            ensemble: self.ensemble.unwrap_or_else(|| "weighted".into()),
            topk: self.topk,
            feature_timestep: self.feature_timestep.unwrap_or_else(|| "index".into()),
            class,
            classes: ran::commands::detect::MVTEC_CLASSES.iter().map(|s| s.to_string()).collect(),
            threshold,
            alpha_table,
            batch,
            calibrate,
            calibration_images: self.calibration_images,
            range,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            println!("ran {} ({})", env!("CARGO_PKG_VERSION"), env!("RAN_GIT_HASH"));
            println!("backends:");
            println!("  cpu   available: {}; CPU features: {}", ran::Cpu.name(), ran::sysinfo::cpu_features());
            let cuda = ran::sysinfo::probe_cuda();
            if cuda.available {
                match ran::backend::cuda::gpu::GpuDevice::open(0) {
                    Ok(d) => {
                        println!("  cuda  available: {} ({})", ran::backend::cuda::device::Device::describe(&d), cuda.detail);
                        let f = &ran::backend::cuda::kernels::KERNEL_FILES[0];
                        println!("        kernels load from: {:?} images", d.image_for(f));
                    }
                    Err(e) => println!("  cuda  unavailable: {e}; using the CPU backend"),
                }
            } else {
                println!("  cuda  unavailable: {}; using the CPU backend", cuda.detail);
            }
            println!("  kernels: {} in {} files; {}", ran::backend::cuda::kernels::KERNEL_FILES.iter().map(|f| f.kernels.len()).sum::<usize>(), ran::backend::cuda::kernels::KERNEL_FILES.len(), ran::backend::cuda::kernels::NVRTC_STATUS);
            println!("  cuda-emulator  available (runs the same kernels on the CPU; for tests)");
            ExitCode::SUCCESS
        }
        Command::Kernels { report } => {
            for f in ran::backend::cuda::kernels::KERNEL_FILES {
                let cubins: Vec<String> = f.cubins.iter().map(|(sm, b)| format!("sm_{sm} {} KiB", b.len() / 1024)).collect();
                println!("kernels/{}.cu  ptx: {}  cubin: {}", f.file, if f.ptx.is_some() { "compute_80" } else { "none" }, if cubins.is_empty() { "none".into() } else { cubins.join(", ") });
                for k in f.kernels {
                    println!("    {k}");
                }
            }
            if report {
                println!("\n{}", if ran::backend::cuda::kernels::PTXAS_REPORT.is_empty() { "no ptxas report: NVRTC was not available at build time" } else { ran::backend::cuda::kernels::PTXAS_REPORT });
            }
            ExitCode::SUCCESS
        }
        Command::Convert { checkpoint, flags, out, dtype, class_names, feature_extractor } => match ran::commands::convert::run(&checkpoint, &flags, &out, &dtype, &class_names, feature_extractor.as_deref()) {
            Ok(s) => {
                println!(
                    "wrote {}: {} tensors, {:.1} M parameters{}, {:.1} MB ({dtype})",
                    out.display(),
                    s.tensors,
                    s.params as f64 / 1e6,
                    if s.feature_head { " incl. the anomaly feature head" } else { "" },
                    s.bytes as f64 / 1e6
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Verify { reference, atol, rtol, score } => {
            let Some(model) = score.model.clone() else {
                eprintln!("error: give --model MODEL.safetensors");
                return ExitCode::from(2);
            };
            let opts = ran::commands::verify::DetectOptions {
                effnet: score.effnet,
                effnet_arch: score.effnet_arch.unwrap_or_default(),
                feature_timestep: score.feature_timestep.unwrap_or_else(|| "index".into()),
                alpha: score.alpha,
                ensemble: score.ensemble.unwrap_or_else(|| "weighted".into()),
                topk: score.topk,
            };
            let backend = match select(&score.device) {
                Ok(b) => b,
                Err(code) => return code,
            };
            let rows = ran::with_backend!(backend, |b| ran::commands::verify::run(b, &model, &reference, atol, rtol, &opts));
            match rows {
                Ok(rows) => {
                    println!("{:<14} {:>12} {:>12}  result (atol {atol:e}, rtol {rtol:e})", "output", "max abs err", "max rel err");
                    for r in &rows {
                        println!("{:<14} {:>12.3e} {:>12.3e}  {}", r.name, r.max_abs, r.max_rel, if r.pass { "pass" } else { "FAIL" });
                    }
                    if rows.iter().all(|r| r.pass) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(e),
            }
        }
        Command::Detect { inputs, demo, score, out, class, threshold, range, alpha_table, batch, calibrate } => {
            let (mut score, mut inputs, mut out, mut calibrate) = (score, inputs, out, calibrate);
            if demo {
                let (model, imgs) = match demo_paths() {
                    Ok(p) => p,
                    Err(e) => return fail(e),
                };
                demo_settings(&mut score, model);
                let model = score.model.clone().unwrap_or_default();
                let cats = match ran::models::class_names(&model) {
                    Ok(Some(c)) => c,
                    Ok(None) => return fail(ran::Error::BadFile { path: model, msg: "the model names no classes (ran convert --class-names): the demo picks its sample images by class".into() }),
                    Err(e) => return fail(e),
                };
                if score.ensemble.as_deref() == Some("calibrated") && calibrate.is_none() {
                    calibrate = Some(imgs.join("*").join("train").join("good").join("*.png"));
                }
                if inputs.is_empty() {
                    // per category: one normal image and one of each defect
                    for c in &cats {
                        for d in ["good", "scratch", "spot", "patch", "hole"] {
                            inputs.push(imgs.join(c).join("test").join(d).join("000.png").display().to_string());
                        }
                    }
                }
                if out == std::path::Path::new("ran-out") {
                    out = "ran-demo".into();
                }
                println!("demo: a toy model trained on CPU on textures, EfficientNet-Lite0 features (see weights/README.md)");
            }
            let device = score.device.clone();
            let Some(args) = score.detect_args(inputs, out.clone(), class, threshold, alpha_table, batch, calibrate, range) else {
                eprintln!("error: give --model MODEL.safetensors (made by `ran convert`)");
                return ExitCode::from(2);
            };
            let backend = match select(&device) {
                Ok(b) => b,
                Err(code) => return code,
            };
            match ran::with_backend!(backend, |b| ran::commands::detect::run(b, &args)) {
                Ok(o) => {
                    if o.kl_only {
                        println!("note: KL score only (the model has no feature head, or --kl-only / no --effnet)");
                    }
                    println!("{} image(s) scored, {} failed; results in {} (results.csv, report.html beside it)", o.processed, o.failed.len(), out.join("results.json").display());
                    if let Some(k) = o.above_normal {
                        println!("{k} of them score above every normal calibration image of their class (above_normal in results.json)");
                    }
                    if o.failed.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(e),
            }
        }
        Command::FitPadim { train, backbone, arch, dims, seed, image_size, out, dtype, batch, device } => {
            let args = ran::commands::fit_padim::FitArgs { train, backbone, arch: arch.unwrap_or_default(), dims, seed, image_size, out: out.clone(), dtype, batch };
            let backend = match select(&device) {
                Ok(b) => b,
                Err(code) => return code,
            };
            match ran::with_backend!(backend, |b| ran::commands::fit_padim::run(b, &args)) {
                Ok(o) => {
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
                    if o.skipped.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        println!("{} image(s) skipped", o.skipped.len());
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(e),
            }
        }
        Command::Reconstruct { inputs, demo, model, padim, out, iters, nd, lr, k, denoise_noise, every, respacing, class, seed, batch, device } => {
            let (mut inputs, mut model, mut padim, mut out, mut iters, mut every) = (inputs, model, padim, out, iters, every);
            if demo {
                let (m, imgs) = match demo_paths() {
                    Ok(p) => p,
                    Err(e) => return fail(e),
                };
                let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                model.get_or_insert(m);
                padim.get_or_insert(root.join("weights/demo/padim_demo_brick.safetensors"));
                if inputs.is_empty() {
                    for d in ["scratch", "spot", "patch", "hole"] {
                        inputs.push(imgs.join("brick/test").join(d).join("000.png").display().to_string());
                    }
                }
                if out == std::path::Path::new("ran-reconstruct") {
                    out = "ran-demo-reconstruct".into();
                }
                if iters == 100 {
                    iters = 20;
                }
                if every == 10 {
                    every = 4;
                }
                println!("demo: the toy diffusion model and a PaDiM fit on the demo's brick images (see weights/README.md); {iters} iterations");
            }
            let (Some(model), Some(padim)) = (model, padim) else {
                eprintln!("error: give --model MODEL.safetensors (ran convert) and --padim FIT.safetensors (ran fit-padim), or --demo");
                return ExitCode::from(2);
            };
            let cfg = ran::anomaly::reconstruct::ReconstructConfig { iters, nd, lr, k, denoise_noise, seed };
            let args = ran::commands::reconstruct::ReconstructArgs { inputs, model, padim, out: out.clone(), cfg, every, respacing, class, batch };
            let backend = match select(&device) {
                Ok(b) => b,
                Err(code) => return code,
            };
            match ran::with_backend!(backend, |b| ran::commands::reconstruct::run(b, &args)) {
                Ok(o) => {
                    println!("{} image(s) reconstructed, {} failed; results in {} (report.html beside it)", o.processed, o.failed.len(), out.join("reconstruct.json").display());
                    if o.failed.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(e),
            }
        }
        Command::Metrics { input, maps, gt, json, topk, pro_variant } => {
            let r = ran::commands::metrics::load_input(input.as_deref(), maps.as_deref(), gt.as_deref())
                .and_then(|(m, k, l, d)| ran::commands::metrics::compute(&m, &k, l, d, topk, &pro_variant));
            match r {
                Ok(m) => {
                    println!("pixel AUROC {:.6}\nAU-PRO (0.3, {pro_variant}) {:.6}\nimage AUROC {}", m.pixel_auroc, m.aupro, m.image_auroc.map(|v| format!("{v:.6}")).unwrap_or_else(|| "undefined (one class)".into()));
                    if let Some(j) = json {
                        let v = serde_json::json!({"pixel_auroc": m.pixel_auroc, "aupro": m.aupro, "image_auroc": m.image_auroc, "pro_variant": pro_variant, "topk": topk});
                        if let Err(e) = std::fs::write(&j, serde_json::to_string_pretty(&v).unwrap_or_default()) {
                            return fail(ran::Error::Io { path: j, source: e });
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Eval { data, categories, score, out, shard, merge, demo, pro_variant, alpha_sweep } => {
            let (mut score, mut data) = (score, data);
            if demo {
                match demo_paths() {
                    Ok((m, d)) => {
                        demo_settings(&mut score, m);
                        data = Some(d);
                    }
                    Err(e) => return fail(e),
                }
            }
            let Some(data) = data else {
                eprintln!("error: give --data ROOT (MVTec-AD or BTAD layout) or --demo");
                return ExitCode::from(2);
            };
            let shard = match shard.as_deref().map(|s| s.split_once('/').and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))) {
                None => None,
                Some(Some((i, n))) if n > 0 && i < n => Some((i, n)),
                Some(_) => {
                    eprintln!("error: --shard wants i/n with 0 <= i < n");
                    return ExitCode::from(2);
                }
            };
            let device = score.device.clone();
            let Some(detect) = score.detect_args(Vec::new(), out.clone(), None, None, None, 1, None, "auto".into()) else {
                eprintln!("error: give --model MODEL.safetensors (made by `ran convert`)");
                return ExitCode::from(2);
            };
            let ensemble = format!("{} (α = {})", detect.ensemble, detect.alpha);
            let args = ran::commands::eval::EvalArgs { data, categories, shard, merge, pro_variant, alpha_sweep: alpha_sweep.unwrap_or_default(), detect };
            let backend = match select(&device) {
                Ok(b) => b,
                Err(code) => return code,
            };
            match ran::with_backend!(backend, |b| ran::commands::eval::run(b, &args)) {
                Ok(r) if r.is_empty() => {
                    println!("shard done: maps cached in {}; run with --merge when every shard has finished", out.join("cache").display());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    println!("ensemble: {ensemble}");
                    print!("{}", ran::commands::eval::summary(&r));
                    println!("metrics in {} (metrics.csv, defects.csv, report.html beside it)", out.join("metrics.json").display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// The demo's model, extractor and scoring settings, where the user gave none (--model, --alpha, ... still apply).
fn demo_settings(score: &mut ScoreOpts, model: std::path::PathBuf) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    score.model.get_or_insert(model);
    if score.effnet.is_none() && !score.kl_only {
        score.effnet = Some(root.join("weights/demo/efficientnet_lite0_taps.safetensors"));
        // the extractor comes from the model's metadata (feature_extractor)
        // the demo head was trained on the true timesteps: score it with τ_k unless told otherwise
        score.feature_timestep.get_or_insert_with(|| "tau".into());
        // the toy's feature error has no scale of its own: standardise both maps on normal images
        score.ensemble.get_or_insert_with(|| "calibrated".into());
    }
}

/// The shipped demo model and data set, next to the sources this binary was built from.
fn demo_paths() -> ran::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("weights/demo/unet_demo.safetensors");
    let data = root.join("examples/demo");
    for p in [&model, &data] {
        if !p.exists() {
            return Err(ran::Error::Io { path: p.clone(), source: std::io::Error::new(std::io::ErrorKind::NotFound, "the demo files ship with the repository; run from a checkout") });
        }
    }
    Ok((model, data))
}

/// The backend for `--device`, or the exit code after saying why not.
fn select(device: &str) -> Result<ran::backend::select::AnyBackend, ExitCode> {
    ran::backend::select::AnyBackend::select(device).map_err(fail)
}

fn fail(e: ran::Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}
