//! a ⊕ b with b broadcast to a's shape (same rank, each dim of b equal to a's or 1), for ⊕ = + and
//! ·, and the input gradients, where ∂L/∂b sums over the broadcast dims. Work goes by rows of the
//! last dim, so the index arithmetic is per row, not per element.

use super::real::Real;
use rayon::prelude::*;

/// Offset in b of the first element of each row (all dims but the last) of a.
fn row_offsets(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len();
    let rows: usize = a[..r.saturating_sub(1)].iter().product();
    // Contiguous strides of b, zeroed where b broadcasts.
    let mut bstride = vec![0usize; r];
    let mut s = 1;
    for d in (0..r).rev() {
        bstride[d] = if b[d] == 1 { 0 } else { s };
        s *= b[d];
    }
    (0..rows)
        .map(|mut row| {
            let mut off = 0;
            for d in (0..r.saturating_sub(1)).rev() {
                off += (row % a[d]) * bstride[d];
                row /= a[d];
            }
            off
        })
        .collect()
}

fn map2<T: Real>(a: &[T], ad: &[usize], b: &[T], bd: &[usize], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut y = T::for_overwrite(a.len());
    if a.len() == b.len() {
        y.par_iter_mut().zip(a.par_iter().zip(b.par_iter())).for_each(|(y, (&x, &z))| *y = f(x, z));
        return y;
    }
    let last = ad.last().copied().unwrap_or(1);
    let scalar_row = bd.last().copied().unwrap_or(1) == 1 && last != 1;
    let offs = row_offsets(ad, bd);
    y.par_chunks_mut(last).zip(a.par_chunks(last)).zip(offs.par_iter()).for_each(|((yr, ar), &o)| {
        if scalar_row {
            let bv = b[o];
            yr.iter_mut().zip(ar).for_each(|(y, &x)| *y = f(x, bv));
        } else {
            yr.iter_mut().zip(ar.iter().zip(&b[o..o + last])).for_each(|(y, (&x, &z))| *y = f(x, z));
        }
    });
    y
}

pub fn add<T: Real>(a: &[T], ad: &[usize], b: &[T], bd: &[usize]) -> Vec<T> {
    map2(a, ad, b, bd, |x, z| x + z)
}

pub fn mul<T: Real>(a: &[T], ad: &[usize], b: &[T], bd: &[usize]) -> Vec<T> {
    map2(a, ad, b, bd, |x, z| x * z)
}

/// Sums `v` (shaped like a) down to b's shape, accumulating in f64.
fn reduce_to<T: Real>(v: &[T], ad: &[usize], bd: &[usize]) -> Vec<T> {
    let nb: usize = bd.iter().product();
    if nb == v.len() {
        return v.to_vec();
    }
    let last = ad.last().copied().unwrap_or(1);
    let scalar_row = bd.last().copied().unwrap_or(1) == 1 && last != 1;
    let mut acc = vec![0.0f64; nb];
    for (row, &o) in v.chunks(last).zip(row_offsets(ad, bd).iter()) {
        if scalar_row {
            acc[o] += row.iter().map(|x| x.f64()).sum::<f64>();
        } else {
            acc[o..o + last].iter_mut().zip(row).for_each(|(s, x)| *s += x.f64());
        }
    }
    acc.into_iter().map(T::of).collect()
}

pub fn add_x_backward<T: Real>(gy: &[T], ad: &[usize], bd: &[usize]) -> (Vec<T>, Vec<T>) {
    (gy.to_vec(), reduce_to(gy, ad, bd))
}

pub fn mul_x_backward<T: Real>(gy: &[T], a: &[T], ad: &[usize], b: &[T], bd: &[usize]) -> (Vec<T>, Vec<T>) {
    let ga = mul(gy, ad, b, bd);
    let gya: Vec<T> = gy.par_iter().zip(a.par_iter()).map(|(&g, &x)| g * x).collect();
    (ga, reduce_to(&gya, ad, bd))
}

/// y = x·scale[c] + shift[c] over [N, C, S] (inference batch norm, folded).
pub fn channel_affine<T: Real>(x: &[T], scale: &[T], shift: &[T], c: usize, s: usize) -> Vec<T> {
    let mut y = T::for_overwrite(x.len());
    y.par_chunks_mut(s.max(1)).zip(x.par_chunks(s.max(1))).enumerate().for_each(|(i, (yp, xp))| {
        let (a, b) = (scale[i % c], shift[i % c]);
        yp.iter_mut().zip(xp).for_each(|(y, &x)| *y = x * a + b);
    });
    y
}

pub fn channel_affine_x_backward<T: Real>(gy: &[T], scale: &[T], c: usize, s: usize) -> Vec<T> {
    let mut gx = vec![T::zero(); gy.len()];
    gx.par_chunks_mut(s.max(1)).zip(gy.par_chunks(s.max(1))).enumerate().for_each(|(i, (gp, yp))| {
        let a = scale[i % c];
        gp.iter_mut().zip(yp).for_each(|(g, &y)| *g = y * a);
    });
    gx
}

pub fn scale_add_scalar<T: Real>(x: &[T], alpha: T, beta: T) -> Vec<T> {
    x.par_iter().map(|&v| alpha * v + beta).collect()
}
