//! Group-norm records made by the op that writes the normalised tensor (issue #20 item 3), so the
//! norm's conv normalises from them with no statistics launch (`conv2d_norm_f32`,
//! `permute_cast_norm_tc_*`):
//! - `Compute::conv2d_gn`: a conv whose epilogue makes them (kernels/gn_out.cuh). At f32, where
//!   every output tile lies in one image (ho·wo a multiple of IGEMM_TN) and groups = 1; on the
//!   tensor cores (bf16/f16/tf32, the loader-cast conv `conv2d_tc_nchw_*`) where ho·wo is a
//!   multiple of the plan's tile width (64 or 128: `conv2d_tc_gn_out_supported`).
//! - `Compute::group_norm_resample`: the up/down ResBlock's in_norm → h_upd in one pass from the
//!   records (resample.cu `gn_upsample_nearest2x_f32`, `gn_avg_pool2x2_f32`), any precision.
//! - `Compute::concat_channels_gn`: the decoder's two-part concat, one block per plane
//!   (group_norm.cu `concat2_gn_f32`); the records are of f32 data, so any consumer precision.
//!
//! Elsewhere the records are left to the consumer (None). `RAN_CUDA_FOLD_NORM=0` makes none.

use super::device::Device;
use super::device::LaunchCfg;
use super::norm_conv::fold_enabled;
use super::tensor_core::conv2d_tc_gn_out_supported;
use super::{b, ew, i, igemm_cfg, launch, CudaBackend, T};
use crate::backend::compute::{conv2d_maybe_norm, GnOperand};
use crate::backend::Compute;
use crate::ops::contract::{Conv2dGeom, GroupNormGeom, GN_PRE_FLOATS, IGEMM_TM, IGEMM_TN};
use crate::ops::precision::Precision;
use crate::Result;

/// Whether the epilogue can make the records of y = conv(x) for the norm `q` over y.
pub fn gn_out_supported(g: &Conv2dGeom, q: &GroupNormGeom) -> bool {
    let hw = g.ho() * g.wo();
    g.groups() == 1 && hw > 0 && hw % IGEMM_TN as usize == 0 && g.n() * g.o() > 0 && q.n() == g.n() && q.c() == g.o() && q.s() == hw
}

