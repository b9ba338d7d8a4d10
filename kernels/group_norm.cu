// GroupNorm over [N, C, S] with affine γ, β, optional fused scale-shift GN(x)·(1+scale)+shift
// (scale/shift [N, C]) and optional fused SiLU; and its input gradient.
// The forward and the input gradient run split (kernels/README.md, "Group norm"): each (image,
// group) is cut into chunks, one block per chunk; a statistics pass writes each chunk's moments,
// the next pass merges its group's and normalises. The parameter gradients keep one block per
// (image, group), statistics in two passes (mean, then squared deviations).
// CPU twin: src/backend/cpu/group_norm.rs.
#include "common.cuh"
#include "index_walk.cuh"

__device__ __forceinline__ void gn_stats(const float* xg, int len, float eps, float* scratch, float* mean, float* rstd) {
  float s = 0.0f;
  for (int i = threadIdx.x; i < len; i += blockDim.x) s += xg[i];
  float m = block_sum(s, scratch) / (float)len;
  float q = 0.0f;
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    float d = xg[i] - m;
    q += d * d;
  }
  float var = block_sum(q, scratch) / (float)len;
  *mean = m;
  *rstd = rsqrtf(var + eps);
}

// pre = x̂·a + b for channel ch of batch item b
__device__ __forceinline__ void gn_coeffs(const float* gamma, const float* beta, const float* scale, const float* shift,
                                          const GroupNormGeom& p, int b, int ch, float* a, float* bb) {
  float ga = gamma[ch], be = beta[ch];
  if (p.has_ss) {
    float k = 1.0f + scale[(long long)b * p.ss_stride + p.scale_off + ch];
    *a = ga * k;
    *bb = be * k + shift[(long long)b * p.ss_stride + p.shift_off + ch];
  } else {
    *a = ga;
    *bb = be;
  }
}

// ---- split launches ---------------------------------------------------------------------------
// Moments (count n, mean m, M2 = Σ(v − m)²) are of d = x − x0, x0 the group's first value: x − x0
// is exact when the two are within a factor 2 (a large mean against a small spread), so the mean
// keeps its precision there, where a mean of x itself would carry half an ulp of the mean. Each
// thread shifts once more by its own first d, and the threads' and blocks' moments are merged by
// Chan's pairwise formula, so no sum of squares is ever taken far from its data's mean.

// Chan, Golub & LeVeque: (n, m, m2) ← (n, m, m2) ∪ (nb, mb, m2b).
__device__ __forceinline__ void gn_merge(float& n, float& m, float& m2, float nb, float mb, float m2b) {
  if (nb == 0.0f) return;
  const float nt = n + nb, d = mb - m, w = nb / nt;
  m += d * w;
  m2 += m2b + d * d * n * w;
  n = nt;
}

