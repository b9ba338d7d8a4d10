//! `ran reconstruct`'s result files: one typed row per image, written as reconstruct.json and
//! report.html.

use crate::eval::detect_results::failed_rows;
use crate::eval::report::{write_html, GalleryItem, Table};
use crate::Result;
use std::path::{Path, PathBuf};

/// One reconstructed image (a row of reconstruct.json).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReconstructRow {
    pub file: String,
    pub class: Option<usize>,
    /// the PaDiM loss at x0 and after each iteration
    pub padim_loss: Vec<f64>,
    pub diff_min: f32,
    pub diff_max: f32,
    pub diff_mean: f64,
    /// the iterations the strip's frames show
    pub frames_at: Vec<usize>,
    pub reconstruction: String,
    pub frames: String,
    pub diff_heatmap: String,
    pub diff16: String,
}

impl ReconstructRow {
    fn loss_before(&self) -> f64 {
        self.padim_loss.first().copied().unwrap_or(f64::NAN)
    }
    fn loss_after(&self) -> f64 {
        self.padim_loss.last().copied().unwrap_or(f64::NAN)
    }
}

/// reconstruct.json (`model`, `padim`, `settings`, `images`, `failed`) and report.html in `out`.
pub fn write_reconstruct_results(out: &Path, header: serde_json::Value, rows: &[ReconstructRow], failed: &[(PathBuf, String)]) -> Result<()> {
    let mut json = header;
    json["images"] = serde_json::to_value(rows).unwrap_or_default();
    json["failed"] = serde_json::to_value(failed_rows(failed)).unwrap_or_default();
    let jp = out.join("reconstruct.json");
    crate::io::files::write_bytes_atomic(&jp, serde_json::to_string_pretty(&json).unwrap_or_default())?;
    write_report(out, rows, failed)
}

/// report.html: per image the frames, |x0 − x̂| and the PaDiM maps before and after, with the loss.
fn write_report(out: &Path, rows: &[ReconstructRow], failed: &[(PathBuf, String)]) -> Result<()> {
    let base = |p: &str| Path::new(p).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let table = Table {
        caption: "PaDiM loss before and after".into(),
        header: vec!["file", "loss before", "loss after", "mean |x0 − x̂|"],
        rows: rows.iter().map(|r| vec![r.file.clone(), format!("{:.4}", r.loss_before()), format!("{:.4}", r.loss_after()), format!("{:.4}", r.diff_mean)]).collect(),
    };
    let failed_table = Table { caption: "Not reconstructed".into(), header: vec!["file", "error"], rows: failed.iter().map(|(p, e)| vec![p.display().to_string(), e.clone()]).collect() };
    let galleries: Vec<(String, Vec<GalleryItem>)> = rows
        .iter()
        .map(|r| {
            let frames_at: Vec<String> = r.frames_at.iter().map(|k| k.to_string()).collect();
            let stem = base(&r.frames).trim_end_matches("_frames.png").to_string();
            let items = vec![
                GalleryItem { overlay: base(&r.frames), caption: format!("iterations {}", frames_at.join(", ")) },
                GalleryItem { overlay: base(&r.diff_heatmap), caption: "|x0 − x̂|".into() },
                GalleryItem { overlay: format!("{stem}_padim_before.png"), caption: "PaDiM map before".into() },
                GalleryItem { overlay: format!("{stem}_padim_after.png"), caption: "after (same scale)".into() },
            ];
            (format!("{}: loss {:.3} → {:.3}", base(&r.file), r.loss_before(), r.loss_after()), items)
        })
        .collect();
    write_html(&out.join("report.html"), "ran reconstruct", &[table, failed_table], &[], &galleries)
}
