//! The CPU backend: the reference every other backend is checked against, and the fallback when
//! no GPU is there. Storage is a shared row-major f32 buffer; the op bodies live in one file per
//! op family, generic over f32/f64 (the f64 instances serve the finite-difference checks).

pub mod activation;
pub mod attention;
pub mod broadcast;
pub mod conv2d;
pub mod diffusion_step;
pub mod embedding;
pub mod group_norm;
pub mod layout;
pub mod linear;
pub mod mahalanobis;
pub mod matmul;
pub mod pool;
pub mod real;
pub mod reduce;
pub mod resample;

use super::params::{
    at_least_2d, attention_dims, broadcastable, channel_vector, check_channel_ids, check_embedding_ids, check_scale_shift, concat_dims, dims4, group_norm_dims, linear_dims, same_shape, slice_dims, mahalanobis_dims,
};
use super::{check_model_out, Activation, Backend, Conv2dParams, DdimCoefs, GroupNormParams, Pool2dParams, ScaleShift, StepCoefs};
use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Cpu;

pub type CpuTensor = Tensor<Cpu>;

fn data(t: &CpuTensor) -> &[f32] {
    t.storage().as_slice()
}

fn make(dims: &[usize], v: Vec<f32>) -> CpuTensor {
    debug_assert_eq!(v.len(), dims.iter().product::<usize>());
    Tensor::from_parts(Shape::new(dims), Arc::new(v))
}

fn scale_shift<'a>(op: &'static str, ss: ScaleShift<'a, Cpu>, n: usize, c: usize) -> Result<Option<(&'a [f32], &'a [f32])>> {
    match ss {
        None => Ok(None),
        Some((a, b)) => {
            check_scale_shift(op, a.shape(), b.shape(), n, c)?;
            Ok(Some((data(a), data(b))))
        }
    }
}

fn gn_geom(op: &'static str, x: &Shape, gamma: &CpuTensor, beta: &CpuTensor, p: &GroupNormParams) -> Result<group_norm::GnGeom> {
    let (n, c, s) = group_norm_dims(op, x, gamma.shape(), beta.shape(), p)?;
    Ok(group_norm::GnGeom { n, c, s, groups: p.groups, eps: p.eps as f64, silu: p.silu })
}

impl Backend for Cpu {
    type Storage = Arc<Vec<f32>>;

    fn name(&self) -> String {
        format!("cpu ({} rayon threads)", rayon::current_num_threads())
    }

    fn from_host(&self, dims: &[usize], v: &[f32]) -> Result<CpuTensor> {
        let n: usize = dims.iter().product();
        if n != v.len() {
            return Err(Error::shape("from_host", format!("shape {dims:?} needs {n} values, got {}", v.len())));
        }
        Ok(make(dims, v.to_vec()))
    }

    fn from_host_vec(&self, dims: &[usize], v: Vec<f32>) -> Result<CpuTensor> {
        let n: usize = dims.iter().product();
        if n != v.len() {
            return Err(Error::shape("from_host", format!("shape {dims:?} needs {n} values, got {}", v.len())));
        }
        Ok(make(dims, v))
    }

    fn to_host(&self, x: &CpuTensor) -> Result<Vec<f32>> {
        Ok(data(x).to_vec())
    }

    fn reshape(&self, x: &CpuTensor, dims: &[usize]) -> Result<CpuTensor> {
        let s = Shape::new(dims);
        if s.numel() != x.numel() {
            return Err(Error::shape("reshape", format!("cannot view {} as {s}", x.shape())));
        }
        Ok(Tensor::from_parts(s, x.storage().clone()))
    }

    fn conv2d(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>, p: &Conv2dParams) -> Result<CpuTensor> {
        let ys = p.out_shape(x.shape(), w.shape())?;
        if let Some(b) = bias {
            channel_vector("conv2d", "bias", b.shape(), w.dims()[0])?;
        }
        let g = conv2d::ConvGeom::new(dims4("conv2d", x.shape())?, dims4("conv2d", w.shape())?, dims4("conv2d", &ys)?, p);
        Ok(make(ys.dims(), conv2d::conv2d(data(x), data(w), bias.map(data), &g)))
    }

