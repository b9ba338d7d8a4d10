// guided-diffusion's QKVAttentionLegacy as f32 flash attention: a block per (batch·head, FA_BQ
// queries) streams the head's keys in tiles of FA_BK through shared memory (cp.async, two
// stages) and keeps a running max m and sum l per query (online softmax), so no score matrix
// beyond one 64×32 tile exists and K, V are read once per query tile instead of once per query.
// qkv [B·H, 3d, T] (q, k, v consecutive d-row blocks per head, T contiguous);
// scores = q·k·d^-½. CPU twin: src/backend/cpu/attention.rs. Tiling diagram: kernels/README.md.
//
//   thread (ty, tx) = (tid / 8, tid % 8) owns queries 4ty .. 4ty+3 of the tile and
//     in S = QᵀK (64 × 32):  keys 4tx .. 4tx+3          (4 × 4 scores)
//     in O += P·Vᵀ (64 × d): channels tx, tx+8, … < d    (4 × NC accumulators, NC = d_max / 8)
//   so a query's running max, sum and output row live in the 8 lanes tx = 0..7 of one warp
//   (shuffles xor 1, 2, 4), and the rescale of O by exp(m_old − m_new) needs no shared memory.
//
// `stats` mode (the backward's first pass) writes lse = m + log l and δ = Σ_c gA[c,q]·O[c,q]
// per query instead of O.
#include "common.cuh"

// Key tile j0 .. j0+FA_BK of K and V into a stage: rows c < d of FA_LDK floats. Keys ≥ t are not
// loaded (their scores are masked, their V rows never read). 16-byte cp.async when t % 4 == 0
// (every row then starts 16-byte aligned), else plain loads.
__device__ __forceinline__ void fa_load_kv(float* ks, float* vs, const float* k, const float* v, int d, int t, int j0, int vec) {
  if (vec) {
    for (int e = threadIdx.x; e < d * (FA_BK / 4); e += FA_THREADS) {
      const int c = e / (FA_BK / 4), jj = (e % (FA_BK / 4)) * 4, j = j0 + jj;
      if (j < t) {
        kc_cp_async_cg16(ks + c * FA_LDK + jj, k + (long long)c * t + j);
        kc_cp_async_cg16(vs + c * FA_LDK + jj, v + (long long)c * t + j);
      }
    }
  } else {
    for (int e = threadIdx.x; e < d * FA_BK; e += FA_THREADS) {
      const int c = e / FA_BK, jj = e % FA_BK, j = j0 + jj;
      if (j < t) {
        ks[c * FA_LDK + jj] = k[(long long)c * t + j];
        vs[c * FA_LDK + jj] = v[(long long)c * t + j];
      }
    }
  }
}

// Sum / max over the 8 lanes of one query row (lanes 8g .. 8g+7 of a warp).
__device__ __forceinline__ float fa_row_sum(float v) {
  for (int o = 1; o < 8; o <<= 1) v += __shfl_xor_sync(KC_FULL_MASK, v, o);
  return v;
}
__device__ __forceinline__ float fa_row_max(float v) {
  for (int o = 1; o < 8; o <<= 1) v = fmaxf(v, __shfl_xor_sync(KC_FULL_MASK, v, o));
  return v;
}

