// The tensor-core GEMMs' companions: operands cast to the narrow type in the layout the engine
// reads (permute_cast_tc_*: NCHW → NHWC, weight reorders, transposes; im2col_rows_cast_tc_*: the
// weight gradient's k-contiguous rows over output pixels). See tc_gemm.cuh and contract.cuh
// (TcPermute, TcGemmGeom).
#include "common.cuh"
#include "gn_pre.cuh"
#include "tc_gemm.cuh"

// Destination element i (row-major over p.d) from source element Σ idx_k · p.ss[k].
__device__ __forceinline__ long long permute_src(long long i, const TcPermute& p) {
  long long off = 0;
  for (int k = 3; k > 0; --k) {
    off += (i % p.d[k]) * (long long)p.ss[k];
    i /= p.d[k];
  }
  return off + i * (long long)p.ss[0];
}

// 2-byte types: one thread writes a whole 32-bit word (two elements; the last word's high half is
// 0 when the count is odd), so no two blocks store into one word.
template <class P>
__device__ __forceinline__ void permute_cast_pairs(const float* src, uint32_t* dst, const TcPermute& p) {
  const long long total = (long long)p.d[0] * p.d[1] * p.d[2] * p.d[3];
  KC_FOR_EACH(j, (total + 1) / 2) {
    const long long i = 2 * j;
    const uint32_t lo = P::cvt(src[permute_src(i, p)]);
    const uint32_t hi = i + 1 < total ? P::cvt(src[permute_src(i + 1, p)]) : 0u;
    dst[j] = lo | hi << 16;
  }
}

extern "C" __global__ void permute_cast_tc_bf16(const float* src, uint32_t* dst, TcPermute p) { permute_cast_pairs<TcBf16>(src, dst, p); }
extern "C" __global__ void permute_cast_tc_f16(const float* src, uint32_t* dst, TcPermute p) { permute_cast_pairs<TcF16>(src, dst, p); }
extern "C" __global__ void permute_cast_tc_tf32(const float* src, uint32_t* dst, TcPermute p) {
  const long long total = (long long)p.d[0] * p.d[1] * p.d[2] * p.d[3];
  KC_FOR_EACH(i, total) dst[i] = TcTf32::cvt(src[permute_src(i, p)]);
}

// x NCHW → NHWC narrow as permute_cast_tc_* with dims [n, h, w, c], normalised on the way by its
// (image, channel) record (gn_pre.cuh): the tensor-core conv of CudaBackend::group_norm_conv2d.
// Element i's channel is i mod c, its image i / (h·w·c); the conv's loader pads with zeros after.
__device__ __forceinline__ float permute_norm_at(const float* src, const float* coef, long long i, const TcPermute& p, int silu) {
  const int c = p.d[3];
  const long long img = i / ((long long)p.d[1] * p.d[2] * c);
  const long long ch = img * c + (int)(i % c);
  return gn_pre(src[permute_src(i, p)], coef + ch * GN_PRE_FLOATS, silu);
}

template <class P>
__device__ __forceinline__ void permute_cast_norm_pairs(const float* src, const float* coef, uint32_t* dst, const TcPermute& p, int silu) {
  const long long total = (long long)p.d[0] * p.d[1] * p.d[2] * p.d[3];
  KC_FOR_EACH(j, (total + 1) / 2) {
    const long long i = 2 * j;
    const uint32_t lo = P::cvt(permute_norm_at(src, coef, i, p, silu));
    const uint32_t hi = i + 1 < total ? P::cvt(permute_norm_at(src, coef, i + 1, p, silu)) : 0u;
    dst[j] = lo | hi << 16;
  }
}

extern "C" __global__ void permute_cast_norm_tc_bf16(const float* src, const float* coef, uint32_t* dst, TcPermute p, int silu) {
  permute_cast_norm_pairs<TcBf16>(src, coef, dst, p, silu);
}
extern "C" __global__ void permute_cast_norm_tc_f16(const float* src, const float* coef, uint32_t* dst, TcPermute p, int silu) {
  permute_cast_norm_pairs<TcF16>(src, coef, dst, p, silu);
}
extern "C" __global__ void permute_cast_norm_tc_tf32(const float* src, const float* coef, uint32_t* dst, TcPermute p, int silu) {
  const long long total = (long long)p.d[0] * p.d[1] * p.d[2] * p.d[3];
  KC_FOR_EACH(i, total) dst[i] = TcTf32::cvt(permute_norm_at(src, coef, i, p, silu));
}

// The weight gradient's operands (CudaBackend::conv2d_w_backward_tc): row r = (ci, ky, kx) of
// x's transposed im2col, k = (img, oy, ox) an output pixel, K = n·ho·wo padded with zeros to kp
// (whole 16-byte chunks, so rows start aligned and no chunk reads the next row):
//   dst[r][k] = x[img][ci][oy·sh + ky − pt][ox·sw + kx − pl], 0 outside the image or for k ≥ K.
// With a 1×1 stride-1 geometry (c = o, h = ho, w = wo) the same kernel lays ∂y out as [o][kp].
__device__ __forceinline__ float im2col_rows_at(const float* x, const Conv2dGeom& a, long long r, long long k) {
  const int hw = a.ho * a.wo;
  if (k >= (long long)a.n * hw) return 0.0f;
  const int img = (int)(k / hw), pix = (int)(k - (long long)img * hw), oy = pix / a.wo, ox = pix - oy * a.wo;
  const int khw = a.kh * a.kw;
  const int ci = (int)(r / khw), tap = (int)(r - (long long)ci * khw), ky = tap / a.kw, kx = tap - ky * a.kw;
  const int iy = oy * a.sh + ky - a.pt, ix = ox * a.sw + kx - a.pl;
  if (iy < 0 || iy >= a.h || ix < 0 || ix >= a.w) return 0.0f;
  return x[(((long long)img * a.c + ci) * a.h + iy) * a.w + ix];
}

// 2-byte types: a thread writes one 32-bit word, elements k and k+1 of a row (kp is even).
template <class P>
__device__ __forceinline__ void im2col_rows_cast_pairs(const float* x, uint32_t* dst, const Conv2dGeom& a, int kp) {
  const long long half_row = kp / 2, rows = (long long)a.c * a.kh * a.kw;
  KC_FOR_EACH(j, rows * half_row) {
    const long long r = j / half_row, k = 2 * (j - r * half_row);
    const uint32_t lo = P::cvt(im2col_rows_at(x, a, r, k));
    const uint32_t hi = P::cvt(im2col_rows_at(x, a, r, k + 1));
    dst[j] = lo | hi << 16;
  }
}

extern "C" __global__ void im2col_rows_cast_tc_bf16(const float* x, uint32_t* dst, Conv2dGeom a, int kp) { im2col_rows_cast_pairs<TcBf16>(x, dst, a, kp); }
extern "C" __global__ void im2col_rows_cast_tc_f16(const float* x, uint32_t* dst, Conv2dGeom a, int kp) { im2col_rows_cast_pairs<TcF16>(x, dst, a, kp); }
extern "C" __global__ void im2col_rows_cast_tc_tf32(const float* x, uint32_t* dst, Conv2dGeom a, int kp) {
  const long long rows = (long long)a.c * a.kh * a.kw;
  KC_FOR_EACH(i, rows * kp) {
    const long long r = i / kp;
    dst[i] = TcTf32::cvt(im2col_rows_at(x, a, r, i - r * kp));
  }
}
