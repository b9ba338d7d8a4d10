//! The training forward (`UNet::forward_train`) and what it keeps for the backward (`Tape`).
//!
//! By default (`Activations::Keep`) every layer keeps what its backward reads: its input (the
//! group norms' backward takes x and re-derives its statistics in the same pass), the inputs of
//! its convolutions, the group norms' inputs and the attention's qkv — so the backward runs no
//! forward op again. `Activations::Recompute` keeps only each layer's input and rebuilds the rest
//! in the backward through the same functions (`Layer::internals`), so the gradients are the
//! same bits: ~0.5 of a forward more compute for a fraction of the memory (benches/RESULTS.md).

use super::{resample, Attention, Layer, ResBlock, Resample, UNet, UNetOutput, FEAT_TAP};
use crate::backend::{Activation, Backend, GroupNormParams};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// What the training forward keeps of each layer's inner activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activations {
    /// everything the backward reads: no forward op runs twice
    #[default]
    Keep,
    /// each layer's input only; the backward recomputes the rest (`--recompute`)
    Recompute,
}

/// A ResBlock's activations between its input and its output.
pub(super) struct ResInner<B: Backend> {
    /// in_conv's input: SiLU(GN(x)), resampled by an up/down block
    pub h1: Tensor<B>,
    /// the skip path's input: x, resampled by an up/down block
    pub xs: Tensor<B>,
    /// out_norm's input: in_conv's output (+ the timestep projection without scale-shift)
    pub h2n: Tensor<B>,
    /// out_conv's input: SiLU(GN(h2n)) (with scale-shift)
    pub h3: Tensor<B>,
}

/// An attention block's activations (on x flattened to [N, C, T, 1]).
pub(super) struct AttnInner<B: Backend> {
    pub nrm: Tensor<B>,
    pub qkv: Tensor<B>,
    /// the attention's output, proj_out's input
    pub at: Tensor<B>,
}

pub(super) enum Inner<B: Backend> {
    /// a plain or strided conv: its input is all it needs
    None,
    Res(ResInner<B>),
    Attn(AttnInner<B>),
    /// an upsampling conv's input, x upsampled
    Up(Tensor<B>),
}

/// One layer's record: its input, and its inner activations unless they are recomputed.
pub(super) struct LayerTape<B: Backend> {
    pub x: Tensor<B>,
    pub inner: Option<Inner<B>>,
}

/// The feature head's activations: the resized tap and the conv's input.
pub(super) struct HeadInner<B: Backend> {
    pub r: Tensor<B>,
    pub nr: Tensor<B>,
}

/// What `UNet::backward` needs of a forward pass.
pub struct Tape<B: Backend> {
    pub(super) temb: Tensor<B>,
    /// time_embed.0's output (before its SiLU) and the embedding before the blocks' SiLU
    pub(super) e1: Tensor<B>,
    pub(super) emb: Tensor<B>,
    pub(super) semb: Tensor<B>,
    /// every ResBlock's timestep projection side by side (`UNet::emb_projections`)
    pub(super) proj: Tensor<B>,
    pub(super) y: Option<Vec<usize>>,
    pub(super) input_blocks: Vec<Vec<LayerTape<B>>>,
    pub(super) middle: Vec<LayerTape<B>>,
    pub(super) output_blocks: Vec<Vec<LayerTape<B>>>,
    /// channels of h (before the skip) that each output block's concatenation starts with
    pub(super) concat_first: Vec<usize>,
    /// the last output block's output (the input of out.0), and out.2's input when kept
    pub(super) h_final: Tensor<B>,
    pub(super) n_out: Option<Tensor<B>>,
    pub(super) feat_src: Option<Tensor<B>>,
    pub(super) head: Option<HeadInner<B>>,
}

impl<B: Backend> Tape<B> {
    /// f32 values the tape holds beyond each layer's input (`Activations::Keep`'s extra memory;
    /// 0 with `Recompute`): a tensor shared with a layer's input (a ResBlock's skip input x) is
    /// not counted.
    pub fn internal_floats(&self) -> usize {
        let layers = self.input_blocks.iter().flatten().chain(&self.middle).chain(self.output_blocks.iter().flatten());
        let mut n: usize = layers.map(LayerTape::internal_floats).sum();
        n += self.n_out.as_ref().map_or(0, Tensor::numel);
        n += self.head.as_ref().map_or(0, |h| h.r.numel() + h.nr.numel());
        n
    }

