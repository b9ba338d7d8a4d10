//! What the CUDA backend needs from a device: byte buffers and launching a kernel by name with
//! cuLaunchKernel's contract. Two devices implement it — the real GPU (cudarc) and the CPU
//! emulator of CUDA — so every line of the backend above this trait (shape checks, launch
//! configurations, argument packing, the caching allocator of `cached`) runs in the test suite
//! even without a GPU.

use crate::{Error, Result};

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

/// One step of a graph (backend/cuda/graph.rs): what a recorded forward issues, in stream order.
pub enum Node<'a, B> {
    Launch { kernel: &'static str, cfg: LaunchCfg, args: Vec<Arg<'a, B>> },
    Memset { buf: &'a B, bytes: usize },
}

pub trait Device: Send + Sync + 'static {
    type Buf: Send + Sync;
    /// An instantiated graph (cudaGraphExec on the GPU; nothing in the emulator, which replays
    /// the node list it is given).
    type Graph: Send + Sync;
    /// Kind for messages ("cuda", "cuda-emulator").
    fn kind(&self) -> &'static str;
    fn describe(&self) -> String;
    /// A fresh buffer of at least `bytes` bytes whose contents are unspecified (the emulator
    /// fills it with quiet NaNs, so a kernel that relies on zeros it did not ask for fails);
    /// `Ok(None)` when the device is out of memory, so a caller may free cached memory and retry.
    fn try_alloc(&self, bytes: usize) -> Result<Option<Self::Buf>>;
    /// Bytes a buffer holds (at least what was asked).
    fn buf_bytes(&self, buf: &Self::Buf) -> usize;
    /// Sets the first `bytes` bytes of `buf` to zero (cuMemsetD8Async on the device's stream).
    fn memset_zeros(&self, buf: &Self::Buf, bytes: usize) -> Result<()>;
    /// Copies `bytes` to the start of `buf` (cuMemcpyHtoDAsync; the source may be dropped on return).
    fn write(&self, buf: &Self::Buf, bytes: &[u8]) -> Result<()>;
    /// Copies the first `out.len()` bytes of `buf` to the host, after all earlier work.
    fn download(&self, buf: &Self::Buf, out: &mut [u8]) -> Result<()>;
    fn launch(&self, kernel: &'static str, cfg: &LaunchCfg, args: &[Arg<'_, Self::Buf>]) -> Result<()>;
    /// Lets later launches of `kernel` use up to `bytes` of dynamic shared memory; launches above
    /// 48 KiB (`SMEM_DEFAULT_LIMIT`) fail without it (cuFuncSetAttribute with
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; the emulator enforces the same rule).
    fn set_max_dynamic_smem(&self, kernel: &'static str, bytes: u32) -> Result<()>;
    /// The kernel's static `__shared__` bytes (CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES): static plus
    /// dynamic above 48 KiB needs the opt-in too.
    fn static_smem(&self, kernel: &'static str) -> Result<u32>;
    /// Copies the first `bytes` bytes of `src` to `dst` (cuMemcpyDtoDAsync on the device's stream).
    fn copy(&self, src: &Self::Buf, dst: &Self::Buf, bytes: usize) -> Result<()>;
    /// Instantiates a graph of `nodes` (none of them has run): on the GPU a stream capture of
    /// them, then cuGraphInstantiate.
    fn build_graph(&self, nodes: &[Node<'_, Self::Buf>]) -> Result<Self::Graph>;
    /// Runs a graph on the device's stream (cuGraphLaunch: one driver call); `nodes` are the
    /// ones it was built from (the emulator replays them, in order).
    fn launch_graph(&self, graph: &Self::Graph, nodes: &[Node<'_, Self::Buf>]) -> Result<()>;
    /// Waits for all work on the device's stream; an asynchronous fault surfaces here.
    fn synchronize(&self) -> Result<()>;
    /// (free, total) bytes of device memory, for out-of-memory messages.
    fn mem_info(&self) -> Option<(usize, usize)>;
    /// The byte size a cached buffer for `bytes` is kept at (its size class). The emulator keeps
    /// exact sizes so its guard page still sits right after the last byte asked for.
    fn size_class(&self, bytes: usize) -> usize {
        bytes
    }
    /// Marks a reused buffer's contents as undefined again (the emulator refills its NaNs; a GPU
    /// leaves the previous contents, which is what "undefined" means there).
    fn poison(&self, _buf: &Self::Buf) {}

    /// `try_alloc`, with out-of-memory as a clear error.
    fn alloc(&self, bytes: usize) -> Result<Self::Buf> {
        self.try_alloc(bytes)?.ok_or_else(|| out_of_memory(self, bytes, 0))
    }
    fn alloc_zeros(&self, bytes: usize) -> Result<Self::Buf> {
        let b = self.alloc(bytes)?;
        self.memset_zeros(&b, bytes)?;
        Ok(b)
    }
    fn upload(&self, bytes: &[u8]) -> Result<Self::Buf> {
        let b = self.alloc(bytes.len())?;
        self.write(&b, bytes)?;
        Ok(b)
    }
}

/// The out-of-memory error: what was asked, what the device has, what to reduce.
pub fn out_of_memory<D: Device + ?Sized>(dev: &D, bytes: usize, cached: usize) -> Error {
    let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
    let have = match dev.mem_info() {
        Some((free, total)) => format!("{:.1} MiB free of {:.1} MiB", mib(free), mib(total)),
        None => "free memory unknown".into(),
    };
    let cache = if cached > 0 { format!(", {:.1} MiB still cached after trimming", mib(cached)) } else { String::new() };
    Error::Backend {
        backend: dev.kind(),
        msg: format!("out of device memory allocating {bytes} bytes ({:.1} MiB; {have}{cache}): reduce the batch (--batch) or use a lower precision (bf16)", mib(bytes)),
    }
}
