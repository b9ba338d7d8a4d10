//! Seeded standard normal noise (SplitMix64 + Box–Muller): the same seed, image index and
//! timestep always give the same noise, whatever the backend or batch composition.

pub fn gaussian(seed: u64, stream: u64, n: usize) -> Vec<f32> {
    let mut s = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1], u2 in [0, 1)
        let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn gaussian_noise_is_standard_normal_and_reproducible() {
        let a = super::gaussian(42, 7, 200_000);
        assert_eq!(a, super::gaussian(42, 7, 200_000));
        assert_ne!(a[..16], super::gaussian(42, 8, 16)[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let kurt = a.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>() / n / var.powi(2);
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01 && (kurt - 3.0).abs() < 0.05, "mean {mean} var {var} kurtosis {kurt}");
    }
}
