//! Tensor-core paths of the CUDA backend, not the default yet (issue #14): `linear` with bf16
//! operands on mma.sync (kernels/linear_tc.cu). Shapes the kernel cannot take fall back to the
//! f32 kernel, never to a wrong answer.

use super::cached::CachedBuf;
use super::device::{Device, LaunchCfg};
use super::{b, ew, i, launch, CudaBackend, T};
use crate::backend::Compute as _;
use crate::ops::contract::{TC_SMEM_BYTES, TC_THREADS, TC_TM, TC_TN};
use crate::ops::conv::LinearGeom;
use crate::Result;

/// Whether `linear_tc_bf16` runs this shape on the tensor cores: the kernel's 16-byte cp.async
/// rows need `fin` to be a multiple of 8 bf16.
pub fn linear_tc_bf16_supported(g: &LinearGeom) -> bool {
    g.fin > 0 && g.fin % 8 == 0
}

impl<D: Device> CudaBackend<D> {
    /// y = x·wᵀ + bias with x and w rounded to bf16 (nearest even), products summed in f32 on
    /// the tensor cores. Other shapes (see `linear_tc_bf16_supported`) take the f32 kernel.
    pub fn linear_tc_bf16(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>) -> Result<T<D>> {
        let g = crate::ops::conv::linear(x.shape(), w.shape(), bias.map(|t| t.shape()))?;
        if !linear_tc_bf16_supported(&g) || g.rows == 0 || g.fout == 0 {
            return self.linear(x, w, bias, &g);
        }
        let xb = self.to_bf16(x)?;
        let wb = self.to_bf16(w)?;
        let y = self.alloc(&[g.rows, g.fout])?;
        let cfg = LaunchCfg { grid: (g.fout.div_ceil(TC_TN as usize) as u32, g.rows.div_ceil(TC_TM as usize) as u32, 1), block: (TC_THREADS, 1, 1), smem_bytes: TC_SMEM_BYTES };
        let has_bias = bias.is_some() as i32;
        let bias = bias.unwrap_or(x); // a dummy the kernel never reads without has_bias
        launch::linear_tc_bf16(&self.dev, &cfg, &xb, &wb, b(bias), b(&y), i(g.rows), i(g.fout), i(g.fin), has_bias)?;
        Ok(y)
    }

    /// The bf16 bits of a tensor's values, in a scratch device buffer.
    fn to_bf16(&self, t: &T<D>) -> Result<CachedBuf<D>> {
        let n = t.numel();
        let out = self.dev.alloc(n * 2)?; // the cast writes every element
        launch::cast_f32_to_bf16(&self.dev, &ew(n), b(t), &out, n as i64)?;
        Ok(out)
    }
}
