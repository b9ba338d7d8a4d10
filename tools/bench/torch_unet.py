"""PyTorch side of `ran bench unet`: upstream guided_diffusion's UNetModel of MODEL_FLAGS (random
weights, float32, no feature head), one forward of a [batch, 3, S, S] image at t = 201, the same
options and JSON fields as ran's (bench_common.py).

    python tools/bench/torch_unet.py [--flags "<MODEL_FLAGS>"] [--batch 1] [--iters 5] [--threads 2] [--json]
        [--device cuda] [--dtype float16|bfloat16] [--channels-last] [--compile]

--dtype float16 is upstream's own fp16 mode (use_fp16: convolutions and attention projections in
fp16, norms and the embedding MLP in f32); bfloat16 the same conversion to bf16.
"""
import argparse

import torch

from bench_common import PAPER_FLAGS, add_common, measure, report, setup
from upstream_unet import make_model, parse_flags


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flags", default=PAPER_FLAGS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (its build is in the warm-up)")
    add_common(ap)
    args = ap.parse_args()
    setup(args)
    f = parse_flags(args.flags)
    model = make_model(args.flags).float().eval()
    n = sum(p.numel() for p in model.parameters())
    if args.dtype != "float32":
        dt = getattr(torch, args.dtype)
        model.dtype = dt  # what upstream's convert_to_fp16 does, for either half type
        for blocks in (model.input_blocks, model.middle_block, model.output_blocks):
            blocks.apply(lambda m: m.to(dt) if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) else None)
    s = int(f.get("image_size", 64))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(args.dev, memory_format=fmt)
    x = torch.randn(args.batch, 3, s, s, device=args.dev).to(memory_format=fmt)
    t = torch.full((args.batch,), 201, device=args.dev)
    y = None
    if model.num_classes is not None:
        y = torch.tensor([(3 + i) % model.num_classes for i in range(args.batch)], device=args.dev)
    net = torch.compile(model) if args.compile else model

    def run():
        with torch.no_grad():
            net(x, t, y)

    def eager():
        with torch.no_grad():
            model(x, t, y)

    times, flops = measure("unet", args, run, count=eager)
    variant = args.dtype + (" channels-last" if args.channels_last else "") + (" torch.compile" if args.compile else "")
    report(args, "unet", f"UNet forward at {s}x{s} ({variant}), flags `{args.flags}`", args.batch, times, flops, {"params": n, "variant": variant})


if __name__ == "__main__":
    main()
