//! The image files named on a command line: files as given, folders searched recursively, globs.

use crate::error::AtPath;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

const IMAGE_EXT: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "PNG", "JPG"];

/// Files named by the inputs: files as given, folders searched recursively for images (not
/// `*_mask*` files), glob patterns. A folder without images or a pattern matching nothing is an error.
pub fn collect_inputs(inputs: &[String]) -> Result<Vec<PathBuf>> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(d).at_path(d)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXT.contains(&e)) && !p.to_string_lossy().contains("_mask") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for i in inputs {
        let p = Path::new(i);
        if p.is_dir() {
            let before = files.len();
            walk(p, &mut files)?;
            if files.len() == before {
                return Err(Error::InvalidArgument(format!("{i}: no images (png, jpg, bmp) in this folder")));
            }
        } else if i.contains(['*', '?', '[']) {
            let g = glob::glob(i).map_err(|e| Error::InvalidArgument(format!("bad pattern {i}: {e}")))?;
            let before = files.len();
            files.extend(g.filter_map(|r| r.ok()).filter(|p| p.is_file()));
            if files.len() == before {
                return Err(Error::InvalidArgument(format!("{i}: the pattern matches no file")));
            }
        } else {
            files.push(p.to_path_buf());
        }
    }
    if files.is_empty() {
        return Err(Error::InvalidArgument("no input images given".into()));
    }
    Ok(files)
}
