//! `ran eval` end to end on a small MVTec-layout folder made here: metrics per category in
//! metrics.json/csv; resumable from the map cache; shards + --merge give the same numbers as one
//! run; a missing ground-truth mask is an error naming the image; the calibrated ensemble's
//! statistics and metric recomputed from the cached maps; per-defect-kind metrics recomputed too;
//! a cache made with other settings is refused; --alpha-sweep recomputed.

mod common;
use common::{fixture_path, paperlike_model_file};
use std::path::{Path, PathBuf};

fn ran(args: &[&str]) -> (i32, String, String) {
    let o = common::ran_command().args(args).output().expect("run ran");
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

/// A fresh temporary folder with the small model file and the data set in it.
fn setup(name: &str) -> (PathBuf, String, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ran-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = paperlike_model_file(&dir);
    let root = dataset(&dir);
    (dir, model, root)
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

/// The maps of a cache entry, read as its format is documented (src/eval/cache.rs): magic
/// `RANMAPS2`, u64 content hash, u32 map count, f32 image score, then the maps.
fn cached(out: &Path, name: &str) -> Vec<Vec<f32>> {
    let b = std::fs::read(out.join("cache/carpet").join(name)).unwrap();
    assert_eq!(&b[..8], b"RANMAPS2", "{name}");
    let k = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    let v: Vec<f32> = b[24..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let px = v.len() / k;
    v.chunks(px).map(|m| m.to_vec()).collect()
}

fn cached_score(out: &Path, name: &str) -> f32 {
    let b = std::fs::read(out.join("cache/carpet").join(name)).unwrap();
    f32::from_le_bytes(b[20..24].try_into().unwrap())
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    (m, (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt())
}

#[test]
fn calibrated_ensemble_standardises_each_map_on_normal_images() {
    let (dir, model, root) = setup("cal");
    for (i, f) in ["b.png", "a.png", "a_gray.png"].iter().enumerate() {
        std::fs::copy(fixture_path(&format!("images/{f}")), root.join(format!("carpet/train/good/{i:03}.png"))).unwrap();
    }
    let root_s = root.display().to_string();
    let effnet = fixture_path("effnet_b4w.safetensors").display().to_string();
    let run = |out: &Path, extra: &[&str]| -> serde_json::Value {
        let o = out.display().to_string();
        let mut args = vec!["eval", "--data", &root_s, "--model", &model, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--device", "cpu", "--out", &o];
        args.extend_from_slice(extra);
        let (rc, so, se) = ran(&args);
        assert_eq!(rc, 0, "{so}{se}");
        metrics(out)
    };
    let (w_out, c_out) = (dir.join("weighted"), dir.join("calibrated"));
    let w = run(&w_out, &[]);
    let c = run(&c_out, &["--ensemble", "calibrated", "--calibration-images", "2"]);
    let (wc, cc) = (&w["categories"][0], &c["categories"][0]);
    // each score alone is unchanged; the statistics are those of the first 2 training images
    assert_eq!(wc["kl_only"], cc["kl_only"]);
    assert_eq!(wc["feature_only"], cc["feature_only"]);
    assert!(wc.get("calibration").is_none());
    let cal = &cc["calibration"];
    assert_eq!(cal["images"], 2);
    let train: Vec<Vec<Vec<f32>>> = ["000.png", "001.png"].iter().map(|f| cached(&c_out, &format!("carpet__train__good__{f}.f32"))).collect();
    let kl: Vec<f32> = train.iter().flat_map(|m| m[1].clone()).collect();
    let feat: Vec<f32> = train.iter().flat_map(|m| m[2].clone()).collect();
    let ((km, ks), (fm, fs)) = (mean_std(&kl), mean_std(&feat));
    for (k, want) in [("kl_mean", km), ("kl_std", ks), ("feat_mean", fm), ("feat_std", fs)] {
        let got = cal[k].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-6 + 1e-5 * want.abs(), "{k}: {got} vs {want}");
    }
    // the top of the colour scale: the 99.9th percentile (nearest rank) of that ensemble on them
    let mut normal: Vec<f64> = train.iter().flat_map(|m| m[1].iter().zip(&m[2]).map(|(&k, &f)| 0.5 * (f as f64 - fm) / fs + 0.5 * (k as f64 - km) / ks)).collect();
    normal.sort_by(f64::total_cmp);
    let want = normal[(0.999 * normal.len() as f64).ceil() as usize - 1];
    let got = cc["normal_p999"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-4 + 1e-4 * want.abs(), "normal_p999 {got} vs {want}");
    // the ensemble's pixel AUROC is that of ½·(F−μF)/σF + ½·(K−μK)/σK over the test maps
    let tests = ["good__000.png", "good__001.png", "cut__002.png", "cut__003.png"];
    let mut maps = Vec::new();
    let mut labels = Vec::new();
    for t in tests {
        let m = cached(&c_out, &format!("carpet__test__{t}.f32"));
        let mask: Vec<bool> = if t.starts_with("cut") {
            let g = ran::io::image::load_gray(&root.join(format!("carpet/ground_truth/cut/{}_mask.png", &t[5..8]))).unwrap();
            let g = ran::io::image::center_crop_arr(&g, 16);
            g.data.iter().map(|&v| v == 255).collect()
        } else {
            vec![false; m[1].len()]
        };
        for (i, (&k, &f)) in m[1].iter().zip(&m[2]).enumerate() {
            maps.push((0.5 * (f as f64 - fm) / fs + 0.5 * (k as f64 - km) / ks) as f32);
            labels.push(mask[i]);
        }
    }
    let want = ran::eval::metrics::auroc(&maps, &labels).unwrap();
    let got = cc["pixel_auroc"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "calibrated pixel AUROC {got} vs {want} from the cached maps");

    // detect: --ensemble calibrated needs --calibrate; with it, maps differ from the weighted ones
    let img = fixture_path("images/b.png").display().to_string();
    let d = |extra: &[&str], name: &str| -> (i32, String) {
        let o = dir.join(name).display().to_string();
        let mut args = vec!["detect", &img, "--model", &model, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--class", "carpet", "--device", "cpu", "--out", &o];
        args.extend_from_slice(extra);
        let (rc, so, se) = ran(&args);
        (rc, format!("{so}{se}"))
    };
    let (rc, msg) = d(&["--ensemble", "calibrated"], "d0");
    assert_eq!(rc, 2);
    assert!(msg.contains("--calibrate DIR"), "{msg}");
    let train_dir = root.join("carpet/train/good").display().to_string();
    let (rc, msg) = d(&["--ensemble", "calibrated", "--calibrate", &train_dir], "d1");
    assert_eq!(rc, 0, "{msg}");
    assert!(msg.contains("calibrated on 3 normal images"), "{msg}");
    let (rc, msg) = d(&[], "d2");
    assert_eq!(rc, 0, "{msg}");
    let score = |name: &str| -> f64 {
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("results.json")).unwrap()).unwrap();
        j["images"][0]["image_score"].as_f64().unwrap()
    };
    assert_ne!(score("d1"), score("d2"));
    // colour scales: calibrated → [0, the normal 99.9th percentile]; weighted → the image's own range
    let res = |name: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("results.json")).unwrap()).unwrap() };
    let (r1, r2) = (res("d1"), res("d2"));
    let top = r1["settings"]["calibration"]["carpet"]["normal_p999"].as_f64().unwrap();
    assert!(top > 0.0);
    assert_eq!(r1["images"][0]["display_range"], serde_json::json!([0.0, top]));
    assert_eq!(r1["images"][0]["normal_p999"].as_f64().unwrap(), top);
    assert_eq!(r2["images"][0]["display_range"], serde_json::json!([r2["images"][0]["map_min"], r2["images"][0]["map_max"]]));
    let (rc, msg) = d(&["--ensemble", "calibrated", "--calibrate", &train_dir, "--range", "image"], "d3");
    assert_eq!(rc, 0, "{msg}");
    let r3 = res("d3");
    assert_eq!(r3["images"][0]["display_range"], serde_json::json!([r3["images"][0]["map_min"], r3["images"][0]["map_max"]]));
    let (rc, msg) = d(&["--range", "-1,2"], "d4");
    assert_eq!(rc, 0, "{msg}");
    assert_eq!(res("d4")["images"][0]["display_range"], serde_json::json!([-1.0, 2.0]));
    let (rc, msg) = d(&["--range", "3,2"], "d5");
    assert_eq!(rc, 2);
    assert!(msg.contains("--range 3,2"), "{msg}");
    // calibrated on the same 2 training images as eval above: the same colour-scale top, and the
    // highest normal image score is the top-64 mean of their calibrated maps
    let (rc, msg) = d(&["--ensemble", "calibrated", "--calibrate", &train_dir, "--calibration-images", "2"], "d6");
    assert_eq!(rc, 0, "{msg}");
    assert!(msg.contains("calibrated on 2 normal images") && msg.contains("score above every normal calibration image"), "{msg}");
    let r6 = res("d6");
    let c6 = &r6["settings"]["calibration"]["carpet"];
    let p999 = c6["normal_p999"].as_f64().unwrap();
    assert!((p999 - cc["normal_p999"].as_f64().unwrap()).abs() <= 1e-6 * p999.abs().max(1.0), "{c6} vs {cc}");
    let topk = |m: Vec<f64>| -> f64 {
        let mut m = m;
        m.sort_by(|x, y| y.total_cmp(x));
        m[..64].iter().sum::<f64>() / 64.0
    };
    let image_max = train.iter().map(|m| topk(m[1].iter().zip(&m[2]).map(|(&k, &f)| 0.5 * (f as f64 - fm) / fs + 0.5 * (k as f64 - km) / ks).collect())).fold(f64::MIN, f64::max);
    let got = c6["normal_image_max"].as_f64().unwrap();
    assert!((got - image_max).abs() <= 1e-4 + 1e-4 * image_max.abs(), "normal_image_max {got} vs {image_max}");
    let img0 = &r6["images"][0];
    assert_eq!(img0["above_normal"].as_bool().unwrap(), img0["image_score"].as_f64().unwrap() > got);
    // without a calibration file the image threshold is the largest normal score: defective is above_normal
    assert_eq!(img0["image_threshold"].as_f64().unwrap(), got);
    assert_eq!(img0["defective"], img0["above_normal"]);
    assert!(std::fs::read_to_string(dir.join("d6/results.csv")).unwrap().starts_with("file,class,image_score,map_min,map_max,seconds,above_normal,defective\n"));
    // outlines: a fixed score, or the class's normal 99.9th percentile (only when calibrated)
    let (rc, msg) = d(&["--ensemble", "calibrated", "--calibrate", &train_dir, "--threshold", "normal"], "d7");
    assert_eq!(rc, 0, "{msg}");
    assert_eq!(res("d7")["images"][0]["threshold"].as_f64().unwrap(), top);
    let (rc, msg) = d(&["--threshold", "-0.5"], "d8");
    assert_eq!(rc, 0, "{msg}");
    assert_eq!(res("d8")["images"][0]["threshold"].as_f64().unwrap(), -0.5);
    let (rc, msg) = d(&["--threshold", "normal"], "d9");
    assert_eq!(rc, 2);
    assert!(msg.contains("--threshold normal") && msg.contains("--ensemble calibrated"), "{msg}");
    let html = std::fs::read_to_string(dir.join("d6/report.html")).unwrap();
    assert!(html.contains("b.png") && html.contains("src=\"0000_images_b_overlay.png\""), "{html}");
}

