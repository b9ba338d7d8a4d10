//! guided-diffusion's UNetModel (a superset of improved-diffusion's), plus the anomaly feature
//! head of the paper's code (docs/method.md §2, §6). Built from the same flags as the upstream scripts and
//! loaded by the PyTorch state_dict names; the forward pass reads like upstream's.

mod backward;
mod params;
mod tape;
pub use params::state_dict_shape;
pub use tape::{Activations, Tape};

use super::weights::Loader;
use crate::backend::{Backend, Conv2dParams, GnSpec, GroupNormParams, Pool2dParams};
use crate::io::flags::ModelFlags;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Output channels of the paper's anomaly feature head (EfficientNet-B4 taps 24+32+56+160).
pub const FEAT_CHANNELS: usize = 272;
/// The paper code taps the decoder after output_blocks[10].
pub const FEAT_TAP: usize = 10;

pub struct Conv<B: Backend> {
    w: Tensor<B>,
    b: Option<Tensor<B>>,
    p: Conv2dParams,
}

impl<B: Backend> Conv<B> {
    fn load(l: &Loader<B>, name: &str, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> Result<Self> {
        Ok(Conv { w: l.tensor(&format!("{name}.weight"), &[cout, cin, k, k])?, b: Some(l.tensor(&format!("{name}.bias"), &[cout])?), p: Conv2dParams::new(stride, pad, 1) })
    }
    /// A Conv1d(cin, cout, 1) of upstream, run as a 1×1 conv2d on [N, C, T, 1].
    fn load_1d(l: &Loader<B>, name: &str, cin: usize, cout: usize) -> Result<Self> {
        let w = l.tensor(&format!("{name}.weight"), &[cout, cin, 1])?;
        Ok(Conv { w: l.backend.reshape(&w, &[cout, cin, 1, 1])?, b: Some(l.tensor(&format!("{name}.bias"), &[cout])?), p: Conv2dParams::new(1, 0, 1) })
    }
    fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        b.conv2d(x, &self.w, self.b.as_ref(), &self.p)
    }
    /// `forward` (+ res), with the output's group-norm records for `next` where the backend makes them.
    fn forward_gn(&self, b: &B, x: &Tensor<B>, res: Option<&Tensor<B>>, next: Option<&GnSpec<'_, B>>) -> Result<Act<B>> {
        let (t, rec) = b.conv2d_gn(x, None, None, &self.w, self.b.as_ref(), res, &self.p, next)?;
        Ok(Act { t, rec })
    }
    /// res + conv(x): a residual connection, added in the conv's epilogue on a GPU.
    fn forward_add(&self, b: &B, x: &Tensor<B>, res: &Tensor<B>) -> Result<Tensor<B>> {
        b.conv2d_add(x, &self.w, self.b.as_ref(), res, &self.p)
    }
}

pub struct Linear<B: Backend> {
    w: Tensor<B>,
    b: Tensor<B>,
}

impl<B: Backend> Linear<B> {
    fn load(l: &Loader<B>, name: &str, fin: usize, fout: usize) -> Result<Self> {
        Ok(Linear { w: l.tensor(&format!("{name}.weight"), &[fout, fin])?, b: l.tensor(&format!("{name}.bias"), &[fout])? })
    }
    fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        b.linear(x, &self.w, Some(&self.b))
    }
}

/// GroupNorm32 (32 groups, eps 1e-5).
pub struct Norm<B: Backend> {
    g: Tensor<B>,
    b: Tensor<B>,
}

