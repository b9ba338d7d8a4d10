//! ResNet in torchvision's layout and parameter names, up to layer3, BatchNorm folded for
//! inference (eps 1e-5): Bottleneck (wide_resnet50_2 — PaDiM's backbone in the paper's gradient
//! denoising, docs/method.md §4 — resnet50, wide_resnet101_2) and BasicBlock (resnet18, resnet34) networks.
//! Input in [-1, 1] without ImageNet normalisation, as the paper's code. `layers` returns layer1,
//! layer2 and layer3 (strides 4, 8, 16); `layers_taped` + `layers_x_backward` give the input
//! gradient by a manual backward pass that keeps only the block outputs it needs.

use super::layers::ConvBn;
use super::weights::{Loader, Weights};
use crate::backend::{Activation, Backend, Conv2dParams, Pool2dParams};
use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// two 3×3 convolutions (resnet18/34)
    Basic,
    /// 1×1 → 3×3 → 1×1 with expansion 4 (resnet50, wide_resnet50_2)
    Bottleneck,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    pub block: BlockKind,
    /// blocks in layer1, layer2, layer3
    pub blocks: [usize; 3],
    /// torchvision's width_per_group (64 for resnet50, 128 for wide_resnet50_2)
    pub width_per_group: usize,
}

pub const NAMES: &str = "wide_resnet50_2, wide_resnet101_2, resnet50, resnet101, resnet18, resnet34";

impl ResNetConfig {
    pub fn from_name(name: &str) -> Result<Self> {
        let (block, blocks, width_per_group) = match name {
            "wide_resnet50_2" => (BlockKind::Bottleneck, [3, 4, 6], 128),
            "wide_resnet101_2" => (BlockKind::Bottleneck, [3, 4, 23], 128),
            "resnet50" => (BlockKind::Bottleneck, [3, 4, 6], 64),
            "resnet101" => (BlockKind::Bottleneck, [3, 4, 23], 64),
            "resnet18" => (BlockKind::Basic, [2, 2, 2], 64),
            "resnet34" => (BlockKind::Basic, [3, 4, 6], 64),
            _ => return Err(Error::InvalidArgument(format!("unknown backbone `{name}` ({NAMES})"))),
        };
        Ok(ResNetConfig { block, blocks, width_per_group })
    }

    /// The configuration a torchvision state dict was saved from: block kind from
    /// `layer1.0.conv3`, width from `layer1.0.conv1`, block counts from the names.
    pub fn infer(w: &dyn Weights) -> Result<Self> {
        let names = w.names();
        let missing = |what: &str| Error::BadFile { path: w.path().to_path_buf(), msg: format!("not a torchvision ResNet state dict: {what}") };
        if !w.contains("conv1.weight") || !w.contains("layer1.0.conv1.weight") {
            return Err(missing("no conv1.weight / layer1.0.conv1.weight"));
        }
        let block = if w.contains("layer1.0.conv3.weight") { BlockKind::Bottleneck } else { BlockKind::Basic };
        let mut blocks = [0usize; 3];
        for (li, n) in blocks.iter_mut().enumerate() {
            while names.iter().any(|s| s == &format!("layer{}.{}.conv1.weight", li + 1, *n)) {
                *n += 1;
            }
            if *n == 0 {
                return Err(missing(&format!("no blocks in layer{}", li + 1)));
            }
        }
        let width_per_group = match block {
            BlockKind::Basic => 64,
            BlockKind::Bottleneck => super::weights::rows_of(w, "layer1.0.conv1.weight")?,
        };
        Ok(ResNetConfig { block, blocks, width_per_group })
    }
}

/// The prefix under which a state dict keeps a torchvision ResNet: "" for torchvision's own
/// files, e.g. "module." (DataParallel) or "backbone." when the network sits in a bigger model.
pub fn state_dict_prefix(w: &dyn Weights) -> Option<String> {
    if w.contains("conv1.weight") {
        return Some(String::new());
    }
    w.names().into_iter().filter_map(|n| n.strip_suffix("layer1.0.conv1.weight").map(String::from)).find(|p| w.contains(&format!("{p}conv1.weight")))
}

