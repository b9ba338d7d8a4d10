//! The UNet's backward pass for training: parameter gradients by state_dict name, and nothing
//! else kept from the forward but each layer's input (every layer recomputes its inner
//! activations from that input when its backward runs — activation checkpointing at layer
//! granularity, ~1.3 forwards of compute, a fraction of the memory of keeping everything).
//!
//! Checked against upstream guided_diffusion's autograd in float64 (tests/unet_backward.rs,
//! tools/reference/make_unet_grad_fixtures.py).

use super::{resample, Attention, Conv, Layer, Linear, Norm, ResBlock, Resample, UNet, UNetOutput, FEAT_TAP};
use crate::backend::{Activation, Backend, GroupNormParams, Pool2dParams};
use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// What `UNet::backward` needs of a forward pass.
pub struct Tape<B: Backend> {
    temb: Tensor<B>,
    /// time_embed.0's output (before its SiLU) and the embedding before the blocks' SiLU
    e1: Tensor<B>,
    emb: Tensor<B>,
    semb: Tensor<B>,
    y: Option<Vec<usize>>,
    /// the input of every layer of every input block, of the middle block, of every output block
    input_blocks: Vec<Vec<Tensor<B>>>,
    middle: Vec<Tensor<B>>,
    output_blocks: Vec<Vec<Tensor<B>>>,
    /// channels of h (before the skip) that each output block's concatenation starts with
    concat_first: Vec<usize>,
    /// the last output block's output (the input of out.0)
    h_final: Tensor<B>,
    feat_src: Option<Tensor<B>>,
}

/// Gradients summed by parameter name.
struct Grads<'a, B: Backend> {
    b: &'a B,
    map: BTreeMap<String, Tensor<B>>,
}

impl<B: Backend> Grads<'_, B> {
    fn put(&mut self, name: String, g: Tensor<B>) -> Result<()> {
        match self.map.entry(name) {
            Entry::Occupied(mut e) => {
                let s = self.b.add(e.get(), &g)?;
                e.insert(s);
            }
            Entry::Vacant(v) => {
                v.insert(g);
            }
        }
        Ok(())
    }

    /// ∂w, ∂b of `c` run on `x`; ∂x when asked. `conv1d` gives ∂w upstream's Conv1d shape [O, I, 1].
    fn conv(&mut self, c: &Conv<B>, x: &Tensor<B>, gy: &Tensor<B>, name: &str, conv1d: bool, want_gx: bool) -> Result<Option<Tensor<B>>> {
        let b = self.b;
        let (gw, gb) = b.conv2d_w_backward(gy, x, c.w.shape(), &c.p, c.b.is_some())?;
        let gw = if conv1d { b.reshape(&gw, &c.w.dims()[..3])? } else { gw };
        self.put(format!("{name}.weight"), gw)?;
        if let Some(gb) = gb {
            self.put(format!("{name}.bias"), gb)?;
        }
        if want_gx {
            Ok(Some(b.conv2d_x_backward(gy, &c.w, x.shape(), &c.p)?))
        } else {
            Ok(None)
        }
    }

    fn linear(&mut self, l: &Linear<B>, x: &Tensor<B>, gy: &Tensor<B>, name: &str, want_gx: bool) -> Result<Option<Tensor<B>>> {
        let b = self.b;
        let (gw, gb) = b.linear_w_backward(gy, x, true)?;
        self.put(format!("{name}.weight"), gw)?;
        self.put(format!("{name}.bias"), gb.expect("asked for the bias gradient"))?;
        if want_gx {
            Ok(Some(b.linear_x_backward(gy, &l.w)?))
        } else {
            Ok(None)
        }
    }

    /// ∂x of a GroupNorm32 (+ SiLU, + scale-shift), its γ/β gradients, and ∂scale/∂shift.
    fn norm(&mut self, n: &Norm<B>, x: &Tensor<B>, gy: &Tensor<B>, silu: bool, ss: Option<(&Tensor<B>, &Tensor<B>)>, name: &str) -> Result<(Tensor<B>, Option<(Tensor<B>, Tensor<B>)>)> {
        let b = self.b;
        let p = GroupNormParams::gn32(silu);
        let gx = b.group_norm_x_backward(gy, x, &n.g, &n.b, &p, ss)?;
        let r = b.group_norm_w_backward(gy, x, &n.g, &n.b, &p, ss)?;
        self.put(format!("{name}.weight"), r.gamma)?;
        self.put(format!("{name}.bias"), r.beta)?;
        Ok((gx, r.scale_shift))
    }
}

