//! What this machine offers: CPU features for the CPU backend, and whether a CUDA driver can be
//! loaded (probed with dlopen, so a machine without libcuda never crashes, it is told why).

use std::fmt::Write;

pub struct CudaProbe {
    pub available: bool,
    pub detail: String,
}

/// Tries libcuda.so.1 / libcuda.so, then cuInit and cuDeviceGetCount.
pub fn probe_cuda() -> CudaProbe {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuCount = unsafe extern "C" fn(*mut i32) -> i32;
    type CuVer = unsafe extern "C" fn(*mut i32) -> i32;
    let mut last_err = String::new();
    for name in ["libcuda.so.1", "libcuda.so"] {
        // SAFETY: loading the NVIDIA driver library runs its initialisers, which is what any CUDA
        // program does; symbols are called with their documented C signatures.
        let lib = match unsafe { libloading::Library::new(name) } {
            Ok(l) => l,
            Err(e) => {
                last_err = e.to_string();
                continue;
            }
        };
        unsafe {
            let (Ok(init), Ok(count), Ok(ver)) = (lib.get::<CuInit>(b"cuInit"), lib.get::<CuCount>(b"cuDeviceGetCount"), lib.get::<CuVer>(b"cuDriverGetVersion")) else {
                return CudaProbe { available: false, detail: format!("{name} loaded but lacks the driver API symbols") };
            };
            let rc = init(0);
            if rc != 0 {
                return CudaProbe { available: false, detail: format!("{name} found but cuInit failed with CUDA error {rc} (no usable GPU or driver problem)") };
            }
            let (mut n, mut v) = (0i32, 0i32);
            count(&mut n);
            ver(&mut v);
            return CudaProbe { available: n > 0, detail: format!("driver {}.{} with {n} device(s) via {name}", v / 1000, (v % 1000) / 10) };
        }
    }
    CudaProbe { available: false, detail: format!("no CUDA driver library (libcuda.so.1) on this machine: {last_err}") }
}

pub fn cpu_features() -> String {
    let mut s = String::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [("avx2", std::arch::is_x86_feature_detected!("avx2")), ("fma", std::arch::is_x86_feature_detected!("fma")), ("avx512f", std::arch::is_x86_feature_detected!("avx512f"))] {
            if on {
                let _ = write!(s, "{name} ");
            }
        }
    }
    s.trim_end().to_string()
}

/// Peak resident memory of this process in MB (VmHWM), where /proc tells it.
pub fn peak_rss_mb() -> Option<f64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
}
