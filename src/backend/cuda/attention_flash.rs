//! Flash attention on the CUDA backend, f32 (kernels/attention_flash.cu): the default path of
//! `attention_legacy` for head dims up to `FA_MAX_D`; larger ones take the one-query-per-block
//! kernel of attention.cu.

use super::device::{Device, LaunchCfg};
use super::{allow_smem, b, i, launch, CudaBackend, T};
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
            ..=32 => {
                allow_smem(&self.dev, "attention_flash_f32_d32", &cfg)?;
                launch::attention_flash_f32_d32(&self.dev, &cfg, qkv, y, d, t)
            }
            33..=64 => {
                allow_smem(&self.dev, "attention_flash_f32_d64", &cfg)?;
                launch::attention_flash_f32_d64(&self.dev, &cfg, qkv, y, d, t)
            }
            _ => {
                allow_smem(&self.dev, "attention_flash_f32_d128", &cfg)?;
                launch::attention_flash_f32_d128(&self.dev, &cfg, qkv, y, d, t)
            }
        }
    }
}
