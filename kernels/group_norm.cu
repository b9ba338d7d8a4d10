// GroupNorm over [N, C, S] with affine γ, β, optional fused scale-shift GN(x)·(1+scale)+shift
// (scale/shift [N, C]) and optional fused SiLU; its input gradient and its parameter gradients.
// kernels/README.md, "Group norm": a group whose values and channel coefficients fit in shared
// memory is normalised by one block in one launch (x read once); larger groups are cut into
// chunks, one block per chunk: a statistics pass writes each chunk's moments, the next pass merges
// its group's (once per block) and normalises. CPU twin: src/backend/cpu/group_norm.rs.
#include "common.cuh"
#include "gn_pre.cuh"
#include "index_walk.cuh"

// ---- moments ------------------------------------------------------------------------------------
// Moments (count n, mean m, M2 = Σ(v − m)²) are of d = x − x0, x0 the group's first value: x − x0
// is exact when the two are within a factor 2 (a large mean against a small spread), so the mean
// keeps its precision there, where a mean of x itself would carry half an ulp of the mean. Each
// thread shifts once more by its own first d, and the threads' and blocks' moments are merged by
// Chan's pairwise formula, so no sum of squares is ever taken far from its data's mean.

// Lane 0 ends with the merge of the warp's 32 moments (a fixed tree: the same on every run).
__device__ __forceinline__ void gn_warp_merge(float& n, float& m, float& m2) {
  for (int o = 16; o > 0; o >>= 1) {
    const float nb = __shfl_down_sync(KC_FULL_MASK, n, o), mb = __shfl_down_sync(KC_FULL_MASK, m, o);
    const float m2b = __shfl_down_sync(KC_FULL_MASK, m2, o);
    gn_merge(n, m, m2, nb, mb, m2b);
  }
}

// x0 = xg[0], loaded by one lane per warp (every lane of the warp must call it).
__device__ __forceinline__ float gn_first(const float* xg) {
  const float v = (threadIdx.x & 31) == 0 ? xg[0] : 0.0f;
  return __shfl_sync(KC_FULL_MASK, v, 0);  // x0
}

// Per thread: sums of t = d − d0 over its values, d0 the first d it sees (no extra load).
struct GnAcc {
  float n, d0, t1, t2;
};

__device__ __forceinline__ void gn_acc(GnAcc& a, float d) {
  if (a.n == 0.0f) a.d0 = d;  // the thread's own shift
  const float t = d - a.d0;
  a.n += 1.0f;
  a.t1 += t;
  a.t2 += t * t;
}

// Moments of d over [xc, xc + cnt) (float4 loads where xc is 16-byte aligned, then the cnt mod 4
// tail), merged over the block: warp 0 lane 0 ends with the block's (n, m, m2). When `keep` is
// not null every value is also stored there (shared memory). Contains a __syncthreads.
__device__ __forceinline__ void gn_block_moments(const float* __restrict__ xc, int cnt, float x0, float* keep, float (*sh)[32], float& n,
                                                 float& m, float& m2) {
  GnAcc a = {0.0f, 0.0f, 0.0f, 0.0f};
  int i0 = 0;  // first value of the scalar loop
  if (kc_aligned16(xc)) {
    const int n4 = cnt >> 2;
    for (int i = threadIdx.x; i < n4; i += blockDim.x) {
      const float4 v = kc_ld_float4(xc + 4 * i);
      if (keep) {
        keep[4 * i] = v.x;
        keep[4 * i + 1] = v.y;
        keep[4 * i + 2] = v.z;
        keep[4 * i + 3] = v.w;
      }
      gn_acc(a, v.x - x0);
      gn_acc(a, v.y - x0);
      gn_acc(a, v.z - x0);
      gn_acc(a, v.w - x0);
    }
    i0 = 4 * n4;  // the tail: cnt mod 4 values
  }
  for (int i = i0 + threadIdx.x; i < cnt; i += blockDim.x) {
    const float v = xc[i];
    if (keep) keep[i] = v;
    gn_acc(a, v - x0);
  }
  n = a.n;
  m = 0.0f;
  m2 = 0.0f;
  if (n > 0.0f) {
    const float mt = a.t1 / n;
    m = a.d0 + mt;
    m2 = fmaxf(a.t2 - a.t1 * mt, 0.0f);
  }
  gn_warp_merge(n, m, m2);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sh[0][warp] = n;
    sh[1][warp] = m;
    sh[2][warp] = m2;
  }
  __syncthreads();
  if (warp == 0) {
    const bool has = lane < (int)(blockDim.x >> 5);
    n = has ? sh[0][lane] : 0.0f;
    m = has ? sh[1][lane] : 0.0f;
    m2 = has ? sh[2][lane] : 0.0f;
    gn_warp_merge(n, m, m2);
  }
}

