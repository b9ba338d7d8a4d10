// Probes of the CUDA execution model, launched by tests/emulator.rs against the emulator (never
// part of a model). selftest_deadlock_i32 would hang a GPU: it exists to show that the emulator
// reports a barrier that can never complete as an error instead.
#include "common.cuh"

// Per thread t, four results: ballot of (t % 3 == 0), shfl_down by 1, shfl_xor with 5, and
// __syncthreads_count(t % 2). Block size must be a multiple of 32.
extern "C" __global__ void selftest_warp_ops_i32(int* out) {
  const int t = threadIdx.x;
  unsigned ballot = __ballot_sync(KC_FULL_MASK, t % 3 == 0);
  int down = __shfl_down_sync(KC_FULL_MASK, t, 1);
  int x5 = __shfl_xor_sync(KC_FULL_MASK, t, 5);
  int cnt = __syncthreads_count(t % 2);
  out[4 * t + 0] = (int)ballot;
  out[4 * t + 1] = down;
  out[4 * t + 2] = x5;
  out[4 * t + 3] = cnt;
}

// Reverses a block's values through shared memory, correctly (with the barrier) or not.
extern "C" __global__ void selftest_reverse_i32(const int* in, int* out, int with_barrier) {
  int* s = dynamic_smem<int>();
  const int t = threadIdx.x, n = blockDim.x;
  s[t] = in[blockIdx.x * n + t];
  if (with_barrier) __syncthreads();
  out[blockIdx.x * n + t] = s[n - 1 - t];
}

// Thread 0 waits at the block barrier while lanes 1..31 wait for it at a warp barrier.
extern "C" __global__ void selftest_deadlock_i32(int* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    __syncwarp();
  }
  out[threadIdx.x] = 1;
}
