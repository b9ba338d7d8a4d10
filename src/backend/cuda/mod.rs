//! The CUDA backend: every op of `Backend` as a launch of a hand-written kernel from kernels/*.cu.
//! Generic over `Device`, so the same code drives a real GPU (`gpu`, through cudarc) and the CPU
//! emulator of CUDA (`emu`) that runs the kernels in the test suite.

pub mod args;
pub mod device;
pub mod emu;
pub mod gpu;
pub mod kernels;

use self::args::{Bcast4, ConvArgs, GnArgs, PoolArgs, StepArgs};
use self::device::{Arg, Device, LaunchCfg};
use super::params::{
    at_least_2d, attention_dims, broadcastable, channel_vector, check_channel_ids, check_embedding_ids, check_scale_shift, concat_dims, dims4, group_norm_dims,
    linear_dims, mahalanobis_dims, same_shape, slice_dims,
};
use super::{check_model_out, Activation, Backend, Conv2dParams, DdimCoefs, GroupNormParams, Pool2dParams, ScaleShift, StepCoefs};
use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};
use std::sync::Arc;

/// Matches IGEMM_SMEM_BYTES in kernels/igemm.cuh (two 16×64 f32 tiles).
const IGEMM_SMEM_BYTES: u32 = 2 * 16 * 64 * 4;
const IGEMM_TILE: usize = 64;
/// Threads per block of the 1-D elementwise kernels, and the cap on their grid (they stride).
const EW_BLOCK: u32 = 256;
const EW_MAX_BLOCKS: usize = 4096;
/// Threads per block of the per-(n, group) / per-plane reduction kernels.
const REDUCE_BLOCK: u32 = 256;
const ATTN_BLOCK: u32 = 128;

pub struct CudaBackend<D: Device> {
    dev: D,
}

pub type EmulatedCuda = CudaBackend<emu::EmuDevice>;
pub type Gpu = CudaBackend<gpu::GpuDevice>;

impl EmulatedCuda {
    pub fn emulated() -> Self {
        CudaBackend { dev: emu::EmuDevice }
    }
}

type T<D> = Tensor<CudaBackend<D>>;

/// Threads per (position, image) block of the Mahalanobis kernels: 8 warps share the rows.
const MAHA_BLOCK: u32 = 256;

/// The Mahalanobis kernels keep 3 vectors of D floats in shared memory (48 KiB without opt-in).
fn maha_fits_smem(op: &'static str, d: usize) -> Result<()> {
    if (3 * d + 32) * 4 > 48 * 1024 {
        return Err(Error::shape(op, format!("{d} dims exceed the kernel's shared memory (at most 4085 on CUDA; PaDiM uses 100–550)")));
    }
    Ok(())
}

fn ew(n: usize) -> LaunchCfg {
    let blocks = n.div_ceil(EW_BLOCK as usize).clamp(1, EW_MAX_BLOCKS) as u32;
    LaunchCfg { grid: (blocks, 1, 1), block: (EW_BLOCK, 1, 1), smem_bytes: 0 }
}

fn igemm_cfg(m: usize, n: usize, z: usize) -> LaunchCfg {
    LaunchCfg { grid: (n.div_ceil(IGEMM_TILE) as u32, m.div_ceil(IGEMM_TILE) as u32, z as u32), block: (16, 16, 1), smem_bytes: IGEMM_SMEM_BYTES }
}

fn i32_of(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::shape(op, format!("size {v} exceeds the kernels' 32-bit indexing")))
}

impl<D: Device> CudaBackend<D> {
    pub fn new(dev: D) -> Self {
        CudaBackend { dev }
    }
    pub fn device(&self) -> &D {
        &self.dev
    }

