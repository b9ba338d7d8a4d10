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

fn forward_one<T: Real>(x: T, act: Activation) -> T {
    match act {
        // Computed in T: for f32 this is what PyTorch does, x / (1 + exp(-x)).
        Activation::Silu => x / (T::one() + (-x).exp()),
        Activation::Relu => x.max(T::zero()),
        Activation::Sigmoid => T::one() / (T::one() + (-x).exp()),
        Activation::Relu6 => x.max(T::zero()).min(T::of(6.0)),
    }
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

pub fn activation<T: Real>(x: &[T], act: Activation) -> Vec<T> {
    let mut y = T::for_overwrite(x.len());
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| {
        yc.iter_mut().zip(xc).for_each(|(y, &x)| *y = forward_one(x, act));
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
