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
