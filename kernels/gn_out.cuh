// The group-norm records of a conv's output, made in the conv's epilogue (issue #20 item 3): the
// f32 implicit GEMM (igemm.cuh) that writes y also writes, for the group norm that will read y
// (its γ, β, scale-shift: `q`), one record per (image, channel) in gn_pre.cuh's layout, so the
// consumer (conv2d_norm_f32, permute_cast_norm_tc_*) needs no statistics launch of its own.
//
//   every block:  its tile's 64 columns lie in one image (host: hw % IGEMM_TN == 0, groups = 1);
//                 per output channel (row) the moments of its 64 values less the channel's shift
//                 (its bias: what every block knows of a channel's level), two-pass in registers
//                 (mean, then Σ(u − mean)²) → part[(img·C + ch)·T + tile], T = hw / IGEMM_TN
//   last block of (image, row tile) to finish (counter cnt[img·gridDim.y + by]): merges each of
//                 its rows' T moments (Chan, a fixed tree) → chm[img·C + ch]
//   last row tile of the image (counter cnt[N·gridDim.y + img]): merges each group's channels,
//                 their means moved to the group's first channel's shift x0, and writes the
//                 image's records {x0, mean − x0, 1/σ, a, bb, 0, 0, 0}
// The shifts keep the moments near their data (as group_norm.cu's x0) where a channel's level
// comes from its bias: a mean of 1000 against a spread of 1 would otherwise cost ~1e-4 of the
// variance in the merges (means rounded at 1000). A level carried by the residual is not shifted.
// Both counters are put back to 0 by the block that found itself last, so one zeroed buffer
// serves every launch on the stream. Reads of what other blocks wrote in this launch go through
// L2 (__ldcg): an SM's L1 is not coherent with the other SMs' stores.
#pragma once
#include "common.cuh"
#include "gn_pre.cuh"

struct GnOut {
  float* part;  // [N·C·T][2] tile moments
  float* chm;   // [N·C][2] channel moments (count hw)
  int* cnt;     // [N·gridDim.y + N] zeroed counters
  const float* gamma;
  const float* beta;
  const float* scale;  // read when q.has_ss
  const float* shift;
  float* coef;  // [N·C][GN_PRE_FLOATS] records
  GroupNormGeom q;  // the consuming norm, over y as [n, c = o, s = ho·wo]
};

