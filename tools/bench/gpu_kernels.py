"""PyTorch's side of the kernel benchmarks on a GPU (benches/gpu.sh): each kernel family of the
UNet at the op table's production shapes (src/optable/sizes.rs, the case names match so the
summary can pair rows with `benches/kernels.rs --gpu-only`), timed with CUDA events:

  conv3x3 (cuDNN) f32 without TF32, TF32, and fp16 / bf16 in channels-last;
  linear (cuBLAS) f32 / bf16;  attention (SDPA, flash where it applies) f32 / fp16 / bf16;
  group_norm + scale-shift + SiLU (F.group_norm) f32 / bf16.

FLOP rows: TFLOP/s, % of the fp32 peak and of the dense bf16 tensor peak; byte rows: GB/s
(each input read once, each output written once, at the dtype's size) and % of DRAM bandwidth.
One JSON object per row on stdout (--json), a table on stderr.

    python tools/bench/gpu_kernels.py [--device cuda] [--peaks 67,989,4800] [--tiny] [--json]

--tiny: small shapes and 2 repetitions (the dry run, any device, CPU torch included).
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def timer(dev, reps):
    """Median ms of fn() over `reps` runs after 3 warm-ups; CUDA events on a GPU."""
    def run(fn):
        for _ in range(3):
            fn()
        times = []
        for _ in range(reps):
            if dev.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--peaks", default="67,989,4800", help="fp32 TFLOP/s, dense bf16 tensor TFLOP/s, DRAM GB/s (H200 datasheet)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    fp32_peak, tensor_peak, dram = (float(v) for v in args.peaks.split(","))
    dev = torch.device(args.device)
    reps = 2 if args.tiny else args.reps
    t = timer(dev, reps)
    torch.manual_seed(0)
    s = 8 if args.tiny else 1  # shapes divided by s in --tiny
    rnd = lambda *shape, dtype=torch.float32: (torch.rand(*shape, device=dev) - 0.5).to(dtype)  # noqa: E731
    rows = []

    def row(family, case, variant, ms, flops=None, nbytes=None, unit=None):
        r = {"side": "torch", "family": family, "case": case, "variant": variant, "ms": ms, "device": str(dev),
             "torch": torch.__version__, "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}
        if flops is not None:
            tf = flops / ms / 1e9
            r.update(tflops=tf, pct_fp32_peak=100 * tf / fp32_peak, pct_tensor_peak=100 * tf / tensor_peak, unit=unit)
            txt = f"{tf:8.2f} TFLOP/s  {r['pct_tensor_peak']:5.1f}% of bf16 tensor peak"
        else:
            gbs = nbytes / ms / 1e6
            r.update(gbs=gbs, pct_dram=100 * gbs / dram)
            txt = f"{gbs:8.1f} GB/s     {r['pct_dram']:5.1f}% of DRAM bandwidth"
        rows.append(r)
        print(f"{family:<10} {case:<40} {variant:<22} {ms:9.3f} ms {txt}", file=sys.stderr, flush=True)

    def try_row(*a, **k):
        try:
            fn = a[3]
            ms = t(fn)
            row(*a[:3], ms, **k)
        except Exception as e:  # a variant this torch/GPU lacks: recorded, not fatal
            rows.append({"side": "torch", "family": a[0], "case": a[1], "variant": a[2], "error": str(e)[:300]})
            print(f"{a[0]:<10} {a[1]:<40} {a[2]:<22} error: {str(e)[:120]}", file=sys.stderr)

    with torch.no_grad():
        for c, hw, stride, case in [(256, 64, 1, "conv3x3 256->256 @64x64"), (128, 256, 1, "conv3x3 128->128 @256x256"),
                                    (256, 64, 2, "conv3x3 s2 256->256 @64x64")]:
            c, hw = max(c // s, 8), max(hw // s, 8)
            ho = (hw + 2 - 3) // stride + 1
            flops = 2.0 * c * c * 9 * ho * ho
            for variant, dt, cl, tf32 in [("f32 (no TF32)", torch.float32, False, False), ("tf32", torch.float32, False, True),
                                          ("fp16 channels-last", torch.float16, True, False), ("bf16 channels-last", torch.bfloat16, True, False)]:
                if dev.type == "cpu" and dt == torch.float16:
                    continue
                torch.backends.cudnn.allow_tf32 = tf32
                x, w, b = rnd(1, c, hw, hw, dtype=dt), rnd(c, c, 3, 3, dtype=dt) * 0.1, rnd(c, dtype=dt)
                if cl:
                    x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
                try_row("conv", case, variant, lambda x=x, w=w, b=b: F.conv2d(x, w, b, stride=stride, padding=1), flops=flops)
        torch.backends.cudnn.allow_tf32 = False
        n, k, m = 1024 // s, 512 // s, 1536 // s
        for variant, dt, tf32 in [("f32 (no TF32)", torch.float32, False), ("tf32", torch.float32, True), ("bf16", torch.bfloat16, False)]:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            x, w, b = rnd(n, k, dtype=dt), rnd(m, k, dtype=dt), rnd(m, dtype=dt)
            try_row("linear", "linear 1024 tokens 512->1536", variant, lambda x=x, w=w, b=b: F.linear(x, w, b), flops=2.0 * n * k * m)
        torch.backends.cuda.matmul.allow_tf32 = False
        # guided-diffusion's legacy layout [B, 3·H·C, T] → SDPA's [B, H, T, C]; the reshape is the
        # caller's work in both, so it is left outside the timed call
        heads, ch, tok = 4, 64, 1024 // s
        for variant, dt in [("f32 (math)", torch.float32), ("fp16 (flash)", torch.float16), ("bf16 (flash)", torch.bfloat16)]:
            if dev.type == "cpu" and dt == torch.float16:
                continue
            q, kk, v = (rnd(1, heads, tok, ch, dtype=dt) for _ in range(3))
            try_row("attention", "attention 4 heads x 64, 1024 tokens", variant,
                    lambda q=q, kk=kk, v=v: F.scaled_dot_product_attention(q, kk, v), flops=4.0 * heads * tok * tok * ch)
        c, hw = 256 // s, 64 // s
        for variant, dt in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
            x, g, be = rnd(1, c, hw, hw, dtype=dt), rnd(c, dtype=dt) + 1, rnd(c, dtype=dt)
            sc, sh = rnd(1, c, 1, 1, dtype=dt), rnd(1, c, 1, 1, dtype=dt)
            size = torch.finfo(dt).bits // 8
            try_row("groupnorm", "group_norm32+ss+silu 256ch @64x64", variant,
                    lambda x=x, g=g, be=be, sc=sc, sh=sh: F.silu(F.group_norm(x, 32, g, be, 1e-5) * (1 + sc) + sh),
                    nbytes=2.0 * size * c * hw * hw)
            try_row("groupnorm", "group_norm32 alone 256ch @64x64", variant, lambda x=x, g=g, be=be: F.group_norm(x, 32, g, be, 1e-5),
                    nbytes=2.0 * size * c * hw * hw)
    if args.json:
        for r in rows:
            print(json.dumps(r, sort_keys=True))


if __name__ == "__main__":
    main()
