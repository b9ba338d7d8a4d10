//! What this machine offers: CPU features for the CPU backend, and whether a CUDA driver can be
//! loaded (probed with dlopen, so a machine without libcuda never crashes, it is told why).

use std::fmt::Write;

pub struct CudaProbe {
    pub available: bool,
    pub detail: String,
    /// cuDriverGetVersion's value (12040 is CUDA 12.4) where the library answered
    pub driver_version: Option<i32>,
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
                return CudaProbe { available: false, detail: format!("{name} loaded but lacks the driver API symbols"), driver_version: None };
            };
            let mut v = 0i32;
            let version = (ver(&mut v) == 0).then_some(v);
            let rc = init(0);
            if rc != 0 {
                return CudaProbe { available: false, detail: format!("{name} found but cuInit failed with CUDA error {rc} (no usable GPU or driver problem)"), driver_version: version };
            }
            let mut n = 0i32;
            count(&mut n);
            return CudaProbe { available: n > 0, detail: format!("driver {}.{} with {n} device(s) via {name}", v / 1000, (v % 1000) / 10), driver_version: version };
        }
    }
    CudaProbe { available: false, detail: format!("no CUDA driver library (libcuda.so.1) on this machine: {last_err}"), driver_version: None }
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

/// Memory the machine can still give this process, in bytes: MemAvailable of /proc/meminfo, or
/// less where an address-space limit (ulimit -v) leaves less room above what the process already
/// maps; None where the system tells neither.
pub fn mem_available_bytes() -> Option<u64> {
    let field = |text: &str, key: &str| text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok());
    let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| field(&s, "MemAvailable:")).map(|kb| kb * 1024);
    // "Max address space  <soft> <hard> bytes" (soft may be "unlimited")
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Max address space")).and_then(|l| l.split_whitespace().nth(3)).and_then(|v| v.parse::<u64>().ok()));
    let mapped = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| field(&s, "VmSize:")).map(|kb| kb * 1024).unwrap_or(0);
    match (avail, limit.map(|l| l.saturating_sub(mapped))) {
        (Some(a), Some(l)) => Some(a.min(l)),
        (a, l) => a.or(l),
    }
}

/// Refuses a job whose memory estimate exceeds what the machine has available (an abort halfway
/// through, or a machine swapping to a halt, is worse than a clear refusal up front). `what` names
/// the job, `reduce` says what to lower. RAN_IGNORE_MEMORY_CHECK=1 skips it (the estimate is an
/// upper bound; a user who knows better may try).
pub fn check_memory(what: &str, need_bytes: u64, reduce: &str) -> crate::Result<()> {
    let Some(avail) = mem_available_bytes() else { return Ok(()) };
    if need_bytes <= avail || std::env::var("RAN_IGNORE_MEMORY_CHECK").is_ok_and(|v| v == "1") {
        return Ok(());
    }
    Err(crate::Error::InvalidArgument(format!(
        "{what} needs about {:.1} GB of memory but {:.1} GB are available: reduce {reduce} (or set RAN_IGNORE_MEMORY_CHECK=1 to try anyway)",
        need_bytes as f64 / 1e9,
        avail as f64 / 1e9
    )))
}

#[cfg(test)]
mod tests {
    /// A job far beyond any machine is refused with the sizes and what to reduce; a small one passes.
    #[test]
    fn memory_check_refuses_what_cannot_fit() {
        if super::mem_available_bytes().is_none() {
            return; // not Linux: nothing to check against (the check then lets every job run)
        }
        let e = super::check_memory("fit-padim", 1 << 60, "--dims").unwrap_err().to_string();
        assert!(e.contains("fit-padim needs about") && e.contains("GB are available") && e.contains("--dims"), "{e}");
        assert!(super::check_memory("fit-padim", 1 << 20, "--dims").is_ok());
    }
}
