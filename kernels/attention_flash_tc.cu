// Flash attention on the tensor cores: the legacy QKV layout (attention_flash.cu), q, k, v and
// the softmax weights P as bf16 or f16 operands of mma.sync m16n8k16, scores, softmax statistics
// and accumulators f32. Not the default path (CudaBackend::attention_legacy_tc, kernels/README.md).
//
// Input: the 16-bit bits of qkv in a scratch [B·H, 3d, Tp], Tp = T rounded up to 8 and the pad
// zero (cast_qkv_pad_*), so every row is whole 16-byte cp.async chunks. d a multiple of 16, ≤ DMAX.
//
//   block: FTC_BQ = 64 queries of one (batch·head), 4 warps; warp w owns queries 16w .. 16w+15
//   shared: Q [d][FTC_LDS] and two stages of K, V [d][FTC_LDS] (channel rows, tokens contiguous,
//           rows padded 64 → 72 so the 8 rows of an ldmatrix hit 8 different 16-byte bank groups)
//   per key tile (FTC_BK = 64 keys):
//     S (16 × 64 per warp) = Q·Kᵀ: A = Q fragments (registers, ldmatrix.x4.trans of Q once),
//       B = ldmatrix.x4.trans of K (stored k-major, which is mma's row B transposed), d/16 k16 steps
//     online softmax on the S fragments (a query row lives in the 4 lanes of a quad)
//     P = exp(s − m) rounded to bf16/f16 in registers: S's C fragment is PV's A fragment
//     O (16 × d) += P·V: B = ldmatrix.x4 of V (stored [c][key]: n-major, k contiguous = mma's col B)
//   The rounding points (mirrored by tests/attention_flash.rs): q, k, v once in the cast; P
//   after the exp against the running max of the key tiles so far; l sums the rounded P.
#include "common.cuh"

template <int F16>
__device__ __forceinline__ uint32_t ftc_pack(float lo, float hi) {
  return F16 ? kc_pack_f16x2_rn(lo, hi) : kc_pack_bf16x2_rn(lo, hi);
}
template <int F16>
__device__ __forceinline__ float ftc_lo(uint32_t p) {
  return F16 ? kc_half2float(kc_half{(uint16_t)(p & 0xffffu)}) : __uint_as_float(p << 16);
}
template <int F16>
__device__ __forceinline__ float ftc_hi(uint32_t p) {
  return F16 ? kc_half2float(kc_half{(uint16_t)(p >> 16)}) : __uint_as_float(p & 0xffff0000u);
}
template <int F16>
__device__ __forceinline__ void ftc_mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  if (F16)
    kc_mma_m16n8k16_f16(d, a, b, d);
  else
    kc_mma_m16n8k16_bf16(d, a, b, d);
}

// Tokens j0 .. j0+64 of d rows (row stride tp) into a [d][FTC_LDS] tile; chunks past tp are zero.
__device__ __forceinline__ void ftc_load_tile(uint16_t* s, const uint16_t* g, int d, int tp, int j0) {
  for (int e = threadIdx.x; e < d * 8; e += FTC_THREADS) {
    const int c = e >> 3, jj = (e & 7) * 8, j = j0 + jj;
    const bool in = j < tp;
    kc_cp_async_cg16_zfill(s + c * FTC_LDS + jj, in ? g + (long long)c * tp + j : g, in ? 16 : 0);
  }
}

