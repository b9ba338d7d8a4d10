//! Images in: decoding (PNG 8/16-bit, JPEG, BMP; grayscale and RGBA converted to RGB like the
//! official code's `.convert("RGB")`) and the official preprocessing, bit-exact with Pillow:
//! `center_crop_arr` = BOX-halve while the short side is at least twice the target, BICUBIC
//! resize of the short side to the target, centre crop (docs/method.md §3). Pillow's resampling is
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

/// Decoded images larger than this many pixels are refused before decoding (from the header).
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

/// Limits on what an image file may decode to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// width × height, checked from the header before any pixel is decoded (`--max-pixels`)
    pub max_pixels: u64,
}

/// The process's limit: `--max-pixels` sets it once where the flag enters (src/cli), so every
/// image any command reads obeys it.
static MAX_PIXELS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(DEFAULT_MAX_PIXELS);

impl ImageLimits {
    /// Sets the limit `ImageLimits::default()` gives from now on (at least 1 pixel).
    pub fn set_process_default(max_pixels: u64) {
        MAX_PIXELS.store(max_pixels.max(1), std::sync::atomic::Ordering::Relaxed);
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_pixels: MAX_PIXELS.load(std::sync::atomic::Ordering::Relaxed) }
    }
}

impl ImageLimits {
    /// Bytes a file may have: an uncompressed 16-bit RGBA image of max_pixels, and some slack
    /// for metadata (a larger file cannot be an image within the limit; refused unread).
    fn max_file_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(8).saturating_add(16 << 20)
    }
}

fn bad(path: &Path, msg: String) -> Error {
    Error::BadFile { path: path.to_path_buf(), msg }
}

/// Refuses a w×h image beyond the limits.
fn check_size(path: &Path, w: u64, h: u64, lim: &ImageLimits) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(bad(path, format!("empty image ({w}×{h})")));
    }
    if w.saturating_mul(h) > lim.max_pixels {
        return Err(bad(path, format!("{w}×{h} = {} pixels exceeds the limit of {} (--max-pixels)", w.saturating_mul(h), lim.max_pixels)));
    }
    Ok(())
}

/// A decoded image, before the conversion to RGB or grey.
enum Decoded {
    Dynamic(image::DynamicImage),
    /// 8-bit RGB from the JPEG decoder
    Rgb8(u32, u32, Vec<u8>),
    /// 8-bit grey from the JPEG decoder
    Luma8(u32, u32, Vec<u8>),
}

/// Reads and decodes `path` within `lim`; `what` says what the file is for, in errors.
fn decode(path: &Path, lim: &ImageLimits, what: &str) -> Result<Decoded> {
    let meta = super::files::check_regular(path)?;
    if meta.len() > lim.max_file_bytes() {
        return Err(bad(path, format!("{} bytes: larger than any image within the limit of {} pixels", meta.len(), lim.max_pixels)));
    }
    let bytes = super::files::read_regular(path)?;
    decode_bytes(path, &bytes, lim, what)
}

