//! The loss curve as a PNG, drawn without a plotting library: the moving averages of loss
//! (black), mse (blue), vb (red) and feat_mse (green) against the step, y on a log scale with a
//! grey line at every power of ten.

use super::log::StepRecord;
use crate::Result;
use std::path::Path;

const W: usize = 800;
const H: usize = 400;
const MARGIN: usize = 20;

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    /// A line two pixels wide (Bresenham).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            self.set(x, y + 1, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// Trailing moving average over `w` values.
fn smooth(v: &[f64], w: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(v.len());
    let mut sum = 0.0;
    for i in 0..v.len() {
        sum += v[i];
        if i >= w {
            sum -= v[i - w];
        }
        out.push(sum / (i + 1).min(w) as f64);
    }
    out
}

/// The curves of `records` as an RGB image (W × H).
pub fn render(records: &[StepRecord]) -> Vec<u8> {
    let mut c = Canvas { px: vec![255; W * H * 3] };
    let w = (records.len() / 50).max(1);
    let series: Vec<(Vec<f64>, [u8; 3])> = [
        (records.iter().map(|r| r.loss).collect::<Vec<_>>(), [0, 0, 0]),
        (records.iter().map(|r| r.mse).collect(), [30, 90, 220]),
        (records.iter().map(|r| r.vb).collect(), [210, 40, 40]),
        (records.iter().filter_map(|r| r.feat_mse).collect(), [30, 160, 60]),
    ]
    .into_iter()
    .filter(|(v, _)| v.len() == records.len() && !v.is_empty())
    .map(|(v, col)| (smooth(&v, w), col))
    .collect();
    let logs: Vec<f64> = series.iter().flat_map(|(v, _)| v.iter()).filter(|&&x| x > 0.0 && x.is_finite()).map(|x| x.log10()).collect();
    if logs.is_empty() {
        return c.px;
    }
    let (mut lo, mut hi) = logs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    lo = lo.floor();
    hi = hi.ceil().max(lo + 1.0);
    let (pw, ph) = ((W - 2 * MARGIN) as f64, (H - 2 * MARGIN) as f64);
    let to_y = |v: f64| MARGIN as i64 + (ph * (hi - v.max(1e-300).log10().max(lo)) / (hi - lo)).round() as i64;
    let to_x = |i: usize| MARGIN as i64 + (pw * i as f64 / (records.len().max(2) - 1) as f64).round() as i64;
    for d in lo as i64..=hi as i64 {
        let y = to_y(10f64.powi(d as i32));
        c.line((MARGIN as i64, y), ((W - MARGIN) as i64, y), [215, 215, 215]);
    }
    c.line((MARGIN as i64, MARGIN as i64), (MARGIN as i64, (H - MARGIN) as i64), [120, 120, 120]);
    c.line((MARGIN as i64, (H - MARGIN) as i64), ((W - MARGIN) as i64, (H - MARGIN) as i64), [120, 120, 120]);
    // the loss last, on top
    for (v, col) in series.iter().rev() {
        for i in 1..v.len() {
            c.line((to_x(i - 1), to_y(v[i - 1])), (to_x(i), to_y(v[i])), *col);
        }
        if v.len() == 1 {
            c.line((to_x(0), to_y(v[0])), (to_x(0) + 3, to_y(v[0])), *col);
        }
    }
    c.px
}

pub fn save(path: &Path, records: &[StepRecord]) -> Result<()> {
    let img = image::RgbImage::from_raw(W as u32, H as u32, render(records)).expect("W·H·3 bytes");
    crate::anomaly::render::save_png(path, &img)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A falling loss is drawn from the upper left towards the lower right.
    #[test]
    fn a_falling_curve_falls() {
        let recs: Vec<StepRecord> = (0..100)
            .map(|i| StepRecord {
                step: i + 1,
                lr: 1e-4,
                mse: 0.6 * 10f64.powf(-(i as f64) / 50.0),
                vb: 0.4 * 10f64.powf(-(i as f64) / 50.0),
                feat_mse: None,
                loss: 10f64.powf(-(i as f64) / 50.0),
                seconds: 0.1,
                lg_loss_scale: None,
                skipped: false,
            })
            .collect();
        let px = render(&recs);
        let black_rows = |x: usize| (0..H).filter(|&y| px[(y * W + x) * 3..][..3] == [0, 0, 0]).collect::<Vec<_>>();
        let (left, right) = (black_rows(MARGIN + 5), black_rows(W - MARGIN - 5));
        assert!(!left.is_empty() && !right.is_empty());
        assert!(left[0] + 100 < right[0], "left {left:?} right {right:?}");
    }
}
