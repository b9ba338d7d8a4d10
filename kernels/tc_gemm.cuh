// The tensor-core implicit-GEMM engine: C[M×N] = A[M×K]·B[N×K]ᵀ with both operands read as rows
// of k-contiguous narrow elements (bf16/f16: 2 bytes, tf32: 4 bytes) through loader functors, f32
// accumulators, and an epilogue that adds the bias (and a residual) and writes the op's layout.
// Conv (conv2d_tc.cu) and linear (linear_tc.cu) are loaders over this one body. Design and the
// occupancy arithmetic: kernels/README.md, "Tensor-core implicit GEMM".
//
//   block (bx, by, split) → C[BM·by .. +BM, BN·bx .. +BN], K steps [split·kt_per_split, +kt_per_split)
//   warps (BM/WM)×(BN/WN); warp (wm, wn) owns WM×WN = (WM/16) m16 × (WN/8) n8 mma tiles
//   shared: TCG_STAGES × { A [BM][BK], B [BN][BK] } narrow elements, rows of 16-byte chunks,
//           chunk c of row r stored at chunk c ^ swz(r) (XOR swizzle, no padding; see tc_swz)
//   prologue: stages 0 .. S−2 issued by cp.async (16 B, zero-fill past M, N, K, image edges)
//   step kt:  wait_group S−2 (stage kt landed) ; __syncthreads
//             issue stage kt+S−1 into the slot stage kt−1 used (everyone left it at the barrier)
//             per mma k step: A by ldmatrix.x4 per m16, B by ldmatrix.x4 per two n8; mma.sync
//   epilogue: f32 acc (+ bias, + residual) → out; with split-K → ws[split] partials, and the
//             tile's last block to finish sums them into out (tc_splitk_finish); with `gn`, the
//             block that wrote the tile then makes its share of y's group-norm records (tc_gn_out)
#pragma once
#include "common.cuh"
#include "gn_out.cuh"
#include "gn_pre.cuh"

// ---- precisions: the operand element, and the mma that consumes two 16-byte chunks of k -------
struct TcBf16 {
  typedef uint16_t E;
  __device__ __forceinline__ static void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) { kc_mma_m16n8k16_bf16(d, a, b, d); }
  __device__ __forceinline__ static E cvt(float f) { return kc_float2bf16_rn(f).bits; }
};
struct TcF16 {
  typedef uint16_t E;
  __device__ __forceinline__ static void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) { kc_mma_m16n8k16_f16(d, a, b, d); }
  __device__ __forceinline__ static E cvt(float f) { return kc_float2half_rn(f).bits; }
};
struct TcTf32 {
  typedef uint32_t E;
  __device__ __forceinline__ static void mma(float d[4], const uint32_t a[4], const uint32_t b[2]) { kc_mma_m16n8k8_tf32(d, a, b, d); }
  __device__ __forceinline__ static E cvt(float f) { return kc_float2tf32_rna(f); }
};

// ---- tiles -------------------------------------------------------------------------------------
template <int BM_, int BN_, int WM_, int WN_>
struct TcTile {
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_;
  static constexpr int WARPS_N = BN / WN, THREADS = 32 * (BM / WM) * WARPS_N;
  static constexpr int MI = WM / 16, NI = WN / 8;
};
typedef TcTile<TCG_L_BM, TCG_L_BN, 64, 32> TcLarge;
typedef TcTile<TCG_S_BM, TCG_S_BN, 32, 32> TcSmall;

// Per element size: 16-byte chunks per BK-wide row, and per thread and operand the rows it copies.
template <class P>
struct TcChunks {
  static constexpr int EPC = 16 / (int)sizeof(typename P::E);  // elements per chunk: 8 or 4
  static constexpr int CPR = TCG_BK / EPC;                      // chunks per row: 4 or 8
};

// XOR swizzle of the chunk index, so the 8 rows an ldmatrix reads at one logical chunk land in 8
// different 16-byte bank groups (a 128-byte line holds 128 / (16·CPR) rows: 2 for bf16, 1 for tf32):
// bf16 rows r, r+2, r+4, r+6 would share a bank group unswizzled; chunk ^ (r/2 mod 4) separates them.
template <int CPR>
__device__ __forceinline__ int tc_swz(int r, int c) {
  return r * CPR + (c ^ ((r / (8 / CPR)) % CPR));
}

