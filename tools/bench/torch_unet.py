"""PyTorch side of `ran bench unet`: upstream guided_diffusion's UNetModel of MODEL_FLAGS (random
weights, float32, no feature head), one forward of a [batch, 3, S, S] image at t = 201, the same
options and JSON fields as ran's (bench_common.py).

    python tools/bench/torch_unet.py [--flags "<MODEL_FLAGS>"] [--batch 1] [--iters 5] [--threads 2] [--json]
"""
import argparse

import torch

from bench_common import PAPER_FLAGS, add_common, measure, report, setup
from upstream_unet import make_model, parse_flags


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flags", default=PAPER_FLAGS)
    ap.add_argument("--batch", type=int, default=1)
    add_common(ap)
    args = ap.parse_args()
    setup(args)
    f = parse_flags(args.flags)
    model = make_model(args.flags).float().eval()
    n = sum(p.numel() for p in model.parameters())
    s = int(f.get("image_size", 64))
    x = torch.randn(args.batch, 3, s, s)
    t = torch.full((args.batch,), 201)
    y = None
    if model.num_classes is not None:
        y = torch.tensor([(3 + i) % model.num_classes for i in range(args.batch)])

    def run():
        with torch.no_grad():
            model(x, t, y)

    times, flops = measure("unet", args, run)
    report(args, "unet", f"UNet forward at {s}x{s}, flags `{args.flags}`", args.batch, times, flops, {"params": n})


if __name__ == "__main__":
    main()
