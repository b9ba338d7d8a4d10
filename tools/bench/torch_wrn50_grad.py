"""PyTorch side of `ran bench wrn50-grad`: torchvision's wide_resnet50_2 (random weights, eval) to
layer3, forward and, by autograd, the input gradient of the summed layer1..3 outputs (the backbone
part of a gradient-denoising step); the same options and JSON fields as ran's (bench_common.py).
The full step with PaDiM is torch_padim_step.py (cargo bench --bench padim).

    python tools/bench/torch_wrn50_grad.py [--image-size 256] [--threads 2] [--json]
"""
import argparse

import torch
from torchvision.models import wide_resnet50_2

from bench_common import add_common, measure, report, setup


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    add_common(ap)
    args = ap.parse_args()
    setup(args)
    net = wide_resnet50_2().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    s = args.image_size
    x0 = torch.rand(args.batch, 3, s, s) * 2 - 1

    def run():
        with torch.enable_grad():
            x = x0.clone().requires_grad_(True)
            h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            l1 = net.layer1(h)
            l2 = net.layer2(l1)
            l3 = net.layer3(l2)
            (l1.sum() + l2.sum() + l3.sum()).backward()

    times, flops = measure("wrn50-grad", args, run)
    report(args, "wrn50-grad", f"wide_resnet50_2 to layer3, forward + input gradient at {s}x{s}", args.batch, times, flops)


if __name__ == "__main__":
    main()
