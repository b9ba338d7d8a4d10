//! The models and inputs every benchmark times, built the same way for `ran bench` and the cargo
//! benches (benches/*.rs): random weights seeded by tensor name (`Loader::synthetic`), seeded
//! inputs. The PyTorch sides (tools/bench/torch_*.py) build the same architectures from the
//! upstream packages; the values differ, the work does not.

use crate::anomaly::noise::gaussian;
use crate::anomaly::score::{FeatureTimestep, ScoreConfig, Scorer};
use crate::backend::{Backend, Conv2dParams};
use crate::diffusion::{BetaSchedule, Diffusion};
use crate::io::flags::ModelFlags;
use crate::models::efficientnet::{EffNetConfig, EfficientNet};
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::models::unet::{UNet, FEAT_TAP};
use crate::models::weights::{synth_values, Loader, Synthetic};
use crate::{Error, Result, Tensor};
use std::collections::BTreeMap;

/// The paper's 553M-parameter guided-diffusion UNet at 256² (MVTec-AD, 15 classes).
pub const PAPER_FLAGS: &str = "--image_size 256 --num_channels 256 --num_res_blocks 2 --attention_resolutions 32,16,8 \
--num_head_channels 64 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True \
--num_classes 15 --channel_mult 1,1,2,2,4,4";

/// The shipped demo model's config (weights/README.md) with its feature head at 16²: the size
/// `ran train` runs on a CPU.
pub const DEMO_FLAGS: &str = "--image_size 64 --num_channels 32 --num_res_blocks 2 --channel_mult 1,2,2,2 --attention_resolutions 16,8 \
--num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --num_classes 3 \
--diffusion_steps 1000 --noise_schedule linear --feat_shape 16";

/// Upstream guided_diffusion's class count when the flags name none.
const UPSTREAM_NUM_CLASSES: usize = 1000;

/// Channels of output_blocks[FEAT_TAP], the input of the paper's feature head: the output blocks
/// run the levels top-down, num_res_blocks + 1 blocks per level.
pub fn feat_tap_channels(flags: &ModelFlags) -> Result<usize> {
    let mult = flags.channel_mult()?;
    let per_level = flags.num_res_blocks + 1;
    let from_top = FEAT_TAP / per_level;
    if from_top >= mult.len() {
        return Err(Error::InvalidArgument(format!("the feature head taps output_blocks[{FEAT_TAP}] but these flags give {} output blocks", per_level * mult.len())));
    }
    Ok((mult[mult.len() - 1 - from_top] * flags.num_channels as f64) as usize)
}

/// The class count of a class-conditional model (`--num_classes`, else upstream's 1000).
pub fn num_classes(flags: &ModelFlags) -> Option<usize> {
    flags.class_cond.then(|| flags.num_classes.unwrap_or(UPSTREAM_NUM_CLASSES))
}

/// The UNet of `flags` with random weights, with the paper's feature head when `head`.
pub fn synthetic_unet<B: Backend>(b: &B, flags: &ModelFlags, head: bool, seed: u64) -> Result<UNet<B>> {
    synthetic_unet_stored(b, flags, head, seed, false)
}

/// `synthetic_unet`, with `f16` its weights rounded to f16 and loaded as from an f16 file (which
/// the CPU backend keeps in f16: backend/cpu/resident.rs).
pub fn synthetic_unet_stored<B: Backend>(b: &B, flags: &ModelFlags, head: bool, seed: u64, f16: bool) -> Result<UNet<B>> {
    let mut shapes = BTreeMap::new();
    if let Some(n) = num_classes(flags) {
        shapes.insert("label_emb.weight".to_string(), vec![n, 4 * flags.num_channels]);
    }
    if head {
        shapes.insert("feat_rec1.0.weight".to_string(), vec![feat_tap_channels(flags)?]);
    }
    let l = Loader::synthetic(b, Synthetic { seed, shapes });
    UNet::load(flags, &if f16 { l.stored_as_f16() } else { l })
}

/// The inputs of one UNet call: x [batch, 3, S, S], t = 201 for every image, class labels.
pub struct UNetInputs<B: Backend> {
    pub x: Tensor<B>,
    pub t: Tensor<B>,
    pub y: Option<Vec<usize>>,
}

