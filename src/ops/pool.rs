//! Pooling and resampling: avg/max pooling, global average pooling, nearest 2× upsampling,
//! bilinear resize, and their input gradients.

use super::contract::Pool2dGeom;
use super::{dims4, fits_i32, i32_of, same_shape};
use crate::tensor::Shape;
use crate::{Error, Result};

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
        Ok(pool2d_forward(op, x, self)?.1)
    }
}

impl Pool2dGeom {
    /// [N, C, Ho, Wo] given x's N and C.
    fn y_dims_for(&self, x: &Shape) -> [usize; 4] {
        [x.dim(0), x.dim(1), self.ho(), self.wo()]
    }
}

/// The window of x [N,C,H,W] under `p`.
pub fn pool2d(op: &'static str, x: &Shape, p: &Pool2dParams) -> Result<Pool2dGeom> {
    let [n, c, h, w] = dims4(op, x)?;
    if p.kernel == 0 || p.stride == 0 || 2 * p.padding > p.kernel {
        return Err(Error::shape(op, format!("bad window {p:?} (padding must be at most half the kernel)")));
    }
    let (ph, pw) = (h + 2 * p.padding, w + 2 * p.padding);
    if ph < p.kernel || pw < p.kernel {
        return Err(Error::shape(op, format!("window {} larger than padded input {ph}x{pw}", p.kernel)));
    }
    fits_i32(op, &[x])?;
    let v = |u: usize| i32_of(op, u);
    let (ho, wo) = ((ph - p.kernel) / p.stride + 1, (pw - p.kernel) / p.stride + 1);
    Ok(Pool2dGeom { planes: v(n * c)?, h: v(h)?, w: v(w)?, ho: v(ho)?, wo: v(wo)?, k: v(p.kernel)?, st: v(p.stride)?, p: v(p.padding)? })
}

/// The pool's geometry and its output shape.
pub fn pool2d_forward(op: &'static str, x: &Shape, p: &Pool2dParams) -> Result<(Pool2dGeom, Shape)> {
    let g = pool2d(op, x, p)?;
    let y = Shape::new(&g.y_dims_for(x));
    Ok((g, y))
}

/// A pool's input gradient: gy must be the pool's output for an input of `x_shape`.
pub fn pool2d_x_backward(op: &'static str, gy: &Shape, x_shape: &Shape, p: &Pool2dParams) -> Result<Pool2dGeom> {
    let (g, ys) = pool2d_forward(op, x_shape, p)?;
    same_shape(op, &ys, gy)?;
    Ok(g)
}

/// (N, C, H·W) of a global average pool over x [N,C,H,W].
pub fn global_avg_pool(x: &Shape) -> Result<(usize, usize, usize)> {
    let [n, c, h, w] = dims4("global_avg_pool", x)?;
    if h * w == 0 {
        return Err(Error::shape("global_avg_pool", "empty spatial size"));
    }
    fits_i32("global_avg_pool", &[x])?;
    Ok((n, c, h * w))
}

/// [N,C,H,W] of nearest 2× upsampling's input.
pub fn upsample_nearest2x(x: &Shape) -> Result<[usize; 4]> {
    let d = dims4("upsample_nearest2x", x)?;
    i32_of("upsample_nearest2x", 4 * x.numel())?;
    Ok(d)
}

/// [N,C,H,W] of the input whose 2× upsampling has gradient gy.
pub fn upsample_nearest2x_x_backward(gy: &Shape) -> Result<[usize; 4]> {
    let [n, c, h2, w2] = dims4("upsample_nearest2x_x_backward", gy)?;
    if h2 % 2 != 0 || w2 % 2 != 0 {
        return Err(Error::shape("upsample_nearest2x_x_backward", format!("gradient {gy} has odd size")));
    }
    fits_i32("upsample_nearest2x_x_backward", &[gy])?;
    Ok([n, c, h2 / 2, w2 / 2])
}

/// (N·C, H, W, Ho, Wo) of a bilinear resize from `small` sizes to `large` or back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResizeGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

pub fn resize_bilinear(x: &Shape, out_h: usize, out_w: usize) -> Result<ResizeGeom> {
    let [n, c, h, w] = dims4("resize_bilinear", x)?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::shape("resize_bilinear", format!("cannot resize {x} to {out_h}x{out_w}")));
    }
    fits_i32("resize_bilinear", &[x])?;
    i32_of("resize_bilinear", n * c * out_h * out_w)?;
    Ok(ResizeGeom { n, c, h, w, ho: out_h, wo: out_w })
}

pub fn resize_bilinear_x_backward(gy: &Shape, in_h: usize, in_w: usize) -> Result<ResizeGeom> {
    let [n, c, ho, wo] = dims4("resize_bilinear_x_backward", gy)?;
    if in_h == 0 || in_w == 0 || ho == 0 || wo == 0 {
        return Err(Error::shape("resize_bilinear_x_backward", "empty size"));
    }
    fits_i32("resize_bilinear_x_backward", &[gy])?;
    i32_of("resize_bilinear_x_backward", n * c * in_h * in_w)?;
    Ok(ResizeGeom { n, c, h: in_h, w: in_w, ho, wo })
}
