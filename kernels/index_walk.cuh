// Division-free indexing for grid-stride loops: a thread that visits e0, e0 + step, e0 + 2·step, …
// keeps q = (e / d) mod m and r = e mod d up to date with an add and two compares per step; the
// divisions happen once, when the walk starts (the loop bodies of elementwise.cu, layout.cu and
// group_norm.cu are otherwise bound by 3–4 integer divisions per element). Also the alignment
// tests of the vector paths and the 8-byte store (tc.cuh has the 16-byte accesses).
#pragma once

struct KcDivWalk {
  int q, r;    // (e / d) mod m, e mod d
  int dq, dr;  // the same of `step`
  int d, m;
};

// m = 0x7fffffff: no wrap (q is then e / d, for e < 2^31).
__device__ __forceinline__ KcDivWalk kc_div_walk(long long e0, long long step, int d, int m) {
  KcDivWalk w;
  w.d = d;
  w.m = m;
  w.q = (int)((e0 / d) % m);
  w.r = (int)(e0 % d);
  w.dq = (int)((step / d) % m);
  w.dr = (int)(step % d);
  return w;
}

__device__ __forceinline__ void kc_div_walk_next(KcDivWalk& w) {
  w.r += w.dr;
  w.q += w.dq;
  if (w.r >= w.d) {
    w.r -= w.d;
    ++w.q;
  }
  if (w.q >= w.m) w.q -= w.m;  // q < m and dq < m: one subtraction is enough
}

#define KC_NO_WRAP 0x7fffffff

// 16-byte aligned as the GPU sees it. The emulator's buffers end at a guard page, so their host
// addresses say nothing: it measures from the buffer's start, as cudaMalloc's 256-byte alignment
// would make it on the device.
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
__device__ __forceinline__ bool kc_aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }
__device__ __forceinline__ bool kc_aligned8(const void* p) { return ((unsigned long long)p & 7ull) == 0; }
__device__ __forceinline__ void kc_st_float2(float* p, float2 v) { *reinterpret_cast<float2*>(p) = v; }
#else
__forceinline__ bool kc_aligned16(const void* p) { return emu_misalignment(p, 16) == 0; }
__forceinline__ bool kc_aligned8(const void* p) { return emu_misalignment(p, 8) == 0; }
__forceinline__ void kc_st_float2(float* p, float2 v) { emu::vec_store<float2>(p, v, "float2 store"); }
#endif