    fn conv2d_x_backward(&self, gy: &CpuTensor, w: &CpuTensor, x_shape: &Shape, p: &Conv2dParams) -> Result<CpuTensor> {
        let ys = p.out_shape(x_shape, w.shape())?;
        same_shape("conv2d_x_backward", &ys, gy.shape())?;
        let g = conv2d::ConvGeom::new(dims4("conv2d", x_shape)?, dims4("conv2d", w.shape())?, dims4("conv2d", &ys)?, p);
        Ok(make(x_shape.dims(), conv2d::conv2d_x_backward(data(gy), data(w), &g)))
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> Result<CpuTensor> {
        let (n, fin, fout) = linear_dims("linear", x.shape(), w.shape())?;
        if let Some(b) = bias {
            channel_vector("linear", "bias", b.shape(), fout)?;
        }
        Ok(make(&[n, fout], linear::linear(data(x), data(w), bias.map(data), n, fin, fout)))
    }

    fn linear_x_backward(&self, gy: &CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
        if gy.shape().rank() != 2 || w.shape().rank() != 2 || gy.dims()[1] != w.dims()[0] {
            return Err(Error::shape("linear_x_backward", format!("gy {} does not match w {}", gy.shape(), w.shape())));
        }
        let (n, fout, fin) = (gy.dims()[0], w.dims()[0], w.dims()[1]);
        Ok(make(&[n, fin], linear::linear_x_backward(data(gy), data(w), n, fin, fout)))
    }

    fn group_norm(&self, x: &CpuTensor, gamma: &CpuTensor, beta: &CpuTensor, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<CpuTensor> {
        let g = gn_geom("group_norm", x.shape(), gamma, beta, p)?;
        let ss = scale_shift("group_norm", ss, g.n, g.c)?;
        Ok(make(x.dims(), group_norm::group_norm(data(x), data(gamma), data(beta), ss, &g)))
    }

    fn group_norm_x_backward(&self, gy: &CpuTensor, x: &CpuTensor, gamma: &CpuTensor, beta: &CpuTensor, p: &GroupNormParams, ss: ScaleShift<'_, Self>) -> Result<CpuTensor> {
        same_shape("group_norm_x_backward", x.shape(), gy.shape())?;
        let g = gn_geom("group_norm_x_backward", x.shape(), gamma, beta, p)?;
        let ss = scale_shift("group_norm_x_backward", ss, g.n, g.c)?;
        Ok(make(x.dims(), group_norm::group_norm_x_backward(data(gy), data(x), data(gamma), data(beta), ss, &g)))
    }

    fn channel_affine(&self, x: &CpuTensor, scale: &CpuTensor, shift: &CpuTensor) -> Result<CpuTensor> {
        at_least_2d("channel_affine", x.shape())?;
        let (_, c, s) = x.shape().ncs();
        channel_vector("channel_affine", "scale", scale.shape(), c)?;
        channel_vector("channel_affine", "shift", shift.shape(), c)?;
        Ok(make(x.dims(), broadcast::channel_affine(data(x), data(scale), data(shift), c, s)))
    }

    fn channel_affine_x_backward(&self, gy: &CpuTensor, scale: &CpuTensor) -> Result<CpuTensor> {
        at_least_2d("channel_affine_x_backward", gy.shape())?;
        let (_, c, s) = gy.shape().ncs();
        channel_vector("channel_affine_x_backward", "scale", scale.shape(), c)?;
        Ok(make(gy.dims(), broadcast::channel_affine_x_backward(data(gy), data(scale), c, s)))
    }

    fn activation(&self, x: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        Ok(make(x.dims(), activation::activation(data(x), act)))
    }

    fn activation_x_backward(&self, gy: &CpuTensor, x: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        same_shape("activation_x_backward", x.shape(), gy.shape())?;
        Ok(make(x.dims(), activation::activation_x_backward(data(gy), data(x), act)))
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        broadcastable("add", a.shape(), b.shape())?;
        Ok(make(a.dims(), broadcast::add(data(a), a.dims(), data(b), b.dims())))
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        broadcastable("mul", a.shape(), b.shape())?;
        Ok(make(a.dims(), broadcast::mul(data(a), a.dims(), data(b), b.dims())))
    }

    fn add_x_backward(&self, gy: &CpuTensor, b_shape: &Shape) -> Result<(CpuTensor, CpuTensor)> {
        broadcastable("add_x_backward", gy.shape(), b_shape)?;
        let (ga, gb) = broadcast::add_x_backward(data(gy), gy.dims(), b_shape.dims());
        Ok((make(gy.dims(), ga), make(b_shape.dims(), gb)))
    }

    fn mul_x_backward(&self, gy: &CpuTensor, a: &CpuTensor, b: &CpuTensor) -> Result<(CpuTensor, CpuTensor)> {
        same_shape("mul_x_backward", a.shape(), gy.shape())?;
        broadcastable("mul_x_backward", a.shape(), b.shape())?;
        let (ga, gb) = broadcast::mul_x_backward(data(gy), data(a), a.dims(), data(b), b.dims());
        Ok((make(a.dims(), ga), make(b.dims(), gb)))
    }

    fn scale_add_scalar(&self, x: &CpuTensor, alpha: f32, beta: f32) -> Result<CpuTensor> {
        Ok(make(x.dims(), broadcast::scale_add_scalar(data(x), alpha, beta)))
    }

    fn avg_pool2d(&self, x: &CpuTensor, p: &Pool2dParams) -> Result<CpuTensor> {
        let ys = p.out_shape("avg_pool2d", x.shape())?;
        let g = pool::PoolGeom::new(x.dims()[2], x.dims()[3], ys.dim(2), ys.dim(3), p);
        Ok(make(ys.dims(), pool::avg_pool2d(data(x), &g)))
    }

    fn avg_pool2d_x_backward(&self, gy: &CpuTensor, x_shape: &Shape, p: &Pool2dParams) -> Result<CpuTensor> {
        let ys = p.out_shape("avg_pool2d_x_backward", x_shape)?;
        same_shape("avg_pool2d_x_backward", &ys, gy.shape())?;
        let g = pool::PoolGeom::new(x_shape.dim(2), x_shape.dim(3), ys.dim(2), ys.dim(3), p);
        Ok(make(x_shape.dims(), pool::avg_pool2d_x_backward(data(gy), &g)))
    }

    fn max_pool2d(&self, x: &CpuTensor, p: &Pool2dParams) -> Result<CpuTensor> {
        let ys = p.out_shape("max_pool2d", x.shape())?;
        let g = pool::PoolGeom::new(x.dims()[2], x.dims()[3], ys.dim(2), ys.dim(3), p);
        Ok(make(ys.dims(), pool::max_pool2d(data(x), &g)))
    }

    fn max_pool2d_x_backward(&self, gy: &CpuTensor, x: &CpuTensor, p: &Pool2dParams) -> Result<CpuTensor> {
        let ys = p.out_shape("max_pool2d_x_backward", x.shape())?;
        same_shape("max_pool2d_x_backward", &ys, gy.shape())?;
        let g = pool::PoolGeom::new(x.dims()[2], x.dims()[3], ys.dim(2), ys.dim(3), p);
        Ok(make(x.dims(), pool::max_pool2d_x_backward(data(gy), data(x), &g)))
    }

    fn global_avg_pool(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let [n, c, h, w] = dims4("global_avg_pool", x.shape())?;
        if h * w == 0 {
            return Err(Error::shape("global_avg_pool", "empty spatial size"));
        }
        Ok(make(&[n, c, 1, 1], pool::global_avg_pool(data(x), h * w)))
    }

    fn upsample_nearest2x(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let [n, c, h, w] = dims4("upsample_nearest2x", x.shape())?;
        Ok(make(&[n, c, 2 * h, 2 * w], resample::upsample_nearest2x(data(x), h, w)))
    }

    fn upsample_nearest2x_x_backward(&self, gy: &CpuTensor) -> Result<CpuTensor> {
        let [n, c, h2, w2] = dims4("upsample_nearest2x_x_backward", gy.shape())?;
        if h2 % 2 != 0 || w2 % 2 != 0 {
            return Err(Error::shape("upsample_nearest2x_x_backward", format!("gradient {} has odd size", gy.shape())));
        }
        Ok(make(&[n, c, h2 / 2, w2 / 2], resample::upsample_nearest2x_x_backward(data(gy), h2 / 2, w2 / 2)))
    }

    fn resize_bilinear(&self, x: &CpuTensor, out_h: usize, out_w: usize) -> Result<CpuTensor> {
        let [n, c, h, w] = dims4("resize_bilinear", x.shape())?;
        if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
            return Err(Error::shape("resize_bilinear", format!("cannot resize {} to {out_h}x{out_w}", x.shape())));
        }
        Ok(make(&[n, c, out_h, out_w], resample::resize_bilinear(data(x), h, w, out_h, out_w)))
    }

    fn resize_bilinear_x_backward(&self, gy: &CpuTensor, in_h: usize, in_w: usize) -> Result<CpuTensor> {
        let [n, c, ho, wo] = dims4("resize_bilinear_x_backward", gy.shape())?;
        if in_h == 0 || in_w == 0 || ho == 0 || wo == 0 {
            return Err(Error::shape("resize_bilinear_x_backward", "empty size"));
        }
        Ok(make(&[n, c, in_h, in_w], resample::resize_bilinear_x_backward(data(gy), in_h, in_w, ho, wo)))
    }

    fn concat_channels(&self, xs: &[&CpuTensor]) -> Result<CpuTensor> {
        let shapes: Vec<&Shape> = xs.iter().map(|x| x.shape()).collect();
        let dims = concat_dims("concat_channels", &shapes)?;
        let (n, _, s) = Shape::new(&dims).ncs();
        let parts: Vec<(&[f32], usize)> = xs.iter().map(|x| (data(x), x.dims()[1])).collect();
        Ok(make(&dims, layout::concat_channels(&parts, n, s)))
    }

    fn slice_channels(&self, x: &CpuTensor, start: usize, end: usize) -> Result<CpuTensor> {
        let dims = slice_dims("slice_channels", x.shape(), start, end)?;
        let (n, c, s) = x.shape().ncs();
        Ok(make(&dims, layout::slice_channels(data(x), n, c, s, start, end)))
    }

    fn gather_channels(&self, x: &CpuTensor, ids: &[usize]) -> Result<CpuTensor> {
        at_least_2d("gather_channels", x.shape())?;
        let (n, c, s) = x.shape().ncs();
        check_channel_ids("gather_channels", c, ids)?;
        let mut dims = x.dims().to_vec();
        dims[1] = ids.len();
        Ok(make(&dims, layout::gather_channels(data(x), n, c, s, ids)))
    }

    fn gather_channels_x_backward(&self, gy: &CpuTensor, ids: &[usize], c: usize) -> Result<CpuTensor> {
        at_least_2d("gather_channels_x_backward", gy.shape())?;
        let (n, k, s) = gy.shape().ncs();
        if k != ids.len() {
            return Err(Error::shape("gather_channels_x_backward", format!("gradient {} for {} ids", gy.shape(), ids.len())));
        }
        check_channel_ids("gather_channels_x_backward", c, ids)?;
        let mut dims = gy.dims().to_vec();
        dims[1] = c;
        Ok(make(&dims, layout::gather_channels_x_backward(data(gy), n, c, s, ids)))
    }

    fn mahalanobis(&self, f: &CpuTensor, mean: &CpuTensor, linv: &CpuTensor) -> Result<CpuTensor> {
        let (n, d, p) = mahalanobis_dims("mahalanobis", f.shape(), mean.shape(), linv.shape())?;
        Ok(make(&[n, 1, f.dims()[2], f.dims()[3]], mahalanobis::mahalanobis(data(f), data(mean), data(linv), n, d, p)))
    }

    fn mahalanobis_x_backward(&self, gd: &CpuTensor, f: &CpuTensor, mean: &CpuTensor, linv: &CpuTensor) -> Result<CpuTensor> {
        let (n, d, p) = mahalanobis_dims("mahalanobis_x_backward", f.shape(), mean.shape(), linv.shape())?;
        if gd.dims() != [n, 1, f.dims()[2], f.dims()[3]] {
            return Err(Error::shape("mahalanobis_x_backward", format!("gradient {} does not fit features {}", gd.shape(), f.shape())));
        }
        Ok(make(f.dims(), mahalanobis::mahalanobis_x_backward(data(gd), data(f), data(mean), data(linv), n, d, p)))
    }

    fn attention_legacy(&self, qkv: &CpuTensor, heads: usize) -> Result<CpuTensor> {
        let (n, d, t) = attention_dims("attention_legacy", qkv.shape(), heads)?;
        let mut dims = qkv.dims().to_vec();
        dims[1] = heads * d;
        Ok(make(&dims, attention::attention_legacy(data(qkv), n, heads, d, t)))
    }

    fn attention_legacy_x_backward(&self, gy: &CpuTensor, qkv: &CpuTensor, heads: usize) -> Result<CpuTensor> {
        let (n, d, t) = attention_dims("attention_legacy_x_backward", qkv.shape(), heads)?;
        if gy.shape().ncs() != (n, heads * d, t) {
            return Err(Error::shape("attention_legacy_x_backward", format!("gradient {} does not match qkv {}", gy.shape(), qkv.shape())));
        }
        Ok(make(qkv.dims(), attention::attention_legacy_x_backward(data(gy), data(qkv), d, t)))
    }

    fn timestep_embedding(&self, t: &CpuTensor, dim: usize, max_period: f32) -> Result<CpuTensor> {
        if t.shape().rank() != 1 || dim == 0 {
            return Err(Error::shape("timestep_embedding", format!("want t [N] and dim > 0, got {} and {dim}", t.shape())));
        }
        Ok(make(&[t.numel(), dim], embedding::timestep_embedding(data(t), dim, max_period)))
    }

    fn embedding(&self, table: &CpuTensor, ids: &[usize]) -> Result<CpuTensor> {
        if table.shape().rank() != 2 {
            return Err(Error::shape("embedding", format!("table must be [rows, dim], got {}", table.shape())));
        }
        let (rows, dim) = (table.dims()[0], table.dims()[1]);
        check_embedding_ids(rows, ids)?;
        Ok(make(&[ids.len(), dim], embedding::embedding(data(table), dim, ids)))
    }

    fn mean_std(&self, x: &CpuTensor) -> Result<(f64, f64)> {
        if x.numel() < 2 {
            return Err(Error::shape("mean_std", format!("std needs at least 2 values, tensor {} has {}", x.shape(), x.numel())));
        }
        Ok(reduce::mean_std(data(x)))
    }

    fn q_sample(&self, x0: &CpuTensor, noise: &CpuTensor, sqrt_ab: f32, sqrt_1m_ab: f32) -> Result<CpuTensor> {
        same_shape("q_sample", x0.shape(), noise.shape())?;
        Ok(make(x0.dims(), diffusion_step::q_sample(data(x0), data(noise), sqrt_ab, sqrt_1m_ab)))
    }

    fn p_mean_variance(&self, xt: &CpuTensor, model_out: &CpuTensor, c: &StepCoefs) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        let (ch, s) = check_model_out("p_mean_variance", xt.shape(), model_out.shape(), c)?;
        let (m, lv, x0) = diffusion_step::p_mean_variance(data(xt), data(model_out), ch, s, c);
        Ok((make(xt.dims(), m), make(xt.dims(), lv), make(xt.dims(), x0)))
    }

