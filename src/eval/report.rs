//! Pictures and the HTML report of an evaluation: ROC and PRO curves drawn as PNG (a small line
//! plotter, no dependency), and report.html with the metric table, the curves and a gallery of the
//! best and worst overlays.

use crate::{Error, Result};
use std::path::Path;

const W: usize = 420;
const H: usize = 320;
const M: usize = 36; // margin

fn put(img: &mut [u8], x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
        let i = (y as usize * W + x as usize) * 3;
        img[i..i + 3].copy_from_slice(&c);
    }
}

fn line(img: &mut [u8], (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        for d in 0..2 {
            put(img, x.round() as i64, y.round() as i64 + d, c);
        }
    }
}

/// Plots each (label colour, xs, ys) on [0, x_max] × [0, 1] with axes and a 0.1 grid; PNG at `path`.
pub fn plot(path: &Path, x_max: f64, series: &[([u8; 3], &[f64], &[f64])]) -> Result<()> {
    let mut img = vec![255u8; W * H * 3];
    let (pw, ph) = ((W - 2 * M) as f64, (H - 2 * M) as f64);
    let to = |x: f64, y: f64| (M as f64 + x / x_max * pw, (H - M) as f64 - y * ph);
    for k in 0..=10 {
        let f = k as f64 / 10.0;
        let g = [225, 225, 225];
        line(&mut img, to(f * x_max, 0.0), to(f * x_max, 1.0), g);
        line(&mut img, to(0.0, f), to(x_max, f), g);
    }
    line(&mut img, to(0.0, 0.0), to(x_max, 0.0), [0, 0, 0]);
    line(&mut img, to(0.0, 0.0), to(0.0, 1.0), [0, 0, 0]);
    for (c, xs, ys) in series {
        let pts: Vec<(f64, f64)> = xs.iter().zip(ys.iter()).filter(|(x, _)| **x <= x_max).map(|(x, y)| to(*x, *y)).collect();
        for p in pts.windows(2) {
            line(&mut img, p[0], p[1], *c);
        }
    }
    crate::anomaly::render::save_png(path, &image::RgbImage::from_raw(W as u32, H as u32, img).ok_or_else(|| Error::InvalidArgument("plot buffer".into()))?)
}

/// The ROC curve (fpr, tpr) at every distinct score.
pub fn roc_curve(scores: &[f32], labels: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|&&l| l).count().max(1) as f64;
    let neg = (labels.len() as f64 - pos).max(1.0);
    let (mut tp, mut fp) = (0.0, 0.0);
    let (mut xs, mut ys) = (vec![0.0], vec![0.0]);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] {
                tp += 1.0
            } else {
                fp += 1.0
            }
            i += 1;
        }
        // thin out long curves: a point per 1/2000 of the axes is plenty for a picture
        if xs.last().is_none_or(|&x| fp / neg - x > 5e-4) || i == idx.len() {
            xs.push(fp / neg);
            ys.push(tp / pos);
        }
    }
    (xs, ys)
}

pub struct GalleryItem {
    pub overlay: String,
    pub caption: String,
}

/// A table of the report: rows of name + values.
pub struct Table<'a> {
    pub caption: String,
    pub header: Vec<&'a str>,
    pub rows: Vec<Vec<String>>,
}

/// report.html: the tables, the curve pictures, and galleries.
pub fn write_html(path: &Path, title: &str, tables: &[Table], pictures: &[(String, String)], galleries: &[(String, Vec<GalleryItem>)]) -> Result<()> {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut h = format!(
        "<!doctype html><meta charset=utf-8><title>{0}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1em}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th{{background:#eee}}figure{{display:inline-block;margin:6px}}img.o{{height:192px;width:auto;image-rendering:pixelated}}</style><h1>{0}</h1>",
        esc(title)
    );
    for t in tables {
        if t.rows.is_empty() {
            continue;
        }
        if !t.caption.is_empty() {
            h.push_str(&format!("<h2>{}</h2>", esc(&t.caption)));
        }
        h.push_str("<table><tr>");
        for c in &t.header {
            h.push_str(&format!("<th>{}</th>", esc(c)));
        }
        h.push_str("</tr>");
        for r in &t.rows {
            h.push_str("<tr>");
            for (i, c) in r.iter().enumerate() {
                h.push_str(&if i == 0 { format!("<th>{}</th>", esc(c)) } else { format!("<td>{}</td>", esc(c)) });
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
    for (cap, src) in pictures {
        h.push_str(&format!("<figure><img src=\"{}\"><figcaption>{}</figcaption></figure>", esc(src), esc(cap)));
    }
    for (title, items) in galleries {
        h.push_str(&format!("<h2>{}</h2>", esc(title)));
        for it in items {
            h.push_str(&format!("<figure><img class=o src=\"{}\"><figcaption>{}</figcaption></figure>", esc(&it.overlay), esc(&it.caption)));
        }
    }
    crate::io::files::write_bytes_atomic(path, h)
}
