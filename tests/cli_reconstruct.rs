//! `ran fit-padim` and `ran reconstruct` as a user runs them: a fit from a folder of normal
//! images with a torchvision-layout backbone (under a DataParallel-style prefix), the fit file's
//! contents, reconstruction outputs (pictures, reconstruct.json, report.html) on the shipped demo, batches
//! that give what single images give, and clear
//! errors for empty folders, non-ResNet weights, impossible --dims, a fit at the wrong image size
//! and corrupt images.

mod common;
use common::{fixture_path, paperlike_model_file};
use ran::io::safetensors::{write_f32, SafeTensors};
use std::path::{Path, PathBuf};

fn ran(args: &[&str]) -> (i32, String, String) {
    let o = common::ran_command().args(args).output().expect("run ran");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ran-reconstruct-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The small Bottleneck ResNet of the fixtures as a state dict under `module.` (+ an fc layer).
fn backbone_file(dir: &Path) -> String {
    let fx = SafeTensors::open(fixture_path("resnet_small.safetensors")).unwrap();
    let keep = ["conv1.", "bn1.", "layer1.", "layer2.", "layer3."];
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = fx
        .names()
        .filter(|n| keep.iter().any(|k| n.starts_with(k)))
        .map(|n| {
            let (s, v) = fx.get(n).unwrap();
            (format!("module.{n}"), s, v)
        })
        .collect();
    t.push(("module.fc.weight".into(), vec![10, 2048], vec![0.0; 20480]));
    let p = dir.join("backbone.safetensors");
    let refs: Vec<(&str, &[usize], &[f32])> = t.iter().map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice())).collect();
    write_f32(&p, &refs, &Default::default()).unwrap();
    p.display().to_string()
}

fn demo(rel: &str) -> String {
    common::repo_path(rel).display().to_string()
}

