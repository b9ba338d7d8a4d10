"""PyTorch side of `ran bench conv`: F.conv2d of x [batch, C, H, W] with `--out` filters of k×k,
stride 1, padding k/2, with bias; the same options and JSON fields as ran's (bench_common.py).

    python tools/bench/torch_conv.py [--shape 256x64x64] [--kernel 3] [--out C] [--threads 2] [--json]
"""
import argparse

import torch
import torch.nn.functional as F

from bench_common import add_common, measure, report, setup


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="256x64x64", help="CxHxW")
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--out", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1)
    add_common(ap)
    args = ap.parse_args()
    setup(args)
    c, h, w = (int(v) for v in args.shape.split("x"))
    k, o = args.kernel, args.out or c
    x = torch.rand(args.batch, c, h, w) - 0.5
    wt = torch.rand(o, c, k, k) - 0.5
    b = torch.rand(o) - 0.5
    times, flops = measure("conv", args, lambda: F.conv2d(x, wt, b, padding=k // 2))
    report(args, "conv", f"conv2d {c}->{o} {k}x{k} stride 1 padding {k // 2} at {h}x{w}", args.batch, times, flops)


if __name__ == "__main__":
    main()
