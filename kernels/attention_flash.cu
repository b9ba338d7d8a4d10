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
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_stats_f32_d32(const float* qkv, const float* gy, float* lse, float* delta, int d, int t) {
  fa_forward<4>(qkv, gy, lse, lse, delta, d, t, 1);
}
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_stats_f32_d64(const float* qkv, const float* gy, float* lse, float* delta, int d, int t) {
  fa_forward<8>(qkv, gy, lse, lse, delta, d, t, 1);
}
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_stats_f32_d128(const float* qkv, const float* gy, float* lse, float* delta, int d, int t) {
  fa_forward<16>(qkv, gy, lse, lse, delta, d, t, 1);
}

// ---- the input gradient (FA2's backward, without atomics) ------------------------------------
// After the stats pass (lse, δ per query), P = exp(s·d^-½ − lse) is recomputed tile by tile:
//   dS = P ∘ (dP − δ)·d^-½ with dP = gAᵀV;  gV = Σ_q P·gA,  gK = Σ_q dS·q  (a block per key tile)
//                                            gQ = Σ_k dS·k               (a block per query tile)
// Each gradient element is summed by one thread in a fixed order: deterministic, no zero-fill.

// s[r][jj] = d^-½ Σ_c a[c][4ty + r]·b[c][4tx + jj] from shared a [d][lda], b [d][FA_LDK].
__device__ __forceinline__ void fa_tile_dot(float s[4][4], const float* a, int lda, const float* b, int d, float s2) {
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) s[r][jj] = 0.0f;
  const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
  for (int c = 0; c < d; ++c) {
    const float4 av = kc_ld_float4(a + c * lda + 4 * ty);
    const float4 bv = kc_ld_float4(b + c * FA_LDK + 4 * tx);
    const float aa[4] = {av.x, av.y, av.z, av.w}, ba[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) s[r][jj] = fmaf(aa[r], ba[jj], s[r][jj]);
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) s[r][jj] *= s2;
}

// P and dS of the tile (queries q0 + 4ty + r, keys j0 + 4tx + jj); 0 outside [0, t)².
__device__ __forceinline__ void fa_p_ds(float p[4][4], float ds[4][4], const float* qs, const float* gs, int lda, const float* ks, const float* vs, const float* lse, const float* delta, int d, int t, int q0, int j0) {
  const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
  const float s2 = 1.0f / sqrtf((float)d);
  float dp[4][4];
  fa_tile_dot(p, qs, lda, ks, d, s2);
  fa_tile_dot(dp, gs, lda, vs, d, 1.0f);
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int qi = q0 + 4 * ty + r;
    const float lq = qi < t ? lse[qi] : 0.0f, dq = qi < t ? delta[qi] : 0.0f;
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) {
      const bool in = qi < t && j0 + 4 * tx + jj < t;
      p[r][jj] = in ? expf(p[r][jj] - lq) : 0.0f;
      ds[r][jj] = in ? p[r][jj] * (dp[r][jj] - dq) * s2 : 0.0f;  // K, V past t may be unloaded (NaN)
    }
  }
}

// Rows c < d of tokens j0 .. j0+w of src (row stride t) into dst [d][ld], zero past t (plain loads).
__device__ __forceinline__ void fa_load_rows(float* dst, int ld, const float* src, int d, int t, int j0, int w) {
  for (int e = threadIdx.x; e < d * w; e += FA_THREADS) {
    const int c = e / w, jj = e % w;
    dst[c * ld + jj] = j0 + jj < t ? src[(long long)c * t + j0 + jj] : 0.0f;
  }
}