    /// f32 values of the layers' inputs, which both modes keep (a block's output is the next
    /// block's input or, in the decoder, copied into the next concatenation; the skips are the
    /// encoder blocks' outputs, so counted as inputs too).
    pub fn input_floats(&self) -> usize {
        let blocks = self.input_blocks.iter().chain(std::iter::once(&self.middle)).chain(&self.output_blocks);
        let ins: usize = blocks.flatten().map(|l| l.x.numel()).sum();
        ins + self.h_final.numel() + self.feat_src.as_ref().map_or(0, Tensor::numel)
    }
}

impl<B: Backend> LayerTape<B> {
    fn internal_floats(&self) -> usize {
        match &self.inner {
            None | Some(Inner::None) => 0,
            Some(Inner::Res(r)) => {
                // xs is x itself unless the block resamples (x is counted as the input)
                let xs = if r.xs.dims() == self.x.dims() { 0 } else { r.xs.numel() };
                r.h1.numel() + xs + r.h2n.numel() + r.h3.numel()
            }
            Some(Inner::Attn(a)) => a.nrm.numel() + a.qkv.numel() + a.at.numel(),
            Some(Inner::Up(u)) => u.numel(),
        }
    }
}

impl<B: Backend> ResBlock<B> {
    /// The activations between x and the output, by the ops of `ResBlock::forward`.
    pub(super) fn internals(&self, b: &B, x: &Tensor<B>, proj: &Tensor<B>) -> Result<ResInner<B>> {
        let h0 = self.in_norm.forward(b, x, true, None)?;
        let (h1, xs) = if self.updown != Resample::None { (resample(b, &h0, self.updown)?, resample(b, x, self.updown)?) } else { (h0, x.clone()) };
        let h2 = self.in_conv.forward(b, &h1)?;
        let (h2n, h3) = if self.scale_shift {
            let h3 = b.group_norm_emb(&h2, &self.out_norm.g, &self.out_norm.b, &GroupNormParams::gn32(true), proj, self.emb_off)?;
            (h2, h3)
        } else {
            let n = proj.dims()[0];
            let e = b.slice_channels(proj, self.emb_off, self.emb_off + self.cout)?;
            let e = b.reshape(&e, &[n, self.cout, 1, 1])?;
            let h2n = b.add(&h2, &e)?;
            let h3 = self.out_norm.forward(b, &h2n, true, None)?;
            (h2n, h3)
        };
        Ok(ResInner { h1, xs, h2n, h3 })
    }

    /// The block's output from its internals: skip + out_conv(h3), as `ResBlock::forward`.
    fn output(&self, b: &B, i: &ResInner<B>) -> Result<Tensor<B>> {
        let skip = match &self.skip {
            Some(c) => c.forward(b, &i.xs)?,
            None => i.xs.clone(),
        };
        self.out_conv.forward_add(b, &i.h3, &skip)
    }
}

impl<B: Backend> Attention<B> {
    /// The activations of `Attention::forward` on x flattened to xf [N, C, T, 1].
    pub(super) fn internals(&self, b: &B, xf: &Tensor<B>) -> Result<AttnInner<B>> {
        let nrm = self.norm.forward(b, xf, false, None)?;
        let qkv = self.qkv.forward(b, &nrm)?;
        let at = b.attention_legacy(&qkv, self.heads)?;
        Ok(AttnInner { nrm, qkv, at })
    }
}

/// x [N, C, H, W] as [N, C, H·W, 1], the attention's layout.
pub(super) fn flat<B: Backend>(b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
    let d = x.dims();
    b.reshape(x, &[d[0], d[1], d[2..].iter().product(), 1])
}

impl<B: Backend> Layer<B> {
    /// The layer's inner activations on input x (what `Activations::Keep` stores and
    /// `Recompute` rebuilds in the backward: the same function both ways, so the same bits).
    pub(super) fn internals(&self, b: &B, x: &Tensor<B>, proj: &Tensor<B>) -> Result<Inner<B>> {
        Ok(match self {
            Layer::Conv(_) | Layer::Down(_) => Inner::None,
            Layer::Res(r) => Inner::Res(r.internals(b, x, proj)?),
            Layer::Attn(a) => Inner::Attn(a.internals(b, &flat(b, x)?)?),
            Layer::Up(_) => Inner::Up(b.upsample_nearest2x(x)?),
        })
    }

