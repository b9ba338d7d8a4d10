//! Just enough of the ZIP format to read PyTorch checkpoints in place: the central directory
//! (with ZIP64), stored (uncompressed) entries only — torch.save never compresses. Entries are
//! byte ranges of the memory-mapped file, so tensors are read without copying the archive.

use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

// Offsets come from the file: every read is bounds- and overflow-checked (None past the end).
fn le16(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o.checked_add(2)?).map(|s| u16::from_le_bytes([s[0], s[1]]) as u64)
}
fn le32(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o.checked_add(4)?).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64)
}
fn le64(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o.checked_add(8)?).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// name → byte range of the entry's data in the archive.
pub fn entries(path: &Path, b: &[u8]) -> Result<BTreeMap<String, std::ops::Range<usize>>> {
    let bad = |m: &str| Error::BadFile { path: path.to_path_buf(), msg: format!("not a readable zip archive (PyTorch .pt): {m}") };
    // End of central directory: within the last 64 KiB + 22 bytes.
    let start = b.len().saturating_sub(65536 + 22);
    let eocd = (start..b.len().saturating_sub(21)).rev().find(|&i| le32(b, i) == Some(0x0605_4b50)).ok_or_else(|| bad("no end-of-central-directory record (truncated?)"))?;
    let mut count = le16(b, eocd + 10).ok_or_else(|| bad("short EOCD"))?;
    let mut cd_off = le32(b, eocd + 16).ok_or_else(|| bad("short EOCD"))?;
    if count == 0xFFFF || cd_off == 0xFFFF_FFFF {
        // ZIP64: the locator sits just before the EOCD and points at the ZIP64 EOCD record.
        let loc = eocd.checked_sub(20).filter(|&l| le32(b, l) == Some(0x0706_4b50)).ok_or_else(|| bad("ZIP64 locator missing"))?;
        let z = usize::try_from(le64(b, loc + 8).ok_or_else(|| bad("short ZIP64 locator"))?).unwrap_or(usize::MAX);
        if le32(b, z) != Some(0x0606_4b50) {
            return Err(bad("ZIP64 end record missing"));
        }
        count = le64(b, z + 32).ok_or_else(|| bad("short ZIP64 record"))?;
        cd_off = le64(b, z + 48).ok_or_else(|| bad("short ZIP64 record"))?;
    }
    let mut out = BTreeMap::new();
    if count == 0 {
        return Err(Error::BadFile { path: path.to_path_buf(), msg: "an empty zip archive (no entries), not a PyTorch checkpoint".into() });
    }
    let mut p = usize::try_from(cd_off).unwrap_or(usize::MAX);
    for _ in 0..count {
        if le32(b, p) != Some(0x0201_4b50) {
            return Err(bad("corrupt central directory"));
        }
        let method = le16(b, p + 10).ok_or_else(|| bad("short entry"))?;
        let mut csize = le32(b, p + 20).ok_or_else(|| bad("short entry"))?;
        let mut usize_ = le32(b, p + 24).ok_or_else(|| bad("short entry"))?;
        let nlen = le16(b, p + 28).ok_or_else(|| bad("short entry"))? as usize;
        let xlen = le16(b, p + 30).ok_or_else(|| bad("short entry"))? as usize;
        let clen = le16(b, p + 32).ok_or_else(|| bad("short entry"))? as usize;
        let mut loff = le32(b, p + 42).ok_or_else(|| bad("short entry"))?;
        let name = String::from_utf8_lossy(b.get(p + 46..p + 46 + nlen).ok_or_else(|| bad("short entry name"))?).into_owned(); // p + 46 < len: read above
                                                                                                                               // ZIP64 extra field (id 1): the 0xFFFFFFFF fields, in order usize, csize, offset.
        let mut x = p + 46 + nlen;
        let xend = x + xlen;
        while x + 4 <= xend {
            let (id, sz) = (le16(b, x).unwrap_or(0), le16(b, x + 2).unwrap_or(0) as usize);
            if id == 1 {
                let mut q = x + 4;
                if usize_ == 0xFFFF_FFFF {
                    usize_ = le64(b, q).ok_or_else(|| bad("short ZIP64 extra"))?;
                    q += 8;
                }
                if csize == 0xFFFF_FFFF {
                    csize = le64(b, q).ok_or_else(|| bad("short ZIP64 extra"))?;
                    q += 8;
                }
                if loff == 0xFFFF_FFFF {
                    loff = le64(b, q).ok_or_else(|| bad("short ZIP64 extra"))?;
                }
            }
            x += 4 + sz;
        }
        if method != 0 {
            return Err(bad(&format!("entry {name} is compressed (method {method}); torch.save writes stored entries")));
        }
        let l = usize::try_from(loff).unwrap_or(usize::MAX);
        if le32(b, l) != Some(0x0403_4b50) {
            return Err(bad(&format!("entry {name}: bad local header")));
        }
        // l + 30 <= len: the local header's fixed part was read above
        let data = l + 30 + le16(b, l + 26).unwrap_or(0) as usize + le16(b, l + 28).unwrap_or(0) as usize;
        let end = data.checked_add(usize::try_from(csize).unwrap_or(usize::MAX)).filter(|&e| e <= b.len()).ok_or_else(|| bad(&format!("entry {name} runs past the end of the file (truncated)")))?;
        let _ = usize_;
        out.insert(name, data..end);
        p += 46 + nlen + xlen + clen;
    }
    Ok(out)
}
