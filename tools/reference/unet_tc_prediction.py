#!/usr/bin/env python3
"""Per-layer prediction for the tensor-core implicit GEMM (kernels/tc_gemm.cuh) on the paper's 553M
UNet at 256² (tests/unet_paper_architecture.rs PAPER_FLAGS: 256 channels, mult 1,1,2,2,4,4, 2 res
blocks, resblock_updown, attention at 32/16/8, learn_sigma) on an H100/H200 (132 SMs, 989 TFLOP/s
dense bf16, 4.8 TB/s). Prints the markdown table of benches/RESULTS.md. A model, not a measurement:
the reasoning is in the printed notes and kernels/README.md ("Tensor-core implicit GEMM").

Layers are the UNet's GEMMs in guided_diffusion's order (conv 3×3 / 1×1, attention's qkv and proj
1×1 convs); attention's two products, the time-embedding linears and the elementwise ops are not
on this engine and are left out (their FLOPs are counted in the total for reference).
"""
import math
import sys

PEAK = 989e12          # dense bf16 FLOP/s (H100/H200 SXM)
BW = 4.8e12            # HBM bytes/s (H200; an H100 has 3.35)
SMS = 132
# Ceiling of this engine on compute-bound layers, as a fraction of PEAK (see the notes below).
MMA_SYNC_CEIL = 0.65   # mma.sync issue rate on Hopper (wgmma is needed for more)
SMEM_CEIL = 128 * (16 * 4096) / (3 * 1024) / 4096  # ldmatrix bytes per mma of a 64×32 warp tile
EFF = 0.75             # pipeline fill, epilogue, barriers, im2col address arithmetic
BW_EFF = 0.8
LAUNCH = 3e-6          # per kernel launch (s)

BM_L, BM_S, BK = 128, 64, 32
BLOCKS_PER_SM = {True: 2, False: 5}  # bf16: large 122 regs → 2, small 96 regs → 5 (ptxas, sm_90)


