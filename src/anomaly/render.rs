//! Pictures of a score map: 16-bit grayscale PNG of the raw map (min/max reported so it can be
//! mapped back), a colour heatmap, an overlay on the (preprocessed) image and a thresholded
//! outline; the colour scale (`DisplayRange`).

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

/// Encodes `img` as PNG and writes it atomically (temporary file, then rename).
pub fn save_png<P: image::Pixel<Subpixel = S> + image::PixelWithColorType, S: image::Primitive>(path: &Path, img: &image::ImageBuffer<P, Vec<S>>) -> Result<()>
where
    [S]: image::EncodableLayout,
{
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| Error::BadFile { path: path.to_path_buf(), msg: format!("cannot encode PNG: {e}") })?;
    crate::io::files::write_bytes_atomic(path, bytes.into_inner())
}

fn save_rgb(path: &Path, w: usize, h: usize, data: Vec<u8>) -> Result<()> {
    save_png(path, &image::RgbImage::from_raw(w as u32, h as u32, data).ok_or_else(|| Error::InvalidArgument("image buffer size".into()))?)
}

/// Writes the map as 16-bit PNG, (v − min)/(max − min)·65535; returns (min, max).
pub fn save_map16(path: &Path, m: &[f32], w: usize, h: usize) -> Result<(f32, f32)> {
    let (lo, hi) = min_max(m);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let v: Vec<u16> = m.iter().map(|&x| (((x - lo) / span) * 65535.0).round() as u16).collect();
    save_png(path, &image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(w as u32, h as u32, v).ok_or_else(|| Error::InvalidArgument("map size".into()))?)?;
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
    save_rgb(path, img.w, img.h, overlay_rgb(img, m, lo, hi, threshold))
}

/// The overlay's RGB pixels (see `save_overlay`).
pub fn overlay_rgb(img: &Image8, m: &[f32], lo: f32, hi: f32, threshold: Option<f32>) -> Vec<u8> {
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
    out
}

/// RGB pixels as PNG bytes in memory (what `save_png` writes).
pub fn encode_png_rgb(w: usize, h: usize, data: Vec<u8>) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(w as u32, h as u32, data).ok_or_else(|| Error::InvalidArgument("image buffer size".into()))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| Error::InvalidArgument(format!("cannot encode PNG: {e}")))?;
    Ok(bytes.into_inner())
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

/// The quantile of normal pixel scores at the top of the `auto` colour scale.
pub const NORMAL_QUANTILE: f64 = 0.999;

/// The colour scale of heatmaps and overlays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DisplayRange {
    /// [0, the 99.9th percentile of the scores on the normal calibration images] with the
    /// calibrated ensemble (0 is the normal mean; red where at most 1 normal pixel in 1000
    /// reaches), else each image's own range
    Auto,
    /// each image's own [min, max]: always the full colour scale, also on a normal image
    Image,
    /// the same fixed [lo, hi] for every image
    Fixed(f32, f32),
}

impl DisplayRange {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument(format!("--range {s}: auto, image, or LO,HI with LO < HI"));
        match s {
            "auto" => Ok(DisplayRange::Auto),
            "image" => Ok(DisplayRange::Image),
            _ => {
                let (l, h) = s.split_once(',').ok_or_else(bad)?;
                let (l, h): (f32, f32) = (l.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
                if l.is_finite() && h.is_finite() && l < h {
                    Ok(DisplayRange::Fixed(l, h))
                } else {
                    Err(bad())
                }
            }
        }
    }

    /// The range for an image with map range `own`, of a class whose normal scores have the 99.9th percentile `normal_p999`.
    pub fn resolve(self, own: (f32, f32), normal_p999: Option<f32>) -> (f32, f32) {
        match (self, normal_p999) {
            (DisplayRange::Fixed(l, h), _) => (l, h),
            (DisplayRange::Auto, Some(top)) if top > 0.0 => (0.0, top),
            _ => own,
        }
    }
}

/// The option's spelling (results.json records it).
impl std::fmt::Display for DisplayRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisplayRange::Auto => f.write_str("auto"),
            DisplayRange::Image => f.write_str("image"),
            DisplayRange::Fixed(l, h) => write!(f, "{l},{h}"),
        }
    }
}

/// Where the overlay's outline goes (`--threshold`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// a fixed score
    Value(f32),
    /// the 99.9th percentile of the class's normal calibration pixels (calibrated ensemble)
    Normal,
}

