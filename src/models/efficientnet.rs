//! EfficientNet (lukemelas `efficientnet-pytorch` layout and parameter names, the paper's feature
//! extractor; docs/method.md §2): B0–B7 from their compound coefficients, or any width/depth, and the
//! EfficientNet-Lite variants of `efficientnet-lite-pytorch` (same names; ReLU6, no SE), with static
//! "same" padding computed for a configured image size (380 for B4, as the paper's code) whatever
//! the input size; BatchNorm folded for inference (eps 1e-3), swish, squeeze-excite. `features`
//! returns the last blocks of stages 0, 1, 2 and 4 (strides 2, 4, 8, 16), bilinearly resized to
//! S×S and concatenated: 24+32+56+160 = 272 channels for B4.
//!
//! Each block's BN bias + activation, squeeze-excite's squeeze and the residual add run in the
//! convs' output passes (`Backend::conv2d_act`, `conv2d_add`): on the CPU one pass over each
//! activation instead of four (src/backend/cpu/conv_act.rs), the same values bit for bit except
//! the squeeze's mean (an f64 sum in another order).

use super::layers::{Conv1x1, ConvBn};
use super::weights::Loader;
use crate::backend::{Activation, Backend, Conv2dParams, Padding2d};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The base network (B0): (repeats, kernel, stride, expand, in, out) per stage; se ratio 0.25.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] =
    [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)];

#[derive(Clone, Debug, PartialEq)]
pub struct EffNetConfig {
    pub width: f64,
    pub depth: f64,
    /// the image size the static "same" padding is computed for
    pub image_size: usize,
    /// stages whose last block is tapped
    pub tap_stages: Vec<usize>,
    /// EfficientNet-Lite (efficientnet-lite-pytorch): ReLU6, no squeeze-excite, stem and the first
    /// and last stages not scaled
    pub lite: bool,
}

impl EffNetConfig {
    /// "efficientnet-b0" … "efficientnet-b7" (efficientnet-pytorch's table), taps of the paper.
    /// Also `custom:WIDTH,DEPTH,IMAGE_SIZE` for other compound coefficients.
    pub fn from_name(name: &str) -> Result<Self> {
        if let Some(rest) = name.strip_prefix("custom:") {
            let v: Vec<&str> = rest.split(',').collect();
            let bad = || Error::InvalidArgument(format!("`{name}`: custom:WIDTH,DEPTH,IMAGE_SIZE expected"));
            if v.len() != 3 {
                return Err(bad());
            }
            let (w, d, r) = (v[0].parse().map_err(|_| bad())?, v[1].parse().map_err(|_| bad())?, v[2].parse().map_err(|_| bad())?);
            let cfg = EffNetConfig { width: w, depth: d, image_size: r, tap_stages: vec![0, 1, 2, 4], lite: false };
            cfg.validate().map_err(|e| Error::InvalidArgument(format!("`{name}`: {e}")))?;
            return Ok(cfg);
        }
        let lite = match name {
            "efficientnet-lite0" => Some((1.0, 1.0, 224)),
            "efficientnet-lite1" => Some((1.0, 1.1, 240)),
            "efficientnet-lite2" => Some((1.1, 1.2, 260)),
            "efficientnet-lite3" => Some((1.2, 1.4, 280)),
            "efficientnet-lite4" => Some((1.4, 1.8, 300)),
            _ => None,
        };
        if let Some((w, d, r)) = lite {
            return Ok(EffNetConfig { width: w, depth: d, image_size: r, tap_stages: vec![0, 1, 2, 4], lite: true });
        }
        let (w, d, r) = match name {
            "efficientnet-b0" => (1.0, 1.0, 224),
            "efficientnet-b1" => (1.0, 1.1, 240),
            "efficientnet-b2" => (1.1, 1.2, 260),
            "efficientnet-b3" => (1.2, 1.4, 300),
            "efficientnet-b4" => (1.4, 1.8, 380),
            "efficientnet-b5" => (1.6, 2.2, 456),
            "efficientnet-b6" => (1.8, 2.6, 528),
            "efficientnet-b7" => (2.0, 3.1, 600),
            _ => return Err(Error::InvalidArgument(format!("unknown EfficientNet `{name}` (efficientnet-b0 … b7, efficientnet-lite0 … lite4, custom:W,D,SIZE)"))),
        };
        Ok(EffNetConfig { width: w, depth: d, image_size: r, tap_stages: vec![0, 1, 2, 4], lite: false })
    }

