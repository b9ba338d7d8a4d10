//! llm.c-style comparison with a stated tolerance, reporting how much of the tolerance the worst
//! element used, so a loosening (or a tolerance far above the error) is visible in review.

use super::table::Tol;

#[derive(Clone, Copy, Debug)]
pub struct Comparison {
    /// largest |got − ref|
    pub max_err: f64,
    /// largest |got − ref| / (atol + rtol·|ref|): ≤ 1 passes
    pub used: f64,
    /// the element with the largest `used`
    pub worst: usize,
}

impl Comparison {
    pub fn passes(&self) -> bool {
        self.used <= 1.0
    }
}

/// Compares element by element; a NaN anywhere (in either) counts as infinitely wrong; different
/// lengths are an error.
pub fn compare(got: &[f32], want: &[f32], t: Tol) -> Result<Comparison, String> {
    if got.len() != want.len() {
        return Err(format!("{} values, reference has {}", got.len(), want.len()));
    }
    let mut c = Comparison { max_err: 0.0, used: 0.0, worst: 0 };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let used = if err.is_nan() {
            f64::INFINITY
        } else if err == 0.0 {
            0.0
        } else {
            err / (t.atol + t.rtol * (w as f64).abs())
        };
        c.max_err = c.max_err.max(if err.is_nan() { f64::INFINITY } else { err });
        if used > c.used {
            c.used = used;
            c.worst = i;
        }
    }
    Ok(c)
}