// Where block `blockIdx.x` works: (image, group) `ng`, values [start, start + cnt) of the group.
struct GnChunk {
  int ng, b, g, start, cnt, len, cpg;
};

__device__ __forceinline__ GnChunk gn_chunk(const GroupNormGeom& p, const GroupNormSplit& q) {
  GnChunk k;
  k.cpg = p.c / p.groups;
  k.len = k.cpg * p.s;
  k.ng = blockIdx.x / q.splits;
  k.b = k.ng / p.groups;
  k.g = k.ng - k.b * p.groups;
  k.start = (blockIdx.x - k.ng * q.splits) * q.chunk;
  k.cnt = min(q.chunk, k.len - k.start);
  return k;
}

// The whole group `blockIdx.x` in one block.
__device__ __forceinline__ GnChunk gn_whole_group(const GroupNormGeom& p) {
  GnChunk k;
  k.cpg = p.c / p.groups;
  k.len = k.cpg * p.s;
  k.ng = blockIdx.x;
  k.b = k.ng / p.groups;
  k.g = k.ng - k.b * p.groups;
  k.start = 0;
  k.cnt = k.len;
  return k;
}

// ---- one block per group --------------------------------------------------------------------------
// Groups whose len values and cpg coefficient pairs fit in the launch's dynamic shared memory
// (norm_split::fused): x is read once into shared memory with its moments, the channels' (a, bb)
// once each, then y is written from shared memory. No second launch, no global merge.
extern "C" __global__ void group_norm_fused_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                                const float* __restrict__ scale, const float* __restrict__ shift, float* __restrict__ y,
                                                GroupNormGeom p) {
  __shared__ float sh[3][32];
  __shared__ float st[2];
  const GnChunk k = gn_whole_group(p);
  const int cpg = k.cpg;
  float* v = dynamic_smem<float>();      // the group's values
  float* coef = v + ((k.len + 3) & ~3);  // then (a, bb) per channel of the group
  const long long base = (long long)k.ng * k.len;
  const float* xg = x + base;
  const float x0 = gn_first(xg);
  for (int j = threadIdx.x; j < cpg; j += blockDim.x) gn_coeffs(gamma, beta, scale, shift, p, k.b, k.g * cpg + j, &coef[2 * j], &coef[2 * j + 1]);
  float n, m, m2;
  gn_block_moments(xg, k.len, x0, v, sh, n, m, m2);  // its barrier orders every store to v, coef
  const float eps = p.eps;
  if (threadIdx.x == 0) {
    st[0] = m;
    st[1] = rsqrtf(m2 / (float)k.len + eps);
  }
  __syncthreads();
  const float mean_d = st[0], rstd = st[1];
  float* yg = y + base;
  if (p.s % 4 == 0 && kc_aligned16(yg)) {  // a float4 never spans two channels
    KcDivWalk w = kc_div_walk(4 * threadIdx.x, 4 * blockDim.x, p.s, KC_NO_WRAP);
    for (int i = 4 * threadIdx.x; i < k.len; i += 4 * blockDim.x, kc_div_walk_next(w)) {
      const float a = coef[2 * w.q], bb = coef[2 * w.q + 1];
      float4 o;
      o.x = gn_out(v[i], x0, mean_d, rstd, a, bb, p.silu);
      o.y = gn_out(v[i + 1], x0, mean_d, rstd, a, bb, p.silu);
      o.z = gn_out(v[i + 2], x0, mean_d, rstd, a, bb, p.silu);
      o.w = gn_out(v[i + 3], x0, mean_d, rstd, a, bb, p.silu);
      kc_st_float4(yg + i, o);
    }
  } else {
    KcDivWalk w = kc_div_walk(threadIdx.x, blockDim.x, p.s, KC_NO_WRAP);
    for (int i = threadIdx.x; i < k.len; i += blockDim.x, kc_div_walk_next(w)) {
      yg[i] = gn_out(v[i], x0, mean_d, rstd, coef[2 * w.q], coef[2 * w.q + 1], p.silu);
    }
  }
}

