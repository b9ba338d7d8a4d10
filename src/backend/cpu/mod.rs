//! The CPU backend: the reference every other backend is checked against, and the fallback when
//! no GPU is there. Storage is a shared row-major f32 buffer; the op bodies live in one file per
//! op family, generic over f32/f64 (the f64 instances serve the finite-difference checks).
//! Output buffers are reused across ops (`buffers`).
//! Shapes arrive checked (`backend::Backend` asks `ops` first).

pub mod activation;
pub mod attention;
pub mod attention_rounded;
pub mod broadcast;
pub mod buffers;
pub mod conv2d;
pub mod conv_act;
pub mod conv_select;
pub mod depthwise;
pub mod depthwise_axpy;
pub mod diffusion_step;
pub mod embedding;
pub mod group_norm;
pub mod layout;
pub mod linear;
pub mod mahalanobis;
pub mod matmul;
pub mod optim;
pub mod pointwise;
pub mod pool;
pub mod real;
pub mod reduce;
pub mod resample;
pub mod resident;
pub mod simd;
pub mod winograd;
pub mod winograd_transform;
pub mod winograd_weights;
pub mod workers;

use super::{Compute, GroupNormGrads, ScaleShift};
use crate::ops::attention::AttentionGeom;
use crate::ops::contract::{AdamwCoefs, BroadcastGeom, Conv2dGeom, DdimCoefs, GroupNormGeom, Pool2dGeom, StepCoefs};
use crate::ops::conv::LinearGeom;
use crate::ops::padim::MahalanobisGeom;
use crate::ops::pool::ResizeGeom;
use crate::ops::Activation;
use crate::tensor::{HasStorage, Shape, Tensor};
use crate::Result;
use buffers::Pooled;
use resident::{Values, Widened};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Cpu;

pub type CpuTensor = Tensor<Cpu>;

/// The f32 values of `t` (a weight held as f16 is widened for this use: resident.rs).
fn data(t: &CpuTensor) -> Widened<'_> {
    t.storage().f32()
}

/// A tensor owning `v`; the buffer goes back to `buffers`' pool when the last handle drops.
fn make(dims: &[usize], v: Vec<f32>) -> CpuTensor {
    debug_assert_eq!(v.len(), dims.iter().product::<usize>());
    Tensor::from_parts(Shape::new(dims), Arc::new(Values::F32(Pooled::new(v))))
}

type Pair<'a> = Option<(Widened<'a>, Widened<'a>)>;

fn scale_shift<'a>(ss: ScaleShift<'a, Cpu>) -> Pair<'a> {
    ss.map(|(a, b)| (data(a), data(b)))
}

fn pair<'a>(p: &'a Pair<'_>) -> Option<(&'a [f32], &'a [f32])> {
    p.as_ref().map(|(a, b)| (&**a, &**b))
}

impl HasStorage for Cpu {
    type Storage = Arc<Values>;
}

impl Compute for Cpu {
    fn name(&self) -> String {
        format!("cpu ({} rayon threads)", rayon::current_num_threads())
    }

