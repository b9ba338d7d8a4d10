// Nearest ×2 upsampling and bilinear resize (align_corners=False, no antialias; PyTorch's source
// index rule) with input gradients. Indices come from division-free walks (index_walk.cuh): the
// walk over w gives the input pixel's column and its row among all planes' rows. CPU twin:
// src/backend/cpu/resample.rs.
#include "common.cuh"
#include "gn_pre.cuh"
#include "index_walk.cuh"

// v into the 2×2 outputs at o (rows of 2w values): two float2 stores where `vec` (8-byte aligned).
__device__ __forceinline__ void up2x_put(float* o, int w, float v, bool vec) {
  if (vec) {
    kc_st_float2(o, make_float2(v, v));
    kc_st_float2(o + 2 * w, make_float2(v, v));
  } else {
    o[0] = v;
    o[1] = v;
    o[2 * w] = v;
    o[2 * w + 1] = v;
  }
}

// One thread per input value: read once, written to its 2×2 outputs as two float2 stores (rows 2r,
// 2r + 1 of the output, r = plane·h + iy, columns 2ix, 2ix + 1).
extern "C" __global__ void upsample_nearest2x_f32(const float* __restrict__ x, float* __restrict__ y, int planes, int h, int w) {
  const long long total = (long long)planes * h * w, t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  const bool vec = kc_aligned8(y);  // every output pair starts at an even element
  KcDivWalk wk = kc_div_walk(t0, st, w, KC_NO_WRAP);  // q: row among all planes' rows, r: column
  for (long long i = t0; i < total; i += st, kc_div_walk_next(wk)) {
    up2x_put(y + 4LL * wk.q * w + 2 * wk.r, w, x[i], vec);
  }
}

extern "C" __global__ void upsample_nearest2x_x_backward_f32(const float* __restrict__ gy, float* __restrict__ gx, int planes, int h, int w) {
  const long long total = (long long)planes * h * w, t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  const int w2 = 2 * w;
  KcDivWalk wk = kc_div_walk(t0, st, w, KC_NO_WRAP);  // as in the forward
  for (long long i = t0; i < total; i += st, kc_div_walk_next(wk)) {
    const float* g = gy + 4LL * wk.q * w + 2 * wk.r;
    gx[i] = g[0] + g[1] + g[w2] + g[w2 + 1];
  }
}

// act(GN(x)) resampled in one pass, the norm from x's records (gn_pre.cuh, one per plane = image ·
// channel, made by the op that wrote x): the up/down ResBlock's in_norm → h_upd
// (CudaBackend::group_norm_resample), instead of a group norm and a resample launch. The nearest
// ×2 upsample as upsample_nearest2x_f32 (one thread per input value); the 2×2 average pool as
// avg_pool2d_f32 with k = 2, s = 2, p = 0 (one thread per output, the same sum order).
extern "C" __global__ void gn_upsample_nearest2x_f32(const float* __restrict__ x, const float* __restrict__ coef, float* __restrict__ y, int planes,
                                                     int h, int w, int silu) {
  const long long total = (long long)planes * h * w, t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  const bool vec = kc_aligned8(y);
  KcDivWalk wk = kc_div_walk(t0, st, w, KC_NO_WRAP), wp = kc_div_walk(t0, st, h * w, KC_NO_WRAP);  // (row, column); plane
  for (long long i = t0; i < total; i += st, kc_div_walk_next(wk), kc_div_walk_next(wp)) {
    up2x_put(y + 4LL * wk.q * w + 2 * wk.r, w, gn_pre(x[i], coef + (long long)wp.q * GN_PRE_FLOATS, silu), vec);
  }
}

