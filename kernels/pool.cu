// Average pooling (count_include_pad) and max pooling (first maximum wins, like PyTorch) with
// square window, stride and symmetric padding, floor mode; input gradients in gather form (one
// thread per input pixel, no atomics). CPU twin: src/backend/cpu/pool.rs.
#include "common.cuh"

extern "C" __global__ void avg_pool2d_f32(const float* __restrict__ x, float* __restrict__ y, Pool2dGeom a) {
  const float inv = 1.0f / (float)(a.k * a.k);
  KC_FOR_EACH(i, (long long)a.planes * a.ho * a.wo) {
    int ox = (int)(i % a.wo), oy = (int)((i / a.wo) % a.ho);
    const float* xp = x + (i / ((long long)a.ho * a.wo)) * a.h * a.w;
    float s = 0.0f;
    for (int ky = 0; ky < a.k; ++ky) {
      int iy = oy * a.st + ky - a.p;
      if (iy < 0 || iy >= a.h) continue;
      for (int kx = 0; kx < a.k; ++kx) {
        int ix = ox * a.st + kx - a.p;
        if (ix >= 0 && ix < a.w) s += xp[iy * a.w + ix];
      }
    }
    y[i] = s * inv;
  }
}

// Outputs whose window covers input coordinate i: o with o·s − p ≤ i ≤ o·s − p + k − 1.
__device__ __forceinline__ void covering(int i, int k, int s, int p, int n_out, int* lo, int* hi) {
  int a = i + p - k + 1;
  *lo = a <= 0 ? 0 : (a + s - 1) / s;
  int b = (i + p) / s;
  *hi = b < n_out - 1 ? b : n_out - 1;
}

extern "C" __global__ void avg_pool2d_x_backward_f32(const float* __restrict__ gy, float* __restrict__ gx, Pool2dGeom a) {
  const float inv = 1.0f / (float)(a.k * a.k);
  KC_FOR_EACH(i, (long long)a.planes * a.h * a.w) {
    int ix = (int)(i % a.w), iy = (int)((i / a.w) % a.h);
    const float* gp = gy + (i / ((long long)a.h * a.w)) * a.ho * a.wo;
    int y0, y1, x0, x1;
    covering(iy, a.k, a.st, a.p, a.ho, &y0, &y1);
    covering(ix, a.k, a.st, a.p, a.wo, &x0, &x1);
    float s = 0.0f;
    for (int oy = y0; oy <= y1; ++oy)
      for (int ox = x0; ox <= x1; ++ox) s += gp[oy * a.wo + ox];
    gx[i] = s * inv;
  }
}

// Flat index (in the plane) of the first maximum of output (oy, ox)'s window; NaN wins.
__device__ __forceinline__ int window_argmax(const float* xp, const Pool2dGeom& a, int oy, int ox) {
  int best = -1;
  float bv = KC_NEG_INF;
  for (int ky = 0; ky < a.k; ++ky) {
    int iy = oy * a.st + ky - a.p;
    if (iy < 0 || iy >= a.h) continue;
    for (int kx = 0; kx < a.k; ++kx) {
      int ix = ox * a.st + kx - a.p;
      if (ix < 0 || ix >= a.w) continue;
      float v = xp[iy * a.w + ix];
      if (best < 0 || v > bv || v != v) {
        best = iy * a.w + ix;
        bv = v;
        if (v != v) return best;
      }
    }
  }
  return best;
}

extern "C" __global__ void max_pool2d_f32(const float* __restrict__ x, float* __restrict__ y, Pool2dGeom a) {
  KC_FOR_EACH(i, (long long)a.planes * a.ho * a.wo) {
    int ox = (int)(i % a.wo), oy = (int)((i / a.wo) % a.ho);
    const float* xp = x + (i / ((long long)a.ho * a.wo)) * a.h * a.w;
    y[i] = xp[window_argmax(xp, a, oy, ox)];
  }
}

extern "C" __global__ void max_pool2d_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                                     float* __restrict__ gx, Pool2dGeom a) {
  KC_FOR_EACH(i, (long long)a.planes * a.h * a.w) {
    int ix = (int)(i % a.w), iy = (int)((i / a.w) % a.h);
    long long plane = i / ((long long)a.h * a.w);
    const float* xp = x + plane * a.h * a.w;
    const float* gp = gy + plane * a.ho * a.wo;
    int y0, y1, x0, x1;
    covering(iy, a.k, a.st, a.p, a.ho, &y0, &y1);
    covering(ix, a.k, a.st, a.p, a.wo, &x0, &x1);
    float s = 0.0f;
    int me = iy * a.w + ix;
    for (int oy = y0; oy <= y1; ++oy)
      for (int ox = x0; ox <= x1; ++ox)
        if (window_argmax(xp, a, oy, ox) == me) s += gp[oy * a.wo + ox];
    gx[i] = s;
  }
}