// ---- loaders: per thread, a fixed chunk column and J rows of one operand ----------------------
// The thread's rows are r_j = tid / CPR + j·(THREADS / CPR), j < J; its chunk column tid % CPR.
// `init(row0, rstep, col, kt0)` sets up rows row0 + j·rstep and the k of K step kt0 (the only
// divisions); `src(j)` is row j's chunk at the current k (null: zero-fill, from `base()`, which is
// never read); `next()` steps k by BK.

// Plain rows: X[rows][K] (weights, linear operands). K % EPC == 0.
template <class P, int J>
struct TcRowsLoader {
  typedef typename P::E E;
  static constexpr bool STAGED = false;  // read by cp.async straight into shared memory
  const E* x;
  int rows, K;
  const E* row[J];
  int k;
  __device__ __forceinline__ void init(int row0, int rstep, int col, int kt0) {
    for (int j = 0; j < J; ++j) {
      const int r = row0 + j * rstep;
      row[j] = r < rows ? x + (long long)r * K : nullptr;
    }
    k = kt0 * TCG_BK + col * TcChunks<P>::EPC;
  }
  __device__ __forceinline__ const E* base() const { return x; }
  __device__ __forceinline__ const E* src(int j) const { return (row[j] && k < K) ? row[j] + k : nullptr; }
  __device__ __forceinline__ void next() { k += TCG_BK; }
};

// Forward im2col of NHWC x: row = output pixel (img, oy, ox), k = (ky, kx, c) with c contiguous.
template <class P, int J>
struct TcConvFwdLoader {
  typedef typename P::E E;
  static constexpr bool STAGED = false;  // read by cp.async straight into shared memory
  const E* x;  // [n][h][w][c]
  Conv2dGeom a;
  int N, K;
  const E* img[J];
  int iy0[J], ix0[J];
  int k, c, ky, kx;
  __device__ __forceinline__ void init(int row0, int rstep, int col, int kt0) {
    const int hw = a.ho * a.wo;
    for (int j = 0; j < J; ++j) {
      const int n = row0 + j * rstep;
      img[j] = nullptr;
      if (n < N) {
        const int im = n / hw, pix = n - im * hw, oy = pix / a.wo, ox = pix - oy * a.wo;
        img[j] = x + (long long)im * a.h * a.w * a.c;
        iy0[j] = oy * a.sh - a.pt;
        ix0[j] = ox * a.sw - a.pl;
      }
    }
    k = kt0 * TCG_BK + col * TcChunks<P>::EPC;
    const int tap = k / a.c;
    c = k - tap * a.c;
    ky = tap / a.kw;
    kx = tap - ky * a.kw;
  }
  __device__ __forceinline__ const E* base() const { return x; }
  __device__ __forceinline__ const E* src(int j) const {
    if (!img[j] || k >= K) return nullptr;
    const int iy = iy0[j] + ky, ix = ix0[j] + kx;
    if (iy < 0 || iy >= a.h || ix < 0 || ix >= a.w) return nullptr;
    return img[j] + ((long long)iy * a.w + ix) * a.c + c;
  }
  __device__ __forceinline__ void next() {
    k += TCG_BK;
    c += TCG_BK;
    while (c >= a.c) {  // one pass when c ≥ BK; at most BK / EPC passes
      c -= a.c;
      if (++kx == a.kw) {
        kx = 0;
        ++ky;
      }
    }
  }
};

