// Optimiser updates, elementwise over one parameter tensor, in torch.optim.AdamW's operation
// order (single-tensor path, amsgrad off):
//   θ ← θ·(1 − lr·wd);  m ← m + (1−β1)(g − m);  v ← β2·v + (1−β2)·g²  (derived scalars: contract.cuh);
//   θ ← θ − step_size · m / (√v / bc2_sqrt + eps)
// and the two-tensor blend alpha·a + beta·b (EMA: ema·rate + θ·(1 − rate)).
// CPU twin: src/backend/cpu/optim.rs.
#include "common.cuh"

extern "C" __global__ void adamw_step_f32(const float* __restrict__ param, const float* __restrict__ grad, const float* __restrict__ m,
                                          const float* __restrict__ v, float* __restrict__ param_out, float* __restrict__ m_out,
                                          float* __restrict__ v_out, int n, AdamwCoefs k) {
  KC_FOR_EACH(i, n) {
    float g = grad[i];
    float p = param[i] * k.decay;
    float mi = m[i] + k.one_minus_beta1 * (g - m[i]);
    float vi = v[i] * k.beta2 + k.one_minus_beta2 * g * g;
    float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
    param_out[i] = p - k.step_size * (mi / denom);
    m_out[i] = mi;
    v_out[i] = vi;
  }
}

extern "C" __global__ void axpby_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y, int n, float alpha,
                                     float beta) {
  KC_FOR_EACH(i, n) y[i] = alpha * a[i] + beta * b[i];
}
