//! y = x·wᵀ + b and its input gradient, x [N, in], w [out, in].

use super::matmul::{matmul, MatRef};
use super::real::Real;

pub fn linear<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, n: usize, fin: usize, fout: usize) -> Vec<T> {
    let mut y = T::for_overwrite(n * fout);
    matmul(n, fout, fin, &mut y, fout, MatRef::row_major(x, fin), MatRef::transposed(w, fin), false, true);
    if let Some(b) = bias {
        for row in y.chunks_mut(fout) {
            row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv);
        }
    }
    y
}

pub fn linear_x_backward<T: Real>(gy: &[T], w: &[T], n: usize, fin: usize, fout: usize) -> Vec<T> {
    let mut gx = vec![T::zero(); n * fin];
    matmul(n, fin, fout, &mut gx, fin, MatRef::row_major(gy, fout), MatRef::row_major(w, fin), false, true);
    gx
}

/// ∂L/∂w = ∂L/∂yᵀ · x: [out, rows] · [rows, in].
pub fn linear_w_backward<T: Real>(gy: &[T], x: &[T], n: usize, fin: usize, fout: usize) -> Vec<T> {
    let mut gw = vec![T::zero(); fout * fin];
    matmul(fout, fin, n, &mut gw, fin, MatRef::transposed(gy, fout), MatRef::row_major(x, fin), false, true);
    gw
}