fn resample_backward<B: Backend>(b: &B, g: &Tensor<B>, x_shape: &Shape, r: Resample) -> Result<Tensor<B>> {
    match r {
        Resample::None => Ok(g.clone()),
        Resample::Up => b.upsample_nearest2x_x_backward(g),
        Resample::Down => b.avg_pool2d_x_backward(g, x_shape, &Pool2dParams::new(2, 2, 0)),
    }
}

fn add_opt<B: Backend>(b: &B, acc: &mut Option<Tensor<B>>, g: Tensor<B>) -> Result<()> {
    *acc = Some(match acc.take() {
        Some(a) => b.add(&a, &g)?,
        None => g,
    });
    Ok(())
}

impl<B: Backend> ResBlock<B> {
    /// ∂x; parameter gradients into `g`, ∂SiLU(emb) added into `g_semb`.
    fn backward(&self, g: &mut Grads<B>, x: &Tensor<B>, semb: &Tensor<B>, gy: &Tensor<B>, p: &str, g_semb: &mut Option<Tensor<B>>) -> Result<Tensor<B>> {
        let b = g.b;
        // the forward's inner activations, recomputed from x
        let h0 = self.in_norm.forward(b, x, true, None)?;
        let (h1, xs) = if self.updown != Resample::None { (resample(b, &h0, self.updown)?, resample(b, x, self.updown)?) } else { (h0.clone(), x.clone()) };
        let h2 = self.in_conv.forward(b, &h1)?;
        let e = self.emb.forward(b, semb)?;
        let n = e.dims()[0];
        let c = self.cout;
        let (g_h2, g_e) = if self.scale_shift {
            let e3 = b.reshape(&e, &[n, 2 * c, 1])?;
            let (scale, shift) = (b.slice_channels(&e3, 0, c)?, b.slice_channels(&e3, c, 2 * c)?);
            let h3 = self.out_norm.forward(b, &h2, true, Some((&scale, &shift)))?;
            let g_h3 = g.conv(&self.out_conv, &h3, gy, &format!("{p}.out_layers.3"), false, true)?.expect("asked for ∂x");
            let (g_h2, gss) = g.norm(&self.out_norm, &h2, &g_h3, true, Some((&scale, &shift)), &format!("{p}.out_layers.0"))?;
            let (gsc, gsh) = gss.expect("scale-shift gradients");
            (g_h2, b.reshape(&b.concat_channels(&[&gsc, &gsh])?, &[n, 2 * c])?)
        } else {
            let e4 = b.reshape(&e, &[n, c, 1, 1])?;
            let h2b = b.add(&h2, &e4)?;
            let h3 = self.out_norm.forward(b, &h2b, true, None)?;
            let g_h3 = g.conv(&self.out_conv, &h3, gy, &format!("{p}.out_layers.3"), false, true)?.expect("asked for ∂x");
            let (g_h2b, _) = g.norm(&self.out_norm, &h2b, &g_h3, true, None, &format!("{p}.out_layers.0"))?;
            let (_, g_e4) = b.add_x_backward(&g_h2b, e4.shape())?;
            (g_h2b, b.reshape(&g_e4, &[n, c])?)
        };
        let g_s = g.linear(&self.emb, semb, &g_e, &format!("{p}.emb_layers.1"), true)?.expect("asked for ∂x");
        add_opt(b, g_semb, g_s)?;
        let g_h1 = g.conv(&self.in_conv, &h1, &g_h2, &format!("{p}.in_layers.2"), false, true)?.expect("asked for ∂x");
        let g_h0 = resample_backward(b, &g_h1, h0.shape(), self.updown)?;
        let (g_main, _) = g.norm(&self.in_norm, x, &g_h0, true, None, &format!("{p}.in_layers.0"))?;
        let g_xs = match &self.skip {
            Some(sc) => g.conv(sc, &xs, gy, &format!("{p}.skip_connection"), false, true)?.expect("asked for ∂x"),
            None => gy.clone(),
        };
        let g_skip = resample_backward(b, &g_xs, x.shape(), self.updown)?;
        b.add(&g_main, &g_skip)
    }
}

