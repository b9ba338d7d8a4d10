//! The UNet's backward pass for training: parameter gradients by state_dict name, from the
//! forward's `Tape` (tape.rs): its inner activations where the tape kept them, else rebuilt here
//! from each layer's input by the forward's own functions (`Activations::Recompute`).
//!
//! Checked against upstream guided_diffusion's autograd in float64 (tests/unet_backward.rs,
//! tools/reference/make_unet_grad_fixtures.py).

use super::tape::{flat, AttnInner, HeadInner, Inner, LayerTape, ResInner, Tape};
use super::{Attention, Conv, Layer, Linear, Norm, ResBlock, Resample, UNet, FEAT_TAP};
use crate::backend::{Activation, Backend, GroupNormParams, Pool2dParams};
use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// Gradients summed by parameter name.
struct Grads<'a, B: Backend> {
    b: &'a B,
    map: BTreeMap<String, Tensor<B>>,
    /// ∂SiLU(emb), summed over the ResBlocks' timestep projections
    semb: Option<Tensor<B>>,
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

/// The embeddings every ResBlock's backward reads: SiLU(emb) and the packed projections of it.
struct Emb<'a, B: Backend> {
    semb: &'a Tensor<B>,
    proj: &'a Tensor<B>,
}

fn add_opt<B: Backend>(b: &B, acc: &mut Option<Tensor<B>>, g: Tensor<B>) -> Result<()> {
    *acc = Some(match acc.take() {
        Some(a) => b.add(&a, &g)?,
        None => g,
    });
    Ok(())
}

impl<B: Backend> ResBlock<B> {
    /// ∂x from the block's input x and internals `i`; parameter gradients and ∂SiLU(emb) into
    /// `g`. Scale and shift are read from this block's columns of the tape's packed projections,
    /// as the forward's `group_norm_emb` reads them.
    fn backward(&self, g: &mut Grads<B>, x: &Tensor<B>, i: &ResInner<B>, e: &Emb<B>, gy: &Tensor<B>, p: &str) -> Result<Tensor<B>> {
        let b = g.b;
        let (semb, proj) = (e.semb, e.proj);
        let n = x.dims()[0];
        let c = self.cout;
        let g_h3 = g.conv(&self.out_conv, &i.h3, gy, &format!("{p}.out_layers.3"), false, true)?.expect("asked for ∂x");
        let (g_h2, g_e) = if self.scale_shift {
            let p3 = b.reshape(proj, &[n, proj.dims()[1], 1])?;
            let (scale, shift) = (b.slice_channels(&p3, self.emb_off, self.emb_off + c)?, b.slice_channels(&p3, self.emb_off + c, self.emb_off + 2 * c)?);
            let (g_h2, gss) = g.norm(&self.out_norm, &i.h2n, &g_h3, true, Some((&scale, &shift)), &format!("{p}.out_layers.0"))?;
            let (gsc, gsh) = gss.expect("scale-shift gradients");
            (g_h2, b.reshape(&b.concat_channels(&[&gsc, &gsh])?, &[n, 2 * c])?)
        } else {
            let (g_h2b, _) = g.norm(&self.out_norm, &i.h2n, &g_h3, true, None, &format!("{p}.out_layers.0"))?;
            let (_, g_e4) = b.add_x_backward(&g_h2b, &Shape::new(&[n, c, 1, 1]))?;
            (g_h2b, b.reshape(&g_e4, &[n, c])?)
        };
        let g_s = g.linear(&self.emb, semb, &g_e, &format!("{p}.emb_layers.1"), true)?.expect("asked for ∂x");
        add_opt(b, &mut g.semb, g_s)?;
        let g_h1 = g.conv(&self.in_conv, &i.h1, &g_h2, &format!("{p}.in_layers.2"), false, true)?.expect("asked for ∂x");
        // h0 = SiLU(GN(x)) has x's shape
        let g_h0 = resample_backward(b, &g_h1, x.shape(), self.updown)?;
        let (g_main, _) = g.norm(&self.in_norm, x, &g_h0, true, None, &format!("{p}.in_layers.0"))?;
        let g_xs = match &self.skip {
            Some(sc) => g.conv(sc, &i.xs, gy, &format!("{p}.skip_connection"), false, true)?.expect("asked for ∂x"),
            None => gy.clone(),
        };
        let g_skip = resample_backward(b, &g_xs, x.shape(), self.updown)?;
        b.add(&g_main, &g_skip)
    }
}

