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
// group_norm_fused_f32: a group whose values (padded to 4) and channels' (a, bb) pairs fit in this
// many floats of shared memory (24 KiB) is normalised by one block in one launch.
#define GN_FUSED_FLOATS 6144
// group_norm_coefs_f32 → a conv's operand loader (gn_pre.cuh): one record of this many floats per
// (image, channel): x0, mean of x − x0, 1/σ, a, bb, then padding to 32 bytes.
#define GN_PRE_FLOATS 8
#define ATTN_BLOCK 128
// Mahalanobis: one block per (position, image); its warps share the rows of L⁻¹.
#define MAHA_BLOCK 256
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

// ==== tensor-core implicit GEMM (kernels/tc_gemm.cuh; issue #14 item 2) ==========================
// Block tiles: large TCG_L_BM×TCG_L_BN with TCG_L_THREADS (8 warps, 64×32 each), small
// TCG_S_BM×TCG_S_BN with TCG_S_THREADS (4 warps, 32×32 each); K step TCG_BK elements, TCG_STAGES
// cp.async stages of an A and a B tile. Shared memory per launch: TCG_{L,S}_SMEM_{2,4} for 2-byte
// (bf16/f16) and 4-byte (tf32) operands; the large tf32 tile needs the opt-in above 48 KiB.
#define TCG_L_BM 128
#define TCG_L_BN 128
#define TCG_L_THREADS 256
#define TCG_S_BM 64
#define TCG_S_BN 64
#define TCG_S_THREADS 128
#define TCG_BK 32
#define TCG_STAGES 3
#define TCG_L_SMEM_2 49152
#define TCG_L_SMEM_4 98304
#define TCG_S_SMEM_2 24576
#define TCG_S_SMEM_4 49152
// Split-K below this many blocks (~2 waves of the 132 SMs of an H100/H200), each split at least
// TCG_SPLITK_MIN_STEPS K steps, at most TCG_SPLITK_MAX splits.
#define TCG_SPLITK_MIN_BLOCKS 264
#define TCG_SPLITK_MIN_STEPS 4
#define TCG_SPLITK_MAX 16

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
  int has_ss;  // scale-shift GN(x)·(1+scale)+shift
  // where scale and shift of image b, channel ch are: scale[b·ss_stride + scale_off + ch],
  // shift[b·ss_stride + shift_off + ch] — [n, c] tensors (ss_stride = c, offsets 0), or both
  // columns of one packed [n, ss_stride] emb projection (group_norm_emb)
  int ss_stride;
  int scale_off;
  int shift_off;
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


// ---- tensor-core implicit GEMM (tc_gemm.cuh) ---------------------------------------------------
// C[m×n] = A[m×k]·B[n×k]ᵀ (both operands rows with k contiguous, in the narrow type). Column n
// belongs to image n / hw at pixel n % hw; the result goes to out[((n / hw)·m + row)·hw + n % hw]
// (conv: NCHW; linear: hw = n, so out[row·n + col]). K steps [split·kt_per_split, +kt_per_split)
// per blockIdx.z; splits > 1 writes f32 partials ws[split][m][n] that each tile's last block sums (tc_splitk_finish).
struct TcGemmGeom {
  int m;
  int n;
  int k;
  int hw;
  int kt_per_split;
  int splits;
  int has_bias;
  int bias_on_n;  // bias[col] (linear) instead of bias[row] (conv)
  int has_res;    // out += res (same layout as out), fused after the bias
};

// tc_support.cu: a 4-D gather-cast. The destination is row-major over dims d; its element
// (i0, i1, i2, i3) is the f32 source element Σ i_k · ss[k] (ss: source strides, elements), cast to
// the narrow type: NCHW → NHWC, the weight reorders, transposes.
struct TcPermute {
  int d[4];
  int ss[4];
};

#ifdef __cplusplus
static_assert(IGEMM_TM == IGEMM_THREADS * 4 && IGEMM_TN == IGEMM_THREADS * 4, "each igemm thread owns a 4x4 sub-tile");
static_assert(IGEMM_SMEM_BYTES == 4 * IGEMM_TK * (IGEMM_TM + IGEMM_TN), "igemm keeps one A and one B tile in shared memory");
static_assert(IGEMM_THREADS * IGEMM_THREADS * 4 == IGEMM_TK * IGEMM_TM, "each thread loads 4 elements of each tile per K step");
static_assert(TCG_L_SMEM_2 == TCG_STAGES * (TCG_L_BM + TCG_L_BN) * TCG_BK * 2 && TCG_L_SMEM_4 == 2 * TCG_L_SMEM_2, "tc_gemm.cuh: stages of an A and a B tile, unpadded (swizzled)");
static_assert(TCG_S_SMEM_2 == TCG_STAGES * (TCG_S_BM + TCG_S_BN) * TCG_BK * 2 && TCG_S_SMEM_4 == 2 * TCG_S_SMEM_2, "tc_gemm.cuh: stages of an A and a B tile, unpadded (swizzled)");
static_assert(TCG_L_SMEM_2 <= SMEM_DEFAULT_LIMIT && TCG_S_SMEM_4 <= SMEM_DEFAULT_LIMIT, "only the large tf32 tile opts in");
static_assert(TCG_L_THREADS == 32 * (TCG_L_BM / 64) * (TCG_L_BN / 32) && TCG_S_THREADS == 32 * (TCG_S_BM / 32) * (TCG_S_BN / 32), "warp tiles 64x32 (large) and 32x32 (small)");
static_assert(FA_THREADS == 128 && FA_BQ == 4 * (FA_THREADS / 8) && FA_BK == 4 * 8, "attention_flash.cu: thread (ty, tx) of 16 x 8 owns queries 4ty..+4 and keys 4tx..+4 of a tile");
static_assert(FA_LDK >= FA_BK && FA_LDK % 4 == 0 && FA_LDP >= FA_BQ && FA_LDP % 4 == 0, "attention_flash.cu: padded rows stay 16-byte aligned");
static_assert(FTC_BQ == 16 * (FTC_THREADS / 32) && FTC_BK % 16 == 0, "attention_flash_tc.cu: a warp per 16 queries, k16 steps over a key tile");
static_assert(FTC_LDS >= FTC_BQ && FTC_LDS >= FTC_BK && FTC_LDS % 8 == 0, "attention_flash_tc.cu: padded rows stay 16-byte aligned for cp.async and ldmatrix");
#endif