// ---- split launches -------------------------------------------------------------------------------
// part[2·i], part[2·i + 1] = mean and M2 of d over block i's chunk.
extern "C" __global__ void group_norm_stats_f32(const float* __restrict__ x, float* __restrict__ part, GroupNormGeom p, GroupNormSplit q) {
  __shared__ float sh[3][32];
  const GnChunk k = gn_chunk(p, q);
  const float* xg = x + (long long)k.ng * k.len;
  const float x0 = gn_first(xg);
  float n, m, m2;
  gn_block_moments(xg + k.start, k.cnt, x0, nullptr, sh, n, m, m2);
  if (threadIdx.x == 0) {
    part[2 * blockIdx.x] = m;
    part[2 * blockIdx.x + 1] = m2;
  }
}

// What every thread of a split block needs, found once per block by warp 0 and shared: the
// group's x0, mean of d and 1/σ (warp 0 merges the group's `splits` chunk moments: lane l chunks
// l, l + 32, …, then the tree — the same numbers in every block of the group), and (a, bb) of the
// channel `ch` of the block's first value.
struct GnBlock {
  float x0, mean_d, rstd, a, bb;
  int ch;
};

__device__ __forceinline__ GnBlock gn_block_setup(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                                  const float* __restrict__ scale, const float* __restrict__ shift,
                                                  const float* __restrict__ part, const GroupNormGeom& p, const GroupNormSplit& q, const GnChunk& k,
                                                  float* sh) {
  GnBlock r;
  r.ch = k.start / p.s;  // once per thread, not per value
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const float eps = p.eps;
    const float* pg = part + 2LL * k.ng * q.splits;
    float n = 0.0f, m = 0.0f, m2 = 0.0f;
    for (int j = lane; j < q.splits; j += 32) gn_merge(n, m, m2, (float)min(q.chunk, k.len - j * q.chunk), pg[2 * j], pg[2 * j + 1]);
    gn_warp_merge(n, m, m2);
    const float x0 = gn_first(x + (long long)k.ng * k.len);
    if (lane == 0) {
      sh[0] = x0;
      sh[1] = m;
      sh[2] = rsqrtf(m2 / (float)k.len + eps);
      gn_coeffs(gamma, beta, scale, shift, p, k.b, k.g * k.cpg + r.ch, &sh[3], &sh[4]);
    }
  }
  __syncthreads();
  r.x0 = sh[0];
  r.mean_d = sh[1];
  r.rstd = sh[2];
  r.a = sh[3];
  r.bb = sh[4];
  return r;
}

// Walks channel-by-channel coefficients along a thread's values: (a, bb) of the channel of the
// current value, starting from the block's first channel (GnBlock) and reloaded only when the
// channel changes — never, for a chunk inside one channel (every split shape of the UNet).
struct GnCoefWalk {
  KcDivWalk w;
  int cur;
  float a, bb;
};

__device__ __forceinline__ GnCoefWalk gn_coef_walk(const GnChunk& k, const GnBlock& s0, int e0, int step, int s) {
  GnCoefWalk c;
  c.w = kc_div_walk((long long)k.start + e0, step, s, KC_NO_WRAP);
  c.cur = s0.ch;
  c.a = s0.a;
  c.bb = s0.bb;
  return c;
}

__device__ __forceinline__ void gn_coef_update(GnCoefWalk& c, const float* gamma, const float* beta, const float* scale, const float* shift,
                                               const GroupNormGeom& p, const GnChunk& k) {
  if (c.w.q != c.cur) {
    c.cur = c.w.q;
    gn_coeffs(gamma, beta, scale, shift, p, k.b, k.g * k.cpg + c.cur, &c.a, &c.bb);
  }
}