impl Threshold {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "normal" => Ok(Threshold::Normal),
            _ => match s.trim().parse::<f32>() {
                Ok(v) if v.is_finite() => Ok(Threshold::Value(v)),
                _ => Err(Error::InvalidArgument(format!("--threshold {s}: a score, or normal (the 99.9th percentile of the normal calibration pixels)"))),
            },
        }
    }

    /// The score for a class whose normal pixels have the 99.9th percentile `normal_p999`.
    pub fn resolve(self, normal_p999: Option<f32>) -> Option<f32> {
        match self {
            Threshold::Value(v) => Some(v),
            Threshold::Normal => normal_p999,
        }
    }
}

/// The option's spelling (results.json records it).
impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Threshold::Value(v) => write!(f, "{v}"),
            Threshold::Normal => f.write_str("normal"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DisplayRange, Threshold};

    #[test]
    fn threshold_parses_and_resolves() {
        assert_eq!(Threshold::parse("1.5").unwrap(), Threshold::Value(1.5));
        assert_eq!(Threshold::parse("normal").unwrap(), Threshold::Normal);
        for bad in ["x", "inf", "NaN", ""] {
            assert!(Threshold::parse(bad).unwrap_err().to_string().contains(&format!("--threshold {bad}")));
        }
        assert_eq!(Threshold::Value(2.0).resolve(Some(4.0)), Some(2.0));
        assert_eq!(Threshold::Normal.resolve(Some(4.0)), Some(4.0));
        assert_eq!(Threshold::Normal.resolve(None), None);
    }

    #[test]
    fn overlay_outlines_the_boundary_of_the_region_above_the_threshold() {
        // a 6×6 map with a 2×2 block of 5.0 in a field of 0.0; threshold 1: those 4 pixels are
        // the region, and all 4 are on its boundary, so exactly they are pure red
        let (w, h) = (6, 6);
        let mut m = vec![0.0f32; w * h];
        for (x, y) in [(2, 2), (3, 2), (2, 3), (3, 3)] {
            m[y * w + x] = 5.0;
        }
        let img = crate::io::image::Image8 { w, h, c: 3, data: vec![128; w * h * 3] };
        let dir = std::env::temp_dir().join(format!("ran-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("o.png");
        super::save_overlay(&p, &img, &m, 0.0, 5.0, Some(1.0)).unwrap();
        let o = image::open(&p).unwrap().to_rgb8();
        for y in 0..h {
            for x in 0..w {
                let red = o.get_pixel(x as u32, y as u32).0 == [255, 0, 0];
                assert_eq!(red, m[y * w + x] > 1.0, "({x}, {y})");
            }
        }
        // no threshold: no outline
        super::save_overlay(&p, &img, &m, 0.0, 5.0, None).unwrap();
        assert!(image::open(&p).unwrap().to_rgb8().pixels().all(|px| px.0 != [255, 0, 0]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// results.json records the options by these spellings: each must parse back to itself.
    #[test]
    fn options_print_as_they_parse() {
        for s in ["auto", "image", "-1,2.5", "0,3"] {
            assert_eq!(DisplayRange::parse(s).unwrap().to_string(), s);
        }
        for s in ["normal", "-0.5", "2"] {
            assert_eq!(Threshold::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn display_range_parses_and_resolves() {
        assert_eq!(DisplayRange::parse("auto").unwrap(), DisplayRange::Auto);
        assert_eq!(DisplayRange::parse("image").unwrap(), DisplayRange::Image);
        assert_eq!(DisplayRange::parse("-1, 2.5").unwrap(), DisplayRange::Fixed(-1.0, 2.5));
        for bad in ["2,1", "1,1", "x,2", "1", "nan,2", "fixed"] {
            let e = DisplayRange::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("--range {bad}")), "{e}");
        }
        let own = (-0.5, 3.0);
        assert_eq!(DisplayRange::Auto.resolve(own, Some(4.0)), (0.0, 4.0));
        assert_eq!(DisplayRange::Auto.resolve(own, None), own);
        // a calibration whose normal scores stay at or below 0 gives no usable scale
        assert_eq!(DisplayRange::Auto.resolve(own, Some(0.0)), own);
        assert_eq!(DisplayRange::Image.resolve(own, Some(4.0)), own);
        assert_eq!(DisplayRange::Fixed(1.0, 2.0).resolve(own, Some(4.0)), (1.0, 2.0));
    }
}
