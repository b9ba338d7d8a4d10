// Tensor-core linear and its input gradient: one GEMM C[M×N] = A[M×K]·B[N×K]ᵀ over the engine of
// tc_gemm.cuh (both operands plain k-contiguous rows, made narrow by permute_cast_tc_*).
//   forward: M = rows, N = fout, K = fin: A = x, B = w (bias per column)
//   ∂x:      M = rows, N = fin, K = fout: A = ∂y, B = wᵀ as [fin][fout]
// Host: CudaBackend::linear_tc, linear_x_backward_tc (src/backend/cuda/tensor_core.rs).
#include "common.cuh"
#include "tc_gemm.cuh"

template <class P, class Tile>
__device__ __forceinline__ void linear_tc_body(const typename P::E* a, const typename P::E* b, const float* bias, const float* res, float* y, float* ws, int* cnt, const TcGemmGeom& t) {
  constexpr int J = Tile::BM * TcChunks<P>::CPR / Tile::THREADS;
  TcRowsLoader<P, J> la{};  // value-initialised, then the operand
  la.x = a; la.rows = t.m; la.K = t.k;
  TcRowsLoader<P, J> lb{};  // value-initialised, then the operand
  lb.x = b; lb.rows = t.n; lb.K = t.k;
  tc_gemm<P, Tile>(la, lb, TcEpilogue{bias, res, y, ws, cnt, t});
}

extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) linear_tc_bf16(const uint16_t* a, const uint16_t* b, const float* bias, const float* res, float* y, float* ws, int* cnt, TcGemmGeom t) {
  linear_tc_body<TcBf16, TcLarge>(a, b, bias, res, y, ws, cnt, t);
}
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) linear_tc_f16(const uint16_t* a, const uint16_t* b, const float* bias, const float* res, float* y, float* ws, int* cnt, TcGemmGeom t) {
  linear_tc_body<TcF16, TcLarge>(a, b, bias, res, y, ws, cnt, t);
}
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) linear_tc_tf32(const uint32_t* a, const uint32_t* b, const float* bias, const float* res, float* y, float* ws, int* cnt, TcGemmGeom t) {
  linear_tc_body<TcTf32, TcLarge>(a, b, bias, res, y, ws, cnt, t);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) linear_tc_small_bf16(const uint16_t* a, const uint16_t* b, const float* bias, const float* res, float* y, float* ws, int* cnt, TcGemmGeom t) {
  linear_tc_body<TcBf16, TcSmall>(a, b, bias, res, y, ws, cnt, t);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) linear_tc_small_f16(const uint16_t* a, const uint16_t* b, const float* bias, const float* res, float* y, float* ws, int* cnt, TcGemmGeom t) {
  linear_tc_body<TcF16, TcSmall>(a, b, bias, res, y, ws, cnt, t);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) linear_tc_small_tf32(const uint32_t* a, const uint32_t* b, const float* bias, const float* res, float* y, float* ws, int* cnt, TcGemmGeom t) {
  linear_tc_body<TcTf32, TcSmall>(a, b, bias, res, y, ws, cnt, t);
}
