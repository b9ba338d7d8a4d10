//! Exact ranking metrics, O(P log P) by one sort, no threshold sweeps:
//! - AUROC with ties counted as scikit-learn's roc_auc_score does (trapezoids over distinct
//!   scores);
//! - AU-PRO to an FPR limit by the MVTec AD official definition: 8-connected ground-truth
//!   components per image, FPR over all anomaly-free pixels, PRO = mean over all components of
//!   the covered fraction, tied scores merged, (0,0) and (1,1) added, trapezoid to the limit with
//!   linear interpolation, divided by the limit.

use crate::{Error, Result};

fn order_desc(scores: &[f32]) -> Result<Vec<u32>> {
    if let Some(i) = scores.iter().position(|v| v.is_nan()) {
        return Err(Error::InvalidArgument(format!("score #{i} is NaN")));
    }
    if scores.len() > u32::MAX as usize {
        return Err(Error::InvalidArgument("more than 2^32 scores".into()));
    }
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    idx.sort_unstable_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
    Ok(idx)
}

/// Area under the ROC curve of `scores` for binary `labels`.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Result<f64> {
    if scores.len() != labels.len() {
        return Err(Error::InvalidArgument(format!("{} scores for {} labels", scores.len(), labels.len())));
    }
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return Err(Error::InvalidArgument("AUROC is undefined with only one class present".into()));
    }
    let idx = order_desc(scores)?;
    let (mut tp, mut fp, mut area) = (0f64, 0f64, 0f64);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i] as usize];
        let (tp0, fp0) = (tp, fp);
        while i < idx.len() && scores[idx[i] as usize] == s {
            if labels[idx[i] as usize] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        area += (fp - fp0) * (tp + tp0) / 2.0;
    }
    Ok(area / (pos * neg))
}

/// 8-connected components of one mask (non-zero = anomalous): (label per pixel, 0 = none;
/// number of components).
pub fn components(mask: &[u8], h: usize, w: usize) -> (Vec<u32>, usize) {
    let mut lab = vec![0u32; h * w];
    let mut n = 0u32;
    let mut stack = Vec::new();
    for start in 0..h * w {
        if mask[start] == 0 || lab[start] != 0 {
            continue;
        }
        n += 1;
        lab[start] = n;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (y, x) = ((p / w) as isize, (p % w) as isize);
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let (ny, nx) = (y + dy, x + dx);
                    if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
                    if mask[q] != 0 && lab[q] == 0 {
                        lab[q] = n;
                        stack.push(q);
                    }
                }
            }
        }
    }
    (lab, n as usize)
}

/// The MVTec official `trapezoid(x, y, x_max)`.
fn trapezoid(x: &[f64], y: &[f64], x_max: f64) -> f64 {
    let mut correction = 0.0;
    if !x.contains(&x_max) {
        // bisect: first index with x > x_max
        let ins = x.partition_point(|&v| v <= x_max);
        if ins > 0 && ins < x.len() {
            let yi = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]);
            correction = 0.5 * (yi + y[ins - 1]) * (x_max - x[ins - 1]);
        }
    }
    let pts: Vec<(f64, f64)> = x.iter().zip(y).filter(|(a, _)| **a <= x_max).map(|(a, b)| (*a, *b)).collect();
    pts.windows(2).map(|p| 0.5 * (p[1].1 + p[0].1) * (p[1].0 - p[0].0)).sum::<f64>() + correction
}

/// The PRO curve (fpr, pro) with the end points, and AU-PRO up to `limit` / `limit`.
pub struct Pro {
    pub fpr: Vec<f64>,
    pub pro: Vec<f64>,
    pub au_pro: f64,
}

/// AU-PRO over N images of h×w: `scores` and `masks` (non-zero = anomalous) row-major [N,h,w].
pub fn au_pro(scores: &[f32], masks: &[u8], n: usize, h: usize, w: usize, limit: f64) -> Result<Pro> {
    let px = n * h * w;
    if scores.len() != px || masks.len() != px {
        return Err(Error::InvalidArgument(format!("{} scores and {} mask pixels for {n} images of {h}x{w}", scores.len(), masks.len())));
    }
    // per pixel: 0 = anomaly-free, else 1/|component| via the global component id
    let mut comp = vec![0u32; px];
    let mut sizes: Vec<f64> = vec![0.0];
    for i in 0..n {
        let (lab, k) = components(&masks[i * h * w..(i + 1) * h * w], h, w);
        let base = sizes.len() as u32 - 1;
        sizes.extend(std::iter::repeat_n(0.0, k));
        for (p, &l) in lab.iter().enumerate() {
            if l != 0 {
                comp[i * h * w + p] = base + l;
                sizes[(base + l) as usize] += 1.0;
            }
        }
    }
    let regions = sizes.len() - 1;
    let ok = comp.iter().filter(|&&c| c == 0).count();
    if regions == 0 {
        return Err(Error::InvalidArgument("AU-PRO is undefined without any anomalous region in the ground truth".into()));
    }
    if ok == 0 {
        return Err(Error::InvalidArgument("AU-PRO is undefined without anomaly-free pixels".into()));
    }
    let idx = order_desc(scores)?;
    let (mut fp, mut pro_sum) = (0f64, 0f64);
    let (mut fpr, mut pro) = (vec![0.0], vec![0.0]);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i] as usize];
        while i < idx.len() && scores[idx[i] as usize] == s {
            let c = comp[idx[i] as usize];
            if c == 0 {
                fp += 1.0;
            } else {
                pro_sum += 1.0 / sizes[c as usize];
            }
            i += 1;
        }
        fpr.push((fp / ok as f64).min(1.0));
        pro.push((pro_sum / regions as f64).min(1.0));
    }
    fpr.push(1.0);
    pro.push(1.0);
    let au = trapezoid(&fpr, &pro, limit) / limit;
    Ok(Pro { fpr, pro, au_pro: au })
}

