// Part of the CUDA emulator's shim (included by cuda_emu.h): the tensor-core era primitives,
// exact. kernels/tc.cuh wraps them as kc_* functions that are inline PTX under NVRTC.
// - bf16 / f16 conversions, bit-exact with cvt.rn.{bf16,f16}.f32 (round to nearest even,
//   subnormals kept, overflow to inf, NaN to the canonical 0x7fff);
// - mma.sync.aligned m16n8k16 (bf16, f16) and m16n8k8 (tf32), f32 accumulate: a collective of
//   the whole warp that exchanges the fragments, sums the products exactly in f64 (plus C) and
//   rounds once; a partial warp, or lanes at different collectives, is a launch error;
// - ldmatrix .x1/.x2/.x4 (.trans): each lane reads its fragment from the other lanes' row
//   addresses in shared memory;
// - cp.async 4/8/16 bytes: the source is read at issue, the shared destination is poisoned
//   (0xFF bytes, a NaN) until the wait_group that lands it;
// - 16-byte vector loads and stores that fail on a misaligned address, as the GPU does.
// Design and tolerances: docs/emulator.md ("Tensor cores").
#pragma once

struct uint2 { unsigned x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

extern "C" {
// Ends the block with a launch error "<kernel>: <msg>, by block (..) thread (..)".
[[noreturn]] void emu_fail(const char* msg);
// 1 when [p, p + n) lies in this block's shared memory (dynamic, within the launch's size, or
// static __shared__).
int emu_is_shared(const void* p, unsigned n);
// This warp's collective exchange area for the given parity: 32 lanes × EMU_COLL_WORDS words.
uint32_t* emu_warp_coll(unsigned parity);
// How far `p` is from an `align`-byte boundary as the GPU would see it: relative to the start
// of the device buffer that holds it (cudaMalloc's are 256-byte aligned; the emulator's end at a
// guard page instead), else to address 0 (shared memory, the stack).
unsigned emu_misalignment(const void* p, unsigned align);
}

#define EMU_COLL_WORDS 8
#define EMU_CP_ASYNC_MAX 32

namespace emu {
// ---- conversions (bit manipulation; round to nearest even like cvt.rn) ---------------------
static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline uint16_t f32_to_bf16_rn(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;  // canonical NaN
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // a carry into the exponent is right
}
static inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

static inline uint16_t f32_to_f16_rn(float f) {
  uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return 0x7fff;                     // canonical NaN
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // ≥ 65520 (the tie above 65504): inf
  if (a >= 0x38800000u) {                                 // normal: ≥ 2^-14; rebias 127 → 15
    uint32_t m = a - 0x38000000u;
    return (uint16_t)(sign | ((m + 0xfffu + ((m >> 13) & 1u)) >> 13));
  }
  if (a <= 0x33000000u) return (uint16_t)sign;            // ≤ 2^-25 (the tie at half the smallest): 0
  uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126 - e;  // units of 2^-24
  uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (r & 1u))) r++;       // may carry into the smallest normal
  return (uint16_t)(sign | r);
}
static inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
  if (e != 0) return bits_f32(sign | ((e + 112) << 23) | (m << 13));
  if (m == 0) return bits_f32(sign);
  float v = (float)m * 5.9604644775390625e-8f;  // m · 2^-24, exact
  return sign ? -v : v;
}
// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits (low 13 bits 0).
static inline uint32_t f32_to_tf32_rna(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffffffu;
  if ((u & 0x7f800000u) == 0x7f800000u) return u;  // ±inf
  return (u + 0x1000u) & 0xffffe000u;               // may round up to inf, as the hardware does
}
// A tf32 operand of mma: the hardware reads only the top 19 bits of the register.
static inline double tf32_operand(uint32_t u) { return (double)bits_f32(u & 0xffffe000u); }

