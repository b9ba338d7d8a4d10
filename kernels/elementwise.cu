// Elementwise ops and their input gradients: activations (SiLU, ReLU, sigmoid, ReLU6), broadcast add and
// mul (b broadcast to a's shape, ranks up to 4), the reduction of a gradient to b's shape,
// y = αx+β, and the folded batch-norm channel affine. CPU twins: src/backend/cpu/{activation,broadcast}.rs.
#include "common.cuh"

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
  KC_FOR_EACH(i, n) y[i] = act_forward(x[i], act);
}

extern "C" __global__ void activation_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ x,
                                                     float* __restrict__ gx, int n, int act) {
  KC_FOR_EACH(i, n) gx[i] = act_grad(gy[i], x[i], act);
}

__device__ __forceinline__ int bcast_index(long long i, const BroadcastGeom& s) {
  int off = 0;
  for (int d = 3; d >= 0; --d) {
    off += (int)(i % s.dims[d]) * s.bstride[d];
    i /= s.dims[d];
  }
  return off;
}

extern "C" __global__ void add_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, int n, BroadcastGeom s) {
  KC_FOR_EACH(i, n) y[i] = a[i] + b[bcast_index(i, s)];
}

extern "C" __global__ void mul_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, int n, BroadcastGeom s) {
  KC_FOR_EACH(i, n) y[i] = a[i] * b[bcast_index(i, s)];
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
  KC_FOR_EACH(i, n) y[i] = alpha * x[i] + beta;
}

// y = x·scale[c] + shift[c] over [N, C, S] (inference batch norm, folded).
extern "C" __global__ void channel_affine_f32(const float* __restrict__ x, const float* __restrict__ scale,
                                              const float* __restrict__ shift, float* __restrict__ y, int n, int c, int s) {
  KC_FOR_EACH(i, n) {
    int ch = (int)((i / s) % c);
    y[i] = x[i] * scale[ch] + shift[ch];
  }
}

extern "C" __global__ void channel_affine_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ scale,
                                                         float* __restrict__ gx, int n, int c, int s) {
  KC_FOR_EACH(i, n) gx[i] = gy[i] * scale[(int)((i / s) % c)];
}
