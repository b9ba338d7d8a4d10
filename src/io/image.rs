//! Images in: decoding (PNG 8/16-bit, JPEG, BMP; grayscale and RGBA converted to RGB like the
//! official code's `.convert("RGB")`) and the official preprocessing, bit-exact with Pillow:
//! `center_crop_arr` = BOX-halve while the short side is at least twice the target, BICUBIC
//! resize of the short side to the target, centre crop (spec §3). Pillow's resampling is
//! reproduced exactly: separable passes (horizontal first), coefficients normalised in f64 then
//! rounded to 22-bit fixed point, an 8-bit intermediate image, clipping to 0..255.

use crate::{Error, Result};
use std::path::Path;

/// An 8-bit image with `c` interleaved channels, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image8 {
    pub w: usize,
    pub h: usize,
    pub c: usize,
    pub data: Vec<u8>,
}

impl Image8 {
    pub fn new(w: usize, h: usize, c: usize) -> Self {
        Image8 { w, h, c, data: vec![0; w * h * c] }
    }
}

/// Decodes `path` to RGB8; corrupt, truncated or unsupported files are errors naming the file.
pub fn load_rgb(path: &Path) -> Result<Image8> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?
        .with_guessed_format()
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?
        .decode()
        .map_err(|e| Error::BadFile { path: path.to_path_buf(), msg: format!("cannot decode image: {e}") })?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::BadFile { path: path.to_path_buf(), msg: "empty image".into() });
    }
    Ok(Image8 { w, h, c: 3, data: rgb.into_raw() })
}

/// Decodes a mask to one 8-bit channel (luma of colour masks).
pub fn load_gray(path: &Path) -> Result<Image8> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?
        .with_guessed_format()
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?
        .decode()
        .map_err(|e| Error::BadFile { path: path.to_path_buf(), msg: format!("cannot decode mask: {e}") })?;
    let g = img.to_luma8();
    Ok(Image8 { w: g.width() as usize, h: g.height() as usize, c: 1, data: g.into_raw() })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Box,
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bicubic => 2.0,
        }
    }
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output index, (first input, count)
/// and fixed-point weights.
fn coeffs(in_size: usize, out_size: usize, f: Filter) -> (Vec<(usize, usize)>, Vec<Vec<i32>>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = f.support() * filterscale;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = (((center + support + 0.5) as i64).min(in_size as i64) as usize).saturating_sub(xmin);
        let k: Vec<f64> = (0..xmax).map(|x| f.eval((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
        let ww: f64 = k.iter().sum();
        let k: Vec<i32> = k
            .iter()
            .map(|&v| {
                let v = if ww != 0.0 { v / ww } else { v };
                if v < 0.0 {
                    (-0.5 + v * (1u32 << PRECISION_BITS) as f64) as i32
                } else {
                    (0.5 + v * (1u32 << PRECISION_BITS) as f64) as i32
                }
            })
            .collect();
        bounds.push((xmin, xmax));
        weights.push(k);
    }
    (bounds, weights)
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `Image.resize((w, h), filter)` of Pillow, for 8-bit images.
pub fn resize(img: &Image8, w: usize, h: usize, f: Filter) -> Image8 {
    if (w, h) == (img.w, img.h) {
        return img.clone();
    }
    let c = img.c;
    let (hb, hk) = coeffs(img.w, w, f);
    let (vb, vk) = coeffs(img.h, h, f);
    let need_h = w != img.w;
    let need_v = h != img.h;
    let half = 1i64 << (PRECISION_BITS - 1);
    // rows of the source that the vertical pass reads
    let (y0, y1) = (vb[0].0, vb[h - 1].0 + vb[h - 1].1);
    let tmp = if need_h {
        let rows = y1 - y0;
        let mut t = Image8::new(w, rows, c);
        for yy in 0..rows {
            let src = &img.data[(yy + y0) * img.w * c..][..img.w * c];
            for xx in 0..w {
                let (xmin, n) = hb[xx];
                for ch in 0..c {
                    let mut s = half;
                    for x in 0..n {
                        s += src[(x + xmin) * c + ch] as i64 * hk[xx][x] as i64;
                    }
                    t.data[(yy * w + xx) * c + ch] = clip8(s);
                }
            }
        }
        t
    } else {
        // no horizontal pass: the vertical pass reads the source rows directly
        Image8 { w: img.w, h: y1 - y0, c, data: img.data[y0 * img.w * c..y1 * img.w * c].to_vec() }
    };
    if !need_v {
        return tmp;
    }
    let mut out = Image8::new(w, h, c);
    for yy in 0..h {
        let (ymin, n) = vb[yy];
        let ymin = ymin - y0;
        for xx in 0..w {
            for ch in 0..c {
                let mut s = half;
                for y in 0..n {
                    s += tmp.data[((y + ymin) * w + xx) * c + ch] as i64 * vk[yy][y] as i64;
                }
                out.data[(yy * w + xx) * c + ch] = clip8(s);
            }
        }
    }
    out
}

/// Python's round() (half to even) of a non-negative value.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    (if (x - x.trunc()).abs() == 0.5 { 2.0 * (x / 2.0).round() } else { r }) as usize
}

/// The official preprocessing (guided-diffusion `center_crop_arr`).
pub fn center_crop_arr(img: &Image8, size: usize) -> Image8 {
    let mut im = img.clone();
    while im.w.min(im.h) >= 2 * size {
        im = resize(&im, im.w / 2, im.h / 2, Filter::Box);
    }
    let scale = size as f64 / im.w.min(im.h) as f64;
    let (nw, nh) = (round_half_even(im.w as f64 * scale), round_half_even(im.h as f64 * scale));
    let im = resize(&im, nw, nh, Filter::Bicubic);
    let (cy, cx) = ((im.h - size) / 2, (im.w - size) / 2);
    let mut out = Image8::new(size, size, im.c);
    for y in 0..size {
        let src = &im.data[((y + cy) * im.w + cx) * im.c..][..size * im.c];
        out.data[y * size * im.c..(y + 1) * size * im.c].copy_from_slice(src);
    }
    out
}

/// [3, H, W] floats in [−1, 1] (x/127.5 − 1) from an RGB image.
pub fn to_chw(img: &Image8) -> Vec<f32> {
    let (w, h, c) = (img.w, img.h, img.c);
    let mut v = vec![0.0f32; c * w * h];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                v[ch * w * h + y * w + x] = img.data[(y * w + x) * c + ch] as f32 / 127.5 - 1.0;
            }
        }
    }
    v
}
