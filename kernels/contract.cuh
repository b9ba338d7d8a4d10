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
// attention_flash.cu (f32 flash attention): a block of FA_THREADS per (batch·head, FA_BQ queries),
// key tiles of FA_BK streamed through two shared-memory stages; K/V rows padded to FA_LDK floats,
// P rows to FA_LDP (bank spread); head dims up to FA_MAX_D (larger ones take attention.cu).
#define FA_BQ 64
#define FA_BK 32
#define FA_THREADS 128
#define FA_LDK 36
#define FA_LDP 68
#define FA_MAX_D 128
// attention_flash_tc.cu (bf16/f16 tensor cores): FTC_BQ queries per block of FTC_THREADS (a warp
// per 16 queries), key tiles of FTC_BK, shared rows padded to FTC_LDS 16-bit elements, head dims
// a multiple of 16 up to FTC_MAX_D.
#define FTC_BQ 64
#define FTC_BK 64
#define FTC_THREADS 128
#define FTC_LDS 72
#define FTC_MAX_D 128
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
static_assert(FA_THREADS == 128 && FA_BQ == 4 * (FA_THREADS / 8) && FA_BK == 4 * 8, "attention_flash.cu: thread (ty, tx) of 16 x 8 owns queries 4ty..+4 and keys 4tx..+4 of a tile");
static_assert(FA_LDK >= FA_BK && FA_LDK % 4 == 0 && FA_LDP >= FA_BQ && FA_LDP % 4 == 0, "attention_flash.cu: padded rows stay 16-byte aligned");
static_assert(FTC_BQ == 16 * (FTC_THREADS / 32) && FTC_BK % 16 == 0, "attention_flash_tc.cu: a warp per 16 queries, k16 steps over a key tile");
static_assert(FTC_LDS >= FTC_BQ && FTC_LDS >= FTC_BK && FTC_LDS % 8 == 0, "attention_flash_tc.cu: padded rows stay 16-byte aligned for cp.async and ldmatrix");
#endif