    /// Coefficients a network can be built from: finite, positive and not absurd (B7 is 2.0/3.1),
    /// an image size of at least one pixel, taps that name stages.
    pub fn validate(&self) -> Result<()> {
        let ok = |x: f64| x.is_finite() && x > 0.0 && x <= 16.0;
        if !ok(self.width) || !ok(self.depth) {
            return Err(Error::InvalidArgument(format!("EfficientNet width {} and depth {} must be finite, > 0 and ≤ 16", self.width, self.depth)));
        }
        if self.image_size == 0 || self.image_size > 8192 {
            return Err(Error::InvalidArgument(format!("EfficientNet image size {} (1 … 8192)", self.image_size)));
        }
        if let Some(s) = self.tap_stages.iter().find(|&&s| s >= STAGES.len()) {
            return Err(Error::InvalidArgument(format!("EfficientNet tap stage {s} (stages 0 … {})", STAGES.len() - 1)));
        }
        Ok(())
    }

    /// efficientnet-pytorch's round_filters (depth_divisor 8).
    pub fn round_filters(&self, f: usize) -> usize {
        let x = f as f64 * self.width;
        let mut n = (8usize).max(((x + 4.0) as usize) / 8 * 8);
        if (n as f64) < 0.9 * x {
            n += 8;
        }
        n
    }

    pub fn round_repeats(&self, r: usize) -> usize {
        (self.depth * r as f64).ceil() as usize
    }

    /// Blocks in stage `s` (Lite keeps the first and last stages unscaled).
    fn stage_repeats(&self, s: usize) -> usize {
        if self.lite && (s == 0 || s == STAGES.len() - 1) {
            STAGES[s].0
        } else {
            self.round_repeats(STAGES[s].0)
        }
    }

    /// Input channels of stage `s` (Lite's stem stays at 32).
    fn stage_in(&self, s: usize) -> usize {
        if self.lite && s == 0 {
            32
        } else {
            self.round_filters(STAGES[s].4)
        }
    }

    fn stem_channels(&self) -> usize {
        if self.lite {
            32
        } else {
            self.round_filters(32)
        }
    }

    /// Index of the last block of each stage.
    pub fn stage_ends(&self) -> Vec<usize> {
        let mut i = 0usize;
        (0..STAGES.len())
            .map(|s| {
                i += self.stage_repeats(s);
                i.saturating_sub(1) // (repeats ≥ 1 in every validated configuration)
            })
            .collect()
    }

    /// Channels of the taps, in order.
    pub fn tap_channels(&self) -> Vec<usize> {
        self.tap_stages.iter().map(|&s| self.round_filters(STAGES[s].5)).collect()
    }
}

/// TensorFlow "same" padding for input size `size`, kernel k, stride s, as conv parameters.
fn same_pad(size: usize, k: usize, s: usize, groups: usize) -> Conv2dParams {
    let out = size.div_ceil(s);
    let pad = ((out - 1) * s + k).saturating_sub(size);
    let (a, b) = (pad / 2, pad - pad / 2);
    Conv2dParams { stride: (s, s), padding: Padding2d::lrtb(a, b, a, b), groups }
}

/// A conv + BN of the lukemelas layout (BN eps 1e-3) with static same padding for `size`.
#[allow(clippy::too_many_arguments)]
fn conv_bn<B: Backend>(l: &Loader<B>, conv: &str, bn: &str, cin: usize, cout: usize, k: usize, stride: usize, groups: usize, size: usize) -> Result<ConvBn<B>> {
    ConvBn::load(l, conv, bn, cin, cout, k, same_pad(size, k, stride, groups), 1e-3)
}

struct MbConv<B: Backend> {
    expand: Option<ConvBn<B>>,
    depthwise: ConvBn<B>,
    se: Option<(Conv1x1<B>, Conv1x1<B>)>,
    project: ConvBn<B>,
    residual: bool,
}

pub struct EfficientNet<B: Backend> {
    pub cfg: EffNetConfig,
    stem: ConvBn<B>,
    blocks: Vec<MbConv<B>>,
    taps: Vec<usize>,
    act: Activation,
}