// ---- warp collectives ---------------------------------------------------------------------
enum CollOp : uint32_t { COLL_MMA_BF16 = 1, COLL_MMA_F16 = 2, COLL_MMA_TF32 = 3, COLL_LDMATRIX = 4 };

static inline const char* coll_name(uint32_t op) {
  switch (op & 0xff) {
    case COLL_MMA_BF16: return "mma.sync.aligned.m16n8k16 (bf16)";
    case COLL_MMA_F16: return "mma.sync.aligned.m16n8k16 (f16)";
    case COLL_MMA_TF32: return "mma.sync.aligned.m16n8k8 (tf32)";
    default: return "ldmatrix.sync.aligned";
  }
}

// Every lane publishes `n` words, meets the whole warp, and gets the exchange area back:
// area[lane * EMU_COLL_WORDS + 1 + i] is lane's word i. Word 0 tags the collective (op and a
// per-lane count), so lanes that met at the barrier from different program points are caught.
// Double-buffered by the shuffle parity, like the shuffle slots (one barrier per collective).
static inline const uint32_t* warp_collective(uint32_t op, const uint32_t* mine, int n) {
  ThreadState* t = emu_cur_thread;
  unsigned p = t->shfl_parity;
  t->shfl_parity ^= 1;
  uint32_t* area = emu_warp_coll(p);
  const uint32_t tag = (op << 24) ^ (t->coll_count++ & 0xffffffu);
  uint32_t* me = area + t->lane * EMU_COLL_WORDS;
  me[0] = tag;
  for (int i = 0; i < n; ++i) me[1 + i] = mine[i];
  unsigned took = emu_warp_sync(0xffffffffu);
  char msg[200];
  if (took != 0xffffffffu) {
    snprintf(msg, sizeof msg, "%s by a partial warp (lanes 0x%08x took part; .aligned needs all 32 lanes of warp %u)", coll_name(op), took, t->warp);
    emu_fail(msg);
  }
  for (int l = 0; l < 32; ++l)
    if (area[l * EMU_COLL_WORDS] != tag) {
      snprintf(msg, sizeof msg, "%s: lane %d of warp %u is at a different warp collective or program point (.aligned needs every lane at the same instruction)", coll_name(op), l, t->warp);
      emu_fail(msg);
    }
  return area;
}

// D = A·B + C for m16n8k16 (kind bf16 or f16): A 16×16 row-major in 4 regs, B 16×8 "col" in 2.
// PTX ISA fragment layouts, g = lane>>2, t = lane&3:
//   A: reg0 (g, 2t..2t+1), reg1 (g+8, 2t..), reg2 (g, 2t+8..), reg3 (g+8, 2t+8..); low half first
//   B: reg0 (k = 2t..2t+1, n = g), reg1 (k = 2t+8.., n = g)
//   C/D: c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..2t+1)
static inline void mma_m16n8k16(uint32_t op, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  const uint32_t* area = warp_collective(op, mine, 6);
  emu_cur_thread->mma_flops += 2 * 16 * 8 * 16 / 32;  // this lane's share of the warp's m16n8k16
  auto conv = [op](uint16_t h) { return op == COLL_MMA_BF16 ? (double)bf16_to_f32(h) : (double)f16_to_f32(h); };
  auto half_of = [](uint32_t w, int k) { return (uint16_t)((k & 1) ? w >> 16 : w & 0xffffu); };
  const unsigned lane = emu_cur_thread->lane, g = lane >> 2, t = lane & 3;
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i >> 1), n = 2 * t + (i & 1);
    double s = (double)c[i];
    for (int k = 0; k < 16; ++k) {
      const uint32_t* la = area + ((r & 7) * 4 + ((k & 7) >> 1)) * EMU_COLL_WORDS + 1;
      const uint32_t* lb = area + (n * 4 + ((k & 7) >> 1)) * EMU_COLL_WORDS + 1;
      double av = conv(half_of(la[(r >= 8) + 2 * (k >= 8)], k));
      double bv = conv(half_of(lb[4 + (k >= 8)], k));
      s += av * bv;  // each product is exact in f64 (11-bit × 11-bit mantissas)
    }
    out[i] = (float)s;  // one rounding (round to nearest even)
  }
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

