//! SiLU (swish), ReLU, sigmoid, ReLU6 and their input gradients, elementwise; and the output
//! passes of the fused convs (bias + activation, bias + residual), at the CPU's vector width.

use super::real::Real;
use super::simd::{isa, multiversion};
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

/// act(x) for one value, as every loop below computes it: SiLU and sigmoid as x / (1 + e^−x) and
/// 1 / (1 + e^−x) in T, with the vectorised `fast_exp` (for f32 `exp_f32`, relative error < 3e-7;
/// libm's expf, a call per element, was a quarter of EfficientNet's forward): relative error of
/// the result below 4e-7 where it is not below 1e-37.
#[inline(always)]
fn silu_of<T: Real>(x: T) -> T {
    x / (T::one() + (-x).fast_exp())
}
#[inline(always)]
fn sigmoid_of<T: Real>(x: T) -> T {
    // the fast exp clamps a NaN to e^−87, so a NaN is passed on by hand
    if x.is_nan() {
        x
    } else {
        T::one() / (T::one() + (-x).fast_exp())
    }
}
#[inline(always)]
fn relu6_of<T: Real>(x: T) -> T {
    x.max(T::zero()).min(T::of(6.0))
}

/// y[i] = f(x[i]) as a plain indexed loop (which vectorises at the caller's width).
#[inline(always)]
fn map_into<T: Real>(y: &mut [T], x: &[T], f: impl Fn(T) -> T) {
    for (d, &v) in y.iter_mut().zip(x) {
        *d = f(v);
    }
}

/// y[i] = f(y[i]).
#[inline(always)]
fn map_in_place<T: Real>(y: &mut [T], f: impl Fn(T) -> T) {
    for v in y.iter_mut() {
        *v = f(*v);
    }
}

/// y = act(x), one loop per activation so each vectorises.
#[inline(always)]
fn act_into_generic<T: Real>(y: &mut [T], x: &[T], act: Activation) {
    match act {
        Activation::Silu => map_into(y, x, silu_of),
        Activation::Relu => map_into(y, x, |v| v.max(T::zero())),
        Activation::Sigmoid => map_into(y, x, sigmoid_of),
        Activation::Relu6 => map_into(y, x, relu6_of),
    }
}

/// The output pass of a conv: y = act(y + bias), the bias (when there is one) added first and
/// the activation (when there is one) applied to the sum — the unfused conv's bias pass and the
/// activation op, in one pass and the same IEEE operations (no bias: nothing added, so a −0 stays −0).
#[inline(always)]
pub(super) fn bias_act_generic<T: Real>(y: &mut [T], bias: Option<T>, act: Option<Activation>) {
    match (bias, act) {
        (None, None) => {}
        (Some(b), None) => map_in_place(y, |v| v + b),
        (None, Some(Activation::Silu)) => map_in_place(y, silu_of),
        (None, Some(Activation::Relu)) => map_in_place(y, |v| v.max(T::zero())),
        (None, Some(Activation::Sigmoid)) => map_in_place(y, sigmoid_of),
        (None, Some(Activation::Relu6)) => map_in_place(y, relu6_of),
        (Some(b), Some(Activation::Silu)) => map_in_place(y, |v| silu_of(v + b)),
        (Some(b), Some(Activation::Relu)) => map_in_place(y, |v| (v + b).max(T::zero())),
        (Some(b), Some(Activation::Sigmoid)) => map_in_place(y, |v| sigmoid_of(v + b)),
        (Some(b), Some(Activation::Relu6)) => map_in_place(y, |v| relu6_of(v + b)),
    }
}

/// `bias_act_generic` from `x` into `y`: y = act(x + bias), the same operations. Reading a row
/// that a copy has just stored costs a store-forwarding stall per vector (the copy's stores are
/// not the loads' width), so a kernel that would copy and then apply writes through this.
#[inline(always)]
pub(super) fn bias_act_into_generic<T: Real>(y: &mut [T], x: &[T], bias: Option<T>, act: Option<Activation>) {
    match (bias, act) {
        (None, None) => y.copy_from_slice(x),
        (Some(b), None) => map_into(y, x, |v| v + b),
        (None, Some(a)) => act_into_generic(y, x, a),
        (Some(b), Some(Activation::Silu)) => map_into(y, x, |v| silu_of(v + b)),
        (Some(b), Some(Activation::Relu)) => map_into(y, x, |v| (v + b).max(T::zero())),
        (Some(b), Some(Activation::Sigmoid)) => map_into(y, x, |v| sigmoid_of(v + b)),
        (Some(b), Some(Activation::Relu6)) => map_into(y, x, |v| relu6_of(v + b)),
    }
}

/// The output pass of a conv with a residual: y = res + (y + bias), as add(res, conv2d(x, w, bias)).
#[inline(always)]
fn bias_res_generic<T: Real>(y: &mut [T], bias: Option<T>, res: &[T]) {
    match bias {
        Some(b) => y.iter_mut().zip(res).for_each(|(d, &r)| *d = r + (*d + b)),
        None => y.iter_mut().zip(res).for_each(|(d, &r)| *d = r + *d),
    }
}

multiversion!(
    /// `act_into_generic` at the width of `isa`.
    pub fn act_into => act_into_generic<T: Real>(y: &mut [T], x: &[T], act: Activation)
);
multiversion!(
    /// `bias_act_generic` at the width of `isa`.
    pub fn bias_act => bias_act_generic<T: Real>(y: &mut [T], bias: Option<T>, act: Option<Activation>)
);
multiversion!(
    /// `bias_res_generic` at the width of `isa`.
    pub fn bias_res => bias_res_generic<T: Real>(y: &mut [T], bias: Option<T>, res: &[T])
);

/// act(x) elementwise, in chunks over the threads, at the CPU's widest vector width.
pub fn activation<T: Real>(x: &[T], act: Activation) -> Vec<T> {
    let mut y = T::for_overwrite(x.len());
    let isa = isa();
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(yc, xc)| act_into(isa, yc, xc, act));
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
