//! Parameters of the ops, shared by every backend, with the shape rules that go with them.

use crate::tensor::Shape;
use crate::{Error, Result};

/// Zero padding on each side. PyTorch's symmetric `padding=p` is `Padding2d::same(p)`;
/// EfficientNet's static "same" padding is asymmetric, e.g. (left 0, right 1, top 0, bottom 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Padding2d {
    pub left: usize,
    pub right: usize,
    pub top: usize,
    pub bottom: usize,
}

impl Padding2d {
    pub fn same(p: usize) -> Self {
        Padding2d { left: p, right: p, top: p, bottom: p }
    }
    /// From F.pad's order (left, right, top, bottom).
    pub fn lrtb(l: usize, r: usize, t: usize, b: usize) -> Self {
        Padding2d { left: l, right: r, top: t, bottom: b }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: (usize, usize),
    pub padding: Padding2d,
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams { stride: (1, 1), padding: Padding2d::default(), groups: 1 }
    }
}

impl Conv2dParams {
    pub fn new(stride: usize, padding: usize, groups: usize) -> Self {
        Conv2dParams { stride: (stride, stride), padding: Padding2d::same(padding), groups }
    }

    /// Checks x [N,C,H,W] against w [O, C/groups, KH, KW] and returns the output shape.
    pub fn out_shape(&self, x: &Shape, w: &Shape) -> Result<Shape> {
        let op = "conv2d";
        if x.rank() != 4 || w.rank() != 4 {
            return Err(Error::shape(op, format!("want x [N,C,H,W] and w [O,I,KH,KW], got x {x} and w {w}")));
        }
        let (n, c, h, wd) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let (o, ci, kh, kw) = (w.dim(0), w.dim(1), w.dim(2), w.dim(3));
        let g = self.groups;
        if g == 0 || self.stride.0 == 0 || self.stride.1 == 0 {
            return Err(Error::shape(op, "groups and stride must be positive"));
        }
        if c % g != 0 || o % g != 0 || ci * g != c {
            return Err(Error::shape(
                op,
                format!("x has {c} channels, w {w} with groups={g} expects {} input and a multiple of {g} output channels", ci * g),
            ));
        }
        let ph = h + self.padding.top + self.padding.bottom;
        let pw = wd + self.padding.left + self.padding.right;
        if ph < kh || pw < kw || kh == 0 || kw == 0 {
            return Err(Error::shape(op, format!("kernel {kh}x{kw} larger than padded input {ph}x{pw}")));
        }
        let ho = (ph - kh) / self.stride.0 + 1;
        let wo = (pw - kw) / self.stride.1 + 1;
        Ok(Shape::new(&[n, o, ho, wo]))
    }
}

/// Pooling window: square kernel, stride and symmetric zero/−∞ padding, floor mode
/// (PyTorch's defaults; avg pooling counts padded zeros like `count_include_pad=True`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Pool2dParams {
    pub const fn new(kernel: usize, stride: usize, padding: usize) -> Self {
        Pool2dParams { kernel, stride, padding }
    }
    pub fn out_shape(&self, op: &'static str, x: &Shape) -> Result<Shape> {
        if x.rank() != 4 {
            return Err(Error::shape(op, format!("want x [N,C,H,W], got {x}")));
        }
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            return Err(Error::shape(op, format!("bad window {self:?} (padding must be at most half the kernel)")));
        }
        let (h, w) = (x.dim(2) + 2 * self.padding, x.dim(3) + 2 * self.padding);
        if h < self.kernel || w < self.kernel {
            return Err(Error::shape(op, format!("window {} larger than padded input {h}x{w}", self.kernel)));
        }
        Ok(Shape::new(&[x.dim(0), x.dim(1), (h - self.kernel) / self.stride + 1, (w - self.kernel) / self.stride + 1]))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormParams {
    pub groups: usize,
    pub eps: f32,
    /// Apply SiLU after the (scale-shifted) normalisation, as `normalization(ch) → SiLU` in the UNet.
    pub silu: bool,
}

impl GroupNormParams {
    /// guided-diffusion's GroupNorm32: 32 groups, eps 1e-5.
    pub fn gn32(silu: bool) -> Self {
        GroupNormParams { groups: 32, eps: 1e-5, silu }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    Relu,
    Sigmoid,
    /// min(max(x, 0), 6): EfficientNet-Lite's activation
    Relu6,
}

impl Activation {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "silu" | "swish" => Ok(Activation::Silu),
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            "relu6" => Ok(Activation::Relu6),
            _ => Err(Error::InvalidArgument(format!("unknown activation `{s}` (silu, relu, sigmoid, relu6)"))),
        }
    }
}

