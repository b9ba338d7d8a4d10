//! `ran eval`'s files: metrics.json, metrics.csv, defects.csv and report.html.

use crate::error::AtPath;
use crate::eval::pictures::Pictures;
use crate::eval::pro_variant::ProVariant;
use crate::eval::report::{write_html, Table};
use crate::eval::results::{CategoryMetrics, ModeMetrics};
use crate::ops::precision::Precision;
use crate::Result;
use std::path::Path;

/// metrics.json (the categories, their means, the PRO definition, the operand precision the
/// maps were made in: the cache refuses maps of another), metrics.csv and defects.csv.
pub fn write_tables(out: &Path, r: &[CategoryMetrics], pro_variant: ProVariant, precision: Precision) -> Result<()> {
    std::fs::create_dir_all(out).at_path(out)?;
    let mean = |f: &dyn Fn(&CategoryMetrics) -> f64| r.iter().map(f).sum::<f64>() / r.len() as f64;
    let mut means = serde_json::json!({"pixel_auroc": mean(&|m| m.pixel_auroc), "pro": mean(&|m| m.pro), "image_auroc": mean(&|m| m.image_auroc)});
    if r.iter().all(|m| m.kl_only.is_some()) {
        let mm = |f: &dyn Fn(&CategoryMetrics) -> &ModeMetrics| {
            serde_json::json!({
            "pixel_auroc": mean(&|m| f(m).pixel_auroc), "pro": mean(&|m| f(m).pro), "image_auroc": mean(&|m| f(m).image_auroc)})
        };
        means["kl_only"] = mm(&|m| m.kl_only.as_ref().expect("checked"));
        means["feature_only"] = mm(&|m| m.feature_only.as_ref().expect("checked"));
    }
    let json = serde_json::json!({"categories": r, "mean": means, "pro_definition": pro_variant.definition(), "precision": precision.as_str()});
    let p = out.join("metrics.json");
    crate::io::files::write_bytes_atomic(&p, serde_json::to_string_pretty(&json).unwrap_or_default())?;
    // the KL-only and feature-only columns stay empty when only the KL score ran
    let opt = |m: &Option<ModeMetrics>| m.as_ref().map(|m| format!("{:.6},{:.6},{:.6}", m.pixel_auroc, m.pro, m.image_auroc)).unwrap_or_else(|| ",,".into());
    let mut csv = String::from("category,images,pixel_auroc,pro,image_auroc,kl_pixel_auroc,kl_pro,kl_image_auroc,feature_pixel_auroc,feature_pro,feature_image_auroc\n");
    for m in r {
        csv.push_str(&format!("{},{},{:.6},{:.6},{:.6},{},{}\n", m.category, m.images, m.pixel_auroc, m.pro, m.image_auroc, opt(&m.kl_only), opt(&m.feature_only)));
    }
    let p = out.join("metrics.csv");
    crate::io::files::write_bytes_atomic(&p, csv)?;
    let mut csv = String::from("category,defect,images,pixel_auroc,pro,image_auroc,kl_pixel_auroc,kl_pro,kl_image_auroc,feature_pixel_auroc,feature_pro,feature_image_auroc\n");
    for m in r {
        for d in &m.defects {
            let e = &d.ensemble;
            csv.push_str(&format!("{},{},{},{:.6},{:.6},{:.6},{},{}\n", m.category, d.defect, d.images, e.pixel_auroc, e.pro, e.image_auroc, opt(&d.kl_only), opt(&d.feature_only)));
        }
    }
    let p = out.join("defects.csv");
    crate::io::files::write_bytes_atomic(&p, csv)
}

/// report.html: the categories, each defect kind, the α sweep (`alphas`, empty without one), and the pictures.
pub fn write_report(out: &Path, results: &[CategoryMetrics], alphas: &[f32], pictures: &Pictures) -> Result<()> {
    let rows: Vec<Vec<String>> =
        results.iter().map(|m| vec![m.category.clone(), m.images.to_string(), format!("{:.4}", m.pixel_auroc), format!("{:.4}", m.pro), format!("{:.4}", m.image_auroc)]).collect();
    let f = |m: &Option<ModeMetrics>| m.as_ref().map(|m| format!("{:.4}", m.pixel_auroc)).unwrap_or_else(|| "–".into());
    let defect_rows: Vec<Vec<String>> = results
        .iter()
        .flat_map(|m| {
            m.defects.iter().map(|d| {
                let e = &d.ensemble;
                vec![
                    format!("{} / {}", m.category, d.defect),
                    d.images.to_string(),
                    format!("{:.4}", e.pixel_auroc),
                    f(&d.kl_only),
                    f(&d.feature_only),
                    format!("{:.4}", e.pro),
                    format!("{:.4}", e.image_auroc),
                ]
            })
        })
        .collect();
    // the α sweep: pixel AUROC per category at each α (empty without --alpha-sweep)
    let alpha_header: Vec<String> = std::iter::once("category".to_string()).chain(alphas.iter().map(|x| format!("α = {x}"))).collect();
    let alpha_rows: Vec<Vec<String>> =
        results.iter().filter(|m| !m.alpha_sweep.is_empty()).map(|m| std::iter::once(m.category.clone()).chain(m.alpha_sweep.iter().map(|p| format!("{:.4}", p.pixel_auroc))).collect()).collect();
    let tables = [
        Table { caption: String::new(), header: vec!["category", "images", "pixel AUROC", "PRO (0.3)", "image AUROC"], rows },
        Table {
            caption: "Per defect kind (its images and the category's normal ones)".into(),
            header: vec!["category / defect", "images", "pixel AUROC", "KL only", "feature only", "PRO (0.3)", "image AUROC"],
            rows: defect_rows,
        },
        Table {
            caption: "Pixel AUROC of the ensemble at each α (--alpha-sweep; chosen on the test set: an upper bound)".into(),
            header: alpha_header.iter().map(|s| s.as_str()).collect(),
            rows: alpha_rows,
        },
    ];
    write_html(&out.join("report.html"), "ran eval", &tables, &pictures.pictures, &pictures.galleries)
}
