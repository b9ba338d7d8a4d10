//! An image's final maps for its class: the scorer runs one ensemble for the whole batch; the
//! class's calibration and its α from a per-category table are applied afterwards.

use crate::anomaly::score::{Calibration, Ensemble, ImageScores};
use std::collections::BTreeMap;

/// α per category: the table's where it names the category, else the default (--alpha).
pub struct ClassAlphas {
    pub default: f32,
    pub table: Option<BTreeMap<String, f32>>,
}

impl ClassAlphas {
    /// The table's α for `category`, if it has one.
    pub fn listed(&self, category: Option<&str>) -> Option<f32> {
        self.table.as_ref().zip(category).and_then(|(t, c)| t.get(c).copied())
    }

    pub fn of(&self, category: Option<&str>) -> f32 {
        self.listed(category).unwrap_or(self.default)
    }
}

/// Recombines `sc` (scored with `scored_as`) for its class: the calibrated ensemble when the
/// class has a `calibration`, else a weighted ensemble at the table's α (`listed`); the sum has
/// no α. Returns the α the image is reported with.
pub fn rescore_for_class(sc: &mut ImageScores, scored_as: Ensemble, alphas: &ClassAlphas, category: Option<&str>, calibration: Option<Calibration>, topk: usize) -> f32 {
    let listed = alphas.listed(category);
    let alpha = listed.unwrap_or(alphas.default);
    match (calibration, scored_as, listed) {
        (Some(c), _, _) => sc.reweight(Ensemble::Calibrated(alpha, c), topk),
        (None, Ensemble::Weighted(_), Some(al)) => sc.reweight(Ensemble::Weighted(al), topk),
        _ => {}
    }
    alpha
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::score::combine;

    fn scores() -> ImageScores {
        let kl_map = vec![0.0, 1.0, 2.0, 4.0];
        let feat_map = vec![3.0, 1.0, 0.5, 0.0];
        let score_map = combine(Ensemble::Weighted(0.5), &feat_map, &kl_map);
        ImageScores { h: 2, w: 2, image_score: crate::anomaly::score::topk_mean(&score_map, 2), kl_map, feat_map: Some(feat_map), score_map }
    }

    /// Each case against the maps recombined by hand (`combine` on the same KL and feature maps).
    #[test]
    fn the_class_gets_its_calibration_and_its_alpha() {
        let table: BTreeMap<String, f32> = [("grid".to_string(), 0.9)].into();
        let alphas = ClassAlphas { default: 0.5, table: Some(table) };
        let cal = Calibration { kl_mean: 1.0, kl_std: 2.0, feat_mean: 0.5, feat_std: 0.25, images: 3 };
        let s0 = scores();
        let (f, k) = (s0.feat_map.clone().unwrap(), s0.kl_map.clone());
        // listed, weighted: α = 0.9
        let mut s = scores();
        assert_eq!(rescore_for_class(&mut s, Ensemble::Weighted(0.5), &alphas, Some("grid"), None, 2), 0.9);
        assert_eq!(s.score_map, combine(Ensemble::Weighted(0.9), &f, &k));
        // not listed: the scorer's maps stay, α the default
        let mut s = scores();
        assert_eq!(rescore_for_class(&mut s, Ensemble::Weighted(0.5), &alphas, Some("wood"), None, 2), 0.5);
        assert_eq!(s.score_map, s0.score_map);
        // calibrated: at the listed α, and at the default for an unlisted class
        let mut s = scores();
        assert_eq!(rescore_for_class(&mut s, Ensemble::Weighted(0.5), &alphas, Some("grid"), Some(cal), 2), 0.9);
        assert_eq!(s.score_map, combine(Ensemble::Calibrated(0.9, cal), &f, &k));
        let mut s = scores();
        rescore_for_class(&mut s, Ensemble::Weighted(0.5), &alphas, None, Some(cal), 2);
        assert_eq!(s.score_map, combine(Ensemble::Calibrated(0.5, cal), &f, &k));
        assert_eq!(s.image_score, crate::anomaly::score::topk_mean(&s.score_map, 2));
        // the sum has no α to change
        let mut s = scores();
        s.reweight(Ensemble::Sum, 2);
        let summed = s.score_map.clone();
        assert_eq!(rescore_for_class(&mut s, Ensemble::Sum, &alphas, Some("grid"), None, 2), 0.9);
        assert_eq!(s.score_map, summed);
    }
}