// y = GN(x)·a + bb (+ SiLU), 16-byte accesses where the spatial size is a multiple of 4 (a float4
// never spans two channels) and the chunk is aligned.
extern "C" __global__ void group_norm_apply_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                                const float* __restrict__ scale, const float* __restrict__ shift, const float* __restrict__ part,
                                                float* __restrict__ y, GroupNormGeom p, GroupNormSplit q) {
  __shared__ float sh[8];
  const GnChunk k = gn_chunk(p, q);
  const GnBlock s0 = gn_block_setup(x, gamma, beta, scale, shift, part, p, q, k, sh);
  const long long base = (long long)k.ng * k.len;
  const float* xc = x + base + k.start;
  float* yc = y + base + k.start;
  if (p.s % 4 == 0 && kc_aligned16(xc) && kc_aligned16(yc)) {
    GnCoefWalk c = gn_coef_walk(k, s0, 4 * threadIdx.x, 4 * blockDim.x, p.s);
    for (int i = 4 * threadIdx.x; i < k.cnt; i += 4 * blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      float4 v = kc_ld_float4(xc + i);
      v.x = gn_out(v.x, s0.x0, s0.mean_d, s0.rstd, c.a, c.bb, p.silu);
      v.y = gn_out(v.y, s0.x0, s0.mean_d, s0.rstd, c.a, c.bb, p.silu);
      v.z = gn_out(v.z, s0.x0, s0.mean_d, s0.rstd, c.a, c.bb, p.silu);
      v.w = gn_out(v.w, s0.x0, s0.mean_d, s0.rstd, c.a, c.bb, p.silu);
      kc_st_float4(yc + i, v);
    }
  } else {
    GnCoefWalk c = gn_coef_walk(k, s0, threadIdx.x, blockDim.x, p.s);
    for (int i = threadIdx.x; i < k.cnt; i += blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      yc[i] = gn_out(xc[i], s0.x0, s0.mean_d, s0.rstd, c.a, c.bb, p.silu);
    }
  }
}

// ---- records for a consuming conv (CudaBackend::group_norm_conv2d) ------------------------------
// One launch over the split's chunks (one chunk per group when q.splits = 1): each block's moments
// go to `part` as group_norm_stats_f32 writes them; the last block of its group to finish (counted
// in cnt[group], which it puts back to 0 for the next launch) merges the group's moments as
// gn_block_setup does and writes each channel's record of gn_pre.cuh to `coef`. The conv then
// normalises its operand as it loads it: no normalised tensor is written or read back.
extern "C" __global__ void group_norm_coefs_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                                const float* __restrict__ scale, const float* __restrict__ shift, float* __restrict__ part,
                                                int* __restrict__ cnt, float* __restrict__ coef, GroupNormGeom p, GroupNormSplit q) {
  __shared__ float sh[3][32];
  __shared__ float st[2];
  __shared__ int last;
  const GnChunk k = gn_chunk(p, q);
  const float* xg = x + (long long)k.ng * k.len;
  const float x0 = gn_first(xg);
  const float eps = p.eps;
  float n, m, m2;
  gn_block_moments(xg + k.start, k.cnt, x0, nullptr, sh, n, m, m2);
  if (threadIdx.x == 0) {
    if (q.splits == 1) {  // the block's moments are the group's (as group_norm_fused_f32)
      st[0] = m;
      st[1] = rsqrtf(m2 / (float)k.len + eps);
      last = 1;
    } else {
      part[2 * blockIdx.x] = m;
      part[2 * blockIdx.x + 1] = m2;
      __threadfence();  // the moments are visible before the count says they are there
      last = atomicAdd(&cnt[k.ng], 1) == q.splits - 1;
    }
  }
  __syncthreads();
  if (!last) return;  // uniform per block
  if (q.splits > 1) {
    __threadfence();
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      const float* pg = part + 2LL * k.ng * q.splits;
      float gn = 0.0f, gm = 0.0f, gm2 = 0.0f;
      // through L2 (__ldcg): other blocks wrote these during this launch, and this SM's L1 may
      // hold the sector from a neighbouring group's merge, read before they were written
      for (int j = lane; j < q.splits; j += 32) gn_merge(gn, gm, gm2, (float)min(q.chunk, k.len - j * q.chunk), __ldcg(&pg[2 * j]), __ldcg(&pg[2 * j + 1]));
      gn_warp_merge(gn, gm, gm2);
      if (lane == 0) {
        st[0] = gm;
        st[1] = rsqrtf(gm2 / (float)k.len + eps);
        atomicExch(&cnt[k.ng], 0);
      }
    }
    __syncthreads();
  }
  for (int j = threadIdx.x; j < k.cpg; j += blockDim.x) {
    const int ch = k.g * k.cpg + j;
    float a, bb;
    gn_coeffs(gamma, beta, scale, shift, p, k.b, ch, &a, &bb);
    gn_put_record(coef + ((long long)k.b * p.c + ch) * GN_PRE_FLOATS, x0, st[0], st[1], a, bb);
  }
}

