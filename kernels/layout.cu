// Channel copies for concat and slice over [N, C, S]: copy `c` channels starting at src_off of a
// [N, src_c, S] tensor into channels starting at dst_off of a [N, dst_c, S] tensor.
// In float4 units when S is a multiple of 4 and both tensors are 16-byte aligned (every plane then
// starts aligned), else in floats; the image of a unit and its place among the image's c·S
// values come from a division-free walk (index_walk.cuh). CPU twin: src/backend/cpu/layout.rs.
#include "common.cuh"
#include "index_walk.cuh"

extern "C" __global__ void copy_channels_f32(const float* __restrict__ src, int src_c, int src_off, float* __restrict__ dst,
                                             int dst_c, int dst_off, int n, int c, int s) {
  const int u = (s % 4 == 0 && kc_aligned16(src) && kc_aligned16(dst)) ? 4 : 1;
  const int su = s / u;
  const long long total = (long long)n * c * su, t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  KcDivWalk w = kc_div_walk(t0, st, c * su, KC_NO_WRAP);  // q: image, r: unit within its c channels
  for (long long i = t0; i < total; i += st, kc_div_walk_next(w)) {
    const long long si = ((long long)w.q * src_c + src_off) * su + w.r, di = ((long long)w.q * dst_c + dst_off) * su + w.r;
    if (u == 4) {
      kc_st_float4(dst + 4 * di, kc_ld_float4(src + 4 * si));
    } else {
      dst[di] = src[si];
    }
  }
}

// torch.cat([a, b], 1) of a [N, ca, S] and b [N, cb, S] into y [N, ca + cb, S] in one launch (the
// UNet decoder's cat([h, skip]) per output block): a walk over y, each unit taken from the part
// its channel falls in; float4 units under the same condition as copy_channels_f32.
extern "C" __global__ void concat2_channels_f32(const float* __restrict__ a, int ca, const float* __restrict__ b, int cb, float* __restrict__ y,
                                                int n, int s) {
  const int u = (s % 4 == 0 && kc_aligned16(a) && kc_aligned16(b) && kc_aligned16(y)) ? 4 : 1;
  const int su = s / u, ea = ca * su, eb = cb * su;
  const long long total = (long long)n * (ea + eb), t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  KcDivWalk w = kc_div_walk(t0, st, ea + eb, KC_NO_WRAP);  // q: image, r: unit within its ca + cb channels
  for (long long i = t0; i < total; i += st, kc_div_walk_next(w)) {
    const float* src = w.r < ea ? a + u * ((long long)w.q * ea + w.r) : b + u * ((long long)w.q * eb + (w.r - ea));
    if (u == 4) {
      kc_st_float4(y + 4 * i, kc_ld_float4(src));
    } else {
      y[i] = *src;
    }
  }
}

// x[:, ids] over [N, C, S] → [N, K, S] (K = number of ids); (image, id, position) from two walks.
// CPU twin: layout::gather_channels.
extern "C" __global__ void gather_channels_f32(const float* __restrict__ x, const int* __restrict__ ids, float* __restrict__ y, int n, int c,
                                               int k, int s) {
  const long long total = (long long)n * k * s, t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  KcDivWalk wj = kc_div_walk(t0, st, s, k), wb = kc_div_walk(t0, st, k * s, KC_NO_WRAP);  // (j, p); image b
  for (long long i = t0; i < total; i += st, kc_div_walk_next(wj), kc_div_walk_next(wb)) {
    y[i] = x[((long long)wb.q * c + ids[wj.q]) * s + wj.r];
  }
}

// Backward of gather_channels with distinct ids: each gy element goes to its one place in gx,
// which was zero-filled on allocation. CPU twin: layout::gather_channels_x_backward.
extern "C" __global__ void gather_channels_x_backward_f32(const float* __restrict__ gy, const int* __restrict__ ids, float* __restrict__ gx, int n,
                                                          int c, int k, int s) {
  const long long total = (long long)n * k * s, t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x, st = (long long)blockDim.x * gridDim.x;
  KcDivWalk wj = kc_div_walk(t0, st, s, k), wb = kc_div_walk(t0, st, k * s, KC_NO_WRAP);  // as in the forward
  for (long long i = t0; i < total; i += st, kc_div_walk_next(wj), kc_div_walk_next(wb)) {
    gx[((long long)wb.q * c + ids[wj.q]) * s + wj.r] = gy[i];
  }
}