// Lane 0 ends with the merge of the warp's 32 moments (a fixed tree: the same on every run).
__device__ __forceinline__ void gn_warp_merge(float& n, float& m, float& m2) {
  for (int o = 16; o > 0; o >>= 1) {
    const float nb = __shfl_down_sync(KC_FULL_MASK, n, o), mb = __shfl_down_sync(KC_FULL_MASK, m, o);
    const float m2b = __shfl_down_sync(KC_FULL_MASK, m2, o);
    gn_merge(n, m, m2, nb, mb, m2b);
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

// Per thread: sums of t = d − d0 over its values (d0 its first d), turned into moments.
struct GnAcc {
  float n, d0, t1, t2;
};

__device__ __forceinline__ void gn_acc(GnAcc& a, float d) {
  const float t = d - a.d0;
  a.n += 1.0f;
  a.t1 += t;
  a.t2 += t * t;
}

// part[2·i], part[2·i + 1] = mean and M2 of d over block i's chunk.
extern "C" __global__ void group_norm_stats_f32(const float* __restrict__ x, float* __restrict__ part, GroupNormGeom p, GroupNormSplit q) {
  __shared__ float sh[3][32];
  const GnChunk k = gn_chunk(p, q);
  const float* xg = x + (long long)k.ng * k.len;
  const float x0 = xg[0];
  const float* xc = xg + k.start;
  GnAcc a = {0.0f, 0.0f, 0.0f, 0.0f};
  int i0 = 0;  // first value of the scalar loop
  if (kc_aligned16(xc)) {
    const int n4 = k.cnt >> 2;
    if ((int)threadIdx.x < n4) a.d0 = xc[4 * threadIdx.x] - x0;
    for (int i = threadIdx.x; i < n4; i += blockDim.x) {
      const float4 v = kc_ld_float4(xc + 4 * i);
      gn_acc(a, v.x - x0);
      gn_acc(a, v.y - x0);
      gn_acc(a, v.z - x0);
      gn_acc(a, v.w - x0);
    }
    i0 = 4 * n4;  // the tail: cnt mod 4 values
  }
  if (a.n == 0.0f && i0 + (int)threadIdx.x < k.cnt) a.d0 = xc[i0 + threadIdx.x] - x0;
  for (int i = i0 + threadIdx.x; i < k.cnt; i += blockDim.x) gn_acc(a, xc[i] - x0);
  float n = a.n, m = 0.0f, m2 = 0.0f;
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
    if (lane == 0) {
      part[2 * blockIdx.x] = m;
      part[2 * blockIdx.x + 1] = m2;
    }
  }
}

// The group's mean of d and 1/σ from its chunks' moments, in every thread: lane l merges chunks
// l, l + 32, …, then the warp's tree; every warp does the same, so every block of the group gets
// the same numbers.
__device__ __forceinline__ void gn_group_stats(const float* __restrict__ part, const GnChunk& k, const GroupNormSplit& q, float eps, float* mean_d,
                                               float* rstd) {
  const int lane = threadIdx.x & 31;
  const float* pg = part + 2LL * k.ng * q.splits;
  float n = 0.0f, m = 0.0f, m2 = 0.0f;
  for (int j = lane; j < q.splits; j += 32) gn_merge(n, m, m2, (float)min(q.chunk, k.len - j * q.chunk), pg[2 * j], pg[2 * j + 1]);
  gn_warp_merge(n, m, m2);
  *mean_d = __shfl_sync(KC_FULL_MASK, m, 0);
  *rstd = rsqrtf(__shfl_sync(KC_FULL_MASK, m2, 0) / (float)k.len + eps);
}

// Walks channel-by-channel coefficients along a thread's values: (a, bb) of the channel of the
// current value, reloaded only when the channel changes.
struct GnCoefWalk {
  KcDivWalk w;
  int cur;
  float a, bb;
};

__device__ __forceinline__ GnCoefWalk gn_coef_walk(const GnChunk& k, int e0, int step, int s) {
  GnCoefWalk c;
  c.w = kc_div_walk((long long)k.start + e0, step, s, KC_NO_WRAP);
  c.cur = -1;
  c.a = 0.0f;
  c.bb = 0.0f;
  return c;
}

__device__ __forceinline__ void gn_coef_update(GnCoefWalk& c, const float* gamma, const float* beta, const float* scale, const float* shift,
                                               const GroupNormGeom& p, const GnChunk& k) {
  if (c.w.q != c.cur) {
    c.cur = c.w.q;
    gn_coeffs(gamma, beta, scale, shift, p, k.b, k.g * k.cpg + c.cur, &c.a, &c.bb);
  }
}

__device__ __forceinline__ float gn_out(float v, float x0, float mean_d, float rstd, float a, float bb, int silu) {
  const float pre = ((v - x0) - mean_d) * rstd * a + bb;
  return silu ? pre / (1.0f + expf(-pre)) : pre;
}

// y = GN(x)·a + bb (+ SiLU), 16-byte accesses where the spatial size is a multiple of 4 (a float4
// never spans two channels) and the chunk is aligned.
extern "C" __global__ void group_norm_apply_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                                const float* __restrict__ scale, const float* __restrict__ shift, const float* __restrict__ part,
                                                float* __restrict__ y, GroupNormGeom p, GroupNormSplit q) {
  const GnChunk k = gn_chunk(p, q);
  float mean_d, rstd;
  gn_group_stats(part, k, q, p.eps, &mean_d, &rstd);
  const long long base = (long long)k.ng * k.len;
  const float x0 = x[base];
  const float* xc = x + base + k.start;
  float* yc = y + base + k.start;
  if (p.s % 4 == 0 && kc_aligned16(xc) && kc_aligned16(yc)) {
    GnCoefWalk c = gn_coef_walk(k, 4 * threadIdx.x, 4 * blockDim.x, p.s);
    for (int i = 4 * threadIdx.x; i < k.cnt; i += 4 * blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      float4 v = kc_ld_float4(xc + i);
      v.x = gn_out(v.x, x0, mean_d, rstd, c.a, c.bb, p.silu);
      v.y = gn_out(v.y, x0, mean_d, rstd, c.a, c.bb, p.silu);
      v.z = gn_out(v.z, x0, mean_d, rstd, c.a, c.bb, p.silu);
      v.w = gn_out(v.w, x0, mean_d, rstd, c.a, c.bb, p.silu);
      kc_st_float4(yc + i, v);
    }
  } else {
    GnCoefWalk c = gn_coef_walk(k, threadIdx.x, blockDim.x, p.s);
    for (int i = threadIdx.x; i < k.cnt; i += blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      yc[i] = gn_out(xc[i], x0, mean_d, rstd, c.a, c.bb, p.silu);
    }
  }
}