/// Element count check shared by ops that take two same-shaped tensors.
pub fn same_shape(op: &'static str, a: &Shape, b: &Shape) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("shapes differ: {a} vs {b}")));
    }
    Ok(())
}

/// `b` broadcasts to `a` when it has the same rank and each dim equals a's or is 1.
pub fn broadcastable(op: &'static str, a: &Shape, b: &Shape) -> Result<()> {
    let ok = a.rank() == b.rank() && a.dims().iter().zip(b.dims()).all(|(&x, &y)| x == y || y == 1);
    if !ok {
        return Err(Error::shape(op, format!("{b} does not broadcast to {a} (same rank, each dim equal or 1)")));
    }
    Ok(())
}

/// Per-channel vector check: `v` must hold exactly `c` values (any shape, e.g. [C] or [1,C,1,1]).
pub fn channel_vector(op: &'static str, what: &str, v: &Shape, c: usize) -> Result<()> {
    if v.numel() != c {
        return Err(Error::shape(op, format!("{what} has shape {v}, want {c} values (one per channel)")));
    }
    Ok(())
}

pub fn dims4(op: &'static str, s: &Shape) -> Result<[usize; 4]> {
    match s.dims() {
        &[n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Error::shape(op, format!("want a 4-d [N,C,H,W] tensor, got {s}"))),
    }
}

pub fn at_least_2d(op: &'static str, s: &Shape) -> Result<()> {
    if s.rank() < 2 {
        return Err(Error::shape(op, format!("want [N, C, ...], got {s}")));
    }
    Ok(())
}

/// Scale and shift of the fused GN scale-shift must hold [N, C] values.
pub fn check_scale_shift(op: &'static str, scale: &Shape, shift: &Shape, n: usize, c: usize) -> Result<()> {
    for (what, t) in [("scale", scale), ("shift", shift)] {
        if t.numel() != n * c || t.dims().first() != Some(&n) {
            return Err(Error::shape(op, format!("{what} has shape {t}, want [{n}, {c}] (or [{n}, {c}, 1, 1])")));
        }
    }
    Ok(())
}

/// (N, C, S) of a group norm input, with γ, β and the group count checked.
pub fn group_norm_dims(op: &'static str, x: &Shape, gamma: &Shape, beta: &Shape, p: &GroupNormParams) -> Result<(usize, usize, usize)> {
    at_least_2d(op, x)?;
    let (n, c, s) = x.ncs();
    if p.groups == 0 || c % p.groups != 0 {
        return Err(Error::shape(op, format!("{c} channels do not split into {} groups", p.groups)));
    }
    channel_vector(op, "gamma", gamma, c)?;
    channel_vector(op, "beta", beta, c)?;
    Ok((n, c, s))
}

/// (N, d, T) of a legacy-QKV attention input [N, 3·heads·d, T...].
pub fn attention_dims(op: &'static str, qkv: &Shape, heads: usize) -> Result<(usize, usize, usize)> {
    at_least_2d(op, qkv)?;
    let (n, c3, t) = qkv.ncs();
    if heads == 0 || c3 % (3 * heads) != 0 {
        return Err(Error::shape(op, format!("{c3} channels are not 3·heads·d for heads={heads}")));
    }
    Ok((n, c3 / (3 * heads), t))
}

/// (rows, in, out) of x [rows, in] · w [out, in]ᵀ.
pub fn linear_dims(op: &'static str, x: &Shape, w: &Shape) -> Result<(usize, usize, usize)> {
    if x.rank() != 2 || w.rank() != 2 || x.dim(1) != w.dim(1) {
        return Err(Error::shape(op, format!("want x [N, in] and w [out, in], got x {x} and w {w}")));
    }
    Ok((x.dim(0), x.dim(1), w.dim(0)))
}

