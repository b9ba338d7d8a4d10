//! Pictures of a score map: 16-bit grayscale PNG of the raw map (min/max reported so it can be
//! mapped back), a colour heatmap, an overlay on the (preprocessed) image and a thresholded
//! outline.

use crate::io::image::Image8;
use crate::{Error, Result};
use std::path::Path;

/// The jet colour map, t in [0, 1].
pub fn jet(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let c = |x: f32| ((1.5 - (4.0 * t - x).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(3.0), c(2.0), c(1.0)]
}

fn min_max(m: &[f32]) -> (f32, f32) {
    m.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)))
}

fn save_rgb(path: &Path, w: usize, h: usize, data: Vec<u8>) -> Result<()> {
    image::RgbImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| Error::InvalidArgument("image buffer size".into()))?
        .save(path)
        .map_err(|e| Error::BadFile { path: path.to_path_buf(), msg: format!("cannot write PNG: {e}") })
}

/// Writes the map as 16-bit PNG, (v − min)/(max − min)·65535; returns (min, max).
pub fn save_map16(path: &Path, m: &[f32], w: usize, h: usize) -> Result<(f32, f32)> {
    let (lo, hi) = min_max(m);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let v: Vec<u16> = m.iter().map(|&x| (((x - lo) / span) * 65535.0).round() as u16).collect();
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(w as u32, h as u32, v)
        .ok_or_else(|| Error::InvalidArgument("map size".into()))?
        .save(path)
        .map_err(|e| Error::BadFile { path: path.to_path_buf(), msg: format!("cannot write PNG: {e}") })?;
    Ok((lo, hi))
}

/// Heatmap colours of `m` scaled to [lo, hi].
pub fn heat(m: &[f32], lo: f32, hi: f32) -> Vec<u8> {
    let span = if hi > lo { hi - lo } else { 1.0 };
    m.iter().flat_map(|&v| jet((v - lo) / span)).collect()
}

pub fn save_heatmap(path: &Path, m: &[f32], w: usize, h: usize, lo: f32, hi: f32) -> Result<()> {
    save_rgb(path, w, h, heat(m, lo, hi))
}

/// 50/50 blend of the heatmap over the image; pixels on the boundary of {m > threshold} are red.
pub fn save_overlay(path: &Path, img: &Image8, m: &[f32], lo: f32, hi: f32, threshold: Option<f32>) -> Result<()> {
    let (w, h) = (img.w, img.h);
    let hm = heat(m, lo, hi);
    let mut out: Vec<u8> = img.data.iter().zip(&hm).map(|(&a, &b)| ((a as u16 + b as u16) / 2) as u8).collect();
    if let Some(t) = threshold {
        let inside = |x: usize, y: usize| m[y * w + x] > t;
        for y in 0..h {
            for x in 0..w {
                if !inside(x, y) {
                    continue;
                }
                let edge = x == 0 || y == 0 || x + 1 == w || y + 1 == h || !inside(x - 1, y) || !inside(x + 1, y) || !inside(x, y - 1) || !inside(x, y + 1);
                if edge {
                    out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[255, 0, 0]);
                }
            }
        }
    }
    save_rgb(path, w, h, out)
}