/// A conv + BN of the torchvision layout (BN eps 1e-5), symmetric padding.
#[allow(clippy::too_many_arguments)]
fn conv_bn<B: Backend>(l: &Loader<B>, conv: &str, bn: &str, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Result<ConvBn<B>> {
    ConvBn::load(l, conv, bn, cin, cout, k, Conv2dParams::new(stride, pad, 1), 1e-5)
}

const RELU: Activation = Activation::Relu;

/// One residual block: convs[..n−1] are followed by ReLU, the last is not; the ReLU comes after
/// the residual add. Basic blocks have two convs, Bottlenecks three.
struct Block<B: Backend> {
    convs: Vec<ConvBn<B>>,
    down: Option<ConvBn<B>>,
}

/// What a block's backward needs: its input shape and the ReLU outputs (a ReLU's gradient mask
/// is `output > 0`, so outputs serve as well as pre-activations and are kept anyway).
struct BlockTape<B: Backend> {
    x_shape: Shape,
    /// input shape of each conv, and the ReLU output after each conv but the last
    conv_in: Vec<Shape>,
    acts: Vec<Tensor<B>>,
    out: Tensor<B>,
}

impl<B: Backend> Block<B> {
    fn forward(&self, b: &B, x: &Tensor<B>, tape: Option<&mut Vec<BlockTape<B>>>) -> Result<Tensor<B>> {
        let mut h = x.clone();
        let mut conv_in = Vec::with_capacity(self.convs.len());
        let mut acts = Vec::with_capacity(self.convs.len());
        let last = self.convs.len() - 1;
        for (i, c) in self.convs.iter().enumerate() {
            conv_in.push(h.shape().clone());
            h = c.forward(b, &h, (i < last).then_some(RELU))?;
            if i < last {
                acts.push(h.clone());
            }
        }
        let id = match &self.down {
            Some(d) => d.forward(b, x, None)?,
            None => x.clone(),
        };
        let out = b.activation(&b.add(&h, &id)?, RELU)?;
        if let Some(t) = tape {
            t.push(BlockTape { x_shape: x.shape().clone(), conv_in, acts, out: out.clone() });
        }
        Ok(out)
    }

    fn x_backward(&self, b: &B, gy: &Tensor<B>, t: &BlockTape<B>) -> Result<Tensor<B>> {
        let g_sum = b.activation_x_backward(gy, &t.out, RELU)?;
        let mut g = g_sum.clone();
        for i in (0..self.convs.len()).rev() {
            if i < self.convs.len() - 1 {
                g = b.activation_x_backward(&g, &t.acts[i], RELU)?;
            }
            g = self.convs[i].x_backward(b, &g, &t.conv_in[i])?;
        }
        let g_id = match &self.down {
            Some(d) => d.x_backward(b, &g_sum, &t.x_shape)?,
            None => g_sum,
        };
        b.add(&g, &g_id)
    }
}

pub struct ResNet<B: Backend> {
    pub cfg: ResNetConfig,
    stem: ConvBn<B>,
    layers: [Vec<Block<B>>; 3],
}

/// The activations `layers_x_backward` needs, recorded by `layers_taped`.
pub struct ResNetTape<B: Backend> {
    x_shape: Shape,
    /// ReLU output of the stem (the max-pool's input)
    stem_out: Tensor<B>,
    blocks: [Vec<BlockTape<B>>; 3],
}

const POOL: Pool2dParams = Pool2dParams::new(3, 2, 1);

impl<B: Backend> ResNet<B> {
    /// Loads conv1/bn1 and layer1–3; layer4 and fc may be present and are left unused.
    pub fn load(cfg: &ResNetConfig, l: &Loader<B>) -> Result<Self> {
        let stem = conv_bn(l, "conv1", "bn1", 3, 64, 7, 2, 3)?;
        let expansion = match cfg.block {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        };
        let mut inplanes = 64;
        let mut layers: [Vec<Block<B>>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for (li, (&n, planes)) in cfg.blocks.iter().zip([64usize, 128, 256]).enumerate() {
            for bi in 0..n {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let p = |s: &str| format!("layer{}.{bi}.{s}", li + 1);
                let out = planes * expansion;
                let down = if bi == 0 && (stride != 1 || inplanes != out) { Some(conv_bn(l, &p("downsample.0"), &p("downsample.1"), inplanes, out, 1, stride, 0)?) } else { None };
                let convs = match cfg.block {
                    BlockKind::Basic => vec![conv_bn(l, &p("conv1"), &p("bn1"), inplanes, planes, 3, stride, 1)?, conv_bn(l, &p("conv2"), &p("bn2"), planes, planes, 3, 1, 1)?],
                    BlockKind::Bottleneck => {
                        let width = planes * cfg.width_per_group / 64;
                        vec![
                            conv_bn(l, &p("conv1"), &p("bn1"), inplanes, width, 1, 1, 0)?,
                            conv_bn(l, &p("conv2"), &p("bn2"), width, width, 3, stride, 1)?,
                            conv_bn(l, &p("conv3"), &p("bn3"), width, out, 1, 1, 0)?,
                        ]
                    }
                };
                layers[li].push(Block { convs, down });
                inplanes = out;
            }
        }
        Ok(ResNet { cfg: cfg.clone(), stem, layers })
    }

    /// Prefixes of checkpoint tensors the extractor does not use.
    pub fn unused_prefixes() -> &'static [&'static str] {
        &["layer4.", "fc."]
    }

    /// Channels of layer1, layer2, layer3.
    pub fn channels(&self) -> [usize; 3] {
        let e = match self.cfg.block {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        };
        [64 * e, 128 * e, 256 * e]
    }

    fn run(&self, b: &B, x: &Tensor<B>, mut tape: Option<&mut ResNetTape<B>>) -> Result<[Tensor<B>; 3]> {
        let stem_out = self.stem.forward(b, x, Some(RELU))?;
        let mut h = b.max_pool2d(&stem_out, &POOL)?;
        if let Some(t) = tape.as_deref_mut() {
            t.stem_out = stem_out;
        }
        let mut outs = Vec::with_capacity(3);
        for (li, layer) in self.layers.iter().enumerate() {
            for blk in layer {
                h = blk.forward(b, &h, tape.as_deref_mut().map(|t| &mut t.blocks[li]))?;
            }
            outs.push(h.clone());
        }
        let [a, c, d]: [Tensor<B>; 3] = outs.try_into().map_err(|_| Error::InvalidArgument("three layers".into()))?;
        Ok([a, c, d])
    }

    /// (layer1, layer2, layer3) for x [N,3,H,W].
    pub fn layers(&self, b: &B, x: &Tensor<B>) -> Result<[Tensor<B>; 3]> {
        self.run(b, x, None)
    }

    /// `layers`, recording what `layers_x_backward` needs.
    pub fn layers_taped(&self, b: &B, x: &Tensor<B>) -> Result<([Tensor<B>; 3], ResNetTape<B>)> {
        let mut t = ResNetTape { x_shape: x.shape().clone(), stem_out: x.clone(), blocks: [Vec::new(), Vec::new(), Vec::new()] };
        let outs = self.run(b, x, Some(&mut t))?;
        Ok((outs, t))
    }

    /// ∂L/∂x given ∂L/∂layer_i for the layers that L depends on (None = no direct dependence).
    pub fn layers_x_backward(&self, b: &B, tape: &ResNetTape<B>, grads: [Option<&Tensor<B>>; 3]) -> Result<Tensor<B>> {
        let mut g: Option<Tensor<B>> = None;
        for li in (0..3).rev() {
            g = match (g, grads[li]) {
                (Some(a), Some(d)) => Some(b.add(&a, d)?),
                (Some(a), None) => Some(a),
                (None, d) => d.cloned(),
            };
            if let Some(gl) = g.as_mut() {
                for (blk, t) in self.layers[li].iter().zip(&tape.blocks[li]).rev() {
                    *gl = blk.x_backward(b, gl, t)?;
                }
            }
        }
        let g = g.ok_or_else(|| Error::InvalidArgument("layers_x_backward: no layer gradient given".into()))?;
        let g = b.max_pool2d_x_backward(&g, &tape.stem_out, &POOL)?;
        let g = b.activation_x_backward(&g, &tape.stem_out, RELU)?;
        self.stem.x_backward(b, &g, &tape.x_shape)
    }
}
