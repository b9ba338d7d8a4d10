// Reductions: mean and unbiased std over a whole tensor, and global average pooling.
// CPU twins: src/backend/cpu/reduce.rs, pool.rs (global_avg_pool).
#include "common.cuh"

// One block (blockDim.x a multiple of 32): two passes, per-thread sums in double, so the mean and
// the std match a float64 reference to f32 rounding. out[0] = mean, out[1] = std (N−1).
__device__ __forceinline__ double block_sum_f64(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(KC_FULL_MASK, v, o);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(KC_FULL_MASK, v, o);
  return v;
}

extern "C" __global__ void mean_std_f32(const float* __restrict__ x, long long n, float* __restrict__ out) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) s += (double)x[i];
  double mean = block_sum_f64(s, scratch) / (double)n;
  double q = 0.0;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) {
    double d = (double)x[i] - mean;
    q += d * d;
  }
  double ss = block_sum_f64(q, scratch);
  if (threadIdx.x == 0) {
    out[0] = (float)mean;
    out[1] = (float)sqrt(ss / (double)(n - 1));
  }
}

// One block per (n, c) plane.
extern "C" __global__ void global_avg_pool_f32(const float* __restrict__ x, float* __restrict__ y, int plane) {
  __shared__ float scratch[32];
  const float* p = x + (long long)blockIdx.x * plane;
  float s = 0.0f;
  for (int i = threadIdx.x; i < plane; i += blockDim.x) s += p[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) y[blockIdx.x] = s / (float)plane;
}

// y[c] = Σ over images and positions of x [n, c, s] (bias gradients): one block per channel.
extern "C" __global__ void channel_sum_f32(const float* __restrict__ x, float* __restrict__ y, int n, int c, int s) {
  __shared__ float scratch[32];
  const int ch = blockIdx.x;
  float acc = 0.0f;
  for (long long i = threadIdx.x; i < (long long)n * s; i += blockDim.x) {
    long long img = i / s, pos = i % s;
    acc += x[(img * c + ch) * s + pos];
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) y[ch] = acc;
}
