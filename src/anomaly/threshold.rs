//! The image threshold of a calibration: a score above it is a `defective` verdict. By default
//! the largest normal calibration score (nothing seen as normal is flagged); with a labelled
//! validation set, the threshold with the best F1 on it (as anomalib's F1AdaptiveThreshold).

use crate::{Error, Result};

/// Where a class's threshold came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdSource {
    /// the largest image score of the normal calibration images
    NormalMax,
    /// the F1-optimal cut on a labelled validation set
    ValidationF1,
}

/// A threshold with its quality on the validation set (the F1 source only).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct F1Threshold {
    pub threshold: f32,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub normal: usize,
    pub defective: usize,
}

/// The verdict: defective when the image score is above the threshold.
pub fn is_defective(score: f32, threshold: f32) -> bool {
    score > threshold
}

/// The F1-optimal threshold for (image score, is defective) pairs. An image is flagged when its
/// score is above the threshold, so the candidates are the scores themselves (flag everything
/// above this one) and one below every score (flag all). Ties in F1 go to the lowest threshold,
/// as anomalib's argmax over ascending thresholds. Needs normal and defective images both.
pub fn f1_optimal(scored: &[(f32, bool)]) -> Result<F1Threshold> {
    let defective = scored.iter().filter(|s| s.1).count();
    let normal = scored.len() - defective;
    if defective == 0 || normal == 0 {
        return Err(Error::InvalidArgument(format!("the validation set has {normal} normal and {defective} defective images: an F1 threshold needs both")));
    }
    if let Some(s) = scored.iter().find(|s| !s.0.is_finite()) {
        return Err(Error::InvalidArgument(format!("a validation image scored {}: cannot place a threshold", s.0)));
    }
    let mut v = scored.to_vec();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    // walk from the top: after taking every image with score >= v[i].0, the cut is the next lower score
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut best: Option<F1Threshold> = None;
    let mut i = 0;
    while i < v.len() {
        let s = v[i].0;
        while i < v.len() && v[i].0 == s {
            if v[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        // flagged: every score >= s, i.e. above the next lower score (or below all when none is left)
        let threshold = if i < v.len() { v[i].0 } else { s - 1.0f32.max(s.abs() * 1e-3) };
        let precision = tp as f64 / (tp + fp) as f64;
        let recall = tp as f64 / defective as f64;
        let f1 = if tp == 0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        // descending thresholds: >= keeps the lowest among equal F1
        if best.is_none_or(|b| f1 >= b.f1) {
            best = Some(F1Threshold { threshold, f1, precision, recall, normal, defective });
        }
    }
    Ok(best.expect("at least one image"))
}

/// The verdicts at a given threshold against the true labels (eval with a calibration file):
/// how the threshold a line would run with does on a labelled test set.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct VerdictQuality {
    pub threshold: f32,
    pub true_positives: usize,
    pub false_positives: usize,
    pub true_negatives: usize,
    pub false_negatives: usize,
    /// 0 when nothing is flagged (scikit-learn's zero_division=0)
    pub precision: f64,
    /// 0 when there is no defective image
    pub recall: f64,
    pub f1: f64,
    pub accuracy: f64,
}

/// Counts the `is_defective` verdicts of (image score, is defective) pairs at `threshold`.
pub fn verdict_quality(scored: &[(f32, bool)], threshold: f32) -> VerdictQuality {
    let count = |flag: bool, truth: bool| scored.iter().filter(|(s, d)| is_defective(*s, threshold) == flag && *d == truth).count();
    let (tp, fp, tn, fn_) = (count(true, true), count(true, false), count(false, false), count(false, true));
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    VerdictQuality {
        threshold,
        true_positives: tp,
        false_positives: fp,
        true_negatives: tn,
        false_negatives: fn_,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fn_),
        f1: ratio(2 * tp, 2 * tp + fp + fn_),
        accuracy: ratio(tp + tn, scored.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-worked set below at the cut 3: flags 4 and 5 (defective) only; 2.5 is missed.
    /// P = 1, R = 2/3, F1 = 4/5, accuracy 5/6; at the cut 9 nothing is flagged: P = 0 by convention.
    #[test]
    fn verdict_quality_by_hand() {
        let s = [(1.0, false), (2.0, false), (3.0, false), (2.5, true), (4.0, true), (5.0, true)];
        let q = verdict_quality(&s, 3.0);
        assert_eq!((q.true_positives, q.false_positives, q.true_negatives, q.false_negatives), (2, 0, 3, 1));
        assert_eq!(q.precision, 1.0);
        assert!((q.recall - 2.0 / 3.0).abs() < 1e-12 && (q.f1 - 0.8).abs() < 1e-12 && (q.accuracy - 5.0 / 6.0).abs() < 1e-12, "{q:?}");
        let none = verdict_quality(&s, 9.0);
        assert_eq!((none.precision, none.recall, none.f1, none.true_negatives), (0.0, 0.0, 0.0, 3));
    }

    /// Worked by hand: normal 1, 2, 3; defective 2.5, 4, 5. Flagging everything above 2 catches
    /// all three defects with one false alarm: P = 3/4, R = 1, F1 = 6/7 (the best cut).
    #[test]
    fn the_hand_worked_case() {
        let s = [(1.0, false), (2.0, false), (3.0, false), (2.5, true), (4.0, true), (5.0, true)];
        let t = f1_optimal(&s).unwrap();
        assert_eq!(t.threshold, 2.0);
        assert!((t.f1 - 6.0 / 7.0).abs() < 1e-12 && t.precision == 0.75 && t.recall == 1.0, "{t:?}");
        assert_eq!((t.normal, t.defective), (3, 3));
        assert!(!is_defective(2.0, t.threshold) && is_defective(2.5, t.threshold));
    }

    /// Against brute force: every cut tried by counting the flagged images directly.
    #[test]
    fn matches_brute_force_on_pseudo_random_sets() {
        let mut x = 12345u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        for case in 0..200 {
            let n = 2 + (next() % 30) as usize;
            // coarse scores make ties common
            let mut s: Vec<(f32, bool)> = (0..n).map(|_| ((next() % 12) as f32 * 0.5, next() % 3 == 0)).collect();
            s[0].1 = true;
            s[1].1 = false;
            let t = f1_optimal(&s).unwrap();
            let mut cuts: Vec<f32> = s.iter().map(|p| p.0).collect();
            cuts.push(f32::NEG_INFINITY);
            let f1_at = |c: f32| {
                let tp = s.iter().filter(|p| p.1 && p.0 > c).count() as f64;
                let flagged = s.iter().filter(|p| p.0 > c).count() as f64;
                let pos = s.iter().filter(|p| p.1).count() as f64;
                if tp == 0.0 {
                    0.0
                } else {
                    2.0 * tp / (flagged + pos)
                }
            };
            let best = cuts.iter().map(|&c| f1_at(c)).fold(0.0, f64::max);
            assert!((t.f1 - best).abs() < 1e-12, "case {case}: {} vs brute force {best}", t.f1);
            assert!((f1_at(t.threshold) - t.f1).abs() < 1e-12, "case {case}: the threshold does not give its F1");
            // the lowest threshold among the best: no cut that flags more images reaches the same F1
            let flags_more = |c: f32| s.iter().any(|p| c < p.0 && p.0 <= t.threshold);
            assert!(cuts.iter().filter(|&&c| flags_more(c)).all(|&c| f1_at(c) < best - 1e-12), "case {case}: a lower cut ties");
        }
    }

    #[test]
    fn needs_both_kinds() {
        assert!(f1_optimal(&[(1.0, true), (2.0, true)]).unwrap_err().to_string().contains("0 normal and 2 defective"));
        assert!(f1_optimal(&[(f32::NAN, true), (2.0, false)]).is_err());
    }
}
