// Group norm's output arithmetic, shared by group_norm.cu and by the convs that normalise their
// operand as they load it (conv2d_norm_f32, permute_cast_norm_tc_*: CudaBackend::group_norm_conv2d,
// issue #20 item 3). One formula in one place, so the fused and the unfused paths agree bit for bit.
#pragma once

// pre = ((v − x0) − mean_d)·rstd·a + bb, then SiLU when `silu`: x0 the group's first value, mean_d
// the mean of x − x0 (kernels/group_norm.cu, "moments"), (a, bb) the channel's affine with
// scale-shift folded in (gn_coeffs).
__device__ __forceinline__ float gn_out(float v, float x0, float mean_d, float rstd, float a, float bb, int silu) {
  const float pre = ((v - x0) - mean_d) * rstd * a + bb;
  return silu ? pre / (1.0f + expf(-pre)) : pre;
}

// gn_out of v with one (image, channel) record {x0, mean_d, rstd, a, bb, 0, 0, 0} (GN_PRE_FLOATS
// floats, written by gn_put_record: group_norm_coefs_f32, the conv epilogue of gn_out.cuh,
// concat2_gn_f32).
__device__ __forceinline__ float gn_pre(float v, const float* r, int silu) { return gn_out(v, r[0], r[1], r[2], r[3], r[4], silu); }

__device__ __forceinline__ void gn_put_record(float* r, float x0, float mean_d, float rstd, float a, float bb) {
  r[0] = x0;
  r[1] = mean_d;
  r[2] = rstd;
  r[3] = a;
  r[4] = bb;
  r[5] = r[6] = r[7] = 0.0f;
}

// pre = x̂·a + b for channel ch of batch item b
__device__ __forceinline__ void gn_coeffs(const float* gamma, const float* beta, const float* scale, const float* shift,
                                          const GroupNormGeom& p, int b, int ch, float* a, float* bb) {
  float ga = gamma[ch], be = beta[ch];
  if (p.has_ss) {
    float k = 1.0f + scale[(long long)b * p.ss_stride + p.scale_off + ch];
    *a = ga * k;
    *bb = be * k + shift[(long long)b * p.ss_stride + p.shift_off + ch];
  } else {
    *a = ga;
    *bb = be;
  }
}

// Chan, Golub & LeVeque: (n, m, m2) ← (n, m, m2) ∪ (nb, mb, m2b).
__device__ __forceinline__ void gn_merge(float& n, float& m, float& m2, float nb, float mb, float m2b) {
  if (nb == 0.0f) return;
  const float nt = n + nb, d = mb - m, w = nb / nt;
  m += d * w;
  m2 += m2b + d * d * n * w;
  n = nt;
}
