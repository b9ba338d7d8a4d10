//! `ran eval`'s pictures of a category: ROC and PRO curves, and overlays of its worst and best images.

use crate::anomaly::render::{save_overlay, DisplayRange};
use crate::error::AtPath;
use crate::eval::category::CategoryMaps;
use crate::eval::datasets::Sample;
use crate::eval::metrics::Pro;
use crate::eval::report::{plot, roc_curve, GalleryItem};
use crate::io::image::{center_crop_arr, load_rgb};
use crate::Result;
use std::path::Path;

/// Pictures (title, path relative to `out`) and galleries (title, items) for report.html.
#[derive(Default)]
pub struct Pictures {
    pub pictures: Vec<(String, String)>,
    pub galleries: Vec<(String, Vec<GalleryItem>)>,
}

impl Pictures {
    /// Writes `<out>/<cat>/roc.png`, `pro.png` and the overlays of the six worst and six best
    /// images; with the calibrated ensemble (`normal_p999`) all overlays share one colour scale.
    pub fn add_category(&mut self, out: &Path, cat: &str, samples: &[Sample], m: &CategoryMaps, pro_curve: &Pro, normal_p999: Option<f32>) -> Result<()> {
        let (n, size) = (m.n(), m.size);
        let px = size * size;
        let dir = out.join(cat);
        std::fs::create_dir_all(&dir).at_path(&dir)?;
        let (rx, ry) = roc_curve(&m.scores, &m.pixel_labels());
        let (ix, iy) = roc_curve(&m.img_scores, &m.img_labels);
        plot(&dir.join("roc.png"), 1.0, &[([200, 30, 30], &rx, &ry), ([30, 30, 200], &ix, &iy)])?;
        plot(&dir.join("pro.png"), 0.3, &[([30, 140, 30], &pro_curve.fpr, &pro_curve.pro)])?;
        let mut order: Vec<usize> = (0..n).collect();
        // "worst": anomalous images scored lowest and normal ones scored highest, and the reverse
        order.sort_by(|&x, &y| {
            let k = |i: usize| if m.img_labels[i] { -m.img_scores[i] } else { m.img_scores[i] };
            k(y).total_cmp(&k(x))
        });
        for (title, picks) in [("worst", order.iter().take(6).copied().collect::<Vec<_>>()), ("best", order.iter().rev().take(6).copied().collect())] {
            let mut items = Vec::new();
            for i in picks {
                let s = &samples[i];
                let map = &m.scores[i * px..(i + 1) * px];
                let img = center_crop_arr(&load_rgb(&s.image)?, size);
                let own = map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                // the calibrated ensemble: one colour scale for all, red beyond 99.9% of the normal pixels
                let (lo, hi) = DisplayRange::Auto.resolve(own, normal_p999);
                let name = format!("{title}_{i:04}.png");
                save_overlay(&dir.join(&name), &img, map, lo, hi, None)?;
                items.push(GalleryItem {
                    overlay: format!("{cat}/{name}"),
                    caption: format!("{} ({}) score {:.3}", s.image.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(), s.defect, m.img_scores[i]),
                });
            }
            self.galleries.push((format!("{cat}: {title} images"), items));
        }
        self.pictures.push((format!("{cat}: ROC (red pixels, blue images)"), format!("{cat}/roc.png")));
        self.pictures.push((format!("{cat}: PRO to FPR 0.3"), format!("{cat}/pro.png")));
        Ok(())
    }
}
