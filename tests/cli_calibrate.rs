//! `ran calibrate` as a user runs it on the demo: the file gives detect the very scores and
//! verdicts of calibrating in the same run; with a validation set the threshold is the F1-optimal
//! one on the scores detect gives those images (brute force here); other settings or another
//! model are refused by name.

#[path = "common/paths.rs"]
mod paths;

use ran::anomaly::calibration_file::CalibrationFile;
use std::path::{Path, PathBuf};

fn ran(args: &[&str]) -> (i32, String, String) {
    let o = paths::ran_command().args(args).output().expect("run ran");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn demo(p: &str) -> String {
    paths::repo_path("examples/demo").join(p).display().to_string()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ran-calibrate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn results(dir: &Path) -> Vec<serde_json::Value> {
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    j["images"].as_array().unwrap().clone()
}

/// F1 of flagging the scores above `t`, counted directly.
fn f1_at(s: &[(f64, bool)], t: f64) -> f64 {
    let tp = s.iter().filter(|p| p.1 && p.0 > t).count() as f64;
    let flagged = s.iter().filter(|p| p.0 > t).count() as f64;
    let pos = s.iter().filter(|p| p.1).count() as f64;
    if tp == 0.0 {
        0.0
    } else {
        2.0 * tp / (flagged + pos)
    }
}

#[test]
fn a_calibration_file_gives_detect_the_same_scores_and_verdicts() {
    let dir = tmpdir("file");
    let cal = dir.join("cal.safetensors").display().to_string();
    // three normal images per class keep the test short; detect calibrates on the same three
    let (rc, so, se) = ran(&["calibrate", "--demo", "--device", "cpu", "--calibration-images", "3", "--out", &cal]);
    assert_eq!(rc, 0, "{so}{se}");
    for c in ["brick", "moon", "gravel"] {
        assert!(so.contains(&format!("{c}: image threshold")) && so.contains("largest of 3 normal"), "{so}");
    }
    let inputs = [demo("brick/test/good/000.png"), demo("brick/test/scratch/000.png"), demo("moon/test/hole/000.png"), demo("gravel/test/good/001.png")];
    let run = |out: &str, extra: &[&str]| {
        let o = dir.join(out);
        let mut args: Vec<&str> = vec!["detect", "--demo", "--device", "cpu", "--calibration-images", "3", "--out", o.to_str().unwrap()];
        args.extend(inputs.iter().map(|s| s.as_str()));
        args.extend_from_slice(extra);
        let (rc, so, se) = ran(&args);
        assert_eq!(rc, 0, "{so}{se}");
        (results(&o), se)
    };
    let (fresh, _) = run("fresh", &[]);
    let (from_file, se) = run("file", &["--calibration", &cal]);
    assert!(!se.contains("calibrated on"), "the file replaces calibrating: {se}");
    assert_eq!(fresh.len(), 4);
    for (a, b) in fresh.iter().zip(&from_file) {
        for k in ["image_score", "map_min", "map_max", "normal_p999", "display_range", "above_normal", "image_threshold", "defective"] {
            assert_eq!(a[k], b[k], "{k} of {}", a["file"]);
        }
        // the default threshold is the largest normal score: defective is above_normal
        assert_eq!(b["defective"], b["above_normal"]);
    }
    assert_eq!(from_file[1]["defective"], true, "a scratch on brick: {}", from_file[1]);
    // another seed would give other maps than the calibration's: refused, naming the setting
    let (rc, _, se) = ran(&["detect", "--demo", "--device", "cpu", "--calibration", &cal, "--seed", "1", &inputs[0], "--out", dir.join("x").to_str().unwrap()]);
    assert_eq!(rc, 2);
    assert!(se.contains("cal.safetensors") && se.contains("seed 0 (this run: 1)"), "{se}");
    // a calibration of another model (its recorded hash changed) is refused
    let (mut f, _) = CalibrationFile::read(Path::new(&cal)).unwrap();
    f.model_sha256 = "0".repeat(64);
    let other = dir.join("other.safetensors");
    f.write(&other).unwrap();
    let (rc, _, se) = ran(&["detect", "--demo", "--device", "cpu", "--calibration", other.to_str().unwrap(), &inputs[0], "--out", dir.join("y").to_str().unwrap()]);
    assert_eq!(rc, 2);
    assert!(se.contains("other.safetensors") && se.contains("another model"), "{se}");
    // --calibrate and --calibration together: refused when parsed
    let (rc, _, se) = ran(&["detect", "--demo", "--calibration", &cal, "--calibrate", &demo("brick/train/good")]);
    assert_eq!(rc, 2, "{se}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_validation_set_gives_the_f1_optimal_threshold() {
    let dir = tmpdir("val");
    // a small MVTec-layout validation set of brick: 3 normal, 3 defective (masks beside them)
    let val = dir.join("val/brick");
    for (kind, names) in [("good", ["002.png", "003.png", "004.png"]), ("patch", ["000.png", "001.png", "002.png"])] {
        std::fs::create_dir_all(val.join("test").join(kind)).unwrap();
        for n in names {
            std::fs::copy(demo(&format!("brick/test/{kind}/{n}")), val.join("test").join(kind).join(n)).unwrap();
            if kind != "good" {
                std::fs::create_dir_all(val.join("ground_truth").join(kind)).unwrap();
                let stem = n.trim_end_matches(".png");
                std::fs::copy(demo(&format!("brick/ground_truth/{kind}/{stem}_mask.png")), val.join("ground_truth").join(kind).join(format!("{stem}_mask.png"))).unwrap();
            }
        }
    }
    let cal = dir.join("cal.safetensors");
    let (rc, so, se) =
        ran(&["calibrate", "--demo", "--device", "cpu", "--calibration-images", "3", "--normal", &demo("brick/train/good"), "--val", val.to_str().unwrap(), "--out", cal.to_str().unwrap()]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(so.contains("brick: image threshold") && so.contains("F1-optimal on 3 normal + 3 defective"), "{so}");
    let (f, _) = CalibrationFile::read(&cal).unwrap();
    assert_eq!(f.classes.len(), 1, "only brick has normal images");
    let e = f.classes.values().next().unwrap();
    let v = e.validation.expect("validation numbers");
    // the reference: detect's scores of the validation images with this calibration, every cut tried
    let out = dir.join("det");
    let (rc, so, se) = ran(&["detect", "--demo", "--device", "cpu", "--calibration", cal.to_str().unwrap(), val.join("test").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(rc, 0, "{so}{se}");
    let rows = results(&out);
    let s: Vec<(f64, bool)> = rows.iter().map(|r| (r["image_score"].as_f64().unwrap(), !r["file"].as_str().unwrap().contains("/good/"))).collect();
    assert_eq!(s.len(), 6);
    let best = s.iter().map(|p| p.0).chain([f64::NEG_INFINITY]).map(|t| f1_at(&s, t)).fold(0.0, f64::max);
    assert!((v.f1 - best).abs() < 1e-12, "F1 {} vs brute force {best} on {s:?}", v.f1);
    assert!((f1_at(&s, e.threshold as f64) - best).abs() < 1e-12, "the stored threshold {} does not reach it", e.threshold);
    // detect's verdicts follow the stored threshold
    for (r, (score, _)) in rows.iter().zip(&s) {
        assert_eq!(r["defective"], *score > e.threshold as f64, "{r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