// The records from the tiles' moments, for any tile: each block has filed its TM rows' moments
// of its tile_n columns at part[(img·C + ch)·T + tile]; the last block of (image, row tile) merges
// each row's T moments, the last row tile of the image the groups (the scheme at the top).
template <int TM, int THREADS>
__device__ __forceinline__ void gn_out_merge(int tid, int img, int T, float tile_n, int M, int m0, const float* sft, const GnOut& o) {
  static_assert(TM % (THREADS / 4) == 0, "whole passes of 4 threads a row");
  const int C = o.q.c, hw = o.q.s;
  __shared__ int last;
  __threadfence();  // this thread's moments are visible before the count says they are there
  __syncthreads();
  if (tid == 0) last = atomicAdd(&o.cnt[img * gridDim.y + blockIdx.y], 1) == T - 1;
  __syncthreads();
  if (!last) return;  // uniform per block
  __threadfence();
  // 4 threads per row, each merging tiles sub, sub + 4, …; then the 4 in a fixed tree
  for (int r = tid >> 2; r < TM; r += THREADS / 4) {  // uniform per warp
    const int sub = tid & 3, m = m0 + r;
    float n = 0.0f, mean = 0.0f, m2 = 0.0f;
    if (m < M) {
      const float* p = o.part + 2 * ((long long)img * C + m) * T;
      for (int t = sub; t < T; t += 4) gn_merge(n, mean, m2, tile_n, __ldcg(&p[2 * t]), __ldcg(&p[2 * t + 1]));
    }
    for (int off = 2; off > 0; off >>= 1) {
      const float nb = __shfl_down_sync(KC_FULL_MASK, n, off), mb = __shfl_down_sync(KC_FULL_MASK, mean, off);
      const float m2b = __shfl_down_sync(KC_FULL_MASK, m2, off);
      if (sub < off) gn_merge(n, mean, m2, nb, mb, m2b);
    }
    if (sub == 0 && m < M) {
      o.chm[2 * ((long long)img * C + m)] = mean;
      o.chm[2 * ((long long)img * C + m) + 1] = m2;
    }
  }
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    atomicExch(&o.cnt[img * gridDim.y + blockIdx.y], 0);
    last = atomicAdd(&o.cnt[o.q.n * gridDim.y + img], 1) == (int)gridDim.y - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // the image's records: one thread per group merges its channels in order, then writes them
  const int cpg = C / o.q.groups;
  const float len = (float)cpg * (float)hw;
  for (int g = tid; g < o.q.groups; g += THREADS) {
    float gn = 0.0f, gm = 0.0f, gm2 = 0.0f;
    const float* c = o.chm + 2 * ((long long)img * C + g * cpg);
    const float x0 = sft ? sft[g * cpg] : 0.0f;
    for (int j = 0; j < cpg; ++j) {
      const float dk = sft ? sft[g * cpg + j] - x0 : 0.0f;  // this channel's shift from x0
      gn_merge(gn, gm, gm2, (float)hw, dk + __ldcg(&c[2 * j]), __ldcg(&c[2 * j + 1]));
    }
    const float rstd = rsqrtf(gm2 / len + o.q.eps);
    for (int j = 0; j < cpg; ++j) {
      const int ch = g * cpg + j;
      float a, bb;
      gn_coeffs(o.gamma, o.beta, o.scale, o.shift, o.q, img, ch, &a, &bb);
      gn_put_record(o.coef + ((long long)img * C + ch) * GN_PRE_FLOATS, x0, gm, rstd, a, bb);
    }
  }
  if (tid == 0) atomicExch(&o.cnt[o.q.n * gridDim.y + img], 0);
}

// v[i][j] = y[m0 + ty + 16i][n0 + tx + 16j] as stored (rows ≥ M are ignored); sft[ch] the
// channel shifts (null: 0). Every thread of the block calls it.
__device__ __forceinline__ void igemm_gn_out(const float (&v)[4][4], int M, const float* sft, const GnOut& o) {
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * IGEMM_THREADS + tx;
  const int m0 = blockIdx.y * IGEMM_TM, n0 = blockIdx.x * IGEMM_TN;
  const int C = o.q.c, hw = o.q.s, T = hw / IGEMM_TN;
  const int img = n0 / hw, tile = (n0 - img * hw) / IGEMM_TN;
  // a row's 64 values are held by the 16 lanes tx = 0..15 of one half-warp (4 each)
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty + 16 * i;
    const float k = sft && m < M ? sft[m] : 0.0f;
    float u[4];
    for (int j = 0; j < 4; ++j) u[j] = v[i][j] - k;
    float s = (u[0] + u[1]) + (u[2] + u[3]);
    for (int off = 8; off > 0; off >>= 1) s += __shfl_xor_sync(KC_FULL_MASK, s, off);
    const float mean = s * (1.0f / IGEMM_TN);
    float d = 0.0f;
    for (int j = 0; j < 4; ++j) d += (u[j] - mean) * (u[j] - mean);
    for (int off = 8; off > 0; off >>= 1) d += __shfl_xor_sync(KC_FULL_MASK, d, off);
    if (tx == 0 && m < M) {
      float* p = o.part + 2 * (((long long)img * C + m) * T + tile);
      p[0] = mean;
      p[1] = d;
    }
  }
  gn_out_merge<IGEMM_TM, IGEMM_THREADS * IGEMM_THREADS>(tid, img, T, (float)IGEMM_TN, M, m0, sft, o);
}