// Forward im2col of NCHW f32 x, cast to P on its way into shared memory (no cast pass of its own):
// the rows, k order and stepping of TcConvFwdLoader, but a chunk is EPC f32 loads h·w apart
// (channels c .. c+EPC−1 of one tap; across a warp, eight pixels in a row: whole 32-byte sectors),
// staged through registers. `fetch(j)` issues the loads when the stage is issued; `put(j, dst)`
// normalises by the (image, channel) record when `coef` is set (gn_pre.cuh, then SiLU when `silu`),
// casts and stores the 16-byte chunk, after the current stage's mma, so the loads' latency hides
// behind it. Positions outside the image, past N or past K are zeros of the normalised tensor.
template <class P, int J>
struct TcConvFwdF32Loader {
  typedef typename P::E E;
  static constexpr bool STAGED = true;
  static constexpr int EPC = TcChunks<P>::EPC;
  const float* x;     // [n][c][h][w]
  const float* coef;  // [n][c][GN_PRE_FLOATS], or null: x as it is
  int silu;
  Conv2dGeom a;
  int N, K;
  int img[J], iy0[J], ix0[J];  // img −1: a row past N
  int k, c, ky, kx;
  float v[J][EPC];
  const float* rec[J];  // the chunk's first record (null: no norm)
  bool live[J];         // false: the chunk is zeros
  __device__ __forceinline__ void init(int row0, int rstep, int col, int kt0) {
    const int hw = a.ho * a.wo;
    for (int j = 0; j < J; ++j) {
      const int n = row0 + j * rstep;
      img[j] = -1;
      if (n < N) {
        const int im = n / hw, pix = n - im * hw, oy = pix / a.wo;
        img[j] = im;
        iy0[j] = oy * a.sh - a.pt;
        ix0[j] = (pix - oy * a.wo) * a.sw - a.pl;
      }
    }
    k = kt0 * TCG_BK + col * EPC;
    const int tap = k / a.c;
    c = k - tap * a.c;
    ky = tap / a.kw;
    kx = tap - ky * a.kw;
  }
  __device__ __forceinline__ void fetch(int j) {
    const int iy = iy0[j] + ky, ix = ix0[j] + kx;
    live[j] = img[j] >= 0 && k < K && iy >= 0 && iy < a.h && ix >= 0 && ix < a.w;
    if (!live[j]) return;
    const long long plane = (long long)a.h * a.w, ch = (long long)img[j] * a.c + c;
    const float* p = x + ch * plane + (long long)iy * a.w + ix;
#pragma unroll
    for (int e = 0; e < EPC; ++e) v[j][e] = p[e * plane];
    rec[j] = coef ? coef + ch * GN_PRE_FLOATS : nullptr;
  }
  __device__ __forceinline__ void put(int j, E* dst) const {
    uint32_t wd[4];
#pragma unroll
    for (int e = 0; e < EPC; ++e) {
      float f = 0.0f;
      if (live[j]) f = rec[j] ? gn_pre(v[j][e], rec[j] + e * GN_PRE_FLOATS, silu) : v[j][e];
      const uint32_t bits = P::cvt(f);
      if constexpr (EPC == 4) wd[e] = bits;
      else if (e % 2 == 0) wd[e / 2] = bits;
      else wd[e / 2] |= bits << 16;
    }
    *reinterpret_cast<uint4*>(dst) = make_uint4(wd[0], wd[1], wd[2], wd[3]);
  }
  __device__ __forceinline__ void next() {
    k += TCG_BK;
    c += TCG_BK;
    while (c >= a.c) {  // as TcConvFwdLoader::next
      c -= a.c;
      if (++kx == a.kw) {
        kx = 0;
        ++ky;
      }
    }
  }
};

// Input-gradient im2col of NHWC ∂y: row = input pixel (img, iy, ix), k = (ky, kx, o) with o
// contiguous; tap (ky, kx) reaches output (oy, ox) = ((iy + pt − ky) / sh, (ix + pl − kx) / sw)
// when both divide exactly. Quotient and remainder of iy + pt (per row) and of ky (per thread,
// stepped incrementally) replace the division: exact iff the remainders agree.
template <class P, int J>
struct TcConvDgradLoader {
  typedef typename P::E E;
  static constexpr bool STAGED = false;  // read by cp.async straight into shared memory
  const E* gy;  // [n][ho][wo][o]
  Conv2dGeom a;
  int N, K;
  const E* img[J];
  int qy[J], ry[J], qx[J], rx[J];
  int k, o, ky, kx, qky, rky, qkx, rkx;
  __device__ __forceinline__ void init(int row0, int rstep, int col, int kt0) {
    const int hw = a.h * a.w;
    for (int j = 0; j < J; ++j) {
      const int n = row0 + j * rstep;
      img[j] = nullptr;
      if (n < N) {
        const int im = n / hw, pix = n - im * hw, iy = pix / a.w, ix = pix - iy * a.w;
        img[j] = gy + (long long)im * a.ho * a.wo * a.o;
        qy[j] = (iy + a.pt) / a.sh;
        ry[j] = (iy + a.pt) - qy[j] * a.sh;
        qx[j] = (ix + a.pl) / a.sw;
        rx[j] = (ix + a.pl) - qx[j] * a.sw;
      }
    }
    k = kt0 * TCG_BK + col * TcChunks<P>::EPC;
    const int tap = k / a.o;
    o = k - tap * a.o;
    ky = tap / a.kw;
    kx = tap - ky * a.kw;
    qky = ky / a.sh;
    rky = ky - qky * a.sh;
    qkx = kx / a.sw;
    rkx = kx - qkx * a.sw;
  }
  __device__ __forceinline__ const E* base() const { return gy; }
  __device__ __forceinline__ const E* src(int j) const {
    if (!img[j] || k >= K || ry[j] != rky || rx[j] != rkx) return nullptr;
    const int oy = qy[j] - qky, ox = qx[j] - qkx;
    if (oy < 0 || oy >= a.ho || ox < 0 || ox >= a.wo) return nullptr;
    return img[j] + ((long long)oy * a.wo + ox) * a.o + o;
  }
  __device__ __forceinline__ void next() {
    k += TCG_BK;
    o += TCG_BK;
    while (o >= a.o) {
      o -= a.o;
      if (++rkx == a.sw) {
        rkx = 0;
        ++qkx;
      }
      if (++kx == a.kw) {
        kx = qkx = rkx = 0;
        if (++rky == a.sh) {
          rky = 0;
          ++qky;
        }
        ++ky;
      }
    }
  }
};

