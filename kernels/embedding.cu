// Sinusoidal timestep embedding (guided-diffusion's, cos first, computed in f32 in upstream's
// operation order) and embedding-table lookup. CPU twin: src/backend/cpu/embedding.rs.
#include "common.cuh"

// y [N, dim]; neg_log_max_period = −ln(max_period) rounded to f32 on the host, like upstream.
extern "C" __global__ void timestep_embedding_f32(const float* __restrict__ t, float* __restrict__ y, int n, int dim,
                                                  float neg_log_max_period) {
  int half = dim / 2;
  KC_FOR_EACH(i, (long long)n * dim) {
    int row = (int)(i / dim), col = (int)(i % dim);
    float v = 0.0f;  // odd dim: the last column is zero
    if (col < 2 * half) {
      int k = col < half ? col : col - half;
      float freq = expf((neg_log_max_period * (float)k) / (float)half);
      float arg = t[row] * freq;
      v = col < half ? cosf(arg) : sinf(arg);
    }
    y[i] = v;
  }
}

// y[r, :] = table[ids[r], :]; ids were range-checked on the host.
extern "C" __global__ void embedding_f32(const float* __restrict__ table, const int* __restrict__ ids, float* __restrict__ y,
                                         int rows, int dim) {
  KC_FOR_EACH(i, (long long)rows * dim) {
    int r = (int)(i / dim), col = (int)(i % dim);
    y[i] = table[(long long)ids[r] * dim + col];
  }
}

// ∂table[ids[r], :] += ∂y[r, :]; ids may repeat, so the adds are atomic into a zeroed table.
extern "C" __global__ void embedding_w_backward_f32(const float* __restrict__ gy, const int* __restrict__ ids, float* __restrict__ gt,
                                                    int rows, int dim) {
  KC_FOR_EACH(i, (long long)rows * dim) {
    int r = (int)(i / dim), col = (int)(i % dim);
    atomicAdd(&gt[(long long)ids[r] * dim + col], gy[i]);
  }
}
