// conv2d (dilation 1, asymmetric zero padding, groups) and its input gradient, as implicit GEMMs
// over shared-memory tiles (igemm.cuh); direct kernels for depthwise (one input channel per
// group). Launch: block (16,16), grid (⌈N/64⌉, ⌈M/64⌉, groups), IGEMM_SMEM_BYTES dynamic smem.
// CPU twin: src/backend/cpu/conv2d.rs.
#include "common.cuh"
#include "gn_pre.cuh"
#include "gn_out.cuh"
#include "igemm.cuh"

// ---- forward: M = out channels of the group, N = output pixels of all images, K = Cg·KH·KW ----
struct ConvFwdA {
  const float* w;
  int g, og, kk;
  __device__ float operator()(int m, int k) const { return w[(long long)(g * og + m) * kk + k]; }
};
struct ConvFwdB {
  const float* x;
  Conv2dGeom a;
  int g, cg;
  __device__ float operator()(int k, int n) const {
    int khw = a.kh * a.kw, ci = k / khw, r = k % khw, ky = r / a.kw, kx = r % a.kw;
    int hw = a.ho * a.wo, img = n / hw, pix = n % hw, oy = pix / a.wo, ox = pix % a.wo;
    int iy = oy * a.sh - a.pt + ky, ix = ox * a.sw - a.pl + kx;
    if (iy < 0 || iy >= a.h || ix < 0 || ix >= a.w) return 0.0f;
    return x[(((long long)img * a.c + g * cg + ci) * a.h + iy) * a.w + ix];
  }
};
struct ConvFwdStore {
  float* y;
  const float* bias;
  Conv2dGeom a;
  int g, og;
  __device__ void operator()(int m, int n, float v) const {
    int hw = a.ho * a.wo, img = n / hw, pix = n % hw;
    int oc = g * og + m;
    y[((long long)img * a.o + oc) * hw + pix] = v + (a.has_bias ? bias[oc] : 0.0f);
  }
};

extern "C" __global__ void conv2d_f32(const float* __restrict__ x, const float* __restrict__ w,
                                                             const float* __restrict__ bias, float* __restrict__ y, Conv2dGeom a) {
  const int g = blockIdx.z, cg = a.c / a.groups, og = a.o / a.groups, kk = cg * a.kh * a.kw;
  igemm_tile(og, a.n * a.ho * a.wo, kk, ConvFwdA{w, g, og, kk}, ConvFwdB{x, a, g, cg}, ConvFwdStore{y, bias, a, g, og});
}

// conv2d + a residual shaped like y (the ResBlock's skip(x) + h, the attention block's x + proj):
// the residual is added in the epilogue, after the bias, as the separate add would: (acc + bias) + res.
struct ConvFwdResStore {
  float* y;
  const float* bias;
  const float* res;
  Conv2dGeom a;
  int g, og;
  __device__ void operator()(int m, int n, float v) const {
    int hw = a.ho * a.wo, img = n / hw, pix = n % hw;
    int oc = g * og + m;
    const long long o = ((long long)img * a.o + oc) * hw + pix;
    y[o] = (v + (a.has_bias ? bias[oc] : 0.0f)) + res[o];
  }
};

extern "C" __global__ void conv2d_add_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                                          const float* __restrict__ res, float* __restrict__ y, Conv2dGeom a) {
  const int g = blockIdx.z, cg = a.c / a.groups, og = a.o / a.groups, kk = cg * a.kh * a.kw;
  igemm_tile(og, a.n * a.ho * a.wo, kk, ConvFwdA{w, g, og, kk}, ConvFwdB{x, a, g, cg}, ConvFwdResStore{y, bias, res, a, g, og});
}