def plan(m, n, k):
    large = m > BM_S and n > BM_S
    bm = BM_L if large else BM_S
    gm, gn = math.ceil(m / bm), math.ceil(n / bm)
    kt = max(1, math.ceil(k / BK))
    splits = 1
    if gm * gn < 264:
        splits = max(1, min(math.ceil(264 / (gm * gn)), kt // 4, 16))
    kps = math.ceil(kt / splits)
    splits = math.ceil(kt / kps)
    return large, gm, gn, splits


def layers():
    ch, mult = 256, [1, 1, 2, 2, 4, 4]
    res = 256
    L = [("conv_in 3→256 (C=3: f32 fallback)", 3, 256, 256, 3)]
    chans = [256]
    cur = 256
    for lvl, mlt in enumerate(mult):
        for _ in range(2):
            out = mlt * ch
            L.append((f"in L{lvl} res conv1 {cur}→{out}", cur, out, res, 3))
            L.append((f"in L{lvl} res conv2 {out}→{out}", out, out, res, 3))
            if cur != out:
                L.append((f"in L{lvl} res skip 1×1 {cur}→{out}", cur, out, res, 1))
            cur = out
            if res <= 32:
                L.append((f"in L{lvl} attn qkv {cur}→{3*cur}", cur, 3 * cur, res, 1))
                L.append((f"in L{lvl} attn proj {cur}→{cur}", cur, cur, res, 1))
            chans.append(cur)
        if lvl != len(mult) - 1:
            res //= 2
            L.append((f"in L{lvl} down conv1 {cur}→{cur}", cur, cur, res, 3))
            L.append((f"in L{lvl} down conv2 {cur}→{cur}", cur, cur, res, 3))
            chans.append(cur)
    for name in ("mid res1", "mid res2"):
        L.append((f"{name} conv1 {cur}→{cur}", cur, cur, res, 3))
        L.append((f"{name} conv2 {cur}→{cur}", cur, cur, res, 3))
        if name == "mid res1":
            L.append((f"mid attn qkv {cur}→{3*cur}", cur, 3 * cur, res, 1))
            L.append((f"mid attn proj {cur}→{cur}", cur, cur, res, 1))
    for lvl, mlt in list(enumerate(mult))[::-1]:
        for i in range(3):
            cin = cur + chans.pop()
            out = mlt * ch
            L.append((f"out L{lvl} res conv1 {cin}→{out}", cin, out, res, 3))
            L.append((f"out L{lvl} res conv2 {out}→{out}", out, out, res, 3))
            L.append((f"out L{lvl} res skip 1×1 {cin}→{out}", cin, out, res, 1))
            cur = out
            if res <= 32:
                L.append((f"out L{lvl} attn qkv {cur}→{3*cur}", cur, 3 * cur, res, 1))
                L.append((f"out L{lvl} attn proj {cur}→{cur}", cur, cur, res, 1))
            if lvl and i == 2:
                res *= 2
                L.append((f"out L{lvl} up conv1 {cur}→{cur}", cur, cur, res, 3))
                L.append((f"out L{lvl} up conv2 {cur}→{cur}", cur, cur, res, 3))
    L.append(("conv_out 256→6", 256, 6, 256, 3))
    return L


def predict(cin, cout, res, k, batch):
    m, n, kk = cout, batch * res * res, cin * k * k
    flops = 2.0 * m * n * kk
    # minimum bytes of the GEMM kernel: x and w once in bf16, y once in f32
    bytes_ = 2 * batch * cin * res * res + 2 * cout * kk + 4 * m * n
    cast = 6 * batch * cin * res * res + 6 * cout * kk  # f32 read + bf16 write of x and w
    large, gm, gn, splits = plan(m, n, kk)
    blocks = gm * gn * splits
    slots = SMS * BLOCKS_PER_SM[large]
    waves = blocks / slots
    wave_eff = waves / math.ceil(waves)
    tile_eff = (m * n) / (gm * gn * (BM_L if large else BM_S) ** 2)
    ceil = min(MMA_SYNC_CEIL, SMEM_CEIL) * EFF
    t_mma = flops / (PEAK * ceil * wave_eff * tile_eff)
    t_mem = (bytes_ + (8 * splits * m * n if splits > 1 else 0)) / (BW * BW_EFF)
    t = max(t_mma, t_mem) + LAUNCH * (2 if splits > 1 else 1)
    t_cast = cast / (BW * BW_EFF) + LAUNCH
    return dict(flops=flops, bytes=bytes_, grid=(gn, gm, splits), large=large, waves=waves, frac=flops / (t * PEAK), t=t, t_cast=t_cast,
                bound="mem" if t_mem > t_mma else "mma")


def main():
    batches = [int(b) for b in sys.argv[1:]] or [1, 8]
    L = layers()
    # group identical shapes (a row per distinct layer shape, with its count)
    groups = {}
    for name, cin, cout, res, k in L:
        key = (cin, cout, res, k)
        groups.setdefault(key, []).append(name)
    print(f"ceiling on compute-bound layers: min(mma.sync {MMA_SYNC_CEIL}, ldmatrix {SMEM_CEIL:.2f}) × {EFF} = {min(MMA_SYNC_CEIL, SMEM_CEIL) * EFF:.2f} of peak\n")
    for batch in batches:
        tot_f = tot_t = tot_c = 0.0
        print(f"### batch {batch}\n")
        print("| layer (count) | GEMM M×N×K | GFLOP each | min MB each | grid (x, y, splits) · tile | waves | bound | predicted % of 989 TF | µs each (+ cast) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for (cin, cout, res, k), names in groups.items():
            p = predict(cin, cout, res, k, batch)
            cnt = len(names)
            fallback = cin % 8 != 0
            tot_f += cnt * p["flops"]
            if fallback:
                label = names[0]
                print(f"| {label} ×{cnt} | {cout}×{batch*res*res}×{cin*k*k} | {p['flops']/1e9:.2f} | {p['bytes']/1e6:.1f} | f32 igemm (C=3) | — | — | ~1 (f32 path) | — |")
                tot_t += cnt * p["flops"] / (PEAK * 0.01)
                continue
            tot_t += cnt * p["t"]
            tot_c += cnt * p["t_cast"]
            label = names[0].split(" ", 2)[2] if names[0].startswith(("in ", "out ")) else names[0]
            print(f"| {k}×{k} {cin}→{cout} @{res}² ×{cnt} | {cout}×{batch*res*res}×{cin*k*k} | {p['flops']/1e9:.2f} | {p['bytes']/1e6:.1f} | "
                  f"{p['grid'][0]}×{p['grid'][1]}×{p['grid'][2]} · {'128²' if p['large'] else '64²'} | {p['waves']:.2f} | {p['bound']} | {100*p['frac']:.0f} | {1e6*p['t']:.0f} (+{1e6*p['t_cast']:.0f}) |")
        print(f"\nbatch {batch}: {len(L)} GEMM layers, {tot_f/1e9:.0f} GFLOP; predicted GEMM time {1e3*tot_t:.2f} ms "
              f"(+ {1e3*tot_c:.2f} ms casts) = {100*tot_f/(tot_t*PEAK):.0f}% of peak over the GEMMs\n")


if __name__ == "__main__":
    main()