// torch.cat([a, b], 1) of a [N, ca, S] and b [N, cb, S] into y [N, C = ca + cb, S] that also
// writes y's records for the group norm q that reads it (the UNet decoder's cat([h, skip]) →
// in_norm; CudaBackend::concat_channels_gn), so that norm's conv needs no statistics launch.
// One block per (image, channel) plane: it copies the plane (gn_block_moments storing every value
// into y) and files the plane's moments of y − x0 (x0 its first value) in chm[plane] = {x0, mean,
// M2}; the last plane of an image to finish (counter cnt[img], put back to 0) merges each group's
// planes, their means moved to the group's first plane's x0, and writes the image's records
// {x0, mean − x0, 1/σ, a, bb, 0, 0, 0} (gn_pre.cuh).
extern "C" __global__ void concat2_gn_f32(const float* __restrict__ a, int ca, const float* __restrict__ b, int cb, float* __restrict__ y,
                                          float* __restrict__ chm, int* __restrict__ cnt, const float* __restrict__ gamma,
                                          const float* __restrict__ beta, const float* __restrict__ scale, const float* __restrict__ shift,
                                          float* __restrict__ coef, GroupNormGeom q) {
  __shared__ float sh[3][32];
  __shared__ int last;
  const int C = ca + cb, s = q.s, img = blockIdx.x / C, ch = blockIdx.x - img * C;
  const float* src = ch < ca ? a + ((long long)img * ca + ch) * s : b + ((long long)img * cb + (ch - ca)) * s;
  float* dst = y + (long long)blockIdx.x * s;
  const float x0 = gn_first(src);
  float n, m, m2;
  gn_block_moments(src, s, x0, dst, sh, n, m, m2);
  if (threadIdx.x == 0) {
    chm[3 * blockIdx.x] = x0;
    chm[3 * blockIdx.x + 1] = m;
    chm[3 * blockIdx.x + 2] = m2;
  }
  __threadfence();  // the plane's copy and moments are visible before the count says they are there
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&cnt[img], 1) == C - 1;
  __syncthreads();
  if (!last) return;  // uniform per block
  __threadfence();
  const int cpg = C / q.groups;
  const float len = (float)cpg * (float)s;
  for (int g = threadIdx.x; g < q.groups; g += blockDim.x) {
    const float* c = chm + 3 * ((long long)img * C + g * cpg);
    const float g0 = __ldcg(&c[0]);
    float gn = 0.0f, gm = 0.0f, gm2 = 0.0f;
    for (int j = 0; j < cpg; ++j) gn_merge(gn, gm, gm2, (float)s, (__ldcg(&c[3 * j]) - g0) + __ldcg(&c[3 * j + 1]), __ldcg(&c[3 * j + 2]));
    const float rstd = rsqrtf(gm2 / len + q.eps);
    for (int j = 0; j < cpg; ++j) {
      const int k = g * cpg + j;
      float ga, bb;
      gn_coeffs(gamma, beta, scale, shift, q, img, k, &ga, &bb);
      gn_put_record(coef + ((long long)img * C + k) * GN_PRE_FLOATS, g0, gm, rstd, ga, bb);
    }
  }
  if (threadIdx.x == 0) atomicExch(&cnt[img], 0);
}

// ∂L/∂pre at one element: the incoming gradient, through SiLU when fused.
__device__ __forceinline__ float gn_grad_pre(float gy, float xh, float a, float bb, int silu) {
  if (!silu) return gy;
  float pre = xh * a + bb, sg = 1.0f / (1.0f + expf(-pre));
  return gy * sg * (1.0f + pre * (1.0f - sg));
}

