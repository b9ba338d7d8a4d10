// Probes of the tensor-core primitives (kernels/tc.cuh) for tests/emulator_tensor_core.rs: each
// loads its fragments by the PTX ISA's formulas, written out here independently of the
// emulator's implementation, so a layout error in either shows against a plain matrix product.
// Launched on one warp unless stated; never part of a model.
#include "common.cuh"

// m16n8k16: a 16×16 row-major, b 16×8 row-major (k, n), c and d 16×8 row-major f32; kind 0 bf16,
// 1 f16. Threads with threadIdx.x >= active return first (a partial warp, which must fail).
extern "C" __global__ void selftest_mma_m16n8k16_f32(const uint16_t* a, const uint16_t* b, const float* c, float* d, int kind, int active) {
  if ((int)threadIdx.x >= active) return;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  uint32_t ra[4] = {0, 0, 0, 0}, rb[2] = {0, 0};
  for (int i = 0; i < 8; ++i) {  // a_i: row g for i in {0,1,4,5}, else g+8; col 2t + (i&1) (+8 for i >= 4)
    const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
    const int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
    ra[i / 2] |= (uint32_t)a[row * 16 + col] << (16 * (i & 1));
  }
  for (int i = 0; i < 4; ++i) {  // b_i: row 2t + (i&1) (+8 for i >= 2), col g
    const int row = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
    rb[i / 2] |= (uint32_t)b[row * 8 + g] << (16 * (i & 1));
  }
  float rc[4], rd[4];
  for (int i = 0; i < 4; ++i) rc[i] = c[(i < 2 ? g : g + 8) * 8 + t * 2 + (i & 1)];  // c_i: row g / g+8, col 2t + (i&1)
  if (kind == 0) kc_mma_m16n8k16_bf16(rd, ra, rb, rc);
  else kc_mma_m16n8k16_f16(rd, ra, rb, rc);
  for (int i = 0; i < 4; ++i) d[(i < 2 ? g : g + 8) * 8 + t * 2 + (i & 1)] = rd[i];
}

// m16n8k8 tf32: a 16×8, b 8×8 (k, n), c and d 16×8, all row-major f32 (passed as raw bits).
extern "C" __global__ void selftest_mma_m16n8k8_tf32_f32(const float* a, const float* b, const float* c, float* d) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  uint32_t ra[4], rb[2];
  for (int i = 0; i < 4; ++i) {  // a_i: row g for a0, a2, g+8 for a1, a3; col t for a0, a1, t+4 for a2, a3
    const int row = (i == 0 || i == 2) ? g : g + 8, col = i < 2 ? t : t + 4;
    ra[i] = __float_as_uint(a[row * 8 + col]);
  }
  rb[0] = __float_as_uint(b[t * 8 + g]);  // b0: row t, col g; b1: row t+4
  rb[1] = __float_as_uint(b[(t + 4) * 8 + g]);
  float rc[4], rd[4];
  for (int i = 0; i < 4; ++i) rc[i] = c[(i < 2 ? g : g + 8) * 8 + t * 2 + (i & 1)];
  kc_mma_m16n8k8_tf32(rd, ra, rb, rc);
  for (int i = 0; i < 4; ++i) d[(i < 2 ? g : g + 8) * 8 + t * 2 + (i & 1)] = rd[i];
}

// ldmatrix: m holds 32 rows of 8 b16; lane l gives the address of row rows[l] (shifted by
// `misalign` bytes). mode 0..2 = .x1/.x2/.x4, 3..5 the same with .trans. out[4·lane + i] = r[i].
extern "C" __global__ void selftest_ldmatrix_b16(const uint16_t* m, const int* rows, uint32_t* out, int mode, int misalign) {
  uint16_t* s = dynamic_smem<uint16_t>();
  const int lane = threadIdx.x;
  for (int j = 0; j < 8; ++j) s[lane * 8 + j] = m[lane * 8 + j];
  __syncthreads();
  const void* row = (const char*)(s + rows[lane] * 8) + misalign;
  uint32_t r[4] = {0, 0, 0, 0};
  switch (mode) {
    case 0: kc_ldmatrix_x1(r, row); break;
    case 1: kc_ldmatrix_x2(r, row); break;
    case 2: kc_ldmatrix_x4(r, row); break;
    case 3: kc_ldmatrix_x1_trans(r, row); break;
    case 4: kc_ldmatrix_x2_trans(r, row); break;
    default: kc_ldmatrix_x4_trans(r, row); break;
  }
  for (int i = 0; i < 4; ++i) out[4 * lane + i] = r[i];
}