// conv2d of act(GN(x)·(1+scale)+shift), with a residual when has_res (CudaBackend::group_norm_conv2d):
// the operand loader normalises each in-image value with its (image, channel) record (gn_pre.cuh,
// from group_norm_coefs_f32); padding stays 0, as it is outside the normalised tensor.
struct ConvFwdNormB {
  const float* x;
  const float* coef;
  Conv2dGeom a;
  int g, cg, silu;
  __device__ float operator()(int k, int n) const {
    int khw = a.kh * a.kw, ci = k / khw, r = k % khw, ky = r / a.kw, kx = r % a.kw;
    int hw = a.ho * a.wo, img = n / hw, pix = n % hw, oy = pix / a.wo, ox = pix % a.wo;
    int iy = oy * a.sh - a.pt + ky, ix = ox * a.sw - a.pl + kx;
    if (iy < 0 || iy >= a.h || ix < 0 || ix >= a.w) return 0.0f;
    const long long ch = (long long)img * a.c + g * cg + ci;
    return gn_pre(x[(ch * a.h + iy) * a.w + ix], coef + ch * GN_PRE_FLOATS, silu);
  }
};
struct ConvFwdMaybeResStore {
  float* y;
  const float* bias;
  const float* res;
  Conv2dGeom a;
  int g, og, has_res;
  __device__ void operator()(int m, int n, float v) const {
    int hw = a.ho * a.wo, img = n / hw, pix = n % hw;
    int oc = g * og + m;
    const long long o = ((long long)img * a.o + oc) * hw + pix;
    const float h = v + (a.has_bias ? bias[oc] : 0.0f);
    y[o] = has_res ? h + res[o] : h;
  }
};

extern "C" __global__ void conv2d_norm_f32(const float* __restrict__ x, const float* __restrict__ coef, const float* __restrict__ w,
                                           const float* __restrict__ bias, const float* __restrict__ res, float* __restrict__ y, Conv2dGeom a,
                                           int silu, int has_res) {
  const int g = blockIdx.z, cg = a.c / a.groups, og = a.o / a.groups, kk = cg * a.kh * a.kw;
  igemm_tile(og, a.n * a.ho * a.wo, kk, ConvFwdA{w, g, og, kk}, ConvFwdNormB{x, coef, a, g, cg, silu},
             ConvFwdMaybeResStore{y, bias, res, a, g, og, has_res});
}

// ---- conv2d (+ res) that also writes the group-norm records of its output (gn_out.cuh) ----------
// groups = 1 and hw % IGEMM_TN == 0 (host: CudaBackend::conv2d_gn), so no column is past N and
// every tile lies in one image. The store is ConvFwdMaybeResStore's arithmetic.
template <class LoadB>
__device__ __forceinline__ void conv2d_gn_out_body(const LoadB& lb, const float* w, const float* bias, const float* res, float* y, const Conv2dGeom& a,
                                                   int has_res, const GnOut& o) {
  const int og = a.o, kk = a.c * a.kh * a.kw, hw = a.ho * a.wo;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int m0 = blockIdx.y * IGEMM_TM, n0 = blockIdx.x * IGEMM_TN;
  float v[4][4];
  igemm_acc(og, a.n * hw, kk, ConvFwdA{w, 0, og, kk}, lb, v);
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty + 16 * i;
    if (m >= og) continue;
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx + 16 * j, img = n / hw, pix = n - img * hw;
      const long long off = ((long long)img * a.o + m) * hw + pix;
      const float h = v[i][j] + (a.has_bias ? bias[m] : 0.0f);
      v[i][j] = has_res ? h + res[off] : h;
      y[off] = v[i][j];
    }
  }
  igemm_gn_out(v, og, a.has_bias ? bias : nullptr, o);  // the bias: each channel's shift
}

extern "C" __global__ void conv2d_gn_out_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                                             const float* __restrict__ res, float* __restrict__ y, float* __restrict__ part, float* __restrict__ chm,
                                             int* __restrict__ cnt, const float* __restrict__ gamma, const float* __restrict__ beta,
                                             const float* __restrict__ scale, const float* __restrict__ shift, float* __restrict__ coef, Conv2dGeom a,
                                             GroupNormGeom q, int has_res) {
  conv2d_gn_out_body(ConvFwdB{x, a, 0, a.c}, w, bias, res, y, a, has_res, GnOut{part, chm, cnt, gamma, beta, scale, shift, coef, q});
}

