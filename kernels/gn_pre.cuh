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
// floats, written by group_norm_coefs_f32).
__device__ __forceinline__ float gn_pre(float v, const float* r, int silu) { return gn_out(v, r[0], r[1], r[2], r[3], r[4], silu); }