// The usual pairing of the two: A (16×16 row-major) by ldmatrix.x4 from shared memory, B either
// from bt (8×16, n-major: row n holds k) by ldmatrix.x2, or from b (16×8, k-major) by .x2.trans;
// d = A·B (16×8 row-major). A convention that differs between ldmatrix and mma shows here.
extern "C" __global__ void selftest_mma_ldmatrix_bf16_f32(const uint16_t* a, const uint16_t* bt, const uint16_t* b, float* d, int trans_b) {
  uint16_t* as = dynamic_smem<uint16_t>();  // [16][16]
  uint16_t* bs = as + 256;                  // [8][16] (bt) or [16][8] (b)
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  for (int j = 0; j < 8; ++j) as[lane * 8 + j] = a[lane * 8 + j];
  for (int j = 0; j < 4; ++j) bs[lane * 4 + j] = trans_b ? b[lane * 4 + j] : bt[lane * 4 + j];
  __syncthreads();
  uint32_t ra[4], rb[2];
  kc_ldmatrix_x4(ra, as + (lane & 15) * 16 + (lane >> 4) * 8);
  if (trans_b) kc_ldmatrix_x2_trans(rb, bs + (lane & 15) * 8);                   // lane l: row k = l
  else kc_ldmatrix_x2(rb, bs + (lane & 7) * 16 + ((lane >> 3) & 1) * 8);        // lane l: row n = l%8, k half l/8
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  kc_mma_m16n8k16_bf16(acc, ra, rb, acc);
  for (int i = 0; i < 4; ++i) d[(i < 2 ? g : g + 8) * 8 + t * 2 + (i & 1)] = acc[i];
}

// cp.async. src holds 8·blockDim.x floats; out 12·blockDim.x. mode:
// 0 wait, barrier, read the neighbour's copy (right); 1 read one's own copy before the wait
// (poison); 2 two groups, wait_group 1 lands only the older; 3 the 4/8-byte forms and the
// zero-filling 16-byte form; 4 read the neighbour's copy after the wait but without a barrier
// (a race); 5 a 16-byte copy to a 4-byte-aligned address (misaligned).
extern "C" __global__ void selftest_cp_async_f32(const float* src, float* out, int mode) {
  float* s0 = dynamic_smem<float>();
  const int t = threadIdx.x, n = blockDim.x;
  float* s1 = s0 + 4 * n;
  float* o = out + 12 * t;
  const int nb = (t + 1) % n;
  if (mode == 0 || mode == 4) {
    kc_cp_async_cg16(s0 + 4 * t, src + 4 * t);
    kc_cp_async_commit();
    kc_cp_async_wait<0>();
    if (mode == 0) __syncthreads();
    for (int j = 0; j < 4; ++j) o[j] = s0[4 * nb + j];
  } else if (mode == 1) {
    kc_cp_async_ca16(s0 + 4 * t, src + 4 * t);
    kc_cp_async_commit();
    for (int j = 0; j < 4; ++j) o[j] = s0[4 * t + j];
    kc_cp_async_wait<0>();
  } else if (mode == 2) {
    kc_cp_async_cg16(s0 + 4 * t, src + 4 * t);
    kc_cp_async_commit();
    kc_cp_async_cg16(s1 + 4 * t, src + 4 * (n + t));
    kc_cp_async_commit();
    kc_cp_async_wait<1>();
    for (int j = 0; j < 4; ++j) o[j] = s0[4 * t + j];
    for (int j = 0; j < 4; ++j) o[4 + j] = s1[4 * t + j];
    kc_cp_async_wait<0>();
    for (int j = 0; j < 4; ++j) o[8 + j] = s1[4 * t + j];
  } else if (mode == 3) {
    kc_cp_async_ca4(s0 + 4 * t, src + 4 * t);
    kc_cp_async_ca4(s0 + 4 * t + 1, src + 4 * t + 1);
    kc_cp_async_ca8(s0 + 4 * t + 2, src + 4 * t + 2);
    kc_cp_async_cg16_zfill(s1 + 4 * t, src + 4 * (n + t), 8);
    kc_cp_async_commit();
    kc_cp_async_wait<0>();
    for (int j = 0; j < 4; ++j) o[j] = s0[4 * t + j];
    for (int j = 0; j < 4; ++j) o[4 + j] = s1[4 * t + j];
  } else {
    kc_cp_async_cg16(s0 + 4 * t + 1, src + 4 * t);
    kc_cp_async_commit();
    kc_cp_async_wait<0>();
  }
}