template <int DMAX, int F16>
__device__ __forceinline__ void ftc_forward(const uint16_t* qkv, float* out, int d, int t, int tp) {
  uint16_t* qs = dynamic_smem<uint16_t>();
  uint16_t* kv = qs + d * FTC_LDS;  // stage s: K at kv + 2s·d·LDS, V after it
  const int bh = blockIdx.y, q0 = blockIdx.x * FTC_BQ;
  const uint16_t* q = qkv + (long long)bh * 3 * d * tp;
  const uint16_t* k = q + (long long)d * tp;
  const uint16_t* v = k + (long long)d * tp;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
  const int nk = (t + FTC_BK - 1) / FTC_BK, ksteps = d / 16;
  constexpr int NS = FTC_BK / 8, NO = DMAX / 8, KQ = DMAX / 16;

  ftc_load_tile(qs, q, d, tp, q0);
  ftc_load_tile(kv, k, d, tp, 0);
  ftc_load_tile(kv + d * FTC_LDS, v, d, tp, 0);
  kc_cp_async_commit();
  kc_cp_async_wait<0>();  // Q and stage 0 (the next stage's copies would pass the in-flight limit at d = 128)
  __syncthreads();
  uint32_t qf[KQ][4];
#pragma unroll
  for (int ks = 0; ks < KQ; ++ks) {
    if (ks < ksteps) {
      const int i = lane >> 3, r = lane & 7;
      kc_ldmatrix_x4_trans(qf[ks], qs + (ks * 16 + r + 8 * (i >> 1)) * FTC_LDS + warp * 16 + 8 * (i & 1));
    }
  }

  float o[NO][4], m[2] = {KC_NEG_INF, KC_NEG_INF}, l[2] = {0.0f, 0.0f};
#pragma unroll
  for (int n = 0; n < NO; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = 0.0f;
  const float s2 = 1.0f / sqrtf((float)d);

  for (int kt = 0; kt < nk; ++kt) {
    if (kt + 1 < nk) {
      uint16_t* nx = kv + ((kt + 1) & 1) * 2 * d * FTC_LDS;
      ftc_load_tile(nx, k, d, tp, (kt + 1) * FTC_BK);
      ftc_load_tile(nx + d * FTC_LDS, v, d, tp, (kt + 1) * FTC_BK);
    }
    kc_cp_async_commit();
    kc_cp_async_wait<1>();
    __syncthreads();
    const uint16_t* ks_ = kv + (kt & 1) * 2 * d * FTC_LDS;
    const uint16_t* vs = ks_ + d * FTC_LDS;
    const int j0 = kt * FTC_BK;

    float s[NS][4];
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KQ; ++ks) {
      if (ks < ksteps) {
#pragma unroll
        for (int nj = 0; nj < NS / 2; ++nj) {
          const int i = lane >> 3, r = lane & 7;
          uint32_t bq[4];
          kc_ldmatrix_x4_trans(bq, ks_ + (ks * 16 + r + 8 * (i & 1)) * FTC_LDS + nj * 16 + 8 * (i >> 1));
          const uint32_t b0[2] = {bq[0], bq[1]}, b1[2] = {bq[2], bq[3]};
          ftc_mma<F16>(s[2 * nj], qf[ks], b0);
          ftc_mma<F16>(s[2 * nj + 1], qf[ks], b1);
        }
      }
    }
    // online softmax: rows g (e = 0, 1) and g + 8 (e = 2, 3); a row's 64 keys are in the quad's 4 lanes
    uint32_t pa[NS / 2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = KC_NEG_INF;
#pragma unroll
      for (int n = 0; n < NS; ++n)
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) {
          s[n][e] = j0 + n * 8 + 2 * tq + (e & 1) < t ? s[n][e] * s2 : KC_NEG_INF;
          mx = fmaxf(mx, s[n][e]);
        }
      mx = fmaxf(mx, __shfl_xor_sync(KC_FULL_MASK, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(KC_FULL_MASK, mx, 2));
      const float mnew = fmaxf(m[h], mx), alpha = expf(m[h] - mnew);
      m[h] = mnew;
      l[h] *= alpha;
#pragma unroll
      for (int n = 0; n < NO; ++n) {
        o[n][2 * h] *= alpha;
        o[n][2 * h + 1] *= alpha;
      }
#pragma unroll
      for (int n = 0; n < NS; ++n) {
        const uint32_t p = ftc_pack<F16>(expf(s[n][2 * h] - mnew), expf(s[n][2 * h + 1] - mnew));
        l[h] += ftc_lo<F16>(p) + ftc_hi<F16>(p);
        // C fragment (row g+8h, keys 8n + 2tq, +1) = A fragment register h (n even) or 2 + h (n odd) of k16 step n/2
        pa[n >> 1][(n & 1) * 2 + h] = p;
      }
    }
#pragma unroll
    for (int kk = 0; kk < NS / 2; ++kk) {
#pragma unroll
      for (int nj = 0; nj < NO / 2; ++nj) {
        if (nj * 16 < d) {
          uint32_t bv[4];
          kc_ldmatrix_x4(bv, vs + (nj * 16 + 8 * (lane >> 4) + (lane & 7)) * FTC_LDS + kk * 16 + ((lane >> 3) & 1) * 8);
          const uint32_t b0[2] = {bv[0], bv[1]}, b1[2] = {bv[2], bv[3]};
          ftc_mma<F16>(o[2 * nj], pa[kk], b0);
          ftc_mma<F16>(o[2 * nj + 1], pa[kk], b1);
        }
      }
    }
    __syncthreads();  // stage kt is refilled at kt + 2
  }

  const long long base = (long long)bh * d * t;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float ls = l[h];
    ls += __shfl_xor_sync(KC_FULL_MASK, ls, 1);
    ls += __shfl_xor_sync(KC_FULL_MASK, ls, 2);
    const float inv = 1.0f / ls;
    const int qi = q0 + warp * 16 + g + 8 * h;
    if (qi < t)
#pragma unroll
      for (int n = 0; n < NO; ++n)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int c = n * 8 + 2 * tq + e;
          if (c < d) out[base + (long long)c * t + qi] = o[n][2 * h + e] * inv;
        }
  }
}