// The same with x normalised in the loader by its records coef_in (conv2d_norm_f32's loader).
extern "C" __global__ void conv2d_norm_gn_out_f32(const float* __restrict__ x, const float* __restrict__ coef_in, const float* __restrict__ w,
                                                  const float* __restrict__ bias, const float* __restrict__ res, float* __restrict__ y,
                                                  float* __restrict__ part, float* __restrict__ chm, int* __restrict__ cnt, const float* __restrict__ gamma,
                                                  const float* __restrict__ beta, const float* __restrict__ scale, const float* __restrict__ shift,
                                                  float* __restrict__ coef, Conv2dGeom a, GroupNormGeom q, int silu, int has_res) {
  conv2d_gn_out_body(ConvFwdNormB{x, coef_in, a, 0, a.c, silu}, w, bias, res, y, a, has_res, GnOut{part, chm, cnt, gamma, beta, scale, shift, coef, q});
}

// ---- input gradient: M = in channels of the group, N = input pixels, K = Og·KH·KW ----------------
struct ConvBwdA {
  const float* w;
  int g, og, cg, khw;
  __device__ float operator()(int m, int k) const {
    int oc = k / khw, r = k % khw;
    return w[((long long)(g * og + oc) * cg + m) * khw + r];
  }
};
struct ConvBwdB {
  const float* gy;
  Conv2dGeom a;
  int g, og;
  __device__ float operator()(int k, int n) const {
    int khw = a.kh * a.kw, oc = k / khw, r = k % khw, ky = r / a.kw, kx = r % a.kw;
    int hw = a.h * a.w, img = n / hw, pix = n % hw, iy = pix / a.w, ix = pix % a.w;
    int ny = iy + a.pt - ky, nx = ix + a.pl - kx;
    if (ny < 0 || nx < 0 || ny % a.sh != 0 || nx % a.sw != 0) return 0.0f;
    int oy = ny / a.sh, ox = nx / a.sw;
    if (oy >= a.ho || ox >= a.wo) return 0.0f;
    return gy[(((long long)img * a.o + g * og + oc) * a.ho + oy) * a.wo + ox];
  }
};
struct ConvBwdStore {
  float* gx;
  Conv2dGeom a;
  int g, cg;
  __device__ void operator()(int m, int n, float v) const {
    int hw = a.h * a.w, img = n / hw, pix = n % hw;
    gx[((long long)img * a.c + g * cg + m) * hw + pix] = v;
  }
};

extern "C" __global__ void conv2d_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ w,
                                                                        float* __restrict__ gx, Conv2dGeom a) {
  const int g = blockIdx.z, cg = a.c / a.groups, og = a.o / a.groups, khw = a.kh * a.kw;
  igemm_tile(cg, a.n * a.h * a.w, og * khw, ConvBwdA{w, g, og, cg, khw}, ConvBwdB{gy, a, g, og}, ConvBwdStore{gx, a, g, cg});
}

// ---- depthwise (Cg = 1): one thread per output / input element -----------------------------------
extern "C" __global__ void depthwise_conv2d_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                                                float* __restrict__ y, Conv2dGeom a) {
  const int og = a.o / a.groups;
  KC_FOR_EACH(i, (long long)a.n * a.o * a.ho * a.wo) {
    int ox = (int)(i % a.wo), oy = (int)((i / a.wo) % a.ho);
    int oc = (int)((i / ((long long)a.wo * a.ho)) % a.o), img = (int)(i / ((long long)a.wo * a.ho * a.o));
    const float* xp = x + ((long long)img * a.c + oc / og) * a.h * a.w;
    const float* wk = w + (long long)oc * a.kh * a.kw;
    float acc = a.has_bias ? bias[oc] : 0.0f;
    for (int ky = 0; ky < a.kh; ++ky) {
      int iy = oy * a.sh - a.pt + ky;
      if (iy < 0 || iy >= a.h) continue;
      for (int kx = 0; kx < a.kw; ++kx) {
        int ix = ox * a.sw - a.pl + kx;
        if (ix >= 0 && ix < a.w) acc = fmaf(xp[iy * a.w + ix], wk[ky * a.kw + kx], acc);
      }
    }
    y[i] = acc;
  }
}

