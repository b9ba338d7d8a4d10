"""PyTorch side of `ran bench effnet`: efficientnet-pytorch's EfficientNet (random weights, eval)
run to the last block of the stages ran taps (0, 1, 2, 4: blocks 1, 5, 9, 21 for B4), the taps
resized to 16² and concatenated, as the paper's feature score uses it; the same options and JSON
fields as ran's (bench_common.py).

    python tools/bench/torch_effnet.py [--variant b4] [--image-size 256] [--threads 2] [--json]
"""
import argparse

import torch
from efficientnet_pytorch import EfficientNet

from bench_common import add_common, measure, report, setup
from upstream_effnet import features

TAP_STAGES = (0, 1, 2, 4)


def stage_ends(model):
    """Index of the last block of each stage (a stage's blocks share their output width)."""
    outs = [b._block_args.output_filters for b in model._blocks]
    return [i for i in range(len(outs)) if i + 1 == len(outs) or outs[i + 1] != outs[i]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="b4")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    add_common(ap)
    args = ap.parse_args()
    setup(args)
    name = args.variant if args.variant.startswith("efficientnet-") else f"efficientnet-{args.variant}"
    eff = EfficientNet.from_name(name).eval()
    ends = stage_ends(eff)
    taps = tuple(ends[s] for s in TAP_STAGES)
    s = args.image_size
    x = torch.rand(args.batch, 3, s, s) * 2 - 1

    def run():
        with torch.no_grad():
            features(eff, x, taps, 16)

    times, flops = measure("effnet", args, run)
    report(args, "effnet", f"{name} features (to the last tap, resized to 16x16) at {s}x{s}", args.batch, times, flops, {"taps": list(taps)})


if __name__ == "__main__":
    main()
