// guided-diffusion's QKVAttentionLegacy, fused: scores, softmax and the weighted sum of values for
// one query per block, the T scores held in dynamic shared memory. qkv [B·H, 3d, T] with q, k, v
// consecutive d-row blocks per head; scores = q·k·d^-½ (= (q·d^-¼)·(k·d^-¼)).
// Launch: grid (T, B·H), block 128, smem (T + 32)·4 bytes (forward), (2T + 32)·4 (backward).
// CPU twin: src/backend/cpu/attention.rs. Used for head dims > FA_MAX_D only; attention_flash.cu is
// the default (kernels/README.md, "Flash attention").
#include "common.cuh"

// p[j] = softmax_j(q[:,tq]·k[:,j]·d^-½) into p[0..t); returns nothing, p normalised.
__device__ __forceinline__ void attn_probs(const float* q, const float* k, int d, int t, int tq, float* p, float* scratch) {
  const float s2 = 1.0f / sqrtf((float)d);
  float mx = KC_NEG_INF;
  for (int j = threadIdx.x; j < t; j += blockDim.x) {
    float s = 0.0f;
    for (int c = 0; c < d; ++c) s = fmaf(q[c * t + tq], k[c * t + j], s);
    p[j] = s * s2;
    mx = fmaxf(mx, p[j]);
  }
  mx = block_max(mx, scratch);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < t; j += blockDim.x) {
    float e = expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  sum = block_sum(sum, scratch);
  float inv = 1.0f / sum;
  for (int j = threadIdx.x; j < t; j += blockDim.x) p[j] *= inv;
  __syncthreads();
}

extern "C" __global__ void attention_legacy_f32(const float* __restrict__ qkv, float* __restrict__ out, int d, int t) {
  float* p = dynamic_smem<float>();
  float* scratch = p + t;
  const int b = blockIdx.y, tq = blockIdx.x;
  const float* q = qkv + (long long)b * 3 * d * t;
  const float* k = q + (long long)d * t;
  const float* v = k + (long long)d * t;
  attn_probs(q, k, d, t, tq, p, scratch);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int c = warp; c < d; c += nwarps) {
    float acc = 0.0f;
    for (int j = lane; j < t; j += 32) acc = fmaf(p[j], v[c * t + j], acc);
    acc = warp_sum(acc);
    if (lane == 0) out[((long long)b * d + c) * t + tq] = acc;
  }
}

// gqkv must be zero on entry: gK and gV are accumulated over queries with atomics; gQ[:, tq] is
// written by its own block only.
extern "C" __global__ void attention_legacy_x_backward_f32(const float* __restrict__ qkv, const float* __restrict__ gy,
                                                           float* __restrict__ gqkv, int d, int t) {
  float* p = dynamic_smem<float>();
  float* gz = p + t;
  float* scratch = gz + t;
  const int b = blockIdx.y, tq = blockIdx.x;
  const float* q = qkv + (long long)b * 3 * d * t;
  const float* k = q + (long long)d * t;
  const float* v = k + (long long)d * t;
  const float* ga = gy + (long long)b * d * t;
  float* gq = gqkv + (long long)b * 3 * d * t;
  float* gk = gq + (long long)d * t;
  float* gv = gk + (long long)d * t;
  attn_probs(q, k, d, t, tq, p, scratch);
  // gP[j] = Σ_c gA[c,tq]·v[c,j];  dot = Σ_j gP[j]·p[j]
  float dot = 0.0f;
  for (int j = threadIdx.x; j < t; j += blockDim.x) {
    float s = 0.0f;
    for (int c = 0; c < d; ++c) s = fmaf(ga[c * t + tq], v[c * t + j], s);
    gz[j] = s;
    dot = fmaf(s, p[j], dot);
  }
  dot = block_sum(dot, scratch);
  const float s2 = 1.0f / sqrtf((float)d);
  for (int j = threadIdx.x; j < t; j += blockDim.x) gz[j] = p[j] * (gz[j] - dot) * s2;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int c = warp; c < d; c += nwarps) {
    float acc = 0.0f;
    for (int j = lane; j < t; j += 32) acc = fmaf(gz[j], k[c * t + j], acc);
    acc = warp_sum(acc);
    if (lane == 0) gq[c * t + tq] = acc;
  }
  for (long long e = threadIdx.x; e < (long long)d * t; e += blockDim.x) {
    int c = (int)(e / t), j = (int)(e % t);
    atomicAdd(&gk[e], gz[j] * q[c * t + tq]);
    atomicAdd(&gv[e], p[j] * ga[c * t + tq]);
  }
}
