//! Finite differences in f64, shared by the gradient tests: a small deterministic generator and
//! the central-difference check of a vector-Jacobian product.

/// Small deterministic generator (xorshift64*), values in [-1, 1).
pub struct Rng(pub u64);
impl Rng {
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                let u = (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64;
                2.0 * u - 1.0
            })
            .collect()
    }
}

const H: f64 = 1e-5;
const ATOL: f64 = 1e-8;
const RTOL: f64 = 1e-6;

/// Compares `analytic` with the central difference of x ↦ Σ f(x)·gy.
pub fn fd_check(name: &str, x: &[f64], gy: &[f64], f: impl Fn(&[f64]) -> Vec<f64>, analytic: &[f64]) {
    assert_eq!(analytic.len(), x.len(), "{name}: gradient has the wrong length");
    let loss = |v: &[f64]| -> f64 {
        let y = f(v);
        assert_eq!(y.len(), gy.len(), "{name}: output length");
        y.iter().zip(gy).map(|(a, b)| a * b).sum()
    };
    let mut xp = x.to_vec();
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        xp[i] = x[i] + H;
        let lp = loss(&xp);
        xp[i] = x[i] - H;
        let lm = loss(&xp);
        xp[i] = x[i];
        let fd = (lp - lm) / (2.0 * H);
        let err = (fd - analytic[i]).abs();
        worst = worst.max(err);
        assert!(err <= ATOL + RTOL * fd.abs(), "{name}: d/dx[{i}] analytic {} vs finite difference {fd} (err {err:e})", analytic[i]);
    }
    println!("ok  {name:<32} {} inputs, max err {worst:.1e}", x.len());
}
