//! Content identities of files: the SHA-256 of a model or calibration file, so that a calibration
//! made for one model is never applied to another (a renamed or rewritten file has another hash).

use crate::error::AtPath;
use crate::Result;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The SHA-256 of a regular file, lowercase hex; read in chunks (models can be gigabytes).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = super::files::open_regular(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at_path(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The SHA-256 of bytes, lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS 180-2's test vectors (independent of the sha2 crate's own tests: a wrong chunking
    /// of the file reader would change the file's hash but not the vectors').
    #[test]
    fn sha256_matches_the_standard_vectors_and_files_hash_as_their_bytes() {
        assert_eq!(sha256_bytes(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_bytes(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let d = std::env::temp_dir().join(format!("ran-hash-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("big.bin");
        // more than one read chunk, not a multiple of it
        let data: Vec<u8> = (0..(1usize << 20) * 2 + 12345).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_bytes(&data));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