// gK, gV of key tile j0 .. j0+FA_BK; query tiles of FA_BQ streamed (single buffer, plain loads).
// Shared: K, V [d][FA_LDK]; Q, gA [d][FA_LDP]; P, dS [FA_BQ][FA_LDK].
template <int NC>
__device__ __forceinline__ void fa_dkdv(const float* qkv, const float* gy, const float* lse, const float* delta, float* gqkv, int d, int t) {
  float* ks = dynamic_smem<float>();
  float* vs = ks + d * FA_LDK;
  float* qs = vs + d * FA_LDK;
  float* gs = qs + d * FA_LDP;
  float* ps = gs + d * FA_LDP;
  float* dss = ps + FA_BQ * FA_LDK;
  const int bh = blockIdx.y, j0 = blockIdx.x * FA_BK;
  const long long hb = (long long)bh * 3 * d * t;
  const float *q = qkv + hb, *k = q + (long long)d * t, *v = k + (long long)d * t, *ga = gy + (long long)bh * d * t;
  lse += (long long)bh * t;
  delta += (long long)bh * t;
  const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
  fa_load_rows(ks, FA_LDK, k, d, t, j0, FA_BK);
  fa_load_rows(vs, FA_LDK, v, d, t, j0, FA_BK);
  int coff[NC];
#pragma unroll
  for (int i = 0; i < NC; ++i) coff[i] = (tx + 8 * i < d ? tx + 8 * i : d - 1) * FA_LDP;
  float gk[2][NC], gv[2][NC];
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int i = 0; i < NC; ++i) gk[h][i] = gv[h][i] = 0.0f;

  for (int q0 = 0; q0 < t; q0 += FA_BQ) {
    fa_load_rows(qs, FA_LDP, q, d, t, q0, FA_BQ);
    fa_load_rows(gs, FA_LDP, ga, d, t, q0, FA_BQ);
    __syncthreads();
    float p[4][4], ds[4][4];
    fa_p_ds(p, ds, qs, gs, FA_LDP, ks, vs, lse, delta, d, t, q0, j0);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      kc_st_float4(ps + (4 * ty + r) * FA_LDK + 4 * tx, make_float4(p[r][0], p[r][1], p[r][2], p[r][3]));
      kc_st_float4(dss + (4 * ty + r) * FA_LDK + 4 * tx, make_float4(ds[r][0], ds[r][1], ds[r][2], ds[r][3]));
    }
    __syncthreads();
    // thread (ty, tx): keys 2ty, 2ty+1 of the tile, channels tx + 8i
    const int qn = t - q0 < FA_BQ ? t - q0 : FA_BQ;
    for (int qi = 0; qi < qn; ++qi) {
      const float p0 = ps[qi * FA_LDK + 2 * ty], p1 = ps[qi * FA_LDK + 2 * ty + 1];
      const float d0 = dss[qi * FA_LDK + 2 * ty], d1 = dss[qi * FA_LDK + 2 * ty + 1];
#pragma unroll
      for (int i = 0; i < NC; ++i) {
        const float gq = gs[coff[i] + qi], qq = qs[coff[i] + qi];
        gv[0][i] = fmaf(p0, gq, gv[0][i]);
        gv[1][i] = fmaf(p1, gq, gv[1][i]);
        gk[0][i] = fmaf(d0, qq, gk[0][i]);
        gk[1][i] = fmaf(d1, qq, gk[1][i]);
      }
    }
    __syncthreads();  // Q, gA, P, dS are refilled next
  }
  float* gkb = gqkv + hb + (long long)d * t;
  float* gvb = gkb + (long long)d * t;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int j = j0 + 2 * ty + h;
    if (j < t)
#pragma unroll
      for (int i = 0; i < NC; ++i)
        if (tx + 8 * i < d) {
          gkb[(long long)(tx + 8 * i) * t + j] = gk[h][i];
          gvb[(long long)(tx + 8 * i) * t + j] = gv[h][i];
        }
  }
}