// ---- the engine --------------------------------------------------------------------------------
// Issues one stage: each thread's J chunks of A by cp.async (zero-filled where the loader says
// null), and of B the same, or, for a staged B loader, its global loads into registers (put later
// by tc_put_stage).
template <class P, class Tile, class LA, class LB>
__device__ __forceinline__ void tc_issue_stage(typename P::E* as, typename P::E* bs, const LA& la, LB& lb, int row_a, int row_b, int rstep, int col) {
  constexpr int CPR = TcChunks<P>::CPR, EPC = TcChunks<P>::EPC;
  constexpr int JA = Tile::BM * CPR / Tile::THREADS, JB = Tile::BN * CPR / Tile::THREADS;
#pragma unroll
  for (int j = 0; j < JA; ++j) {
    const typename P::E* s = la.src(j);
    kc_cp_async_cg16_zfill(as + tc_swz<CPR>(row_a + j * rstep, col) * EPC, s ? s : la.base(), s ? 16 : 0);
  }
#pragma unroll
  for (int j = 0; j < JB; ++j) {
    if constexpr (LB::STAGED) {
      lb.fetch(j);
    } else {
      const typename P::E* s = lb.src(j);
      kc_cp_async_cg16_zfill(bs + tc_swz<CPR>(row_b + j * rstep, col) * EPC, s ? s : lb.base(), s ? 16 : 0);
    }
  }
}

// A staged B loader's chunks of the stage last issued, cast and stored into its slot (no-op for cp.async).
template <class P, class Tile, class LB>
__device__ __forceinline__ void tc_put_stage(typename P::E* bs, const LB& lb, int row_b, int rstep, int col) {
  if constexpr (LB::STAGED) {
    constexpr int CPR = TcChunks<P>::CPR, EPC = TcChunks<P>::EPC;
    constexpr int JB = Tile::BN * CPR / Tile::THREADS;
#pragma unroll
    for (int j = 0; j < JB; ++j) lb.put(j, bs + tc_swz<CPR>(row_b + j * rstep, col) * EPC);
  }
}

// Writes one f32 result: to the op's layout with bias and residual, or to this split's partials.
struct TcEpilogue {
  const float* bias;
  const float* res;
  float* out;
  float* ws;
  int* cnt;  // split-K: one zeroed counter per output tile (put back to 0 by its last block)
  TcGemmGeom t;
  __device__ __forceinline__ void store(int m, int n, int img, int pix, float v) const {
    if (t.splits > 1) {
      ws[((long long)blockIdx.z * t.m + m) * t.n + n] = v;
      return;
    }
    finish(m, n, img, pix, v);
  }
  // (v + bias) + res into the op's layout
  __device__ __forceinline__ void finish(int m, int n, int img, int pix, float v) const {
    if (t.has_bias) v += bias[t.bias_on_n ? n : m];
    const long long o = ((long long)img * t.m + m) * t.hw + pix;
    if (t.has_res) v += res[o];
    out[o] = v;
  }
};