// 16-byte vector accesses: dst[4t..4t+3] = src[4t + load_off ..]; the store goes to
// dst + 4t + store_off. An offset that is not a multiple of 4 floats is misaligned.
extern "C" __global__ void selftest_vec16_f32(const float* src, float* dst, int load_off, int store_off) {
  const int t = threadIdx.x;
  float4 v = kc_ld_float4(src + 4 * t + load_off);
  kc_st_float4(dst + 4 * t + store_off, v);
}

// Conversions: per element, the bits of bf16(x), f16(x) (round to nearest even) and of the
// tf32 rounding (ties away), and both narrow values widened back.
extern "C" __global__ void selftest_convert_f32(const float* x, uint16_t* bf, uint16_t* hf, uint32_t* tf, float* bf_back, float* hf_back, int n) {
  KC_FOR_EACH(i, n) {
    kc_bf16 b = kc_float2bf16_rn(x[i]);
    kc_half h = kc_float2half_rn(x[i]);
    bf[i] = b.bits;
    hf[i] = h.bits;
    tf[i] = kc_float2tf32_rna(x[i]);
    bf_back[i] = kc_bf162float(b);
    hf_back[i] = kc_half2float(h);
  }
}

// Packed pairs: out[2i] = pack_bf16x2(x[2i], x[2i+1]), out[2i+1] = pack_f16x2(...).
extern "C" __global__ void selftest_pack_pairs_f32(const float* x, uint32_t* out, int pairs) {
  KC_FOR_EACH(i, pairs) {
    out[2 * i] = kc_pack_bf16x2_rn(x[2 * i], x[2 * i + 1]);
    out[2 * i + 1] = kc_pack_f16x2_rn(x[2 * i], x[2 * i + 1]);
  }
}

// Touches all of its dynamic shared memory (smem_ints ints): for the 48 KiB opt-in.
extern "C" __global__ void selftest_smem_touch_i32(int* out, int smem_ints) {
  int* s = dynamic_smem<int>();
  for (int i = threadIdx.x; i < smem_ints; i += blockDim.x) s[i] = i;
  __syncthreads();
  out[threadIdx.x] = s[smem_ints - 1 - (int)threadIdx.x];
}

// A kernel with 1 KiB of static __shared__ beside its dynamic shared memory: static + dynamic
// above 48 KiB needs the opt-in even when the dynamic part alone is within it (the driver's rule,
// which every tensor-core GEMM, with 16 static bytes beside 48 KiB of stages, once broke).
extern "C" __global__ void selftest_smem_static_touch_i32(int* out, int smem_ints) {
  __shared__ int fixed[256];
  int* s = dynamic_smem<int>();
  fixed[threadIdx.x % 256] = (int)threadIdx.x;
  for (int i = threadIdx.x; i < smem_ints; i += blockDim.x) s[i] = i;
  __syncthreads();
  out[threadIdx.x] = s[smem_ints - 1 - (int)threadIdx.x] + fixed[255 - threadIdx.x % 256];
}