#[test]
fn fit_padim_writes_a_self_contained_fit() {
    let dir = tmpdir("fit");
    let bb = backbone_file(&dir);
    let out = dir.join("padim.safetensors").display().to_string();
    let train = demo("examples/demo/moon/train");
    let (rc, so, se) = ran(&["fit-padim", "--train", &train, "--backbone", &bb, "--dims", "30", "--image-size", "32", "--seed", "5", "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(so.contains("80 images, 30 dims at 8×8 positions") && so.contains("peak RSS"), "{so}");
    let st = SafeTensors::open(&out).unwrap();
    let m = st.metadata();
    assert_eq!(m["format"], "ran-padim/1");
    assert_eq!(m["image_size"], "32x32");
    let ch: Vec<usize> = serde_json::from_str(&m["channels"]).unwrap();
    assert_eq!(ch.len(), 30);
    assert!(ch.windows(2).all(|w| w[0] < w[1]) && ch[29] < 1792);
    assert_eq!(st.info("mean").unwrap().shape, vec![64, 30]);
    assert_eq!(st.info("linv").unwrap().shape, vec![64, 465]);
    assert!(st.contains("backbone.layer3.1.conv3.weight") && !st.contains("backbone.fc.weight"));
    // each position's factor is lower-triangular with a positive diagonal (a Cholesky inverse)
    let (_, l) = st.get("linv").unwrap();
    assert!((0..30).all(|i| l[i * (i + 1) / 2 + i] > 0.0));
    // the same seed gives the same channels; another seed others
    let out2 = dir.join("padim2.safetensors").display().to_string();
    let (rc, _, se) = ran(&["fit-padim", "--train", &train, "--backbone", &bb, "--dims", "30", "--image-size", "32", "--seed", "6", "--out", &out2, "--device", "cpu"]);
    assert_eq!(rc, 0, "{se}");
    assert_ne!(SafeTensors::open(&out2).unwrap().metadata()["channels"], m["channels"]);
}

#[test]
fn fit_padim_errors_are_clear() {
    let dir = tmpdir("fit-errors");
    let bb = backbone_file(&dir);
    let out = dir.join("p.safetensors").display().to_string();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (rc, _, se) = ran(&["fit-padim", "--train", &empty.display().to_string(), "--backbone", &bb, "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("empty") && se.contains("no images"), "{se}");
    let train = demo("examples/demo/moon/train");
    let (rc, _, se) = ran(&["fit-padim", "--train", &train, "--backbone", &bb, "--dims", "5000", "--image-size", "32", "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("--dims 5000") && se.contains("1792"), "{se}");
    // an image size whose fit cannot fit the machine (65536²: ~1 PB of backbone activations and
    // features) is refused up front with the estimate, not aborted halfway through
    let huge = dir.join("huge.safetensors");
    let (rc, so, se) = ran(&["fit-padim", "--train", &train, "--backbone", &bb, "--dims", "30", "--image-size", "65536", "--out", &huge.display().to_string(), "--device", "cpu"]);
    assert_eq!(rc, 2, "{so}{se}");
    assert!(se.contains("fit-padim needs about") && se.contains("GB are available") && se.contains("--image-size"), "{se}");
    assert!(!huge.exists(), "nothing written");
    let unet = fixture_path("unet_guided_plain.safetensors").display().to_string();
    let (rc, _, se) = ran(&["fit-padim", "--train", &train, "--backbone", &unet, "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("unet_guided_plain.safetensors") && se.contains("not a torchvision ResNet"), "{se}");
    let (rc, _, se) = ran(&["fit-padim", "--train", &train, "--backbone", &bb, "--arch", "wide_resnet50_2", "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("not wide_resnet50_2"), "{se}");
    // a corrupt image among good ones is skipped by name, the fit still written, exit status 1
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    for i in 0..3 {
        std::fs::copy(Path::new(&train).join(format!("good/{i:03}.png")), mixed.join(format!("{i}.png"))).unwrap();
    }
    std::fs::write(mixed.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let (rc, so, se) = ran(&["fit-padim", "--train", &mixed.display().to_string(), "--backbone", &bb, "--dims", "10", "--image-size", "32", "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 1, "{so}{se}");
    assert!(se.contains("broken.png") && so.contains("3 images"), "{so}{se}");
}

#[test]
fn reconstruct_demo_writes_pictures_and_loss_curves() {
    let dir = tmpdir("demo");
    let out = dir.join("out").display().to_string();
    let img = demo("examples/demo/brick/test/scratch/000.png");
    let (rc, so, se) = ran(&["reconstruct", "--demo", &img, "--iters", "3", "--every", "1", "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("out/reconstruct.json")).unwrap()).unwrap();
    assert_eq!(json["settings"]["nd"], 5);
    let r = &json["images"][0];
    let curve: Vec<f64> = r["padim_loss"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(curve.len(), 4, "L at x0 and after each of 3 iterations");
    // the scratch is what PaDiM objects to: removing it must lower the loss
    assert!(curve[3] < 0.9 * curve[0], "PaDiM loss {curve:?} should fall");
    assert_eq!(r["frames_at"], serde_json::json!([0, 1, 2, 3]));
    let strip = image::open(r["frames"].as_str().unwrap()).unwrap();
    assert_eq!((strip.width(), strip.height()), (4 * 64 + 3 * 2, 64));
    for k in ["reconstruction", "diff_heatmap", "diff16"] {
        let p = r[k].as_str().unwrap();
        let im = image::open(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!((im.width(), im.height()), (64, 64));
    }
    // report.html shows the loss and four pictures per image, every one of them written
    let html = std::fs::read_to_string(dir.join("out/report.html")).unwrap();
    assert!(html.contains(&format!("{:.4}", curve[0])) && html.contains(&format!("{:.4}", curve[3])), "{html}");
    let srcs: Vec<&str> = html.split("src=\"").skip(1).map(|t| &t[..t.find('"').unwrap()]).collect();
    assert_eq!(srcs.len(), 4, "{html}");
    for s in srcs {
        assert!(dir.join("out").join(s).is_file(), "{s}");
    }
    // the stochastic variant: reproducible per seed, different from the deterministic mean
    let recon = |extra: &[&str], name: &str| -> Vec<u8> {
        let o = dir.join(name).display().to_string();
        let mut args = vec!["reconstruct", "--demo", img.as_str(), "--iters", "1", "--out", o.as_str(), "--device", "cpu"];
        args.extend_from_slice(extra);
        let (rc, so, se) = ran(&args);
        assert_eq!(rc, 0, "{so}{se}");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("reconstruct.json")).unwrap()).unwrap();
        image::open(json["images"][0]["reconstruction"].as_str().unwrap()).unwrap().to_rgb8().into_raw()
    };
    let det = recon(&[], "det");
    let (s1, s1b, s2) = (recon(&["--denoise-noise", "--seed", "1"], "s1"), recon(&["--denoise-noise", "--seed", "1"], "s1b"), recon(&["--denoise-noise", "--seed", "2"], "s2"));
    assert_eq!(s1, s1b);
    assert_ne!(s1, s2);
    assert_ne!(s1, det);
    // a batch of two gives what one image at a time gives (per-image normalisation, shared noise)
    let img2 = demo("examples/demo/brick/test/spot/000.png");
    let batched = |bs: &str, name: &str| -> serde_json::Value {
        let o = dir.join(name).display().to_string();
        let (rc, so, se) = ran(&["reconstruct", "--demo", &img, &img2, "--iters", "2", "--denoise-noise", "--batch", bs, "--out", &o, "--device", "cpu"]);
        assert_eq!(rc, 0, "{so}{se}");
        serde_json::from_str(&std::fs::read_to_string(dir.join(name).join("reconstruct.json")).unwrap()).unwrap()
    };
    let (one, two) = (batched("1", "b1"), batched("2", "b2"));
    for k in 0..2 {
        let (a, b) = (&one["images"][k], &two["images"][k]);
        let curve = |r: &serde_json::Value| -> Vec<f64> { r["padim_loss"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
        for (x, y) in curve(a).iter().zip(curve(b)) {
            assert!((x - y).abs() <= 1e-4 * x.abs(), "image {k}: loss {x} (batch 1) vs {y} (batch 2)");
        }
        let px = |r: &serde_json::Value| image::open(r["reconstruction"].as_str().unwrap()).unwrap().to_rgb8().into_raw();
        let (pa, pb) = (px(a), px(b));
        let max_diff = pa.iter().zip(&pb).map(|(x, y)| (*x as i32 - *y as i32).abs()).max().unwrap();
        assert!(max_diff <= 1, "image {k}: reconstructions differ by {max_diff} levels between batch 1 and 2");
    }
    // wrong image size for the fit: a 16×16 model with the 64×64 demo fit
    let model = PathBuf::from(paperlike_model_file(&dir));
    let (rc, _, se) = ran(&["reconstruct", &img, "--model", &model.display().to_string(), "--padim", &demo("weights/demo/padim_demo_brick.safetensors"), "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("fitted on 64×64") && se.contains("--image-size 16"), "{se}");
    // a model file given as the fit
    let (rc, _, se) = ran(&["reconstruct", &img, "--demo", "--padim", &model.display().to_string(), "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("not a PaDiM fit"), "{se}");
    let (rc, _, se) = ran(&["reconstruct", &img, "--demo", "--lr", "1.5", "--out", &out, "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("--lr 1.5"), "{se}");
}
