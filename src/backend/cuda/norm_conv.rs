//! `Compute::group_norm_conv2d` on the CUDA backend (issue #20 item 3): group norm folded into the
//! conv that consumes it. One launch (`group_norm_coefs_f32`) turns x's group statistics into a
//! record per (image, channel) (kernels/gn_pre.cuh); the conv's operand path applies them as it
//! reads x — the f32 implicit GEMM in its loader (`conv2d_norm_f32`), the tensor cores in the cast
//! to NHWC (`permute_cast_norm_tc_*`) — so the normalised tensor is never written or read back,
//! and the group norm's apply launch is gone (two launches → one where the group is split).

use super::cached::CachedBuf;
use super::device::{Device, LaunchCfg};
use super::{b, igemm_cfg, launch, norm_split, CudaBackend, T};
use crate::ops::contract::{Conv2dGeom, GroupNormGeom, GroupNormSplit, GN_PRE_FLOATS};
use crate::ops::precision::Precision;
use crate::Result;
use std::sync::{Arc, Mutex};

/// The zeroed per-group counters of `group_norm_coefs_f32` (the last block of a group to finish
/// puts its counter back to 0, so one buffer serves every launch on the backend's one stream).
/// Made outside any graph recording and kept until `clear_graphs` (or the backend's end): a
/// recorded forward keeps using the buffer it was recorded with.
pub struct GnCounters<D: Device> {
    bufs: Mutex<Vec<(usize, Arc<CachedBuf<D>>)>>,
}

impl<D: Device> GnCounters<D> {
    pub fn new() -> Self {
        GnCounters { bufs: Mutex::new(Vec::new()) }
    }
}

impl<D: Device> Default for GnCounters<D> {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether the fold is on: `RAN_CUDA_FOLD_NORM=0` runs group_norm then conv2d instead (the same
/// values, bit for bit; for measuring what the fold gives). Read once per process.
pub fn fold_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| super::env_switch("RAN_CUDA_FOLD_NORM", true, "the fold stays on"))
}

/// Counters are made at least this many at a time (a batch of 32 at 32 groups), then doubled.
const MIN_COUNTERS: usize = 1024;

impl<D: Device> CudaBackend<D> {
    /// At least `n` zeroed counters.
    pub(super) fn gn_counters(&self, n: usize) -> Result<Arc<CachedBuf<D>>> {
        let mut bufs = self.gn_counts.bufs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((len, buf)) = bufs.last() {
            if *len >= n {
                return Ok(buf.clone());
            }
        }
        let len = n.max(MIN_COUNTERS).next_power_of_two();
        let buf = Arc::new(self.dev.eager(|| self.dev.alloc_zeros(len * 4))?);
        bufs.push((len, buf.clone()));
        Ok(buf)
    }

    /// Drops the counters (`clear_graphs`: no recorded forward reads them any more); the next
    /// fold makes new ones.
    pub(super) fn release_gn_counters(&self) {
        let bufs = std::mem::take(&mut *self.gn_counts.bufs.lock().unwrap_or_else(|p| p.into_inner()));
        drop(bufs);
    }

    /// group_norm_conv2d as group_norm_coefs_f32 + a normalising conv; the two ops where there is
    /// nothing to normalise, for a depthwise conv, or with the fold off.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn group_norm_conv2d_folded(
        &self,
        x: &T<D>,
        gamma: &T<D>,
        beta: &T<D>,
        emb: Option<&T<D>>,
        gn: &GroupNormGeom,
        w: &T<D>,
        bias: Option<&T<D>>,
        res: Option<&T<D>>,
        g: &Conv2dGeom,
        p: Precision,
    ) -> Result<T<D>> {
        let unfolded = || crate::backend::compute::group_norm_then_conv2d(self, x, gamma, beta, emb, gn, w, bias, res, g, p);
        if g.depthwise() || !fold_enabled() {
            return unfolded();
        }
        match self.gn_records(x, gamma, beta, emb, gn)? {
            Some(coef) => self.conv2d_norm(x, &coef, gn.silu != 0, w, bias, res, g, p),
            None => unfolded(),
        }
    }

    /// x's records {x0, mean, 1/σ, a, bb, 0, 0, 0} per (image, channel) for the norm `gn` (one
    /// group_norm_coefs_f32 launch), in the decomposition group_norm uses (one block per group
    /// where it would fuse, else its split), so a conv normalising by them gives group_norm →
    /// conv2d's values bit for bit. None where there is nothing to normalise.
    pub(super) fn gn_records(&self, x: &T<D>, gamma: &T<D>, beta: &T<D>, emb: Option<&T<D>>, gn: &GroupNormGeom) -> Result<Option<T<D>>> {
        let len = gn.c() / gn.groups() * gn.s();
        let (split, cfg, blocks) = match (norm_split::fused(gn), norm_split::plan(gn)) {
            (Some(f), _) => (GroupNormSplit { splits: 1, chunk: len as i32 }, LaunchCfg { smem_bytes: 0, ..f }, f.grid.0 as usize),
            (None, Some(p)) => (p.split, p.cfg, p.blocks),
            (None, None) => return Ok(None),
        };
        let (n, c) = (gn.n(), gn.c());
        // scale and shift read in place from emb's columns (gn's stride and offsets), as group_norm_emb
        let (sc, sh) = emb.map_or((gamma, beta), |e| (e, e));
        let part = self.alloc(&[2 * blocks])?; // every entry written before it is read (unread with one chunk)
        let cnt = self.gn_counters(n * gn.groups())?;
        let coef = self.alloc(&[n, c, GN_PRE_FLOATS as usize])?; // every record written in full
        launch::group_norm_coefs_f32(&self.dev, &cfg, b(x), b(gamma), b(beta), b(sc), b(sh), b(&part), &*cnt, b(&coef), gn, &split)?;
        Ok(Some(coef))
    }

    /// conv2d (+ res) in `p` of x normalised by its records `coef` as the conv reads it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv2d_norm(&self, x: &T<D>, coef: &T<D>, silu: bool, w: &T<D>, bias: Option<&T<D>>, res: Option<&T<D>>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        match p {
            Precision::F32 => self.conv2d_norm_f32(x, coef, silu, w, bias, res, g),
            p => self.conv2d_norm_tc(x, coef, silu, w, bias, res, g, p),
        }
    }

    /// conv2d (+ res) of x normalised by `coef` in the f32 implicit GEMM's operand loader.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv2d_norm_f32(&self, x: &T<D>, coef: &T<D>, silu: bool, w: &T<D>, bias: Option<&T<D>>, res: Option<&T<D>>, g: &Conv2dGeom) -> Result<T<D>> {
        let y = self.alloc(&g.y_dims())?;
        if y.numel() == 0 {
            return Ok(y);
        }
        let bias = bias.unwrap_or(w); // unread when has_bias = 0
        let res_buf = res.unwrap_or(w); // unread when has_res = 0
        let cfg = igemm_cfg(g.og(), g.n() * g.ho() * g.wo(), g.groups());
        launch::conv2d_norm_f32(&self.dev, &cfg, b(x), b(coef), b(w), b(bias), b(res_buf), b(&y), g, silu as i32, res.is_some() as i32)?;
        Ok(y)
    }
}