// m16n8k8 tf32: A 16×8 in 4 regs: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
// B 8×8: b0 (k = t, n = g), b1 (k = t+4, n = g); C/D as for m16n8k16.
static inline void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
  const uint32_t* area = warp_collective(COLL_MMA_TF32, mine, 6);
  emu_cur_thread->mma_flops += 2 * 16 * 8 * 8 / 32;  // this lane's share of the warp's m16n8k8
  const unsigned lane = emu_cur_thread->lane, g = lane >> 2, t = lane & 3;
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i >> 1), n = 2 * t + (i & 1);
    double s = (double)c[i];
    for (int k = 0; k < 8; ++k) {
      const uint32_t* la = area + ((r & 7) * 4 + (k & 3)) * EMU_COLL_WORDS + 1;
      const uint32_t* lb = area + (n * 4 + (k & 3)) * EMU_COLL_WORDS + 1;
      s += tf32_operand(la[(r >= 8) + 2 * (k >= 4)]) * tf32_operand(lb[4 + (k >= 4)]);
    }
    out[i] = (float)s;
  }
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

// ldmatrix.m8n8 .x{nmat} (.trans) .b16: lanes 8i..8i+7 give the row addresses of matrix i (16
// bytes each, 16-byte aligned, in shared memory). Lane l receives in r[i] the elements
// (row l>>2, cols 2(l&3), +1) of matrix i, or with .trans (rows 2(l&3), +1, col l>>2).
// Each lane reads its own row before the warp meets and publishes the 16 bytes, so the whole
// read happens at the instruction, as on the GPU (a lane's later store cannot leak into it).
static inline void ldmatrix(uint32_t* r, int nmat, bool trans, const void* row) {
  const unsigned lane = emu_cur_thread->lane;
  uint32_t mine[4] = {0, 0, 0, 0};
  if ((int)lane < 8 * nmat) {
    char msg[200];
    if (!emu_is_shared(row, 16)) {
      snprintf(msg, sizeof msg, "ldmatrix: lane %u's row address %p is not in this block's shared memory (or runs past the launch's dynamic shared memory)", lane, row);
      emu_fail(msg);
    }
    if ((uintptr_t)row % 16) {
      snprintf(msg, sizeof msg, "ldmatrix: lane %u's row address %p is not 16-byte aligned (misaligned address)", lane, row);
      emu_fail(msg);
    }
    memcpy(mine, row, 16);
  }
  const uint32_t* area = warp_collective(COLL_LDMATRIX | (uint32_t)nmat << 4 | (uint32_t)trans << 7, mine, 4);
  // element c (0..7) of the row that lane l published
  auto el = [area](unsigned l, unsigned c) { return (uint16_t)(area[l * EMU_COLL_WORDS + 1 + c / 2] >> (16 * (c & 1))); };
  const unsigned g = lane >> 2, t = lane & 3;
  for (int i = 0; i < nmat; ++i) {
    uint16_t lo, hi;
    if (!trans) {
      lo = el(8 * i + g, 2 * t);
      hi = el(8 * i + g, 2 * t + 1);
    } else {
      lo = el(8 * i + 2 * t, g);
      hi = el(8 * i + 2 * t + 1, g);
    }
    r[i] = (uint32_t)lo | (uint32_t)hi << 16;
  }
}

// ---- cp.async -----------------------------------------------------------------------------
struct CpAsyncCopy {
  uint32_t* dst;
  uint32_t data[4];
  uint32_t words;
  uint32_t group;  // kUncommitted until commit_group
};
struct CpAsyncQueue {
  uint32_t n;
  uint32_t committed;  // groups committed so far
  CpAsyncCopy q[EMU_CP_ASYNC_MAX];
};
constexpr uint32_t kUncommitted = 0xffffffffu;
}  // namespace emu