// The input gradient gx = rstd·(gx̂ − mean(gx̂) − x̂·mean(gx̂·x̂)), gx̂ = a·∂L/∂pre, in two split
// passes after group_norm_stats_f32: sums[2·i], sums[2·i + 1] = Σ gx̂, Σ gx̂·x̂ over block i's
// chunk; then each block adds its group's and writes gx. (With SiLU, ∂L/∂pre needs x̂, so the
// statistics cannot share a pass with these sums: x is read three times, gy twice.)
__device__ __forceinline__ void gn_grad_acc(float gy, float v, const GnBlock& s0, const GnCoefWalk& c, int silu, float& s1, float& s2) {
  const float xh = ((v - s0.x0) - s0.mean_d) * s0.rstd;
  const float gxh = gn_grad_pre(gy, xh, c.a, c.bb, silu) * c.a;
  s1 += gxh;
  s2 += gxh * xh;
}

extern "C" __global__ void group_norm_grad_sums_f32(const float* __restrict__ gy, const float* __restrict__ x, const float* __restrict__ gamma,
                                                    const float* __restrict__ beta, const float* __restrict__ scale, const float* __restrict__ shift,
                                                    const float* __restrict__ part, float* __restrict__ sums, GroupNormGeom p, GroupNormSplit q) {
  __shared__ float scratch[32];
  __shared__ float sh[8];
  const GnChunk k = gn_chunk(p, q);
  const GnBlock s0 = gn_block_setup(x, gamma, beta, scale, shift, part, p, q, k, sh);
  const long long base = (long long)k.ng * k.len;
  const float *xc = x + base + k.start, *gc = gy + base + k.start;
  float s1 = 0.0f, s2 = 0.0f;
  if (p.s % 4 == 0 && kc_aligned16(xc) && kc_aligned16(gc)) {
    GnCoefWalk c = gn_coef_walk(k, s0, 4 * threadIdx.x, 4 * blockDim.x, p.s);
    for (int i = 4 * threadIdx.x; i < k.cnt; i += 4 * blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      const float4 v = kc_ld_float4(xc + i), g = kc_ld_float4(gc + i);
      gn_grad_acc(g.x, v.x, s0, c, p.silu, s1, s2);
      gn_grad_acc(g.y, v.y, s0, c, p.silu, s1, s2);
      gn_grad_acc(g.z, v.z, s0, c, p.silu, s1, s2);
      gn_grad_acc(g.w, v.w, s0, c, p.silu, s1, s2);
    }
  } else {
    GnCoefWalk c = gn_coef_walk(k, s0, threadIdx.x, blockDim.x, p.s);
    for (int i = threadIdx.x; i < k.cnt; i += blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      gn_grad_acc(gc[i], xc[i], s0, c, p.silu, s1, s2);
    }
  }
  s1 = block_sum(s1, scratch);
  s2 = block_sum(s2, scratch);
  if (threadIdx.x == 0) {
    sums[2 * blockIdx.x] = s1;
    sums[2 * blockIdx.x + 1] = s2;
  }
}

__device__ __forceinline__ float gn_gx(float gy, float v, const GnBlock& s0, const GnCoefWalk& c, int silu, float m1, float m2) {
  const float xh = ((v - s0.x0) - s0.mean_d) * s0.rstd;
  return s0.rstd * (gn_grad_pre(gy, xh, c.a, c.bb, silu) * c.a - m1 - xh * m2);
}