impl<B: Backend> Attention<B> {
    fn backward(&self, g: &mut Grads<B>, x: &Tensor<B>, i: &AttnInner<B>, gy: &Tensor<B>, p: &str) -> Result<Tensor<B>> {
        let b = g.b;
        let xf = flat(b, x)?;
        let gyf = flat(b, gy)?;
        let g_at = g.conv(&self.proj, &i.at, &gyf, &format!("{p}.proj_out"), true, true)?.expect("asked for ∂x");
        let g_qkv = b.attention_legacy_x_backward(&g_at, &i.qkv, self.heads)?;
        let g_nrm = g.conv(&self.qkv, &i.nrm, &g_qkv, &format!("{p}.qkv"), true, true)?.expect("asked for ∂x");
        let (g_xf, _) = g.norm(&self.norm, &xf, &g_nrm, false, None, &format!("{p}.norm"))?;
        b.reshape(&b.add(&g_xf, &gyf)?, x.dims())
    }
}

impl<B: Backend> Layer<B> {
    /// ∂x of the layer at state_dict prefix `p` from its tape `t` (∂x skipped when `want_gx` is
    /// false); internals the tape lacks are recomputed from its input first.
    fn backward(&self, g: &mut Grads<B>, t: &LayerTape<B>, e: &Emb<B>, gy: &Tensor<B>, p: &str, want_gx: bool) -> Result<Option<Tensor<B>>> {
        let b = g.b;
        let x = &t.x;
        let rebuilt;
        let inner = match &t.inner {
            Some(i) => i,
            None => {
                rebuilt = self.internals(b, x, e.proj)?;
                &rebuilt
            }
        };
        match (self, inner) {
            (Layer::Conv(c), Inner::None) => g.conv(c, x, gy, p, false, want_gx),
            (Layer::Down(c), Inner::None) => g.conv(c, x, gy, &format!("{p}.op"), false, want_gx),
            (Layer::Up(c), Inner::Up(u)) => {
                let gu = g.conv(c, u, gy, &format!("{p}.conv"), false, true)?.expect("asked for ∂x");
                Ok(Some(b.upsample_nearest2x_x_backward(&gu)?))
            }
            (Layer::Res(r), Inner::Res(i)) => Ok(Some(r.backward(g, x, i, e, gy, p)?)),
            (Layer::Attn(a), Inner::Attn(i)) => Ok(Some(a.backward(g, x, i, gy, p)?)),
            _ => Err(Error::InvalidArgument(format!("{p}: the tape does not match the layer's kind"))),
        }
    }
}

/// Backward through one block whose layers are named `{prefix}.{k}`, consuming their records
/// `tapes` (each freed once its layer is done, as torch frees saved tensors); returns
/// ∂(block input).
fn block_backward<B: Backend>(g: &mut Grads<B>, layers: &[Layer<B>], mut tapes: Vec<LayerTape<B>>, e: &Emb<B>, gy: Tensor<B>, prefix: &str, want_gx: bool) -> Result<Option<Tensor<B>>> {
    if tapes.len() != layers.len() {
        return Err(Error::InvalidArgument(format!("{prefix}: a tape of {} layers for a block of {}", tapes.len(), layers.len())));
    }
    let mut gh = Some(gy);
    for (k, l) in layers.iter().enumerate().rev() {
        let t = tapes.pop().expect("one record per layer");
        let need = want_gx || k > 0;
        gh = l.backward(g, &t, e, gh.as_ref().expect("gradient of the layer above"), &format!("{prefix}.{k}"), need)?;
    }
    Ok(gh)
}

impl<B: Backend> UNet<B> {
    /// The head's parameter gradients from its input `src` (output_blocks[FEAT_TAP]'s output),
    /// its activations when the tape kept them, and ∂L/∂feat; ∂src when `want_gx`.
    fn head_backward(&self, g: &mut Grads<B>, src: &Tensor<B>, kept: Option<&HeadInner<B>>, gf: &Tensor<B>, want_gx: bool) -> Result<Option<Tensor<B>>> {
        let b = g.b;
        let fh = self.feat_head.as_ref().ok_or_else(|| Error::InvalidArgument("a feature gradient for a model without the feature head".into()))?;
        let rebuilt;
        let h = match kept {
            Some(h) => h,
            None => {
                let r = b.resize_bilinear(src, fh.feat_shape, fh.feat_shape)?;
                let nr = fh.norm.forward(b, &r, true, None)?;
                rebuilt = HeadInner { r, nr };
                &rebuilt
            }
        };
        let g_nr = g.conv(&fh.conv, &h.nr, gf, "feat_rec1.2", false, true)?.expect("asked for ∂x");
        let (g_r, _) = g.norm(&fh.norm, &h.r, &g_nr, true, None, "feat_rec1.0")?;
        if want_gx {
            Ok(Some(b.resize_bilinear_x_backward(&g_r, src.dims()[2], src.dims()[3])?))
        } else {
            Ok(None)
        }
    }

