//! Test sets on disk: MVTec-AD (`<category>/test/<defect>/*.png`, masks in
//! `<category>/ground_truth/<defect>/<name>_mask.png`, `good` = normal) and BTAD
//! (`<NN>/test/ok|ko`, masks `<NN>/ground_truth/ko/<name>.png|.bmp`).

use crate::error::AtPath;
use crate::io::files;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Sample {
    pub image: PathBuf,
    /// None for normal images (an all-zero mask)
    pub mask: Option<PathBuf>,
    pub defect: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    MvTec,
    Btad,
}

/// MVTec-AD's categories in the official label order (docs/method.md §5).
pub const MVTEC_CLASSES: [&str; 15] = ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper"];

/// BTAD's categories in label order (docs/method.md §5).
pub const BTAD_CLASSES: [&str; 3] = ["01", "02", "03"];

/// The image files of folder `d`, sorted. An entry with an image's name that is not a regular
/// file (a FIFO, a device, a folder named x.png) is an error naming it, so it can neither hang
/// the run nor drop out of the set unnoticed.
fn images_in(d: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for p in files::read_dir_sorted(d)? {
        if p.extension().and_then(|e| e.to_str()).is_some_and(|e| ["png", "jpg", "jpeg", "bmp"].contains(&e.to_ascii_lowercase().as_str())) {
            files::check_regular(&p)?;
            v.push(p);
        }
    }
    Ok(v)
}

/// Categories under `root` (folders that have a `test` folder), and the layout they follow.
pub fn categories(root: &Path) -> Result<(Layout, Vec<String>)> {
    let mut cats: Vec<String> = std::fs::read_dir(root)
        .at_path(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("test").is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    cats.sort();
    if cats.is_empty() {
        return Err(Error::BadFile { path: root.to_path_buf(), msg: "no category folders with a test/ folder (MVTec-AD or BTAD layout expected)".into() });
    }
    let btad = cats.iter().all(|c| root.join(c).join("test/ok").is_dir());
    Ok((if btad { Layout::Btad } else { Layout::MvTec }, cats))
}

/// The test samples of one category, each anomalous image paired with its mask.
pub fn test_set(root: &Path, category: &str, layout: Layout) -> Result<Vec<Sample>> {
    let cat = root.join(category);
    let test = cat.join("test");
    let mut out = Vec::new();
    let mut defects: Vec<String> =
        std::fs::read_dir(&test).at_path(&test)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    defects.sort();
    let normal = if layout == Layout::Btad { "ok" } else { "good" };
    for d in defects {
        for img in images_in(&test.join(&d))? {
            let mask = if d == normal {
                None
            } else {
                let stem = img.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let gt = cat.join("ground_truth").join(&d);
                let candidates: Vec<PathBuf> = match layout {
                    Layout::MvTec => vec![gt.join(format!("{stem}_mask.png"))],
                    Layout::Btad => vec![gt.join(format!("{stem}.png")), gt.join(format!("{stem}.bmp"))],
                };
                // the first candidate that exists must be a regular file (a FIFO, a folder or a
                // dangling link there is named, not taken for a missing mask)
                let found = candidates.iter().find(|p| p.symlink_metadata().is_ok()).cloned().ok_or_else(|| Error::BadFile {
                    path: img.clone(),
                    msg: format!("no ground-truth mask (looked for {})", candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")),
                })?;
                files::check_regular(&found)?;
                Some(found)
            };
            out.push(Sample { image: img, mask, defect: d.clone() });
        }
    }
    if out.is_empty() {
        return Err(Error::BadFile { path: test, msg: "no test images".into() });
    }
    Ok(out)
}

/// The first `n` (sorted) normal training images of a category: train/good (MVTec) or train/ok (BTAD).
pub fn train_images(root: &Path, category: &str, layout: Layout, n: usize) -> Result<Vec<PathBuf>> {
    let d = root.join(category).join("train").join(if layout == Layout::Btad { "ok" } else { "good" });
    let mut v = images_in(&d)?;
    if v.is_empty() {
        return Err(Error::BadFile { path: d, msg: "no training images to calibrate the ensemble with".into() });
    }
    v.truncate(n);
    Ok(v)
}
