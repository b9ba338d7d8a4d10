// Shared prelude of every kernel file. Compiles three ways: NVRTC (device code for the GPU),
// and g++ against the CPU emulator's shim (kernels/emu/cuda_emu.h) for the test suite.
// Rules for kernel authors are in kernels/README.md.
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC has no standard headers.
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#endif

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
// Dynamic shared memory: one name and one type program-wide, reinterpreted per kernel.
template <class T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char kc_dynamic_smem[];
  return reinterpret_cast<T*>(kc_dynamic_smem);
}
#else
#include "cuda_emu.h"
template <class T>
__forceinline__ T* dynamic_smem() {
  return reinterpret_cast<T*>(emu_dynamic_smem());
}
#endif

// Structs kernels take by value and the launch constants the host shares (generated into Rust).
#include "contract.cuh"

// bf16/f16/tf32, mma.sync, ldmatrix, cp.async, 16-byte vector accesses (inline PTX / emulator).
#include "tc.cuh"

#define KC_INF (__int_as_float(0x7f800000))
#define KC_NEG_INF (__int_as_float(0xff800000))
#define KC_FLT_MAX 3.402823466e+38f
#define KC_FULL_MASK 0xffffffffu

// Grid-stride loop over n elements (1-D launches of elementwise kernels).
#define KC_FOR_EACH(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); i += (long long)blockDim.x * gridDim.x)

// Sum over a warp with shuffles (all 32 lanes must take part).
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(KC_FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(KC_FULL_MASK, v, o));
  return v;
}

// Sum over the block; blockDim.x must be a multiple of 32 and at most 1024. `scratch` holds
// 32 floats of shared memory. Every thread gets the total.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : KC_NEG_INF;
  return warp_max(v);
}