extern "C" emu::CpAsyncQueue* emu_cp_async_queue(void);

namespace emu {
static inline void check_aligned(const void* p, unsigned bytes, const char* what) {
  if (unsigned off = emu_misalignment(p, bytes)) {
    char msg[200];
    snprintf(msg, sizeof msg, "misaligned address: %s of %u bytes at %p (%u bytes past a %u-byte boundary)", what, bytes, p, off, bytes);
    emu_fail(msg);
  }
}
[[noreturn]] static inline void emu_fail_bad_src_size(int n) {
  char msg[120];
  snprintf(msg, sizeof msg, "cp.async.cg: source size %d is outside 0..16", n);
  emu_fail(msg);
}

// A copy the instrumentation does not see (so the traffic accounting counts it once, explicitly).
__attribute__((no_sanitize_address)) static inline void copy_unseen(unsigned char* dst, const void* src, unsigned n) {
  const unsigned char* s = (const unsigned char*)src;
  for (unsigned i = 0; i < n; ++i) dst[i] = s[i];
}

// cp.async of `bytes` (4, 8, 16) from global `src` to shared `dst`; only `src_bytes` are read,
// the rest of the destination becomes zero (the ignore-src / zero-fill form).
static inline void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes, const char* what) {
  char msg[220];
  check_aligned(dst, bytes, what);
  if (src_bytes) check_aligned(src, bytes, what);
  if (!emu_is_shared(dst, bytes)) {
    snprintf(msg, sizeof msg, "%s: destination %p is not in this block's shared memory", what, dst);
    emu_fail(msg);
  }
  if (src_bytes && emu_is_shared(src, 1)) {
    snprintf(msg, sizeof msg, "%s: source %p is in shared memory (cp.async copies global to shared)", what, src);
    emu_fail(msg);
  }
  CpAsyncQueue* q = emu_cp_async_queue();
  if (q->n == EMU_CP_ASYNC_MAX) {
    snprintf(msg, sizeof msg, "%s: more than %d copies of one thread in flight (wait_group lands them)", what, EMU_CP_ASYNC_MAX);
    emu_fail(msg);
  }
  CpAsyncCopy& c = q->q[q->n++];
  c.dst = (uint32_t*)dst;
  c.words = bytes / 4;
  c.group = kUncommitted;
  unsigned char buf[16] = {0};
  copy_unseen(buf, src, src_bytes);  // read now, as a fast GPU would
  emu_count_global(src, src_bytes, 1);
  memcpy(c.data, buf, 16);
  for (unsigned i = 0; i < c.words; ++i) c.dst[i] = 0xffffffffu;  // poison (NaN) until the wait
}

static inline void cp_async_commit() {
  CpAsyncQueue* q = emu_cp_async_queue();
  for (uint32_t i = 0; i < q->n; ++i)
    if (q->q[i].group == kUncommitted) q->q[i].group = q->committed;
  q->committed++;  // an empty group counts too, as in PTX
}

// Lands every committed group except the `pending` most recent ones.
static inline void cp_async_wait(unsigned pending) {
  CpAsyncQueue* q = emu_cp_async_queue();
  uint32_t kept = 0;
  for (uint32_t i = 0; i < q->n; ++i) {
    CpAsyncCopy c = q->q[i];
    if (c.group != kUncommitted && c.group + pending < q->committed) {
      for (uint32_t w = 0; w < c.words; ++w) c.dst[w] = c.data[w];
    } else {
      q->q[kept++] = c;
    }
  }
  q->n = kept;
}

template <class V>
static inline V vec_load(const void* p, const char* what) {
  check_aligned(p, sizeof(V), what);
  V v;
  memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
static inline void vec_store(void* p, V v, const char* what) {
  check_aligned(p, sizeof(V), what);
  memcpy(p, &v, sizeof(V));
}
}  // namespace emu
