//! The process's heap policy: large buffers stay in the heap when freed, for the next op to reuse.
//!
//! glibc serves every allocation above 32 MB (its largest dynamic mmap threshold) with a fresh
//! mmap and unmaps it on free, so each big activation of a forward is page-faulted in and zeroed
//! by the kernel again: at the paper's 553M UNet at 256² that was 2.2 s of system time per forward
//! (of ~11 s), and 29.5 s in one detect-index (benches/RESULTS.md). With mmap off and the trim
//! threshold at its maximum, freed buffers return to the heap's free lists instead; peak RSS grew
//! by 61 MB (of 4.1 GB) where this was measured. The CPU buffer pool's default cap drops to
//! 128 MiB with it (the heap now keeps the large buffers; a 512 MiB pool on top only raised the
//! 553M detect's peak, 2437 → 2565 MiB). `RAN_HEAP=system` keeps glibc's defaults and the 512 MiB
//! pool (for comparison). Only on glibc; elsewhere nothing to do.

/// Applies the policy once, at the start of the `ran` command (not in the library's callers).
pub fn keep_freed_buffers() {
    if std::env::var("RAN_HEAP").is_ok_and(|v| v == "system") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
    crate::backend::cpu::buffers::set_default_cap_mb(crate::backend::cpu::buffers::POOL_MB_WITH_KEEPING_HEAP);
}
