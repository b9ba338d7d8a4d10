// Tensor-core era primitives for kernels: bf16/f16/tf32 conversions, mma.sync, ldmatrix,
// cp.async and 16-byte vector accesses. Under NVRTC each is inline PTX (sm_80+); on the host the
// CPU emulator runs an exact implementation (kernels/emu/cuda_emu_tc.h) that also fails where the
// GPU would fault or silently misbehave (misaligned address, partial warp, a read of a cp.async
// destination before its wait). Included by common.cuh; rules in kernels/README.md.
#pragma once

// bf16 / f16 scalars and packed pairs as bit patterns (.x is the low half of the 32-bit word,
// the element with the lower index in an mma fragment).
struct kc_bf16 {
  uint16_t bits;
};
struct kc_half {
  uint16_t bits;
};

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
__device__ __forceinline__ kc_bf16 kc_float2bf16_rn(float f) {
  kc_bf16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
  return r;
}
__device__ __forceinline__ kc_half kc_float2half_rn(float f) {
  kc_half r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(f));
  return r;
}
__device__ __forceinline__ float kc_half2float(kc_half h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
  return f;
}
// Two floats to a packed pair: `lo` in the low half (cvt.rn.*x2 takes the high element first).
__device__ __forceinline__ uint32_t kc_pack_bf16x2_rn(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ uint32_t kc_pack_f16x2_rn(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// cvt.rna.tf32.f32: nearest, ties away from zero; the low 13 bits of the result are 0.
__device__ __forceinline__ uint32_t kc_float2tf32_rna(float f) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f));
  return r;
}

// D = A·B + C, one warp, all 32 lanes (fragment layouts: kernels/emu/cuda_emu_tc.h, PTX ISA).
__device__ __forceinline__ void kc_mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ void kc_mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ void kc_mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ uint32_t kc_smem_addr(const void* p) {
  uint32_t a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

// ldmatrix: `row` is this lane's row address (lanes 8i..8i+7 give matrix i's rows).
__device__ __forceinline__ void kc_ldmatrix_x1(uint32_t r[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(kc_smem_addr(row)));
}
__device__ __forceinline__ void kc_ldmatrix_x2(uint32_t r[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(kc_smem_addr(row)));
}
__device__ __forceinline__ void kc_ldmatrix_x4(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(kc_smem_addr(row)));
}
__device__ __forceinline__ void kc_ldmatrix_x1_trans(uint32_t r[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(kc_smem_addr(row)));
}
__device__ __forceinline__ void kc_ldmatrix_x2_trans(uint32_t r[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(kc_smem_addr(row)));
}
__device__ __forceinline__ void kc_ldmatrix_x4_trans(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(kc_smem_addr(row)));
}

