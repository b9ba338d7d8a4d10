// Elementwise ops and their input gradients: activations (SiLU, ReLU, sigmoid, ReLU6), broadcast add and
// mul (b broadcast to a's shape, ranks up to 4), the reduction of a gradient to b's shape,
// y = αx+β, and the folded batch-norm channel affine. CPU twins: src/backend/cpu/{activation,broadcast}.rs.
// The maps move 16 bytes per access where every pointer is aligned (float4 j = elements 4j..4j+3,
// then the n mod 4 left one by one); broadcasts along rows and the channel affine find their
// index by a division-free walk (index_walk.cuh). kernels/README.md, "Elementwise".
#include "common.cuh"
#include "index_walk.cuh"

// Grid-stride loop over float4 j < n/4, then the scalar tail i ∈ [4·(n/4), n); `vec` false: the
// scalar loop takes all n.
#define EW_THREAD ((long long)blockIdx.x * blockDim.x + threadIdx.x)
#define EW_STRIDE ((long long)blockDim.x * gridDim.x)

// act: 0 = SiLU, 1 = ReLU, 2 = sigmoid, 3 = ReLU6 (as `act_code` in src/backend/cuda/mod.rs).
__device__ __forceinline__ float act_forward(float x, int act) {
  if (act == 0) return x / (1.0f + expf(-x));
  if (act == 1) return x > 0.0f ? x : 0.0f;
  if (act == 3) return fminf(fmaxf(x, 0.0f), 6.0f);
  return 1.0f / (1.0f + expf(-x));
}

__device__ __forceinline__ float act_grad(float g, float x, int act) {
  if (act == 0) {
    float s = 1.0f / (1.0f + expf(-x));
    return g * s * (1.0f + x * (1.0f - s));
  }
  if (act == 1) return x > 0.0f ? g : 0.0f;
  if (act == 3) return (x > 0.0f && x < 6.0f) ? g : 0.0f;
  float s = 1.0f / (1.0f + expf(-x));
  return g * s * (1.0f - s);
}

extern "C" __global__ void activation_f32(const float* __restrict__ x, float* __restrict__ y, int n, int act) {
  long long i0 = 0;
  if (kc_aligned16(x) && kc_aligned16(y)) {
    for (long long j = EW_THREAD; j < n / 4; j += EW_STRIDE) {
      float4 v = kc_ld_float4(x + 4 * j);
      v.x = act_forward(v.x, act);
      v.y = act_forward(v.y, act);
      v.z = act_forward(v.z, act);
      v.w = act_forward(v.w, act);
      kc_st_float4(y + 4 * j, v);
    }
    i0 = 4 * (n / 4);
  }
  for (long long i = i0 + EW_THREAD; i < n; i += EW_STRIDE) y[i] = act_forward(x[i], act);
}

extern "C" __global__ void activation_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                                     float* __restrict__ gx, int n, int act) {
  long long i0 = 0;
  if (kc_aligned16(gy) && kc_aligned16(x) && kc_aligned16(gx)) {
    for (long long j = EW_THREAD; j < n / 4; j += EW_STRIDE) {
      const float4 g = kc_ld_float4(gy + 4 * j), v = kc_ld_float4(x + 4 * j);
      float4 o;
      o.x = act_grad(g.x, v.x, act);
      o.y = act_grad(g.y, v.y, act);
      o.z = act_grad(g.z, v.z, act);
      o.w = act_grad(g.w, v.w, act);
      kc_st_float4(gx + 4 * j, o);
    }
    i0 = 4 * (n / 4);
  }
  for (long long i = i0 + EW_THREAD; i < n; i += EW_STRIDE) gx[i] = act_grad(gy[i], x[i], act);
}

__device__ __forceinline__ int bcast_index(long long i, const BroadcastGeom& s) {
  int off = 0;
  for (int d = 3; d >= 0; --d) {
    off += (int)(i % s.dims[d]) * s.bstride[d];
    i /= s.dims[d];
  }
  return off;
}

// General broadcast (any b of a's rank ≤ 4): b's index from a's by division per dim. The backend
// takes it only for patterns bcast_rows does not cover (none in the UNet).
extern "C" __global__ void add_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, int n, BroadcastGeom s) {
  KC_FOR_EACH(i, n) y[i] = a[i] + b[bcast_index(i, s)];
}

extern "C" __global__ void mul_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, int n, BroadcastGeom s) {
  KC_FOR_EACH(i, n) y[i] = a[i] * b[bcast_index(i, s)];
}

// b broadcast along rows: element e of a meets b[(e / inner) mod mid] — the same shape (inner 1,
// mid n), per channel [1,C,1,1] (inner H·W, mid C), per image and channel [N,C,1,1] (inner H·W,
// mid N·C), a scalar (mid 1), a trailing block such as [1,1,H,W] (inner 1, mid H·W).
// float4 paths: the four values of a float4 share one b value (inner mod 4 = 0, or mid 1), or
// take four consecutive ones (inner 1, and mid mod 4 = 0 or mid = n: no wrap inside a float4).
__device__ __forceinline__ float ew_op(float a, float b, int mul) { return mul ? a * b : a + b; }

