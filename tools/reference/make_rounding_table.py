"""Reference table for the emulator's f32 -> bf16 / f16 conversions (kernels/emu/cuda_emu_tc.h):
torch's own rounding (round to nearest even, subnormals kept, overflow to inf) of a set of f32 bit
patterns chosen to hit every rounding case: exact ties at both widths, values one bit either side
of a tie, the f16 subnormal range and its boundaries, the largest finite values and their overflow,
f32 subnormals, and random bit patterns over the whole range and over the f16 range.

Writes tests/fixtures/rounding_bf16_f16.bin: the 8 bytes "RNDTBL01", a little-endian u32 count,
then per entry the f32 input bits (u32), torch's bfloat16 bits (u16) and float16 bits (u16).
NaN inputs are in the table too; torch's NaN patterns (0x7fc0 / 0x7e00) differ from CUDA's
canonical NaN (0x7fff), so the test checks only that a NaN stays a NaN (it says why).

Run:  /work/venv-ref/bin/python tools/reference/make_rounding_table.py   (torch in requirements.txt)
"""
import os
import struct

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "rounding_bf16_f16.bin")
g = torch.Generator().manual_seed(20261201)
bits = []


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


# specials: zeros, ones, infinities, NaNs (quiet, signalling, with payloads), extremes of f32
bits += [0x00000000, 0x80000000, f32_bits(1.0), f32_bits(-1.0), 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFC00001, 0x7FFFFFFF]
bits += [0x7F7FFFFF, 0xFF7FFFFF, 0x00800000, 0x00000001, 0x007FFFFF, 0x807FFFFF, 0x00400000]
# bf16: exact ties (low half 0x8000) with even and odd kept bits, one below, one above, and the tie
# that rounds up into the next binade / to infinity
for hi in torch.randint(0, 1 << 16, (400,), generator=g).tolist() + [0x7F7F, 0xFF7F, 0x3F7F, 0x0000, 0x0001, 0x007F]:
    for lo in (0x8000, 0x7FFF, 0x8001, 0x0000, 0xFFFF):
        bits.append((hi << 16) | lo)
# f16: range boundaries
for x in (65504.0, 65505.0, 65519.0, 65520.0, 65536.0, 2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -26, 2.0 ** -15):
    bits += [f32_bits(x), f32_bits(-x), f32_bits(x) + 1, f32_bits(x) - 1]
bits += [0x477FEFFF, 0x477FF000, 0x477FF001, 0x33000000, 0x33000001, 0x32FFFFFF, 0x387FFFFF, 0x38800000]
# f16 subnormals: every tie (k + 1/2)·2^-24 and one f32 ulp either side
for k in range(0, 1024):
    t = f32_bits((k + 0.5) * 2.0 ** -24)
    bits += [t, t - 1, t + 1]
# f16 normals: ties half-way between neighbours, across all exponents, both parities of the kept bit
for h in torch.randint(0x0400, 0x7BFF, (800,), generator=g).tolist():
    lo = torch.tensor([h], dtype=torch.int16).view(torch.float16).float().item()
    hi = torch.tensor([h + 1], dtype=torch.int16).view(torch.float16).float().item()
    t = f32_bits((lo + hi) / 2)  # exact in f32 (11-bit mantissas)
    bits += [t, t - 1, t + 1, t | 0x80000000]
# random bit patterns: whole f32 range, and exponents inside the f16 range (2^-26 .. 2^17)
bits += torch.randint(0, 1 << 32, (3000,), generator=g, dtype=torch.int64).tolist()
exp = torch.randint(127 - 26, 127 + 17, (3000,), generator=g)
man = torch.randint(0, 1 << 23, (3000,), generator=g)
sign = torch.randint(0, 2, (3000,), generator=g)
bits += ((sign << 31) | (exp << 23) | man).tolist()

u = torch.tensor([b & 0xFFFFFFFF for b in bits], dtype=torch.int64)
x = u.to(torch.int32).view(torch.float32)  # wraps into int32 two's complement, same bits
bf = x.to(torch.bfloat16).view(torch.int16).to(torch.int64) & 0xFFFF
hf = x.to(torch.float16).view(torch.int16).to(torch.int64) & 0xFFFF
with open(OUT, "wb") as f:
    f.write(b"RNDTBL01")
    f.write(struct.pack("<I", len(bits)))
    for a, b, c in zip(u.tolist(), bf.tolist(), hf.tolist()):
        f.write(struct.pack("<IHH", a, b, c))
print(f"{len(bits)} entries -> {OUT}")
