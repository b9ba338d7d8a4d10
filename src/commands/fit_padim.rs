//! `ran fit-padim`: the PaDiM statistics of a category's normal images (docs/method.md §4), written with
//! the backbone into one file for `ran reconstruct`.

use crate::anomaly::padim::{fit_stats_streamed, host_features, random_channels, split_ids, COV_EPS};
use crate::anomaly::padim_file::{self, PadimInfo};
use crate::backend::cpu::mahalanobis::packed_len;
use crate::backend::Backend;
use crate::error::AtPath;
use crate::eval::inputs::collect_inputs;
use crate::io::image::{center_crop_arr, load_rgb, to_chw};
use crate::io::safetensors::Dtype;
use crate::models::open_weights;
use crate::models::resnet::{state_dict_prefix, ResNet, ResNetConfig};
use crate::models::weights::{Loader, Prefixed, Weights};
use crate::{Error, Result};
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct FitArgs {
    pub train: Vec<String>,
    pub backbone: PathBuf,
    /// expected architecture (checked against the one inferred from the weights)
    pub arch: Option<String>,
    pub dims: usize,
    pub seed: u64,
    pub image_size: usize,
    pub out: PathBuf,
    /// storage of the statistics and the backbone: F32 or F16
    pub dtype: Dtype,
    pub batch: usize,
}

pub struct FitOutcome {
    pub images: usize,
    pub skipped: Vec<(PathBuf, String)>,
    pub info: PadimInfo,
    pub bytes: u64,
    pub peak_rss_mb: Option<f64>,
}

fn bar(n: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(n);
    pb.set_style(indicatif::ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what}, {{elapsed}} (eta {{eta}})")).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    pb
}

