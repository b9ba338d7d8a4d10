//! What the CUDA backend needs from a device: byte buffers and launching a kernel by name with
//! cuLaunchKernel's contract. Two devices implement it — the real GPU (cudarc) and the CPU
//! emulator of CUDA — so every line of the backend above this trait (shape checks, launch
//! configurations, argument packing) runs in the test suite even without a GPU.

use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchCfg {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub smem_bytes: u32,
}

/// One kernel parameter. `Pod` carries a `#[repr(C)]` struct by value (its bytes).
pub enum Arg<'a, B> {
    Buf(&'a B),
    I32(i32),
    I64(i64),
    F32(f32),
    Pod(&'a [u8]),
}

pub trait Device: Send + Sync + 'static {
    type Buf: Send + Sync;
    /// Kind for messages ("cuda", "cuda-emulator").
    fn kind(&self) -> &'static str;
    fn describe(&self) -> String;
    fn alloc_zeros(&self, bytes: usize) -> Result<Self::Buf>;
    fn upload(&self, bytes: &[u8]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf, out: &mut [u8]) -> Result<()>;
    fn launch(&self, kernel: &'static str, cfg: &LaunchCfg, args: &[Arg<'_, Self::Buf>]) -> Result<()>;
    /// Lets later launches of `kernel` use up to `bytes` of dynamic shared memory; launches above
    /// 48 KiB (`SMEM_DEFAULT_LIMIT`) fail without it (cuFuncSetAttribute with
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; the emulator enforces the same rule).
    fn set_max_dynamic_smem(&self, kernel: &'static str, bytes: u32) -> Result<()>;
}
