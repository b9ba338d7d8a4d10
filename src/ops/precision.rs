//! The arithmetic a backend multiplies in (issue #14: `--precision`). Operands of the GEMM-like
//! ops (convolution, linear, attention's two products) are rounded to the chosen type; products
//! are summed in f32, and every statistic (group-norm moments, softmax, KL, Mahalanobis,
//! accumulators) stays f32. The CPU backend computes in f32 whatever is asked.
//!
//! `round` is the host twin of the kernels' conversions (kernels/tc.cuh): bf16 and f16 round to
//! nearest even (CUDA's `__float2bfloat16_rn`, `__float2half_rn`), tf32 to nearest with ties
//! away from zero (`cvt.rna.tf32.f32`). A reference that rounds the operands the same way lets a
//! low-precision kernel be checked tightly — only the f32 summation order differs.

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    F32,
    Tf32,
    Bf16,
    F16,
}

impl Precision {
    pub const ALL: [Precision; 4] = [Precision::F32, Precision::Tf32, Precision::Bf16, Precision::F16];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// Mantissa bits kept (the implicit bit not counted): the unit roundoff is 2^-(bits+1).
    pub fn mantissa_bits(self) -> u32 {
        match self {
            Precision::F32 => 23,
            Precision::Tf32 | Precision::F16 => 10,
            Precision::Bf16 => 7,
        }
    }

    /// One value as an operand of this precision, returned as the f32 it equals.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Bf16 => half::bf16::from_f32(x).to_f32(),
            Precision::F16 => half::f16::from_f32(x).to_f32(),
            Precision::Tf32 => tf32_rna(x),
        }
    }

    pub fn round_slice(self, v: &mut [f32]) {
        if self != Precision::F32 {
            v.iter_mut().for_each(|x| *x = self.round(*x));
        }
    }
}

/// Keeps 10 mantissa bits, ties away from zero: add half an ulp of the kept part to the
/// magnitude and truncate (a carry into the exponent is the correct rounding up, up to inf).
fn tf32_rna(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    f32::from_bits((x.to_bits().wrapping_add(0x1000)) & 0xffff_e000)
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Precision::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| Error::InvalidArgument(format!("precision `{s}`: expected one of f32, tf32, bf16, f16")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
        }
        let e = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("fp8") && e.contains("bf16"), "{e}");
    }

    // Hand-worked values (not produced by the code): 1 + 2^-11 is halfway between two tf32
    // neighbours and goes away from zero; 1 + 2^-8 is halfway for bf16 and goes to the even 1.
    #[test]
    fn rounding_ties_follow_each_types_rule() {
        let tie_tf32 = 1.0 + 2f32.powi(-11);
        assert_eq!(Precision::Tf32.round(tie_tf32), 1.0 + 2f32.powi(-10));
        assert_eq!(Precision::Tf32.round(-tie_tf32), -(1.0 + 2f32.powi(-10)));
        assert_eq!(Precision::Tf32.round(1.0 + 2f32.powi(-12)), 1.0);
        assert_eq!(Precision::Bf16.round(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(Precision::Bf16.round(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(Precision::F16.round(1.0 + 2f32.powi(-11)), 1.0);
        assert_eq!(Precision::F16.round(70000.0), f32::INFINITY);
        assert_eq!(Precision::Tf32.round(f32::MAX), f32::INFINITY);
        assert!(Precision::Bf16.round(f32::NAN).is_nan());
        assert_eq!(Precision::F32.round(0.1), 0.1);
    }
}