// ∂L/∂pre at one element: the incoming gradient, through SiLU when fused.
__device__ __forceinline__ float gn_grad_pre(float gy, float xh, float a, float bb, int silu) {
  if (!silu) return gy;
  float pre = xh * a + bb, sg = 1.0f / (1.0f + expf(-pre));
  return gy * sg * (1.0f + pre * (1.0f - sg));
}

// The input gradient gx = rstd·(gx̂ − mean(gx̂) − x̂·mean(gx̂·x̂)), gx̂ = a·∂L/∂pre, in two split
// passes after group_norm_stats_f32: sums[2·i], sums[2·i + 1] = Σ gx̂, Σ gx̂·x̂ over block i's
// chunk; then each block adds its group's and writes gx.
__device__ __forceinline__ void gn_grad_acc(float gy, float v, float x0, float mean_d, float rstd, const GnCoefWalk& c, int silu, float& s1, float& s2) {
  const float xh = ((v - x0) - mean_d) * rstd;
  const float gxh = gn_grad_pre(gy, xh, c.a, c.bb, silu) * c.a;
  s1 += gxh;
  s2 += gxh * xh;
}

extern "C" __global__ void group_norm_grad_sums_f32(const float* __restrict__ gy, const float* __restrict__ x, const float* __restrict__ gamma,
                                                    const float* __restrict__ beta, const float* __restrict__ scale, const float* __restrict__ shift,
                                                    const float* __restrict__ part, float* __restrict__ sums, GroupNormGeom p, GroupNormSplit q) {
  __shared__ float scratch[32];
  const GnChunk k = gn_chunk(p, q);
  float mean_d, rstd;
  gn_group_stats(part, k, q, p.eps, &mean_d, &rstd);
  const long long base = (long long)k.ng * k.len;
  const float x0 = x[base];
  const float *xc = x + base + k.start, *gc = gy + base + k.start;
  float s1 = 0.0f, s2 = 0.0f;
  if (p.s % 4 == 0 && kc_aligned16(xc) && kc_aligned16(gc)) {
    GnCoefWalk c = gn_coef_walk(k, 4 * threadIdx.x, 4 * blockDim.x, p.s);
    for (int i = 4 * threadIdx.x; i < k.cnt; i += 4 * blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      const float4 v = kc_ld_float4(xc + i), g = kc_ld_float4(gc + i);
      gn_grad_acc(g.x, v.x, x0, mean_d, rstd, c, p.silu, s1, s2);
      gn_grad_acc(g.y, v.y, x0, mean_d, rstd, c, p.silu, s1, s2);
      gn_grad_acc(g.z, v.z, x0, mean_d, rstd, c, p.silu, s1, s2);
      gn_grad_acc(g.w, v.w, x0, mean_d, rstd, c, p.silu, s1, s2);
    }
  } else {
    GnCoefWalk c = gn_coef_walk(k, threadIdx.x, blockDim.x, p.s);
    for (int i = threadIdx.x; i < k.cnt; i += blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      gn_grad_acc(gc[i], xc[i], x0, mean_d, rstd, c, p.silu, s1, s2);
    }
  }
  s1 = block_sum(s1, scratch);
  s2 = block_sum(s2, scratch);
  if (threadIdx.x == 0) {
    sums[2 * blockIdx.x] = s1;
    sums[2 * blockIdx.x + 1] = s2;
  }
}

__device__ __forceinline__ float gn_gx(float gy, float v, float x0, float mean_d, float rstd, const GnCoefWalk& c, int silu, float m1, float m2) {
  const float xh = ((v - x0) - mean_d) * rstd;
  return rstd * (gn_grad_pre(gy, xh, c.a, c.bb, silu) * c.a - m1 - xh * m2);
}