impl<B: Backend> Attention<B> {
    fn backward(&self, g: &mut Grads<B>, x: &Tensor<B>, gy: &Tensor<B>, p: &str) -> Result<Tensor<B>> {
        let b = g.b;
        let d = x.dims().to_vec();
        let t: usize = d[2..].iter().product();
        let xf = b.reshape(x, &[d[0], d[1], t, 1])?;
        let nrm = self.norm.forward(b, &xf, false, None)?;
        let qkv = self.qkv.forward(b, &nrm)?;
        let at = b.attention_legacy(&qkv, self.heads)?;
        let gyf = b.reshape(gy, &[d[0], d[1], t, 1])?;
        let g_at = g.conv(&self.proj, &at, &gyf, &format!("{p}.proj_out"), true, true)?.expect("asked for ∂x");
        let g_qkv = b.attention_legacy_x_backward(&g_at, &qkv, self.heads)?;
        let g_nrm = g.conv(&self.qkv, &nrm, &g_qkv, &format!("{p}.qkv"), true, true)?.expect("asked for ∂x");
        let (g_xf, _) = g.norm(&self.norm, &xf, &g_nrm, false, None, &format!("{p}.norm"))?;
        b.reshape(&b.add(&g_xf, &gyf)?, &d)
    }
}

impl<B: Backend> Layer<B> {
    /// ∂x of the layer at state_dict prefix `p` (∂x skipped when `want_gx` is false).
    fn backward(&self, g: &mut Grads<B>, x: &Tensor<B>, semb: &Tensor<B>, gy: &Tensor<B>, p: &str, g_semb: &mut Option<Tensor<B>>, want_gx: bool) -> Result<Option<Tensor<B>>> {
        let b = g.b;
        match self {
            Layer::Conv(c) => g.conv(c, x, gy, p, false, want_gx),
            Layer::Down(c) => g.conv(c, x, gy, &format!("{p}.op"), false, want_gx),
            Layer::Up(c) => {
                let u = b.upsample_nearest2x(x)?;
                let gu = g.conv(c, &u, gy, &format!("{p}.conv"), false, true)?.expect("asked for ∂x");
                Ok(Some(b.upsample_nearest2x_x_backward(&gu)?))
            }
            Layer::Res(r) => Ok(Some(r.backward(g, x, semb, gy, p, g_semb)?)),
            Layer::Attn(a) => Ok(Some(a.backward(g, x, gy, p)?)),
        }
    }
}

/// Runs `layers`, recording each one's input.
/// `proj`: the packed timestep projections (`UNet::emb_projections`) the layers' forward reads.
fn run_taped<B: Backend>(b: &B, layers: &[Layer<B>], x: &Tensor<B>, proj: &Tensor<B>) -> Result<(Tensor<B>, Vec<Tensor<B>>)> {
    let mut inputs = Vec::with_capacity(layers.len());
    let mut h = x.clone();
    for l in layers {
        inputs.push(h.clone());
        h = l.forward(b, &h, proj)?;
    }
    Ok((h, inputs))
}