pub fn unet_inputs<B: Backend>(b: &B, flags: &ModelFlags, batch: usize) -> Result<UNetInputs<B>> {
    let s = flags.image_size;
    let dims = [batch, 3, s, s];
    let x = b.from_host(&dims, &synth_values(7, "x", &dims))?;
    let t = b.from_host(&[batch], &vec![201.0; batch])?;
    let y = num_classes(flags).map(|n| (0..batch).map(|i| (3 + i) % n).collect());
    Ok(UNetInputs { x, t, y })
}

/// EfficientNet `name` (efficientnet-b4, …) with random weights and BN statistics; blocks after
/// the last tap are not built.
pub fn synthetic_effnet<B: Backend>(b: &B, name: &str) -> Result<EfficientNet<B>> {
    let cfg = EffNetConfig::from_name(name)?;
    EfficientNet::load(&cfg, &Loader::synthetic(b, Synthetic { seed: 5, shapes: BTreeMap::new() }))
}

/// A torchvision ResNet (`wide_resnet50_2`, …) to layer3 with random weights.
pub fn synthetic_resnet<B: Backend>(b: &B, name: &str) -> Result<ResNet<B>> {
    let cfg = ResNetConfig::from_name(name)?;
    ResNet::load(&cfg, &Loader::synthetic(b, Synthetic { seed: 3, shapes: BTreeMap::new() }))
}

/// Seeded images in [−1, 1)-ish range: [batch, 3, s, s].
pub fn images<B: Backend>(b: &B, batch: usize, s: usize) -> Result<Tensor<B>> {
    let dims = [batch, 3, s, s];
    b.from_host(&dims, &synth_values(7, "x", &dims))
}

/// The gradient-denoising backbone's work: forward to layer3 and the input gradient of the sum
/// of the three layer outputs (what `Padim::loss_and_grad` runs through the ResNet). Returns
/// ∂/∂x, read back to the host (which waits for the device).
pub fn backbone_grad<B: Backend>(b: &B, resnet: &ResNet<B>, x: &Tensor<B>) -> Result<Vec<f32>> {
    let (outs, tape) = resnet.layers_taped(b, x)?;
    let ones: Vec<Tensor<B>> = outs.iter().map(|o| b.from_host(o.dims(), &vec![1.0; o.numel()])).collect::<Result<_>>()?;
    let g = resnet.layers_x_backward(b, &tape, [Some(&ones[0]), Some(&ones[1]), Some(&ones[2])])?;
    b.to_host(&g)
}

/// The detection pipeline of the paper on random weights: timesteps 5, 50, 100 of the linear
/// 1000-step schedule respaced to 250, KL + feature maps, α = 0.5.
pub fn scorer<'a, B: Backend>(unet: &'a UNet<B>, effnet: &'a EfficientNet<B>, mode: FeatureTimestep) -> Result<Scorer<'a, B>> {
    let diffusion = Diffusion::new(BetaSchedule::Linear, 1000, "250")?;
    Ok(Scorer { unet, effnet: Some(effnet), diffusion, cfg: ScoreConfig { feature_timestep: mode, ..ScoreConfig::default() } })
}

/// ε for each of the scorer's timesteps, [batch, 3, s, s] each.
pub fn detect_noise<B: Backend>(b: &B, timesteps: &[usize], batch: usize, s: usize) -> Result<Vec<Tensor<B>>> {
    timesteps.iter().map(|&k| b.from_host(&[batch, 3, s, s], &gaussian(0, k as u64, batch * 3 * s * s))).collect()
}

/// Uniform values in [−0.5, 0.5) from a seeded LCG (kernel benchmarks: only the work matters).
pub fn rand_tensor<B: Backend>(b: &B, dims: &[usize], seed: u64) -> Result<Tensor<B>> {
    b.from_host_vec(dims, crate::optable::sizes::uniform(dims.iter().product(), seed))
}

/// One convolution: x [batch, c, h, w], w [o, c, k, k], bias [o], stride 1, padding k/2 ("same"
/// for odd k).
pub struct ConvCase<B: Backend> {
    pub x: Tensor<B>,
    pub w: Tensor<B>,
    pub bias: Tensor<B>,
    pub p: Conv2dParams,
}

pub fn conv_case<B: Backend>(b: &B, batch: usize, [c, h, w]: [usize; 3], o: usize, k: usize) -> Result<ConvCase<B>> {
    Ok(ConvCase { x: rand_tensor(b, &[batch, c, h, w], 1)?, w: rand_tensor(b, &[o, c, k, k], 2)?, bias: rand_tensor(b, &[o], 3)?, p: Conv2dParams::new(1, k / 2, 1) })
}
