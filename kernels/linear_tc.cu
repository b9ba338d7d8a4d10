// Tensor-core linear, bf16 operands, f32 accumulate and output: y[M×N] = x[M×K] · w[N×K]ᵀ + b
// (M = rows, K = fin, N = fout). Not the default path yet (CudaBackend::linear_tc_bf16; kernels/README.md
// "Tensor cores"). x and w arrive as bf16 bits (cast_f32_to_bf16, round to nearest even).
//
// Tiling (TC_* in contract.cuh): block tile 64×64, K step 32, 4 warps in 2×2, each warp 32×32 =
// 2 (m16) × 4 (n8) mma.m16n8k16 tiles, two k16 steps per K step. Shared memory: two stages of an A
// tile [64][TC_LDS] and a B tile [64][TC_LDS] (w rows: n-major, k contiguous, which is mma's
// "col" B), rows padded from 32 to 40 bf16 (80 bytes) so the 8 row addresses of one ldmatrix fall
// in different bank groups. Double buffer: cp.async of stage k+1 is in flight while stage k is
// multiplied; rows past M / N and chunks past K are zero-filled (needs K % 8 == 0: 16-byte rows).
//
//   warp (wm, wn) ──► rows 32·wm .. +32 of the tile, cols 32·wn .. +32
//   per k16: A fragments by ldmatrix.x4 (lane l → row l%16, k half l/16),
//            B fragments by ldmatrix.x4 for two n8 tiles (lane l → n row 8·(l/16) + l%8, k half (l/8)%2)
#include "common.cuh"

__device__ __forceinline__ void tc_load_stage(uint16_t* as, uint16_t* bs, const uint16_t* x, const uint16_t* w, int M, int N, int K, int m0, int n0, int k0) {
  // 64 rows × 4 chunks of 8 bf16 per operand = 256 chunks, 2 per thread each
  for (int r = 0; r < 2; ++r) {
    const int c = threadIdx.x + TC_THREADS * r, row = c >> 2, kc = (c & 3) * 8;
    const bool kin = k0 + kc < K;
    const int m = m0 + row, n = n0 + row;
    const bool ain = kin && m < M, bin = kin && n < N;
    kc_cp_async_cg16_zfill(as + row * TC_LDS + kc, ain ? x + (long long)m * K + k0 + kc : x, ain ? 16 : 0);
    kc_cp_async_cg16_zfill(bs + row * TC_LDS + kc, bin ? w + (long long)n * K + k0 + kc : w, bin ? 16 : 0);
  }
}

extern "C" __global__ void __launch_bounds__(TC_THREADS) linear_tc_bf16(const uint16_t* x, const uint16_t* w, const float* bias, float* y, int m_rows, int n_cols, int k_depth, int has_bias) {
  const int M = m_rows, N = n_cols, K = k_depth;
  uint16_t* smem = dynamic_smem<uint16_t>();
  const int stage_elems = 2 * TC_TM * TC_LDS;  // A then B
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp >> 1, wn = warp & 1;
  const int m0 = blockIdx.y * TC_TM, n0 = blockIdx.x * TC_TN;
  const int kt_n = (K + TC_TK - 1) / TC_TK;
  float acc[2][4][4];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  tc_load_stage(smem, smem + TC_TM * TC_LDS, x, w, M, N, K, m0, n0, 0);
  kc_cp_async_commit();
  for (int kt = 0; kt < kt_n; ++kt) {
    if (kt + 1 < kt_n) {
      uint16_t* nxt = smem + ((kt + 1) & 1) * stage_elems;
      tc_load_stage(nxt, nxt + TC_TM * TC_LDS, x, w, M, N, K, m0, n0, (kt + 1) * TC_TK);
    }
    kc_cp_async_commit();  // possibly empty: keeps "all but the newest group" = stage kt
    kc_cp_async_wait<1>();
    __syncthreads();
    const uint16_t* as = smem + (kt & 1) * stage_elems;
    const uint16_t* bs = as + TC_TM * TC_LDS;
#pragma unroll
    for (int ks = 0; ks < TC_TK; ks += 16) {
      uint32_t af[2][4], bf[4][2];
      for (int mi = 0; mi < 2; ++mi) kc_ldmatrix_x4(af[mi], as + (wm * 32 + mi * 16 + (lane & 15)) * TC_LDS + ks + (lane >> 4) * 8);
      for (int nj = 0; nj < 2; ++nj) {
        uint32_t r[4];
        kc_ldmatrix_x4(r, bs + (wn * 32 + nj * 16 + (lane >> 4) * 8 + (lane & 7)) * TC_LDS + ks + ((lane >> 3) & 1) * 8);
        bf[2 * nj][0] = r[0];
        bf[2 * nj][1] = r[1];
        bf[2 * nj + 1][0] = r[2];
        bf[2 * nj + 1][1] = r[3];
      }
      for (int mi = 0; mi < 2; ++mi)
        for (int ni = 0; ni < 4; ++ni) kc_mma_m16n8k16_bf16(acc[mi][ni], af[mi], bf[ni], acc[mi][ni]);
    }
    __syncthreads();  // everyone is done with this stage before it is refilled
  }

  const int g = lane >> 2, t = lane & 3;
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 4; ++ni)
      for (int e = 0; e < 4; ++e) {
        const int m = m0 + wm * 32 + mi * 16 + g + 8 * (e >> 1), n = n0 + wn * 32 + ni * 8 + 2 * t + (e & 1);
        if (m < M && n < N) y[(long long)m * N + n] = acc[mi][ni][e] + (has_bias ? bias[n] : 0.0f);
      }
}

// bf16 bits of x, round to nearest even (the operands of linear_tc_bf16).
extern "C" __global__ void cast_f32_to_bf16(const float* x, uint16_t* y, long long n) {
  KC_FOR_EACH(i, n) y[i] = kc_float2bf16_rn(x[i]).bits;
}