    fn buf(t: &T<D>) -> Arg<'_, D::Buf> {
        Arg::Buf(t.storage().as_ref())
    }

    fn alloc(&self, dims: &[usize]) -> Result<T<D>> {
        let n: usize = dims.iter().product();
        let b = self.dev.alloc_zeros(n * 4)?;
        Ok(Tensor::from_parts(Shape::new(dims), Arc::new(b)))
    }

    fn launch(&self, k: &'static str, cfg: LaunchCfg, args: &[Arg<'_, D::Buf>]) -> Result<()> {
        self.dev.launch(k, &cfg, args)
    }

    /// A 1-D grid-stride launch over `n` elements (nothing to do when n = 0).
    fn ew_launch(&self, k: &'static str, n: usize, args: &[Arg<'_, D::Buf>]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.launch(k, ew(n), args)
    }

    fn bcast(op: &'static str, a: &Shape, b: &Shape) -> Result<Bcast4> {
        broadcastable(op, a, b)?;
        if a.rank() > 4 {
            return Err(Error::shape(op, format!("broadcast supports rank ≤ 4, got {a}")));
        }
        let pad = 4 - a.rank();
        let mut s = Bcast4 { dims: [1; 4], bstride: [0; 4], bdims: [1; 4] };
        for d in 0..a.rank() {
            s.dims[pad + d] = i32_of(op, a.dims()[d])?;
            s.bdims[pad + d] = i32_of(op, b.dims()[d])?;
        }
        let mut stride = 1;
        for d in (0..4).rev() {
            s.bstride[d] = if s.bdims[d] == 1 { 0 } else { stride };
            stride *= s.bdims[d];
        }
        Ok(s)
    }

    /// Sum of `src` (shaped like a) down to b's shape.
    fn reduce_to(&self, src: &T<D>, b_shape: &Shape) -> Result<T<D>> {
        if b_shape.numel() == src.numel() {
            return self.reshape(src, b_shape.dims());
        }
        let s = Self::bcast("reduce_to_broadcast", src.shape(), b_shape)?;
        let nb = b_shape.numel();
        {
            let y = self.alloc(b_shape.dims())?;
            self.ew_launch("reduce_to_broadcast_f32", y.numel(), &[Self::buf(src), Self::buf(&y), Arg::I32(nb as i32), Arg::Pod(bytemuck::bytes_of(&s))])?;
            Ok(y)
        }
    }

    fn conv_args(x: &Shape, w: &Shape, y: &Shape, p: &Conv2dParams, has_bias: bool) -> Result<ConvArgs> {
        let [n, c, h, wd] = dims4("conv2d", x)?;
        let [o, _, kh, kw] = dims4("conv2d", w)?;
        let [_, _, ho, wo] = dims4("conv2d", y)?;
        let v = |u: usize| i32_of("conv2d", u);
        i32_of("conv2d", n * c.max(o) * h.max(ho) * wd.max(wo))?;
        Ok(ConvArgs {
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
            groups: v(p.groups)?,
            has_bias: has_bias as i32,
        })
    }

    fn gn_args(&self, op: &'static str, x: &T<D>, gamma: &T<D>, beta: &T<D>, p: &GroupNormParams, ss: &ScaleShift<'_, Self>) -> Result<(GnArgs, usize)> {
        let (n, c, s) = group_norm_dims(op, x.shape(), gamma.shape(), beta.shape(), p)?;
        if let Some((a, b)) = ss {
            check_scale_shift(op, a.shape(), b.shape(), n, c)?;
        }
        i32_of(op, x.numel())?;
        let a = GnArgs { c: c as i32, s: s as i32, groups: p.groups as i32, eps: p.eps, silu: p.silu as i32, has_ss: ss.is_some() as i32 };
        Ok((a, n * p.groups))
    }

    fn pool_args(op: &'static str, x: &Shape, y: &Shape, p: &Pool2dParams) -> Result<PoolArgs> {
        let [n, c, h, w] = dims4(op, x)?;
        let v = |u: usize| i32_of(op, u);
        Ok(PoolArgs { planes: v(n * c)?, h: v(h)?, w: v(w)?, ho: v(y.dim(2))?, wo: v(y.dim(3))?, k: v(p.kernel)?, s: v(p.stride)?, p: v(p.padding)? })
    }

    fn copy_channels(&self, src: &T<D>, src_off: usize, dst: &T<D>, dst_off: usize, c: usize) -> Result<()> {
        let (n, src_c, s) = src.shape().ncs();
        let dst_c = dst.shape().dim(1);
        let total = n * c * s;
        if total == 0 {
            return Ok(());
        }
        let a = |v: usize| Arg::I32(v as i32);
        self.launch("copy_channels_f32", ew(total), &[Self::buf(src), a(src_c), a(src_off), Self::buf(dst), a(dst_c), a(dst_off), a(n), a(c), a(s)])
    }
}

fn act_code(a: Activation) -> i32 {
    match a {
        Activation::Silu => 0,
        Activation::Relu => 1,
        Activation::Sigmoid => 2,
        Activation::Relu6 => 3,
    }
}

impl<D: Device> Backend for CudaBackend<D> {
    type Storage = Arc<D::Buf>;

    fn name(&self) -> String {
        format!("{}: {}", self.dev.kind(), self.dev.describe())
    }

    fn from_host(&self, dims: &[usize], v: &[f32]) -> Result<T<D>> {
        let n: usize = dims.iter().product();
        if n != v.len() {
            return Err(Error::shape("from_host", format!("shape {dims:?} needs {n} values, got {}", v.len())));
        }
        let b = self.dev.upload(bytemuck::cast_slice(v))?;
        Ok(Tensor::from_parts(Shape::new(dims), Arc::new(b)))
    }

    fn to_host(&self, x: &T<D>) -> Result<Vec<f32>> {
        let mut v = vec![0.0f32; x.numel()];
        self.dev.download(x.storage(), bytemuck::cast_slice_mut(&mut v))?;
        Ok(v)
    }

    fn reshape(&self, x: &T<D>, dims: &[usize]) -> Result<T<D>> {
        let s = Shape::new(dims);
        if s.numel() != x.numel() {
            return Err(Error::shape("reshape", format!("cannot view {} as {s}", x.shape())));
        }
        Ok(Tensor::from_parts(s, x.storage().clone()))
    }

