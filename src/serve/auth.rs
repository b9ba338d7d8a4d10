//! Who may call the service: a loopback bind is open to local processes; any other bind needs a
//! Bearer token (`--token-file`) or an explicit `--insecure`. Tokens are compared in constant
//! time (SHA-256 of both, then every byte), so timing tells nothing of the token's content or length.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;

/// The token of `--token-file`: its content without surrounding whitespace; empty is refused.
pub fn read_token(path: &Path) -> Result<String> {
    let bytes = crate::io::files::read_regular(path)?;
    if bytes.len() > 4096 {
        return Err(Error::BadFile { path: path.to_path_buf(), msg: format!("{} bytes: a token file holds one token (at most 4096 bytes)", bytes.len()) });
    }
    let t = String::from_utf8(bytes).map_err(|_| Error::BadFile { path: path.to_path_buf(), msg: "the token is not UTF-8 text".into() })?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(Error::BadFile { path: path.to_path_buf(), msg: "the token file is empty".into() });
    }
    Ok(t)
}

/// Refuses a bind beyond loopback without a token, unless the operator said `--insecure`.
pub fn check_bind(addr: &SocketAddr, has_token: bool, insecure: bool) -> Result<()> {
    if addr.ip().is_loopback() || has_token || insecure {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "--bind {addr} is reachable from other machines: give --token-file FILE (clients send `Authorization: Bearer <token>`) or --insecure to serve without authentication"
    )))
}

/// Equality of two secrets whose running time depends on neither's content nor length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter().zip(hb.iter()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether an `Authorization` header value carries `token`.
pub fn bearer_ok(header: Option<&str>, token: &str) -> bool {
    let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_binds() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cres") && !constant_time_eq(b"s3cret", b"s3cret2") && !constant_time_eq(b"", b"x"));
        assert!(bearer_ok(Some("Bearer s3cret"), "s3cret"));
        for bad in [None, Some("s3cret"), Some("Bearer s3cre"), Some("Basic s3cret"), Some("Bearer ")] {
            assert!(!bearer_ok(bad, "s3cret"), "{bad:?}");
        }
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(check_bind(&lo, false, false).is_ok() && check_bind(&v6, false, false).is_ok());
        assert!(check_bind(&any, false, false).unwrap_err().to_string().contains("--token-file"));
        assert!(check_bind(&any, true, false).is_ok() && check_bind(&any, false, true).is_ok());
    }
}