// Split-K's reduction inside the GEMM (no second launch): every split's block of a tile has
// written its partials; the last to count itself in (cnt[tile], which it puts back to 0) sums
// them in split order from 0 — whichever block is last, the same bits — then bias and residual.
// The others' partials are read through L2 (__ldcg): an SM's L1 is not coherent with other SMs.
// Returns whether this block wrote the tile (the last split).
template <class Tile>
__device__ __forceinline__ bool tc_splitk_finish(const TcEpilogue& epi) {
  __shared__ int last;
  const TcGemmGeom& t = epi.t;
  __threadfence();  // this thread's partials are visible before the count says they are there
  __syncthreads();
  int* c = epi.cnt + blockIdx.y * gridDim.x + blockIdx.x;
  if (threadIdx.x == 0) {
    last = atomicAdd(c, 1) == t.splits - 1;
    if (last) atomicExch(c, 0);  // every split has counted: none of this launch reads it again
  }
  __syncthreads();
  if (!last) return false;  // uniform per block
  __threadfence();
  const int m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
  const long long mn = (long long)t.m * t.n;
  for (int i = threadIdx.x; i < Tile::BM * Tile::BN; i += Tile::THREADS) {  // n fastest: coalesced
    const int m = m0 + i / Tile::BN, n = n0 + i % Tile::BN;
    if (m >= t.m || n >= t.n) continue;
    const long long at = (long long)m * t.n + n;
    float v = 0.0f;
    for (int sp = 0; sp < t.splits; ++sp) v += __ldcg(&epi.ws[sp * mn + at]);
    const int img = n / t.hw;
    epi.finish(m, n, img, n - img * t.hw, v);
  }
  return true;
}