    fn conv2d(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, p: &Conv2dParams) -> Result<T<D>> {
        let ys = p.out_shape(x.shape(), w.shape())?;
        if let Some(b) = bias {
            channel_vector("conv2d", "bias", b.shape(), w.dims()[0])?;
        }
        let a = Self::conv_args(x.shape(), w.shape(), &ys, p, bias.is_some())?;
        let y = self.alloc(ys.dims())?;
        let b = bias.unwrap_or(w); // unread when has_bias = 0
        let args = [Self::buf(x), Self::buf(w), Self::buf(b), Self::buf(&y), Arg::Pod(bytemuck::bytes_of(&a))];
        let cg = a.c / a.groups;
        let pointwise = a.kh == 1 && a.kw == 1 && a.sh == 1 && a.sw == 1 && a.pt == 0 && a.pl == 0 && a.ho == a.h && a.wo == a.w;
        if cg == 1 && !pointwise {
            self.launch("depthwise_conv2d_f32", ew(ys.numel()), &args)?;
        } else {
            let cfg = igemm_cfg((a.o / a.groups) as usize, ys.numel() / a.o as usize, a.groups as usize);
            self.launch("conv2d_f32", cfg, &args)?;
        }
        Ok(y)
    }

    fn conv2d_x_backward(&self, gy: &T<D>, w: &T<D>, x_shape: &Shape, p: &Conv2dParams) -> Result<T<D>> {
        let ys = p.out_shape(x_shape, w.shape())?;
        same_shape("conv2d_x_backward", &ys, gy.shape())?;
        let a = Self::conv_args(x_shape, w.shape(), &ys, p, false)?;
        let gx = self.alloc(x_shape.dims())?;
        let args = [Self::buf(gy), Self::buf(w), Self::buf(&gx), Arg::Pod(bytemuck::bytes_of(&a))];
        let cg = a.c / a.groups;
        let pointwise = a.kh == 1 && a.kw == 1 && a.sh == 1 && a.sw == 1 && a.pt == 0 && a.pl == 0 && a.ho == a.h && a.wo == a.w;
        if cg == 1 && !pointwise {
            self.launch("depthwise_conv2d_x_backward_f32", ew(x_shape.numel()), &args)?;
        } else {
            let cfg = igemm_cfg(cg as usize, x_shape.numel() / a.c as usize, a.groups as usize);
            self.launch("conv2d_x_backward_f32", cfg, &args)?;
        }
        Ok(gx)
    }

    fn linear(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>) -> Result<T<D>> {
        let (rows, fin, fout) = linear_dims("linear", x.shape(), w.shape())?;
        if let Some(b) = bias {
            channel_vector("linear", "bias", b.shape(), fout)?;
        }
        let y = self.alloc(&[rows, fout])?;
        let b = bias.unwrap_or(w);
        let i = |v: usize| Arg::I32(v as i32);
        let args = [Self::buf(x), Self::buf(w), Self::buf(b), Self::buf(&y), i(rows), i(fin), i(fout), i(bias.is_some() as usize)];
        self.launch("linear_f32", igemm_cfg(fout, rows, 1), &args)?;
        Ok(y)
    }

    fn linear_x_backward(&self, gy: &T<D>, w: &T<D>) -> Result<T<D>> {
        if gy.shape().rank() != 2 || w.shape().rank() != 2 || gy.dims()[1] != w.dims()[0] {
            return Err(Error::shape("linear_x_backward", format!("gy {} does not match w {}", gy.shape(), w.shape())));
        }
        let (rows, fout, fin) = (gy.dims()[0], w.dims()[0], w.dims()[1]);
        let gx = self.alloc(&[rows, fin])?;
        let i = |v: usize| Arg::I32(v as i32);
        self.launch("linear_x_backward_f32", igemm_cfg(fin, rows, 1), &[Self::buf(gy), Self::buf(w), Self::buf(&gx), i(rows), i(fin), i(fout)])?;
        Ok(gx)
    }

