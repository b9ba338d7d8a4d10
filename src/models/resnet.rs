//! ResNet with Bottleneck blocks in torchvision's layout and parameter names — wide_resnet50_2
//! (PaDiM's backbone in the paper's gradient denoising, spec §4) and resnet50 — up to layer3,
//! BatchNorm folded for inference (eps 1e-5). Input in [-1, 1] without ImageNet normalisation, as
//! the paper's code. `layers` returns layer1, layer2 and layer3 (strides 4, 8, 16).

use super::layers::ConvBn;
use super::weights::Loader;
use crate::backend::{Activation, Backend, Conv2dParams, Pool2dParams};
use crate::tensor::Tensor;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Bottleneck blocks in layer1, layer2, layer3
    pub blocks: [usize; 3],
    /// torchvision's width_per_group (64 for resnet50, 128 for wide_resnet50_2)
    pub width_per_group: usize,
}

impl ResNetConfig {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "wide_resnet50_2" => Ok(ResNetConfig { blocks: [3, 4, 6], width_per_group: 128 }),
            "resnet50" => Ok(ResNetConfig { blocks: [3, 4, 6], width_per_group: 64 }),
            "wide_resnet101_2" => Ok(ResNetConfig { blocks: [3, 4, 23], width_per_group: 128 }),
            _ => Err(Error::InvalidArgument(format!("unknown backbone `{name}` (wide_resnet50_2, resnet50, wide_resnet101_2)"))),
        }
    }
}

/// A conv + BN of the torchvision layout (BN eps 1e-5), symmetric padding.
#[allow(clippy::too_many_arguments)]
fn conv_bn<B: Backend>(l: &Loader<B>, conv: &str, bn: &str, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Result<ConvBn<B>> {
    ConvBn::load(l, conv, bn, cin, cout, k, Conv2dParams::new(stride, pad, 1), 1e-5)
}

const RELU: Option<Activation> = Some(Activation::Relu);

struct Bottleneck<B: Backend> {
    c1: ConvBn<B>,
    c2: ConvBn<B>,
    c3: ConvBn<B>,
    down: Option<ConvBn<B>>,
}

impl<B: Backend> Bottleneck<B> {
    fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let h = self.c3.forward(b, &self.c2.forward(b, &self.c1.forward(b, x, RELU)?, RELU)?, None)?;
        let id = match &self.down {
            Some(d) => d.forward(b, x, None)?,
            None => x.clone(),
        };
        b.activation(&b.add(&h, &id)?, Activation::Relu)
    }
}

pub struct ResNet<B: Backend> {
    pub cfg: ResNetConfig,
    stem: ConvBn<B>,
    layers: [Vec<Bottleneck<B>>; 3],
}

impl<B: Backend> ResNet<B> {
    /// Loads conv1/bn1 and layer1–3; layer4 and fc may be present and are left unused.
    pub fn load(cfg: &ResNetConfig, l: &Loader<B>) -> Result<Self> {
        let stem = conv_bn(l, "conv1", "bn1", 3, 64, 7, 2, 3)?;
        let mut inplanes = 64;
        let mut layers: [Vec<Bottleneck<B>>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for (li, (&n, planes)) in cfg.blocks.iter().zip([64usize, 128, 256]).enumerate() {
            let width = planes * cfg.width_per_group / 64;
            for bi in 0..n {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let p = |s: &str| format!("layer{}.{bi}.{s}", li + 1);
                let down = if bi == 0 && (stride != 1 || inplanes != planes * 4) {
                    Some(conv_bn(l, &p("downsample.0"), &p("downsample.1"), inplanes, planes * 4, 1, stride, 0)?)
                } else {
                    None
                };
                layers[li].push(Bottleneck {
                    c1: conv_bn(l, &p("conv1"), &p("bn1"), inplanes, width, 1, 1, 0)?,
                    c2: conv_bn(l, &p("conv2"), &p("bn2"), width, width, 3, stride, 1)?,
                    c3: conv_bn(l, &p("conv3"), &p("bn3"), width, planes * 4, 1, 1, 0)?,
                    down,
                });
                inplanes = planes * 4;
            }
        }
        Ok(ResNet { cfg: cfg.clone(), stem, layers })
    }

    /// Prefixes of checkpoint tensors the extractor does not use.
    pub fn unused_prefixes() -> &'static [&'static str] {
        &["layer4.", "fc."]
    }

    /// (layer1, layer2, layer3) for x [N,3,H,W].
    pub fn layers(&self, b: &B, x: &Tensor<B>) -> Result<[Tensor<B>; 3]> {
        let mut h = b.max_pool2d(&self.stem.forward(b, x, RELU)?, &Pool2dParams::new(3, 2, 1))?;
        let mut outs = Vec::with_capacity(3);
        for layer in &self.layers {
            for blk in layer {
                h = blk.forward(b, &h)?;
            }
            outs.push(h.clone());
        }
        let [a, c, d]: [Tensor<B>; 3] = outs.try_into().map_err(|_| Error::InvalidArgument("three layers".into()))?;
        Ok([a, c, d])
    }
}