/// The anomaly_diff repository's own PRO (what produced the paper's numbers), for like-for-like
/// comparison: scikit-learn `roc_curve` thresholds (with its drop_intermediate thinning and the
/// +∞ start) whose FPR ≤ `limit`, subsampled to about 1000 by a stride, at each the mean over all
/// 8-connected regions of the covered fraction (score ≥ threshold), trapezoids from (0, 0), then a
/// rectangle at the last PRO up to `limit`; divided by `limit`.
pub fn pro_official_repo(scores: &[f32], masks: &[u8], n: usize, h: usize, w: usize, limit: f64) -> Result<f64> {
    let px = n * h * w;
    if scores.len() != px || masks.len() != px {
        return Err(Error::InvalidArgument(format!("{} scores and {} mask pixels for {n} images of {h}x{w}", scores.len(), masks.len())));
    }
    // roc_curve: one point per distinct score (descending), then drop_intermediate
    let idx = order_desc(scores)?;
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut pts: Vec<(f64, f64, f32)> = Vec::new(); // (fps, tps, threshold)
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i] as usize];
        while i < idx.len() && scores[idx[i] as usize] == s {
            if masks[idx[i] as usize] != 0 {
                tp += 1.0
            } else {
                fp += 1.0
            }
            i += 1;
        }
        pts.push((fp, tp, s));
    }
    if pts.len() > 2 {
        let keep: Vec<bool> =
            (0..pts.len()).map(|k| k == 0 || k + 1 == pts.len() || pts[k - 1].0 - 2.0 * pts[k].0 + pts[k + 1].0 != 0.0 || pts[k - 1].1 - 2.0 * pts[k].1 + pts[k + 1].1 != 0.0).collect();
        pts = pts.into_iter().zip(keep).filter(|(_, k)| *k).map(|(p, _)| p).collect();
    }
    let neg = fp;
    if neg == 0.0 {
        return Err(Error::InvalidArgument("PRO is undefined without anomaly-free pixels".into()));
    }
    let mut curve: Vec<(f64, f32)> = vec![(0.0, f32::INFINITY)];
    curve.extend(pts.iter().map(|&(f, _, t)| (f / neg, t)));
    let mut valid: Vec<(f64, f32)> = curve.into_iter().filter(|(f, _)| *f <= limit).collect();
    if valid.len() > 1000 {
        let step = valid.len() / 1000;
        valid = valid.into_iter().step_by(step).collect();
    }
    // regions and their scores, descending, for counting coverage at any threshold
    let mut regions: Vec<Vec<f32>> = Vec::new();
    for im in 0..n {
        let (lab, k) = components(&masks[im * h * w..(im + 1) * h * w], h, w);
        let mut rs: Vec<Vec<f32>> = vec![Vec::new(); k];
        for (p, &l) in lab.iter().enumerate() {
            if l != 0 {
                rs[l as usize - 1].push(scores[im * h * w + p]);
            }
        }
        for r in rs.iter_mut() {
            r.sort_unstable_by(|a, b| b.total_cmp(a));
        }
        regions.extend(rs);
    }
    if regions.is_empty() {
        return Err(Error::InvalidArgument("PRO is undefined without any anomalous region in the ground truth".into()));
    }
    let (mut area, mut x0, mut y0) = (0f64, 0f64, 0f64);
    for &(f, thr) in &valid {
        let pro = regions.iter().map(|r| r.partition_point(|&v| v >= thr) as f64 / r.len() as f64).sum::<f64>() / regions.len() as f64;
        area += 0.5 * (f - x0) * (y0 + pro);
        x0 = f;
        y0 = pro;
    }
    area += (limit - x0) * y0;
    Ok(area / limit)
}
