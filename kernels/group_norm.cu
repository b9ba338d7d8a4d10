// GroupNorm over [N, C, S] with affine γ, β, optional fused scale-shift GN(x)·(1+scale)+shift
// (scale/shift [N, C]) and optional fused SiLU; and its input gradient.
// One block per (n, group); statistics in two passes (mean, then squared deviations).
// CPU twin: src/backend/cpu/group_norm.rs.
#include "common.cuh"

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
    float k = 1.0f + scale[b * p.c + ch];
    *a = ga * k;
    *bb = be * k + shift[b * p.c + ch];
  } else {
    *a = ga;
    *bb = be;
  }
}

extern "C" __global__ void group_norm_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                          const float* __restrict__ scale, const float* __restrict__ shift, float* __restrict__ y, GroupNormGeom p) {
  __shared__ float scratch[32];
  const int cpg = p.c / p.groups, len = cpg * p.s;
  const int b = blockIdx.x / p.groups, g = blockIdx.x % p.groups;
  const float* xg = x + (long long)blockIdx.x * len;
  float* yg = y + (long long)blockIdx.x * len;
  float mean, rstd;
  gn_stats(xg, len, p.eps, scratch, &mean, &rstd);
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    float a, bb;
    gn_coeffs(gamma, beta, scale, shift, p, b, g * cpg + i / p.s, &a, &bb);
    float pre = (xg[i] - mean) * rstd * a + bb;
    yg[i] = p.silu ? pre / (1.0f + expf(-pre)) : pre;
  }
}

// ∂L/∂pre at one element: the incoming gradient, through SiLU when fused.
__device__ __forceinline__ float gn_grad_pre(float gy, float xh, float a, float bb, int silu) {
  if (!silu) return gy;
  float pre = xh * a + bb, sg = 1.0f / (1.0f + expf(-pre));
  return gy * sg * (1.0f + pre * (1.0f - sg));
}

// gx = rstd·(gx̂ − mean(gx̂) − x̂·mean(gx̂·x̂)), with gx̂ = a·∂L/∂pre.
extern "C" __global__ void group_norm_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                                     const float* __restrict__ gamma, const float* __restrict__ beta,
                                                     const float* __restrict__ scale, const float* __restrict__ shift,
                                                     float* __restrict__ gx, GroupNormGeom p) {
  __shared__ float scratch[32];
  const int cpg = p.c / p.groups, len = cpg * p.s;
  const int b = blockIdx.x / p.groups, g = blockIdx.x % p.groups;
  const long long off = (long long)blockIdx.x * len;
  float mean, rstd;
  gn_stats(x + off, len, p.eps, scratch, &mean, &rstd);
  float s1 = 0.0f, s2 = 0.0f;
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    float a, bb;
    gn_coeffs(gamma, beta, scale, shift, p, b, g * cpg + i / p.s, &a, &bb);
    float xh = (x[off + i] - mean) * rstd;
    float gxh = gn_grad_pre(gy[off + i], xh, a, bb, p.silu) * a;
    s1 += gxh;
    s2 += gxh * xh;
  }
  float m1 = block_sum(s1, scratch) / (float)len;
  float m2 = block_sum(s2, scratch) / (float)len;
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    float a, bb;
    gn_coeffs(gamma, beta, scale, shift, p, b, g * cpg + i / p.s, &a, &bb);
    float xh = (x[off + i] - mean) * rstd;
    gx[off + i] = rstd * (gn_grad_pre(gy[off + i], xh, a, bb, p.silu) * a - m1 - xh * m2);
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
    const float k = p.has_ss ? 1.0f + scale[b * p.c + ch] : 1.0f;
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