// gQ of query tile q0 .. q0+FA_BQ; key tiles streamed as in the forward (cp.async, two stages).
// Shared: Q, gA [d][FA_BQ]; two stages of K, V [d][FA_LDK]; dS [FA_BK][FA_LDP].
template <int NC>
__device__ __forceinline__ void fa_dq(const float* qkv, const float* gy, const float* lse, const float* delta, float* gqkv, int d, int t) {
  float* qs = dynamic_smem<float>();
  float* gs = qs + d * FA_BQ;
  float* kv = gs + d * FA_BQ;
  float* dss = kv + 4 * d * FA_LDK;
  const int bh = blockIdx.y, q0 = blockIdx.x * FA_BQ;
  const long long hb = (long long)bh * 3 * d * t;
  const float *q = qkv + hb, *k = q + (long long)d * t, *v = k + (long long)d * t, *ga = gy + (long long)bh * d * t;
  lse += (long long)bh * t;
  delta += (long long)bh * t;
  const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
  const int vec = (t & 3) == 0;
  const int nk = (t + FA_BK - 1) / FA_BK;
  fa_load_kv(kv, kv + d * FA_LDK, k, v, d, t, 0, vec);
  kc_cp_async_commit();
  fa_load_rows(qs, FA_BQ, q, d, t, q0, FA_BQ);
  fa_load_rows(gs, FA_BQ, ga, d, t, q0, FA_BQ);
  int koff[NC];
#pragma unroll
  for (int i = 0; i < NC; ++i) koff[i] = (tx + 8 * i < d ? tx + 8 * i : d - 1) * FA_LDK;
  float gq[4][NC];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int i = 0; i < NC; ++i) gq[r][i] = 0.0f;

  for (int kt = 0; kt < nk; ++kt) {
    if (kt + 1 < nk) {
      float* nx = kv + ((kt + 1) & 1) * 2 * d * FA_LDK;
      fa_load_kv(nx, nx + d * FA_LDK, k, v, d, t, (kt + 1) * FA_BK, vec);
    }
    kc_cp_async_commit();
    kc_cp_async_wait<1>();
    __syncthreads();
    const float* ks = kv + (kt & 1) * 2 * d * FA_LDK;
    const float* vs = ks + d * FA_LDK;
    const int j0 = kt * FA_BK;
    float p[4][4], ds[4][4];
    fa_p_ds(p, ds, qs, gs, FA_BQ, ks, vs, lse, delta, d, t, q0, j0);
#pragma unroll
    for (int jj = 0; jj < 4; ++jj) kc_st_float4(dss + (4 * tx + jj) * FA_LDP + 4 * ty, make_float4(ds[0][jj], ds[1][jj], ds[2][jj], ds[3][jj]));
    __syncthreads();
    const int kn = t - j0 < FA_BK ? t - j0 : FA_BK;
    for (int jj = 0; jj < kn; ++jj) {
      const float4 dv = kc_ld_float4(dss + jj * FA_LDP + 4 * ty);
#pragma unroll
      for (int i = 0; i < NC; ++i) {
        const float kk = ks[koff[i] + jj];
        gq[0][i] = fmaf(dv.x, kk, gq[0][i]);
        gq[1][i] = fmaf(dv.y, kk, gq[1][i]);
        gq[2][i] = fmaf(dv.z, kk, gq[2][i]);
        gq[3][i] = fmaf(dv.w, kk, gq[3][i]);
      }
    }
    __syncthreads();
  }
  float* gqb = gqkv + hb;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int qi = q0 + 4 * ty + r;
    if (qi < t)
#pragma unroll
      for (int i = 0; i < NC; ++i)
        if (tx + 8 * i < d) gqb[(long long)(tx + 8 * i) * t + qi] = gq[r][i];
  }
}

// Launch (host: attention_flash.rs): stats and dq grid (⌈T/FA_BQ⌉, B·H), dkdv grid (⌈T/FA_BK⌉, B·H).
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_dkdv_f32_d32(const float* qkv, const float* gy, const float* lse, const float* delta, float* gqkv, int d, int t) {
  fa_dkdv<4>(qkv, gy, lse, delta, gqkv, d, t);
}
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_dkdv_f32_d64(const float* qkv, const float* gy, const float* lse, const float* delta, float* gqkv, int d, int t) {
  fa_dkdv<8>(qkv, gy, lse, delta, gqkv, d, t);
}
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_dkdv_f32_d128(const float* qkv, const float* gy, const float* lse, const float* delta, float* gqkv, int d, int t) {
  fa_dkdv<16>(qkv, gy, lse, delta, gqkv, d, t);
}
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_dq_f32_d32(const float* qkv, const float* gy, const float* lse, const float* delta, float* gqkv, int d, int t) {
  fa_dq<4>(qkv, gy, lse, delta, gqkv, d, t);
}
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_dq_f32_d64(const float* qkv, const float* gy, const float* lse, const float* delta, float* gqkv, int d, int t) {
  fa_dq<8>(qkv, gy, lse, delta, gqkv, d, t);
}
extern "C" __global__ void __launch_bounds__(FA_THREADS) attention_flash_dq_f32_d128(const float* qkv, const float* gy, const float* lse, const float* delta, float* gqkv, int d, int t) {
  fa_dq<16>(qkv, gy, lse, delta, gqkv, d, t);
}
