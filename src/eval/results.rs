//! `ran eval`'s results: typed rows, serialised as metrics.json and read by the tables and summary.

use crate::anomaly::score::Calibration;
use crate::anomaly::threshold::VerdictQuality;

/// The ensemble at one α of a sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AlphaPoint {
    pub alpha: f32,
    pub pixel_auroc: f64,
    pub image_auroc: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ModeMetrics {
    pub pixel_auroc: f64,
    pub pro: f64,
    pub image_auroc: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CategoryMetrics {
    pub category: String,
    pub images: usize,
    /// the KL map alone and the feature map alone, when the feature score ran
    pub kl_only: Option<ModeMetrics>,
    pub feature_only: Option<ModeMetrics>,
    pub pixel_auroc: f64,
    pub pro: f64,
    pub image_auroc: f64,
    /// the map statistics of `--ensemble calibrated`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// with it, the 99.9th percentile of the ensemble on those normal images (top of the colour scale)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normal_p999: Option<f32>,
    /// with a calibration file: its image threshold's verdicts on this test set
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdicts: Option<VerdictQuality>,
    /// each defect kind against the normal test images: where the method works and where not
    pub defects: Vec<DefectMetrics>,
    /// `--alpha-sweep`: the ensemble (weighted, or calibrated when that is the ensemble) at each α
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alpha_sweep: Vec<AlphaPoint>,
}

/// One defect kind's images together with all normal test images of its category.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DefectMetrics {
    pub defect: String,
    pub images: usize,
    pub ensemble: ModeMetrics,
    pub kl_only: Option<ModeMetrics>,
    pub feature_only: Option<ModeMetrics>,
}

/// The best α of a category's sweep (the first of equals).
pub fn best_alpha(m: &CategoryMetrics) -> Option<&AlphaPoint> {
    m.alpha_sweep.iter().fold(None, |best: Option<&AlphaPoint>, p| match best {
        Some(b) if b.pixel_auroc >= p.pixel_auroc => Some(b),
        _ => Some(p),
    })
}
