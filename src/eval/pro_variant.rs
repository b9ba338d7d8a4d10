//! `--pro-variant`: which definition of AU-PRO (FPR ≤ 0.3) is reported.

use crate::eval::metrics::{au_pro, pro_official_repo};
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProVariant {
    /// the MVTec AD official AU-PRO
    Mvtec,
    /// the paper repository's own PRO, for comparing with its published numbers
    OfficialRepo,
}

impl ProVariant {
    /// The option's spelling.
    pub fn name(self) -> &'static str {
        match self {
            ProVariant::Mvtec => "mvtec",
            ProVariant::OfficialRepo => "official-repo",
        }
    }

    /// What metrics.json says the number is.
    pub fn definition(self) -> &'static str {
        match self {
            ProVariant::OfficialRepo => "anomaly_diff repository: sklearn roc_curve thresholds with FPR <= 0.3 (about 1000), mean region coverage, trapezoids from (0,0), rectangle tail to 0.3, / 0.3",
            ProVariant::Mvtec => "MVTec AD official: 8-connected regions, FPR over anomaly-free pixels, integrated to 0.3, / 0.3",
        }
    }

    /// The AU-PRO to FPR 0.3 of `n` maps of h×w with their masks.
    pub fn au_pro(self, scores: &[f32], masks: &[u8], n: usize, h: usize, w: usize) -> Result<f64> {
        match self {
            ProVariant::Mvtec => Ok(au_pro(scores, masks, n, h, w, 0.3)?.au_pro),
            ProVariant::OfficialRepo => pro_official_repo(scores, masks, n, h, w, 0.3),
        }
    }
}

impl std::fmt::Display for ProVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
