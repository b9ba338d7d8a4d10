// conv2d (groups = 1, any kernel, stride, asymmetric padding) and its input gradient on the tensor
// cores: implicit GEMMs over the engine of tc_gemm.cuh, operands in NHWC / tap-major narrow layouts
// made by permute_cast_tc_* (tc_support.cu). Host: CudaBackend::conv2d_tc, conv2d_x_backward_tc
// (src/backend/cuda/tensor_core.rs), which also picks the tile and the split-K.
//   forward:  M = o, N = n·ho·wo, K = kh·kw·c: A = w as [o][kh][kw][c], B = im2col(x NHWC)
//   ∂x:       M = c, N = n·h·w,  K = kh·kw·o: A = w as [c][kh][kw][o], B = im2col(∂y NHWC)
// Needs c (forward) or o (∂x) a multiple of 16 B / element size, so a chunk never straddles taps.
//   conv2d_tc_nchw_*: the forward reading x as f32 NCHW, cast (and normalised by its group-norm
//   records when `norm`) as the loader stages it into shared memory: no cast pass, no NHWC copy.
#include "common.cuh"
#include "tc_gemm.cuh"

template <class P, class Tile>
__device__ __forceinline__ void conv2d_tc_body(const typename P::E* x, const typename P::E* w, const float* bias, const float* res, float* y, float* ws, int* cnt, const Conv2dGeom& a,
                                               const TcGemmGeom& t) {
  constexpr int J = Tile::BM * TcChunks<P>::CPR / Tile::THREADS;
  TcRowsLoader<P, J> la{};  // value-initialised, then the operand
  la.x = w; la.rows = t.m; la.K = t.k;
  TcConvFwdLoader<P, J> lb{};  // value-initialised, then the operand
  lb.x = x; lb.a = a; lb.N = t.n; lb.K = t.k;
  tc_gemm<P, Tile>(la, lb, TcEpilogue{bias, res, y, ws, cnt, t});
}

template <class P, class Tile>
__device__ __forceinline__ void conv2d_x_backward_tc_body(const typename P::E* gy, const typename P::E* w, const float* res, float* gx, float* ws, int* cnt, const Conv2dGeom& a,
                                                          const TcGemmGeom& t) {
  constexpr int J = Tile::BM * TcChunks<P>::CPR / Tile::THREADS;
  TcRowsLoader<P, J> la{};  // value-initialised, then the operand
  la.x = w; la.rows = t.m; la.K = t.k;
  TcConvDgradLoader<P, J> lb{};  // value-initialised, then the operand
  lb.gy = gy; lb.a = a; lb.N = t.n; lb.K = t.k;
  tc_gemm<P, Tile>(la, lb, TcEpilogue{res, res, gx, ws, cnt, t});
}

