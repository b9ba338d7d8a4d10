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
