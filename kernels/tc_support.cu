// The tensor-core GEMMs' companions: operands cast to the narrow type in the layout the engine
// reads (permute_cast_tc_*: NCHW → NHWC, weight reorders, transposes), and the deterministic
// second pass of split-K (splitk_reduce_f32: partials summed in split order, then bias and
// residual, into the op's layout). See tc_gemm.cuh and contract.cuh (TcPermute, TcGemmGeom).
#include "common.cuh"
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

// out(m, n) = Σ_s ws[s][m][n] (s ascending) + bias + res: the same sum whatever the block order.
extern "C" __global__ void splitk_reduce_f32(const float* ws, const float* bias, const float* res, float* out, TcGemmGeom t) {
  const long long mn = (long long)t.m * t.n;
  KC_FOR_EACH(i, mn) {
    const int m = (int)(i / t.n), n = (int)(i % t.n);
    float v = 0.0f;
    for (int s = 0; s < t.splits; ++s) v += ws[s * mn + i];
    if (t.has_bias) v += bias[t.bias_on_n ? n : m];
    const int img = n / t.hw, pix = n - img * t.hw;
    const long long o = ((long long)img * t.m + m) * t.hw + pix;
    if (t.has_res) v += res[o];
    out[o] = v;
  }
}
