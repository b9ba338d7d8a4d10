//! `ran detect`'s result files: one typed row per image, written as results.json, results.csv
//! and report.html.

use crate::eval::report::{write_html, GalleryItem, Table};
use crate::Result;
use std::path::{Path, PathBuf};

/// One scored image (a row of results.json / results.csv).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DetectRow {
    pub file: String,
    pub class: Option<usize>,
    pub category: Option<String>,
    pub alpha: f32,
    pub image_score: f32,
    pub map_min: f32,
    pub map_max: f32,
    pub display_range: [f32; 2],
    pub threshold: Option<f32>,
    pub normal_p999: Option<f32>,
    /// above every normal calibration image of its class: worth a look
    pub above_normal: Option<bool>,
    /// the class's image threshold (calibrated ensemble): the largest normal calibration score,
    /// or the F1-optimal one of a calibration file made with a validation set
    pub image_threshold: Option<f32>,
    /// the verdict: the image score is above `image_threshold`
    pub defective: Option<bool>,
    pub map16: String,
    pub heatmap: String,
    pub overlay: String,
    pub seconds: f64,
}

/// An input that was not scored, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Failed {
    pub file: String,
    pub error: String,
}

pub fn failed_rows(failed: &[(PathBuf, String)]) -> Vec<Failed> {
    failed.iter().map(|(p, e)| Failed { file: p.display().to_string(), error: e.clone() }).collect()
}

/// A number as results.json writes it (f32 widened to f64, NaN as null), so the CSV and the JSON agree.
fn json_number(x: f32) -> String {
    serde_json::Value::from(x).to_string()
}

/// results.json (`settings`, `images`, `failed`), results.csv and report.html in `out`.
pub fn write_detect_results(out: &Path, settings: serde_json::Value, rows: &[DetectRow], failed: &[(PathBuf, String)]) -> Result<()> {
    let json = serde_json::json!({"settings": settings, "images": rows, "failed": failed_rows(failed)});
    let jp = out.join("results.json");
    crate::io::files::write_bytes_atomic(&jp, serde_json::to_string_pretty(&json).unwrap_or_default())?;
    let mut csv = String::from("file,class,image_score,map_min,map_max,seconds,above_normal,defective\n");
    for r in rows {
        csv.push_str(&format!(
            "\"{}\",{},{},{},{},{:.3},{},{}\n",
            r.file.replace('"', "\"\""),
            r.class.map(|c| c.to_string()).unwrap_or_default(),
            json_number(r.image_score),
            json_number(r.map_min),
            json_number(r.map_max),
            r.seconds,
            r.above_normal.map(|b| b.to_string()).unwrap_or_default(),
            r.defective.map(|b| b.to_string()).unwrap_or_default()
        ));
    }
    let cp = out.join("results.csv");
    crate::io::files::write_bytes_atomic(&cp, csv)?;
    write_report(out, rows, failed)
}

/// report.html: the images from the highest score down, as a table and as overlays.
fn write_report(out: &Path, rows: &[DetectRow], failed: &[(PathBuf, String)]) -> Result<()> {
    let mut order: Vec<&DetectRow> = rows.iter().collect();
    order.sort_by(|x, y| (y.image_score as f64).total_cmp(&(x.image_score as f64)));
    let above = |r: &DetectRow| match r.above_normal {
        Some(true) => "yes",
        Some(false) => "no",
        None => "–",
    };
    let table = Table {
        caption: "Images, highest score first (above normal: the score exceeds every normal calibration image of its class)".into(),
        header: vec!["file", "category", "image score", "above normal"],
        rows: order.iter().map(|r| vec![r.file.clone(), r.category.clone().unwrap_or_default(), format!("{:.4}", r.image_score as f64), above(r).to_string()]).collect(),
    };
    let failed_table = Table { caption: "Not scored".into(), header: vec!["file", "error"], rows: failed.iter().map(|(p, e)| vec![p.display().to_string(), e.clone()]).collect() };
    // overlays next to report.html: link them by file name
    let base = |p: &str| Path::new(p).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let items: Vec<GalleryItem> = order
        .iter()
        .map(|r| GalleryItem {
            overlay: base(&r.overlay),
            caption: format!("{} ({}) {:.3}{}", base(&r.file), r.category.as_deref().unwrap_or("–"), r.image_score as f64, if above(r) == "yes" { " ▲" } else { "" }),
        })
        .collect();
    write_html(&out.join("report.html"), "ran detect", &[table, failed_table], &[], &[("Overlays, highest score first".into(), items)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(file: &str, score: f32, above: Option<bool>) -> DetectRow {
        let s = |n: &str| format!("/out/{n}");
        DetectRow {
            file: file.into(),
            class: Some(3),
            category: Some("carpet".into()),
            alpha: 0.4,
            image_score: score,
            map_min: -0.1,
            map_max: 2.5,
            display_range: [0.0, 2.5],
            threshold: None,
            normal_p999: None,
            above_normal: above,
            image_threshold: None,
            defective: above,
            map16: s("a_map16.png"),
            heatmap: s("a_heatmap.png"),
            overlay: s("a_overlay.png"),
            seconds: 0.25,
        }
    }

    /// The CSV carries the numbers exactly as results.json does (f32 widened, NaN as null), the
    /// JSON keeps every field of the row, and the report lists the images from the highest score.
    #[test]
    fn csv_json_and_report_agree() {
        let dir = std::env::temp_dir().join(format!("ran-detect-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = [row("low \"q\".png", 0.1, Some(false)), row("high.png", 1.7, Some(true)), row("nan.png", f32::NAN, None)];
        write_detect_results(&dir, serde_json::json!({"seed": 0}), &rows, &[(PathBuf::from("bad.png"), "not an image".into())]).unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
        let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "file,class,image_score,map_min,map_max,seconds,above_normal,defective");
        assert_eq!(lines[1], "\"low \"\"q\"\".png\",3,0.10000000149011612,-0.10000000149011612,2.5,0.250,false,false");
        assert_eq!(lines[3], "\"nan.png\",3,null,-0.10000000149011612,2.5,0.250,,");
        let img = &json["images"];
        assert_eq!(img[0]["image_score"].to_string(), "0.10000000149011612");
        assert_eq!(img[2]["image_score"], serde_json::Value::Null);
        assert_eq!(img[1]["above_normal"], true);
        assert_eq!(img[0]["display_range"], serde_json::json!([0.0, 2.5]));
        let keys: Vec<&str> = img[0].as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in [
            "file",
            "class",
            "category",
            "alpha",
            "image_score",
            "map_min",
            "map_max",
            "display_range",
            "threshold",
            "normal_p999",
            "above_normal",
            "image_threshold",
            "defective",
            "map16",
            "heatmap",
            "overlay",
            "seconds",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        assert_eq!(keys.len(), 17);
        assert_eq!(json["failed"], serde_json::json!([{"file": "bad.png", "error": "not an image"}]));
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        let (hi, lo) = (html.find("high.png").unwrap(), html.find("low &quot;q&quot;.png").or_else(|| html.find("low \"q\".png")).unwrap());
        assert!(hi < lo, "highest score first");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