pub fn run<B: Backend>(b: &B, a: &FitArgs) -> Result<FitOutcome> {
    let dtype = a.dtype;
    if a.image_size == 0 || a.image_size % 16 != 0 {
        return Err(Error::InvalidArgument(format!("--image-size {}: a positive multiple of 16 (the backbone's layer3 stride)", a.image_size)));
    }
    let files = collect_inputs(&a.train)?;
    let inputs: Vec<&std::path::Path> = std::iter::once(a.backbone.as_path()).chain(files.iter().map(|p| p.as_path())).collect();
    crate::io::files::refuse_overwriting_input(&a.out, &inputs)?;
    let file = open_weights(&a.backbone)?;
    let prefix = state_dict_prefix(&*file)
        .ok_or_else(|| Error::BadFile { path: a.backbone.clone(), msg: "not a torchvision ResNet state dict (no conv1.weight / layer1.0.conv1.weight under any prefix)".into() })?;
    let w = Prefixed { inner: &*file, prefix };
    let w = &w;
    let cfg = ResNetConfig::infer(w)?;
    if let Some(arch) = &a.arch {
        if ResNetConfig::from_name(arch)? != cfg {
            return Err(Error::BadFile { path: a.backbone.clone(), msg: format!("the weights are a {cfg:?}, not {arch}") });
        }
    }
    let l = Loader::new(w, b).ignoring_prefixes(ResNet::<B>::unused_prefixes());
    let net = ResNet::load(&cfg, &l)?;
    l.finish()?;
    let names: Vec<String> = l.loaded().into_iter().map(|(n, _)| n).filter(|n| w.contains(n)).collect();
    let chans = net.channels();
    let channels = random_channels(chans.iter().sum(), a.dims, a.seed)?;
    let ids = split_ids(&channels, chans)?;
    let (s, d) = (a.image_size, channels.len());
    let (fh, fw) = (s / 4, s / 4);
    let p = fh * fw;
    let need = fit_memory_estimate(files.len(), p, d, s, a.batch.max(1), file_bytes(&a.backbone));
    eprintln!(
        "PaDiM: {} images, {:?} backbone, {d} of {} channels at {fh}×{fw}; features {:.2} GB in memory, inverse factors {:.2} GB streamed to the file; about {:.2} GB of memory in all",
        files.len(),
        cfg.block,
        chans.iter().sum::<usize>(),
        (files.len() * p * d * 4) as f64 / 1e9,
        (p * packed_len(d) * 4) as f64 / 1e9,
        need as f64 / 1e9,
    );
    crate::sysinfo::check_memory("fit-padim", need, "--dims, --image-size, --batch or the number of training images")?;
    // pass 1: features of every image, on the host as [N][P][D]
    let pb = bar(files.len() as u64, "images");
    let mut feats: Vec<f32> = Vec::new();
    let mut skipped = Vec::new();
    let mut n = 0;
    for chunk in files.chunks(a.batch.max(1)) {
        let mut x = Vec::new();
        for f in chunk {
            match load_rgb(f) {
                Ok(img) => x.extend(to_chw(&center_crop_arr(&img, s))),
                Err(e) => {
                    pb.suspend(|| eprintln!("skipped {}: {e}", f.display()));
                    skipped.push((f.clone(), e.to_string()));
                }
            }
            pb.inc(1);
        }
        let k = x.len() / (3 * s * s);
        if k == 0 {
            continue;
        }
        let (v, hw) = host_features(b, &net, &ids, &b.from_host(&[k, 3, s, s], &x)?)?;
        if hw != (fh, fw) {
            return Err(Error::InvalidArgument(format!("layer1 came out {hw:?}, expected {fh}×{fw}")));
        }
        feats.extend_from_slice(&v);
        n += k;
    }
    pb.finish_and_clear();
    if n < 2 {
        return Err(Error::InvalidArgument(format!("{}: {n} usable image(s); PaDiM needs at least 2", a.train.join(", "))));
    }
    // pass 2, streamed into the file: per-position mean and Cholesky-factored inverse covariance
    // (f64), 256 positions at a time
    let info = PadimInfo {
        backbone: format!("{:?} {:?} width {}", cfg.block, cfg.blocks, cfg.width_per_group),
        channels,
        layer_channels: chans,
        image_size: (s, s),
        feature_size: (fh, fw),
        eps: COV_EPS,
        n_train: n,
    };
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("backbone_file".into(), a.backbone.display().to_string());
    meta.insert("train".into(), a.train.join(","));
    meta.insert("seed".into(), a.seed.to_string());
    meta.insert("generator".into(), format!("ran fit-padim {}", env!("CARGO_PKG_VERSION")));
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).at_path(parent)?;
    }
    const CHUNK: usize = 256;
    let pb = bar(p as u64, "positions");
    padim_file::save_streamed(&a.out, w, &names, &info, dtype, &meta, |sink| {
        fit_stats_streamed(&feats, n, p, d, COV_EPS, CHUNK, |c| {
            pb.inc((c.len() / packed_len(d)) as u64);
            sink(c)
        })
    })?;
    pb.finish_and_clear();
    let bytes = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    Ok(FitOutcome { images: n, skipped, info, bytes, peak_rss_mb: crate::sysinfo::peak_rss_mb() })
}

fn file_bytes(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// An upper estimate of fit-padim's memory, in bytes: the features of every image (f32, kept for
/// the second pass), per worker thread the f64 working set of one position (centred features and
/// two d×d matrices), one chunk of 256 positions' factors, the backbone's weights, and its
/// activations for one batch (the stem to layer3 of a ResNet keep ≈ 60 floats per input pixel
/// alive at once: 64 channels at ½, 256 at ¼, 512 at ⅛, 1024 at 1/16, with the bottlenecks'
/// intermediates).
pub fn fit_memory_estimate(images: usize, positions: usize, dims: usize, image_size: usize, batch: usize, weights_bytes: u64) -> u64 {
    let threads = rayon::current_num_threads() as u64;
    let (n, p, d, s, b) = (images as u64, positions as u64, dims as u64, image_size as u64, batch as u64);
    let feats = n * p * d * 4;
    let per_thread = (n * d + 2 * d * d) * 8;
    let chunk = 256 * (d * (d + 1) / 2) * 4;
    let activations = b * 60 * s * s * 4;
    feats + threads * per_thread + chunk + weights_bytes + activations
}
