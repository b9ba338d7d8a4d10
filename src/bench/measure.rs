//! The timing loop of `ran bench`: warm-up runs, then timed iterations, a progress line on stderr
//! per run, and the FLOP count of the first run (`ops::flops`).

use crate::Result;
use std::time::Instant;

/// Wall times of the timed iterations, in milliseconds, and the process's CPU time (user, system)
/// in each, where the OS tells it: on a machine shared with other jobs the wall time includes
/// waiting for a core, the CPU time does not.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub times_ms: Vec<f64>,
    pub user_ms: Vec<f64>,
    pub sys_ms: Vec<f64>,
}

/// (user, system) CPU time of this process so far, in ms, from /proc/self/stat (Linux; its
/// fields 14 and 15 count in USER_HZ = 100 ticks per second, so 10 ms resolution).
fn cpu_ms() -> Option<(f64, f64)> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the command name (field 2) may hold spaces; the fields after it follow its closing ')'
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let (u, k) = (f.get(11)?.parse::<f64>().ok()?, f.get(12)?.parse::<f64>().ok()?);
    Some((u * 10.0, k * 10.0))
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
    let mut st = Stats::default();
    for i in 0..total {
        let c0 = cpu_ms();
        let t0 = Instant::now();
        if flops.is_none() {
            let (r, n) = crate::ops::flops::count(&mut f);
            r?;
            flops = Some(n);
        } else {
            f()?;
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let cpu = c0.zip(cpu_ms()).map(|((u0, k0), (u1, k1))| (u1 - u0, k1 - k0));
        let kind = if i < plan.warmup { "warm-up" } else { "iteration" };
        let k = if i < plan.warmup { (i + 1, plan.warmup) } else { (i + 1 - plan.warmup, plan.iters) };
        if plan.progress {
            eprintln!("[bench {label}] {kind} {}/{}: {ms:.1} ms", k.0, k.1);
        }
        if i >= plan.warmup {
            st.times_ms.push(ms);
            if let Some((u, k)) = cpu {
                st.user_ms.push(u);
                st.sys_ms.push(k);
            }
        }
    }
    Ok(Measured { stats: st, flops: flops.unwrap_or(0) })
}

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn median_min_max() {
        let s = Stats { times_ms: vec![5.0, 1.0, 3.0, 9.0], ..Stats::default() };
        assert_eq!((s.median_ms(), s.min_ms(), s.max_ms()), (4.0, 1.0, 9.0));
        assert_eq!(Stats { times_ms: vec![2.0, 7.0, 1.0], ..Stats::default() }.median_ms(), 2.0);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let Some((u0, _)) = super::cpu_ms() else { return }; // not Linux: nothing to read
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let (u1, _) = super::cpu_ms().unwrap();
        // 200 ms of spinning on one thread: at least some of it is ours even on a busy machine
        assert!(u1 - u0 >= 20.0, "user time grew {} ms", u1 - u0);
    }
}
