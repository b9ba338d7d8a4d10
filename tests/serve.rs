//! `ran serve` as a client sees it: a real server on 127.0.0.1 (an ephemeral port), the demo model
//! on the CPU backend, spoken to over raw HTTP/1.1. Answers are checked against `ran detect` on
//! the same images (the reference), under concurrent load with batching, and with batching off
//! (then bit for bit); limits, tokens, a full queue and SIGTERM under load.

#[path = "common/paths.rs"]
mod paths;

#[path = "common/http.rs"]
mod http;
use http::{request, start_server, Reply, Server};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Starts `ran serve --demo` with the reference calibration and `extra` flags, ready.
fn start(extra: &[&str]) -> Server {
    let cal = reference().cal.display().to_string();
    let mut args = vec!["serve", "--demo", "--device", "cpu", "--bind", "127.0.0.1:0", "--calibration", &cal];
    args.extend_from_slice(extra);
    start_server(bin(), &args)
}

fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| paths::ran_bin().display().to_string())
}

fn demo(p: &str) -> PathBuf {
    paths::repo_path("examples/demo").join(p)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ran-serve-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Images of the demo, two per class (a normal one and a defect), with their class.
fn images() -> Vec<(PathBuf, &'static str)> {
    vec![
        (demo("brick/test/good/000.png"), "brick"),
        (demo("brick/test/scratch/001.png"), "brick"),
        (demo("moon/test/good/001.png"), "moon"),
        (demo("moon/test/spot/000.png"), "moon"),
        (demo("gravel/test/good/002.png"), "gravel"),
        (demo("gravel/test/hole/000.png"), "gravel"),
    ]
}

/// One calibration file for every server of this binary (two normal images per class keep it
/// short), and `ran detect`'s results with it on `images()`: the reference answers.
struct Reference {
    cal: PathBuf,
    /// per image: results.json's row
    rows: Vec<serde_json::Value>,
}

fn reference() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| {
        let d = tmp("reference");
        let cal = d.join("cal.safetensors");
        let o = Command::new(bin()).args(["calibrate", "--demo", "--device", "cpu", "--calibration-images", "2", "--out", cal.to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = d.join("detect");
        let mut args = vec!["detect".to_string(), "--demo".into(), "--device".into(), "cpu".into(), "--calibration".into(), cal.display().to_string(), "--out".into(), out.display().to_string()];
        args.extend(images().iter().map(|(p, _)| p.display().to_string()));
        let o = Command::new(bin()).args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
        Reference { cal, rows: j["images"].as_array().unwrap().clone() }
    })
}

fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    match request(s.addr, "GET", path, headers, b"") {
        Ok(r) => (r.status, r.body),
        Err(_) => (0, Vec::new()),
    }
}

fn post_image(addr: SocketAddr, path: &str, bytes: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut h = vec![("Content-Type", "image/png")];
    h.extend_from_slice(headers);
    request(addr, "POST", path, &h, bytes).expect("an answer")
}

fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "ran-test-boundary-7f3a";
    let mut b = Vec::new();
    for (name, file, data) in parts {
        b.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = file {
            b.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: image/png").as_bytes());
        }
        b.extend_from_slice(b"\r\n\r\n");
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), b)
}

/// `|got − ref| ≤ atol + rtol·|ref|`.
fn close(got: f64, want: f64, atol: f64, rtol: f64) -> bool {
    (got - want).abs() <= atol + rtol * want.abs()
}

/// The decoded RGB pixels of a PNG.
fn pixels(png: &[u8]) -> Vec<u8> {
    image::load_from_memory(png).unwrap().to_rgb8().into_raw()
}