extern "C" __global__ void depthwise_conv2d_x_backward_f32(const float* __restrict__ gy, const float* __restrict__ w,
                                                           float* __restrict__ gx, Conv2dGeom a) {
  const int og = a.o / a.groups;
  KC_FOR_EACH(i, (long long)a.n * a.c * a.h * a.w) {
    int ix = (int)(i % a.w), iy = (int)((i / a.w) % a.h);
    int ci = (int)((i / ((long long)a.w * a.h)) % a.c), img = (int)(i / ((long long)a.w * a.h * a.c));
    float acc = 0.0f;
    for (int oc = ci * og; oc < (ci + 1) * og; ++oc) {
      const float* gp = gy + ((long long)img * a.o + oc) * a.ho * a.wo;
      const float* wk = w + (long long)oc * a.kh * a.kw;
      for (int ky = 0; ky < a.kh; ++ky) {
        int ny = iy + a.pt - ky;
        if (ny < 0 || ny % a.sh != 0 || ny / a.sh >= a.ho) continue;
        for (int kx = 0; kx < a.kw; ++kx) {
          int nx = ix + a.pl - kx;
          if (nx < 0 || nx % a.sw != 0 || nx / a.sw >= a.wo) continue;
          acc = fmaf(gp[(ny / a.sh) * a.wo + nx / a.sw], wk[ky * a.kw + kx], acc);
        }
      }
    }
    gx[i] = acc;
  }
}

// ---- weight gradient: M = out channels of the group, N = Cg·KH·KW taps, K = output pixels of all
// images: ∂w[m, tap] = Σ_pix ∂y[m, pix] · im2col(x)[tap, pix] ---------------------------------------
struct ConvWgradA {
  const float* gy;
  Conv2dGeom a;
  int g, og;
  __device__ float operator()(int m, int k) const {
    int hw = a.ho * a.wo, img = k / hw, pix = k % hw;
    return gy[((long long)img * a.o + g * og + m) * hw + pix];
  }
};
struct ConvWgradB {
  const float* x;
  Conv2dGeom a;
  int g, cg;
  // the forward's im2col element (tap n, output pixel k), read transposed
  __device__ float operator()(int k, int n) const { return ConvFwdB{x, a, g, cg}(n, k); }
};
struct ConvWgradStore {
  float* gw;
  int g, og, kk;
  __device__ void operator()(int m, int n, float v) const { gw[(long long)(g * og + m) * kk + n] = v; }
};

extern "C" __global__ void conv2d_w_backward_f32(const float* __restrict__ gy, const float* __restrict__ x, float* __restrict__ gw,
                                                 Conv2dGeom a) {
  const int g = blockIdx.z, cg = a.c / a.groups, og = a.o / a.groups, kk = cg * a.kh * a.kw;
  igemm_tile(og, kk, a.n * a.ho * a.wo, ConvWgradA{gy, a, g, og}, ConvWgradB{x, a, g, cg}, ConvWgradStore{gw, g, og, kk});
}

// Depthwise weight gradient: one block per (output channel, tap), its threads sum over images and
// output pixels.
extern "C" __global__ void depthwise_conv2d_w_backward_f32(const float* __restrict__ gy, const float* __restrict__ x, float* __restrict__ gw,
                                                           Conv2dGeom a) {
  __shared__ float scratch[32];
  const int og = a.o / a.groups, khw = a.kh * a.kw;
  const int oc = blockIdx.x / khw, tap = blockIdx.x % khw, ky = tap / a.kw, kx = tap % a.kw;
  const long long hw = (long long)a.ho * a.wo;
  float s = 0.0f;
  for (long long i = threadIdx.x; i < (long long)a.n * hw; i += blockDim.x) {
    int img = (int)(i / hw), pix = (int)(i % hw), oy = pix / a.wo, ox = pix % a.wo;
    int iy = oy * a.sh - a.pt + ky, ix = ox * a.sw - a.pl + kx;
    if (iy < 0 || iy >= a.h || ix < 0 || ix >= a.w) continue;
    s += gy[((long long)img * a.o + oc) * hw + pix] * x[(((long long)img * a.c + oc / og) * a.h + iy) * a.w + ix];
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) gw[blockIdx.x] = s;
}
