// DDPM/DDIM step math of guided-diffusion, per element, with one timestep's coefficients as
// scalars (docs/method.md: the posterior, p(x_{t−1}|x_t), the KL): q_sample, p(x_{t−1}|x_t)'s mean / log-variance / x̂0 (learned-range,
// learned or fixed variance; optional clipping of x̂0), the KL between the true posterior and p in
// bits, ancestral sampling and the DDIM(η) step. Operation order follows upstream's float32 code.
// CPU twin: src/backend/cpu/diffusion_step.rs.
#include "common.cuh"

extern "C" __global__ void q_sample_f32(const float* __restrict__ x0, const float* __restrict__ noise, float* __restrict__ xt, int n,
                                        float sqrt_ab, float sqrt_1m_ab) {
  KC_FOR_EACH(i, n) xt[i] = sqrt_ab * x0[i] + sqrt_1m_ab * noise[i];
}

extern "C" __global__ void p_mean_variance_f32(const float* __restrict__ xt, const float* __restrict__ model_out, float* __restrict__ mean,
                                               float* __restrict__ logvar, float* __restrict__ pred_x0, int n, int c, int s, StepCoefs a) {
  const long long cs = (long long)c * s;
  const int mc = a.var_type >= 2 ? c : 2 * c;  // fixed variance types: no second block
  KC_FOR_EACH(i, n) {
    long long b = i / cs, r = i % cs;
    float eps = model_out[b * mc * s + r];
    float x0 = a.sqrt_recip_ab * xt[i] - a.sqrt_recipm1_ab * eps;
    if (a.clip) x0 = fminf(fmaxf(x0, -1.0f), 1.0f);
    pred_x0[i] = x0;
    mean[i] = a.c1 * x0 + a.c2 * xt[i];
    if (a.var_type == 0) {
      float frac = (model_out[b * mc * s + cs + r] + 1.0f) / 2.0f;
      logvar[i] = frac * a.log_beta + (1.0f - frac) * a.post_logvar_clipped;
    } else if (a.var_type == 1) {
      logvar[i] = model_out[b * mc * s + cs + r];
    } else {
      logvar[i] = a.fixed_logvar;
    }
  }
}

// KL(q(x_{t−1}|x_t, x0) ‖ p(x_{t−1}|x_t)) per element, in bits.
extern "C" __global__ void kl_bits_f32(const float* __restrict__ x0, const float* __restrict__ xt, const float* __restrict__ p_mean,
                                       const float* __restrict__ p_logvar, float* __restrict__ kl, int n, StepCoefs a) {
  const float inv_ln2 = 1.0f / 0.6931471805599453f;
  KC_FOR_EACH(i, n) {
    float m1 = a.c1 * x0[i] + a.c2 * xt[i];
    float lv1 = a.post_logvar_clipped, lv2 = p_logvar[i];
    float d = m1 - p_mean[i];
    kl[i] = 0.5f * (-1.0f + lv2 - lv1 + expf(lv1 - lv2) + d * d * expf(-lv2)) * inv_ln2;
  }
}

extern "C" __global__ void p_sample_f32(const float* __restrict__ mean, const float* __restrict__ logvar, const float* __restrict__ z,
                                        float* __restrict__ out, int n, float nonzero) {
  KC_FOR_EACH(i, n) out[i] = mean[i] + nonzero * expf(0.5f * logvar[i]) * z[i];
}

extern "C" __global__ void ddim_step_f32(const float* __restrict__ xt, const float* __restrict__ pred_x0, const float* __restrict__ z,
                                         float* __restrict__ out, int n, DdimCoefs k) {
  const float sigma = k.eta * sqrtf((1.0f - k.ab_prev) / (1.0f - k.ab)) * sqrtf(1.0f - k.ab / k.ab_prev);
  const float k_eps = sqrtf(1.0f - k.ab_prev - sigma * sigma), k_x0 = sqrtf(k.ab_prev);
  const float nonzero = k.nonzero ? 1.0f : 0.0f;
  KC_FOR_EACH(i, n) {
    float eps = (k.sqrt_recip_ab * xt[i] - pred_x0[i]) / k.sqrt_recipm1_ab;
    out[i] = pred_x0[i] * k_x0 + k_eps * eps + nonzero * sigma * z[i];
  }
}
