//! The service's counters in the Prometheus text format (`GET /metrics`): requests by route and
//! status, request latency and batch size histograms, queue depth, images scored.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

struct Histogram {
    bounds: Vec<f64>,
    /// per bucket (not cumulative); the last is +Inf
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: Vec<f64>) -> Self {
        let n = bounds.len() + 1;
        Histogram { bounds, counts: vec![0; n], sum: 0.0 }
    }
    fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }
    fn write(&self, out: &mut String, name: &str) {
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}\n{name}_sum {}\n{name}_count {cum}", self.sum);
    }
}

pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<Histogram>,
    batches: Mutex<Histogram>,
    /// images waiting for the model (accepted, not yet taken by the worker)
    pub queue_depth: AtomicUsize,
    /// POST /v1/detect requests being handled
    pub in_flight: AtomicUsize,
    pub images_scored: AtomicU64,
    /// microseconds the worker spent in model passes
    pub model_micros: AtomicU64,
}

impl Metrics {
    pub fn new(max_batch: usize) -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(Histogram::new(LATENCY_BUCKETS.to_vec())),
            batches: Mutex::new(Histogram::new((1..=max_batch.max(1)).map(|b| b as f64).collect())),
            queue_depth: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            images_scored: AtomicU64::new(0),
            model_micros: AtomicU64::new(0),
        }
    }

    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((route.to_string(), status)).or_default() += 1;
        if route == "/v1/detect" {
            self.latency.lock().unwrap_or_else(|e| e.into_inner()).observe(seconds);
        }
    }

    pub fn batch(&self, size: usize, seconds: f64) {
        self.batches.lock().unwrap_or_else(|e| e.into_inner()).observe(size as f64);
        self.images_scored.fetch_add(size as u64, Ordering::Relaxed);
        self.model_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP ran_requests_total HTTP requests answered, by route and status.\n# TYPE ran_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "ran_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP ran_request_duration_seconds Time to answer POST /v1/detect.\n# TYPE ran_request_duration_seconds histogram\n");
        self.latency.lock().unwrap_or_else(|e| e.into_inner()).write(&mut out, "ran_request_duration_seconds");
        out.push_str("# HELP ran_batch_size Images per model pass.\n# TYPE ran_batch_size histogram\n");
        self.batches.lock().unwrap_or_else(|e| e.into_inner()).write(&mut out, "ran_batch_size");
        let _ = writeln!(out, "# HELP ran_queue_depth Images accepted and waiting for the model.\n# TYPE ran_queue_depth gauge\nran_queue_depth {}", self.queue_depth.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP ran_requests_in_flight Detect requests being handled.\n# TYPE ran_requests_in_flight gauge\nran_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP ran_images_scored_total Images scored (rate() of it: images per second).\n# TYPE ran_images_scored_total counter\nran_images_scored_total {}",
            self.images_scored.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ran_model_seconds_total Seconds spent in model passes.\n# TYPE ran_model_seconds_total counter\nran_model_seconds_total {}",
            self.model_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets are cumulative and the counts add up (a per-bucket count printed as cumulative
    /// would fail the +Inf line).
    #[test]
    fn prometheus_text() {
        let m = Metrics::new(4);
        m.request("/v1/detect", 200, 0.03);
        m.request("/v1/detect", 200, 0.3);
        m.request("/v1/detect", 503, 0.001);
        m.request("/healthz", 200, 0.0);
        m.batch(3, 0.5);
        m.batch(1, 0.25);
        let t = m.render();
        for line in [
            "ran_requests_total{route=\"/v1/detect\",status=\"200\"} 2",
            "ran_requests_total{route=\"/v1/detect\",status=\"503\"} 1",
            "ran_requests_total{route=\"/healthz\",status=\"200\"} 1",
            "ran_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "ran_request_duration_seconds_bucket{le=\"0.05\"} 2",
            "ran_request_duration_seconds_bucket{le=\"0.25\"} 2",
            "ran_request_duration_seconds_bucket{le=\"0.5\"} 3",
            "ran_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "ran_request_duration_seconds_count 3",
            "ran_batch_size_bucket{le=\"1\"} 1",
            "ran_batch_size_bucket{le=\"2\"} 1",
            "ran_batch_size_bucket{le=\"3\"} 2",
            "ran_batch_size_sum 4",
            "ran_images_scored_total 4",
            "ran_model_seconds_total 0.75",
            "ran_queue_depth 0",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing in\n{t}");
        }
    }
}
