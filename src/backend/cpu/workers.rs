//! Running a whole function of ops on rayon's worker threads (`Backend::on_workers`).
//!
//! Called from a thread outside the pool (the main thread), every parallel loop of every op is
//! injected into the pool: the caller blocks on a latch, a sleeping worker is woken, it splits
//! the loop and wakes the other, and the caller is woken at the end — three cross-thread wake-ups
//! per op, which for EfficientNet's ~250 small ops a forward (16² planes, squeeze-excite vectors)
//! is a large part of the time. Run on a worker, the op sequence continues on that worker and each
//! loop splits through the worker's own deque, where an idle worker that has not gone to sleep yet
//! takes the other half. The values are the same: only the thread that runs the sequential part
//! changes.
//!
//! **Off by default**: on the loaded 2-core dev machine (load 12–15) every B4 forward on the
//! workers took ≥ 0.67 s against ≥ 0.12 s from the main thread, at the same CPU time
//! (benches/RESULTS.md), and no quiet machine was there to show the gain it is for.
//! `RAN_CPU_ON_WORKERS=1` (read once) turns it on; otherwise `f` runs on the calling thread.

use std::sync::OnceLock;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("RAN_CPU_ON_WORKERS").is_ok_and(|v| v.trim() == "1"))
}

/// `f()` on a worker of the current rayon pool (the calling thread when it already is one).
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if !enabled() || rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}