impl<B: Backend> Norm<B> {
    fn load(l: &Loader<B>, name: &str, c: usize) -> Result<Self> {
        if c % 32 != 0 {
            return Err(Error::InvalidArgument(format!("{name}: GroupNorm32 needs a multiple of 32 channels, the flags give {c}")));
        }
        Ok(Norm { g: l.tensor(&format!("{name}.weight"), &[c])?, b: l.tensor(&format!("{name}.bias"), &[c])? })
    }
    fn forward(&self, b: &B, x: &Tensor<B>, silu: bool, ss: Option<(&Tensor<B>, &Tensor<B>)>) -> Result<Tensor<B>> {
        b.group_norm(x, &self.g, &self.b, &GroupNormParams::gn32(silu), ss)
    }
    /// This norm as an operand (`Backend::conv2d_gn`), scale and shift from `emb`'s columns when given.
    fn spec<'a>(&'a self, silu: bool, emb: Option<(&'a Tensor<B>, usize)>) -> GnSpec<'a, B> {
        GnSpec { gamma: &self.g, beta: &self.b, p: GroupNormParams::gn32(silu), emb }
    }
    /// conv(act(GN(x)·(1+scale)+shift)) (+ res), scale and shift from `emb`'s columns when given:
    /// one op (Backend::conv2d_gn), the normalised tensor never stored on a GPU; x's statistics
    /// from its records when its producer made them (`x.rec`), and the output's for `next`.
    #[allow(clippy::too_many_arguments)]
    fn norm_conv(&self, b: &B, x: &Act<B>, silu: bool, emb: Option<(&Tensor<B>, usize)>, conv: &Conv<B>, res: Option<&Tensor<B>>, next: Option<&GnSpec<'_, B>>) -> Result<Act<B>> {
        let (t, rec) = b.conv2d_gn(&x.t, x.rec.as_ref(), Some(&self.spec(silu, emb)), &conv.w, conv.b.as_ref(), res, &conv.p, next)?;
        Ok(Act { t, rec })
    }
}

/// A layer's output and, where its conv made them in its epilogue (`Backend::conv2d_gn`: the
/// CUDA backend at f32), its group-norm records for the norm that reads it next — so that norm's
/// conv needs no statistics launch of its own.
pub struct Act<B: Backend> {
    t: Tensor<B>,
    rec: Option<Tensor<B>>,
}

impl<B: Backend> Act<B> {
    fn plain(t: Tensor<B>) -> Self {
        Act { t, rec: None }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Resample {
    None,
    Up,
    Down,
}

fn resample<B: Backend>(b: &B, x: &Tensor<B>, r: Resample) -> Result<Tensor<B>> {
    match r {
        Resample::None => Ok(x.clone()),
        Resample::Up => b.upsample_nearest2x(x),
        Resample::Down => b.avg_pool2d(x, &Pool2dParams::new(2, 2, 0)),
    }
}

pub struct ResBlock<B: Backend> {
    in_norm: Norm<B>,
    in_conv: Conv<B>,
    emb: Linear<B>,
    out_norm: Norm<B>,
    out_conv: Conv<B>,
    skip: Option<Conv<B>>,
    updown: Resample,
    scale_shift: bool,
    cout: usize,
    /// first column of this block's projection in the UNet's packed one (`EmbPack`)
    emb_off: usize,
}

impl<B: Backend> ResBlock<B> {
    fn load(l: &Loader<B>, p: &str, cin: usize, cout: usize, emb_dim: usize, scale_shift: bool, updown: Resample) -> Result<Self> {
        let skip = if cin == cout { None } else { Some(Conv::load(l, &format!("{p}.skip_connection"), cin, cout, 1, 1, 0)?) };
        Ok(ResBlock {
            in_norm: Norm::load(l, &format!("{p}.in_layers.0"), cin)?,
            in_conv: Conv::load(l, &format!("{p}.in_layers.2"), cin, cout, 3, 1, 1)?,
            emb: Linear::load(l, &format!("{p}.emb_layers.1"), emb_dim, if scale_shift { 2 * cout } else { cout })?,
            out_norm: Norm::load(l, &format!("{p}.out_layers.0"), cout)?,
            out_conv: Conv::load(l, &format!("{p}.out_layers.3"), cout, cout, 3, 1, 1)?,
            skip,
            updown,
            scale_shift,
            cout,
            emb_off: 0, // set by UNet::load
        })
    }

    /// Columns of this block's timestep projection.
    fn emb_width(&self) -> usize {
        if self.scale_shift {
            2 * self.cout
        } else {
            self.cout
        }
    }

    /// `proj` is every block's emb_layers(emb) side by side (`EmbPack::project`); this block's
    /// columns start at `emb_off`. `next`: the norm that reads the output, if any.
    fn forward(&self, b: &B, x: &Act<B>, proj: &Tensor<B>, next: Option<&GnSpec<'_, B>>) -> Result<Act<B>> {
        // out_norm's scale-shift read in place from this block's columns; the records of c for it
        // made by in_conv (without scale-shift the add below comes between, so none)
        let out_spec = self.scale_shift.then(|| self.out_norm.spec(true, Some((proj, self.emb_off))));
        // each intermediate is dropped as soon as the next is made (a shadowed binding would live
        // to the end of the function: at the paper's 256² level that held 4 extra activations)
        let c = match self.updown {
            Resample::None => self.in_norm.norm_conv(b, x, true, None, &self.in_conv, None, out_spec.as_ref())?,
            // the norm's output is resampled before the conv (one op with x's records)
            r => {
                let h = b.group_norm_resample(&x.t, x.rec.as_ref(), &self.in_norm.spec(true, None), r == Resample::Up)?;
                self.in_conv.forward_gn(b, &h, None, out_spec.as_ref())?
            }
        };
        let skip = {
            let x = resample(b, &x.t, self.updown)?;
            match &self.skip {
                Some(c) => c.forward(b, &x)?,
                None => x,
            }
        };
        // skip + out_conv(out_norm(c)), the add in the conv's epilogue
        if self.scale_shift {
            self.out_norm.norm_conv(b, &c, true, Some((proj, self.emb_off)), &self.out_conv, Some(&skip), next)
        } else {
            let n = proj.dims()[0];
            let e = b.slice_channels(proj, self.emb_off, self.emb_off + self.cout)?;
            let e = b.reshape(&e, &[n, self.cout, 1, 1])?;
            self.out_norm.norm_conv(b, &Act::plain(b.add(&c.t, &e)?), true, None, &self.out_conv, Some(&skip), next)
        }
    }
}

pub struct Attention<B: Backend> {
    norm: Norm<B>,
    qkv: Conv<B>,
    proj: Conv<B>,
    heads: usize,
}

impl<B: Backend> Attention<B> {
    fn load(l: &Loader<B>, p: &str, c: usize, heads: usize, new_order: bool) -> Result<Self> {
        if heads == 0 || c % heads != 0 {
            return Err(Error::InvalidArgument(format!("{p}: {c} channels cannot be split into {heads} attention heads")));
        }
        let qkv = if new_order {
            // QKVAttention splits q|k|v before the heads; permute the rows of the qkv projection
            // into the legacy per-head [q_h; k_h; v_h] layout so one kernel serves both.
            let (ws, w) = l.host(&format!("{p}.qkv.weight"))?;
            let (bs, bias) = l.host(&format!("{p}.qkv.bias"))?;
            if ws != [3 * c, c, 1] || bs != [3 * c] {
                return Err(Error::BadTensor { path: l.weights.path().to_path_buf(), name: format!("{p}.qkv"), msg: format!("shapes {ws:?}/{bs:?}, expected [{}, {c}, 1]/[{}]", 3 * c, 3 * c) });
            }
            let d = c / heads;
            let (mut w2, mut b2) = (vec![0.0f32; w.len()], vec![0.0f32; bias.len()]);
            for h in 0..heads {
                for part in 0..3 {
                    for ch in 0..d {
                        let (dst, src) = (h * 3 * d + part * d + ch, part * c + h * d + ch);
                        w2[dst * c..(dst + 1) * c].copy_from_slice(&w[src * c..(src + 1) * c]);
                        b2[dst] = bias[src];
                    }
                }
            }
            Conv { w: l.backend.from_host(&[3 * c, c, 1, 1], &w2)?, b: Some(l.backend.from_host(&[3 * c], &b2)?), p: Conv2dParams::new(1, 0, 1) }
        } else {
            Conv::load_1d(l, &format!("{p}.qkv"), c, 3 * c)?
        };
        Ok(Attention { norm: Norm::load(l, &format!("{p}.norm"), c)?, qkv, proj: Conv::load_1d(l, &format!("{p}.proj_out"), c, c)?, heads })
    }

    /// `next`: the norm that reads the output, if any.
    fn forward(&self, b: &B, x: &Act<B>, next: Option<&GnSpec<'_, B>>) -> Result<Act<B>> {
        let d = x.t.dims().to_vec();
        let t: usize = d[2..].iter().product();
        // [N, C, T, 1]: the same (image, channel) records as [N, C, H, W]
        let xf = Act { t: b.reshape(&x.t, &[d[0], d[1], t, 1])?, rec: x.rec.clone() };
        let qkv = self.norm.norm_conv(b, &xf, false, None, &self.qkv, None, None)?;
        let a = b.attention_legacy(&qkv.t, self.heads)?;
        // xf + proj(a), the add in the conv's epilogue
        let y = self.proj.forward_gn(b, &a, Some(&xf.t), next)?;
        Ok(Act { t: b.reshape(&y.t, &d)?, rec: y.rec })
    }
}

// a few hundred layers per model, built once: boxing the ResBlock would buy nothing
#[allow(clippy::large_enum_variant)]
pub enum Layer<B: Backend> {
    Conv(Conv<B>),
    Res(ResBlock<B>),
    Attn(Attention<B>),
    Down(Conv<B>),
    Up(Conv<B>),
}

impl<B: Backend> Layer<B> {
    /// `proj`: the packed timestep projections of every ResBlock (`EmbPack::project`); `next`: the
    /// norm that reads the output, if any (its records made where the backend can).
    fn forward(&self, b: &B, x: &Act<B>, proj: &Tensor<B>, next: Option<&GnSpec<'_, B>>) -> Result<Act<B>> {
        match self {
            Layer::Conv(c) | Layer::Down(c) => c.forward_gn(b, &x.t, None, next),
            Layer::Res(r) => r.forward(b, x, proj, next),
            Layer::Attn(a) => a.forward(b, x, next),
            Layer::Up(c) => c.forward_gn(b, &b.upsample_nearest2x(&x.t)?, None, next),
        }
    }

    /// The norm this layer applies to its input first (which reads the input's records).
    fn first_norm(&self) -> Option<GnSpec<'_, B>> {
        match self {
            Layer::Res(r) => Some(r.in_norm.spec(true, None)),
            Layer::Attn(a) => Some(a.norm.spec(false, None)),
            _ => None,
        }
    }
}

/// The layers in order; `after`: the norm that reads the last one's output, if any.
fn run<B: Backend>(b: &B, layers: &[Layer<B>], x: Act<B>, proj: &Tensor<B>, after: Option<&GnSpec<'_, B>>) -> Result<Act<B>> {
    let mut h = x;
    for (i, l) in layers.iter().enumerate() {
        let next = match layers.get(i + 1) {
            Some(n) => n.first_norm(),
            None => after.copied(),
        };
        h = l.forward(b, &h, proj, next.as_ref())?;
    }
    Ok(h)
}

/// Every ResBlock's emb_layers.1 (Linear(emb_dim → C or 2C) of the shared SiLU(emb)) stacked into
/// one weight, so the forward projects once (one GEMM, `Backend::linear_parts`) instead of once
/// per block (a launch per ResBlock, and two slices for scale-shift). A copy of the blocks'
/// weights (which stay, by name, for the backward and the optimiser): built at load, dropped by
/// `visit_params_mut` and rebuilt by the next forward — which is how every parameter is replaced (a stale copy
/// would run the old projections after an optimiser step).
pub struct EmbPack<B: Backend> {
    w: Tensor<B>,
    b: Tensor<B>,
    /// rows of each block, in the forward's order
    parts: Vec<usize>,
}

impl<B: Backend> EmbPack<B> {
    /// Stacks the blocks' projections in forward order (`emb_off` set by `UNet::load`).
    fn new(be: &B, blocks: &[&ResBlock<B>]) -> Result<Self> {
        let (mut ws, mut bs, mut parts) = (Vec::new(), Vec::new(), Vec::new());
        let mut off = 0;
        for r in blocks {
            debug_assert_eq!(r.emb_off, off);
            let k = r.emb_width();
            let fin = r.emb.w.dims()[1];
            ws.push(be.reshape(&r.emb.w, &[1, k * fin])?);
            bs.push(be.reshape(&r.emb.b, &[1, k])?);
            parts.push(k);
            off += k;
        }
        let fin = blocks.first().map_or(0, |r| r.emb.w.dims()[1]);
        let w = be.reshape(&be.concat_channels(&ws.iter().collect::<Vec<_>>())?, &[off, fin])?;
        let b = be.reshape(&be.concat_channels(&bs.iter().collect::<Vec<_>>())?, &[off])?;
        Ok(EmbPack { w, b, parts })
    }

