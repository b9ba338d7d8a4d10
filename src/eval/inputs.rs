//! The image files named on a command line: files as given, folders searched recursively, globs.

use crate::io::files;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

const IMAGE_EXT: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXT.contains(&e.to_ascii_lowercase().as_str())) && !p.to_string_lossy().contains("_mask")
}

/// Files named by the inputs: files as given (a name that exists is a file even with glob
/// characters in it), folders searched recursively for images (not `*_mask*` files; symlinks
/// followed, each real folder entered once, so a link cycle neither loops nor repeats images),
/// glob patterns. A folder without images, a pattern matching nothing or a missing file is an
/// error naming it; an image-named entry of a folder that is not a regular file (a FIFO) too.
pub fn collect_inputs(inputs: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for i in inputs {
        let p = Path::new(i);
        if p.is_dir() {
            let found = files::walk_files(p, &is_image)?;
            if found.is_empty() {
                return Err(Error::InvalidArgument(format!("{i}: no images (png, jpg, bmp) in this folder")));
            }
            out.extend(found);
            continue;
        }
        match files::expand_pattern(i)? {
            Some(v) if v.is_empty() => return Err(Error::InvalidArgument(format!("{i}: the pattern matches no file"))),
            Some(v) => out.extend(v),
            // reported when it is read, with the other unreadable images (skipped by name)
            None => out.push(p.to_path_buf()),
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument("no input images given".into()));
    }
    // the same file named twice (a folder and a pattern over it) is scored once
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::collect_inputs;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ran-inputs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A folder linking to itself (and twice to a sibling) lists each image once, without looping.
    #[cfg(unix)]
    #[test]
    fn symlink_cycles_neither_loop_nor_repeat() {
        let d = tmp("cycle");
        std::fs::create_dir_all(d.join("a")).unwrap();
        std::fs::write(d.join("a/x.png"), b"not decoded here").unwrap();
        std::os::unix::fs::symlink(&d, d.join("a/loop")).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("b1")).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("b2")).unwrap();
        let got = collect_inputs(&[d.display().to_string()]).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        // the same file through a folder and by name: once
        let got = collect_inputs(&[d.display().to_string(), d.join("a/x.png").display().to_string()]).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// An existing name with glob characters is that file, not a pattern that matches nothing.
    #[test]
    fn existing_names_with_glob_characters_are_files() {
        let d = tmp("glob");
        let f = d.join("img[1].png");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(collect_inputs(&[f.display().to_string()]).unwrap(), vec![f.clone()]);
        let e = collect_inputs(&[d.join("none*.png").display().to_string()]).unwrap_err().to_string();
        assert!(e.contains("matches no file"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A FIFO with an image's name inside a folder is an error naming it, not a hang.
    #[cfg(unix)]
    #[test]
    fn a_fifo_in_a_folder_is_named_not_read() {
        let d = tmp("fifo");
        let f = d.join("pipe.png");
        let ok = std::process::Command::new("mkfifo").arg(&f).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "mkfifo");
        let e = collect_inputs(&[d.display().to_string()]).unwrap_err().to_string();
        assert!(e.contains("pipe.png"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
