//! SiLU (swish), ReLU, sigmoid, ReLU6 and their input gradients, elementwise.

use super::real::Real;
use crate::backend::Activation;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

#[inline]
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}
#[inline]
pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}
/// d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x))).
#[inline]
pub fn silu_grad(x: f64) -> f64 {
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

fn grad_one<T: Real>(g: T, x: T, act: Activation) -> T {
    match act {
        Activation::Silu => {
            let s = T::one() / (T::one() + (-x).exp());
            g * s * (T::one() + x * (T::one() - s))
        }
        // PyTorch's threshold_backward: gradient passes where x > 0.
        Activation::Relu => {
            if x > T::zero() {
                g
            } else {
                T::zero()
            }
        }
        Activation::Sigmoid => {
            let s = T::one() / (T::one() + (-x).exp());
            g * s * (T::one() - s)
        }
        // PyTorch's hardtanh_backward: the gradient passes strictly inside (0, 6)
        Activation::Relu6 => {
            if x > T::zero() && x < T::of(6.0) {
                g
            } else {
                T::zero()
            }
        }
    }
}

/// SiLU and sigmoid as x / (1 + e^−x) and 1 / (1 + e^−x) in T, with the vectorised `fast_exp`
/// (for f32 `exp_f32`, relative error < 3e-7; libm's expf, a call per element, was a quarter of
/// EfficientNet's forward): relative error of the result below 4e-7 where it is not below 1e-37.
/// One loop per activation, so each vectorises.
pub fn activation<T: Real>(x: &[T], act: Activation) -> Vec<T> {
    let mut y = T::for_overwrite(x.len());
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| {
        let pairs = yc.iter_mut().zip(xc);
        match act {
            Activation::Silu => pairs.for_each(|(y, &x)| *y = x / (T::one() + (-x).fast_exp())),
            Activation::Relu => pairs.for_each(|(y, &x)| *y = x.max(T::zero())),
            // the fast exp clamps a NaN to e^−87, so a NaN is passed on by hand
            Activation::Sigmoid => pairs.for_each(|(y, &x)| *y = if x.is_nan() { x } else { T::one() / (T::one() + (-x).fast_exp()) }),
            Activation::Relu6 => pairs.for_each(|(y, &x)| *y = x.max(T::zero()).min(T::of(6.0))),
        }
    });
    y
}

pub fn activation_x_backward<T: Real>(gy: &[T], x: &[T], act: Activation) -> Vec<T> {
    let mut gx = vec![T::zero(); x.len()];
    gx.par_chunks_mut(CHUNK).zip(gy.par_chunks(CHUNK).zip(x.par_chunks(CHUNK))).for_each(|(o, (gc, xc))| {
        for i in 0..o.len() {
            o[i] = grad_one(gc[i], xc[i], act);
        }
    });
    gx
}
