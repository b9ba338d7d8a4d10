// CPU emulator of the CUDA execution model: the shim that lets g++ compile our unmodified .cu
// kernels. Each CUDA thread is a fiber; a block's fibers run cooperatively on one OS thread
// (emu_runtime.cpp). Design: docs/emulator.md. No standard
// header may be included after this one (it defines CUDA's keywords as macros).
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <new>
#include <tuple>
#include <type_traits>
#include <utility>

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
// Aligned like CUDA's vector types (a misaligned float4 access is an error on the GPU).
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

namespace emu {
// Per-fiber state: the CUDA thread's coordinates. Constant-initialisable for __thread.
struct ThreadState {
  uint3 tid = {0, 0, 0};
  unsigned linear = 0;     // x + y*bx + z*bx*by
  unsigned lane = 0;       // linear % 32
  unsigned warp = 0;       // linear / 32
  unsigned shfl_parity = 0;
  unsigned bar_parity = 0;
  unsigned coll_count = 0;  // warp collectives (mma, ldmatrix) this thread has entered
  unsigned long long flops = 0;      // fmaf calls × 2 (traffic accounting)
  unsigned long long mma_flops = 0;  // this lane's share (1/32) of its warp's mma.sync, 2·m·n·k
};
struct BlockState {
  uint3 bid = {0, 0, 0};
  dim3 bdim;
  dim3 gdim;
};
}  // namespace emu

extern __thread emu::ThreadState* emu_cur_thread;
extern __thread emu::BlockState emu_cur_block;

extern "C" {
void emu_syncthreads(void);
int emu_syncthreads_count(int pred);
// Warp barrier over `mask` ∩ live lanes; returns the lanes that took part.
unsigned emu_warp_sync(unsigned mask);
// This warp's exchange slots for the given parity (32 × 64-bit).
uint64_t* emu_warp_slots(unsigned parity);
unsigned emu_live_lanes(void);
void* emu_dynamic_smem(void);
// Traffic accounting (emu_set_traffic): `n` bytes at `p` read (rw & 1) and/or written (rw & 2)
// by an access the instrumentation does not see (cp.async sources, atomics); global only.
void emu_count_global(const void* p, unsigned n, int rw);
}

// FLOPs of the traffic accounting: in the instrumented copy of the kernels only (the one traffic
// runs use), every fmaf counts 2; the plain copy keeps the bare libm call.
#ifdef EMU_CHECKED_BUILD
static inline float emu_counted_fmaf(float a, float b, float c) {
  emu_cur_thread->flops += 2;
  return fmaf(a, b, c);
}
#define fmaf(a, b, c) emu_counted_fmaf(a, b, c)
#endif

#define threadIdx (emu_cur_thread->tid)
#define blockIdx (emu_cur_block.bid)
#define blockDim (emu_cur_block.bdim)
#define gridDim (emu_cur_block.gdim)
#define warpSize 32

#define __global__
#define __device__
#define __host__
#define __constant__
#define __launch_bounds__(...)
#define __grid_constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
// One copy per OS thread = per running block (blocks never migrate between threads).
#define __shared__ thread_local

static inline void __syncthreads() { emu_syncthreads(); }
static inline int __syncthreads_count(int p) { return emu_syncthreads_count(p); }
static inline int __syncthreads_and(int p) { return emu_syncthreads_count(p != 0) == (int)(blockDim.x * blockDim.y * blockDim.z); }
static inline int __syncthreads_or(int p) { return emu_syncthreads_count(p != 0) != 0; }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { emu_warp_sync(mask); }
static inline unsigned __activemask() { return emu_live_lanes(); }
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() {}

namespace emu {
template <class T>
static inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 64 bits");
  uint64_t b = 0;
  memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
static inline T from_bits(uint64_t b) {
  T v;
  memcpy(&v, &b, sizeof(T));
  return v;
}
// Every shuffle: write my value to my slot, meet the other lanes, read the source lane's slot.
// Slots are double-buffered by a per-lane parity, so one barrier per shuffle is enough.
template <class T, class F>
static inline T shfl(unsigned mask, T v, F src_of) {
  ThreadState* t = emu_cur_thread;
  unsigned p = t->shfl_parity;
  t->shfl_parity ^= 1;
  uint64_t* s = emu_warp_slots(p);
  s[t->lane] = to_bits(v);
  emu_warp_sync(mask);
  int src = src_of((int)t->lane);
  if (src < 0 || src > 31) src = (int)t->lane;
  return from_bits<T>(s[src]);
}
}  // namespace emu

template <class T>
static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return emu::shfl(mask, v, [&](int lane) { return (lane & ~(width - 1)) + (src & (width - 1)); });
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
  return emu::shfl(mask, v, [&](int lane) { int s = lane ^ m; return (s & ~(width - 1)) == (lane & ~(width - 1)) ? s : lane; });
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return emu::shfl(mask, v, [&](int lane) { int s = lane + (int)d; return (s & (width - 1)) >= (lane & (width - 1)) && s < ((lane & ~(width - 1)) + width) ? s : lane; });
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
  return emu::shfl(mask, v, [&](int lane) { int s = lane - (int)d; return s >= (lane & ~(width - 1)) ? s : lane; });
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
  emu::ThreadState* t = emu_cur_thread;
  unsigned p = t->shfl_parity;
  t->shfl_parity ^= 1;
  uint64_t* s = emu_warp_slots(p);
  s[t->lane] = pred ? 1 : 0;
  unsigned took_part = emu_warp_sync(mask);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if ((took_part >> l & 1u) && s[l]) r |= 1u << l;
  return r;
}
static inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
static inline int __all_sync(unsigned mask, int pred) {
  unsigned b = __ballot_sync(mask, pred);
  return b == (mask & emu_live_lanes());
}