    /// [N, Σ widths]: every block's emb_layers(emb) from `semb` = SiLU(emb).
    fn project(&self, be: &B, semb: &Tensor<B>) -> Result<Tensor<B>> {
        be.linear_parts(semb, &self.w, Some(&self.b), &self.parts)
    }
}

/// The paper code's `feat_rec1`: GroupNorm32 → SiLU → Conv1×1(C→272) on output_blocks[10]'s
/// output, bilinearly resized to feat_shape².
pub struct FeatHead<B: Backend> {
    norm: Norm<B>,
    conv: Conv<B>,
    pub feat_shape: usize,
}

impl<B: Backend> FeatHead<B> {
    /// Channels the head predicts (the extractor's taps, concatenated).
    pub fn out_channels(&self) -> usize {
        self.conv.w.dims()[0]
    }
}

pub struct UNetOutput<B: Backend> {
    /// [N, 3 or 6, H, W]: ε̂ (and v)
    pub out: Tensor<B>,
    /// [N, 272, S, S] when the model has the feature head
    pub feat: Option<Tensor<B>>,
}

pub struct UNet<B: Backend> {
    pub flags: ModelFlags,
    pub model_channels: usize,
    pub num_classes: Option<usize>,
    time_embed: (Linear<B>, Linear<B>),
    label_emb: Option<Tensor<B>>,
    input_blocks: Vec<Vec<Layer<B>>>,
    middle: Vec<Layer<B>>,
    output_blocks: Vec<Vec<Layer<B>>>,
    out_norm: Norm<B>,
    out_conv: Conv<B>,
    pub feat_head: Option<FeatHead<B>>,
    /// what `forward_graphed` records this model's graphs under (backend/cuda/graph.rs)
    graph_id: u64,
    /// the ResBlocks' timestep projections stacked (built at load; again after a parameter update)
    emb_pack: std::sync::OnceLock<EmbPack<B>>,
}

impl<B: Backend> UNet<B> {
    /// Builds the model of `flags` from the tensors of `l` (every tensor must be used).
    pub fn load(flags: &ModelFlags, l: &Loader<B>) -> Result<Self> {
        let mc = flags.num_channels;
        let mult = flags.channel_mult()?;
        let ch_of = |m: f64| (m * mc as f64) as usize;
        let emb_dim = 4 * mc;
        let attn_ds = flags.attention_ds();
        let heads_for = |c: usize, upsample: bool| -> Result<usize> {
            if flags.num_head_channels > 0 {
                let hc = flags.num_head_channels as usize;
                if c % hc != 0 {
                    return Err(Error::InvalidArgument(format!("{c} channels are not divisible by num_head_channels {hc}")));
                }
                Ok(c / hc)
            } else if upsample && flags.num_heads_upsample > 0 {
                Ok(flags.num_heads_upsample as usize)
            } else {
                Ok(flags.num_heads)
            }
        };
        let ss = flags.use_scale_shift_norm;
        let num_classes = if flags.class_cond {
            let rows = l.rows("label_emb.weight")?;
            if let Some(n) = flags.num_classes {
                if n != rows {
                    return Err(Error::InvalidArgument(format!("--num_classes {n} but label_emb.weight has {rows} rows")));
                }
            }
            Some(rows)
        } else {
            None
        };
        let label_emb = match num_classes {
            Some(n) => Some(l.tensor("label_emb.weight", &[n, emb_dim])?),
            None => None,
        };
        let time_embed = (Linear::load(l, "time_embed.0", mc, emb_dim)?, Linear::load(l, "time_embed.2", emb_dim, emb_dim)?);

        let mut ch = ch_of(mult[0]);
        let input_ch = ch;
        let mut input_blocks = vec![vec![Layer::Conv(Conv::load(l, "input_blocks.0.0", 3, ch, 3, 1, 1)?)]];
        let mut chans = vec![ch];
        let mut ds = 1;
        for (level, &m) in mult.iter().enumerate() {
            for _ in 0..flags.num_res_blocks {
                let i = input_blocks.len();
                let out = ch_of(m);
                let mut layers = vec![Layer::Res(ResBlock::load(l, &format!("input_blocks.{i}.0"), ch, out, emb_dim, ss, Resample::None)?)];
                ch = out;
                if attn_ds.contains(&ds) {
                    layers.push(Layer::Attn(Attention::load(l, &format!("input_blocks.{i}.1"), ch, heads_for(ch, false)?, flags.use_new_attention_order)?));
                }
                input_blocks.push(layers);
                chans.push(ch);
            }
            if level != mult.len() - 1 {
                let i = input_blocks.len();
                let layer = if flags.resblock_updown {
                    Layer::Res(ResBlock::load(l, &format!("input_blocks.{i}.0"), ch, ch, emb_dim, ss, Resample::Down)?)
                } else {
                    Layer::Down(Conv::load(l, &format!("input_blocks.{i}.0.op"), ch, ch, 3, 2, 1)?)
                };
                input_blocks.push(vec![layer]);
                chans.push(ch);
                ds *= 2;
            }
        }
        let middle = vec![
            Layer::Res(ResBlock::load(l, "middle_block.0", ch, ch, emb_dim, ss, Resample::None)?),
            Layer::Attn(Attention::load(l, "middle_block.1", ch, heads_for(ch, false)?, flags.use_new_attention_order)?),
            Layer::Res(ResBlock::load(l, "middle_block.2", ch, ch, emb_dim, ss, Resample::None)?),
        ];
        let mut output_blocks = Vec::new();
        for (level, &m) in mult.iter().enumerate().rev() {
            for i in 0..=flags.num_res_blocks {
                let j = output_blocks.len();
                let ich = chans.pop().expect("one skip per block");
                let out = ch_of(m);
                let mut layers = vec![Layer::Res(ResBlock::load(l, &format!("output_blocks.{j}.0"), ch + ich, out, emb_dim, ss, Resample::None)?)];
                ch = out;
                if attn_ds.contains(&ds) {
                    layers.push(Layer::Attn(Attention::load(l, &format!("output_blocks.{j}.1"), ch, heads_for(ch, true)?, flags.use_new_attention_order)?));
                }
                if level > 0 && i == flags.num_res_blocks {
                    let k = layers.len();
                    layers.push(if flags.resblock_updown {
                        Layer::Res(ResBlock::load(l, &format!("output_blocks.{j}.{k}"), ch, ch, emb_dim, ss, Resample::Up)?)
                    } else {
                        Layer::Up(Conv::load(l, &format!("output_blocks.{j}.{k}.conv"), ch, ch, 3, 1, 1)?)
                    });
                    ds /= 2;
                }
                output_blocks.push(layers);
            }
        }
        let out_norm = Norm::load(l, "out.0", ch)?;
        let out_conv = Conv::load(l, "out.2", input_ch, flags.out_channels(), 3, 1, 1)?;
        let feat_head = if l.contains("feat_rec1.2.weight") {
            if output_blocks.len() <= FEAT_TAP {
                return Err(Error::InvalidArgument(format!("the feature head taps output_blocks[{FEAT_TAP}] but the model has {} output blocks", output_blocks.len())));
            }
            let c = l.rows("feat_rec1.0.weight")?;
            // 272 for the paper's EfficientNet-B4 taps; other extractors give other widths
            let out = if l.contains("feat_rec1.2.bias") { l.rows("feat_rec1.2.bias")? } else { FEAT_CHANNELS };
            Some(FeatHead { norm: Norm::load(l, "feat_rec1.0", c)?, conv: Conv::load(l, "feat_rec1.2", c, out, 1, 1, 0)?, feat_shape: flags.feat_shape })
        } else {
            None
        };
        let mut m = UNet {
            flags: flags.clone(),
            model_channels: mc,
            num_classes,
            time_embed,
            label_emb,
            input_blocks,
            middle,
            output_blocks,
            out_norm,
            out_conv,
            feat_head,
            emb_pack: Default::default(),
            graph_id: crate::backend::new_graph_id(),
        };
        let mut off = 0;
        for r in m.res_blocks_mut() {
            r.emb_off = off;
            off += r.emb_width();
        }
        // stacked now, so no forward pays for it (after a parameter update the next one does)
        let _ = m.emb_pack.set(EmbPack::new(l.backend, &m.res_blocks())?);
        Ok(m)
    }

