//! `ran metrics`: the same metrics as `ran eval` for anomaly maps made by any tool, so other
//! methods can be compared with one evaluator. Input: a safetensors file (`maps` [N,H,W], `masks`
//! [N,H,W], optional `image_labels` [N]) or folders of PNG maps and masks paired by name.

use crate::eval::metrics::auroc;
use crate::eval::pro_variant::ProVariant;
use crate::io::files;
use crate::io::image::load_gray;
use crate::io::safetensors::SafeTensors;
use crate::{Error, Result};
use std::path::Path;

pub struct Metrics {
    pub pixel_auroc: f64,
    pub aupro: f64,
    pub image_auroc: Option<f64>,
}

/// Maps, masks (non-zero = anomalous) and optional image labels from either input form.
pub fn load_input(input: Option<&Path>, maps: Option<&Path>, gt: Option<&Path>) -> Result<(Vec<f32>, Vec<u8>, Option<Vec<bool>>, [usize; 3])> {
    if let Some(p) = input {
        let st = SafeTensors::open(p)?;
        let (ms, m) = st.get("maps")?;
        let (ks, k) = st.get("masks")?;
        if ms.len() != 3 || ms != ks {
            return Err(Error::BadFile { path: p.to_path_buf(), msg: format!("maps {ms:?} and masks {ks:?} must both be [N,H,W]") });
        }
        let labels: Option<Vec<bool>> = if st.contains("image_labels") { Some(st.get("image_labels")?.1.iter().map(|&v| v != 0.0).collect()) } else { None };
        if let Some(l) = &labels {
            if l.len() != ms[0] {
                return Err(Error::BadFile { path: p.to_path_buf(), msg: format!("image_labels has {} values for {} maps", l.len(), ms[0]) });
            }
        }
        return Ok((m, k.iter().map(|&v| (v != 0.0) as u8).collect(), labels, [ms[0], ms[1], ms[2]]));
    }
    let (Some(md), Some(gd)) = (maps, gt) else { return Err(Error::InvalidArgument("give --input FILE, or --maps DIR and --gt DIR".into())) };
    let files: Vec<_> = files::read_dir_sorted(md)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "png")).collect();
    if files.is_empty() {
        return Err(Error::InvalidArgument(format!("{}: no PNG maps", md.display())));
    }
    let (mut maps_v, mut masks_v, mut dims) = (Vec::new(), Vec::new(), None);
    for f in files {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = files::read_regular(&f)?;
        let img = image::load_from_memory(&bytes).map_err(|e| Error::BadFile { path: f.clone(), msg: format!("cannot decode map: {e}") })?.to_luma16();
        let (w, h) = (img.width() as usize, img.height() as usize);
        if *dims.get_or_insert((h, w)) != (h, w) {
            return Err(Error::BadFile { path: f.clone(), msg: format!("map is {w}x{h}, the others {}x{}", dims.map(|d| d.1).unwrap_or(0), dims.map(|d| d.0).unwrap_or(0)) });
        }
        // a map without a mask file is a normal image; a mask name that exists but is no regular
        // file (a dangling link, a folder, a FIFO) is an error, not a normal image
        let mask_path = [format!("{stem}_mask.png"), format!("{stem}.png")].iter().map(|n| gd.join(n)).find(|p| p.symlink_metadata().is_ok());
        if let Some(mp) = &mask_path {
            files::check_regular(mp)?;
        }
        let mask = match mask_path {
            Some(mp) => {
                let m = load_gray(&mp)?;
                if (m.w, m.h) != (w, h) {
                    return Err(Error::BadFile { path: mp, msg: format!("mask is {}x{}, the map {w}x{h}", m.w, m.h) });
                }
                m.data.iter().map(|&v| (v != 0) as u8).collect()
            }
            None => vec![0u8; w * h],
        };
        maps_v.extend(img.into_raw().into_iter().map(|v| v as f32));
        masks_v.extend(mask);
    }
    let (h, w) = dims.unwrap_or((0, 0));
    let n = maps_v.len() / (h * w).max(1);
    Ok((maps_v, masks_v, None, [n, h, w]))
}

/// Pixel AUROC, AU-PRO (0.3) and image AUROC (image score = mean of the top-k pixels).
pub fn compute(maps: &[f32], masks: &[u8], labels: Option<Vec<bool>>, [n, h, w]: [usize; 3], topk: usize, pro_variant: ProVariant) -> Result<Metrics> {
    let pl: Vec<bool> = masks.iter().map(|&m| m != 0).collect();
    let pixel_auroc = auroc(maps, &pl)?;
    let aupro = pro_variant.au_pro(maps, masks, n, h, w)?;
    let labels = labels.unwrap_or_else(|| (0..n).map(|i| masks[i * h * w..(i + 1) * h * w].iter().any(|&m| m != 0)).collect());
    let scores: Vec<f32> = (0..n).map(|i| crate::anomaly::score::topk_mean(&maps[i * h * w..(i + 1) * h * w], topk)).collect();
    let image_auroc = auroc(&scores, &labels).ok();
    Ok(Metrics { pixel_auroc, aupro, image_auroc })
}
