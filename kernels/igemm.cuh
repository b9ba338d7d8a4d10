// Tiled implicit GEMM shared by convolution, its input gradient and linear: C[M×N] = A[M×K]·B[K×N]
// where A and B are read through functors (so im2col never materialises) and the result goes
// through a store functor. Block 16×16 threads, tile 64×64, K step 16; each thread owns a 4×4
// sub-tile strided by 16 so that neighbouring threads touch neighbouring columns.
// Needs IGEMM_SMEM_BYTES of dynamic shared memory.
#pragma once
#include "common.cuh"

// Tile sizes and IGEMM_SMEM_BYTES: contract.cuh.

// The block's accumulators: acc[i][j] = C[m0 + ty + 16i][n0 + tx + 16j] (m0, n0 the tile's corner).
template <class LoadA, class LoadB>
__device__ __forceinline__ void igemm_acc(int M, int N, int K, const LoadA& la, const LoadB& lb, float (&acc)[4][4]) {
  float* As = dynamic_smem<float>();       // [TK][TM]
  float* Bs = As + IGEMM_TK * IGEMM_TM;    // [TK][TN]
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * IGEMM_THREADS + tx;
  const int m0 = blockIdx.y * IGEMM_TM, n0 = blockIdx.x * IGEMM_TN;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
  for (int k0 = 0; k0 < K; k0 += IGEMM_TK) {
    for (int r = 0; r < 4; ++r) {
      int e = tid + IGEMM_THREADS * IGEMM_THREADS * r;
      int kk = e / IGEMM_TM, mm = e % IGEMM_TM;
      int m = m0 + mm, k = k0 + kk;
      As[kk * IGEMM_TM + mm] = (m < M && k < K) ? la(m, k) : 0.0f;
      int nn = e % IGEMM_TN, kb = e / IGEMM_TN;
      int n = n0 + nn, kb2 = k0 + kb;
      Bs[kb * IGEMM_TN + nn] = (n < N && kb2 < K) ? lb(kb2, n) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < IGEMM_TK; ++kk) {
      float a[4], b[4];
      for (int i = 0; i < 4; ++i) a[i] = As[kk * IGEMM_TM + ty + 16 * i];
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk * IGEMM_TN + tx + 16 * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
}

template <class LoadA, class LoadB, class Store>
__device__ __forceinline__ void igemm_tile(int M, int N, int K, const LoadA& la, const LoadB& lb, const Store& st) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int m0 = blockIdx.y * IGEMM_TM, n0 = blockIdx.x * IGEMM_TN;
  float acc[4][4];
  igemm_acc(M, N, K, la, lb, acc);
  for (int i = 0; i < 4; ++i) {
    int m = m0 + ty + 16 * i;
    if (m >= M) continue;
    for (int j = 0; j < 4; ++j) {
      int n = n0 + tx + 16 * j;
      if (n < N) st(m, n, acc[i][j]);
    }
  }
}