    /// The layer's output from its input and internals (the ops of `Layer::forward`).
    fn output(&self, b: &B, x: &Tensor<B>, inner: &Inner<B>) -> Result<Tensor<B>> {
        match (self, inner) {
            (Layer::Conv(c) | Layer::Down(c), Inner::None) => c.forward(b, x),
            (Layer::Res(r), Inner::Res(i)) => r.output(b, i),
            // xf + proj(a), the add in the conv's epilogue
            (Layer::Attn(a), Inner::Attn(i)) => b.reshape(&a.proj.forward_add(b, &i.at, &flat(b, x)?)?, x.dims()),
            (Layer::Up(c), Inner::Up(u)) => c.forward(b, u),
            _ => Err(Error::InvalidArgument("a layer's tape does not match its kind".into())),
        }
    }
}

/// Runs `layers`, recording each one's input (and internals when `mode` keeps them).
fn run_taped<B: Backend>(b: &B, layers: &[Layer<B>], x: &Tensor<B>, proj: &Tensor<B>, mode: Activations) -> Result<(Tensor<B>, Vec<LayerTape<B>>)> {
    let mut tapes = Vec::with_capacity(layers.len());
    let mut h = x.clone();
    for l in layers {
        let inner = l.internals(b, &h, proj)?;
        let o = l.output(b, &h, &inner)?;
        tapes.push(LayerTape { x: h, inner: (mode == Activations::Keep).then_some(inner) });
        h = o;
    }
    Ok((h, tapes))
}

impl<B: Backend> UNet<B> {
    /// `forward`, keeping what `backward` needs (every inner activation: `Activations::Keep`).
    pub fn forward_train(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, y: Option<&[usize]>) -> Result<(UNetOutput<B>, Tape<B>)> {
        self.forward_train_as(b, x, t, y, Activations::Keep)
    }

    /// `forward_train` keeping the inner activations or only each layer's input (`mode`); the
    /// outputs are `forward`'s bits either way.
    pub fn forward_train_as(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, y: Option<&[usize]>, mode: Activations) -> Result<(UNetOutput<B>, Tape<B>)> {
        if self.flags.use_new_attention_order {
            return Err(Error::InvalidArgument("training a model with --use_new_attention_order True is not supported (the paper's models use the legacy order)".into()));
        }
        let (temb, e1, emb) = self.embeddings(b, x, t, y)?;
        let semb = b.activation(&emb, Activation::Silu)?;
        let proj = self.emb_projections(b, &semb)?;
        let mut hs = Vec::with_capacity(self.input_blocks.len());
        let mut input_blocks = Vec::with_capacity(self.input_blocks.len());
        let mut h = x.clone();
        for blk in &self.input_blocks {
            let (o, tp) = run_taped(b, blk, &h, &proj, mode)?;
            h = o;
            input_blocks.push(tp);
            hs.push(h.clone());
        }
        let (o, middle) = run_taped(b, &self.middle, &h, &proj, mode)?;
        h = o;
        let (mut output_blocks, mut concat_first, mut feat_src) = (Vec::new(), Vec::new(), None);
        for (j, blk) in self.output_blocks.iter().enumerate() {
            let skip = hs.pop().expect("one skip per block");
            concat_first.push(h.dims()[1]);
            let (o, tp) = run_taped(b, blk, &b.concat_channels(&[&h, &skip])?, &proj, mode)?;
            h = o;
            output_blocks.push(tp);
            if j == FEAT_TAP && self.feat_head.is_some() {
                feat_src = Some(h.clone());
            }
        }
        let n_out = self.out_norm.forward(b, &h, true, None)?;
        let out = self.out_conv.forward(b, &n_out)?;
        let (feat, head) = match (&self.feat_head, &feat_src) {
            (Some(fh), Some(src)) => {
                let r = b.resize_bilinear(src, fh.feat_shape, fh.feat_shape)?;
                let nr = fh.norm.forward(b, &r, true, None)?;
                (Some(fh.conv.forward(b, &nr)?), Some(HeadInner { r, nr }))
            }
            _ => (None, None),
        };
        let keep = mode == Activations::Keep;
        let tape = Tape {
            temb,
            e1,
            emb,
            semb,
            proj,
            y: y.map(<[usize]>::to_vec),
            input_blocks,
            middle,
            output_blocks,
            concat_first,
            h_final: h,
            n_out: keep.then_some(n_out),
            feat_src,
            head: head.filter(|_| keep),
        };
        Ok((UNetOutput { out, feat }, tape))
    }
}