// The group-norm records of the conv's output y (gn_out.cuh's scheme), from the block that wrote
// the tile: its rows' moments over the tile's BN pixels (one image: host checks hw % BN == 0),
// read back from y — the block's own stores, visible to it after the barrier, from L2 at worst:
// the statistics launch this replaces read all of y too — then gn_out_merge. Moments are taken
// less each channel's bias (its shift, as the f32 epilogue's), two-pass in registers.
template <class Tile>
__device__ __forceinline__ void tc_gn_out(const TcEpilogue& epi, const GnOut& o) {
  constexpr int WARPS = Tile::THREADS / 32, PER = Tile::BN / 32;
  const TcGemmGeom& t = epi.t;
  const int C = o.q.c, hw = o.q.s, T = hw / Tile::BN;
  const int m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
  const int img = n0 / hw, pix0 = n0 - img * hw, tile = pix0 / Tile::BN;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* sft = t.has_bias ? epi.bias : nullptr;
  __syncthreads();  // every thread's stores of the tile are visible to the block
  for (int r = warp; r < Tile::BM; r += WARPS) {
    const int m = m0 + r;
    if (m >= t.m) break;  // uniform per warp; rows only grow
    const float k = sft ? sft[m] : 0.0f;
    const float* row = epi.out + ((long long)img * t.m + m) * hw + pix0 + lane * PER;
    float u[PER], s = 0.0f;
#pragma unroll
    for (int e = 0; e < PER; ++e) {
      u[e] = row[e] - k;
      s += u[e];
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(KC_FULL_MASK, s, off);
    const float mean = s * (1.0f / Tile::BN);
    float d = 0.0f;
#pragma unroll
    for (int e = 0; e < PER; ++e) d += (u[e] - mean) * (u[e] - mean);
    for (int off = 16; off > 0; off >>= 1) d += __shfl_xor_sync(KC_FULL_MASK, d, off);
    if (lane == 0) {
      float* p = o.part + 2 * (((long long)img * C + m) * T + tile);
      p[0] = mean;
      p[1] = d;
    }
  }
  gn_out_merge<Tile::BM, Tile::THREADS>(threadIdx.x, img, T, (float)Tile::BN, t.m, m0, sft, o);
}

template <class P, class Tile, class LA, class LB>
__device__ __forceinline__ void tc_gemm(LA& la, LB& lb, const TcEpilogue& epi, const GnOut* gn = nullptr) {
  typedef typename P::E E;
  constexpr int CPR = TcChunks<P>::CPR, EPC = TcChunks<P>::EPC, S = TCG_STAGES;
  constexpr int MI = Tile::MI, NI = Tile::NI, RSTEP = Tile::THREADS / CPR;
  constexpr int JA = Tile::BM * CPR / Tile::THREADS;
  static_assert(JA * Tile::THREADS == Tile::BM * CPR && Tile::BN * CPR % Tile::THREADS == 0, "whole chunks per thread");
  static_assert(NI % 2 == 0, "B fragments come two n8 tiles per ldmatrix.x4");
  const TcGemmGeom& t = epi.t;
  E* smem = dynamic_smem<E>();
  constexpr int A_ELEMS = Tile::BM * TCG_BK, STAGE_ELEMS = (Tile::BM + Tile::BN) * TCG_BK;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / Tile::WARPS_N, wn = warp % Tile::WARPS_N;
  const int m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
  const int col = tid % CPR, rrow = tid / CPR;
  const int kt_total = (t.k + TCG_BK - 1) / TCG_BK;
  const int kt0 = blockIdx.z * t.kt_per_split;
  const int nk = min(t.kt_per_split, kt_total - kt0);
  la.init(m0 + rrow, RSTEP, col, kt0);
  lb.init(n0 + rrow, RSTEP, col, kt0);

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < nk) {
      tc_issue_stage<P, Tile>(smem + s * STAGE_ELEMS, smem + s * STAGE_ELEMS + A_ELEMS, la, lb, rrow, rrow, RSTEP, col);
      tc_put_stage<P, Tile>(smem + s * STAGE_ELEMS + A_ELEMS, lb, rrow, RSTEP, col);
      la.next();
      lb.next();
    }
    kc_cp_async_commit();  // possibly empty: group s is stage s
  }
  for (int kt = 0; kt < nk; ++kt) {
    kc_cp_async_wait<S - 2>();  // all but the newest S−2 groups landed: stage kt is here
    __syncthreads();            // ... for every thread; and everyone is done with stage kt−1
    const int pre = kt + S - 1;
    E* const slot = smem + (pre % S) * STAGE_ELEMS;  // stage kt−1's: everyone left it at the barrier
    if (pre < nk) {
      tc_issue_stage<P, Tile>(slot, slot + A_ELEMS, la, lb, rrow, rrow, RSTEP, col);
      la.next();
      lb.next();
    }
    kc_cp_async_commit();
    const E* as = smem + (kt % S) * STAGE_ELEMS;
    const E* bs = as + A_ELEMS;
#pragma unroll
    for (int c0 = 0; c0 < CPR; c0 += 2) {  // one mma k step = two chunks (k16 bf16/f16, k8 tf32)
      uint32_t af[MI][4], bf[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) kc_ldmatrix_x4(af[mi], as + tc_swz<CPR>(wm * Tile::WM + mi * 16 + (lane & 15), c0 + (lane >> 4)) * EPC);
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        uint32_t r[4];
        kc_ldmatrix_x4(r, bs + tc_swz<CPR>(wn * Tile::WN + nj * 16 + (lane >> 4) * 8 + (lane & 7), c0 + ((lane >> 3) & 1)) * EPC);
        bf[2 * nj][0] = r[0];
        bf[2 * nj][1] = r[1];
        bf[2 * nj + 1][0] = r[2];
        bf[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) P::mma(acc[mi][ni], af[mi], bf[ni]);
    }
    // a staged B's chunks of stage pre, loaded while the mma ran; read at step pre, after its barrier
    if (pre < nk) tc_put_stage<P, Tile>(slot + A_ELEMS, lb, rrow, RSTEP, col);
  }
  kc_cp_async_wait<0>();  // only empty groups remain; leave none in flight

  // epilogue: lane (g, t) holds rows g, g+8 and columns 2t, 2t+1 of each m16×n8 tile
  const int g = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int ni = 0; ni < NI; ++ni)
#pragma unroll
    for (int e1 = 0; e1 < 2; ++e1) {
      const int n = n0 + wn * Tile::WN + ni * 8 + 2 * tq + e1;
      if (n >= t.n) continue;
      const int img = n / t.hw, pix = n - img * t.hw;
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int e2 = 0; e2 < 2; ++e2) {
          const int m = m0 + wm * Tile::WM + mi * 16 + g + 8 * e2;
          if (m < t.m) epi.store(m, n, img, pix, acc[mi][ni][2 * e2 + e1]);
        }
    }
  const bool wrote = t.splits > 1 ? tc_splitk_finish<Tile>(epi) : true;
  if (gn && wrote) tc_gn_out<Tile>(epi, *gn);  // gn: uniform (a kernel argument)
}