    /// Gradients of the feature head's parameters alone (the UNet frozen: `--train-only head`),
    /// from `forward_with_tap`'s tap and ∂L/∂feat — no UNet backward, no tape.
    pub fn head_gradients(&self, b: &B, src: &Tensor<B>, g_feat: &Tensor<B>) -> Result<BTreeMap<String, Tensor<B>>> {
        let mut g = Grads { b, map: BTreeMap::new(), semb: None };
        self.head_backward(&mut g, src, None, g_feat, false)?;
        Ok(g.map)
    }

    /// Gradients of every parameter, by state_dict name, given ∂L/∂out and (with the feature
    /// head) ∂L/∂feat. A parameter no gradient reaches (the head without `g_feat`) is absent.
    /// The tape is consumed: each layer's record is freed once its backward has run.
    pub fn backward(&self, b: &B, tape: Tape<B>, g_out: &Tensor<B>, g_feat: Option<&Tensor<B>>) -> Result<BTreeMap<String, Tensor<B>>> {
        let Tape { temb, e1, emb, semb, proj, y, mut input_blocks, middle, mut output_blocks, concat_first, h_final, n_out, feat_src, head } = tape;
        let e = Emb { semb: &semb, proj: &proj };
        let mut g = Grads { b, map: BTreeMap::new(), semb: None };
        let n_out = match n_out {
            Some(n) => n,
            None => self.out_norm.forward(b, &h_final, true, None)?,
        };
        let g_n = g.conv(&self.out_conv, &n_out, g_out, "out.2", false, true)?.expect("asked for ∂x");
        drop(n_out);
        let (mut g_h, _) = g.norm(&self.out_norm, &h_final, &g_n, true, None, "out.0")?;
        drop(h_final);
        let g_src = match (&feat_src, g_feat) {
            (Some(src), Some(gf)) => Some(self.head_backward(&mut g, src, head.as_ref(), gf, true)?.expect("asked for ∂x")),
            (None, Some(_)) => return Err(Error::InvalidArgument("a feature gradient for a model without the feature head".into())),
            _ => None,
        };
        drop((feat_src, head));
        let nb = self.input_blocks.len();
        if input_blocks.len() != nb || output_blocks.len() != self.output_blocks.len() || concat_first.len() != output_blocks.len() {
            return Err(Error::InvalidArgument("the tape is not of this model's forward".into()));
        }
        let mut g_skips: Vec<Option<Tensor<B>>> = (0..nb).map(|_| None).collect();
        for (j, blk) in self.output_blocks.iter().enumerate().rev() {
            if j == FEAT_TAP {
                if let Some(gs) = &g_src {
                    g_h = b.add(&g_h, gs)?;
                }
            }
            let tapes = output_blocks.pop().expect("one record per block");
            let g_cat = block_backward(&mut g, blk, tapes, &e, g_h, &format!("output_blocks.{j}"), true)?.expect("asked for ∂x");
            let c_h = concat_first[j];
            let parts = b.concat_channels_x_backward(&g_cat, &[c_h, g_cat.dims()[1] - c_h])?;
            add_opt(b, &mut g_skips[nb - 1 - j], parts[1].clone())?;
            g_h = parts[0].clone();
        }
        g_h = block_backward(&mut g, &self.middle, middle, &e, g_h, "middle_block", true)?.expect("asked for ∂x");
        for i in (0..nb).rev() {
            if let Some(gs) = g_skips[i].take() {
                g_h = b.add(&g_h, &gs)?;
            }
            let tapes = input_blocks.pop().expect("one record per block");
            match block_backward(&mut g, &self.input_blocks[i], tapes, &e, g_h.clone(), &format!("input_blocks.{i}"), i > 0)? {
                Some(gx) => g_h = gx,
                None => break, // the image itself needs no gradient
            }
        }
        if let Some(gs) = g.semb.take() {
            let g_emb = b.activation_x_backward(&gs, &emb, Activation::Silu)?;
            if let (Some(table), Some(y)) = (&self.label_emb, &y) {
                g.put("label_emb.weight".into(), b.embedding_w_backward(&g_emb, y, table.dims()[0])?)?;
            }
            let s1 = b.activation(&e1, Activation::Silu)?;
            let g_s1 = g.linear(&self.time_embed.1, &s1, &g_emb, "time_embed.2", true)?.expect("asked for ∂x");
            let g_e1 = b.activation_x_backward(&g_s1, &e1, Activation::Silu)?;
            g.linear(&self.time_embed.0, &temb, &g_e1, "time_embed.0", false)?;
        }
        Ok(g.map)
    }
}