extern "C" __global__ void gn_avg_pool2x2_f32(const float* __restrict__ x, const float* __restrict__ coef, float* __restrict__ y, int planes, int h,
                                              int w, int silu) {
  const int ho = h / 2, wo = w / 2;
  const long long total = (long long)planes * ho * wo, t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  KcDivWalk wr = kc_div_walk(t0, st, wo, ho), wp = kc_div_walk(t0, st, ho * wo, KC_NO_WRAP);  // (oy, ox); plane
  for (long long i = t0; i < total; i += st, kc_div_walk_next(wr), kc_div_walk_next(wp)) {
    const float* xp = x + (long long)wp.q * h * w + 2LL * wr.q * w + 2 * wr.r;
    const float* r = coef + (long long)wp.q * GN_PRE_FLOATS;
    float s = gn_pre(xp[0], r, silu);
    s += gn_pre(xp[1], r, silu);
    s += gn_pre(xp[w], r, silu);
    s += gn_pre(xp[w + 1], r, silu);
    y[i] = s * 0.25f;
  }
}

// src = (dst + 0.5)·in/out − 0.5 clamped at 0; taps i0 = floor(src), i1 = min(i0+1, in−1).
__device__ __forceinline__ void bilinear_tap(int d, int in, int out, int* i0, int* i1, float* l0, float* l1) {
  float scale = (float)in / (float)out;
  float src = scale * ((float)d + 0.5f) - 0.5f;
  if (src < 0.0f) src = 0.0f;
  int a = (int)floorf(src);
  if (a > in - 1) a = in - 1;
  *i0 = a;
  *i1 = a < in - 1 ? a + 1 : a;
  float l = src - (float)a;
  l = l < 0.0f ? 0.0f : (l > 1.0f ? 1.0f : l);
  *l1 = l;
  *l0 = 1.0f - l;
}

extern "C" __global__ void resize_bilinear_f32(const float* __restrict__ x, float* __restrict__ y, int planes, int h, int w, int ho, int wo) {
  const long long total = (long long)planes * ho * wo, t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  KcDivWalk wr = kc_div_walk(t0, st, wo, ho), wp = kc_div_walk(t0, st, ho * wo, KC_NO_WRAP);  // (oy, ox); plane
  for (long long i = t0; i < total; i += st, kc_div_walk_next(wr), kc_div_walk_next(wp)) {
    const int ox = wr.r, oy = wr.q;
    const float* xp = x + (long long)wp.q * h * w;
    int y0, y1, x0, x1;
    float a0, a1, b0, b1;
    bilinear_tap(oy, h, ho, &y0, &y1, &a0, &a1);
    bilinear_tap(ox, w, wo, &x0, &x1, &b0, &b1);
    y[i] = a0 * (b0 * xp[y0 * w + x0] + b1 * xp[y0 * w + x1]) + a1 * (b0 * xp[y1 * w + x0] + b1 * xp[y1 * w + x1]);
  }
}

// Scatter form: each output adds its four weighted taps into gx (zero-initialised) atomically.
extern "C" __global__ void resize_bilinear_x_backward_f32(const float* __restrict__ gy, float* __restrict__ gx, int planes, int h, int w,
                                                          int ho, int wo) {
  const long long total = (long long)planes * ho * wo, t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  KcDivWalk wr = kc_div_walk(t0, st, wo, ho), wp = kc_div_walk(t0, st, ho * wo, KC_NO_WRAP);  // (oy, ox); plane
  for (long long i = t0; i < total; i += st, kc_div_walk_next(wr), kc_div_walk_next(wp)) {
    const int ox = wr.r, oy = wr.q;
    float* gp = gx + (long long)wp.q * h * w;
    int y0, y1, x0, x1;
    float a0, a1, b0, b1;
    bilinear_tap(oy, h, ho, &y0, &y1, &a0, &a1);
    bilinear_tap(ox, w, wo, &x0, &x1, &b0, &b1);
    float g = gy[i];
    atomicAdd(&gp[y0 * w + x0], a0 * b0 * g);
    atomicAdd(&gp[y0 * w + x1], a0 * b1 * g);
    atomicAdd(&gp[y1 * w + x0], a1 * b0 * g);
    atomicAdd(&gp[y1 * w + x1], a1 * b1 * g);
  }
}