/// Backward through one block whose layers are named `{prefix}.{k}`; returns ∂(block input).
fn block_backward<B: Backend>(
    g: &mut Grads<B>,
    layers: &[Layer<B>],
    inputs: &[Tensor<B>],
    semb: &Tensor<B>,
    gy: Tensor<B>,
    prefix: &str,
    g_semb: &mut Option<Tensor<B>>,
    want_gx: bool,
) -> Result<Option<Tensor<B>>> {
    let mut gh = Some(gy);
    for (k, (l, x)) in layers.iter().zip(inputs).enumerate().rev() {
        let need = want_gx || k > 0;
        gh = l.backward(g, x, semb, gh.as_ref().expect("gradient of the layer above"), &format!("{prefix}.{k}"), g_semb, need)?;
    }
    Ok(gh)
}

impl<B: Backend> UNet<B> {
    /// The head's parameter gradients from its input `src` (output_blocks[FEAT_TAP]'s output)
    /// and ∂L/∂feat; ∂src when `want_gx`.
    fn head_backward(&self, g: &mut Grads<B>, src: &Tensor<B>, gf: &Tensor<B>, want_gx: bool) -> Result<Option<Tensor<B>>> {
        let b = g.b;
        let fh = self.feat_head.as_ref().ok_or_else(|| Error::InvalidArgument("a feature gradient for a model without the feature head".into()))?;
        let r = b.resize_bilinear(src, fh.feat_shape, fh.feat_shape)?;
        let nr = fh.norm.forward(b, &r, true, None)?;
        let g_nr = g.conv(&fh.conv, &nr, gf, "feat_rec1.2", false, true)?.expect("asked for ∂x");
        let (g_r, _) = g.norm(&fh.norm, &r, &g_nr, true, None, "feat_rec1.0")?;
        if want_gx {
            Ok(Some(b.resize_bilinear_x_backward(&g_r, src.dims()[2], src.dims()[3])?))
        } else {
            Ok(None)
        }
    }

    /// Gradients of the feature head's parameters alone (the UNet frozen: `--train-only head`),
    /// from `forward_with_tap`'s tap and ∂L/∂feat — no UNet backward, no tape.
    pub fn head_gradients(&self, b: &B, src: &Tensor<B>, g_feat: &Tensor<B>) -> Result<BTreeMap<String, Tensor<B>>> {
        let mut g = Grads { b, map: BTreeMap::new() };
        self.head_backward(&mut g, src, g_feat, false)?;
        Ok(g.map)
    }

