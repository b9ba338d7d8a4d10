//! Flash attention on the CUDA backend, f32 (kernels/attention_flash.cu): the default path of
//! `attention_legacy` for head dims up to `FA_MAX_D`; larger ones take the one-query-per-block
//! kernel of attention.cu.

use super::device::{Device, LaunchCfg};
use super::{b, i, launch, CudaBackend, T};
use crate::ops::attention::AttentionGeom;
use crate::ops::contract::{FA_BK, FA_BQ, FA_LDK, FA_LDP, FA_MAX_D, FA_THREADS};
use crate::Result;

/// Dynamic shared memory of attention_flash.cu for head dim `d`: Q [d][FA_BQ], two stages of K
/// and V [d][FA_LDK], P [FA_BK][FA_LDP], f32.
pub fn attention_flash_smem_bytes(d: usize) -> u32 {
    (4 * (d * FA_BQ as usize + 4 * d * FA_LDK as usize + FA_BK as usize * FA_LDP as usize)) as u32
}

/// Whether the flash kernels take head dim `d`.
pub fn attention_flash_supported(g: &AttentionGeom) -> bool {
    g.d > 0 && g.d <= FA_MAX_D as usize
}

impl<D: Device> CudaBackend<D> {
    /// y [N, H·d, T] = softmax(qᵀk·d^-½)·vᵀ per head, f32, one launch; `g` supported.
    pub(super) fn attention_flash_f32(&self, qkv: &T<D>, y: &T<D>, g: &AttentionGeom) -> Result<()> {
        let cfg = LaunchCfg { grid: (g.t.div_ceil(FA_BQ as usize) as u32, (g.n * g.heads) as u32, 1), block: (FA_THREADS, 1, 1), smem_bytes: attention_flash_smem_bytes(g.d) };
        let (qkv, y, d, t) = (b(qkv), b(y), i(g.d), i(g.t));
        match g.d {
            ..=32 => launch::attention_flash_f32_d32(&self.dev, &cfg, qkv, y, d, t),
            33..=64 => launch::attention_flash_f32_d64(&self.dev, &cfg, qkv, y, d, t),
            _ => launch::attention_flash_f32_d128(&self.dev, &cfg, qkv, y, d, t),
        }
    }
}

/// Dynamic shared memory of the backward's key-tile kernel: K, V [d][FA_LDK]; Q, gA [d][FA_LDP];
/// P, dS [FA_BQ][FA_LDK].
pub fn attention_flash_dkdv_smem_bytes(d: usize) -> u32 {
    (4 * (2 * d * FA_LDK as usize + 2 * d * FA_LDP as usize + 2 * FA_BQ as usize * FA_LDK as usize)) as u32
}

/// Dynamic shared memory of the backward's query-tile kernel: Q, gA [d][FA_BQ]; two stages of K
/// and V [d][FA_LDK]; dS [FA_BK][FA_LDP].
pub fn attention_flash_dq_smem_bytes(d: usize) -> u32 {
    (4 * (2 * d * FA_BQ as usize + 4 * d * FA_LDK as usize + FA_BK as usize * FA_LDP as usize)) as u32
}

impl<D: Device> CudaBackend<D> {
    /// g_qkv [N, 3·H·d, T] of the attention for gy [N, H·d, T], three launches: the forward's
    /// statistics (lse, δ = Σ_c gA·A per query), then gK, gV by key tile and gQ by query tile;
    /// every element written once by one thread. `g` supported.
    pub(super) fn attention_flash_x_backward_f32(&self, gy: &T<D>, qkv: &T<D>, gq: &T<D>, g: &AttentionGeom) -> Result<()> {
        let (bh, t) = (g.n * g.heads, g.t);
        let lse = self.dev.alloc_zeros(bh * t * 4)?;
        let delta = self.dev.alloc_zeros(bh * t * 4)?;
        let per_query = |smem| LaunchCfg { grid: (t.div_ceil(FA_BQ as usize) as u32, bh as u32, 1), block: (FA_THREADS, 1, 1), smem_bytes: smem };
        let stats = per_query(attention_flash_smem_bytes(g.d));
        let dq = per_query(attention_flash_dq_smem_bytes(g.d));
        let dkdv = LaunchCfg { grid: (t.div_ceil(FA_BK as usize) as u32, bh as u32, 1), block: (FA_THREADS, 1, 1), smem_bytes: attention_flash_dkdv_smem_bytes(g.d) };
        let (qkv, gy, gq, d, ti) = (b(qkv), b(gy), b(gq), i(g.d), i(t));
        let dev = &self.dev;
        match g.d {
            ..=32 => {
                launch::attention_flash_stats_f32_d32(dev, &stats, qkv, gy, &lse, &delta, d, ti)?;
                launch::attention_flash_dkdv_f32_d32(dev, &dkdv, qkv, gy, &lse, &delta, gq, d, ti)?;
                launch::attention_flash_dq_f32_d32(dev, &dq, qkv, gy, &lse, &delta, gq, d, ti)
            }
            33..=64 => {
                launch::attention_flash_stats_f32_d64(dev, &stats, qkv, gy, &lse, &delta, d, ti)?;
                launch::attention_flash_dkdv_f32_d64(dev, &dkdv, qkv, gy, &lse, &delta, gq, d, ti)?;
                launch::attention_flash_dq_f32_d64(dev, &dq, qkv, gy, &lse, &delta, gq, d, ti)
            }
            _ => {
                launch::attention_flash_stats_f32_d128(dev, &stats, qkv, gy, &lse, &delta, d, ti)?;
                launch::attention_flash_dkdv_f32_d128(dev, &dkdv, qkv, gy, &lse, &delta, gq, d, ti)?;
                launch::attention_flash_dq_f32_d128(dev, &dq, qkv, gy, &lse, &delta, gq, d, ti)
            }
        }
    }
}
