// PaDiM's Mahalanobis distance with the inverse covariance in Cholesky form (Σ = LLᵀ):
// d = |z|, z = L⁻¹(f−μ), with L⁻¹ packed by rows (row i at i(i+1)/2) per position.
// f [N, D, P], mean [P, D], linv [P, D(D+1)/2], dist / gd [N, P].
// One block per (position, image): the difference vector sits in shared memory, each warp takes
// rows of L⁻¹ (lanes stride along the row, so the reads are coalesced) and reduces its dot
// product with shuffles. The backward scatters L⁻ᵀz row by row with shared-memory atomics.
// CPU twin: src/backend/cpu/mahalanobis.rs.
#include "common.cuh"

// Shared layout: diff[D], z[D] (backward also g[D]), 32 floats of reduction scratch.
__device__ __forceinline__ float whiten(const float* __restrict__ f, const float* __restrict__ mean, const float* __restrict__ linv, int d, int np,
                                        int b, int p, float* diff, float* z, float* scratch) {
  for (int j = threadIdx.x; j < d; j += blockDim.x) diff[j] = f[((long long)b * d + j) * np + p] - mean[(long long)p * d + j];
  __syncthreads();
  const float* l = linv + (long long)p * ((long long)d * (d + 1) / 2);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  float sq = 0.0f;
  for (int i = warp; i < d; i += nwarps) {
    const float* row = l + (long long)i * (i + 1) / 2;
    float acc = 0.0f;
    for (int j = lane; j <= i; j += 32) acc = fmaf(row[j], diff[j], acc);
    acc = warp_sum(acc);
    if (lane == 0) {
      z[i] = acc;
      sq = fmaf(acc, acc, sq);
    }
  }
  return sqrtf(block_sum(sq, scratch));  // block_sum's barriers also publish z
}

extern "C" __global__ void mahalanobis_f32(const float* __restrict__ f, const float* __restrict__ mean, const float* __restrict__ linv,
                                           float* __restrict__ dist, int d, int np) {
  const int p = blockIdx.x, b = blockIdx.y;
  float* sm = dynamic_smem<float>();
  float dd = whiten(f, mean, linv, d, np, b, p, sm, sm + d, sm + 2 * d);
  if (threadIdx.x == 0) dist[(long long)b * np + p] = dd;
}

extern "C" __global__ void mahalanobis_x_backward_f32(const float* __restrict__ gd, const float* __restrict__ f, const float* __restrict__ mean,
                                                      const float* __restrict__ linv, float* __restrict__ gf, int d, int np) {
  const int p = blockIdx.x, b = blockIdx.y;
  float* sm = dynamic_smem<float>();
  float *diff = sm, *z = sm + d, *g = sm + 2 * d, *scratch = sm + 3 * d;
  for (int j = threadIdx.x; j < d; j += blockDim.x) g[j] = 0.0f;
  float dd = whiten(f, mean, linv, d, np, b, p, diff, z, scratch);
  if (dd > 0.0f) {
    const float s = gd[(long long)b * np + p] / dd;
    const float* l = linv + (long long)p * ((long long)d * (d + 1) / 2);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int i = warp; i < d; i += nwarps) {
      const float* row = l + (long long)i * (i + 1) / 2;
      const float zi = z[i] * s;
      for (int j = lane; j <= i; j += 32) atomicAdd(&g[j], row[j] * zi);
    }
  }
  __syncthreads();
  for (int j = threadIdx.x; j < d; j += blockDim.x) gf[((long long)b * d + j) * np + p] = g[j];
}
