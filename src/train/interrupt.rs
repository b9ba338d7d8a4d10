//! Ctrl-C during training: the first SIGINT sets a flag the loop checks between steps (it then
//! writes a checkpoint and stops); a second one ends the process at once, as usual.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_sigint(_: libc::c_int) {
    // only async-signal-safe calls here: an atomic swap and _exit
    if REQUESTED.swap(true, Ordering::SeqCst) {
        unsafe { libc::_exit(130) };
    }
}

/// Installs the handler (once per process; later calls do nothing new).
pub fn install() {
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}

/// Whether Ctrl-C was pressed since the handler was installed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
