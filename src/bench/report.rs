//! What `ran bench` prints: the times, the FLOP rate and its share of the machine's ceiling, in
//! words, and with `--json` one JSON object as the last line (the fields tools/bench/*.py print
//! too, so tools/bench/compare.sh can pair the two sides).

use super::measure::Stats;
use crate::backend::driver_counts::DriverCounts;
use serde_json::{json, Value};

/// The f32 FLOP rate the percentages are taken of, and where the number comes from.
#[derive(Clone, Debug)]
pub struct Ceiling {
    pub gflops: f64,
    pub source: String,
}

/// Vendor SGEMM (PyTorch's, through `torch.mm`) reached ~310 GFLOP/s on 2 threads on the project's
/// 2-vCPU AVX-512 machine (benches/RESULTS.md): 155 per thread.
const DEFAULT_GFLOPS_PER_THREAD: f64 = 155.0;

impl Ceiling {
    /// `--ceiling` when given (tools/bench/compare.sh measures torch.mm SGEMM at the same thread
    /// count and passes it), else the dev machine's measured figure scaled to `threads`.
    pub fn new(given: Option<f64>, threads: usize) -> Self {
        match given {
            Some(g) => Ceiling { gflops: g, source: "given with --ceiling".into() },
            None => Ceiling {
                gflops: DEFAULT_GFLOPS_PER_THREAD * threads as f64,
                source: format!(
                    "default: {DEFAULT_GFLOPS_PER_THREAD} GFLOP/s per thread x {threads}, from vendor SGEMM measured at 310 GFLOP/s on 2 threads on the project's 2-vCPU AVX-512 machine (benches/RESULTS.md); measure this machine's with tools/bench/compare.sh or set --ceiling"
                ),
            },
        }
    }
}

/// Where and from what the figures were measured.
#[derive(Clone, Debug)]
pub struct Machine {
    pub device: String,
    /// the operand precision of conv / linear (`--precision`)
    pub precision: crate::ops::precision::Precision,
    pub threads: usize,
    pub commit: String,
    pub ceiling: Ceiling,
}

/// The commit of the source tree: `git` at run time when the build tree is a checkout (with
/// `+dirty` for uncommitted changes to tracked files), else the hash recorded at build time.
pub fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(h) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{h}+dirty")
            } else {
                h
            }
        }
        None => env!("RAN_GIT_HASH").to_string(),
    }
}

fn min_of(v: &[f64]) -> Option<f64> {
    v.iter().copied().min_by(f64::total_cmp)
}

/// One benchmark's result.
pub struct Report {
    /// the subcommand: unet, effnet, wrn50-grad, detect, conv, train, attention
    pub bench: String,
    /// the shape or model configuration, in words
    pub config: String,
    pub batch: usize,
    pub warmup: usize,
    pub stats: Stats,
    /// FLOPs of one iteration (`ops::flops`: conv/linear/attention products, 2 per multiply-add)
    pub flops: u64,
    pub peak_rss_mb: Option<f64>,
    /// Driver calls of the first run (cold allocator cache) and the last (steady state), where
    /// the backend counts them (CUDA and the emulator).
    pub driver: Option<DriverPerRun>,
}

#[derive(Clone, Copy, Debug)]
pub struct DriverPerRun {
    pub first: DriverCounts,
    pub last: DriverCounts,
    pub runs: usize,
    /// one run replayed as a CUDA graph (forward + read-back), where the backend records graphs
    pub graph_replay: Option<DriverCounts>,
}

fn counts_json(c: &DriverCounts) -> Value {
    json!({"calls": c.calls(), "launches": c.launches, "allocs": c.allocs, "frees": c.frees, "memsets": c.memsets, "copies": c.copies, "syncs": c.syncs, "other": c.other, "graph_launches": c.graph_launches})
}

impl Report {
    pub fn gflop(&self) -> f64 {
        self.flops as f64 / 1e9
    }

    /// GFLOP/s at a time in ms.
    fn rate(&self, ms: f64) -> f64 {
        self.gflop() / (ms / 1e3)
    }

    pub fn json(&self, m: &Machine) -> Value {
        let (med, min) = (self.stats.median_ms(), self.stats.min_ms());
        json!({
            "bench": self.bench,
            "config": self.config,
            "batch": self.batch,
            "iters": self.stats.times_ms.len(),
            "warmup": self.warmup,
            "times_ms": self.stats.times_ms,
            "user_ms": self.stats.user_ms,
            "sys_ms": self.stats.sys_ms,
            "median_ms": med,
            "min_ms": min,
            "max_ms": self.stats.max_ms(),
            "gflop": self.gflop(),
            "gflops_median": self.rate(med),
            "gflops_best": self.rate(min),
            "ceiling_gflops": m.ceiling.gflops,
            "ceiling_source": m.ceiling.source,
            "pct_of_ceiling_best": 100.0 * self.rate(min) / m.ceiling.gflops,
            "threads": m.threads,
            "device": m.device,
            "precision": m.precision.as_str(),
            "commit": m.commit,
            "peak_rss_mb": self.peak_rss_mb,
            "side": "ran",
            "driver_first_run": self.driver.map(|d| counts_json(&d.first)),
            "driver_per_run": self.driver.map(|d| counts_json(&d.last)),
            "driver_graph_replay": self.driver.and_then(|d| d.graph_replay).map(|c| counts_json(&c)),
        })
    }

    /// The lines in words; with `json`, the JSON object as the last line.
    pub fn print(&self, m: &Machine, json: bool) {
        let (med, min, max) = (self.stats.median_ms(), self.stats.min_ms(), self.stats.max_ms());
        println!("bench {}: {} (batch {}, {} iterations after {} warm-up) on {} ({})", self.bench, self.config, self.batch, self.stats.times_ms.len(), self.warmup, m.device, m.precision);
        println!("  median {med:.2} ms   min {min:.2} ms   max {max:.2} ms");
        if let (Some(u), Some(k)) = (min_of(&self.stats.user_ms), min_of(&self.stats.sys_ms)) {
            println!("  CPU time per iteration, least: user {u:.0} ms, system {k:.0} ms (all threads)");
        }
        println!(
            "  {:.3} GFLOP per iteration: {:.1} GFLOP/s at the median, {:.1} at the min = {:.0}% of the ceiling {:.0} GFLOP/s",
            self.gflop(),
            self.rate(med),
            self.rate(min),
            100.0 * self.rate(min) / m.ceiling.gflops,
            m.ceiling.gflops
        );
        println!("  ceiling: {}", m.ceiling.source);
        if let Some(r) = self.peak_rss_mb {
            println!("  peak RSS {r:.0} MB (the whole process)");
        }
        if let Some(d) = self.driver {
            if d.runs > 1 {
                println!("  per run, steady state (the last of {}): {}", d.runs, d.last);
            }
            println!("  first run (empty allocator cache): {}", d.first);
            if let Some(g) = d.graph_replay {
                println!("  per run replayed as a CUDA graph (RAN_CUDA_GRAPH=0 turns graphs off): {g}");
            }
        }
        println!("  {} threads, commit {}", m.threads, m.commit);
        if json {
            println!("{}", self.json(m));
        }
    }
}
