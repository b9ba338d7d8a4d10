//! The CPU ops are written once, generic over f32 (what the engine runs) and f64 (what the
//! finite-difference gradient checks run, so that their truncation error stays far below f32's).

use super::buffers::Alloc;
use num_traits::{Float, NumAssign};

pub trait Real: Float + NumAssign + FastExp + Alloc + Send + Sync + Default + std::fmt::Debug + std::iter::Sum + 'static {
    fn of(v: f64) -> Self;
    fn of_usize(v: usize) -> Self {
        Self::of(v as f64)
    }
    fn f64(self) -> f64;
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
}

/// e^x for f32 in straight-line code that the compiler vectorises (glibc's expf is a call per
/// element, which made softmax the bottleneck of attention). Cody–Waite reduction x = n·ln2 + r,
/// |r| ≤ ln2/2, then a degree-6 Taylor polynomial: relative error below 3e-7 (≈ 3 ulp) for
/// x in [−87, 88]; inputs are clamped to that range, so tiny results bottom out near 1e-38
/// instead of becoming denormal or 0, and huge ones saturate near 1.6e38.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting rounds to an integer
                                     // not clamp: a NaN input must keep mapping to e^-87, as it always has
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n sits in the low mantissa bits of t; 2^n is built from it with integer ops only
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    p * scale
}

/// e^x for f64 in straight-line code that the compiler vectorises (libm's exp is a call per
/// element, which made the group norms' backward the slowest op of a training step). Cody–Waite
/// reduction x = n·ln2 + r, |r| ≤ ln2/2 (fdlibm's split of ln2, so n·LN2_HI is exact), then the
/// Taylor polynomial to r¹³/13! (truncation below 5e-18): relative error below 1e-15 (a few ulp)
/// for x in [−708, 709]; inputs are clamped to that range, so results stay normal (≥ 2⁻¹⁰²¹) and
/// finite, and a NaN maps to e^−708 as in `exp_f32`.
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // fdlibm's ln2HI (its low 32 bits zero) and ln2LO, by their bits (folded at compile time)
    let (ln2_hi, ln2_lo) = (f64::from_bits(0x3FE6_2E42_FEE0_0000), f64::from_bits(0x3DEA_39EF_3579_3C76));
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5·2^52: adding and subtracting rounds to an integer
    #[allow(clippy::manual_clamp)]
    let x = x.max(-708.0).min(709.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * ln2_hi) - n * ln2_lo;
    // Horner on 1/k! (each coefficient the correctly rounded quotient of two exact integers)
    const C: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let p = C[0] + r * (C[1] + r * (C[2] + r * (C[3] + r * (C[4] + r * (C[5] + r * (C[6] + r * (C[7] + r * (C[8] + r * (C[9] + r * (C[10] + r * (C[11] + r * (C[12] + r * C[13]))))))))))));
    // n sits in the low mantissa bits of t; 2^n is built from it with integer ops only
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f64::from_bits(ni.wrapping_add(1023) << 52);
    p * scale
}

/// Fast exponential for the op bodies: `exp_f32` for f32, the exact libm exp for f64 (so the
/// finite-difference checks stay exact).
pub trait FastExp {
    fn fast_exp(self) -> Self;
}
impl FastExp for f32 {
    #[inline(always)]
    fn fast_exp(self) -> f32 {
        exp_f32(self)
    }
}
impl FastExp for f64 {
    #[inline(always)]
    fn fast_exp(self) -> f64 {
        self.exp()
    }
}

/// Lanes of independent accumulators in the reductions below: breaks the add/max latency chain
/// and lets the compiler vectorise (a plain fold is one dependent op per element).
const LANES: usize = 16;

/// Σ v, summed in LANES interleaved partial sums.
#[inline(always)]
pub fn sum_lanes<T: Real>(v: &[T]) -> T {
    let mut acc = [T::zero(); LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().chain(tail).fold(T::zero(), |s, &x| s + x)
}

/// max v (−∞ for an empty slice), in LANES interleaved partial maxima.
#[inline(always)]
pub fn max_lanes<T: Real>(v: &[T]) -> T {
    let mut acc = [T::neg_infinity(); LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter().chain(tail).fold(T::neg_infinity(), |m, &x| if x > m { x } else { m })
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_f32_relative_error_below_3e7() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let got = super::exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
    }
}
