//! `ran eval`'s printed summary.

use crate::eval::results::{best_alpha, CategoryMetrics, ModeMetrics};

/// The printed summary: per category the ensemble's row with each score alone under it, the
/// means, and the pixel AUROC of every defect kind (where the method works and where not).
pub fn summary(r: &[CategoryMetrics]) -> String {
    use std::fmt::Write;
    // (pixel AUROC, PRO, image AUROC)
    type Row = (f64, f64, f64);
    let mut o = String::new();
    let row = |o: &mut String, label: &str, images: String, m: Row| {
        let _ = writeln!(o, "{label:<18} {images:>7} {:>12.4} {:>9.4} {:>12.4}", m.0, m.1, m.2);
    };
    let _ = writeln!(o, "{:<18} {:>7} {:>12} {:>9} {:>12}", "category", "images", "pixel AUROC", "PRO", "image AUROC");
    for m in r {
        row(&mut o, &m.category, m.images.to_string(), (m.pixel_auroc, m.pro, m.image_auroc));
        for (label, x) in [("  KL only", &m.kl_only), ("  feature only", &m.feature_only)] {
            if let Some(x) = x {
                row(&mut o, label, String::new(), (x.pixel_auroc, x.pro, x.image_auroc));
            }
        }
    }
    let n = r.len() as f64;
    let mean = |f: &dyn Fn(&CategoryMetrics) -> Option<Row>| -> Option<Row> {
        let v: Option<Vec<_>> = r.iter().map(f).collect();
        v.map(|v| v.iter().fold((0.0, 0.0, 0.0), |a, x| (a.0 + x.0 / n, a.1 + x.1 / n, a.2 + x.2 / n)))
    };
    let triple = |m: &ModeMetrics| (m.pixel_auroc, m.pro, m.image_auroc);
    for (label, m) in [
        ("mean", mean(&|m| Some((m.pixel_auroc, m.pro, m.image_auroc)))),
        ("mean, KL only", mean(&|m| m.kl_only.as_ref().map(triple))),
        ("mean, feature only", mean(&|m| m.feature_only.as_ref().map(triple))),
    ] {
        if let Some(m) = m {
            row(&mut o, label, String::new(), m);
        }
    }
    if r.iter().all(|m| !m.alpha_sweep.is_empty()) {
        // α means something else in each ensemble: say which one the table is for
        let which = if r.iter().all(|m| m.calibration.is_some()) { "calibrated" } else { "weighted" };
        let _ = writeln!(o, "best α per category for --ensemble {which} (chosen on the test set: an upper bound; alpha_table.json):");
        for m in r {
            if let Some(b) = best_alpha(m) {
                let _ = writeln!(o, "  {:<12} α = {:<4} pixel AUROC {:.4} (image AUROC {:.4})", m.category, b.alpha, b.pixel_auroc, b.image_auroc);
            }
        }
        let best: f64 = r.iter().filter_map(best_alpha).map(|b| b.pixel_auroc).sum::<f64>() / n;
        let _ = writeln!(o, "  {:<12} pixel AUROC {best:.4}", "mean");
    }
    let _ = writeln!(o, "pixel AUROC per defect kind (ensemble / KL only / feature only):");
    let f = |x: &Option<ModeMetrics>| x.as_ref().map(|x| format!("{:.2}", x.pixel_auroc)).unwrap_or_else(|| "–".into());
    for m in r {
        let kinds: Vec<String> = m.defects.iter().map(|d| format!("{} {:.2}/{}/{}", d.defect, d.ensemble.pixel_auroc, f(&d.kl_only), f(&d.feature_only))).collect();
        let _ = writeln!(o, "  {:<12} {}", m.category, kinds.join("  "));
    }
    if r.iter().any(|m| m.verdicts.is_some()) {
        let _ = writeln!(o, "`defective` verdicts at the calibration file's image threshold:");
        for (m, v) in r.iter().filter_map(|m| m.verdicts.map(|v| (m, v))) {
            let (defects, normal) = (v.true_positives + v.false_negatives, v.true_negatives + v.false_positives);
            let _ = writeln!(
                o,
                "  {:<12} threshold {:.4}: {}/{defects} defective flagged, {}/{normal} normal flagged (precision {:.3}, recall {:.3}, F1 {:.3})",
                m.category, v.threshold, v.true_positives, v.false_positives, v.precision, v.recall, v.f1
            );
        }
    }
    o
}
