//! `ran verify` on a kind=train_step reference (tests/fixtures/train_step.safetensors, made with
//! upstream guided_diffusion + torch.optim.AdamW in float64 by
//! tools/reference/make_train_step_fixtures.py), as a user runs it: one training step of the
//! fixture's model on its inputs, on the CPU backend and on the CUDA kernels over the emulator.

mod common;
use common::fixture_path;
use ran::io::safetensors::{write_f32, SafeTensors};

/// Observed (CPU and emulator): loss terms ≤ 4.8e-7 abs (vb, f32 sums of ~1e0 terms), gradients
/// ≤ 3.0e-7 abs on elements of 3e-6…0.13, weights after AdamW / EMA ≤ 1.2e-7 abs (one f32 ulp of
/// O(1) weights). AdamW's first step moves each weight by ≈ lr·sign(g) = 1e-3, so a wrong-signed
/// gradient is ~1000× over ATOL; the gradient rows catch a wrong magnitude.
const ATOL: &str = "1e-6";
const RTOL: &str = "1e-5";

fn ran(args: &[&str]) -> (i32, String, String) {
    let o = common::ran_command().args(args).output().expect("run ran");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn verify_passes_on(device: &str) {
    let f = fixture_path("train_step.safetensors").display().to_string();
    let (rc, so, se) = ran(&["verify", "--model", &f, "--reference", &f, "--atol", ATOL, "--rtol", RTOL, "--device", device]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(!so.contains("FAIL"), "{so}");
    // every output is compared: a row that silently vanished would pass the lines above
    for row in ["mse", "vb", "feat_mse", "loss", "grad input_blocks.0.0.weight", "grad middle_block.1.qkv.weight", "grad feat_rec1.2.weight", "after AdamW (387 tensors", "after EMA (387 tensors"] {
        assert!(so.lines().any(|l| l.starts_with(row) && l.ends_with("pass")), "no passing row `{row}`:\n{so}");
    }
    assert_eq!(so.lines().filter(|l| l.starts_with("grad ")).count(), 10, "{so}");
}

#[test]
fn verify_a_training_step_on_cpu() {
    verify_passes_on("cpu");
    // an impossible tolerance fails with exit status 1
    let f = fixture_path("train_step.safetensors").display().to_string();
    let (rc, so, _) = ran(&["verify", "--model", &f, "--reference", &f, "--atol", "0", "--rtol", "0", "--device", "cpu"]);
    assert_eq!(rc, 1, "{so}");
    assert!(so.contains("FAIL"), "{so}");
}

#[test]
fn verify_a_training_step_on_the_emulated_gpu() {
    verify_passes_on("emulator");
}

/// A train_step reference without its optimiser settings is refused, naming the file and the key.
#[test]
fn a_reference_without_hyper_is_refused() {
    let f = fixture_path("train_step.safetensors");
    let st = SafeTensors::open(&f).unwrap();
    let names: Vec<String> = st.names().map(str::to_string).collect();
    let vals: Vec<(Vec<usize>, Vec<f32>)> = names.iter().map(|n| st.get(n).unwrap()).collect();
    let entries: Vec<(&str, &[usize], &[f32])> = names.iter().zip(&vals).map(|(n, (s, v))| (n.as_str(), &s[..], &v[..])).collect();
    let mut meta = st.metadata().clone();
    meta.remove("hyper");
    let dir = std::env::temp_dir().join(format!("ran-verify-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let r = dir.join("no_hyper.safetensors");
    write_f32(&r, &entries, &meta).unwrap();
    let (rc, so, se) = ran(&["verify", "--model", &f.display().to_string(), "--reference", &r.display().to_string(), "--device", "cpu"]);
    assert_eq!(rc, 2, "{so}{se}");
    assert!(se.contains("no_hyper.safetensors") && se.contains("hyper"), "{se}");
    std::fs::remove_dir_all(&dir).ok();
}
