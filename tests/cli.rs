//! The `ran` binary: help, `info` (must work and explain CUDA's absence without panicking), and
//! plain messages when detect lacks what it needs.

use std::process::Command;

fn ran(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ran")).args(args).output().expect("run ran")
}

#[test]
fn help_lists_the_commands() {
    let o = ran(&["--help"]);
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("info") && s.contains("detect"), "{s}");
}

#[test]
fn info_reports_backends_and_cuda_state() {
    let o = ran(&["info"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("cpu") && s.contains("available"), "{s}");
    let cuda_line = s.lines().find(|l| l.trim_start().starts_with("cuda")).expect("a cuda line");
    // either a driver was found or the reason it was not is given
    assert!(cuda_line.contains("driver") || cuda_line.contains("libcuda"), "{cuda_line}");
}

#[test]
fn detect_says_plainly_what_is_missing() {
    let o = ran(&["detect", "--demo"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("not shipped yet") && !e.contains("panicked"), "{e}");
    let o = ran(&["detect", "x.png"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--model") && !e.contains("panicked"), "{e}");
}