extern "C" __global__ void group_norm_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ x, const float* __restrict__ gamma,
                                                     const float* __restrict__ beta, const float* __restrict__ scale, const float* __restrict__ shift,
                                                     const float* __restrict__ part, const float* __restrict__ sums, float* __restrict__ gx,
                                                     GroupNormGeom p, GroupNormSplit q) {
  const GnChunk k = gn_chunk(p, q);
  float mean_d, rstd;
  gn_group_stats(part, k, q, p.eps, &mean_d, &rstd);
  // the group's two sums: lane-strided, then the xor tree (every lane gets the same total)
  const float* sg = sums + 2LL * k.ng * q.splits;
  float t1 = 0.0f, t2 = 0.0f;
  for (int j = threadIdx.x & 31; j < q.splits; j += 32) {
    t1 += sg[2 * j];
    t2 += sg[2 * j + 1];
  }
  const float m1 = warp_sum(t1) / (float)k.len, m2 = warp_sum(t2) / (float)k.len;
  const long long base = (long long)k.ng * k.len;
  const float x0 = x[base];
  const float *xc = x + base + k.start, *gc = gy + base + k.start;
  float* oc = gx + base + k.start;
  if (p.s % 4 == 0 && kc_aligned16(xc) && kc_aligned16(gc) && kc_aligned16(oc)) {
    GnCoefWalk c = gn_coef_walk(k, 4 * threadIdx.x, 4 * blockDim.x, p.s);
    for (int i = 4 * threadIdx.x; i < k.cnt; i += 4 * blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      const float4 v = kc_ld_float4(xc + i), g = kc_ld_float4(gc + i);
      float4 o;
      o.x = gn_gx(g.x, v.x, x0, mean_d, rstd, c, p.silu, m1, m2);
      o.y = gn_gx(g.y, v.y, x0, mean_d, rstd, c, p.silu, m1, m2);
      o.z = gn_gx(g.z, v.z, x0, mean_d, rstd, c, p.silu, m1, m2);
      o.w = gn_gx(g.w, v.w, x0, mean_d, rstd, c, p.silu, m1, m2);
      kc_st_float4(oc + i, o);
    }
  } else {
    GnCoefWalk c = gn_coef_walk(k, threadIdx.x, blockDim.x, p.s);
    for (int i = threadIdx.x; i < k.cnt; i += blockDim.x, kc_div_walk_next(c.w)) {
      gn_coef_update(c, gamma, beta, scale, shift, p, k);
      oc[i] = gn_gx(gc[i], xc[i], x0, mean_d, rstd, c, p.silu, m1, m2);
    }
  }
}

// Parameter gradients per (image, channel): one block per (n, group) computes the group's
// statistics, then per channel of the group the four sums of the CPU twin
//   part[0][n,c] = Σ g·(1+scale)·x̂   (→ ∂γ after a sum over n)
//   part[1][n,c] = Σ g·(1+scale)     (→ ∂β)
//   part[2][n,c] = Σ g·(x̂·γ + β)     (= ∂scale)
//   part[3][n,c] = Σ g               (= ∂shift)
// with g = ∂L/∂pre; `part` is [4, n, c].
extern "C" __global__ void group_norm_w_backward_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                                     const float* __restrict__ gamma, const float* __restrict__ beta,
                                                     const float* __restrict__ scale, const float* __restrict__ shift,
                                                     float* __restrict__ part, GroupNormGeom p) {
  __shared__ float scratch[32];
  const int cpg = p.c / p.groups, len = cpg * p.s;
  const int b = blockIdx.x / p.groups, g = blockIdx.x % p.groups;
  const long long base = (long long)blockIdx.x * len;
  const long long nc = (long long)p.n * p.c;
  float mean, rstd;
  gn_stats(x + base, len, p.eps, scratch, &mean, &rstd);
  for (int cl = 0; cl < cpg; ++cl) {
    const int ch = g * cpg + cl;
    float a, bb;
    gn_coeffs(gamma, beta, scale, shift, p, b, ch, &a, &bb);
    const float k = p.has_ss ? 1.0f + scale[(long long)b * p.ss_stride + p.scale_off + ch] : 1.0f;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (int i = threadIdx.x; i < p.s; i += blockDim.x) {
      long long e = base + (long long)cl * p.s + i;
      float xh = (x[e] - mean) * rstd;
      float gp = gn_grad_pre(gy[e], xh, a, bb, p.silu);
      s0 += gp * k * xh;
      s1 += gp * k;
      s2 += gp * (xh * gamma[ch] + beta[ch]);
      s3 += gp;
    }
    s0 = block_sum(s0, scratch);
    s1 = block_sum(s1, scratch);
    s2 = block_sum(s2, scratch);
    s3 = block_sum(s3, scratch);
    if (threadIdx.x == 0) {
      const long long o = (long long)b * p.c + ch;
      part[o] = s0;
      part[nc + o] = s1;
      part[2 * nc + o] = s2;
      part[3 * nc + o] = s3;
    }
  }
}