/// Decodes an image held in memory within `lim`; `path` names it in errors (an upload's name).
fn decode_bytes(path: &Path, bytes: &[u8], lim: &ImageLimits, what: &str) -> Result<Decoded> {
    if bytes.len() as u64 > lim.max_file_bytes() {
        return Err(bad(path, format!("{} bytes: larger than any image within the limit of {} pixels", bytes.len(), lim.max_pixels)));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        return decode_jpeg(path, bytes, lim, what);
    }
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(lim.max_pixels.saturating_mul(8).saturating_add(1 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| bad(path, format!("cannot decode {what}: {e}")))?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    check_size(path, w as u64, h as u64, lim)?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(|e| bad(path, format!("cannot decode {what}: {e}")))?;
    Ok(Decoded::Dynamic(img))
}

/// JPEG through zune-jpeg in strict mode: data that ends early or does not decode is an error
/// (Pillow: "image file is truncated", "broken data stream"), never an image padded with grey.
fn decode_jpeg(path: &Path, bytes: &[u8], lim: &ImageLimits, what: &str) -> Result<Decoded> {
    use zune_core::colorspace::ColorSpace;
    jpeg_markers(bytes).map_err(|m| bad(path, format!("cannot decode {what}: corrupt or truncated JPEG: {m}")))?;
    let err = |e: zune_jpeg::errors::DecodeErrors| bad(path, format!("cannot decode {what}: corrupt or truncated JPEG: {e}"));
    let mut probe = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(bytes));
    probe.decode_headers().map_err(err)?;
    let (w, h) = probe.dimensions().ok_or_else(|| bad(path, format!("cannot decode {what}: JPEG without dimensions")))?;
    check_size(path, w as u64, h as u64, lim)?;
    let gray = probe.input_colorspace() == Some(ColorSpace::Luma);
    // the colour space `image` asks for (grey stays grey; YCbCr, CMYK and YCCK become RGB)
    let out = if gray { ColorSpace::Luma } else { ColorSpace::RGB };
    let opts = zune_core::options::DecoderOptions::default().set_strict_mode(true).jpeg_set_out_colorspace(out).set_max_width(w).set_max_height(h);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), opts);
    let px = d.decode().map_err(err)?;
    let n = w * h * if gray { 1 } else { 3 };
    if px.len() != n {
        return Err(bad(path, format!("cannot decode {what}: {} bytes decoded for {w}×{h}", px.len())));
    }
    Ok(if gray { Decoded::Luma8(w as u32, h as u32, px) } else { Decoded::Rgb8(w as u32, h as u32, px) })
}

/// The marker structure libjpeg (Pillow's decoder) insists on: every marker one it knows (an
/// unknown one, e.g. from garbled data, is its fatal "unsupported marker"), and an end-of-image
/// marker after the last scan (without it Pillow says "image file is truncated"). Stray bytes
/// before a marker are skipped, as libjpeg does with a warning.
fn jpeg_markers(b: &[u8]) -> std::result::Result<(), String> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return Err("no start-of-image marker".into());
    }
    let truncated = || "the file ends before the end-of-image marker (truncated)".to_string();
    let mut i = 2;
    loop {
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let m = *b.get(i).ok_or_else(truncated)?;
        i += 1;
        match m {
            0xD9 => return Ok(()),
            0xD0..=0xD7 | 0x01 => {}
            0xC0..=0xC7 | 0xC9..=0xCF | 0xDA..=0xDD | 0xE0..=0xEF | 0xFE => {
                let len = b.get(i..i + 2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize).ok_or_else(truncated)?;
                if len < 2 {
                    return Err(format!("marker 0xFF{m:02X} with a length of {len}"));
                }
                i += len;
                if i > b.len() {
                    return Err(truncated());
                }
                if m == 0xDA {
                    // entropy-coded data: up to the next marker that is not a stuffed 0xFF00
                    // or a restart marker
                    loop {
                        while i < b.len() && b[i] != 0xFF {
                            i += 1;
                        }
                        let mut j = i;
                        while j < b.len() && b[j] == 0xFF {
                            j += 1;
                        }
                        match b.get(j) {
                            None => return Err(truncated()),
                            Some(0x00) | Some(0xD0..=0xD7) => i = j + 1,
                            Some(_) => break,
                        }
                    }
                }
            }
            _ => return Err(format!("unknown marker 0xFF{m:02X} at byte {}", i - 2)),
        }
    }
}