impl<D: Device> CudaBackend<D> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv2d_gn_cuda(
        &self,
        x: &T<D>,
        rec: Option<&T<D>>,
        norm: Option<&GnOperand<'_, Self>>,
        w: &T<D>,
        bias: Option<&T<D>>,
        res: Option<&T<D>>,
        g: &Conv2dGeom,
        p: Precision,
        next: Option<&GnOperand<'_, Self>>,
    ) -> Result<(T<D>, Option<T<D>>)> {
        // with the fold off (RAN_CUDA_FOLD_NORM=0) every norm computes its own statistics
        let fold = fold_enabled() && !g.depthwise();
        let rec = rec.filter(|_| fold);
        let f32_records = |q: &&GnOperand<'_, Self>| p == Precision::F32 && gn_out_supported(g, &q.g);
        let tc_records = |q: &&GnOperand<'_, Self>| p != Precision::F32 && !self.cast_first && conv2d_tc_gn_out_supported(g, &q.g, p);
        if let Some(q) = next.filter(|q| fold && (f32_records(q) || tc_records(q))) {
            // x's records: given, or made now; a norm they cannot be made for is applied first
            let (mut xin, mut coef_in) = (x.clone(), None);
            if let Some(n) = norm {
                let r = match rec {
                    Some(r) => Some(r.clone()),
                    None => self.gn_records(x, n.gamma, n.beta, n.emb, &n.g)?,
                };
                match r {
                    Some(r) => coef_in = Some((r, n.g.silu != 0)),
                    None => {
                        xin = match n.emb {
                            Some(e) => Compute::group_norm_emb(self, x, n.gamma, n.beta, e, &n.g)?,
                            None => Compute::group_norm(self, x, n.gamma, n.beta, None, &n.g)?,
                        }
                    }
                }
            }
            let coef_in = coef_in.as_ref().map(|(c, s)| (c, *s));
            if p != Precision::F32 {
                let (y, coef) = self.conv2d_tc_nchw(&xin, coef_in, w, bias, res, g, p, Some(q))?;
                return Ok((y, coef));
            }
            let (y, coef) = self.conv2d_gn_out_f32(&xin, coef_in, w, bias, res, g, q)?;
            return Ok((y, Some(coef)));
        }
        let y = match (norm, rec) {
            (Some(n), Some(r)) => self.conv2d_norm(x, r, n.g.silu != 0, w, bias, res, g, p)?,
            _ => conv2d_maybe_norm(self, x, norm, w, bias, res, g, p)?,
        };
        Ok((y, None))
    }

    /// conv2d (+ res) of x (normalised by `coef_in` = (records, SiLU) when given) and the records of
    /// y for the norm `q`: one launch.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_gn_out_f32(&self, x: &T<D>, coef_in: Option<(&T<D>, bool)>, w: &T<D>, bias: Option<&T<D>>, res: Option<&T<D>>, g: &Conv2dGeom, q: &GnOperand<'_, Self>) -> Result<(T<D>, T<D>)> {
        let (n, c, hw) = (g.n(), g.o(), g.ho() * g.wo());
        let tiles = hw / IGEMM_TN as usize;
        let y = self.alloc(&g.y_dims())?;
        let part = self.alloc(&[n * c * tiles * 2])?; // every tile's moments written before they are read
        let chm = self.alloc(&[n * c * 2])?; // every channel's, likewise
        let coef = self.alloc(&[n, c, GN_PRE_FLOATS as usize])?; // every record written in full
        let row_tiles = c.div_ceil(IGEMM_TM as usize);
        let cnt = self.gn_counters(n * row_tiles + n)?;
        let cfg = igemm_cfg(c, n * hw, 1);
        let bias_buf = bias.unwrap_or(w); // unread when has_bias = 0
        let res_buf = res.unwrap_or(w); // unread when has_res = 0
        let (sc, sh) = q.emb.map_or((q.gamma, q.beta), |e| (e, e)); // unread without scale-shift
        let has_res = res.is_some() as i32;
        match coef_in {
            None => launch::conv2d_gn_out_f32(&self.dev, &cfg, b(x), b(w), b(bias_buf), b(res_buf), b(&y), b(&part), b(&chm), &*cnt, b(q.gamma), b(q.beta), b(sc), b(sh), b(&coef), g, &q.g, has_res)?,
            Some((ci, silu)) => launch::conv2d_norm_gn_out_f32(
                &self.dev,
                &cfg,
                b(x),
                b(ci),
                b(w),
                b(bias_buf),
                b(res_buf),
                b(&y),
                b(&part),
                b(&chm),
                &*cnt,
                b(q.gamma),
                b(q.beta),
                b(sc),
                b(sh),
                b(&coef),
                g,
                &q.g,
                silu as i32,
                has_res,
            )?,
        }
        Ok((y, coef))
    }

    /// concat_channels of xs, and, for two parts, the result's records for `next`.
    pub(super) fn concat_channels_gn_cuda(&self, xs: &[&T<D>], dims: &[usize], next: Option<&GnOperand<'_, Self>>) -> Result<(T<D>, Option<T<D>>)> {
        let (n, c): (usize, usize) = (dims[0], dims[1]);
        let s: usize = dims[2..].iter().product();
        match (xs, next) {
            ([a, bt], Some(q)) if fold_enabled() && n * c * s > 0 && q.g.n() == n && q.g.c() == c && q.g.s() == s => {
                let y = self.alloc(dims)?;
                let chm = self.alloc(&[n * c * 3])?; // every plane's written before it is read
                let coef = self.alloc(&[n, c, GN_PRE_FLOATS as usize])?; // every record written in full
                let cnt = self.gn_counters(n)?;
                let (sc, sh) = q.emb.map_or((q.gamma, q.beta), |e| (e, e)); // unread without scale-shift
                let cfg = LaunchCfg { grid: ((n * c) as u32, 1, 1), block: (CONCAT_GN_BLOCK, 1, 1), smem_bytes: 0 };
                launch::concat2_gn_f32(&self.dev, &cfg, b(a), i(a.dims()[1]), b(bt), i(bt.dims()[1]), b(&y), b(&chm), &*cnt, b(q.gamma), b(q.beta), b(sc), b(sh), b(&coef), &q.g)?;
                Ok((y, Some(coef)))
            }
            _ => Ok((Compute::concat_channels(self, xs, dims)?, None)),
        }
    }

    /// act(GN(x)) resampled in one launch from x's records (gn_upsample_nearest2x_f32,
    /// gn_avg_pool2x2_f32); None without records or with the fold off.
    pub(super) fn group_norm_resample_cuda(&self, x: &T<D>, rec: Option<&T<D>>, norm: &GnOperand<'_, Self>, up: bool) -> Result<Option<T<D>>> {
        let Some(rec) = rec.filter(|_| fold_enabled()) else { return Ok(None) };
        let (n, c, h, w) = (x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]);
        let silu = i32::from(norm.g.silu != 0);
        let y = if up { self.alloc(&[n, c, 2 * h, 2 * w])? } else { self.alloc(&[n, c, h / 2, w / 2])? };
        if y.numel() > 0 {
            if up {
                launch::gn_upsample_nearest2x_f32(&self.dev, &ew(x.numel()), b(x), b(rec), b(&y), i(n * c), i(h), i(w), silu)?;
            } else {
                launch::gn_avg_pool2x2_f32(&self.dev, &ew(y.numel()), b(x), b(rec), b(&y), i(n * c), i(h), i(w), silu)?;
            }
        }
        Ok(Some(y))
    }
}

/// Threads of concat2_gn_f32's block (one per plane): a 64² plane is 4 float4 loads a thread.
const CONCAT_GN_BLOCK: u32 = 256;
