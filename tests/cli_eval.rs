//! `ran eval` end to end on a small MVTec-layout folder made here: metrics per category in
//! metrics.json/csv; resumable from the map cache; shards + --merge give the same numbers as one
//! run; a missing ground-truth mask is an error naming the image.

mod common;
use common::{fixture_path, paperlike_model_file};
use std::path::{Path, PathBuf};
use std::process::Command;

fn ran(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ran")).args(args).output().expect("run ran");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// carpet/test/{good,cut}, carpet/ground_truth/cut/*_mask.png
fn dataset(dir: &Path) -> PathBuf {
    let root = dir.join("mvtec");
    let c = root.join("carpet");
    for d in ["test/good", "test/cut", "ground_truth/cut", "train/good"] {
        std::fs::create_dir_all(c.join(d)).unwrap();
    }
    let src = ["a.png", "b.png", "a_gray.png", "a_rgba.png"];
    for (i, f) in src.iter().enumerate() {
        let sub = if i < 2 { "good" } else { "cut" };
        std::fs::copy(fixture_path(&format!("images/{f}")), c.join(format!("test/{sub}/{i:03}.png"))).unwrap();
    }
    for i in 2..4 {
        let img = image::open(c.join(format!("test/cut/{i:03}.png"))).unwrap();
        let (w, h) = (img.width(), img.height());
        let m = image::GrayImage::from_fn(w, h, |x, y| image::Luma([if x > w / 3 && x < 2 * w / 3 && y > h / 3 && y < 2 * h / 3 { 255 } else { 0 }]));
        m.save(c.join(format!("ground_truth/cut/{i:03}_mask.png"))).unwrap();
    }
    root
}

fn metrics(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn eval_runs_resumes_shards_and_merges() {
    let dir = std::env::temp_dir().join(format!("ran-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = paperlike_model_file(&dir);
    let root = dataset(&dir).display().to_string();
    let effnet = fixture_path("effnet_b4w.safetensors").display().to_string();
    let common = |out: &str| -> Vec<String> {
        ["eval", "--data", &root, "--model", &model, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--device", "cpu", "--out", out].iter().map(|s| s.to_string()).collect()
    };
    let one = dir.join("one").display().to_string();
    let args = common(&one);
    let (rc, so, se) = ran(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(rc, 0, "{so}{se}");
    assert!(so.contains("carpet") && so.contains("mean"), "{so}");
    let m1 = metrics(Path::new(&one));
    let c = &m1["categories"][0];
    assert_eq!(c["category"], "carpet");
    assert_eq!(c["images"], 4);
    for k in ["pixel_auroc", "pro", "image_auroc"] {
        let v = c[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert!(std::fs::read_to_string(Path::new(&one).join("metrics.csv")).unwrap().starts_with("category,images,pixel_auroc,pro,image_auroc"));
    let html = std::fs::read_to_string(Path::new(&one).join("report.html")).unwrap();
    assert!(html.contains("carpet/roc.png") && html.contains("carpet/pro.png") && html.contains("worst"), "report.html");
    for f in ["carpet/roc.png", "carpet/pro.png"] {
        let img = image::open(Path::new(&one).join(f)).unwrap();
        assert!(img.width() > 100, "{f}");
    }
    // resumed from the cache: the same numbers
    let (rc, _, _) = ran(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(rc, 0);
    assert_eq!(metrics(Path::new(&one))["categories"], m1["categories"]);
    // two shards, then merge
    let sh = dir.join("sharded").display().to_string();
    for s in ["0/2", "1/2"] {
        let mut a = common(&sh);
        a.extend(["--shard".to_string(), s.to_string()]);
        let (rc, so, se) = ran(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert_eq!(rc, 0, "{so}{se}");
        assert!(so.contains("shard done"), "{so}");
    }
    let mut a = common(&sh);
    a.push("--merge".into());
    let (rc, so, se) = ran(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(rc, 0, "{so}{se}");
    assert_eq!(metrics(Path::new(&sh))["categories"], m1["categories"]);
    // the paper repository's PRO variant: the same cache, recorded as such
    let mut a = common(&one);
    a.extend(["--pro-variant".to_string(), "official-repo".to_string()]);
    let (rc, so, se) = ran(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(rc, 0, "{so}{se}");
    let mv = metrics(Path::new(&one));
    assert!(mv["pro_definition"].as_str().unwrap().contains("anomaly_diff"));
    assert_eq!(mv["categories"][0]["pixel_auroc"], m1["categories"][0]["pixel_auroc"]);
    // a folder of per-category models (--models DIR): carpet.safetensors is used for carpet
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(&model, models.join("carpet.safetensors")).unwrap();
    let per = dir.join("per").display().to_string();
    let mut a: Vec<String> = common(&per);
    let mi = a.iter().position(|s| s == "--model").unwrap();
    a[mi] = "--models".into();
    a[mi + 1] = models.display().to_string();
    let (rc, so, se) = ran(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(rc, 0, "{so}{se}");
    assert_eq!(metrics(Path::new(&per))["categories"], m1["categories"]);
    // a missing mask is named
    std::fs::remove_file(dir.join("mvtec/carpet/ground_truth/cut/003_mask.png")).unwrap();
    let (rc, _, se) = ran(&common(&dir.join("x").display().to_string()).iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert_eq!(rc, 2);
    assert!(se.contains("003.png") && se.contains("no ground-truth mask"), "{se}");
}