#[test]
fn per_defect_metrics_score_each_kind_against_the_normal_images() {
    let (dir, model, root) = setup("kinds");
    // a second kind: the same two images with the defect in the left half instead
    let c = root.join("carpet");
    for d in ["test/hole", "ground_truth/hole"] {
        std::fs::create_dir_all(c.join(d)).unwrap();
    }
    for i in 2..4 {
        std::fs::copy(c.join(format!("test/cut/{i:03}.png")), c.join(format!("test/hole/{i:03}.png"))).unwrap();
        let img = image::open(c.join(format!("test/hole/{i:03}.png"))).unwrap();
        let (w, h) = (img.width(), img.height());
        image::GrayImage::from_fn(w, h, |x, _| image::Luma([if x < w / 2 { 255 } else { 0 }])).save(c.join(format!("ground_truth/hole/{i:03}_mask.png"))).unwrap();
    }
    let (r, o) = (root.display().to_string(), dir.join("out"));
    let effnet = fixture_path("effnet_b4w.safetensors").display().to_string();
    let os = o.display().to_string();
    let (rc, so, se) = ran(&["eval", "--data", &r, "--model", &model, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--device", "cpu", "--out", &os]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(so.contains("per defect kind") && so.contains("cut ") && so.contains("hole "), "{so}");
    let m = metrics(&o);
    let defects = m["categories"][0]["defects"].as_array().unwrap().clone();
    assert_eq!(defects.iter().map(|d| d["defect"].as_str().unwrap()).collect::<Vec<_>>(), ["cut", "hole"]);
    // recomputed from the cached maps: that kind's images and the two normal ones
    for d in &defects {
        let kind = d["defect"].as_str().unwrap();
        assert_eq!(d["images"], 2);
        let names = ["good__000.png".to_string(), "good__001.png".into(), format!("{kind}__002.png"), format!("{kind}__003.png")];
        let (mut maps, mut labels, mut scores) = (vec![Vec::new(); 3], Vec::new(), Vec::new());
        for (j, n) in names.iter().enumerate() {
            scores.push(cached_score(&o, &format!("carpet__test__{n}.f32")));
            let cm = cached(&o, &format!("carpet__test__{n}.f32"));
            for (k, mk) in cm.iter().enumerate() {
                maps[k].extend_from_slice(mk);
            }
            if j < 2 {
                labels.extend(vec![false; cm[0].len()]);
            } else {
                let g = ran::io::image::load_gray(&c.join(format!("ground_truth/{kind}/{}_mask.png", &n[n.len() - 7..n.len() - 4]))).unwrap();
                labels.extend(ran::io::image::center_crop_arr(&g, 16).data.iter().map(|&v| v == 255));
            }
        }
        for (k, key) in ["ensemble", "kl_only", "feature_only"].iter().enumerate() {
            let want = ran::eval::metrics::auroc(&maps[k], &labels).unwrap();
            let got = d[key]["pixel_auroc"].as_f64().unwrap();
            assert!((got - want).abs() < 1e-9, "{kind} {key}: {got} vs {want}");
        }
        let want = ran::eval::metrics::auroc(&scores, &[false, false, true, true]).unwrap();
        assert!((d["ensemble"]["image_auroc"].as_f64().unwrap() - want).abs() < 1e-9);
    }
    // the two kinds differ (different masks), and defects.csv has a row for each
    assert_ne!(defects[0]["ensemble"]["pixel_auroc"], defects[1]["ensemble"]["pixel_auroc"]);
    let csv = std::fs::read_to_string(o.join("defects.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.lines().nth(2).unwrap().starts_with("carpet,hole,2,"), "{csv}");
    assert!(std::fs::read_to_string(o.join("report.html")).unwrap().contains("carpet / hole"));
    // metrics.csv carries each score alone beside the ensemble
    let row: Vec<String> = std::fs::read_to_string(o.join("metrics.csv")).unwrap().lines().nth(1).unwrap().split(',').map(String::from).collect();
    let cat = &m["categories"][0];
    for (col, v) in [(5, &cat["kl_only"]["pixel_auroc"]), (8, &cat["feature_only"]["pixel_auroc"]), (10, &cat["feature_only"]["image_auroc"])] {
        assert!((row[col].parse::<f64>().unwrap() - v.as_f64().unwrap()).abs() < 1e-6, "{row:?}");
    }
    // --alpha-sweep rescoring the cached maps: α = 0 / ½ / 1 are KL only / the ensemble / feature only,
    // α = 0.3 is recomputed here, and alpha_table.json holds the best α
    let (rc, so, se) = ran(&["eval", "--data", &r, "--model", &model, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--device", "cpu", "--out", &os, "--alpha-sweep", "0,0.3,0.5,1"]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(so.contains("best α per category for --ensemble weighted"), "{so}");
    let sw = metrics(&o)["categories"][0].clone();
    let pts = sw["alpha_sweep"].as_array().unwrap();
    let px = |i: usize| pts[i]["pixel_auroc"].as_f64().unwrap();
    assert_eq!(px(0), sw["kl_only"]["pixel_auroc"].as_f64().unwrap());
    assert_eq!(px(2), sw["pixel_auroc"].as_f64().unwrap());
    assert_eq!(px(3), sw["feature_only"]["pixel_auroc"].as_f64().unwrap());
    let (mut mixed, mut all_labels) = (Vec::new(), Vec::new());
    for n in ["good__000.png", "good__001.png", "cut__002.png", "cut__003.png", "hole__002.png", "hole__003.png"] {
        let cm = cached(&o, &format!("carpet__test__{n}.f32"));
        mixed.extend(cm[1].iter().zip(&cm[2]).map(|(&k, &f)| 0.3 * f + 0.7 * k));
        let kind = &n[..n.find("__").unwrap()];
        all_labels.extend(match kind {
            "good" => vec![false; cm[0].len()],
            _ => {
                let g = ran::io::image::load_gray(&c.join(format!("ground_truth/{kind}/{}_mask.png", &n[n.len() - 7..n.len() - 4]))).unwrap();
                ran::io::image::center_crop_arr(&g, 16).data.iter().map(|&v| v == 255).collect()
            }
        });
    }
    let want = ran::eval::metrics::auroc(&mixed, &all_labels).unwrap();
    assert!((px(1) - want).abs() < 1e-6, "α 0.3: {} vs {want}", px(1));
    assert!(std::fs::read_to_string(o.join("report.html")).unwrap().contains(&format!("<td>{:.4}</td>", px(1))));
    let table: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(o.join("alpha_table.json")).unwrap()).unwrap();
    let best = (0..4).max_by(|&i, &j| px(i).total_cmp(&px(j)).then(j.cmp(&i))).unwrap();
    assert_eq!(table["carpet"].as_f64().unwrap(), pts[best]["alpha"].as_f64().unwrap());
    let (rc, _, se) = ran(&["eval", "--data", &r, "--model", &model, "--device", "cpu", "--out", &os, "--alpha-sweep", "0.5,2"]);
    assert_eq!(rc, 2);
    assert!(se.contains("--alpha-sweep 2"), "{se}");
    // α, the ensemble and top-k are remade from the cached maps: the same numbers as a fresh run
    for extra in [["--alpha", "0.3"], ["--ensemble", "sum"], ["--topk", "5"]] {
        let fresh = dir.join(format!("fresh{}", extra[1])).display().to_string();
        for out in [&os, &fresh] {
            let mut args = vec!["eval", "--data", &r, "--model", &model, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--device", "cpu", "--out", out];
            args.extend_from_slice(&extra);
            let (rc, so, se) = ran(&args);
            assert_eq!(rc, 0, "{extra:?}: {so}{se}");
        }
        let (a, b) = (metrics(&o)["categories"][0].clone(), metrics(Path::new(&fresh))["categories"][0].clone());
        for k in ["pixel_auroc", "pro", "image_auroc", "defects"] {
            assert_eq!(a[k], b[k], "{extra:?} {k}");
        }
    }
    // the cache answers only for the settings it was made with
    let (rc, so, se) = ran(&["eval", "--data", &r, "--model", &model, "--effnet", &effnet, "--effnet-arch", "custom:1.4,0.25,380", "--device", "cpu", "--out", &os, "--seed", "3"]);
    assert_eq!(rc, 2, "{so}{se}");
    assert!(se.contains("settings.json") && se.contains("different: seed"), "{se}");
}

/// `eval --calibration FILE`: the statistics and colour-scale top come from the file (as
/// `detect --calibration` uses them), and the file's image threshold is measured on the test
/// set: its verdict counts are those of `ran detect` with the same file on the same images,
/// counted here from detect's results.json and the folder names (good = normal).
#[test]
fn eval_with_a_calibration_file_measures_its_threshold() {
    let dir = std::env::temp_dir().join(format!("ran-eval-calfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cal = dir.join("cal.safetensors").display().to_string();
    let (rc, so, se) = ran(&["calibrate", "--demo", "--device", "cpu", "--calibration-images", "2", "--out", &cal]);
    assert_eq!(rc, 0, "{so}{se}");
    let ev = dir.join("eval");
    let (rc, so, se) = ran(&["eval", "--demo", "--device", "cpu", "--calibration", &cal, "--categories", "brick", "--out", ev.to_str().unwrap()]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(so.contains("`defective` verdicts at the calibration file's image threshold"), "{so}");
    let m = &metrics(&ev)["categories"][0];
    // no training image was scored: the file replaced them
    assert!(!std::fs::read_dir(ev.join("cache")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("__train__")));
    let tests: Vec<PathBuf> = {
        let root = common::paths::repo_path("examples/demo/brick/test");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().flat_map(|k| std::fs::read_dir(k.unwrap().path()).unwrap().map(|f| f.unwrap().path())).collect();
        v.sort();
        v
    };
    let det = dir.join("detect");
    let mut args = vec!["detect".to_string(), "--demo".into(), "--device".into(), "cpu".into(), "--calibration".into(), cal.clone(), "--out".into(), det.display().to_string()];
    args.extend(tests.iter().map(|p| p.display().to_string()));
    let o = common::paths::ran_command().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(det.join("results.json")).unwrap()).unwrap();
    let rows = rows["images"].as_array().unwrap();
    assert_eq!(rows.len(), tests.len());
    let v = &m["verdicts"];
    assert_eq!(v["threshold"], rows[0]["image_threshold"], "eval measured another threshold than detect applies");
    assert_eq!(m["normal_p999"], rows[0]["normal_p999"]);
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for r in rows {
        let normal = r["file"].as_str().unwrap().contains("/test/good/");
        match (r["defective"].as_bool().unwrap(), normal) {
            (true, false) => tp += 1,
            (true, true) => fp += 1,
            (false, true) => tn += 1,
            (false, false) => fn_ += 1,
        }
    }
    assert_eq!((v["true_positives"].as_u64(), v["false_positives"].as_u64(), v["true_negatives"].as_u64(), v["false_negatives"].as_u64()), (Some(tp), Some(fp), Some(tn), Some(fn_)), "{v}");
    let f1 = 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64;
    assert!((v["f1"].as_f64().unwrap() - f1).abs() < 1e-12, "{v}");
    // the file is for the calibrated ensemble only
    let (rc, _, se) = ran(&["eval", "--demo", "--device", "cpu", "--calibration", &cal, "--ensemble", "weighted", "--categories", "brick", "--out", dir.join("w").to_str().unwrap()]);
    assert!(rc != 0 && se.contains("--calibration is for --ensemble calibrated"), "{se}");
    let _ = std::fs::remove_dir_all(&dir);
}
