//! The training images: MVTec-style category folders (`<category>/train/good`, BTAD's
//! `train/ok`), a data set root holding such categories, or plain folders of images. Each
//! category is one class, named by its folder; images of any size are centre-cropped to the
//! model's size (`center_crop_arr`, as detect sees them) and kept as 8 bits until a batch needs them.

use crate::eval::inputs::collect_inputs;
use crate::io::image::{load_preprocessed, to_chw, Image8, ImageLimits};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

pub struct TrainData {
    /// class names in label order
    pub classes: Vec<String>,
    /// (image, label)
    pub images: Vec<(Image8, usize)>,
    pub size: usize,
}

/// The training-image folder of a category folder, if it is one.
fn train_folder(dir: &Path) -> Option<PathBuf> {
    ["good", "ok"].iter().map(|n| dir.join("train").join(n)).find(|p| p.is_dir())
}

fn name_of(dir: &Path) -> String {
    let d = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

/// (class name, folder of its images) for one --data argument.
fn categories_of(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !dir.is_dir() {
        return Err(Error::BadFile { path: dir.to_path_buf(), msg: "not a folder (--data takes folders of images or MVTec category folders)".into() });
    }
    if let Some(t) = train_folder(dir) {
        return Ok(vec![(name_of(dir), t)]);
    }
    // a data set root: every subfolder that is a category
    let mut cats: Vec<(String, PathBuf)> = crate::io::files::read_dir_sorted(dir)?.into_iter().filter(|p| p.is_dir()).filter_map(|p| train_folder(&p).map(|t| (name_of(&p), t))).collect();
    if cats.is_empty() {
        cats.push((name_of(dir), dir.to_path_buf()));
    }
    Ok(cats)
}

/// Every image of every --data folder, preprocessed to `size`², with its class.
pub fn load(dirs: &[PathBuf], size: usize, lim: &ImageLimits) -> Result<TrainData> {
    if dirs.is_empty() {
        return Err(Error::InvalidArgument("give at least one --data folder".into()));
    }
    let mut classes: Vec<String> = Vec::new();
    let mut images = Vec::new();
    for d in dirs {
        for (name, folder) in categories_of(d)? {
            if classes.contains(&name) {
                return Err(Error::BadFile { path: folder, msg: format!("a second category named `{name}` (class names come from the folder names and must differ)") });
            }
            // collect_inputs names a folder without images
            let files = collect_inputs(&[folder.display().to_string()])?;
            let label = classes.len();
            classes.push(name);
            for f in files {
                images.push((load_preprocessed(&f, size, lim)?, label));
            }
        }
    }
    Ok(TrainData { classes, images, size })
}

/// [3, S, S] in [−1, 1] rotated by `deg` degrees about the centre (bilinear, corners filled with
/// black as PIL's `rotate` without expand); 0 leaves the image untouched.
pub fn rotated_chw(img: &Image8, deg: f64) -> Vec<f32> {
    let x = to_chw(img);
    if deg == 0.0 {
        return x;
    }
    let (w, h) = (img.w, img.h);
    let (s, c) = deg.to_radians().sin_cos();
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut out = vec![-1.0f32; x.len()];
    for y in 0..h {
        for xx in 0..w {
            // the source of output pixel centre (xx+½, y+½), rotated back (counter-clockwise
            // for positive angles, as PIL)
            let (dx, dy) = (xx as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
            let (sx, sy) = (c * dx - s * dy + cx - 0.5, s * dx + c * dy + cy - 0.5);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            for ch in 0..3 {
                let plane = &x[ch * w * h..(ch + 1) * w * h];
                let at = |xi: f64, yi: f64| -> f64 {
                    if xi < 0.0 || yi < 0.0 || xi >= w as f64 || yi >= h as f64 {
                        -1.0
                    } else {
                        plane[yi as usize * w + xi as usize] as f64
                    }
                };
                let v = (1.0 - fy) * ((1.0 - fx) * at(x0, y0) + fx * at(x0 + 1.0, y0)) + fy * ((1.0 - fx) * at(x0, y0 + 1.0) + fx * at(x0 + 1.0, y0 + 1.0));
                out[ch * w * h + y * w + xx] = v as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 90° moves the top-left corner's pixel to the bottom-left (counter-clockwise, as PIL), and
    /// a small angle keeps the centre pixel.
    #[test]
    fn rotation_turns_counter_clockwise() {
        let mut img = Image8::new(4, 4, 3);
        img.data[..3].copy_from_slice(&[255, 255, 255]);
        let r = rotated_chw(&img, 90.0);
        let at = |x: usize, y: usize| r[y * 4 + x];
        assert!((at(0, 3) - 1.0).abs() < 1e-5, "{r:?}");
        assert!((at(0, 0) + 1.0).abs() < 1e-5);
        assert_eq!(rotated_chw(&img, 0.0), to_chw(&img));
    }
}