extern "C" __global__ void group_norm_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ x, const float* __restrict__ gamma,
                                                     const float* __restrict__ beta, const float* __restrict__ scale, const float* __restrict__ shift,
                                                     const float* __restrict__ part, const float* __restrict__ sums, float* __restrict__ gx,
                                                     GroupNormGeom p, GroupNormSplit q) {
  __shared__ float sh[8];
  __shared__ float ms[2];
  const GnChunk k = gn_chunk(p, q);
  // the group's two sums, once per block: warp 0 lane-strided, then the xor tree
  if (threadIdx.x < 32) {
    const float* sg = sums + 2LL * k.ng * q.splits;
    float t1 = 0.0f, t2 = 0.0f;
    for (int j = threadIdx.x; j < q.splits; j += 32) {
      t1 += sg[2 * j];
      t2 += sg[2 * j + 1];
    }
    t1 = warp_sum(t1);
    t2 = warp_sum(t2);
    if (threadIdx.x == 0) {
      ms[0] = t1 / (float)k.len;
      ms[1] = t2 / (float)k.len;
    }
  }
  const GnBlock s0 = gn_block_setup(x, gamma, beta, scale, shift, part, p, q, k, sh);  // its barrier publishes ms too
  const float m1 = ms[0], m2 = ms[1];
  const long long base = (long long)k.ng * k.len;
  const float *xc = x + base + k.start, *gc = gy + base + k.start;
  float* oc = gx + base + k.start;
  if (p.s % 4 == 0 && kc_aligned16(xc) && kc_aligned16(gc) && kc_aligned16(oc)) {
    GnCoefWalk c = gn_coef_walk(k, s0, 4 * threadIdx.x, 4 * blockDim.x, p.s);
    for (int i = 4 * threadIdx.x; i < k.cnt; i += 4 * blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      const float4 v = kc_ld_float4(xc + i), g = kc_ld_float4(gc + i);
      float4 o;
      o.x = gn_gx(g.x, v.x, s0, c, p.silu, m1, m2);
      o.y = gn_gx(g.y, v.y, s0, c, p.silu, m1, m2);
      o.z = gn_gx(g.z, v.z, s0, c, p.silu, m1, m2);
      o.w = gn_gx(g.w, v.w, s0, c, p.silu, m1, m2);
      kc_st_float4(oc + i, o);
    }
  } else {
    GnCoefWalk c = gn_coef_walk(k, s0, threadIdx.x, blockDim.x, p.s);
    for (int i = threadIdx.x; i < k.cnt; i += blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      oc[i] = gn_gx(gc[i], xc[i], s0, c, p.silu, m1, m2);
    }
  }
}

// The input gradient of a group that fits in shared memory with its gradient (norm_split::
// fused_x_backward): x and gy read once into shared memory, the moments, the two sums, then gx.
extern "C" __global__ void group_norm_x_backward_fused_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                                           const float* __restrict__ gamma, const float* __restrict__ beta,
                                                           const float* __restrict__ scale, const float* __restrict__ shift, float* __restrict__ gx,
                                                           GroupNormGeom p) {
  __shared__ float sh[3][32];
  __shared__ float scratch[32];
  __shared__ float st[2];
  const GnChunk k = gn_whole_group(p);
  const int cpg = k.cpg, padded = (k.len + 3) & ~3;
  float* xv = dynamic_smem<float>();  // the group's x, then its gy, then (a, bb) per channel
  float* gv = xv + padded;
  float* coef = gv + padded;
  const long long base = (long long)k.ng * k.len;
  const float *xg = x + base, *gg = gy + base;
  const float x0 = gn_first(xg);
  for (int j = threadIdx.x; j < cpg; j += blockDim.x) gn_coeffs(gamma, beta, scale, shift, p, k.b, k.g * cpg + j, &coef[2 * j], &coef[2 * j + 1]);
  int i0 = 0;
  if (kc_aligned16(gg)) {
    for (int i = threadIdx.x; i < k.len >> 2; i += blockDim.x) {
      const float4 g = kc_ld_float4(gg + 4 * i);
      gv[4 * i] = g.x;
      gv[4 * i + 1] = g.y;
      gv[4 * i + 2] = g.z;
      gv[4 * i + 3] = g.w;
    }
    i0 = k.len & ~3;
  }
  for (int i = i0 + threadIdx.x; i < k.len; i += blockDim.x) gv[i] = gg[i];
  float n, m, m2;
  gn_block_moments(xg, k.len, x0, xv, sh, n, m, m2);  // its barrier orders every store to xv, gv, coef
  const float eps = p.eps;
  if (threadIdx.x == 0) {
    st[0] = m;
    st[1] = rsqrtf(m2 / (float)k.len + eps);
  }
  __syncthreads();
  const GnBlock s0 = {x0, st[0], st[1], 0.0f, 0.0f, 0};  // (a, bb) per value below
  // Σ gx̂, Σ gx̂·x̂ over the group, then gx; (a, bb) from shared memory by a division-free walk
  GnCoefWalk c = {kc_div_walk(0, 1, 1, KC_NO_WRAP), 0, 0.0f, 0.0f};
  float s1 = 0.0f, s2 = 0.0f;
  c.w = kc_div_walk(threadIdx.x, blockDim.x, p.s, KC_NO_WRAP);
  for (int i = threadIdx.x; i < k.len; i += blockDim.x, kc_div_walk_next(c.w)) {
    c.a = coef[2 * c.w.q];
    c.bb = coef[2 * c.w.q + 1];
    gn_grad_acc(gv[i], xv[i], s0, c, p.silu, s1, s2);
  }
  s1 = block_sum(s1, scratch);
  s2 = block_sum(s2, scratch);
  const float m1 = s1 / (float)k.len, mm2 = s2 / (float)k.len;
  float* og = gx + base;
  c.w = kc_div_walk(threadIdx.x, blockDim.x, p.s, KC_NO_WRAP);
  for (int i = threadIdx.x; i < k.len; i += blockDim.x, kc_div_walk_next(c.w)) {
    c.a = coef[2 * c.w.q];
    c.bb = coef[2 * c.w.q + 1];
    og[i] = gn_gx(gv[i], xv[i], s0, c, p.silu, m1, mm2);
  }
}