    fn on_workers<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        workers::on_workers(f)
    }

    fn upload(&self, dims: &[usize], v: &[f32]) -> Result<CpuTensor> {
        let mut buf = <f32 as buffers::Alloc>::for_overwrite(v.len());
        buf.copy_from_slice(v);
        Ok(make(dims, buf))
    }

    fn upload_vec(&self, dims: &[usize], v: Vec<f32>) -> Result<CpuTensor> {
        Ok(make(dims, v))
    }

    fn upload_f16(&self, dims: &[usize], v: Vec<half::f16>) -> Result<CpuTensor> {
        Ok(Tensor::from_parts(Shape::new(dims), Arc::new(resident::store(v)?)))
    }

    fn download(&self, x: &CpuTensor) -> Result<Vec<f32>> {
        Ok(data(x).to_vec())
    }

    fn conv2d(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>, g: &Conv2dGeom) -> Result<CpuTensor> {
        Ok(make(&g.y_dims(), conv_select::conv2d(&data(x), w.storage(), bias.map(data).as_deref(), g)?))
    }

    fn conv2d_act(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>, act: Activation, g: &Conv2dGeom, mean: bool) -> Result<(CpuTensor, Option<CpuTensor>)> {
        let (y, m) = conv_act::conv2d_act(&data(x), w.storage(), bias.map(data).as_deref(), act, g, mean)?;
        Ok((make(&g.y_dims(), y), m.map(|m| make(&[g.n(), g.o(), 1, 1], m))))
    }

    fn conv2d_add(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>, res: &CpuTensor, g: &Conv2dGeom) -> Result<CpuTensor> {
        Ok(make(&g.y_dims(), conv_act::conv2d_add(&data(x), w.storage(), bias.map(data).as_deref(), &data(res), g)?))
    }

    fn conv2d_x_backward(&self, gy: &CpuTensor, w: &CpuTensor, g: &Conv2dGeom) -> Result<CpuTensor> {
        Ok(make(&g.x_dims(), conv_select::conv2d_x_backward(&data(gy), w.storage(), g)?))
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>, g: &LinearGeom) -> Result<CpuTensor> {
        Ok(make(&[g.rows, g.fout], linear::linear(&data(x), &data(w), bias.map(data).as_deref(), g.rows, g.fin, g.fout)))
    }

    fn linear_parts(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>, g: &LinearGeom, parts: &[usize]) -> Result<CpuTensor> {
        // one GEMM per part on that part's rows of w: each part's values are those of its own
        // `linear`, bit for bit (the demo's numbers do not move when the UNet packs its projections);
        // a stacked f16 weight is widened part by part, not whole
        let (x, bias) = (&data(x), bias.map(data));
        let mut y = vec![0.0f32; g.rows * g.fout];
        let mut off = 0;
        for &k in parts {
            let wk = w.storage().f32_range(off * g.fin..(off + k) * g.fin);
            let part = linear::linear(x, &wk, bias.as_deref().map(|b| &b[off..off + k]), g.rows, g.fin, k);
            for (dst, src) in y.chunks_mut(g.fout).zip(part.chunks(k)) {
                dst[off..off + k].copy_from_slice(src);
            }
            off += k;
        }
        Ok(make(&[g.rows, g.fout], y))
    }

    fn linear_x_backward(&self, gy: &CpuTensor, w: &CpuTensor, g: &LinearGeom) -> Result<CpuTensor> {
        Ok(make(&[g.rows, g.fin], linear::linear_x_backward(&data(gy), &data(w), g.rows, g.fin, g.fout)))
    }

    fn conv2d_w_backward(&self, gy: &CpuTensor, x: &CpuTensor, g: &Conv2dGeom) -> Result<CpuTensor> {
        Ok(make(&[g.o(), g.cg(), g.kh(), g.kw()], conv2d::conv2d_w_backward(&data(gy), &data(x), g)))
    }

    fn linear_w_backward(&self, gy: &CpuTensor, x: &CpuTensor, g: &LinearGeom) -> Result<CpuTensor> {
        Ok(make(&[g.fout, g.fin], linear::linear_w_backward(&data(gy), &data(x), g.rows, g.fin, g.fout)))
    }

    fn channel_sum(&self, x: &CpuTensor, n: usize, c: usize, s: usize) -> Result<CpuTensor> {
        Ok(make(&[c], reduce::channel_sum(&data(x), n, c, s)))
    }

    fn group_norm_w_backward(&self, gy: &CpuTensor, x: &CpuTensor, gamma: &CpuTensor, beta: &CpuTensor, ss: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<GroupNormGrads<Self>> {
        let (gg, gb, gss) = group_norm::group_norm_w_backward(&data(gy), &data(x), &data(gamma), &data(beta), pair(&scale_shift(ss)), g);
        let nc = [g.n(), g.c()];
        Ok(GroupNormGrads { gamma: make(&[g.c()], gg), beta: make(&[g.c()], gb), scale_shift: gss.map(|(a, b)| (make(&nc, a), make(&nc, b))) })
    }

    fn group_norm(&self, x: &CpuTensor, gamma: &CpuTensor, beta: &CpuTensor, ss: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<CpuTensor> {
        Ok(make(x.dims(), group_norm::group_norm(&data(x), &data(gamma), &data(beta), pair(&scale_shift(ss)), g)))
    }

    fn group_norm_x_backward(&self, gy: &CpuTensor, x: &CpuTensor, gamma: &CpuTensor, beta: &CpuTensor, ss: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<CpuTensor> {
        Ok(make(x.dims(), group_norm::group_norm_x_backward(&data(gy), &data(x), &data(gamma), &data(beta), pair(&scale_shift(ss)), g)))
    }

    fn channel_affine(&self, x: &CpuTensor, scale: &CpuTensor, shift: &CpuTensor, c: usize, s: usize) -> Result<CpuTensor> {
        Ok(make(x.dims(), broadcast::channel_affine(&data(x), &data(scale), &data(shift), c, s)))
    }

    fn channel_affine_x_backward(&self, gy: &CpuTensor, scale: &CpuTensor, c: usize, s: usize) -> Result<CpuTensor> {
        Ok(make(gy.dims(), broadcast::channel_affine_x_backward(&data(gy), &data(scale), c, s)))
    }

    fn activation(&self, x: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        Ok(make(x.dims(), activation::activation(&data(x), act)))
    }

    fn activation_x_backward(&self, gy: &CpuTensor, x: &CpuTensor, act: Activation) -> Result<CpuTensor> {
        Ok(make(x.dims(), activation::activation_x_backward(&data(gy), &data(x), act)))
    }

    fn add(&self, a: &CpuTensor, b: &CpuTensor, _: &BroadcastGeom) -> Result<CpuTensor> {
        Ok(make(a.dims(), broadcast::add(&data(a), a.dims(), &data(b), b.dims())))
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor, _: &BroadcastGeom) -> Result<CpuTensor> {
        Ok(make(a.dims(), broadcast::mul(&data(a), a.dims(), &data(b), b.dims())))
    }

    fn add_x_backward(&self, gy: &CpuTensor, b_shape: &Shape, _: &BroadcastGeom) -> Result<(CpuTensor, CpuTensor)> {
        let (ga, gb) = broadcast::add_x_backward(&data(gy), gy.dims(), b_shape.dims());
        Ok((make(gy.dims(), ga), make(b_shape.dims(), gb)))
    }

    fn mul_x_backward(&self, gy: &CpuTensor, a: &CpuTensor, b: &CpuTensor, _: &BroadcastGeom) -> Result<(CpuTensor, CpuTensor)> {
        let (ga, gb) = broadcast::mul_x_backward(&data(gy), &data(a), a.dims(), &data(b), b.dims());
        Ok((make(a.dims(), ga), make(b.dims(), gb)))
    }

    fn scale_add_scalar(&self, x: &CpuTensor, alpha: f32, beta: f32) -> Result<CpuTensor> {
        Ok(make(x.dims(), broadcast::scale_add_scalar(&data(x), alpha, beta)))
    }

    fn avg_pool2d(&self, x: &CpuTensor, g: &Pool2dGeom, y: &Shape) -> Result<CpuTensor> {
        Ok(make(y.dims(), pool::avg_pool2d(&data(x), g)))
    }

    fn avg_pool2d_x_backward(&self, gy: &CpuTensor, x_shape: &Shape, g: &Pool2dGeom) -> Result<CpuTensor> {
        Ok(make(x_shape.dims(), pool::avg_pool2d_x_backward(&data(gy), g)))
    }

    fn max_pool2d(&self, x: &CpuTensor, g: &Pool2dGeom, y: &Shape) -> Result<CpuTensor> {
        Ok(make(y.dims(), pool::max_pool2d(&data(x), g)))
    }

    fn max_pool2d_x_backward(&self, gy: &CpuTensor, x: &CpuTensor, g: &Pool2dGeom) -> Result<CpuTensor> {
        Ok(make(x.dims(), pool::max_pool2d_x_backward(&data(gy), &data(x), g)))
    }

    fn global_avg_pool(&self, x: &CpuTensor, n: usize, c: usize, plane: usize) -> Result<CpuTensor> {
        Ok(make(&[n, c, 1, 1], pool::global_avg_pool(&data(x), plane)))
    }

    fn upsample_nearest2x(&self, x: &CpuTensor, [n, c, h, w]: [usize; 4]) -> Result<CpuTensor> {
        Ok(make(&[n, c, 2 * h, 2 * w], resample::upsample_nearest2x(&data(x), h, w)))
    }

    fn upsample_nearest2x_x_backward(&self, gy: &CpuTensor, [n, c, h, w]: [usize; 4]) -> Result<CpuTensor> {
        Ok(make(&[n, c, h, w], resample::upsample_nearest2x_x_backward(&data(gy), h, w)))
    }

    fn resize_bilinear(&self, x: &CpuTensor, g: &ResizeGeom) -> Result<CpuTensor> {
        Ok(make(&[g.n, g.c, g.ho, g.wo], resample::resize_bilinear(&data(x), g.h, g.w, g.ho, g.wo)))
    }

    fn resize_bilinear_x_backward(&self, gy: &CpuTensor, g: &ResizeGeom) -> Result<CpuTensor> {
        Ok(make(&[g.n, g.c, g.h, g.w], resample::resize_bilinear_x_backward(&data(gy), g.h, g.w, g.ho, g.wo)))
    }

    fn concat_channels(&self, xs: &[&CpuTensor], dims: &[usize]) -> Result<CpuTensor> {
        let (n, _, s) = Shape::new(dims).ncs();
        // f16 weights stacked stay f16 (an exact copy): the UNet's packed timestep projections
        let halves: Option<Vec<(&[half::f16], usize)>> = xs.iter().map(|x| x.storage().as_f16().map(|h| (h, x.dims()[1]))).collect();
        if let Some(parts) = halves.filter(|p| !p.is_empty()) {
            return Ok(Tensor::from_parts(Shape::new(dims), Arc::new(Values::F16(resident::concat_f16(&parts, n, s).into_boxed_slice()))));
        }
        let vals: Vec<Widened> = xs.iter().map(|x| data(x)).collect();
        let parts: Vec<(&[f32], usize)> = vals.iter().zip(xs).map(|(v, x)| (&**v, x.dims()[1])).collect();
        Ok(make(dims, layout::concat_channels(&parts, n, s)))
    }

    fn slice_channels(&self, x: &CpuTensor, start: usize, dims: &[usize]) -> Result<CpuTensor> {
        let (n, c, s) = x.shape().ncs();
        Ok(make(dims, layout::slice_channels(&data(x), n, c, s, start, start + dims[1])))
    }

    fn gather_channels(&self, x: &CpuTensor, ids: &[usize], dims: &[usize]) -> Result<CpuTensor> {
        let (n, c, s) = x.shape().ncs();
        Ok(make(dims, layout::gather_channels(&data(x), n, c, s, ids)))
    }

    fn gather_channels_x_backward(&self, gy: &CpuTensor, ids: &[usize], dims: &[usize]) -> Result<CpuTensor> {
        let (n, c, s) = Shape::new(dims).ncs();
        Ok(make(dims, layout::gather_channels_x_backward(&data(gy), n, c, s, ids)))
    }

    fn mahalanobis(&self, f: &CpuTensor, mean: &CpuTensor, linv: &CpuTensor, g: &MahalanobisGeom) -> Result<CpuTensor> {
        Ok(make(&g.dist_dims(), mahalanobis::mahalanobis(&data(f), &data(mean), &data(linv), g.n, g.d, g.p)))
    }

    fn mahalanobis_x_backward(&self, gd: &CpuTensor, f: &CpuTensor, mean: &CpuTensor, linv: &CpuTensor, g: &MahalanobisGeom) -> Result<CpuTensor> {
        Ok(make(f.dims(), mahalanobis::mahalanobis_x_backward(&data(gd), &data(f), &data(mean), &data(linv), g.n, g.d, g.p)))
    }

    fn attention_legacy(&self, qkv: &CpuTensor, g: &AttentionGeom) -> Result<CpuTensor> {
        Ok(make(&g.y_dims(qkv.shape()), attention::attention_legacy(&data(qkv), g.n, g.heads, g.d, g.t)))
    }

    fn attention_legacy_x_backward(&self, gy: &CpuTensor, qkv: &CpuTensor, g: &AttentionGeom) -> Result<CpuTensor> {
        Ok(make(qkv.dims(), attention::attention_legacy_x_backward(&data(gy), &data(qkv), g.d, g.t)))
    }

    fn timestep_embedding(&self, t: &CpuTensor, dim: usize, max_period: f32) -> Result<CpuTensor> {
        Ok(make(&[t.numel(), dim], embedding::timestep_embedding(&data(t), dim, max_period)))
    }

    fn embedding(&self, table: &CpuTensor, ids: &[usize], dim: usize) -> Result<CpuTensor> {
        Ok(make(&[ids.len(), dim], embedding::embedding(&data(table), dim, ids)))
    }

    fn embedding_w_backward(&self, gy: &CpuTensor, ids: &[usize], rows: usize, dim: usize) -> Result<CpuTensor> {
        Ok(make(&[rows, dim], embedding::embedding_w_backward(&data(gy), rows, dim, ids)))
    }

    fn mean_std(&self, x: &CpuTensor) -> Result<(f64, f64)> {
        Ok(reduce::mean_std(&data(x)))
    }

    fn adamw_step(&self, param: &CpuTensor, grad: &CpuTensor, m: &CpuTensor, v: &CpuTensor, k: &AdamwCoefs) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        let (p, m2, v2) = optim::adamw_step(&data(param), &data(grad), &data(m), &data(v), k);
        Ok((make(param.dims(), p), make(param.dims(), m2), make(param.dims(), v2)))
    }

    fn axpby(&self, a: &CpuTensor, b: &CpuTensor, alpha: f32, beta: f32) -> Result<CpuTensor> {
        Ok(make(a.dims(), optim::axpby(&data(a), &data(b), alpha, beta)))
    }

    fn q_sample(&self, x0: &CpuTensor, noise: &CpuTensor, sqrt_ab: f32, sqrt_1m_ab: f32) -> Result<CpuTensor> {
        Ok(make(x0.dims(), diffusion_step::q_sample(&data(x0), &data(noise), sqrt_ab, sqrt_1m_ab)))
    }

    fn p_mean_variance(&self, xt: &CpuTensor, model_out: &CpuTensor, c: &StepCoefs, ch: usize, s: usize) -> Result<(CpuTensor, CpuTensor, CpuTensor)> {
        let (m, lv, x0) = diffusion_step::p_mean_variance(&data(xt), &data(model_out), ch, s, c);
        Ok((make(xt.dims(), m), make(xt.dims(), lv), make(xt.dims(), x0)))
    }

    fn kl_bits(&self, x0: &CpuTensor, xt: &CpuTensor, p_mean: &CpuTensor, p_logvar: &CpuTensor, c: &StepCoefs) -> Result<CpuTensor> {
        Ok(make(x0.dims(), diffusion_step::kl_bits(&data(x0), &data(xt), &data(p_mean), &data(p_logvar), c)))
    }

    fn p_sample(&self, mean: &CpuTensor, logvar: &CpuTensor, z: &CpuTensor, nonzero: bool) -> Result<CpuTensor> {
        Ok(make(mean.dims(), diffusion_step::p_sample(&data(mean), &data(logvar), &data(z), nonzero)))
    }

    fn ddim_step(&self, xt: &CpuTensor, pred_x0: &CpuTensor, z: &CpuTensor, c: &DdimCoefs) -> Result<CpuTensor> {
        Ok(make(xt.dims(), diffusion_step::ddim_step(&data(xt), &data(pred_x0), &data(z), c)))
    }
}
