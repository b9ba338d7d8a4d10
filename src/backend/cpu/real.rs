//! The CPU ops are written once, generic over f32 (what the engine runs) and f64 (what the
//! finite-difference gradient checks run, so that their truncation error stays far below f32's).

use num_traits::{Float, NumAssign};

pub trait Real: Float + NumAssign + Send + Sync + Default + std::fmt::Debug + std::iter::Sum + 'static {
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
