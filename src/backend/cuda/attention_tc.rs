//! Flash attention on the tensor cores (kernels/attention_flash_tc.cu), not the default path: q,
//! k, v and the softmax weights rounded to bf16 or f16, f32 softmax and accumulators. Shapes the
//! kernel cannot take, and `Precision::F32`/`Tf32`, take the f32 flash kernel.

use super::device::{Device, LaunchCfg};
use super::{b, ew, i, launch, CudaBackend, T};
use crate::backend::Compute;
use crate::ops::attention::AttentionGeom;
use crate::ops::contract::{FTC_BQ, FTC_LDS, FTC_MAX_D, FTC_THREADS};
use crate::ops::precision::Precision;
use crate::Result;

/// Whether `attention_legacy_tc` runs head dim `d` on the tensor cores: whole k16 steps of mma
/// over the channels, at most `FTC_MAX_D` of them (the output fragments live in registers).
pub fn attention_tc_supported(g: &AttentionGeom) -> bool {
    g.d > 0 && g.d % 16 == 0 && g.d <= FTC_MAX_D as usize
}

/// Dynamic shared memory of the kernel: Q and two stages of K and V, [d][FTC_LDS] 16-bit each.
pub fn attention_tc_smem_bytes(d: usize) -> u32 {
    (5 * d * FTC_LDS as usize * 2) as u32
}

impl<D: Device> CudaBackend<D> {
    /// guided-diffusion's legacy QKV attention with q, k, v rounded to `p` (bf16 or f16, nearest
    /// even) and P = exp(s − m) rounded to `p` before the PV product; everything else f32.
    pub fn attention_legacy_tc(&self, qkv: &T<D>, g: &AttentionGeom, p: Precision) -> Result<T<D>> {
        let f16 = match p {
            Precision::Bf16 => false,
            Precision::F16 => true,
            Precision::F32 | Precision::Tf32 => return Compute::attention_legacy(self, qkv, g),
        };
        if !attention_tc_supported(g) || g.n * g.heads * g.t == 0 {
            return Compute::attention_legacy(self, qkv, g);
        }
        let (bh, t) = (g.n * g.heads, g.t);
        let tp = t.next_multiple_of(8);
        let rows = bh * 3 * g.d;
        let scratch = self.dev.alloc(rows * tp * 2)?; // every element written, the padding as 0
        let cast_cfg = ew(rows * tp);
        if f16 {
            launch::cast_qkv_pad_f16(&self.dev, &cast_cfg, b(qkv), &scratch, i(rows), i(t), i(tp))?;
        } else {
            launch::cast_qkv_pad_bf16(&self.dev, &cast_cfg, b(qkv), &scratch, i(rows), i(t), i(tp))?;
        }
        let y = self.alloc(&g.y_dims(qkv.shape()))?;
        let cfg = LaunchCfg { grid: (t.div_ceil(FTC_BQ as usize) as u32, bh as u32, 1), block: (FTC_THREADS, 1, 1), smem_bytes: attention_tc_smem_bytes(g.d) };
        let kernel = match (f16, g.d <= 64) {
            (false, true) => "attention_flash_tc_bf16_d64",
            (false, false) => "attention_flash_tc_bf16_d128",
            (true, true) => "attention_flash_tc_f16_d64",
            (true, false) => "attention_flash_tc_f16_d128",
        };
        let (yb, d, t, tp) = (b(&y), i(g.d), i(t), i(tp));
        match kernel {
            "attention_flash_tc_bf16_d64" => launch::attention_flash_tc_bf16_d64(&self.dev, &cfg, &scratch, yb, d, t, tp)?,
            "attention_flash_tc_bf16_d128" => launch::attention_flash_tc_bf16_d128(&self.dev, &cfg, &scratch, yb, d, t, tp)?,
            "attention_flash_tc_f16_d64" => launch::attention_flash_tc_f16_d64(&self.dev, &cfg, &scratch, yb, d, t, tp)?,
            _ => launch::attention_flash_tc_f16_d128(&self.dev, &cfg, &scratch, yb, d, t, tp)?,
        }
        Ok(y)
    }
}