    /// The ResBlocks in forward order.
    fn res_blocks(&self) -> Vec<&ResBlock<B>> {
        let layers = self.input_blocks.iter().flatten().chain(&self.middle).chain(self.output_blocks.iter().flatten());
        layers.filter_map(|l| if let Layer::Res(r) = l { Some(r) } else { None }).collect()
    }

    fn res_blocks_mut(&mut self) -> Vec<&mut ResBlock<B>> {
        let layers = self.input_blocks.iter_mut().flatten().chain(self.middle.iter_mut()).chain(self.output_blocks.iter_mut().flatten());
        layers.filter_map(|l| if let Layer::Res(r) = l { Some(r) } else { None }).collect()
    }

    /// Drops the stacked projections (their weights are about to be replaced).
    pub(crate) fn unpack_emb(&mut self) {
        self.emb_pack = Default::default();
    }

    /// Every ResBlock's emb_layers(emb) side by side, from SiLU(emb): one launch (the stack
    /// rebuilt first after a parameter update).
    fn emb_projections(&self, b: &B, semb: &Tensor<B>) -> Result<Tensor<B>> {
        self.packed_emb(b)?.project(b, semb)
    }

    /// The stacked projections, built now if a parameter update dropped them.
    fn packed_emb(&self, b: &B) -> Result<&EmbPack<B>> {
        if self.emb_pack.get().is_none() {
            let _ = self.emb_pack.set(EmbPack::new(b, &self.res_blocks())?); // a concurrent first call built the same
        }
        Ok(self.emb_pack.get().expect("set above"))
    }