/// Pillow's `convert("RGB")`: alpha dropped (not composited), grey replicated, 16-bit colour
/// by its high byte, and 16-bit grey (Pillow's mode I;16) clipped to 255 rather than scaled.
fn pillow_rgb(img: Decoded) -> Image8 {
    use image::DynamicImage as D;
    let (w, h, data) = match img {
        Decoded::Rgb8(w, h, v) => (w, h, v),
        Decoded::Luma8(w, h, v) => (w, h, v.iter().flat_map(|&g| [g, g, g]).collect()),
        Decoded::Dynamic(D::ImageLuma16(g)) => (g.width(), g.height(), g.as_raw().iter().flat_map(|&v| [v.min(255) as u8; 3]).collect()),
        Decoded::Dynamic(D::ImageLumaA16(g)) => (g.width(), g.height(), g.as_raw().chunks_exact(2).flat_map(|p| [(p[0] >> 8) as u8; 3]).collect()),
        Decoded::Dynamic(D::ImageRgb16(g)) => (g.width(), g.height(), g.as_raw().iter().map(|&v| (v >> 8) as u8).collect()),
        Decoded::Dynamic(D::ImageRgba16(g)) => (g.width(), g.height(), g.as_raw().chunks_exact(4).flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]).collect()),
        Decoded::Dynamic(other) => {
            let rgb = other.to_rgb8();
            (rgb.width(), rgb.height(), rgb.into_raw())
        }
    };
    Image8 { w: w as usize, h: h as usize, c: 3, data }
}

/// Pillow's `convert("L")` of an 8-bit image (masks): the luma of colour, grey as is.
fn pillow_gray(img: Decoded) -> Image8 {
    let g = match img {
        Decoded::Luma8(w, h, v) => return Image8 { w: w as usize, h: h as usize, c: 1, data: v },
        Decoded::Rgb8(w, h, v) => image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, v).expect("size checked")).to_luma8(),
        Decoded::Dynamic(d) => d.to_luma8(),
    };
    Image8 { w: g.width() as usize, h: g.height() as usize, c: 1, data: g.into_raw() }
}

/// Decodes `path` to RGB8 within the default limits; corrupt, truncated or unsupported files,
/// and files that are not regular files, are errors naming the file.
pub fn load_rgb(path: &Path) -> Result<Image8> {
    load_rgb_limited(path, &ImageLimits::default())
}

/// `load_rgb` within `lim`.
pub fn load_rgb_limited(path: &Path, lim: &ImageLimits) -> Result<Image8> {
    Ok(pillow_rgb(decode(path, lim, "image")?))
}

/// Decodes `path` and applies the official preprocessing to `size`×`size` (`center_crop_arr`),
/// refusing an output size of 0 or beyond the pixel limit: the one call for a model's input.
/// An image file's bytes (PNG, JPEG, BMP) decoded to RGB within `lim`, as `load_rgb_limited`
/// would decode the file; `name` names it in errors.
pub fn decode_rgb_bytes(name: &Path, bytes: &[u8], lim: &ImageLimits) -> Result<Image8> {
    Ok(pillow_rgb(decode_bytes(name, bytes, lim, "image")?))
}

pub fn load_preprocessed(path: &Path, size: usize, lim: &ImageLimits) -> Result<Image8> {
    if size == 0 || (size as u64).saturating_mul(size as u64) > lim.max_pixels {
        return Err(Error::InvalidArgument(format!("image size {size}: 1 … {} for the pixel limit of {}", (lim.max_pixels as f64).sqrt() as u64, lim.max_pixels)));
    }
    Ok(center_crop_arr(&load_rgb_limited(path, lim)?, size))
}

/// Decodes a mask to one 8-bit channel (luma of colour masks).
pub fn load_gray(path: &Path) -> Result<Image8> {
    load_gray_limited(path, &ImageLimits::default())
}