    fn group_norm(&self, x: &T<D>, gamma: &T<D>, beta: &T<D>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<T<D>> {
        let (a, blocks) = self.gn_args("group_norm", x, gamma, beta, p, &ss)?;
        let y = self.alloc(x.dims())?;
        let (sc, sh) = ss.unwrap_or((gamma, beta)); // unread when has_ss = 0
        let args = [Self::buf(x), Self::buf(gamma), Self::buf(beta), Self::buf(sc), Self::buf(sh), Self::buf(&y), Arg::Pod(bytemuck::bytes_of(&a))];
        if blocks > 0 {
            self.launch("group_norm_f32", LaunchCfg { grid: (blocks as u32, 1, 1), block: (REDUCE_BLOCK, 1, 1), smem_bytes: 0 }, &args)?;
        }
        Ok(y)
    }

    fn group_norm_x_backward(&self, gy: &T<D>, x: &T<D>, gamma: &T<D>, beta: &T<D>, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<T<D>> {
        same_shape("group_norm_x_backward", x.shape(), gy.shape())?;
        let (a, blocks) = self.gn_args("group_norm_x_backward", x, gamma, beta, p, &ss)?;
        let gx = self.alloc(x.dims())?;
        let (sc, sh) = ss.unwrap_or((gamma, beta));
        let args = [Self::buf(gy), Self::buf(x), Self::buf(gamma), Self::buf(beta), Self::buf(sc), Self::buf(sh), Self::buf(&gx), Arg::Pod(bytemuck::bytes_of(&a))];
        if blocks > 0 {
            self.launch("group_norm_x_backward_f32", LaunchCfg { grid: (blocks as u32, 1, 1), block: (REDUCE_BLOCK, 1, 1), smem_bytes: 0 }, &args)?;
        }
        Ok(gx)
    }

    fn channel_affine(&self, x: &T<D>, scale: &T<D>, shift: &T<D>) -> Result<T<D>> {
        at_least_2d("channel_affine", x.shape())?;
        let (_, c, s) = x.shape().ncs();
        channel_vector("channel_affine", "scale", scale.shape(), c)?;
        channel_vector("channel_affine", "shift", shift.shape(), c)?;
        let n = i32_of("channel_affine", x.numel())?;
        {
            let y = self.alloc(x.dims())?;
            self.ew_launch("channel_affine_f32", y.numel(), &[Self::buf(x), Self::buf(scale), Self::buf(shift), Self::buf(&y), Arg::I32(n), Arg::I32(c as i32), Arg::I32(s as i32)])?;
            Ok(y)
        }
    }

    fn channel_affine_x_backward(&self, gy: &T<D>, scale: &T<D>) -> Result<T<D>> {
        at_least_2d("channel_affine_x_backward", gy.shape())?;
        let (_, c, s) = gy.shape().ncs();
        channel_vector("channel_affine_x_backward", "scale", scale.shape(), c)?;
        let n = i32_of("channel_affine_x_backward", gy.numel())?;
        {
            let g = self.alloc(gy.dims())?;
            self.ew_launch("channel_affine_x_backward_f32", g.numel(), &[Self::buf(gy), Self::buf(scale), Self::buf(&g), Arg::I32(n), Arg::I32(c as i32), Arg::I32(s as i32)])?;
            Ok(g)
        }
    }

    fn activation(&self, x: &T<D>, act: Activation) -> Result<T<D>> {
        let n = i32_of("activation", x.numel())?;
        {
            let y = self.alloc(x.dims())?;
            self.ew_launch("activation_f32", y.numel(), &[Self::buf(x), Self::buf(&y), Arg::I32(n), Arg::I32(act_code(act))])?;
            Ok(y)
        }
    }

    fn activation_x_backward(&self, gy: &T<D>, x: &T<D>, act: Activation) -> Result<T<D>> {
        same_shape("activation_x_backward", x.shape(), gy.shape())?;
        let n = i32_of("activation_x_backward", x.numel())?;
        {
            let g = self.alloc(x.dims())?;
            self.ew_launch("activation_x_backward_f32", g.numel(), &[Self::buf(gy), Self::buf(x), Self::buf(&g), Arg::I32(n), Arg::I32(act_code(act))])?;
            Ok(g)
        }
    }

    fn add(&self, a: &T<D>, b: &T<D>) -> Result<T<D>> {
        let s = Self::bcast("add", a.shape(), b.shape())?;
        let n = i32_of("add", a.numel())?;
        {
            let y = self.alloc(a.dims())?;
            self.ew_launch("add_f32", y.numel(), &[Self::buf(a), Self::buf(b), Self::buf(&y), Arg::I32(n), Arg::Pod(bytemuck::bytes_of(&s))])?;
            Ok(y)
        }
    }

    fn mul(&self, a: &T<D>, b: &T<D>) -> Result<T<D>> {
        let s = Self::bcast("mul", a.shape(), b.shape())?;
        let n = i32_of("mul", a.numel())?;
        {
            let y = self.alloc(a.dims())?;
            self.ew_launch("mul_f32", y.numel(), &[Self::buf(a), Self::buf(b), Self::buf(&y), Arg::I32(n), Arg::Pod(bytemuck::bytes_of(&s))])?;
            Ok(y)
        }
    }

    fn add_x_backward(&self, gy: &T<D>, b_shape: &Shape) -> Result<(T<D>, T<D>)> {
        broadcastable("add_x_backward", gy.shape(), b_shape)?;
        let ga = self.scale_add_scalar(gy, 1.0, 0.0)?;
        let gb = self.reduce_to(gy, b_shape)?;
        Ok((ga, gb))
    }

    fn mul_x_backward(&self, gy: &T<D>, a: &T<D>, b: &T<D>) -> Result<(T<D>, T<D>)> {
        same_shape("mul_x_backward", a.shape(), gy.shape())?;
        let ga = self.mul(gy, b)?;
        let gya = self.mul(gy, a)?;
        let gb = self.reduce_to(&gya, b.shape())?;
        Ok((ga, gb))
    }

    fn scale_add_scalar(&self, x: &T<D>, alpha: f32, beta: f32) -> Result<T<D>> {
        let n = i32_of("scale_add_scalar", x.numel())?;
        {
            let y = self.alloc(x.dims())?;
            self.ew_launch("scale_add_scalar_f32", y.numel(), &[Self::buf(x), Self::buf(&y), Arg::I32(n), Arg::F32(alpha), Arg::F32(beta)])?;
            Ok(y)
        }
    }

    fn avg_pool2d(&self, x: &T<D>, p: &Pool2dParams) -> Result<T<D>> {
        let ys = p.out_shape("avg_pool2d", x.shape())?;
        let a = Self::pool_args("avg_pool2d", x.shape(), &ys, p)?;
        {
            let y = self.alloc(ys.dims())?;
            self.ew_launch("avg_pool2d_f32", y.numel(), &[Self::buf(x), Self::buf(&y), Arg::Pod(bytemuck::bytes_of(&a))])?;
            Ok(y)
        }
    }

    fn avg_pool2d_x_backward(&self, gy: &T<D>, x_shape: &Shape, p: &Pool2dParams) -> Result<T<D>> {
        let ys = p.out_shape("avg_pool2d_x_backward", x_shape)?;
        same_shape("avg_pool2d_x_backward", &ys, gy.shape())?;
        let a = Self::pool_args("avg_pool2d_x_backward", x_shape, &ys, p)?;
        {
            let g = self.alloc(x_shape.dims())?;
            self.ew_launch("avg_pool2d_x_backward_f32", g.numel(), &[Self::buf(gy), Self::buf(&g), Arg::Pod(bytemuck::bytes_of(&a))])?;
            Ok(g)
        }
    }

    fn max_pool2d(&self, x: &T<D>, p: &Pool2dParams) -> Result<T<D>> {
        let ys = p.out_shape("max_pool2d", x.shape())?;
        let a = Self::pool_args("max_pool2d", x.shape(), &ys, p)?;
        {
            let y = self.alloc(ys.dims())?;
            self.ew_launch("max_pool2d_f32", y.numel(), &[Self::buf(x), Self::buf(&y), Arg::Pod(bytemuck::bytes_of(&a))])?;
            Ok(y)
        }
    }

    fn max_pool2d_x_backward(&self, gy: &T<D>, x: &T<D>, p: &Pool2dParams) -> Result<T<D>> {
        let ys = p.out_shape("max_pool2d_x_backward", x.shape())?;
        same_shape("max_pool2d_x_backward", &ys, gy.shape())?;
        let a = Self::pool_args("max_pool2d_x_backward", x.shape(), &ys, p)?;
        {
            let g = self.alloc(x.dims())?;
            self.ew_launch("max_pool2d_x_backward_f32", g.numel(), &[Self::buf(gy), Self::buf(x), Self::buf(&g), Arg::Pod(bytemuck::bytes_of(&a))])?;
            Ok(g)
        }
    }

    fn global_avg_pool(&self, x: &T<D>) -> Result<T<D>> {
        let [n, c, h, w] = dims4("global_avg_pool", x.shape())?;
        if h * w == 0 {
            return Err(Error::shape("global_avg_pool", "empty spatial size"));
        }
        let y = self.alloc(&[n, c, 1, 1])?;
        if n * c > 0 {
            let cfg = LaunchCfg { grid: (i32_of("global_avg_pool", n * c)? as u32, 1, 1), block: (REDUCE_BLOCK, 1, 1), smem_bytes: 0 };
            self.launch("global_avg_pool_f32", cfg, &[Self::buf(x), Self::buf(&y), Arg::I32(i32_of("global_avg_pool", h * w)?)])?;
        }
        Ok(y)
    }

    fn upsample_nearest2x(&self, x: &T<D>) -> Result<T<D>> {
        let [n, c, h, w] = dims4("upsample_nearest2x", x.shape())?;
        i32_of("upsample_nearest2x", 4 * x.numel())?;
        let i = |v: usize| Arg::I32(v as i32);
        {
            let y = self.alloc(&[n, c, 2 * h, 2 * w])?;
            self.ew_launch("upsample_nearest2x_f32", y.numel(), &[Self::buf(x), Self::buf(&y), i(n * c), i(h), i(w)])?;
            Ok(y)
        }
    }

    fn upsample_nearest2x_x_backward(&self, gy: &T<D>) -> Result<T<D>> {
        let [n, c, h2, w2] = dims4("upsample_nearest2x_x_backward", gy.shape())?;
        if h2 % 2 != 0 || w2 % 2 != 0 {
            return Err(Error::shape("upsample_nearest2x_x_backward", format!("gradient {} has odd size", gy.shape())));
        }
        i32_of("upsample_nearest2x_x_backward", gy.numel())?;
        let i = |v: usize| Arg::I32(v as i32);
        {
            let g = self.alloc(&[n, c, h2 / 2, w2 / 2])?;
            self.ew_launch("upsample_nearest2x_x_backward_f32", g.numel(), &[Self::buf(gy), Self::buf(&g), i(n * c), i(h2 / 2), i(w2 / 2)])?;
            Ok(g)
        }
    }

    fn resize_bilinear(&self, x: &T<D>, out_h: usize, out_w: usize) -> Result<T<D>> {
        let [n, c, h, w] = dims4("resize_bilinear", x.shape())?;
        if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
            return Err(Error::shape("resize_bilinear", format!("cannot resize {} to {out_h}x{out_w}", x.shape())));
        }
        i32_of("resize_bilinear", n * c * out_h * out_w)?;
        let i = |v: usize| Arg::I32(v as i32);
        {
            let y = self.alloc(&[n, c, out_h, out_w])?;
            self.ew_launch("resize_bilinear_f32", y.numel(), &[Self::buf(x), Self::buf(&y), i(n * c), i(h), i(w), i(out_h), i(out_w)])?;
            Ok(y)
        }
    }

    fn resize_bilinear_x_backward(&self, gy: &T<D>, in_h: usize, in_w: usize) -> Result<T<D>> {
        let [n, c, ho, wo] = dims4("resize_bilinear_x_backward", gy.shape())?;
        if in_h == 0 || in_w == 0 || ho == 0 || wo == 0 {
            return Err(Error::shape("resize_bilinear_x_backward", "empty size"));
        }
        i32_of("resize_bilinear_x_backward", n * c * in_h.max(ho) * in_w.max(wo))?;
        // the kernel scatters with atomics into the zeroed output, one thread per output pixel
        let gx = self.alloc(&[n, c, in_h, in_w])?;
        let i = |v: usize| Arg::I32(v as i32);
        if gy.numel() > 0 {
            self.launch("resize_bilinear_x_backward_f32", ew(gy.numel()), &[Self::buf(gy), Self::buf(&gx), i(n * c), i(in_h), i(in_w), i(ho), i(wo)])?;
        }
        Ok(gx)
    }

    fn concat_channels(&self, xs: &[&T<D>]) -> Result<T<D>> {
        let shapes: Vec<&Shape> = xs.iter().map(|x| x.shape()).collect();
        let dims = concat_dims("concat_channels", &shapes)?;
        i32_of("concat_channels", dims.iter().product())?;
        let y = self.alloc(&dims)?;
        let mut off = 0;
        for x in xs {
            let c = x.dims()[1];
            self.copy_channels(x, 0, &y, off, c)?;
            off += c;
        }
        Ok(y)
    }

    fn slice_channels(&self, x: &T<D>, start: usize, end: usize) -> Result<T<D>> {
        let dims = slice_dims("slice_channels", x.shape(), start, end)?;
        i32_of("slice_channels", x.numel())?;
        let y = self.alloc(&dims)?;
        self.copy_channels(x, start, &y, 0, end - start)?;
        Ok(y)
    }

    fn attention_legacy(&self, qkv: &T<D>, heads: usize) -> Result<T<D>> {
        let (n, d, t) = attention_dims("attention_legacy", qkv.shape(), heads)?;
        i32_of("attention_legacy", qkv.numel())?;
        let mut dims = qkv.dims().to_vec();
        dims[1] = heads * d;
        let y = self.alloc(&dims)?;
        if n * heads * t > 0 {
            let cfg = LaunchCfg { grid: (t as u32, (n * heads) as u32, 1), block: (ATTN_BLOCK, 1, 1), smem_bytes: ((t + 32) * 4) as u32 };
            self.launch("attention_legacy_f32", cfg, &[Self::buf(qkv), Self::buf(&y), Arg::I32(d as i32), Arg::I32(t as i32)])?;
        }
        Ok(y)
    }

    fn attention_legacy_x_backward(&self, gy: &T<D>, qkv: &T<D>, heads: usize) -> Result<T<D>> {
        let (n, d, t) = attention_dims("attention_legacy_x_backward", qkv.shape(), heads)?;
        if gy.shape().ncs() != (n, heads * d, t) {
            return Err(Error::shape("attention_legacy_x_backward", format!("gradient {} does not match qkv {}", gy.shape(), qkv.shape())));
        }
        i32_of("attention_legacy_x_backward", qkv.numel())?;
        let g = self.alloc(qkv.dims())?; // zero: gK and gV accumulate atomically
        if n * heads * t > 0 {
            let cfg = LaunchCfg { grid: (t as u32, (n * heads) as u32, 1), block: (ATTN_BLOCK, 1, 1), smem_bytes: ((2 * t + 32) * 4) as u32 };
            self.launch("attention_legacy_x_backward_f32", cfg, &[Self::buf(qkv), Self::buf(gy), Self::buf(&g), Arg::I32(d as i32), Arg::I32(t as i32)])?;
        }
        Ok(g)
    }

    fn timestep_embedding(&self, t: &T<D>, dim: usize, max_period: f32) -> Result<T<D>> {
        if t.shape().rank() != 1 || dim == 0 {
            return Err(Error::shape("timestep_embedding", format!("want t [N] and dim > 0, got {} and {dim}", t.shape())));
        }
        let n = t.numel();
        i32_of("timestep_embedding", n * dim)?;
        let neg_log = -(max_period as f64).ln() as f32;
        {
            let y = self.alloc(&[n, dim])?;
            self.ew_launch("timestep_embedding_f32", y.numel(), &[Self::buf(t), Self::buf(&y), Arg::I32(n as i32), Arg::I32(dim as i32), Arg::F32(neg_log)])?;
            Ok(y)
        }
    }

    fn gather_channels(&self, x: &T<D>, ids: &[usize]) -> Result<T<D>> {
        at_least_2d("gather_channels", x.shape())?;
        let (n, c, s) = x.shape().ncs();
        check_channel_ids("gather_channels", c, ids)?;
        i32_of("gather_channels", x.numel().max(n * ids.len() * s))?;
        let mut dims = x.dims().to_vec();
        dims[1] = ids.len();
        let y = self.alloc(&dims)?;
        if y.numel() > 0 {
            let ids32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
            let idb = self.dev.upload(bytemuck::cast_slice(&ids32))?;
            let a = |v: usize| Arg::I32(v as i32);
            self.ew_launch("gather_channels_f32", y.numel(), &[Self::buf(x), Arg::Buf(&idb), Self::buf(&y), a(n), a(c), a(ids.len()), a(s)])?;
        }
        Ok(y)
    }

    fn gather_channels_x_backward(&self, gy: &T<D>, ids: &[usize], c: usize) -> Result<T<D>> {
        at_least_2d("gather_channels_x_backward", gy.shape())?;
        let (n, k, s) = gy.shape().ncs();
        if k != ids.len() {
            return Err(Error::shape("gather_channels_x_backward", format!("gradient {} for {} ids", gy.shape(), ids.len())));
        }
        check_channel_ids("gather_channels_x_backward", c, ids)?;
        i32_of("gather_channels_x_backward", n * c.max(k) * s)?;
        let mut dims = gy.dims().to_vec();
        dims[1] = c;
        let gx = self.alloc(&dims)?;
        if gy.numel() > 0 {
            let ids32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
            let idb = self.dev.upload(bytemuck::cast_slice(&ids32))?;
            let a = |v: usize| Arg::I32(v as i32);
            self.ew_launch("gather_channels_x_backward_f32", gy.numel(), &[Self::buf(gy), Arg::Buf(&idb), Self::buf(&gx), a(n), a(c), a(k), a(s)])?;
        }
        Ok(gx)
    }

    fn mahalanobis(&self, f: &T<D>, mean: &T<D>, linv: &T<D>) -> Result<T<D>> {
        let (n, d, p) = mahalanobis_dims("mahalanobis", f.shape(), mean.shape(), linv.shape())?;
        maha_fits_smem("mahalanobis", d)?;
        i32_of("mahalanobis", f.numel())?;
        let y = self.alloc(&[n, 1, f.dims()[2], f.dims()[3]])?;
        if y.numel() > 0 && d > 0 {
            let cfg = LaunchCfg { grid: (p as u32, n as u32, 1), block: (MAHA_BLOCK, 1, 1), smem_bytes: ((2 * d + 32) * 4) as u32 };
            self.launch("mahalanobis_f32", cfg, &[Self::buf(f), Self::buf(mean), Self::buf(linv), Self::buf(&y), Arg::I32(d as i32), Arg::I32(p as i32)])?;
        }
        Ok(y)
    }

    fn mahalanobis_x_backward(&self, gd: &T<D>, f: &T<D>, mean: &T<D>, linv: &T<D>) -> Result<T<D>> {
        let (n, d, p) = mahalanobis_dims("mahalanobis_x_backward", f.shape(), mean.shape(), linv.shape())?;
        maha_fits_smem("mahalanobis_x_backward", d)?;
        if gd.dims() != [n, 1, f.dims()[2], f.dims()[3]] {
            return Err(Error::shape("mahalanobis_x_backward", format!("gradient {} does not fit features {}", gd.shape(), f.shape())));
        }
        i32_of("mahalanobis_x_backward", f.numel())?;
        let gf = self.alloc(f.dims())?;
        if gf.numel() > 0 {
            let cfg = LaunchCfg { grid: (p as u32, n as u32, 1), block: (MAHA_BLOCK, 1, 1), smem_bytes: ((3 * d + 32) * 4) as u32 };
            self.launch(
                "mahalanobis_x_backward_f32",
                cfg,
                &[Self::buf(gd), Self::buf(f), Self::buf(mean), Self::buf(linv), Self::buf(&gf), Arg::I32(d as i32), Arg::I32(p as i32)],
            )?;
        }
        Ok(gf)
    }

    fn embedding(&self, table: &T<D>, ids: &[usize]) -> Result<T<D>> {
        if table.shape().rank() != 2 {
            return Err(Error::shape("embedding", format!("table must be [rows, dim], got {}", table.shape())));
        }
        let (rows, dim) = (table.dims()[0], table.dims()[1]);
        check_embedding_ids(rows, ids)?;
        i32_of("embedding", rows.max(ids.len()) * dim)?;
        let ids32: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let idb = self.dev.upload(bytemuck::cast_slice(&ids32))?;
        {
            let y = self.alloc(&[ids.len(), dim])?;
            self.ew_launch("embedding_f32", y.numel(), &[Self::buf(table), Arg::Buf(&idb), Self::buf(&y), Arg::I32(ids.len() as i32), Arg::I32(dim as i32)])?;
            Ok(y)
        }
    }

    fn mean_std(&self, x: &T<D>) -> Result<(f64, f64)> {
        if x.numel() < 2 {
            return Err(Error::shape("mean_std", format!("std needs at least 2 values, tensor {} has {}", x.shape(), x.numel())));
        }
        let out = self.alloc(&[2])?;
        let cfg = LaunchCfg { grid: (1, 1, 1), block: (1024, 1, 1), smem_bytes: 0 };
        self.launch("mean_std_f32", cfg, &[Self::buf(x), Arg::I64(x.numel() as i64), Self::buf(&out)])?;
        let v = self.to_host(&out)?;
        Ok((v[0] as f64, v[1] as f64))
    }

    fn q_sample(&self, x0: &T<D>, noise: &T<D>, sqrt_ab: f32, sqrt_1m_ab: f32) -> Result<T<D>> {
        same_shape("q_sample", x0.shape(), noise.shape())?;
        let n = i32_of("q_sample", x0.numel())?;
        let y = self.alloc(x0.dims())?;
        self.ew_launch("q_sample_f32", y.numel(), &[Self::buf(x0), Self::buf(noise), Self::buf(&y), Arg::I32(n), Arg::F32(sqrt_ab), Arg::F32(sqrt_1m_ab)])?;
        Ok(y)
    }

    fn p_mean_variance(&self, xt: &T<D>, model_out: &T<D>, c: &StepCoefs) -> Result<(T<D>, T<D>, T<D>)> {
        let (ch, s) = check_model_out("p_mean_variance", xt.shape(), model_out.shape(), c)?;
        i32_of("p_mean_variance", model_out.numel())?;
        let a = step_args(c, ch, s);
        let (m, lv, x0) = (self.alloc(xt.dims())?, self.alloc(xt.dims())?, self.alloc(xt.dims())?);
        let args = [Self::buf(xt), Self::buf(model_out), Self::buf(&m), Self::buf(&lv), Self::buf(&x0), Arg::I32(xt.numel() as i32), Arg::Pod(bytemuck::bytes_of(&a))];
        self.ew_launch("p_mean_variance_f32", xt.numel(), &args)?;
        Ok((m, lv, x0))
    }

    fn kl_bits(&self, x0: &T<D>, xt: &T<D>, p_mean: &T<D>, p_logvar: &T<D>, c: &StepCoefs) -> Result<T<D>> {
        for t in [xt, p_mean, p_logvar] {
            same_shape("kl_bits", x0.shape(), t.shape())?;
        }
        let n = i32_of("kl_bits", x0.numel())?;
        let (_, ch, s) = x0.shape().ncs();
        let a = step_args(c, ch, s);
        let y = self.alloc(x0.dims())?;
        let args = [Self::buf(x0), Self::buf(xt), Self::buf(p_mean), Self::buf(p_logvar), Self::buf(&y), Arg::I32(n), Arg::Pod(bytemuck::bytes_of(&a))];
        self.ew_launch("kl_bits_f32", y.numel(), &args)?;
        Ok(y)
    }

    fn p_sample(&self, mean: &T<D>, logvar: &T<D>, z: &T<D>, nonzero: bool) -> Result<T<D>> {
        same_shape("p_sample", mean.shape(), logvar.shape())?;
        same_shape("p_sample", mean.shape(), z.shape())?;
        let n = i32_of("p_sample", mean.numel())?;
        let y = self.alloc(mean.dims())?;
        let nz = if nonzero { 1.0 } else { 0.0 };
        self.ew_launch("p_sample_f32", y.numel(), &[Self::buf(mean), Self::buf(logvar), Self::buf(z), Self::buf(&y), Arg::I32(n), Arg::F32(nz)])?;
        Ok(y)
    }

    fn ddim_step(&self, xt: &T<D>, pred_x0: &T<D>, z: &T<D>, c: &DdimCoefs) -> Result<T<D>> {
        same_shape("ddim_step", xt.shape(), pred_x0.shape())?;
        same_shape("ddim_step", xt.shape(), z.shape())?;
        let n = i32_of("ddim_step", xt.numel())?;
        let y = self.alloc(xt.dims())?;
        let f = Arg::F32;
        let nz = if c.nonzero { 1.0 } else { 0.0 };
        let args = [Self::buf(xt), Self::buf(pred_x0), Self::buf(z), Self::buf(&y), Arg::I32(n), f(c.sqrt_recip_ab), f(c.sqrt_recipm1_ab), f(c.ab), f(c.ab_prev), f(c.eta), f(nz)];
        self.ew_launch("ddim_step_f32", y.numel(), &args)?;
        Ok(y)
    }
}

fn step_args(c: &StepCoefs, ch: usize, s: usize) -> StepArgs {
    StepArgs {
        sqrt_recip_ab: c.sqrt_recip_ab,
        sqrt_recipm1_ab: c.sqrt_recipm1_ab,
        c1: c.c1,
        c2: c.c2,
        post_logvar_clipped: c.post_logvar_clipped,
        log_beta: c.log_beta,
        fixed_logvar: c.fixed_logvar,
        var_type: c.var_type.code(),
        clip: c.clip as i32,
        c: ch as i32,
        s: s as i32,
    }
}
