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

/// An image in [−1, 1], [3, H, W] planes, as RGB8 (the inverse of `to_chw`, rounded).
pub fn chw_to_rgb8(x: &[f32], w: usize, h: usize) -> Vec<u8> {
    let plane = w * h;
    (0..plane).flat_map(|p| (0..3).map(move |c| (((x[c * plane + p] + 1.0) * 127.5).round().clamp(0.0, 255.0)) as u8)).collect()
}

pub fn save_chw(path: &Path, x: &[f32], w: usize, h: usize) -> Result<()> {
    save_rgb(path, w, h, chw_to_rgb8(x, w, h))
}

/// Images ([3, H, W] in [−1, 1]) side by side with a 2-pixel white gap: a strip of frames.
pub fn save_strip(path: &Path, frames: &[&[f32]], w: usize, h: usize) -> Result<()> {
    const GAP: usize = 2;
    let n = frames.len().max(1);
    let sw = n * w + (n - 1) * GAP;
    let mut out = vec![255u8; sw * h * 3];
    for (i, f) in frames.iter().enumerate() {
        let rgb = chw_to_rgb8(f, w, h);
        let x0 = i * (w + GAP);
        for y in 0..h {
            out[(y * sw + x0) * 3..(y * sw + x0 + w) * 3].copy_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
        }
    }
    save_rgb(path, sw, h, out)
}