    /// (timestep embedding, time_embed.0's output, the embedding before the blocks' SiLU) for a
    /// batch x of N images at timesteps t [N] with labels y (for a class-conditional model).
    fn embeddings(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, y: Option<&[usize]>) -> Result<(Tensor<B>, Tensor<B>, Tensor<B>)> {
        let rows = self.label_rows(b, x, y)?;
        self.embeddings_of(b, x, t, rows.as_ref())
    }

    /// The class embedding's rows for labels y [N] (None for an unconditional model).
    fn label_rows(&self, b: &B, x: &Tensor<B>, y: Option<&[usize]>) -> Result<Option<Tensor<B>>> {
        let n = x.dims().first().copied().unwrap_or(0);
        match (&self.label_emb, y) {
            (Some(table), Some(y)) => {
                if y.len() != n {
                    return Err(Error::shape("unet", format!("{} labels for a batch of {n}", y.len())));
                }
                Ok(Some(b.embedding(table, y)?))
            }
            (Some(_), None) => Err(Error::InvalidArgument("the model is class-conditional: give class labels".into())),
            (None, Some(_)) => Err(Error::InvalidArgument("the model is not class-conditional: labels given".into())),
            (None, None) => Ok(None),
        }
    }

    /// `embeddings` with the class embedding's rows already gathered (`label_rows`).
    fn embeddings_of(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, rows: Option<&Tensor<B>>) -> Result<(Tensor<B>, Tensor<B>, Tensor<B>)> {
        let n = x.dims().first().copied().unwrap_or(0);
        if t.numel() != n {
            return Err(Error::shape("unet", format!("{} timesteps for a batch of {n}", t.numel())));
        }
        let temb = b.timestep_embedding(t, self.model_channels, 10000.0)?;
        let e1 = self.time_embed.0.forward(b, &temb)?;
        let mut emb = self.time_embed.1.forward(b, &b.activation(&e1, crate::backend::Activation::Silu)?)?;
        if let Some(r) = rows {
            emb = b.add(&emb, r)?;
        }
        Ok((temb, e1, emb))
    }

