//! `ran detect` as a user runs it: a folder of images → per-image 16-bit map, heatmap, overlay,
//! results.json/csv; reproducible with a seed; corrupt files skipped by name with exit status 1;
//! clear errors for a missing EfficientNet file, empty folders and unknown classes.

mod common;
use common::{fixture_path, paperlike_model_file};
use std::path::PathBuf;

fn ran(args: &[&str]) -> (i32, String, String) {
    let o = common::ran_command().args(args).output().expect("run ran");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ran-detect-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn detect_a_folder_writes_maps_pictures_and_tables() {
    let dir = tmpdir("folder");
    let model = paperlike_model_file(&dir);
    let effnet = fixture_path("effnet_b4w.safetensors").display().to_string();
    let images = fixture_path("images").display().to_string();
    let out = dir.join("out").display().to_string();
    let args = ["detect", &images, "--model", &model, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--class", "carpet", "--out", &out, "--device", "cpu", "--seed", "3"];
    let (rc, so, se) = ran(&args);
    assert_eq!(rc, 0, "{so}{se}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/results.json")).unwrap()).unwrap();
    let imgs = json["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 4, "a, a_gray, a_rgba, b (the mask is not an input)");
    assert_eq!(json["settings"]["mode"], "kl+feature");
    for r in imgs {
        for k in ["map16", "heatmap", "overlay"] {
            let p = r[k].as_str().unwrap();
            let img = image::open(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!((img.width(), img.height()), (16, 16), "{p}");
        }
        let lo = r["map_min"].as_f64().unwrap();
        let hi = r["map_max"].as_f64().unwrap();
        let s = r["image_score"].as_f64().unwrap();
        assert!(lo < s && s <= hi, "image score {s} within the map's range [{lo}, {hi}]");
        assert_eq!(r["class"], 3, "carpet is MVTec class 3");
    }
    let csv = std::fs::read_to_string(dir.join("out/results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    // same seed, same maps; another seed, other maps
    let (rc, _, _) = ran(&args);
    assert_eq!(rc, 0);
    let again: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/results.json")).unwrap()).unwrap();
    assert_eq!(again["images"][0]["image_score"], imgs[0]["image_score"]);
    assert_eq!(json["settings"]["precision"], "f32");
    // another precision on the CPU: its proxy of the kernels' rounding, one notice, bf16
    // recorded; the maps move (the operands were rounded), by little (relative 2e-2 on the image
    // score, a few times what was observed)
    let (rc, _, se) = ran(&[&args[..], &["--precision", "bf16"]].concat());
    assert_eq!(rc, 0, "{se}");
    assert_eq!(se.lines().filter(|l| l.starts_with("note: CPU emulation of bf16 operands")).count(), 1, "{se}");
    let bf: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/results.json")).unwrap()).unwrap();
    assert_eq!(bf["settings"]["precision"], "bf16");
    let mut moved = false;
    for (x, y) in bf["images"].as_array().unwrap().iter().zip(imgs) {
        let (a, b) = (x["image_score"].as_f64().unwrap(), y["image_score"].as_f64().unwrap());
        eprintln!("image score bf16 {a} f32 {b}");
        assert!((a - b).abs() <= 2e-2 * b.abs(), "bf16 {a} vs f32 {b}");
        moved |= a != b;
    }
    assert!(moved, "bf16 on the CPU gave the f32 scores: no operand was rounded");
    let mut other = args.to_vec();
    let last = other.len() - 1;
    other[last] = "4";
    ran(&other);
    let third: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/results.json")).unwrap()).unwrap();
    assert_ne!(third["images"][0]["image_score"], imgs[0]["image_score"]);
}

#[test]
fn corrupt_images_are_skipped_by_name() {
    let dir = tmpdir("corrupt");
    let model = paperlike_model_file(&dir);
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::copy(fixture_path("images/b.png"), imgs.join("good.png")).unwrap();
    std::fs::write(imgs.join("broken.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let (rc, so, se) = ran(&["detect", &imgs.display().to_string(), "--model", &model, "--kl-only", "--class", "0", "--out", &dir.join("out").display().to_string(), "--device", "cpu"]);
    assert_eq!(rc, 1, "{so}{se}");
    assert!(se.contains("broken.png"), "{se}");
    assert!(so.contains("1 image(s) scored, 1 failed") && so.contains("KL score only"), "{so}");
}

#[test]
fn clear_errors_for_missing_inputs() {
    let dir = tmpdir("errors");
    let model = paperlike_model_file(&dir);
    let images = fixture_path("images").display().to_string();
    let out = dir.join("out").display().to_string();
    let (rc, _, se) = ran(&["detect", &images, "--model", &model, "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("--effnet"), "{se}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (rc, _, se) = ran(&["detect", &empty.display().to_string(), "--model", &model, "--kl-only", "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("no images"), "{se}");
    let (rc, _, se) = ran(&["detect", &images, "--model", &model, "--kl-only", "--class", "spaceship", "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 1);
    assert!(se.contains("unknown class `spaceship`"), "{se}");
    let (rc, _, se) = ran(&["detect", &images, "--model", &model, "--effnet", "/nonexistent/effnet.pth", "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("/nonexistent/effnet.pth"), "{se}");
}

#[test]
fn batching_and_per_category_alpha() {
    let dir = tmpdir("batch");
    let model = paperlike_model_file(&dir);
    let effnet = fixture_path("effnet_b4w.safetensors").display().to_string();
    let images = fixture_path("images").display().to_string();
    let run = |out: &str, extra: &[&str]| -> serde_json::Value {
        let o = dir.join(out).display().to_string();
        let mut args = vec!["detect", &images, "--model", &model, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--class", "grid", "--out", &o, "--device", "cpu"];
        args.extend_from_slice(extra);
        let (rc, so, se) = ran(&args);
        assert_eq!(rc, 0, "{so}{se}");
        serde_json::from_str(&std::fs::read_to_string(dir.join(out).join("results.json")).unwrap()).unwrap()
    };
    let one = run("b1", &[]);
    let three = run("b3", &["--batch", "3"]);
    for (a, b) in one["images"].as_array().unwrap().iter().zip(three["images"].as_array().unwrap()) {
        let (x, y) = (a["image_score"].as_f64().unwrap(), b["image_score"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "batched {y} vs single {x}");
    }
    let table = dir.join("alpha.json");
    std::fs::write(&table, r#"{"grid": 1.0, "bottle": 0.2}"#).unwrap();
    let weighted = run("alpha", &["--alpha-table", &table.display().to_string()]);
    let r = &weighted["images"][0];
    assert_eq!(r["category"], "grid");
    assert_eq!(r["alpha"], 1.0);
    assert_ne!(r["image_score"], one["images"][0]["image_score"], "α = 1 keeps only the feature score");
    std::fs::write(&table, "grid,0.5\nspaceship,0.3\n").unwrap();
    let o = dir.join("bad").display().to_string();
    let (rc, _, se) = ran(&[
        "detect",
        &images,
        "--model",
        &model,
        "--effnet",
        &effnet,
        "--effnet-arch",
        "custom:1.4,0.25,380",
        "--class",
        "grid",
        "--out",
        &o,
        "--device",
        "cpu",
        "--alpha-table",
        &table.display().to_string(),
    ]);
    assert_eq!(rc, 2);
    assert!(se.contains("unknown category `spaceship`") && se.contains("alpha.json"), "{se}");
}
