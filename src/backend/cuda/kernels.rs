//! The kernel sources and, where NVRTC was found at build time, their PTX and CUBINs, embedded by
//! build.rs (see build_nvrtc.rs).

/// One kernels/*.cu file.
pub struct KernelSource {
    pub file: &'static str,
    pub kernels: &'static [&'static str],
    pub source: &'static str,
    /// PTX for the oldest supported virtual architecture (JIT-compiled by newer drivers).
    pub ptx: Option<&'static str>,
    /// (sm_XY, cubin) pairs.
    pub cubins: &'static [(u32, &'static [u8])],
}

/// What a launch of one kernel needs besides its configuration: the driver refuses a launch whose
/// registers (per thread × threads) or shared memory (static + dynamic) exceed the SM's, or whose
/// block passes the kernel's `__launch_bounds__`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub kernel: &'static str,
    pub registers: u32,
    pub static_smem: u32,
    /// `__launch_bounds__`' threads per block (0: none)
    pub max_threads: u32,
}

include!(concat!(env!("OUT_DIR"), "/kernels_embedded.rs"));

/// ptxas's figures for `kernel` (sm_90); `None` when NVRTC was absent at build time.
pub fn resources_of(kernel: &str) -> Option<KernelResources> {
    KERNEL_RESOURCES.iter().find(|r| r.kernel == kernel).copied()
}

/// The file that declares `kernel`.
pub fn file_of(kernel: &str) -> Option<&'static KernelSource> {
    KERNEL_FILES.iter().find(|f| f.kernels.contains(&kernel))
}

// The headers kernels include (every kernels/*.cuh), for NVRTC at run time: `HEADERS`.
include!(concat!(env!("OUT_DIR"), "/kernel_headers.rs"));
