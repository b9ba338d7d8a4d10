//! `ran convert` + `ran verify` end to end, as a user runs them: a state_dict torch.save'd from
//! upstream's UNetModel is converted with its flags and verified against upstream's outputs
//! (kind=unet), and the full KL pipeline of a class-conditional learned-sigma model with the
//! feature head is verified against upstream's diffusion (kind=kl).

mod common;
use common::fixture_path;

fn ran(args: &[&str]) -> (i32, String, String) {
    let o = common::ran_command().args(args).output().expect("run ran");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn tmp(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("ran-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name).display().to_string()
}

#[test]
fn convert_then_verify_a_torch_checkpoint() {
    let pt = fixture_path("unet_tiny_pt.pt").display().to_string();
    let flags = std::fs::read_to_string(fixture_path("unet_tiny_pt.flags")).unwrap().trim().to_string();
    let reference = fixture_path("unet_guided_plain.safetensors").display().to_string();
    for dtype in ["f32", "f16"] {
        let out = tmp(&format!("tiny_{dtype}.safetensors"));
        let (rc, so, se) = ran(&["convert", "--checkpoint", &pt, "--flags", &flags, "--out", &out, "--dtype", dtype]);
        assert_eq!(rc, 0, "{so}{se}");
        assert!(so.contains("128 tensors"), "{so}");
        // the fixture's weights are float16-exact, so f16 storage loses nothing
        let (rc, so, se) = ran(&["verify", "--model", &out, "--reference", &reference, "--atol", "3e-5", "--rtol", "1e-4", "--device", "cpu"]);
        assert_eq!(rc, 0, "{so}{se}");
        assert!(so.contains("out") && so.contains("pass"), "{so}");
    }
    // an impossible tolerance fails with exit status 1
    let out = tmp("tiny_f32.safetensors");
    let (rc, so, _) = ran(&["verify", "--model", &out, "--reference", &reference, "--atol", "0", "--rtol", "0", "--device", "cpu"]);
    assert_eq!(rc, 1, "{so}");
    assert!(so.contains("FAIL"), "{so}");
}

#[test]
fn verify_the_kl_pipeline_and_the_feature_head() {
    let model = fixture_path("unet_guided_paperlike.safetensors").display().to_string();
    for (reference, outputs) in [("kl_paperlike.safetensors", ["kl", "pred_xstart"]), ("unet_guided_paperlike.safetensors", ["out", "feat"])] {
        let r = fixture_path(reference).display().to_string();
        let (rc, so, se) = ran(&["verify", "--model", &model, "--reference", &r, "--atol", "3e-5", "--rtol", "1e-3", "--device", "cpu"]);
        assert_eq!(rc, 0, "{so}{se}");
        for o in outputs {
            assert!(so.lines().any(|l| l.starts_with(o) && l.ends_with("pass")), "{o}: {so}");
        }
    }
}

#[test]
fn convert_refuses_wrong_flags_and_files() {
    let pt = fixture_path("unet_tiny_pt.pt").display().to_string();
    let flags = std::fs::read_to_string(fixture_path("unet_tiny_pt.flags")).unwrap().trim().replace("--num_res_blocks 1", "--num_res_blocks 2");
    let (rc, _, se) = ran(&["convert", "--checkpoint", &pt, "--flags", &flags, "--out", &tmp("x.safetensors")]);
    assert_eq!(rc, 2);
    assert!(se.contains("unet_tiny_pt.pt") && (se.contains("missing") || se.contains("expects")), "{se}");
    let (rc, _, se) = ran(&["convert", "--checkpoint", &pt, "--flags", "--bogus 1", "--out", &tmp("x.safetensors")]);
    assert_eq!(rc, 2);
    assert!(se.contains("unknown flag --bogus"), "{se}");
    let (rc, _, se) = ran(&["convert", "--checkpoint", "/nonexistent.pt", "--flags", "--image_size 16", "--out", &tmp("x.safetensors")]);
    assert_eq!(rc, 2);
    assert!(se.contains("/nonexistent.pt"), "{se}");
    let (rc, _, se) = ran(&["verify", "--model", &pt, "--reference", &pt, "--device", "cpu"]);
    assert_eq!(rc, 2, "{se}");
}

#[test]
fn verify_the_effnet_and_the_whole_detection() {
    let effnet_small = fixture_path("effnet_small.safetensors").display().to_string();
    let (rc, so, se) = ran(&["verify", "--model", &effnet_small, "--reference", &effnet_small, "--effnet-arch", "custom:0.5,0.5,76", "--atol", "2e-5", "--rtol", "1e-4", "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(so.lines().any(|l| l.starts_with("features") && l.ends_with("pass")), "{so}");
    let model = fixture_path("unet_guided_paperlike.safetensors").display().to_string();
    let reference = fixture_path("detect_paperlike.safetensors").display().to_string();
    let effnet = fixture_path("effnet_b4w.safetensors").display().to_string();
    let (rc, so, se) =
        ran(&["verify", "--model", &model, "--reference", &reference, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--atol", "1e-4", "--rtol", "1e-4", "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    for o in ["kl_map", "feat_map", "score_map", "image_score"] {
        assert!(so.lines().any(|l| l.starts_with(o) && l.ends_with("pass")), "{o}: {so}");
    }
    // without the extractor the feature map cannot be checked: a failure, said as such
    let (rc, so, _) = ran(&["verify", "--model", &model, "--reference", &reference, "--device", "cpu"]);
    assert_eq!(rc, 1, "{so}");
    assert!(so.contains("no --effnet"), "{so}");
}

/// --feature-extractor is recorded only when its taps fit the head (the demo's head predicts
/// EfficientNet-Lite0's 192 channels, not B4's 272).
#[test]
fn convert_checks_the_declared_feature_extractor() {
    let demo = common::repo_path("weights/demo/unet_demo.safetensors");
    let st = ran::io::safetensors::SafeTensors::open(&demo).unwrap();
    assert_eq!(st.metadata()["feature_extractor"], "efficientnet-lite0");
    let flags = st.metadata()["model_flags"].clone();
    let d = demo.display().to_string();
    let (rc, _, se) = ran(&["convert", "--checkpoint", &d, "--flags", &flags, "--feature-extractor", "efficientnet-b4", "--out", &tmp("fe.safetensors")]);
    assert_eq!(rc, 2);
    assert!(se.contains("272") && se.contains("192"), "{se}");
    let (rc, so, se) = ran(&["convert", "--checkpoint", &d, "--flags", &flags, "--feature-extractor", "efficientnet-lite0", "--out", &tmp("fe.safetensors")]);
    assert_eq!(rc, 0, "{so}{se}");
}

/// `--out` naming the checkpoint being read is refused and the checkpoint is left as it was
/// (it used to be truncated under its own memory map).
#[test]
fn convert_never_overwrites_its_input() {
    let src = fixture_path("unet_tiny_pt.pt");
    let flags = std::fs::read_to_string(fixture_path("unet_tiny_pt.flags")).unwrap().trim().to_string();
    let pt = tmp("self.pt");
    std::fs::copy(&src, &pt).unwrap();
    let before = std::fs::read(&pt).unwrap();
    let (rc, _, se) = ran(&["convert", "--checkpoint", &pt, "--flags", &flags, "--out", &pt]);
    assert_eq!(rc, 2, "{se}");
    assert!(se.contains("is the input"), "{se}");
    assert_eq!(std::fs::read(&pt).unwrap(), before, "the checkpoint was changed");
    // a successful conversion leaves no temporary file beside its output
    let out = tmp("converted.safetensors");
    let (rc, _, se) = ran(&["convert", "--checkpoint", &pt, "--flags", &flags, "--out", &out]);
    assert_eq!(rc, 0, "{se}");
    let dir = std::path::Path::new(&out).parent().unwrap();
    // (only this output's temporary: other tests of this binary write beside it concurrently)
    let leftovers: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with(".converted.safetensors.tmp-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