/// A load of 256 requests from 16 threads, batched by the server (up to 8 per pass), while other
/// clients give up mid-upload: every answer is detect's for that image, each request answered
/// once with its own result id (nothing lost, nothing duplicated). Batches reorder f32 sums inside
/// the matrix products, so a batched score may differ from detect's (batch 1) in the last bits:
/// the tolerance is detect's own for `--batch` (tests/cli_detect.rs, 1e-5 relative); the verdict
/// and the overlay (±1 level) match.
#[test]
fn concurrent_requests_are_batched_and_answer_as_detect() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 16;
    let r = reference();
    let s = start(&["--batch", "8", "--max-wait-ms", "30", "--queue", "64"]);
    let imgs = images();
    let addr = s.addr;
    // clients that announce a body and vanish after part of it, during the load
    let quitters: Vec<_> = (0..4)
        .map(|k| {
            std::thread::spawn(move || {
                for _ in 0..4 {
                    std::thread::sleep(Duration::from_millis(50 * (k + 1)));
                    let mut c = TcpStream::connect(addr).unwrap();
                    let head = format!("POST /v1/detect?class=brick HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nContent-Length: 200000\r\n\r\n");
                    let _ = c.write_all(head.as_bytes());
                    let _ = c.write_all(&[0x89, b'P', b'N', b'G', 13, 10, 26, 10]);
                    let _ = c.write_all(&[7u8; 3000]);
                    drop(c);
                }
            })
        })
        .collect();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let imgs = imgs.clone();
            std::thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|k| {
                        let i = (t * PER_THREAD + k) % imgs.len();
                        let bytes = std::fs::read(&imgs[i].0).unwrap();
                        (i, post_image(addr, &format!("/v1/detect?class={}", imgs[i].1), &bytes, &[]))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<(usize, Reply)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    quitters.into_iter().for_each(|q| q.join().unwrap());
    assert_eq!(answers.len(), THREADS * PER_THREAD);
    let mut ids = std::collections::BTreeSet::new();
    let mut largest_batch = 0;
    let mut worst = 0.0f64;
    for (i, a) in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
        let j = a.json();
        let res = &j["results"][0];
        let want = &r.rows[*i];
        let (got, exp) = (res["image_score"].as_f64().unwrap(), want["image_score"].as_f64().unwrap());
        worst = worst.max((got - exp).abs() / exp.abs().max(1.0));
        assert!(close(got, exp, 0.0, 1e-5), "{}: served {got}, detect {exp}", imgs[*i].0.display());
        assert_eq!(res["defective"], want["defective"], "{}", imgs[*i].0.display());
        assert_eq!(res["threshold"], want["image_threshold"]);
        assert_eq!(res["category"], want["category"]);
        assert_eq!(res["display_range"], want["display_range"]);
        assert_eq!(res["model_id"], j["model_id"]);
        largest_batch = largest_batch.max(res["batch_size"].as_u64().unwrap());
        assert!(ids.insert(res["id"].as_str().unwrap().to_string()), "an id given twice");
        // the stored overlay is detect's overlay of the image (±1 level where the batch moved a map value)
        let (st, png) = get(&s, res["overlay_url"].as_str().unwrap(), &[]);
        assert_eq!(st, 200);
        let detect_overlay = pixels(&std::fs::read(want["overlay"].as_str().unwrap()).unwrap());
        let served = pixels(&png);
        assert_eq!(served.len(), detect_overlay.len());
        assert!(served.iter().zip(&detect_overlay).all(|(a, b)| a.abs_diff(*b) <= 1), "overlay of {}", imgs[*i].0.display());
        let (st, _) = get(&s, res["heatmap_url"].as_str().unwrap(), &[]);
        assert_eq!(st, 200);
    }
    assert!(largest_batch > 1, "8 concurrent clients never shared a model pass");
    eprintln!("largest batch {largest_batch}, largest relative score difference to detect {worst:e}");
    let m = String::from_utf8(get(&s, "/metrics", &[]).1).unwrap();
    let n = THREADS * PER_THREAD;
    assert!(m.contains(&format!("ran_requests_total{{route=\"/v1/detect\",status=\"200\"}} {n}")), "{m}");
    assert!(m.contains(&format!("ran_images_scored_total {n}")), "the abandoned uploads were scored or answers lost:\n{m}");
    // the server notices the abandoned connections soon after they close
    let t0 = Instant::now();
    while !String::from_utf8(get(&s, "/metrics", &[]).1).unwrap().lines().any(|l| l == "ran_requests_in_flight 0") {
        assert!(t0.elapsed() < Duration::from_secs(10), "an abandoned upload is still held:\n{}", String::from_utf8(get(&s, "/metrics", &[]).1).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    // an unknown id is a 404, not another result
    assert_eq!(get(&s, "/v1/results/00000000000000000000000000000000/overlay.png", &[]).0, 404);
    // the model's information names the backend and the precision it computes in
    let (st, info) = get(&s, "/v1/info", &[]);
    assert_eq!(st, 200);
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(info["precision"], "f32", "{info}");
    assert!(info["backend"].as_str().is_some_and(|b| !b.is_empty()), "{info}");
}

/// With batching off, every score is detect's bit for bit, and several images in one multipart
/// request come back in order, each as detect's; ?inline=1 carries the same PNGs.
#[test]
fn unbatched_answers_are_detects_exactly() {
    let r = reference();
    let s = start(&["--batch", "1"]);
    let imgs = images();
    for (i, (p, class)) in imgs.iter().enumerate().take(3) {
        let a = post_image(s.addr, &format!("/v1/detect?class={class}"), &std::fs::read(p).unwrap(), &[]);
        assert_eq!(a.status, 200, "{}", a.text());
        let res = &a.json()["results"][0];
        for (k, kd) in [("image_score", "image_score"), ("map_min", "map_min"), ("map_max", "map_max"), ("defective", "defective"), ("normal_p999", "normal_p999")] {
            assert_eq!(res[k], r.rows[i][kd], "{k} of {}", p.display());
        }
        let (_, png) = get(&s, res["overlay_url"].as_str().unwrap(), &[]);
        assert_eq!(pixels(&png), pixels(&std::fs::read(r.rows[i]["overlay"].as_str().unwrap()).unwrap()), "overlay of {}", p.display());
    }
    // two moon images in one request, the class as a form field
    let (a, b) = (std::fs::read(&imgs[2].0).unwrap(), std::fs::read(&imgs[3].0).unwrap());
    let (ct, body) = multipart(&[("class", None, b"moon"), ("image", Some("good.png"), &a), ("image", Some("spot.png"), &b)]);
    let rep = request(s.addr, "POST", "/v1/detect?inline=1", &[("Content-Type", &ct)], &body).unwrap();
    assert_eq!(rep.status, 200, "{}", rep.text());
    let j = rep.json();
    let res = j["results"].as_array().unwrap();
    assert_eq!(res.len(), 2);
    for (k, i) in [(0, 2), (1, 3)] {
        assert_eq!(res[k]["image_score"], r.rows[i]["image_score"]);
        assert!(res[k]["overlay_png_base64"].as_str().unwrap().len() > 100 && res[k].get("overlay_url").is_none());
    }
    assert_eq!(res[0]["name"], "good.png");
}

#[test]
fn bad_requests_limits_and_tokens() {
    let d = tmp("limits");
    let token = d.join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let s = start(&["--token-file", token.to_str().unwrap(), "--max-body-bytes", "20000", "--max-images", "2", "--max-pixels", "5000"]);
    let auth = [("Authorization", "Bearer s3cret-token")];
    let png = std::fs::read(demo("brick/test/good/000.png")).unwrap();
    // the token
    assert_eq!(post_image(s.addr, "/v1/detect?class=brick", &png, &[]).status, 401);
    let wrong = post_image(s.addr, "/v1/detect?class=brick", &png, &[("Authorization", "Bearer s3cret-tokem")]);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.headers.get("www-authenticate").map(String::as_str), Some("Bearer"));
    assert_eq!(post_image(s.addr, "/v1/detect?class=brick", &png, &auth).status, 200);
    assert_eq!(get(&s, "/metrics", &[]).0, 401);
    assert_eq!(get(&s, "/healthz", &[]).0, 200, "probes need no token");
    // corrupt and truncated images: 400 naming the problem
    let bad = post_image(s.addr, "/v1/detect?class=brick", b"this is not an image", &auth);
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("cannot decode image"), "{}", bad.text());
    let cut = post_image(s.addr, "/v1/detect?class=brick", &png[..png.len() / 2], &auth);
    assert_eq!(cut.status, 400);
    assert!(cut.text().contains("cannot decode image"), "{}", cut.text());
    // a class the calibration does not know, and none given for a class-conditional model
    let unk = post_image(s.addr, "/v1/detect?class=wood", &png, &auth);
    assert!(unk.status == 400 && unk.text().contains("unknown class `wood`"), "{}", unk.text());
    let none = post_image(s.addr, "/v1/detect", &png, &auth);
    assert!(none.status == 400 && none.text().contains("give the class"), "{}", none.text());
    // too many pixels (a 100×100 image against --max-pixels 5000): refused from the header
    let mut big = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(100, 100).write_to(&mut big, image::ImageFormat::Png).unwrap();
    let bomb = post_image(s.addr, "/v1/detect?class=brick", big.get_ref(), &auth);
    assert!(bomb.status == 400 && bomb.text().contains("exceeds the limit of 5000"), "{}", bomb.text());
    // a body over --max-body-bytes: 413
    let huge = vec![0u8; 25_000];
    let too_big = post_image(s.addr, "/v1/detect?class=brick", &huge, &auth);
    assert_eq!(too_big.status, 413, "{}", too_big.text());
    // three images against --max-images 2: 413
    let (ct, body) = multipart(&[("image", Some("a.png"), &png), ("image", Some("b.png"), &png), ("image", Some("c.png"), &png)]);
    let many = request(s.addr, "POST", "/v1/detect?class=brick", &[("Content-Type", &ct), auth[0]], &body).unwrap();
    assert!(many.status == 413 && many.text().contains("--max-images"), "{}", many.text());
    // another site's page may not use the service (no CORS)
    let cross = post_image(s.addr, "/v1/detect?class=brick", &png, &[auth[0], ("Origin", "http://example.com")]);
    assert_eq!(cross.status, 403);
    assert!(!cross.headers.contains_key("access-control-allow-origin"));
    // the page is served, from the binary
    let (st, page) = get(&s, "/", &[]);
    assert!(st == 200 && String::from_utf8_lossy(&page).contains("/v1/detect"), "the page posts to the API");
    let m = String::from_utf8(get(&s, "/metrics", &auth).1).unwrap();
    for line in ["ran_requests_total{route=\"/v1/detect\",status=\"401\"} 2", "ran_requests_total{route=\"/v1/detect\",status=\"413\"} 2", "ran_requests_total{route=\"/v1/detect\",status=\"400\"} 5"]
    {
        assert!(m.contains(line), "{line} in\n{m}");
    }
    // beyond loopback without a token: refused before anything is loaded
    let o = Command::new(bin()).args(["serve", "--demo", "--bind", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--token-file"), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&d);
}

/// A queue of one image, one image per pass: of 12 simultaneous requests some are turned away
/// with 503 and Retry-After while the model is busy; every other one is answered.
#[test]
fn a_full_queue_answers_503() {
    let s = start(&["--queue", "1", "--batch", "1", "--max-wait-ms", "0"]);
    let png = std::fs::read(demo("gravel/test/good/000.png")).unwrap();
    let addr = s.addr;
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let png = png.clone();
            std::thread::spawn(move || post_image(addr, "/v1/detect?class=gravel", &png, &[]))
        })
        .collect();
    let replies: Vec<Reply> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(!busy.is_empty(), "statuses {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(replies.iter().any(|r| r.status == 200));
    assert!(replies.iter().all(|r| r.status == 200 || r.status == 503), "statuses {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for b in busy {
        assert_eq!(b.headers.get("retry-after").map(String::as_str), Some("1"));
        assert!(b.text().contains("queue is full"), "{}", b.text());
    }
}

/// SIGTERM while requests are being handled: each is answered, the process exits 0, and
/// nothing is accepted afterwards.
#[test]
fn sigterm_answers_the_accepted_requests_and_exits_0() {
    let mut s = start(&["--batch", "2"]);
    let png = std::fs::read(demo("moon/test/scratch/000.png")).unwrap();
    let addr = s.addr;
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let png = png.clone();
            std::thread::spawn(move || post_image(addr, "/v1/detect?class=moon", &png, &[]))
        })
        .collect();
    // wait until the six are inside the service
    let t0 = Instant::now();
    loop {
        let m = String::from_utf8(get(&s, "/metrics", &[]).1).unwrap_or_default();
        if m.lines().any(|l| l == "ran_requests_in_flight 6") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the requests never arrived:\n{m}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let k = Command::new("kill").args(["-TERM", &s.child.id().to_string()]).status().unwrap();
    assert!(k.success());
    let replies: Vec<Reply> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st.code();
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    assert!(TcpStream::connect(addr).is_err(), "still accepting after SIGTERM");
}