    /// `forward`, run through `Backend::graph_forward`: on the CUDA backend recorded as a graph at
    /// the first call for these shapes and replayed after (x, t and the class embedding's rows are
    /// the graph's inputs, so nothing of a call is baked in); the same values as `forward`. The
    /// model's weights must not change while its graphs live.
    pub fn forward_graphed(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, y: Option<&[usize]>) -> Result<UNetOutput<B>> {
        let rows = self.label_rows(b, x, y)?;
        // built before the capture: the stack outlives the graph, so recorded it would be redone
        // at every replay, and a failed capture would leave it holding buffers never written
        self.packed_emb(b)?;
        let mut inputs = vec![x, t];
        inputs.extend(rows.as_ref());
        let outs = b.graph_forward(self.graph_id, &inputs, &|v| {
            let o = self.forward_of(b, &v[0], &v[1], v.get(2))?;
            Ok(std::iter::once(o.out).chain(o.feat).collect())
        })?;
        let mut it = outs.into_iter();
        let out = it.next().ok_or_else(|| Error::InvalidArgument("the graphed UNet forward returned nothing".into()))?;
        Ok(UNetOutput { out, feat: it.next() })
    }

    /// x [N,3,H,W]; t [N] the timestep values the model receives; y the class labels of a
    /// class-conditional model.
    pub fn forward(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, y: Option<&[usize]>) -> Result<UNetOutput<B>> {
        let rows = self.label_rows(b, x, y)?;
        self.forward_of(b, x, t, rows.as_ref())
    }

