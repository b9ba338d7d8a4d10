//! Metrics against scikit-learn's roc_auc_score and an AU-PRO written from the MVTec official
//! definition with scipy's label, and the anomaly_diff repository's own PRO variant over
//! scikit-learn's roc_curve (tests/fixtures/metrics.safetensors, made by
//! tools/reference/make_metric_fixtures.py): ties, many small and large regions, diagonal
//! (8-connected) regions, empty masks, all-normal images, perfect, inverted and constant scores.

mod common;
use common::fixture_path;
use ran::eval::metrics::{au_pro, auroc, components, pro_official_repo};
use ran::io::safetensors::SafeTensors;

#[test]
fn metrics_match_the_references_to_1e_6() {
    let fx = SafeTensors::open(fixture_path("metrics.safetensors")).unwrap();
    let mut n_cases = 0;
    for (name, meta) in fx.metadata().iter().filter(|(k, _)| !k.starts_with("__")) {
        let want: serde_json::Value = serde_json::from_str(meta).unwrap();
        let (shape, scores) = fx.get(&format!("{name}.scores")).unwrap();
        let masks: Vec<u8> = fx.get(&format!("{name}.masks")).unwrap().1.iter().map(|&v| v as u8).collect();
        let image_scores = fx.get(&format!("{name}.image_scores")).unwrap().1;
        let (n, h, w) = (shape[0], shape[1], shape[2]);
        let labels: Vec<bool> = masks.iter().map(|&m| m != 0).collect();
        let pa = auroc(&scores, &labels).unwrap();
        assert!((pa - want["pixel_auroc"].as_f64().unwrap()).abs() <= 1e-6, "{name}: pixel AUROC {pa} vs {}", want["pixel_auroc"]);
        let p = au_pro(&scores, &masks, n, h, w, 0.3).unwrap();
        assert!((p.au_pro - want["au_pro"].as_f64().unwrap()).abs() <= 1e-6, "{name}: AU-PRO {} vs {}", p.au_pro, want["au_pro"]);
        let po = pro_official_repo(&scores, &masks, n, h, w, 0.3).unwrap();
        assert!((po - want["pro_official_repo"].as_f64().unwrap()).abs() <= 1e-6, "{name}: official-repo PRO {po} vs {}", want["pro_official_repo"]);
        if let Some(ia) = want["image_auroc"].as_f64() {
            let img_labels: Vec<bool> = (0..n).map(|i| masks[i * h * w..(i + 1) * h * w].iter().any(|&m| m != 0)).collect();
            let got = auroc(&image_scores, &img_labels).unwrap();
            assert!((got - ia).abs() <= 1e-6, "{name}: image AUROC {got} vs {ia}");
        }
        n_cases += 1;
    }
    assert_eq!(n_cases, 8);
}

#[test]
fn components_are_8_connected_and_undefined_metrics_are_errors() {
    let mut m = vec![0u8; 25];
    m[0] = 1;
    m[6] = 1; // diagonal neighbour: same component
    m[24] = 1;
    let (_, k) = components(&m, 5, 5);
    assert_eq!(k, 2);
    assert!(auroc(&[0.1, 0.2], &[false, false]).unwrap_err().to_string().contains("one class"));
    assert!(au_pro(&[0.1; 4], &[0; 4], 1, 2, 2, 0.3).err().unwrap().to_string().contains("without any anomalous region"));
    assert!(auroc(&[f32::NAN, 0.2], &[true, false]).unwrap_err().to_string().contains("NaN"));
}

/// `ran metrics` on a safetensors file of maps and masks gives the reference numbers.
#[test]
fn metrics_command_on_a_safetensors_file() {
    let fx = SafeTensors::open(fixture_path("metrics.safetensors")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&fx.metadata()["blobs_noisy"]).unwrap();
    let (s, maps) = fx.get("blobs_noisy.scores").unwrap();
    let masks = fx.get("blobs_noisy.masks").unwrap().1;
    let dir = std::env::temp_dir().join(format!("ran-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("maps.safetensors");
    ran::io::safetensors::write_f32(&input, &[("maps", &s, &maps), ("masks", &s, &masks)], &Default::default()).unwrap();
    let json = dir.join("m.json");
    let o = common::ran_command().args(["metrics", "--input", input.to_str().unwrap(), "--json", json.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for (k, w) in [("pixel_auroc", "pixel_auroc"), ("aupro", "au_pro")] {
        assert!((got[k].as_f64().unwrap() - want[w].as_f64().unwrap()).abs() <= 1e-6, "{k}");
    }
    let o = common::ran_command().args(["metrics", "--maps", "/nonexistent"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// PNG folders: a map that ranks every defective pixel above every normal one scores 1.0; a
/// map without a mask file counts as a normal image.
#[test]
fn metrics_command_on_png_folders() {
    let dir = std::env::temp_dir().join(format!("ran-metrics-png-{}", std::process::id()));
    let (md, gd) = (dir.join("maps"), dir.join("gt"));
    std::fs::create_dir_all(&md).unwrap();
    std::fs::create_dir_all(&gd).unwrap();
    let m = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(8, 8, |x, y| image::Luma([if x < 4 && y < 4 { 60000 } else { (x * 100 + y) as u16 }]));
    m.save(md.join("a.png")).unwrap();
    image::GrayImage::from_fn(8, 8, |x, y| image::Luma([if x < 4 && y < 4 { 255 } else { 0 }])).save(gd.join("a_mask.png")).unwrap();
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(8, 8, |x, y| image::Luma([(x + y) as u16])).save(md.join("b.png")).unwrap();
    let json = dir.join("m.json");
    let o = common::ran_command().args(["metrics", "--maps", md.to_str().unwrap(), "--gt", gd.to_str().unwrap(), "--json", json.to_str().unwrap(), "--topk", "4"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(got["pixel_auroc"], 1.0);
    assert_eq!(got["image_auroc"], 1.0);
    assert!((got["aupro"].as_f64().unwrap() - 1.0).abs() < 1e-9);
}