/// `load_gray` within `lim`.
pub fn load_gray_limited(path: &Path, lim: &ImageLimits) -> Result<Image8> {
    Ok(pillow_gray(decode(path, lim, "mask")?))
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

/// Pillow's precompute_coeffs + normalize_coeffs_8bpc for output indices start..start+count:
/// per output index, (first input, count) and fixed-point weights. Each output's coefficients
/// depend on its index alone, so a window of the output is computed exactly as in the full one.
fn coeffs(in_size: usize, out_size: usize, f: Filter, start: usize, count: usize) -> (Vec<(usize, usize)>, Vec<Vec<i32>>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = f.support() * filterscale;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(count);
    let mut weights = Vec::with_capacity(count);
    for xx in start..start + count {
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
    resize_window(img, w, h, f, (0, 0, w, h))
}

/// The window (x, y, width, height) of `resize(img, w, h, f)`, computed without the rest of
/// the resized image: bit-identical to cropping the full resize, in memory of the window's size
/// (a 1×1,000,000 image scaled to a 64-pixel short side is never 64×64,000,000 in memory).
pub fn resize_window(img: &Image8, w: usize, h: usize, f: Filter, (rx, ry, rw, rh): (usize, usize, usize, usize)) -> Image8 {
    let c = img.c;
    if rw == 0 || rh == 0 || img.w == 0 || img.h == 0 {
        return Image8::new(rw, rh, c);
    }
    let need_h = w != img.w;
    let need_v = h != img.h;
    let half = 1i64 << (PRECISION_BITS - 1);
    let (vb, vk) = if need_v { coeffs(img.h, h, f, ry, rh) } else { ((ry..ry + rh).map(|y| (y, 1)).collect(), Vec::new()) };
    // rows of the source that the vertical pass reads
    let (y0, y1) = (vb[0].0, vb[rh - 1].0 + vb[rh - 1].1);
    let rows = y1 - y0;
    let mut tmp = Image8::new(rw, rows, c);
    if need_h {
        let (hb, hk) = coeffs(img.w, w, f, rx, rw);
        for yy in 0..rows {
            let src = &img.data[(yy + y0) * img.w * c..][..img.w * c];
            for xx in 0..rw {
                let (xmin, n) = hb[xx];
                for ch in 0..c {
                    let mut s = half;
                    for x in 0..n {
                        s += src[(x + xmin) * c + ch] as i64 * hk[xx][x] as i64;
                    }
                    tmp.data[(yy * rw + xx) * c + ch] = clip8(s);
                }
            }
        }
    } else {
        // no horizontal pass: the vertical pass reads the source's columns directly
        for yy in 0..rows {
            tmp.data[yy * rw * c..(yy + 1) * rw * c].copy_from_slice(&img.data[((yy + y0) * img.w + rx) * c..][..rw * c]);
        }
    }
    if !need_v {
        return tmp;
    }
    let mut out = Image8::new(rw, rh, c);
    for yy in 0..rh {
        let (ymin, n) = vb[yy];
        let ymin = ymin - y0;
        for xx in 0..rw {
            for ch in 0..c {
                let mut s = half;
                for (y, &k) in vk[yy][..n].iter().enumerate() {
                    s += tmp.data[((y + ymin) * rw + xx) * c + ch] as i64 * k as i64;
                }
                out.data[(yy * rw + xx) * c + ch] = clip8(s);
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

/// The official preprocessing (guided-diffusion `center_crop_arr`). The bicubic resize computes
/// only the centre crop it keeps, so memory stays at the input's and the output's size whatever
/// the aspect ratio. An empty input (which the loaders refuse) gives a black image.
pub fn center_crop_arr(img: &Image8, size: usize) -> Image8 {
    if size == 0 || img.w == 0 || img.h == 0 {
        return Image8::new(size, size, img.c);
    }
    let mut im = img.clone();
    while im.w.min(im.h) >= 2 * size {
        im = resize(&im, im.w / 2, im.h / 2, Filter::Box);
    }
    let scale = size as f64 / im.w.min(im.h) as f64;
    let (nw, nh) = (round_half_even(im.w as f64 * scale).max(size), round_half_even(im.h as f64 * scale).max(size));
    let (cy, cx) = ((nh - size) / 2, (nw - size) / 2);
    resize_window(&im, nw, nh, Filter::Bicubic, (cx, cy, size, size))
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