    /// `forward`, keeping what `backward` needs.
    pub fn forward_train(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, y: Option<&[usize]>) -> Result<(UNetOutput<B>, Tape<B>)> {
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
            let (o, ins) = run_taped(b, blk, &h, &proj)?;
            h = o;
            input_blocks.push(ins);
            hs.push(h.clone());
        }
        let (o, middle) = run_taped(b, &self.middle, &h, &proj)?;
        h = o;
        let (mut output_blocks, mut concat_first, mut feat_src) = (Vec::new(), Vec::new(), None);
        for (j, blk) in self.output_blocks.iter().enumerate() {
            let skip = hs.pop().expect("one skip per block");
            concat_first.push(h.dims()[1]);
            let (o, ins) = run_taped(b, blk, &b.concat_channels(&[&h, &skip])?, &proj)?;
            h = o;
            output_blocks.push(ins);
            if j == FEAT_TAP && self.feat_head.is_some() {
                feat_src = Some(h.clone());
            }
        }
        let out = self.out_conv.forward(b, &self.out_norm.forward(b, &h, true, None)?)?;
        let feat = match (&self.feat_head, &feat_src) {
            (Some(fh), Some(src)) => {
                let r = b.resize_bilinear(src, fh.feat_shape, fh.feat_shape)?;
                Some(fh.conv.forward(b, &fh.norm.forward(b, &r, true, None)?)?)
            }
            _ => None,
        };
        let tape = Tape { temb, e1, emb, semb, y: y.map(<[usize]>::to_vec), input_blocks, middle, output_blocks, concat_first, h_final: h, feat_src };
        Ok((UNetOutput { out, feat }, tape))
    }

    /// Gradients of every parameter, by state_dict name, given ∂L/∂out and (with the feature
    /// head) ∂L/∂feat. A parameter no gradient reaches (the head without `g_feat`) is absent.
    pub fn backward(&self, b: &B, tape: &Tape<B>, g_out: &Tensor<B>, g_feat: Option<&Tensor<B>>) -> Result<BTreeMap<String, Tensor<B>>> {
        let mut g = Grads { b, map: BTreeMap::new() };
        let mut g_semb: Option<Tensor<B>> = None;
        let n_out = self.out_norm.forward(b, &tape.h_final, true, None)?;
        let g_n = g.conv(&self.out_conv, &n_out, g_out, "out.2", false, true)?.expect("asked for ∂x");
        let (mut g_h, _) = g.norm(&self.out_norm, &tape.h_final, &g_n, true, None, "out.0")?;
        let g_src = match (&tape.feat_src, g_feat) {
            (Some(src), Some(gf)) => Some(self.head_backward(&mut g, src, gf, true)?.expect("asked for ∂x")),
            (None, Some(_)) => return Err(Error::InvalidArgument("a feature gradient for a model without the feature head".into())),
            _ => None,
        };
        let nb = self.input_blocks.len();
        let mut g_skips: Vec<Option<Tensor<B>>> = (0..nb).map(|_| None).collect();
        for (j, blk) in self.output_blocks.iter().enumerate().rev() {
            if j == FEAT_TAP {
                if let Some(gs) = &g_src {
                    g_h = b.add(&g_h, gs)?;
                }
            }
            let g_cat = block_backward(&mut g, blk, &tape.output_blocks[j], &tape.semb, g_h, &format!("output_blocks.{j}"), &mut g_semb, true)?.expect("asked for ∂x");
            let c_h = tape.concat_first[j];
            let parts = b.concat_channels_x_backward(&g_cat, &[c_h, g_cat.dims()[1] - c_h])?;
            add_opt(b, &mut g_skips[nb - 1 - j], parts[1].clone())?;
            g_h = parts[0].clone();
        }
        g_h = block_backward(&mut g, &self.middle, &tape.middle, &tape.semb, g_h, "middle_block", &mut g_semb, true)?.expect("asked for ∂x");
        for i in (0..nb).rev() {
            if let Some(gs) = g_skips[i].take() {
                g_h = b.add(&g_h, &gs)?;
            }
            match block_backward(&mut g, &self.input_blocks[i], &tape.input_blocks[i], &tape.semb, g_h.clone(), &format!("input_blocks.{i}"), &mut g_semb, i > 0)? {
                Some(gx) => g_h = gx,
                None => break, // the image itself needs no gradient
            }
        }
        if let Some(gs) = g_semb {
            let g_emb = b.activation_x_backward(&gs, &tape.emb, Activation::Silu)?;
            if let (Some(table), Some(y)) = (&self.label_emb, &tape.y) {
                g.put("label_emb.weight".into(), b.embedding_w_backward(&g_emb, y, table.dims()[0])?)?;
            }
            let s1 = b.activation(&tape.e1, Activation::Silu)?;
            let g_s1 = g.linear(&self.time_embed.1, &s1, &g_emb, "time_embed.2", true)?.expect("asked for ∂x");
            let g_e1 = b.activation_x_backward(&g_s1, &tape.e1, Activation::Silu)?;
            g.linear(&self.time_embed.0, &tape.temb, &g_e1, "time_embed.0", false)?;
        }
        Ok(g.map)
    }
}
