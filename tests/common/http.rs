//! A small HTTP/1.1 client over a raw TcpStream (one request per connection, read to the end)
//! and a `ran serve` child process on an ephemeral port, for the tests that talk to a real server.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ran serve` with `args` (the bind must be 127.0.0.1:0); returns once /readyz says the
/// model is loaded (at most a minute).
pub fn start_server(bin: &str, args: &[&str]) -> Server {
    let mut child = Command::new(bin).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("listening on http://") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr: SocketAddr = rx.recv_timeout(Duration::from_secs(60)).expect("the server prints its address").parse().unwrap();
    let server = Server { child, addr };
    let t0 = Instant::now();
    while request(server.addr, "GET", "/readyz", &[], b"").map(|r| r.status).unwrap_or(0) != 200 {
        assert!(t0.elapsed() < Duration::from_secs(60), "not ready within a minute");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection (Connection: close).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(90)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    // the server may answer (413) before reading all of a large body: a failed write is no error here
    let _ = s.write_all(body);
    // read the head, then the body: Content-Length bytes when given (a server may keep the
    // connection open despite Connection: close), else to the end
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let end = loop {
        if let Some(e) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break e;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(format!("no header end in {} bytes", raw.len())));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("status line"))?;
    let headers: BTreeMap<String, String> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    match headers.get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        Some(len) => {
            while raw.len() < end + 4 + len {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Err(std::io::Error::other(format!("the body ends after {} of {len} bytes", raw.len() - end - 4)));
                }
                raw.extend_from_slice(&buf[..n]);
            }
            raw.truncate(end + 4 + len);
        }
        None => {
            s.read_to_end(&mut raw)?;
        }
    }
    let mut body = raw[end + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        body = dechunk(&body);
    }
    Ok(Reply { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}
