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
    // SAFETY: `dst` is an exclusive borrow covering the m×n extent (asserted above).
    unsafe { matmul_raw(m, n, k, dst.as_mut_ptr(), (dst_rs, 1), a, b, accumulate, parallel) }
}

/// dst = (a·b)ᵀ: element (i, j) of the m×n product goes to `dst[j*ldt + i]`. Lets a product with
/// a short m run as the faster long-m product and land transposed at no extra pass.
#[allow(clippy::too_many_arguments)]
pub fn matmul_t<T: Real>(m: usize, n: usize, k: usize, dst: &mut [T], ldt: usize, a: MatRef<T>, b: MatRef<T>, parallel: bool) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((n - 1) * ldt + m <= dst.len(), "matmul_t: dst too small");
    // SAFETY: exclusive borrow covering every (i, j) ↦ j*ldt + i (asserted above).
    unsafe { matmul_raw(m, n, k, dst.as_mut_ptr(), (1, ldt), a, b, false, parallel) }
}

/// `matmul` into a raw destination, for callers that write disjoint column blocks of one matrix
/// from several threads (which `&mut` slices cannot express).
///
/// # Safety
/// `dst` must be valid for writes at `i*dst_rs + j*dst_cs` for i < m, j < n, and no other thread may
/// touch those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_raw<T: Real>(m: usize, n: usize, k: usize, dst: *mut T, (dst_rs, dst_cs): (usize, usize), a: MatRef<T>, b: MatRef<T>, accumulate: bool, parallel: bool) {
    assert!(a.fits(m, k) && b.fits(k, n), "matmul: operand too small");
    if m == 0 || n == 0 || k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.add(i * dst_rs + j * dst_cs) = T::zero();
                }
            }
        }
        return;
    }
    let par = if parallel && rayon::current_num_threads() > 1 { gemm::Parallelism::Rayon(rayon::current_num_threads()) } else { gemm::Parallelism::None };
    // SAFETY: operands are bounded by the assert above, dst by the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
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

/// Raw output pointer shared by parallel tasks that write disjoint parts of one buffer.
pub struct SendPtr<T>(pub *mut T);
// SAFETY: only used by tasks whose writes are disjoint (each caller states why).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    pub fn at(&self, off: usize) -> *mut T {
        self.0.wrapping_add(off)
    }
}