impl<B: Backend> EfficientNet<B> {
    /// Loads the feature part; the classifier (`_conv_head`, `_bn1`, `_fc`) and integer buffers
    /// may be present and are ignored.
    pub fn load(cfg: &EffNetConfig, l: &Loader<B>) -> Result<Self> {
        cfg.validate()?;
        let mut size = cfg.image_size;
        let c0 = cfg.stem_channels();
        let stem = conv_bn(l, "_conv_stem", "_bn0", 3, c0, 3, 2, 1, size)?;
        size = size.div_ceil(2);
        let mut blocks = Vec::new();
        // Blocks after the last tap do not contribute to the features: not built, not computed.
        let last_stage = cfg.tap_stages.iter().copied().max().unwrap_or(6);
        for (si, &(_, k, s, e, _, cout)) in STAGES.iter().enumerate().take(last_stage + 1) {
            let (cin, cout) = (cfg.stage_in(si), cfg.round_filters(cout));
            for j in 0..cfg.stage_repeats(si) {
                let (inp, stride) = if j == 0 { (cin, s) } else { (cout, 1) };
                let i = blocks.len();
                let p = |n: &str| format!("_blocks.{i}.{n}");
                let mid = inp * e;
                let expand = if e != 1 { Some(conv_bn(l, &p("_expand_conv"), &p("_bn0"), inp, mid, 1, 1, 1, size)?) } else { None };
                let depthwise = conv_bn(l, &p("_depthwise_conv"), &p("_bn1"), mid, mid, k, stride, mid, size)?;
                size = size.div_ceil(stride);
                let sq = (1usize).max((inp as f64 * 0.25) as usize);
                let se = if cfg.lite { None } else { Some((Conv1x1::load(l, &p("_se_reduce"), mid, sq)?, Conv1x1::load(l, &p("_se_expand"), sq, mid)?)) };
                let project = conv_bn(l, &p("_project_conv"), &p("_bn2"), mid, cout, 1, 1, 1, size)?;
                blocks.push(MbConv { expand, depthwise, se, project, residual: stride == 1 && inp == cout });
            }
        }
        let ends = cfg.stage_ends();
        let taps = cfg.tap_stages.iter().map(|&s| ends.get(s).copied().ok_or_else(|| Error::InvalidArgument(format!("no stage {s}")))).collect::<Result<_>>()?;
        Ok(EfficientNet { cfg: cfg.clone(), stem, blocks, taps, act: if cfg.lite { Activation::Relu6 } else { Activation::Silu } })
    }

    /// Padding of each block's depthwise conv (for checking the static "same" rule).
    pub fn depthwise_paddings(&self) -> Vec<Padding2d> {
        self.blocks.iter().map(|b| b.depthwise.p.padding).collect()
    }

    pub fn stem_padding(&self) -> Padding2d {
        self.stem.p.padding
    }

    /// Prefixes of the tensors an EfficientNet checkpoint carries that the feature extractor does
    /// not use: the classifier and the blocks after the last tap.
    pub fn unused_prefixes(cfg: &EffNetConfig) -> Vec<String> {
        let ends = cfg.stage_ends();
        let last = cfg.tap_stages.iter().filter_map(|&s| ends.get(s).copied()).max().unwrap_or(0);
        let total = *cfg.stage_ends().last().unwrap_or(&0);
        let mut v: Vec<String> = ["_conv_head.", "_bn1.", "_fc."].iter().map(|s| s.to_string()).collect();
        v.extend((last + 1..=total).map(|i| format!("_blocks.{i}.")));
        v
    }

    /// The tapped block outputs for x [N,3,H,W] (in [-1, 1], no ImageNet normalisation, as the paper),
    /// run where the backend's loops start cheapest (`Backend::on_workers`: ~250 small ops; on the
    /// CPU off unless `RAN_CPU_ON_WORKERS=1`).
    pub fn taps(&self, b: &B, x: &Tensor<B>) -> Result<Vec<Tensor<B>>> {
        b.on_workers(|| self.taps_here(b, x))
    }

    fn taps_here(&self, b: &B, x: &Tensor<B>) -> Result<Vec<Tensor<B>>> {
        let act = Some(self.act);
        let mut h = self.stem.forward(b, x, act)?;
        let mut out = Vec::with_capacity(self.taps.len());
        for (i, blk) in self.blocks.iter().enumerate() {
            let inp = h.clone();
            if let Some(e) = &blk.expand {
                h = e.forward(b, &h, act)?;
            }
            // each conv's BN bias and activation, the squeeze and the residual add are done in the
            // convs' output passes (Backend::conv2d_act / conv2d_add)
            let res = blk.residual.then_some(&inp);
            h = match &blk.se {
                Some((reduce, expand)) => {
                    let (d, s) = blk.depthwise.forward_with_mean(b, &h, self.act)?;
                    let s = expand.forward(b, &b.activation(&reduce.forward(b, &s)?, Activation::Silu)?)?;
                    // the gate d ⊙ σ(s) goes into the projection's weights (ConvBn::forward_input_scaled)
                    blk.project.forward_input_scaled(b, &d, &b.activation(&s, Activation::Sigmoid)?, res)?
                }
                None => {
                    let d = blk.depthwise.forward(b, &h, act)?;
                    match res {
                        Some(r) => blk.project.forward_add(b, &d, r)?,
                        None => blk.project.forward(b, &d, None)?,
                    }
                }
            };
            if self.taps.contains(&i) {
                out.push(h.clone());
            }
        }
        Ok(out)
    }

    /// The taps resized (bilinear, align_corners=False) to s×s and concatenated: [N, ΣC, s, s].
    pub fn features(&self, b: &B, x: &Tensor<B>, s: usize) -> Result<Tensor<B>> {
        b.on_workers(|| {
            let taps = self.taps_here(b, x)?;
            let resized: Vec<Tensor<B>> = taps.iter().map(|t| b.resize_bilinear(t, s, s)).collect::<Result<_>>()?;
            b.concat_channels(&resized.iter().collect::<Vec<_>>())
        })
    }
}