// ---- atomics: real ones, blocks run on several OS threads ----------------------------------
// Not instrumented (EMU_ATOMIC): the race detector exempts atomics.
#define EMU_ATOMIC __attribute__((no_sanitize_address))
template <class T>
EMU_ATOMIC static inline T atomicAdd(T* a, T v) {
  emu_count_global(a, sizeof(T), 3);
  if constexpr (std::is_floating_point<T>::value) {
    T old, want;
    __atomic_load(a, &old, __ATOMIC_RELAXED);
    do { want = old + v; } while (!__atomic_compare_exchange(a, &old, &want, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return old;
  } else {
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);
  }
}
template <class T> EMU_ATOMIC static inline T atomicSub(T* a, T v) { emu_count_global(a, sizeof(T), 3); return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); }
template <class T> EMU_ATOMIC static inline T atomicExch(T* a, T v) { emu_count_global(a, sizeof(T), 3); return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); }
// ld.global.cg (through L2, not the SM's L1): the one load the race detector lets read what another
// block of the same launch wrote (a plain load may hit a stale L1 line on a GPU). Not instrumented,
// as the atomics: no bounds check beyond the guard pages.
template <class T> EMU_ATOMIC static inline T __ldcg(const T* p) { emu_count_global(p, sizeof(T), 1); return *p; }
template <class T> EMU_ATOMIC static inline T atomicAnd(T* a, T v) { emu_count_global(a, sizeof(T), 3); return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); }
template <class T> EMU_ATOMIC static inline T atomicOr(T* a, T v) { emu_count_global(a, sizeof(T), 3); return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); }
template <class T> EMU_ATOMIC static inline T atomicXor(T* a, T v) { emu_count_global(a, sizeof(T), 3); return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); }
template <class T>
EMU_ATOMIC static inline T atomicCAS(T* a, T cmp, T v) {
  emu_count_global(a, sizeof(T), 3);
  __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
template <class T>
EMU_ATOMIC static inline T atomicMax(T* a, T v) {
  emu_count_global(a, sizeof(T), 3);
  T old;
  __atomic_load(a, &old, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange(a, &old, &v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {}
  return old;
}
template <class T>
EMU_ATOMIC static inline T atomicMin(T* a, T v) {
  emu_count_global(a, sizeof(T), 3);
  T old;
  __atomic_load(a, &old, __ATOMIC_RELAXED);
  while (old > v && !__atomic_compare_exchange(a, &old, &v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {}
  return old;
}

// ---- math and bit intrinsics (exact on the CPU; the GPU's fast-math ones are approximate) ----
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// glibc declares __expf & co. itself: map CUDA's fast intrinsics by macro instead.
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
static inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
template <class T> static inline T __ldg(const T* p) { return *p; }

// ---- tensor cores, ldmatrix, cp.async, vector accesses ------------------------------------
#include "cuda_emu_tc.h"

// ---- the registry: how the runtime launches a kernel by name ------------------------------
struct EmuKernelEntry {
  const char* name;
  // Per parameter: the pointee's size in bytes for a pointer, 0 otherwise (bounds messages).
  const unsigned char* elem_sizes;
  void (*invoke)(const void* packed);          // runs the kernel body for the current fiber
  void (*pack)(void* out, void* const* args);  // copies the arguments once per launch
  void (*unpack_drop)(void* packed);           // destroys the packed tuple
  size_t packed_size;
  unsigned nargs;
};
struct EmuKernelTable {
  const EmuKernelEntry* entries;
  unsigned count;
};

namespace emu {
template <class T>
constexpr unsigned char elem_size_of() {
  if constexpr (std::is_pointer<T>::value) {
    using E = std::remove_cv_t<std::remove_pointer_t<T>>;
    if constexpr (std::is_void<E>::value) return 1;
    else return (unsigned char)(sizeof(E) < 255 ? sizeof(E) : 255);
  } else {
    return 0;
  }
}
template <auto Fn, class Sig>
struct Entry;
template <auto Fn, class... A>
struct Entry<Fn, void (*)(A...)> {
  using Tup = std::tuple<std::decay_t<A>...>;
  template <size_t... I>
  static void pack_seq(void* out, void* const* args, std::index_sequence<I...>) {
    new (out) Tup(*static_cast<std::decay_t<A>*>(args[I])...);
  }
  static void pack(void* out, void* const* args) { pack_seq(out, args, std::index_sequence_for<A...>{}); }
  template <size_t... I>
  static void call_seq(const Tup& t, std::index_sequence<I...>) { Fn(std::get<I>(t)...); }
  static void invoke(const void* p) { call_seq(*static_cast<const Tup*>(p), std::index_sequence_for<A...>{}); }
  static void drop(void* p) { static_cast<Tup*>(p)->~Tup(); }
  static constexpr unsigned char elem_sizes[sizeof...(A) + 1] = {elem_size_of<std::decay_t<A>>()..., 0};
  static constexpr EmuKernelEntry make(const char* n) { return {n, elem_sizes, &invoke, &pack, &drop, sizeof(Tup), sizeof...(A)}; }
};
}  // namespace emu
#define EMU_KERNEL_ENTRY(fn) (::emu::Entry<&fn, decltype(&fn)>::make(#fn))
