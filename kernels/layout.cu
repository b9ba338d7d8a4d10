// Channel copies for concat and slice over [N, C, S]: copy `c` channels starting at src_off of a
// [N, src_c, S] tensor into channels starting at dst_off of a [N, dst_c, S] tensor.
// CPU twin: src/backend/cpu/layout.rs.
#include "common.cuh"

extern "C" __global__ void copy_channels_f32(const float* __restrict__ src, int src_c, int src_off, float* __restrict__ dst,
                                             int dst_c, int dst_off, int n, int c, int s) {
  long long total = (long long)n * c * s;
  KC_FOR_EACH(i, total) {
    int p = (int)(i % s);
    int ch = (int)((i / s) % c);
    int b = (int)(i / ((long long)s * c));
    dst[((long long)b * dst_c + dst_off + ch) * s + p] = src[((long long)b * src_c + src_off + ch) * s + p];
  }
}

// x[:, ids] over [N, C, S] → [N, K, S] (K = number of ids). CPU twin: layout::gather_channels.
extern "C" __global__ void gather_channels_f32(const float* __restrict__ x, const int* __restrict__ ids, float* __restrict__ y, int n, int c,
                                               int k, int s) {
  long long total = (long long)n * k * s;
  KC_FOR_EACH(i, total) {
    int p = (int)(i % s);
    int j = (int)((i / s) % k);
    int b = (int)(i / ((long long)s * k));
    y[i] = x[((long long)b * c + ids[j]) * s + p];
  }
}

// Backward of gather_channels with distinct ids: each gy element goes to its one place in gx,
// which was zero-filled on allocation. CPU twin: layout::gather_channels_x_backward.
extern "C" __global__ void gather_channels_x_backward_f32(const float* __restrict__ gy, const int* __restrict__ ids, float* __restrict__ gx, int n,
                                                          int c, int k, int s) {
  long long total = (long long)n * k * s;
  KC_FOR_EACH(i, total) {
    int p = (int)(i % s);
    int j = (int)((i / s) % k);
    int b = (int)(i / ((long long)s * k));
    gx[((long long)b * c + ids[j]) * s + p] = gy[i];
  }
}