// cp.async global → shared; .cg (L2 only) exists for 16 bytes alone.
__device__ __forceinline__ void kc_cp_async_ca4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(kc_smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void kc_cp_async_ca8(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(kc_smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void kc_cp_async_ca16(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" ::"r"(kc_smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void kc_cp_async_cg16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(kc_smem_addr(dst)), "l"(src) : "memory");
}
// Reads only `src_bytes` (0..16) of the source and zero-fills the rest (edges of a tile).
__device__ __forceinline__ void kc_cp_async_cg16_zfill(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(kc_smem_addr(dst)), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void kc_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void kc_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ float4 kc_ld_float4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void kc_st_float4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ uint4 kc_ld_u4(const void* p) { return *reinterpret_cast<const uint4*>(p); }
__device__ __forceinline__ void kc_st_u4(void* p, uint4 v) { *reinterpret_cast<uint4*>(p) = v; }

#else  // the CPU emulator

__forceinline__ kc_bf16 kc_float2bf16_rn(float f) { return kc_bf16{emu::f32_to_bf16_rn(f)}; }
__forceinline__ kc_half kc_float2half_rn(float f) { return kc_half{emu::f32_to_f16_rn(f)}; }
__forceinline__ float kc_half2float(kc_half h) { return emu::f16_to_f32(h.bits); }
__forceinline__ uint32_t kc_pack_bf16x2_rn(float lo, float hi) { return (uint32_t)emu::f32_to_bf16_rn(lo) | (uint32_t)emu::f32_to_bf16_rn(hi) << 16; }
__forceinline__ uint32_t kc_pack_f16x2_rn(float lo, float hi) { return (uint32_t)emu::f32_to_f16_rn(lo) | (uint32_t)emu::f32_to_f16_rn(hi) << 16; }
__forceinline__ uint32_t kc_float2tf32_rna(float f) { return emu::f32_to_tf32_rna(f); }

__forceinline__ void kc_mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) { emu::mma_m16n8k16(emu::COLL_MMA_BF16, d, a, b, c); }
__forceinline__ void kc_mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) { emu::mma_m16n8k16(emu::COLL_MMA_F16, d, a, b, c); }
__forceinline__ void kc_mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) { emu::mma_m16n8k8_tf32(d, a, b, c); }

__forceinline__ void kc_ldmatrix_x1(uint32_t r[1], const void* row) { emu::ldmatrix(r, 1, false, row); }
__forceinline__ void kc_ldmatrix_x2(uint32_t r[2], const void* row) { emu::ldmatrix(r, 2, false, row); }
__forceinline__ void kc_ldmatrix_x4(uint32_t r[4], const void* row) { emu::ldmatrix(r, 4, false, row); }
__forceinline__ void kc_ldmatrix_x1_trans(uint32_t r[1], const void* row) { emu::ldmatrix(r, 1, true, row); }
__forceinline__ void kc_ldmatrix_x2_trans(uint32_t r[2], const void* row) { emu::ldmatrix(r, 2, true, row); }
__forceinline__ void kc_ldmatrix_x4_trans(uint32_t r[4], const void* row) { emu::ldmatrix(r, 4, true, row); }

__forceinline__ void kc_cp_async_ca4(void* dst, const void* src) { emu::cp_async(dst, src, 4, 4, "cp.async.ca"); }
__forceinline__ void kc_cp_async_ca8(void* dst, const void* src) { emu::cp_async(dst, src, 8, 8, "cp.async.ca"); }
__forceinline__ void kc_cp_async_ca16(void* dst, const void* src) { emu::cp_async(dst, src, 16, 16, "cp.async.ca"); }
__forceinline__ void kc_cp_async_cg16(void* dst, const void* src) { emu::cp_async(dst, src, 16, 16, "cp.async.cg"); }
__forceinline__ void kc_cp_async_cg16_zfill(void* dst, const void* src, int src_bytes) {
  if (src_bytes < 0 || src_bytes > 16) emu::emu_fail_bad_src_size(src_bytes);
  emu::cp_async(dst, src, 16, (unsigned)src_bytes, "cp.async.cg");
}
__forceinline__ void kc_cp_async_commit() { emu::cp_async_commit(); }
template <int N>
__forceinline__ void kc_cp_async_wait() {
  static_assert(N >= 0, "wait_group takes a non-negative immediate");
  emu::cp_async_wait((unsigned)N);
}

__forceinline__ float4 kc_ld_float4(const float* p) { return emu::vec_load<float4>(p, "float4 load"); }
__forceinline__ void kc_st_float4(float* p, float4 v) { emu::vec_store<float4>(p, v, "float4 store"); }
__forceinline__ uint4 kc_ld_u4(const void* p) { return emu::vec_load<uint4>(p, "16-byte load"); }
__forceinline__ void kc_st_u4(void* p, uint4 v) { emu::vec_store<uint4>(p, v, "16-byte store"); }
#endif

// Portable on both paths: bf16 → f32 is a shift, exact.
__device__ __forceinline__ float kc_bf162float(kc_bf16 h) { return __uint_as_float((uint32_t)h.bits << 16); }
