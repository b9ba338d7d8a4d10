// Nearest ×2 upsampling and bilinear resize (align_corners=False, no antialias; PyTorch's source
// index rule) with input gradients. CPU twin: src/backend/cpu/resample.rs.
#include "common.cuh"

extern "C" __global__ void upsample_nearest2x_f32(const float* __restrict__ x, float* __restrict__ y, int planes, int h, int w) {
  KC_FOR_EACH(i, (long long)planes * 4 * h * w) {
    int ox = (int)(i % (2 * w)), oy = (int)((i / (2 * w)) % (2 * h));
    long long p = i / (4LL * h * w);
    y[i] = x[p * h * w + (oy / 2) * w + ox / 2];
  }
}

extern "C" __global__ void upsample_nearest2x_x_backward_f32(const float* __restrict__ gy, float* __restrict__ gx, int planes, int h, int w) {
  KC_FOR_EACH(i, (long long)planes * h * w) {
    int ix = (int)(i % w), iy = (int)((i / w) % h);
    const float* g = gy + (i / ((long long)h * w)) * 4 * h * w;
    int w2 = 2 * w;
    gx[i] = g[(2 * iy) * w2 + 2 * ix] + g[(2 * iy) * w2 + 2 * ix + 1] + g[(2 * iy + 1) * w2 + 2 * ix] + g[(2 * iy + 1) * w2 + 2 * ix + 1];
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
  KC_FOR_EACH(i, (long long)planes * ho * wo) {
    int ox = (int)(i % wo), oy = (int)((i / wo) % ho);
    const float* xp = x + (i / ((long long)ho * wo)) * h * w;
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
  KC_FOR_EACH(i, (long long)planes * ho * wo) {
    int ox = (int)(i % wo), oy = (int)((i / wo) % ho);
    float* gp = gx + (i / ((long long)ho * wo)) * h * w;
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
