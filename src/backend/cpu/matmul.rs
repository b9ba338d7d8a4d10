//! Dense matrix product through the `gemm` crate (AVX-512/AVX2 micro-kernels picked at run time).
//! Matrices are described by (row stride, column stride) so transposes cost nothing.

use super::real::Real;

/// A read-only matrix view: element (i, j) is `data[i*rs + j*cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    pub fn row_major(data: &'a [T], cols: usize) -> Self {
        MatRef { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        MatRef { data, rs: 1, cs: cols }
    }
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// dst (m×n, row stride `dst_rs`) = [dst +] a (m×k) · b (k×n).
/// `parallel` lets gemm split the work over rayon's threads; callers that already run inside a
/// parallel loop pass false.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Real>(m: usize, n: usize, k: usize, dst: &mut [T], dst_rs: usize, a: MatRef<T>, b: MatRef<T>, accumulate: bool, parallel: bool) {
    if m == 0 || n == 0 {
        return;
    }
    // Internal invariant (shapes were validated by the caller): every view must cover its extent.
    assert!((m - 1) * dst_rs + n <= dst.len(), "matmul: dst too small");
    assert!(a.fits(m, k) && b.fits(k, n), "matmul: operand too small");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(T::zero());
            }
        }
        return;
    }
    let par = if parallel && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every index gemm will touch by the slices' lengths, and
    // `dst` is exclusively borrowed, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}