// Shared memory (floats): Q [d][FA_BQ], two stages of K [d][FA_LDK] and V [d][FA_LDK], P [FA_BK][FA_LDP].
template <int NC>
__device__ __forceinline__ void fa_forward(const float* qkv, const float* gy, float* out, float* lse, float* delta, int d, int t, int stats) {
  float* qs = dynamic_smem<float>();
  float* kv = qs + d * FA_BQ;
  float* ps = kv + 4 * d * FA_LDK;
  const int bh = blockIdx.y, q0 = blockIdx.x * FA_BQ;
  const float* q = qkv + (long long)bh * 3 * d * t;
  const float* k = q + (long long)d * t;
  const float* v = k + (long long)d * t;
  const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
  const int vec = (t & 3) == 0;
  const int nk = (t + FA_BK - 1) / FA_BK;

  fa_load_kv(kv, kv + d * FA_LDK, k, v, d, t, 0, vec);
  kc_cp_async_commit();
  // Q once, plain loads (they overlap the first stage's copies); rows past t are zero
  for (int e = threadIdx.x; e < d * FA_BQ; e += FA_THREADS) {
    const int c = e / FA_BQ, i = e % FA_BQ;
    qs[e] = q0 + i < t ? q[(long long)c * t + q0 + i] : 0.0f;
  }
  // channels past d read row d−1 (in bounds; those accumulators are never stored)
  int voff[NC];
#pragma unroll
  for (int i = 0; i < NC; ++i) voff[i] = (tx + 8 * i < d ? tx + 8 * i : d - 1) * FA_LDK;

  float o[4][NC], m[4], l[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    m[r] = KC_NEG_INF;
    l[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < NC; ++i) o[r][i] = 0.0f;
  }
  const float s2 = 1.0f / sqrtf((float)d);

  for (int kt = 0; kt < nk; ++kt) {
    if (kt + 1 < nk) {
      float* nx = kv + ((kt + 1) & 1) * 2 * d * FA_LDK;
      fa_load_kv(nx, nx + d * FA_LDK, k, v, d, t, (kt + 1) * FA_BK, vec);
    }
    kc_cp_async_commit();  // possibly empty: "all but the newest group" is stage kt
    kc_cp_async_wait<1>();
    __syncthreads();
    const float* ks = kv + (kt & 1) * 2 * d * FA_LDK;
    const float* vs = ks + d * FA_LDK;
    const int j0 = kt * FA_BK;

    float s[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) s[r][jj] = 0.0f;
    for (int c = 0; c < d; ++c) {
      const float4 qv = kc_ld_float4(qs + c * FA_BQ + 4 * ty);
      const float4 kk = kc_ld_float4(ks + c * FA_LDK + 4 * tx);
      const float qa[4] = {qv.x, qv.y, qv.z, qv.w}, ka[4] = {kk.x, kk.y, kk.z, kk.w};
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) s[r][jj] = fmaf(qa[r], ka[jj], s[r][jj]);
    }
    // online softmax: m_new = max(m, this tile's max); O and l scaled by exp(m − m_new)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      float mx = KC_NEG_INF;
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        s[r][jj] = j0 + 4 * tx + jj < t ? s[r][jj] * s2 : KC_NEG_INF;
        mx = fmaxf(mx, s[r][jj]);
      }
      const float mnew = fmaxf(m[r], fa_row_max(mx));  // finite: every tile holds a key < t
      const float alpha = expf(m[r] - mnew);           // 0 on the first tile (m = −inf)
      m[r] = mnew;
      l[r] *= alpha;
#pragma unroll
      for (int i = 0; i < NC; ++i) o[r][i] *= alpha;
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        s[r][jj] = expf(s[r][jj] - mnew);
        l[r] += s[r][jj];
      }
    }
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) kc_st_float4(ps + (4 * tx + jj) * FA_LDP + 4 * ty, make_float4(s[0][jj], s[1][jj], s[2][jj], s[3][jj]));
    __syncthreads();
    const int kn = t - j0 < FA_BK ? t - j0 : FA_BK;
    for (int jj = 0; jj < kn; ++jj) {
      const float4 pv = kc_ld_float4(ps + jj * FA_LDP + 4 * ty);
#pragma unroll
      for (int i = 0; i < NC; ++i) {
        const float vv = vs[voff[i] + jj];
        o[0][i] = fmaf(pv.x, vv, o[0][i]);
        o[1][i] = fmaf(pv.y, vv, o[1][i]);
        o[2][i] = fmaf(pv.z, vv, o[2][i]);
        o[3][i] = fmaf(pv.w, vv, o[3][i]);
      }
    }
    __syncthreads();  // stage kt and P are refilled next
  }

  const long long base = (long long)bh * d * t;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const float lsum = fa_row_sum(l[r]), inv = 1.0f / lsum;
    const int qi = q0 + 4 * ty + r;
    if (!stats) {
      if (qi < t)
#pragma unroll
        for (int i = 0; i < NC; ++i)
          if (tx + 8 * i < d) out[base + (long long)(tx + 8 * i) * t + qi] = o[r][i] * inv;
    } else {
      float dot = 0.0f;
      if (qi < t)
#pragma unroll
        for (int i = 0; i < NC; ++i)
          if (tx + 8 * i < d) dot = fmaf(gy[base + (long long)(tx + 8 * i) * t + qi], o[r][i] * inv, dot);
      dot = fa_row_sum(dot);
      if (qi < t && tx == 0) {
        lse[(long long)bh * t + qi] = m[r] + logf(lsum);
        delta[(long long)bh * t + qi] = dot;
      }
    }
  }
}

// Launch: grid (⌈T/FA_BQ⌉, B·H), block FA_THREADS, smem attention_flash_smem_bytes (host side);
// the _dN variant takes head dims d ≤ N.
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_f32_d32(const float* qkv, float* out, int d, int t) {
  fa_forward<4>(qkv, qkv, out, out, out, d, t, 0);
}
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_f32_d64(const float* qkv, float* out, int d, int t) {
  fa_forward<8>(qkv, qkv, out, out, out, d, t, 0);
}
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_f32_d128(const float* qkv, float* out, int d, int t) {
  fa_forward<16>(qkv, qkv, out, out, out, d, t, 0);
}
