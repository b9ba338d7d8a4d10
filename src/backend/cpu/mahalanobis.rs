//! PaDiM's Mahalanobis distance per position with the inverse covariance in Cholesky form:
//! Σ_p = L_p L_pᵀ, so (f−μ)ᵀΣ_p⁻¹(f−μ) = |L_p⁻¹(f−μ)|². `linv` holds L_p⁻¹ (lower triangular)
//! packed by rows — row i at offset i(i+1)/2, i+1 values — for each of the P = H·W positions:
//! [P, D(D+1)/2]; `mean` is [P, D]; features f are [N, D, P].
//! d = |z| with z = L⁻¹(f−μ); ∂d/∂f = L⁻ᵀz / d (0 where d = 0). CUDA twin: kernels/mahalanobis.cu.

use super::real::Real;
use rayon::prelude::*;

pub fn packed_len(d: usize) -> usize {
    d * (d + 1) / 2
}

/// Dot product with 8 independent partial sums (vectorises; the order is fixed, so results are
/// reproducible).
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = acc.iter().fold(T::zero(), |s, &v| s + v);
    for (x, y) in ra.iter().zip(rb) {
        s += *x * *y;
    }
    s
}

/// z = L⁻¹(f−μ) at position p of image ni into `z`; returns |z|.
#[allow(clippy::too_many_arguments)]
fn whiten<T: Real>(f: &[T], mean: &[T], linv: &[T], d: usize, np: usize, ni: usize, p: usize, diff: &mut [T], z: &mut [T]) -> T {
    for j in 0..d {
        diff[j] = f[(ni * d + j) * np + p] - mean[p * d + j];
    }
    let l = &linv[p * packed_len(d)..][..packed_len(d)];
    let mut sq = T::zero();
    for i in 0..d {
        z[i] = dot(&l[i * (i + 1) / 2..][..i + 1], &diff[..=i]);
        sq += z[i] * z[i];
    }
    sq.sqrt()
}

/// Distances [N, P].
pub fn mahalanobis<T: Real>(f: &[T], mean: &[T], linv: &[T], n: usize, d: usize, np: usize) -> Vec<T> {
    (0..n * np).into_par_iter().map_init(|| (vec![T::zero(); d], vec![T::zero(); d]), |(diff, z), i| whiten(f, mean, linv, d, np, i / np, i % np, diff, z)).collect()
}

/// ∂L/∂f [N, D, P] given ∂L/∂d [N, P].
pub fn mahalanobis_x_backward<T: Real>(gd: &[T], f: &[T], mean: &[T], linv: &[T], n: usize, d: usize, np: usize) -> Vec<T> {
    // per position ∂L/∂f as [N, P, D], transposed at the end
    let mut gpd = vec![T::zero(); n * np * d];
    gpd.par_chunks_mut(d).enumerate().for_each_init(
        || (vec![T::zero(); d], vec![T::zero(); d]),
        |(diff, z), (i, g)| {
            let (ni, p) = (i / np, i % np);
            let dist = whiten(f, mean, linv, d, np, ni, p, diff, z);
            if dist == T::zero() {
                return;
            }
            let s = gd[i] / dist;
            let l = &linv[p * packed_len(d)..][..packed_len(d)];
            for r in 0..d {
                let zr = z[r] * s;
                for (gj, &a) in g[..=r].iter_mut().zip(&l[r * (r + 1) / 2..][..r + 1]) {
                    *gj += a * zr;
                }
            }
        },
    );
    let mut gf = vec![T::zero(); n * d * np];
    gf.par_chunks_mut(d * np).enumerate().for_each(|(ni, gimg)| {
        for p in 0..np {
            for j in 0..d {
                gimg[j * np + p] = gpd[(ni * np + p) * d + j];
            }
        }
    });
    gf
}
