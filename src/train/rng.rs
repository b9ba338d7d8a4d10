//! The training run's random numbers, counter-based: every draw of step s comes from (seed, s)
//! alone (batch order, timesteps, noise, rotation angles), so the whole RNG state of a run is its
//! seed and its step — a resumed run draws exactly what the uninterrupted one would have.

/// SplitMix64 (Steele et al. 2014): a tiny, statistically sound generator, seeded per stream.
pub struct SplitMix(u64);

impl SplitMix {
    /// The generator of stream (`tag`, `index`) of `seed`; distinct streams never share a state.
    pub fn stream(seed: u64, tag: u64, index: u64) -> Self {
        let mut s = SplitMix(seed ^ tag.wrapping_mul(0xA24B_AED4_963E_E407));
        s.0 ^= s.next_u64() ^ index.wrapping_mul(0x9FB2_1C65_1E98_DF25);
        s
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0), by rejection so every value is exactly equally likely.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Stream tags: one per kind of draw, so adding a kind never shifts another's numbers.
pub const EPOCH_ORDER: u64 = 1;
pub const TIMESTEPS: u64 = 2;
pub const NOISE: u64 = 3;
pub const ROTATION: u64 = 4;
pub const INIT: u64 = 5;

/// A permutation of 0..n drawn for `epoch` (Fisher–Yates).
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut r = SplitMix::stream(seed, EPOCH_ORDER, epoch);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, r.below(i as u64 + 1) as usize);
    }
    v
}

/// The image indices of step `step`'s batch: the data walked epoch by epoch, each epoch in its
/// own shuffled order (as a shuffling DataLoader looped forever).
pub fn batch_indices(seed: u64, step: u64, batch: usize, n: usize) -> Vec<usize> {
    let first = step * batch as u64;
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    for k in first..first + batch as u64 {
        let (epoch, pos) = (k / n as u64, (k % n as u64) as usize);
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            cached = Some((epoch, epoch_order(seed, epoch, n)));
        }
        out.push(cached.as_ref().map(|(_, o)| o[pos]).unwrap_or(0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each epoch visits every image once, epochs differ in order, and a step's batch is the
    /// same whichever step it is computed from (what resume relies on).
    #[test]
    fn batches_walk_shuffled_epochs() {
        let (n, b) = (7, 3);
        let all: Vec<usize> = (0..7).flat_map(|s| batch_indices(9, s, b, n)).collect();
        for e in 0..3 {
            let mut ep = all[e * n..(e + 1) * n].to_vec();
            ep.sort();
            assert_eq!(ep, (0..n).collect::<Vec<_>>(), "epoch {e}");
        }
        assert_ne!(all[..n], all[n..2 * n]);
        assert_eq!(batch_indices(9, 4, b, n), all[12..15]);
        assert_ne!(batch_indices(10, 0, b, n), batch_indices(9, 0, b, n));
    }

    #[test]
    fn below_is_uniform() {
        let mut r = SplitMix::stream(1, TIMESTEPS, 0);
        let mut c = [0usize; 10];
        for _ in 0..100_000 {
            c[r.below(10) as usize] += 1;
        }
        // binomial(1e5, 0.1): σ ≈ 95; 5σ
        assert!(c.iter().all(|&k| (k as i64 - 10_000).abs() < 475), "{c:?}");
    }
}
