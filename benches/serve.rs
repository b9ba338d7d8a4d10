//! `ran serve --demo` under load, as a line would drive it: REQUESTS single-image requests from
//! CONCURRENCY clients, each waiting for its answer before sending the next (closed loop), with
//! batching off and on. Prints throughput (images/s) and latency percentiles per setting, and
//! the batch sizes the server formed (its /metrics). The CPU backend; the machine's other load
//! shows in the numbers, so run it on a quiet machine: `cargo bench --bench serve`.
//! RAN_SERVE_BENCH="REQUESTS CONCURRENCY" changes the load (default "256 16").

#[path = "../tests/common/http.rs"]
mod http;
use http::{request, start_server};
use std::time::{Duration, Instant};

const IMAGES: [(&str, &str); 6] = [
    ("brick/test/good/000.png", "brick"),
    ("brick/test/scratch/001.png", "brick"),
    ("moon/test/good/001.png", "moon"),
    ("moon/test/spot/000.png", "moon"),
    ("gravel/test/good/002.png", "gravel"),
    ("gravel/test/hole/000.png", "gravel"),
];

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list
    }
    let load = std::env::var("RAN_SERVE_BENCH").unwrap_or_else(|_| "256 16".into());
    let mut it = load.split_whitespace().map(|v| v.parse::<usize>().expect("RAN_SERVE_BENCH: two numbers, REQUESTS CONCURRENCY"));
    let (requests, concurrency) = (it.next().unwrap_or(256), it.next().unwrap_or(16).max(1));
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo");
    let bodies: Vec<(Vec<u8>, &str)> = IMAGES.iter().map(|(p, c)| (std::fs::read(demo.join(p)).unwrap(), *c)).collect();
    println!("ran serve --demo, CPU backend, {requests} requests of one 64×64 image from {concurrency} clients (closed loop)");
    println!("{:<28} {:>10} {:>9} {:>9} {:>9} {:>12}", "server", "images/s", "p50 ms", "p99 ms", "max ms", "mean batch");
    for (label, extra) in [("--batch 1", vec!["--batch", "1"]), ("--batch 8 --max-wait-ms 10", vec!["--batch", "8", "--max-wait-ms", "10"])] {
        let mut args = vec!["serve", "--demo", "--device", "cpu", "--bind", "127.0.0.1:0", "--queue", "256"];
        args.extend(extra);
        let server = start_server(env!("CARGO_BIN_EXE_ran"), &args);
        let addr = server.addr;
        // one warm-up request per class (first-touch allocations, page faults)
        for (b, c) in bodies.iter().step_by(2) {
            let r = request(addr, "POST", &format!("/v1/detect?class={c}"), &[("Content-Type", "image/png")], b).unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let t0 = Instant::now();
        let mut lat: Vec<Duration> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..concurrency)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if k >= requests {
                                return mine;
                            }
                            let (b, c) = &bodies[k % bodies.len()];
                            let t = Instant::now();
                            let r = request(addr, "POST", &format!("/v1/detect?class={c}"), &[("Content-Type", "image/png")], b).unwrap();
                            assert_eq!(r.status, 200, "{}", r.text());
                            mine.push(t.elapsed());
                        }
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let wall = t0.elapsed().as_secs_f64();
        lat.sort();
        let metrics = String::from_utf8(request(addr, "GET", "/metrics", &[], b"").unwrap().body).unwrap();
        let value = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(f64::NAN);
        let mean_batch = value("ran_batch_size_sum") / value("ran_batch_size_count");
        println!("{label:<28} {:>10.2} {:>9.1} {:>9.1} {:>9.1} {:>12.2}", requests as f64 / wall, percentile(&lat, 0.5), percentile(&lat, 0.99), percentile(&lat, 1.0), mean_batch);
    }
}
