//! Where the tests find the `ran` binary and the repository's files. Prebuilt test binaries run on
//! another host (benches/gpu.sh on a GPU machine with no Rust), where the build machine's paths do
//! not exist: the environment names them there, and when it is unset the build-time paths apply,
//! so `cargo test` is unchanged.
//!
//! - `RAN_BIN`: the `ran` executable (default: the one cargo built for this test run);
//! - `RAN_DATA_ROOT`: a folder laid out as the checkout — `tests/fixtures/`, `examples/demo/`,
//!   `weights/demo/` (default: the checkout these tests were built from);
//! - `RAN_FIXTURES_DIR`: the fixtures folder alone (default: `RAN_DATA_ROOT/tests/fixtures`).
#![allow(dead_code)]

use std::path::PathBuf;

/// The `ran` executable the CLI tests run.
pub fn ran_bin() -> PathBuf {
    match std::env::var_os("RAN_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_ran")),
    }
}

/// A command running `ran_bin()`.
pub fn ran_command() -> std::process::Command {
    std::process::Command::new(ran_bin())
}

/// `rel` (a path relative to the checkout's root, e.g. `examples/demo`) under `RAN_DATA_ROOT`.
pub fn repo_path(rel: &str) -> PathBuf {
    let root = std::env::var_os("RAN_DATA_ROOT").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    root.join(rel)
}

/// tests/fixtures/NAME, or NAME under `RAN_FIXTURES_DIR`.
pub fn fixture_path(name: &str) -> PathBuf {
    match std::env::var_os("RAN_FIXTURES_DIR") {
        Some(d) => PathBuf::from(d).join(name),
        None => repo_path("tests/fixtures").join(name),
    }
}
