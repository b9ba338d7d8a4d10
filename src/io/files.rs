//! Opening and finding input files without surprises: only regular files are opened (a FIFO, a
//! device or a folder given as an image or a model is refused by name, and the open itself never
//! blocks, even if a FIFO is swapped in after the check); directory walks follow a symlink once
//! per real directory (no cycles, no file listed twice); a name that exists is that file even if
//! it has glob characters.

use crate::{Error, Result};
use std::collections::BTreeSet;
use std::fs::{File, Metadata};
use std::path::{Path, PathBuf};

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source: e }
}

/// What a non-regular file is, in words.
fn kind(m: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    if m.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

fn not_regular(path: &Path, m: &Metadata) -> Error {
    Error::BadFile { path: path.to_path_buf(), msg: format!("is {}, not a regular file", kind(m)) }
}

/// `path` (after symlinks) must be a regular file; checked from its metadata, without opening it.
pub fn check_regular(path: &Path) -> Result<Metadata> {
    let m = std::fs::metadata(path).map_err(|e| io(path, e))?;
    if !m.is_file() {
        return Err(not_regular(path, &m));
    }
    Ok(m)
}

#[cfg(target_os = "linux")]
const O_NONBLOCK: i32 = 0o4000;
#[cfg(all(unix, not(target_os = "linux")))]
const O_NONBLOCK: i32 = 0x0004;

/// Opens `path` for reading if it is a regular file. The open is non-blocking (opening a FIFO
/// for reading would wait for a writer) and the opened file is checked again, so a file swapped
/// for a FIFO between the check and the open is refused too.
pub fn open_regular(path: &Path) -> Result<File> {
    check_regular(path)?;
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(O_NONBLOCK);
    }
    let f = o.open(path).map_err(|e| io(path, e))?;
    let m = f.metadata().map_err(|e| io(path, e))?;
    if !m.is_file() {
        return Err(not_regular(path, &m));
    }
    Ok(f)
}

/// The whole content of a regular file.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = open_regular(path)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(|e| io(path, e))?;
    Ok(v)
}

/// FNV-1a (64 bits) of a regular file's bytes: tells a changed or different file from the one a
/// cached result was made from (not a defence against deliberate collisions).
pub fn content_hash(path: &Path) -> Result<u64> {
    Ok(read_regular(path)?.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)))
}

/// The entries of a folder, sorted by name.
pub fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        v.push(e.map_err(|e| io(dir, e))?.path());
    }
    v.sort();
    Ok(v)
}

/// A directory's identity on its device: two paths to one real directory share it.
#[cfg(unix)]
fn dir_id(m: &Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}
#[cfg(not(unix))]
fn dir_id(_: &Metadata) -> (u64, u64) {
    (0, 0)
}

/// Every file under `root` (depth-first, entries sorted by name) for which `keep` says yes.
/// Symlinks are followed, but each real directory is entered once, so a link to an ancestor
/// (a cycle) or a second link to a folder already walked adds nothing. A kept entry that is not
/// a regular file (a FIFO named x.png) is an error naming it; dangling links are skipped.
pub fn walk_files(root: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let m = std::fs::metadata(root).map_err(|e| io(root, e))?;
    if !m.is_dir() {
        return Err(Error::BadFile { path: root.to_path_buf(), msg: "is not a directory".into() });
    }
    seen.insert(dir_id(&m));
    // an explicit stack of sorted entry lists (reversed so pop gives the next name): no
    // recursion, so no depth limit but the file system's
    let mut stack = vec![{
        let mut v = read_dir_sorted(root)?;
        v.reverse();
        v
    }];
    while let Some(top) = stack.last_mut() {
        let Some(p) = top.pop() else {
            stack.pop();
            continue;
        };
        let Ok(m) = std::fs::metadata(&p) else { continue }; // dangling link
        if m.is_dir() {
            if seen.insert(dir_id(&m)) {
                let mut v = read_dir_sorted(&p)?;
                v.reverse();
                stack.push(v);
            }
        } else if keep(&p) {
            if !m.is_file() {
                return Err(not_regular(&p, &m));
            }
            out.push(p);
        }
    }
    Ok(out)
}

/// True when `s` has characters a glob pattern gives meaning to.
pub fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// One command-line input: an existing path is itself (even `img[1].png`); otherwise a name
/// with glob characters is a pattern, expanded to the regular files it matches (sorted).
/// Returns None for a name that neither exists nor is a pattern (the caller reports it).
pub fn expand_pattern(input: &str) -> Result<Option<Vec<PathBuf>>> {
    let p = Path::new(input);
    if p.symlink_metadata().is_ok() {
        return Ok(Some(vec![p.to_path_buf()]));
    }
    if !has_glob_chars(input) {
        return Ok(None);
    }
    let g = glob::glob(input).map_err(|e| Error::InvalidArgument(format!("bad pattern {input}: {e}")))?;
    let mut v: Vec<PathBuf> = g.filter_map(|r| r.ok()).filter(|p| p.is_file()).collect();
    v.sort();
    v.dedup();
    Ok(Some(v))
}

/// The temporary name an output is written under before it is renamed into place: beside it
/// (same file system, so the rename is atomic), hidden, and unique to this process.
pub fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes an output atomically: into `temp_beside(path)` through `fill`, then renamed over
/// `path`. An interrupted run leaves no truncated file under the real name, and an output that
/// happens to be the file being read (a memory-mapped model) is never truncated under its reader.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut std::io::BufWriter<File>) -> Result<()>) -> Result<()> {
    use std::io::Write;
    let tmp = temp_beside(path);
    let io = |p: &Path, e: std::io::Error| Error::Io { path: p.to_path_buf(), source: e };
    let result = (|| {
        let mut w = std::io::BufWriter::new(File::create(&tmp).map_err(|e| io(&tmp, e))?);
        fill(&mut w)?;
        w.flush().map_err(|e| io(&tmp, e))?;
        w.get_ref().sync_all().map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `write_atomic` of bytes in memory.
pub fn write_bytes_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    use std::io::Write;
    write_atomic(path, |w| w.write_all(bytes.as_ref()).map_err(|e| Error::Io { path: path.to_path_buf(), source: e }))
}

/// Refuses an output that is one of the inputs (the same file by any name).
pub fn refuse_overwriting_input(out: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(o) = std::fs::canonicalize(out) else { return Ok(()) }; // a new file is no input
    for i in inputs {
        if std::fs::canonicalize(i).is_ok_and(|c| c == o) {
            return Err(Error::InvalidArgument(format!("the output {} is the input {}: choose another --out", out.display(), i.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod atomic_tests {
    use super::*;

    /// An output replaced only when it is complete: a failing writer leaves the old file and
    /// no temporary behind.
    #[test]
    fn write_atomic_replaces_only_complete_outputs() {
        let d = std::env::temp_dir().join(format!("ran-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("out.json");
        write_bytes_atomic(&p, b"old").unwrap();
        let e = write_atomic(&p, |w| {
            use std::io::Write;
            w.write_all(b"half").unwrap();
            Err(Error::InvalidArgument("disk full".into()))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert!(!temp_beside(&p).exists(), "temporary left behind");
        write_bytes_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
