// y = x·wᵀ + b (x [rows, in], w [out, in]) and its input gradient, on the implicit-GEMM tiles of
// igemm.cuh. Launch: block (16,16), grid (⌈rows/64⌉, ⌈M/64⌉), IGEMM_SMEM_BYTES dynamic smem.
// CPU twin: src/backend/cpu/linear.rs.
#include "common.cuh"
#include "igemm.cuh"

struct RowMajor {  // element (m, k) of a row-major [M, ld] matrix
  const float* p;
  int ld;
  __device__ float operator()(int m, int k) const { return p[(long long)m * ld + k]; }
};
struct ColMajor {  // element (k, n) = p[n·ld + k]: a row-major [N, ld] matrix read transposed
  const float* p;
  int ld;
  __device__ float operator()(int k, int n) const { return p[(long long)n * ld + k]; }
};
struct TransposedA {  // element (m, k) = p[k·ld + m]
  const float* p;
  int ld;
  __device__ float operator()(int m, int k) const { return p[(long long)k * ld + m]; }
};
struct RowMajorB {  // element (k, n) = p[k·ld + n]
  const float* p;
  int ld;
  __device__ float operator()(int k, int n) const { return p[(long long)k * ld + n]; }
};
struct StoreCols {  // out[m·ld + n] = v
  float* out;
  int ld;
  __device__ void operator()(int m, int n, float v) const { out[(long long)m * ld + n] = v; }
};
struct StoreRows {  // out[n·ld + m] = v (+ bias[m])
  float* out;
  const float* bias;
  int ld, has_bias;
  __device__ void operator()(int m, int n, float v) const { out[(long long)n * ld + m] = v + (has_bias ? bias[m] : 0.0f); }
};

extern "C" __global__ void linear_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                                                             float* __restrict__ y, int rows, int fin, int fout, int has_bias) {
  igemm_tile(fout, rows, fin, RowMajor{w, fin}, ColMajor{x, fin}, StoreRows{y, bias, fout, has_bias});
}

extern "C" __global__ void linear_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ w,
                                                                        float* __restrict__ gx, int rows, int fin, int fout) {
  igemm_tile(fin, rows, fout, TransposedA{w, fin}, ColMajor{gy, fout}, StoreRows{gx, w, fin, 0});
}

// ∂w [out, in] = ∂yᵀ · x: M = out, N = in, K = rows.
extern "C" __global__ void linear_w_backward_f32(const float* __restrict__ gy, const float* __restrict__ x, float* __restrict__ gw,
                                                 int rows, int fin, int fout) {
  igemm_tile(fout, fin, rows, TransposedA{gy, fout}, RowMajorB{x, fin}, StoreCols{gw, fin});
}
