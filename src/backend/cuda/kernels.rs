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

include!(concat!(env!("OUT_DIR"), "/kernels_embedded.rs"));

/// The file that declares `kernel`.
pub fn file_of(kernel: &str) -> Option<&'static KernelSource> {
    KERNEL_FILES.iter().find(|f| f.kernels.contains(&kernel))
}

// The headers kernels include (every kernels/*.cuh), for NVRTC at run time: `HEADERS`.
include!(concat!(env!("OUT_DIR"), "/kernel_headers.rs"));
