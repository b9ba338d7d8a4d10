//! The timing loop of `ran bench`: warm-up runs, then timed iterations, a progress line on stderr
//! per run, and the FLOP count of the first run (`ops::flops`).

use crate::Result;
use std::time::Instant;

/// Wall times of the timed iterations, in milliseconds.
#[derive(Clone, Debug)]
pub struct Stats {
    pub times_ms: Vec<f64>,
}

impl Stats {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.times_ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    /// The middle time (the mean of the two middle ones for an even count).
    pub fn median_ms(&self) -> f64 {
        let v = self.sorted();
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    pub fn min_ms(&self) -> f64 {
        self.sorted()[0]
    }
    pub fn max_ms(&self) -> f64 {
        *self.sorted().last().expect("at least one iteration")
    }
}

/// How many runs, and whether to say so on stderr while they run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub warmup: usize,
    pub iters: usize,
    pub progress: bool,
}

/// What `measure` found: the times and the FLOPs of one run.
pub struct Measured {
    pub stats: Stats,
    pub flops: u64,
}

/// Runs `f` `plan.warmup` times untimed, then `plan.iters` times timed. The first run (warm-up or
/// not) also counts FLOPs. `f` must wait for its device before returning (read a result back).
pub fn measure(label: &str, plan: Plan, mut f: impl FnMut() -> Result<()>) -> Result<Measured> {
    if plan.iters == 0 {
        return Err(crate::Error::InvalidArgument("--iters must be at least 1".into()));
    }
    let total = plan.warmup + plan.iters;
    let mut flops = None;
    let mut times_ms = Vec::with_capacity(plan.iters);
    for i in 0..total {
        let t0 = Instant::now();
        if flops.is_none() {
            let (r, n) = crate::ops::flops::count(&mut f);
            r?;
            flops = Some(n);
        } else {
            f()?;
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let kind = if i < plan.warmup { "warm-up" } else { "iteration" };
        let k = if i < plan.warmup { (i + 1, plan.warmup) } else { (i + 1 - plan.warmup, plan.iters) };
        if plan.progress {
            eprintln!("[bench {label}] {kind} {}/{}: {ms:.1} ms", k.0, k.1);
        }
        if i >= plan.warmup {
            times_ms.push(ms);
        }
    }
    Ok(Measured { stats: Stats { times_ms }, flops: flops.unwrap_or(0) })
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn median_min_max() {
        let s = Stats { times_ms: vec![5.0, 1.0, 3.0, 9.0] };
        assert_eq!((s.median_ms(), s.min_ms(), s.max_ms()), (4.0, 1.0, 9.0));
        assert_eq!(Stats { times_ms: vec![2.0, 7.0, 1.0] }.median_ms(), 2.0);
    }
}