    fn kl_bits(&self, x0: &CpuTensor, xt: &CpuTensor, p_mean: &CpuTensor, p_logvar: &CpuTensor, c: &StepCoefs) -> Result<CpuTensor> {
        for t in [xt, p_mean, p_logvar] {
            same_shape("kl_bits", x0.shape(), t.shape())?;
        }
        Ok(make(x0.dims(), diffusion_step::kl_bits(data(x0), data(xt), data(p_mean), data(p_logvar), c)))
    }

    fn p_sample(&self, mean: &CpuTensor, logvar: &CpuTensor, z: &CpuTensor, nonzero: bool) -> Result<CpuTensor> {
        same_shape("p_sample", mean.shape(), logvar.shape())?;
        same_shape("p_sample", mean.shape(), z.shape())?;
        Ok(make(mean.dims(), diffusion_step::p_sample(data(mean), data(logvar), data(z), nonzero)))
    }

    fn ddim_step(&self, xt: &CpuTensor, pred_x0: &CpuTensor, z: &CpuTensor, c: &DdimCoefs) -> Result<CpuTensor> {
        same_shape("ddim_step", xt.shape(), pred_x0.shape())?;
        same_shape("ddim_step", xt.shape(), z.shape())?;
        Ok(make(xt.dims(), diffusion_step::ddim_step(data(xt), data(pred_x0), data(z), c)))
    }
}