/// Output dims of a channel concat; every part must match the first outside dim 1.
pub fn concat_dims(op: &'static str, parts: &[&Shape]) -> Result<Vec<usize>> {
    let first = parts.first().ok_or_else(|| Error::shape(op, "no tensors"))?;
    at_least_2d(op, first)?;
    let mut dims = first.dims().to_vec();
    dims[1] = 0;
    for s in parts {
        let ok = s.rank() == dims.len() && s.dim(0) == dims[0] && s.dims()[2..] == dims[2..];
        if !ok {
            return Err(Error::shape(op, format!("{first} and {s} differ outside dim 1")));
        }
        dims[1] += s.dim(1);
    }
    Ok(dims)
}

/// Output dims of x[:, start..end].
pub fn slice_dims(op: &'static str, x: &Shape, start: usize, end: usize) -> Result<Vec<usize>> {
    at_least_2d(op, x)?;
    if start > end || end > x.dim(1) {
        return Err(Error::shape(op, format!("range {start}..{end} outside {} channels", x.dim(1))));
    }
    let mut dims = x.dims().to_vec();
    dims[1] = end - start;
    Ok(dims)
}

pub fn check_embedding_ids(rows: usize, ids: &[usize]) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&i| i >= rows) {
        return Err(Error::InvalidArgument(format!("embedding index {bad} out of range for a table of {rows} rows")));
    }
    Ok(())
}

/// How p(x_{t−1}|x_t) gets its variance (upstream's ModelVarType).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarType {
    /// Model outputs [ε, v]; log σ² = f·log β + (1−f)·log σ̃²_clipped with f = (v+1)/2.
    LearnedRange,
    /// Model outputs [ε, log σ²].
    Learned,
    /// log σ² = log([σ̃²_1, β_1, β_2, ...])_t.
    FixedLarge,
    /// log σ² = log σ̃²_clipped.
    FixedSmall,
}

impl VarType {
    /// Whether the model's output carries a second block of C channels.
    pub fn learned(self) -> bool {
        matches!(self, VarType::LearnedRange | VarType::Learned)
    }
    pub fn code(self) -> i32 {
        match self {
            VarType::LearnedRange => 0,
            VarType::Learned => 1,
            VarType::FixedLarge | VarType::FixedSmall => 2,
        }
    }
}

/// Per-timestep scalars of the posterior and of the model's p(x_{t−1}|x_t), as f32 like
/// upstream's `_extract_into_tensor(...).float()`. Made by `Diffusion::step_coefs`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoefs {
    pub sqrt_recip_ab: f32,
    pub sqrt_recipm1_ab: f32,
    /// posterior mean μ̃ = c1·x0 + c2·x_t
    pub c1: f32,
    pub c2: f32,
    pub post_logvar_clipped: f32,
    pub log_beta: f32,
    /// the log-variance of the fixed variance types
    pub fixed_logvar: f32,
    pub var_type: VarType,
    /// clamp x̂0 to [−1, 1]
    pub clip: bool,
}

/// Scalars of one DDIM(η) step. Made by `Diffusion::ddim_coefs`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimCoefs {
    pub sqrt_recip_ab: f32,
    pub sqrt_recipm1_ab: f32,
    pub ab: f32,
    pub ab_prev: f32,
    pub eta: f32,
    /// false at k = 0 (no noise added)
    pub nonzero: bool,
}

/// Distinct channel ids below c for gather_channels.
pub fn check_channel_ids(op: &'static str, c: usize, ids: &[usize]) -> Result<()> {
    let mut seen = vec![false; c];
    for &i in ids {
        if i >= c {
            return Err(Error::shape(op, format!("channel {i} out of range for {c} channels")));
        }
        if std::mem::replace(&mut seen[i], true) {
            return Err(Error::shape(op, format!("channel {i} selected twice")));
        }
    }
    Ok(())
}

/// Shapes of mahalanobis: f [N, D, H, W], mean [H·W, D], linv [H·W, D(D+1)/2]; returns (n, d, p).
pub fn mahalanobis_dims(op: &'static str, f: &Shape, mean: &Shape, linv: &Shape) -> Result<(usize, usize, usize)> {
    if f.rank() != 4 {
        return Err(Error::shape(op, format!("want features [N,D,H,W], got {f}")));
    }
    let (n, d, p) = f.ncs();
    if mean.dims() != [p, d] || linv.dims() != [p, d * (d + 1) / 2] {
        return Err(Error::shape(op, format!("features {f} need mean [{p}, {d}] and packed inverse factors [{p}, {}], got {mean} and {linv}", d * (d + 1) / 2)));
    }
    Ok((n, d, p))
}