    /// `forward` with the class embedding's rows already gathered (`label_rows`).
    fn forward_of(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, rows: Option<&Tensor<B>>) -> Result<UNetOutput<B>> {
        Ok(self.forward_tap_of(b, x, t, rows)?.0)
    }

    /// `forward`, with the feature head's input (output_blocks[FEAT_TAP]'s output) when the
    /// model has the head: what training the head alone (`head_gradients`) needs.
    pub fn forward_with_tap(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, y: Option<&[usize]>) -> Result<(UNetOutput<B>, Option<Tensor<B>>)> {
        let rows = self.label_rows(b, x, y)?;
        self.forward_tap_of(b, x, t, rows.as_ref())
    }

    fn forward_tap_of(&self, b: &B, x: &Tensor<B>, t: &Tensor<B>, rows: Option<&Tensor<B>>) -> Result<(UNetOutput<B>, Option<Tensor<B>>)> {
        let (_, _, emb) = self.embeddings_of(b, x, t, rows)?;
        let semb = b.activation(&emb, crate::backend::Activation::Silu)?;
        let proj = self.emb_projections(b, &semb)?;
        let mut hs = Vec::with_capacity(self.input_blocks.len());
        let mut h = Act::plain(x.clone());
        for (i, blk) in self.input_blocks.iter().enumerate() {
            // the norm the block's output meets next: the next block's first layer's, or the middle's
            let after = self.input_blocks.get(i + 1).map_or(&self.middle, |n| n).first().and_then(Layer::first_norm);
            h = run(b, blk, h, &proj, after.as_ref())?;
            hs.push(h.t.clone());
        }
        // a concat comes next (it makes its own records)
        let mut h = run(b, &self.middle, h, &proj, None)?;
        let mut feat_src = None;
        let out_spec = self.out_norm.spec(true, None);
        let blocks = self.output_blocks.len();
        for (j, blk) in self.output_blocks.iter().enumerate() {
            let skip = hs.pop().expect("one skip per block");
            // with the records of the block's first norm where the backend makes them as it copies
            let (t, rec) = b.concat_channels_gn(&[&h.t, &skip], blk.first().and_then(Layer::first_norm).as_ref())?;
            // the parts are in `t` now: freed before the block runs
            drop((h, skip));
            // the last block's output meets the output norm
            h = run(b, blk, Act { t, rec }, &proj, (j + 1 == blocks).then_some(&out_spec))?;
            if j == FEAT_TAP && self.feat_head.is_some() {
                feat_src = Some(h.t.clone());
            }
        }
        let out = self.out_norm.norm_conv(b, &h, true, None, &self.out_conv, None, None)?.t;
        let feat = match (&self.feat_head, &feat_src) {
            (Some(fh), Some(src)) => {
                let r = b.resize_bilinear(src, fh.feat_shape, fh.feat_shape)?;
                Some(fh.norm.norm_conv(b, &Act::plain(r), true, None, &fh.conv, None, None)?.t)
            }
            _ => None,
        };
        Ok((UNetOutput { out, feat }, feat_src))
    }
}
