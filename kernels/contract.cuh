// The kernel contract: every struct a kernel takes by value and every launch constant the host
// must agree with, in one place. build.rs reads this file and generates the Rust side from it
// (src/ops/contract.rs includes the result): a `#[repr(C)]` mirror of each struct with the same
// field order, and a `u32` constant per #define. Kernel signatures are read from kernels/*.cu
// and become typed launch functions (src/backend/cuda/launch.rs), so a wrong argument count or
// type is a Rust compile error, and a field added here reaches both sides at once.
//
// Format, kept simple because build.rs parses it:
//   #define NAME INTEGER            (an integer literal; derived values are static_asserted below)
//   struct NAME {                   then one field per line: `int NAME;`, `float NAME;` or
//     int NAME;  // comment           `int NAME[K];`, then `};`
//   };
#pragma once

// ---- launch constants ------------------------------------------------------------------------
// igemm.cuh: block IGEMM_THREADS×IGEMM_THREADS threads, an IGEMM_TM×IGEMM_TN output tile per
// block, K step IGEMM_TK, two f32 tiles of shared memory.
#define IGEMM_TM 64
#define IGEMM_TN 64
#define IGEMM_TK 16
#define IGEMM_THREADS 16
#define IGEMM_SMEM_BYTES 8192
// 1-D grid-stride kernels (KC_FOR_EACH): threads per block and the cap on the grid.
#define EW_BLOCK 256
#define EW_MAX_BLOCKS 4096
// Per-(image, group) and per-plane reductions (block_sum needs a multiple of 32, at most 1024).
#define REDUCE_BLOCK 256
#define MEAN_STD_BLOCK 1024
// group_norm.cu, split launches: each (image, group) is cut into chunks of at least GN_MIN_CHUNK
// values (a multiple of 4), aiming at GN_TARGET_BLOCKS blocks in all (≈ 8 per SM of a 132-SM H200
// at batch 1); at most GN_BLOCK threads per block, fewer for short chunks (one float4 each).
#define GN_BLOCK 256
#define GN_TARGET_BLOCKS 1024
#define GN_MIN_CHUNK 128
#define ATTN_BLOCK 128
// Mahalanobis: one block per (position, image); its warps share the rows of L⁻¹.
#define MAHA_BLOCK 256
// linear_tc.cu (bf16 tensor cores): a TC_TM×TC_TN output tile per block of TC_THREADS (4 warps in
// 2×2, 32×32 each), K step TC_TK, shared rows padded to TC_LDS bf16, two stages of A and B tiles.
#define TC_TM 64
#define TC_TN 64
#define TC_TK 32
#define TC_THREADS 128
#define TC_LDS 40
#define TC_SMEM_BYTES 20480
// Shared memory a kernel may use without the cuFuncSetAttribute opt-in.
#define SMEM_DEFAULT_LIMIT 49152

// ---- parameter structs -----------------------------------------------------------------------
// conv2d.cu: x [n,c,h,w], w [o,c/groups,kh,kw], y [n,o,ho,wo]; stride (sh,sw), padding top/left.
struct Conv2dGeom {
  int n;
  int c;
  int h;
  int w;
  int o;
  int kh;
  int kw;
  int ho;
  int wo;
  int sh;
  int sw;
  int pt;
  int pl;
  int groups;
  int has_bias;
};

// group_norm.cu: x [n, c, s]; statistics per (image, group) of c/groups channels.
struct GroupNormGeom {
  int n;
  int c;
  int s;
  int groups;
  float eps;
  int silu;
  int has_ss;  // scale-shift GN(x)·(1+scale)+shift with scale, shift [n, c]
};

// group_norm.cu, split launches: block i handles chunk i % splits of (image, group) i / splits,
// values [chunk·(i % splits), min(+chunk, len)) of the group's len = (c/groups)·s.
struct GroupNormSplit {
  int splits;
  int chunk;  // a multiple of 4: every chunk of a 16-byte-aligned group starts aligned
};

// pool.cu: planes = n·c images of h×w, square window k, stride st, padding p.
struct Pool2dGeom {
  int planes;
  int h;
  int w;
  int ho;
  int wo;
  int k;
  int st;
  int p;
};

// elementwise.cu: a's dims padded to rank 4 with leading 1s, b's contiguous strides (0 where b
// has size 1) and b's dims.
struct BroadcastGeom {
  int dims[4];
  int bstride[4];
  int bdims[4];
};

// scheduler.cu: one timestep's coefficients of the posterior and of p(x_{t−1}|x_t), as f32 like
// upstream's _extract_into_tensor(...).float().
struct StepCoefs {
  float sqrt_recip_ab;
  float sqrt_recipm1_ab;
  float c1;                   // posterior mean μ̃ = c1·x0 + c2·x_t
  float c2;
  float post_logvar_clipped;
  float log_beta;
  float fixed_logvar;         // log-variance of the fixed variance types
  int var_type;               // VarType: 0 learned range, 1 learned, 2 fixed large, 3 fixed small
  int clip;                   // clamp x̂0 to [−1, 1]
};

// scheduler.cu: one DDIM(η) step.
struct DdimCoefs {
  float sqrt_recip_ab;
  float sqrt_recipm1_ab;
  float ab;
  float ab_prev;
  float eta;
  int nonzero;                // 0 at k = 0: no noise added
};

// optim.cu: one AdamW step (torch.optim.AdamW, amsgrad off). Everything derived is computed on
// the host in f64 and rounded once, as torch computes its Python-float scalars: the f32 of 0.999
// is not 1 − 0.001 to f32 accuracy, so 1 − β is passed, not β alone.
struct AdamwCoefs {
  float decay;                // 1 − lr·weight_decay (decoupled weight decay)
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float step_size;            // lr / (1 − β1^t)
  float bc2_sqrt;             // √(1 − β2^t)
};

#ifdef __cplusplus
static_assert(IGEMM_TM == IGEMM_THREADS * 4 && IGEMM_TN == IGEMM_THREADS * 4, "each igemm thread owns a 4x4 sub-tile");
static_assert(IGEMM_SMEM_BYTES == 4 * IGEMM_TK * (IGEMM_TM + IGEMM_TN), "igemm keeps one A and one B tile in shared memory");
static_assert(IGEMM_THREADS * IGEMM_THREADS * 4 == IGEMM_TK * IGEMM_TM, "each thread loads 4 elements of each tile per K step");
static_assert(TC_TM == 64 && TC_TN == 64 && TC_THREADS == 128, "linear_tc.cu: 4 warps of 32x32 cover the tile");
static_assert(TC_TM * TC_TK / 8 == 2 * TC_THREADS, "linear_tc.cu: each thread copies two 16-byte chunks of each operand per stage");
static_assert(TC_LDS >= TC_TK && TC_LDS % 8 == 0, "linear_tc.cu: padded rows stay 16-byte aligned for cp.async and ldmatrix");
static_assert(TC_SMEM_BYTES == 2 * 2 * TC_TM * TC_LDS * 2, "linear_tc.cu: two stages of an A and a B tile of bf16");
static_assert(TC_SMEM_BYTES <= SMEM_DEFAULT_LIMIT, "linear_tc.cu needs no shared-memory opt-in");
#endif