// ---- forward: large (128×128) and small (64×64) tiles ------------------------------------------
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) conv2d_tc_bf16(const uint16_t* x, const uint16_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_tc_body<TcBf16, TcLarge>(x, w, bias, res, y, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) conv2d_tc_f16(const uint16_t* x, const uint16_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_tc_body<TcF16, TcLarge>(x, w, bias, res, y, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) conv2d_tc_tf32(const uint32_t* x, const uint32_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_tc_body<TcTf32, TcLarge>(x, w, bias, res, y, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) conv2d_tc_small_bf16(const uint16_t* x, const uint16_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_tc_body<TcBf16, TcSmall>(x, w, bias, res, y, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) conv2d_tc_small_f16(const uint16_t* x, const uint16_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_tc_body<TcF16, TcSmall>(x, w, bias, res, y, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) conv2d_tc_small_tf32(const uint32_t* x, const uint32_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_tc_body<TcTf32, TcSmall>(x, w, bias, res, y, ws, cnt, a, t);
}

// ---- forward of f32 NCHW x, staged and cast in the loader (optionally normalised) --------------
// With `gn` set it also makes y's group-norm records (tc_gn_out) into part, chm, out_coef for the
// norm `q` over y; their counters follow split-K's in `cnt` (host: CudaBackend::conv2d_tc_nchw).
#define TC_NCHW_GN_PARAMS float *part, float *chm, const float *gamma, const float *beta, const float *scale, const float *shift, float *out_coef, GroupNormGeom q, int gn
#define TC_NCHW_GN_ARGS part, chm, gamma, beta, scale, shift, out_coef, q, gn
template <class P, class Tile>
__device__ __forceinline__ void conv2d_tc_nchw_body(const float* x, const float* coef, const typename P::E* w, const float* bias, const float* res, float* y, float* ws, int* cnt,
                                                    const Conv2dGeom& a, const TcGemmGeom& t, int norm, int silu, TC_NCHW_GN_PARAMS) {
  constexpr int J = Tile::BM * TcChunks<P>::CPR / Tile::THREADS;
  TcRowsLoader<P, J> la{};  // value-initialised, then the operand
  la.x = w; la.rows = t.m; la.K = t.k;
  TcConvFwdF32Loader<P, J> lb{};  // value-initialised, then the operand
  lb.x = x; lb.coef = norm ? coef : nullptr; lb.silu = silu; lb.a = a; lb.N = t.n; lb.K = t.k;
  int* gcnt = cnt + (t.splits > 1 ? gridDim.x * gridDim.y : 0);
  const GnOut o{part, chm, gcnt, gamma, beta, scale, shift, out_coef, q};
  tc_gemm<P, Tile>(la, lb, TcEpilogue{bias, res, y, ws, cnt, t}, gn ? &o : nullptr);
}

extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) conv2d_tc_nchw_bf16(const float* x, const float* coef, const uint16_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t,
                                                                  int norm, int silu, float* part, float* chm, const float* gamma, const float* beta, const float* scale, const float* shift, float* out_coef, GroupNormGeom q, int gn) {
  conv2d_tc_nchw_body<TcBf16, TcLarge>(x, coef, w, bias, res, y, ws, cnt, a, t, norm, silu, TC_NCHW_GN_ARGS);
}
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) conv2d_tc_nchw_f16(const float* x, const float* coef, const uint16_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t,
                                                                  int norm, int silu, float* part, float* chm, const float* gamma, const float* beta, const float* scale, const float* shift, float* out_coef, GroupNormGeom q, int gn) {
  conv2d_tc_nchw_body<TcF16, TcLarge>(x, coef, w, bias, res, y, ws, cnt, a, t, norm, silu, TC_NCHW_GN_ARGS);
}
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) conv2d_tc_nchw_tf32(const float* x, const float* coef, const uint32_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t,
                                                                  int norm, int silu, float* part, float* chm, const float* gamma, const float* beta, const float* scale, const float* shift, float* out_coef, GroupNormGeom q, int gn) {
  conv2d_tc_nchw_body<TcTf32, TcLarge>(x, coef, w, bias, res, y, ws, cnt, a, t, norm, silu, TC_NCHW_GN_ARGS);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) conv2d_tc_nchw_small_bf16(const float* x, const float* coef, const uint16_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t,
                                                                  int norm, int silu, float* part, float* chm, const float* gamma, const float* beta, const float* scale, const float* shift, float* out_coef, GroupNormGeom q, int gn) {
  conv2d_tc_nchw_body<TcBf16, TcSmall>(x, coef, w, bias, res, y, ws, cnt, a, t, norm, silu, TC_NCHW_GN_ARGS);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) conv2d_tc_nchw_small_f16(const float* x, const float* coef, const uint16_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t,
                                                                  int norm, int silu, float* part, float* chm, const float* gamma, const float* beta, const float* scale, const float* shift, float* out_coef, GroupNormGeom q, int gn) {
  conv2d_tc_nchw_body<TcF16, TcSmall>(x, coef, w, bias, res, y, ws, cnt, a, t, norm, silu, TC_NCHW_GN_ARGS);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) conv2d_tc_nchw_small_tf32(const float* x, const float* coef, const uint32_t* w, const float* bias, const float* res, float* y, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t,
                                                                  int norm, int silu, float* part, float* chm, const float* gamma, const float* beta, const float* scale, const float* shift, float* out_coef, GroupNormGeom q, int gn) {
  conv2d_tc_nchw_body<TcTf32, TcSmall>(x, coef, w, bias, res, y, ws, cnt, a, t, norm, silu, TC_NCHW_GN_ARGS);
}

// ---- input gradient ----------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) conv2d_x_backward_tc_bf16(const uint16_t* gy, const uint16_t* w, const float* res, float* gx, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_x_backward_tc_body<TcBf16, TcLarge>(gy, w, res, gx, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) conv2d_x_backward_tc_f16(const uint16_t* gy, const uint16_t* w, const float* res, float* gx, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_x_backward_tc_body<TcF16, TcLarge>(gy, w, res, gx, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_L_THREADS) conv2d_x_backward_tc_tf32(const uint32_t* gy, const uint32_t* w, const float* res, float* gx, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_x_backward_tc_body<TcTf32, TcLarge>(gy, w, res, gx, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) conv2d_x_backward_tc_small_bf16(const uint16_t* gy, const uint16_t* w, const float* res, float* gx, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_x_backward_tc_body<TcBf16, TcSmall>(gy, w, res, gx, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) conv2d_x_backward_tc_small_f16(const uint16_t* gy, const uint16_t* w, const float* res, float* gx, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_x_backward_tc_body<TcF16, TcSmall>(gy, w, res, gx, ws, cnt, a, t);
}
extern "C" __global__ void __launch_bounds__(TCG_S_THREADS) conv2d_x_backward_tc_small_tf32(const uint32_t* gy, const uint32_t* w, const float* res, float* gx, float* ws, int* cnt, Conv2dGeom a, TcGemmGeom t) {
  conv2d_x_backward_tc_body<TcTf32, TcSmall>(gy, w, res, gx, ws, cnt, a, t);
}