__device__ __forceinline__ void bcast_rows(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, int n, int inner, int mid,
                                           int mul) {
  const bool share = inner % 4 == 0 || mid == 1;
  const bool run = inner == 1 && (mid % 4 == 0 || mid == n);
  long long i0 = 0;
  if ((share || run) && kc_aligned16(a) && kc_aligned16(y) && (share || kc_aligned16(b))) {
    KcDivWalk w = kc_div_walk(4 * EW_THREAD, 4 * EW_STRIDE, inner, mid);
    for (long long j = EW_THREAD; j < n / 4; j += EW_STRIDE, kc_div_walk_next(w)) {
      const float4 v = kc_ld_float4(a + 4 * j);
      float4 u;
      if (share) {
        u.x = u.y = u.z = u.w = b[w.q];
      } else {
        u = kc_ld_float4(b + w.q);
      }
      float4 o;
      o.x = ew_op(v.x, u.x, mul);
      o.y = ew_op(v.y, u.y, mul);
      o.z = ew_op(v.z, u.z, mul);
      o.w = ew_op(v.w, u.w, mul);
      kc_st_float4(y + 4 * j, o);
    }
    i0 = 4 * (n / 4);
  }
  KcDivWalk w = kc_div_walk(i0 + EW_THREAD, EW_STRIDE, inner, mid);
  for (long long i = i0 + EW_THREAD; i < n; i += EW_STRIDE, kc_div_walk_next(w)) y[i] = ew_op(a[i], b[w.q], mul);
}

extern "C" __global__ void add_rows_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, int n, int inner, int mid) {
  bcast_rows(a, b, y, n, inner, mid, 0);
}

extern "C" __global__ void mul_rows_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, int n, int inner, int mid) {
  bcast_rows(a, b, y, n, inner, mid, 1);
}

// dst[j] = Σ src[i] over the elements i of a's shape that broadcast from b's element j.
// One thread per element of b.
extern "C" __global__ void reduce_to_broadcast_f32(const float* __restrict__ src, float* __restrict__ dst, int nb, BroadcastGeom s) {
  KC_FOR_EACH(j, nb) {
    const int* bi = s.bdims;
    int idx[4];
    long long r = j;
    for (int d = 3; d >= 0; --d) {
      idx[d] = (int)(r % bi[d]);
      r /= bi[d];
    }
    // loop over a's dims that b broadcasts (size 1 in b), with the others fixed
    int lo[4], hi[4];
    for (int d = 0; d < 4; ++d) {
      bool bc = bi[d] == 1 && s.dims[d] != 1;
      lo[d] = bc ? 0 : idx[d];
      hi[d] = bc ? s.dims[d] : idx[d] + 1;
    }
    float acc = 0.0f;
    for (int i0 = lo[0]; i0 < hi[0]; ++i0)
      for (int i1 = lo[1]; i1 < hi[1]; ++i1)
        for (int i2 = lo[2]; i2 < hi[2]; ++i2)
          for (int i3 = lo[3]; i3 < hi[3]; ++i3)
            acc += src[((i0 * s.dims[1] + i1) * s.dims[2] + i2) * (long long)s.dims[3] + i3];
    dst[j] = acc;
  }
}

extern "C" __global__ void scale_add_scalar_f32(const float* __restrict__ x, float* __restrict__ y, int n, float alpha, float beta) {
  long long i0 = 0;
  if (kc_aligned16(x) && kc_aligned16(y)) {
    for (long long j = EW_THREAD; j < n / 4; j += EW_STRIDE) {
      float4 v = kc_ld_float4(x + 4 * j);
      v.x = alpha * v.x + beta;
      v.y = alpha * v.y + beta;
      v.z = alpha * v.z + beta;
      v.w = alpha * v.w + beta;
      kc_st_float4(y + 4 * j, v);
    }
    i0 = 4 * (n / 4);
  }
  for (long long i = i0 + EW_THREAD; i < n; i += EW_STRIDE) y[i] = alpha * x[i] + beta;
}

// y = x·scale[c] + shift[c] over [N, C, S] (inference batch norm, folded); the channel of element
// e is (e / S) mod C, walked. The backward is the same without the shift (has_shift 0; pointers
// are never null, so it passes scale twice).
__device__ __forceinline__ void channel_affine(const float* __restrict__ x, const float* __restrict__ scale, const float* __restrict__ shift,
                                               int has_shift, float* __restrict__ y, int n, int c, int s) {
  long long i0 = 0;
  if (s % 4 == 0 && kc_aligned16(x) && kc_aligned16(y)) {
    KcDivWalk w = kc_div_walk(4 * EW_THREAD, 4 * EW_STRIDE, s, c);
    for (long long j = EW_THREAD; j < n / 4; j += EW_STRIDE, kc_div_walk_next(w)) {
      const float k = scale[w.q], t = has_shift ? shift[w.q] : 0.0f;
      float4 v = kc_ld_float4(x + 4 * j);
      v.x = has_shift ? v.x * k + t : v.x * k;
      v.y = has_shift ? v.y * k + t : v.y * k;
      v.z = has_shift ? v.z * k + t : v.z * k;
      v.w = has_shift ? v.w * k + t : v.w * k;
      kc_st_float4(y + 4 * j, v);
    }
    i0 = 4 * (n / 4);
  }
  KcDivWalk w = kc_div_walk(i0 + EW_THREAD, EW_STRIDE, s, c);
  for (long long i = i0 + EW_THREAD; i < n; i += EW_STRIDE, kc_div_walk_next(w)) y[i] = has_shift ? x[i] * scale[w.q] + shift[w.q] : x[i] * scale[w.q];
}

extern "C" __global__ void channel_affine_f32(const float* __restrict__ x, const float* __restrict__ scale,
                                              const float* __restrict__ shift, float* __restrict__ y, int n, int c, int s) {
  channel_affine(x, scale, shift, 1, y, n, c, s);
}

extern "C" __global__ void channel_affine_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ scale,
                                                         float* __restrict__ gx, int n, int c, int s) {
  channel_affine(gy, scale, scale, 0, gx, n, c, s);
}
