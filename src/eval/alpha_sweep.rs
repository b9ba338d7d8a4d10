//! `eval --alpha-sweep`: the ensemble rescored at each α from the cached KL and feature maps, and
//! the best α per category as alpha_table.json (for `detect --alpha-table`).

use crate::anomaly::score::{combine, topk_mean, Calibration, Ensemble};
use crate::error::AtPath;
use crate::eval::metrics::auroc;
use crate::eval::results::{best_alpha, AlphaPoint, CategoryMetrics};
use crate::{Error, Result};
use std::path::Path;

/// The ensemble's pixel and image AUROC at each α, recombined from the KL and feature maps of
/// `img_labels.len()` images (weighted, or calibrated with `calibration`).
pub fn sweep_alpha(alphas: &[f32], kl: &[f32], feat: &[f32], calibration: Option<Calibration>, labels: &[bool], img_labels: &[bool], topk: usize) -> Result<Vec<AlphaPoint>> {
    let n = img_labels.len();
    let px = kl.len() / n.max(1);
    if px == 0 || kl.len() != n * px || feat.len() != kl.len() {
        return Err(Error::InvalidArgument(format!("--alpha-sweep: {} KL and {} feature values for {n} images", kl.len(), feat.len())));
    }
    let mut out = Vec::new();
    for &alpha in alphas {
        let e = match calibration {
            Some(c) => Ensemble::Calibrated(alpha, c),
            None => Ensemble::Weighted(alpha),
        };
        let map = combine(e, feat, kl);
        let scores: Vec<f32> = map.chunks(px).map(|m| topk_mean(m, topk)).collect();
        out.push(AlphaPoint { alpha, pixel_auroc: auroc(&map, labels)?, image_auroc: auroc(&scores, img_labels)? });
    }
    Ok(out)
}

/// alpha_table.json: the best α of each category's sweep.
pub fn write_alpha_table(out: &Path, r: &[CategoryMetrics]) -> Result<()> {
    let table: std::collections::BTreeMap<&str, f32> = r.iter().filter_map(|m| best_alpha(m).map(|p| (m.category.as_str(), p.alpha))).collect();
    std::fs::create_dir_all(out).at_path(out)?;
    let p = out.join("alpha_table.json");
    crate::io::files::write_bytes_atomic(&p, serde_json::to_string_pretty(&table).unwrap_or_default())
}
