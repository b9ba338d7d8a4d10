//! `ran eval`'s map cache: per image `<out>/cache/<category>/<image>.f32`, so an interrupted run
//! resumes and shards share their work; `settings.json` per category refuses maps made otherwise.

use crate::anomaly::settings::ScoreSettings;
use crate::error::AtPath;
use crate::ops::precision::Precision;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Where the maps of `image` (under the data set `root`) are cached.
pub fn cache_path(out: &Path, category: &str, image: &Path, root: &Path) -> PathBuf {
    // components joined by "__", with "%" and "_" inside a component escaped, so two images never
    // share a cache file (test/x__y/000.png and test/x/y__000.png did)
    let rel = image.strip_prefix(root).unwrap_or(image).components().map(|c| c.as_os_str().to_string_lossy().replace('%', "%25").replace('_', "%5F")).collect::<Vec<_>>().join("__");
    out.join("cache").join(category).join(format!("{rel}.f32"))
}

/// What the cached maps of a category depend on: the model file (path, size, modification time),
/// the data set's root (each entry is also keyed by its image's content hash, see `write_maps`),
/// the extractor and the scoring settings of the KL and feature maps. Kept as `cache/<category>/settings.json`.
pub fn cache_settings(s: &ScoreSettings, model: &Path, data: &Path, precision: Precision) -> serde_json::Value {
    let file = |p: &Path| {
        let m = std::fs::metadata(p).ok();
        let mtime = m.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        serde_json::json!({"path": std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string(), "bytes": m.map(|m| m.len()), "modified": mtime})
    };
    let mut v = serde_json::json!({
        "model": file(model), "data": std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf()).display().to_string(), "effnet": s.effnet.as_deref().map(file), "effnet_arch": s.effnet_arch.clone().unwrap_or_default(), "effnet_image_size": s.effnet_image_size,
        "kl_only": s.kl_only, "timesteps": s.timesteps, "respacing": s.respacing, "seed": s.seed, "feature_timestep": s.feature_timestep.name(),
        // not the ensemble, α or top-k: the metrics remake those from the cached KL and feature maps
    });
    // maps made in another precision differ; f32 is left out so the caches of before stay valid
    if precision != Precision::F32 {
        v["precision"] = precision.as_str().into();
    }
    v
}

/// Refuses a cache made with other settings (its maps would silently answer for another run);
/// records the settings of a new one.
pub fn check_cache_settings(out: &Path, category: &str, settings: &serde_json::Value) -> Result<()> {
    let dir = out.join("cache").join(category);
    let p = dir.join("settings.json");
    let found = match p.symlink_metadata() {
        Err(_) => Err(()),
        Ok(_) => Ok(String::from_utf8_lossy(&crate::io::files::read_regular(&p)?).into_owned()),
    };
    match found {
        Ok(old) => {
            let old: serde_json::Value = serde_json::from_str(&old).map_err(|e| Error::BadFile { path: p.clone(), msg: format!("not JSON ({e}): delete the cache") })?;
            if &old == settings {
                return Ok(());
            }
            // the keys of either side (a key only one of them has, e.g. `precision`, differs too)
            let mut keys: Vec<String> = [settings, &old].iter().filter_map(|v| v.as_object()).flat_map(|o| o.keys().cloned()).collect();
            keys.sort();
            keys.dedup();
            keys.retain(|k| old.get(k.as_str()) != settings.get(k.as_str()));
            Err(Error::BadFile { path: p, msg: format!("the cached maps were made with other settings (different: {}): give another --out or delete {}", keys.join(", "), dir.display()) })
        }
        Err(_) => {
            std::fs::create_dir_all(&dir).at_path(&dir)?;
            crate::io::files::write_bytes_atomic(&p, serde_json::to_string_pretty(settings).unwrap_or_default())
        }
    }
}

/// Cache file: the magic `RANMAPS2`, the FNV-1a hash of the image file's bytes (u64), the number
/// of maps k (u32), the image score and k maps [score map, (KL map, feature map)] as f32, all
/// little-endian. The hash keys the entry to the image's content, not its name: a changed image,
/// or another data set with the same file names, recomputes instead of answering with old maps.
const MAGIC: &[u8; 8] = b"RANMAPS2";

pub fn write_maps(p: &Path, image: &Path, score: f32, maps: &[&[f32]]) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).at_path(d)?;
    }
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&crate::io::files::content_hash(image)?.to_le_bytes());
    v.extend_from_slice(&(maps.len() as u32).to_le_bytes());
    v.extend_from_slice(&score.to_le_bytes());
    for m in maps {
        v.extend_from_slice(bytemuck::cast_slice::<f32, u8>(m));
    }
    crate::io::files::write_bytes_atomic(p, v)
}

