//! The page at `/` in a real browser: headless Chromium, driven through chromedriver's WebDriver
//! protocol (plain JSON over HTTP), uploads a demo image, reads the score, the verdict and the
//! overlay off the page and checks them against the API's answer for the same image; the
//! threshold slider re-colours the verdict; a screenshot is taken (RAN_SCREENSHOT=docs/serve_page.png
//! writes it over the README's).
//!
//! Needs Debian's `chromium` and `chromium-driver`, so it is ignored by default:
//! `cargo test --release --test browser -- --ignored` (it fails, never skips, without them).

#[path = "common/http.rs"]
mod http;
#[path = "common/paths.rs"]
mod paths;
use http::{request, start_server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Driver {
    child: Child,
    addr: SocketAddr,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = request(self.addr, "DELETE", &format!("/session/{}", self.session), &[], b"");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wd(addr: SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let b = if body.is_null() { String::new() } else { body.to_string() };
    let h: &[(&str, &str)] = if body.is_null() { &[] } else { &[("Content-Type", "application/json")] };
    let r = request(addr, method, path, h, b.as_bytes()).expect("chromedriver answers");
    let v = r.json();
    assert_eq!(r.status, 200, "{method} {path}: {v}");
    v["value"].clone()
}

impl Driver {
    fn start() -> Driver {
        let mut child = Command::new("chromedriver").arg("--port=0").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("chromedriver (apt-get install chromium chromium-driver)");
        let out = child.stdout.take().unwrap();
        let mut port = None;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(p) = line.strip_prefix("ChromeDriver was started successfully on port ") {
                port = p.trim_end_matches('.').parse::<u16>().ok();
                break;
            }
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", port.expect("chromedriver prints its port")).parse().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"]}}}});
        let v = wd(addr, "POST", "/session", caps);
        let session = v["sessionId"].as_str().expect("a session").to_string();
        Driver { child, addr, session }
    }
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        wd(self.addr, method, &format!("/session/{}{path}", self.session), body)
    }
    fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": js, "args": []}))
    }
}

#[test]
#[ignore = "needs chromium and chromium-driver (Debian packages); run with --ignored"]
fn the_page_scores_an_upload_in_chromium() {
    let root = paths::repo_path("");
    let image = root.join("examples/demo/brick/test/scratch/000.png");
    let server = start_server(&paths::ran_bin().display().to_string(), &["serve", "--demo", "--device", "cpu", "--bind", "127.0.0.1:0"]);
    // the API's answer for the same image: the reference for what the page shows
    let api = request(server.addr, "POST", "/v1/detect?class=brick", &[("Content-Type", "image/png")], &std::fs::read(&image).unwrap()).unwrap();
    assert_eq!(api.status, 200, "{}", api.text());
    let want = api.json()["results"][0].clone();
    let d = Driver::start();
    d.call("POST", "/url", json!({"url": format!("http://{}/", server.addr)}));
    // the class list comes from /v1/info; choose brick, then upload through the file input
    let t0 = Instant::now();
    while d.script("return document.querySelectorAll('#class option').length").as_u64().unwrap_or(0) < 4 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the page never listed the classes");
        std::thread::sleep(Duration::from_millis(100));
    }
    d.script("const s = document.getElementById('class'); s.value = 'brick'; s.dispatchEvent(new Event('change')); return s.value");
    let input = d.call("POST", "/element", json!({"using": "css selector", "value": "#file"}));
    let eid = input.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("the file input").to_string();
    d.call("POST", &format!("/element/{eid}/value"), json!({"text": image.display().to_string()}));
    let t0 = Instant::now();
    let shown = loop {
        let v = d.script(
            "const r = document.querySelector('.result'); if (!r) return null;
             const imgs = [...r.querySelectorAll('img')].map(i => [i.alt, i.src.slice(0, 22), i.naturalWidth]);
             return {verdict: r.querySelector('.verdict').textContent, text: r.textContent, imgs: imgs,
                     overlay: r.querySelector('img[alt=overlay]').src};",
        );
        if !v.is_null() && v["imgs"].as_array().is_some_and(|a| a.iter().all(|i| i[2].as_u64().unwrap_or(0) > 0)) {
            break v;
        }
        let status = d.script("return document.getElementById('status').textContent");
        assert!(t0.elapsed() < Duration::from_secs(60), "no result on the page; status: {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let verdict = if want["defective"] == true { "defective" } else { "ok" };
    assert_eq!(shown["verdict"], verdict, "{shown}");
    let score = format!("score {:.3}", want["image_score"].as_f64().unwrap());
    assert!(shown["text"].as_str().unwrap().contains(&score), "{score} not in {}", shown["text"]);
    // the overlay on the page is the service's overlay of this image, pixel for pixel
    let b64 = shown["overlay"].as_str().unwrap().strip_prefix("data:image/png;base64,").expect("an inline PNG").to_string();
    let png = request(server.addr, "GET", want["overlay_url"].as_str().unwrap(), &[], b"").unwrap().body;
    let page_png = decode_b64(&b64);
    assert_eq!(image::load_from_memory(&page_png).unwrap().to_rgb8().into_raw(), image::load_from_memory(&png).unwrap().to_rgb8().into_raw());
    for i in shown["imgs"].as_array().unwrap() {
        assert_eq!(i[2], 64, "{i}: the demo's 64² pictures");
    }
    // the slider scales the thresholds in the page: far enough up, the scratch is no longer defective
    let factor = want["image_score"].as_f64().unwrap() / want["threshold"].as_f64().unwrap() + 0.01;
    assert!(factor <= 4.0, "the slider reaches ×4; this image needs ×{factor}");
    let v = d.script(&format!(
        "const s = document.getElementById('scale'); s.value = '{factor}'; s.dispatchEvent(new Event('input'));
         return document.querySelector('.result .verdict').textContent"
    ));
    assert_eq!(v, "ok", "after scaling the threshold by {factor}");
    d.script("const s = document.getElementById('scale'); s.value = '1'; s.dispatchEvent(new Event('input')); return 0");
    let shot = d.call("GET", "/screenshot", json!(null));
    let png = decode_b64(shot.as_str().unwrap());
    // the page as rendered, a real PNG; RAN_SCREENSHOT=docs/serve_page.png refreshes the README's picture
    let img = image::load_from_memory(&png).expect("the screenshot is a PNG");
    assert!(img.width() >= 800 && img.height() >= 400, "screenshot {}×{}", img.width(), img.height());
    let to = std::env::var_os("RAN_SCREENSHOT").map_or_else(|| std::env::temp_dir().join(format!("ran-serve-page-{}.png", std::process::id())), |p| root.join(p));
    std::fs::write(&to, &png).unwrap();
    eprintln!("screenshot: {}", to.display());
}

/// Standard base64 (the browser's and chromedriver's), for the test's own reading.
fn decode_b64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| val(c) as u32).collect();
        let n = v.iter().enumerate().fold(0u32, |n, (i, x)| n | x << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