// Launch: grid (⌈T/FTC_BQ⌉, B·H), block FTC_THREADS, smem 5·d·FTC_LDS·2 bytes; _dN for d ≤ N.
extern "C" __global__ void __launch_bounds__(FTC_THREADS) attention_flash_tc_bf16_d64(const uint16_t* qkv, float* out, int d, int t, int tp) {
  ftc_forward<64, 0>(qkv, out, d, t, tp);
}
extern "C" __global__ void __launch_bounds__(FTC_THREADS) attention_flash_tc_bf16_d128(const uint16_t* qkv, float* out, int d, int t, int tp) {
  ftc_forward<128, 0>(qkv, out, d, t, tp);
}
extern "C" __global__ void __launch_bounds__(FTC_THREADS) attention_flash_tc_f16_d64(const uint16_t* qkv, float* out, int d, int t, int tp) {
  ftc_forward<64, 1>(qkv, out, d, t, tp);
}
extern "C" __global__ void __launch_bounds__(FTC_THREADS) attention_flash_tc_f16_d128(const uint16_t* qkv, float* out, int d, int t, int tp) {
  ftc_forward<128, 1>(qkv, out, d, t, tp);
}

// y [rows, tp] = x [rows, t] as bf16 / f16 bits (round to nearest even), the columns t .. tp zero.
extern "C" __global__ void cast_qkv_pad_bf16(const float* x, uint16_t* y, int rows, int t, int tp) {
  KC_FOR_EACH(e, (long long)rows * tp) {
    const long long r = e / tp;
    const int j = (int)(e - r * tp);
    y[e] = j < t ? kc_float2bf16_rn(x[r * t + j]).bits : (uint16_t)0;
  }
}
extern "C" __global__ void cast_qkv_pad_f16(const float* x, uint16_t* y, int rows, int t, int tp) {
  KC_FOR_EACH(e, (long long)rows * tp) {
    const long long r = e / tp;
    const int j = (int)(e - r * tp);
    y[e] = j < t ? kc_float2half_rn(x[r * t + j]).bits : (uint16_t)0;
  }
}
