//! conv2d (+ input gradient) and linear: parameters, shape rules, geometry.

use super::contract::Conv2dGeom;
use super::{channel_vector, dims4, fits_i32, i32_of, same_shape};
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

    /// The output shape for x [N,C,H,W] and w [O, C/groups, KH, KW].
    pub fn out_shape(&self, x: &Shape, w: &Shape) -> Result<Shape> {
        Ok(Shape::new(&conv2d_geom(x, w, self, false)?.y_dims()))
    }
}

impl Conv2dGeom {
    pub fn x_dims(&self) -> [usize; 4] {
        [self.n(), self.c(), self.h(), self.w()]
    }
    pub fn y_dims(&self) -> [usize; 4] {
        [self.n(), self.o(), self.ho(), self.wo()]
    }
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c() / self.groups()
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o() / self.groups()
    }
    /// GEMM depth of the forward: Cg·KH·KW.
    pub fn kk(&self) -> usize {
        self.cg() * self.kh() * self.kw()
    }
    /// 1×1, stride 1, no padding: a plain matrix product per image.
    pub fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.pt == 0 && self.pl == 0 && self.ho == self.h && self.wo == self.w
    }
    /// One input channel per group and not pointwise: the direct depthwise path.
    pub fn depthwise(&self) -> bool {
        self.cg() == 1 && !self.pointwise()
    }
}

fn conv2d_geom(x: &Shape, w: &Shape, p: &Conv2dParams, has_bias: bool) -> Result<Conv2dGeom> {
    let op = "conv2d";
    if x.rank() != 4 || w.rank() != 4 {
        return Err(Error::shape(op, format!("want x [N,C,H,W] and w [O,I,KH,KW], got x {x} and w {w}")));
    }
    let [n, c, h, wd] = dims4(op, x)?;
    let [o, ci, kh, kw] = dims4(op, w)?;
    let g = p.groups;
    if g == 0 || p.stride.0 == 0 || p.stride.1 == 0 {
        return Err(Error::shape(op, "groups and stride must be positive"));
    }
    if c % g != 0 || o % g != 0 || ci * g != c {
        return Err(Error::shape(op, format!("x has {c} channels, w {w} with groups={g} expects {} input and a multiple of {g} output channels", ci * g)));
    }
    let ph = h + p.padding.top + p.padding.bottom;
    let pw = wd + p.padding.left + p.padding.right;
    if ph < kh || pw < kw || kh == 0 || kw == 0 {
        return Err(Error::shape(op, format!("kernel {kh}x{kw} larger than padded input {ph}x{pw}")));
    }
    let ho = (ph - kh) / p.stride.0 + 1;
    let wo = (pw - kw) / p.stride.1 + 1;
    fits_i32(op, &[x, w])?;
    i32_of(op, n * o * ho * wo)?;
    let v = |u: usize| i32_of(op, u);
    Ok(Conv2dGeom {
        n: v(n)?,
        c: v(c)?,
        h: v(h)?,
        w: v(wd)?,
        o: v(o)?,
        kh: v(kh)?,
        kw: v(kw)?,
        ho: v(ho)?,
        wo: v(wo)?,
        sh: v(p.stride.0)?,
        sw: v(p.stride.1)?,
        pt: v(p.padding.top)?,
        pl: v(p.padding.left)?,
        groups: v(g)?,
        has_bias: has_bias as i32,
    })
}

/// conv2d: x [N,C,H,W], w [O,C/groups,KH,KW], bias [O].
pub fn conv2d(x: &Shape, w: &Shape, bias: Option<&Shape>, p: &Conv2dParams) -> Result<Conv2dGeom> {
    let g = conv2d_geom(x, w, p, bias.is_some())?;
    if let Some(b) = bias {
        channel_vector("conv2d", "bias", b, g.o())?;
    }
    Ok(g)
}

/// conv2d_x_backward: gy must be the output shape of x_shape under w.
pub fn conv2d_x_backward(gy: &Shape, w: &Shape, x_shape: &Shape, p: &Conv2dParams) -> Result<Conv2dGeom> {
    let g = conv2d_geom(x_shape, w, p, false)?;
    same_shape("conv2d_x_backward", &Shape::new(&g.y_dims()), gy)?;
    Ok(g)
}

/// conv2d_w_backward: gy must be the output shape of x under a weight of `w_shape`.
pub fn conv2d_w_backward(gy: &Shape, x: &Shape, w_shape: &Shape, p: &Conv2dParams) -> Result<Conv2dGeom> {
    let g = conv2d_geom(x, w_shape, p, false)?;
    same_shape("conv2d_w_backward", &Shape::new(&g.y_dims()), gy)?;
    Ok(g)
}

/// y = x·wᵀ + b: rows × in times out × in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearGeom {
    pub rows: usize,
    pub fin: usize,
    pub fout: usize,
}

pub fn linear(x: &Shape, w: &Shape, bias: Option<&Shape>) -> Result<LinearGeom> {
    if x.rank() != 2 || w.rank() != 2 || x.dim(1) != w.dim(1) {
        return Err(Error::shape("linear", format!("want x [N, in] and w [out, in], got x {x} and w {w}")));
    }
    let g = LinearGeom { rows: x.dim(0), fin: x.dim(1), fout: w.dim(0) };
    if let Some(b) = bias {
        channel_vector("linear", "bias", b, g.fout)?;
    }
    fits_i32("linear", &[x, w])?;
    i32_of("linear", g.rows * g.fout)?;
    Ok(g)
}

/// The row blocks of `linear_parts` must tile the output: none empty, Σ parts = out.
pub fn linear_parts(g: &LinearGeom, parts: &[usize]) -> Result<()> {
    let sum: usize = parts.iter().sum();
    if parts.contains(&0) || sum != g.fout {
        return Err(Error::shape("linear_parts", format!("parts {parts:?} (sum {sum}) must be non-empty blocks adding up to w's {} rows", g.fout)));
    }
    Ok(())
}

pub fn linear_x_backward(gy: &Shape, w: &Shape) -> Result<LinearGeom> {
    if gy.rank() != 2 || w.rank() != 2 || gy.dim(1) != w.dim(0) {
        return Err(Error::shape("linear_x_backward", format!("gy {gy} does not match w {w}")));
    }
    let g = LinearGeom { rows: gy.dim(0), fin: w.dim(1), fout: w.dim(0) };
    fits_i32("linear_x_backward", &[gy, w])?;
    i32_of("linear_x_backward", g.rows * g.fin)?;
    Ok(g)
}

/// linear_w_backward: gy [rows, out] and x [rows, in].
pub fn linear_w_backward(gy: &Shape, x: &Shape) -> Result<LinearGeom> {
    if gy.rank() != 2 || x.rank() != 2 || gy.dim(0) != x.dim(0) {
        return Err(Error::shape("linear_w_backward", format!("want gy [N, out] and x [N, in], got gy {gy} and x {x}")));
    }
    let g = LinearGeom { rows: x.dim(0), fin: x.dim(1), fout: gy.dim(1) };
    fits_i32("linear_w_backward", &[gy, x])?;
    i32_of("linear_w_backward", g.fout * g.fin)?;
    Ok(g)
}