// Parameter gradients, one block per (image, channel), after group_norm_stats_f32 (the group's
// moments, merged per block as above): the channel's S values of x and gy read once, two sums
// A = Σ g·x̂ and B = Σ g (g = ∂L/∂pre), then the four of the CPU twin
//   part[0][n,c] = (1+scale)·A  (→ ∂γ after a sum over n)     part[1][n,c] = (1+scale)·B  (→ ∂β)
//   part[2][n,c] = γ·A + β·B    (= ∂scale)                    part[3][n,c] = B            (= ∂shift)
// with `part` [4, n, c].
extern "C" __global__ void group_norm_w_backward_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                                     const float* __restrict__ gamma, const float* __restrict__ beta,
                                                     const float* __restrict__ scale, const float* __restrict__ shift,
                                                     const float* __restrict__ moments, float* __restrict__ part, GroupNormGeom p,
                                                     GroupNormSplit q) {
  __shared__ float scratch[32];
  __shared__ float sh[8];
  const int b = blockIdx.x / p.c, ch = blockIdx.x - b * p.c;  // once per block
  GnChunk k;
  k.cpg = p.c / p.groups;
  k.len = k.cpg * p.s;
  k.b = b;
  k.g = ch / k.cpg;
  k.ng = b * p.groups + k.g;
  k.start = (ch - k.g * k.cpg) * p.s;
  k.cnt = p.s;
  const GnBlock s0 = gn_block_setup(x, gamma, beta, scale, shift, moments, p, q, k, sh);  // (a, bb) of channel ch
  const long long e0 = (long long)k.ng * k.len + k.start;
  const float *xc = x + e0, *gc = gy + e0;
  float sa = 0.0f, sb = 0.0f;
  if (p.s % 4 == 0 && kc_aligned16(xc) && kc_aligned16(gc)) {
    for (int i = 4 * threadIdx.x; i < p.s; i += 4 * blockDim.x) {
      const float4 v = kc_ld_float4(xc + i), g = kc_ld_float4(gc + i);
      const float vv[4] = {v.x, v.y, v.z, v.w}, gg[4] = {g.x, g.y, g.z, g.w};
      for (int j = 0; j < 4; ++j) {
        const float xh = ((vv[j] - s0.x0) - s0.mean_d) * s0.rstd;
        const float gp = gn_grad_pre(gg[j], xh, s0.a, s0.bb, p.silu);
        sa += gp * xh;
        sb += gp;
      }
    }
  } else {
    for (int i = threadIdx.x; i < p.s; i += blockDim.x) {
      const float xh = ((xc[i] - s0.x0) - s0.mean_d) * s0.rstd;
      const float gp = gn_grad_pre(gc[i], xh, s0.a, s0.bb, p.silu);
      sa += gp * xh;
      sb += gp;
    }
  }
  sa = block_sum(sa, scratch);
  sb = block_sum(sb, scratch);
  if (threadIdx.x == 0) {
    const float kk = p.has_ss ? 1.0f + scale[(long long)b * p.ss_stride + p.scale_off + ch] : 1.0f;
    const long long o = (long long)b * p.c + ch, nc = (long long)p.n * p.c;
    part[o] = kk * sa;
    part[nc + o] = kk * sb;
    part[2 * nc + o] = gamma[ch] * sa + beta[ch] * sb;
    part[3 * nc + o] = sb;
  }
}