/// (image score, maps) of `image` cached at `p`; None when not cached yet, or cached from other
/// content of the image (or in the earlier format without the hash): the caller recomputes it.
pub fn read_maps(p: &Path, image: &Path, px: usize) -> Result<Option<(f32, Vec<Vec<f32>>)>> {
    let bad = || Error::BadFile { path: p.to_path_buf(), msg: "cached maps do not fit (another model or resolution?): delete the cache".into() };
    if p.symlink_metadata().is_err() {
        return Ok(None);
    }
    // a FIFO or folder in the cache is an error naming it, never a blocking read
    let b = crate::io::files::read_regular(p)?;
    if b.len() < 24 || &b[..8] != MAGIC {
        return Ok(None);
    }
    let hash = u64::from_le_bytes(b[8..16].try_into().map_err(|_| bad())?);
    if hash != crate::io::files::content_hash(image)? {
        return Ok(None);
    }
    let k = u32::from_le_bytes(b[16..20].try_into().map_err(|_| bad())?) as usize;
    let score = f32::from_le_bytes(b[20..24].try_into().map_err(|_| bad())?);
    let body = &b[24..];
    if k == 0 || k > 3 || body.len() != 4 * k * px {
        return Err(bad());
    }
    let v: Vec<f32> = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(Some((score, v.chunks(px).map(|m| m.to_vec()).collect())))
}

#[cfg(test)]
mod tests {
    use super::{cache_path, check_cache_settings, read_maps, write_maps};
    use std::path::Path;

    /// Maps made in another precision are refused, naming `precision` — also when the other
    /// side is f32, whose settings leave the key out (so caches made before it stay valid).
    #[test]
    fn a_cache_of_another_precision_is_refused() {
        let out = std::env::temp_dir().join(format!("ran-cache-precision-{}", std::process::id()));
        let base = serde_json::json!({"seed": 0});
        let mut bf16 = base.clone();
        bf16["precision"] = "bf16".into();
        check_cache_settings(&out, "c", &base).unwrap();
        let e = check_cache_settings(&out, "c", &bf16).unwrap_err().to_string();
        assert!(e.contains("different: precision"), "{e}");
        std::fs::remove_dir_all(&out).unwrap();
        check_cache_settings(&out, "c", &bf16).unwrap();
        let e = check_cache_settings(&out, "c", &base).unwrap_err().to_string();
        assert!(e.contains("different: precision"), "{e}");
        check_cache_settings(&out, "c", &bf16).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
    }

    /// Two images never share a cache file, whatever their names (test/x__y/000.png and
    /// test/x/y__000.png did when "/" simply became "__").
    #[test]
    fn cache_names_are_injective() {
        let (out, root) = (Path::new("/o"), Path::new("/d"));
        let a = cache_path(out, "c", Path::new("/d/c/test/x__y/000.png"), root);
        let b = cache_path(out, "c", Path::new("/d/c/test/x/y__000.png"), root);
        assert_ne!(a, b);
        // plain names keep their readable form
        assert_eq!(cache_path(out, "carpet", Path::new("/d/carpet/test/good/000.png"), root), Path::new("/o/cache/carpet/carpet__test__good__000.png.f32"));
    }

    /// An entry answers only for the image content it was made from: another image under the same
    /// name (another data set, or the file replaced) is recomputed, not served (eval reported
    /// pixel AUROC 0.90 from a cache of another set; a fresh run gives 0.53).
    #[test]
    fn cached_maps_are_keyed_by_the_image_content() {
        let dir = std::env::temp_dir().join(format!("ran-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (img, entry) = (dir.join("000.png"), dir.join("c/000.png.f32"));
        std::fs::write(&img, b"first image bytes").unwrap();
        write_maps(&entry, &img, 1.5, &[&[1.0, 2.0, 3.0, 4.0]]).unwrap();
        let (score, maps) = read_maps(&entry, &img, 4).unwrap().expect("cached");
        assert_eq!((score, maps), (1.5, vec![vec![1.0, 2.0, 3.0, 4.0]]));
        std::fs::write(&img, b"another image, same name").unwrap();
        assert!(read_maps(&entry, &img, 4).unwrap().is_none(), "a stale entry answered for new content");
        // the earlier format (no magic, no hash) is stale too
        std::fs::write(&entry, bytemuck::cast_slice::<f32, u8>(&[1.0, 1.5, 1.0, 2.0, 3.0, 4.0])).unwrap();
        assert!(read_maps(&entry, &img, 4).unwrap().is_none());
        // a damaged entry of the current format is an error naming it
        write_maps(&entry, &img, 1.5, &[&[1.0, 2.0, 3.0, 4.0]]).unwrap();
        let e = read_maps(&entry, &img, 9).unwrap_err().to_string();
        assert!(e.contains("000.png.f32") && e.contains("delete the cache"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
