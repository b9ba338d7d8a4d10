"""PyTorch CPU side of benches/models.rs: upstream guided_diffusion's 553M UNet with the paper's
flags (random weights, float32), one forward at 256², same thread count; prints the time, the FLOP
count of the forward (torch.utils.flop_counter) and the peak RSS.

    python tools/bench/torch_unet.py --threads 2
"""
import argparse
import os
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from upstream_unet import make_model  # noqa: E402

FLAGS = ("--image_size 256 --num_channels 256 --num_res_blocks 2 --attention_resolutions 32,16,8 --num_head_channels 64 "
         "--resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --channel_mult 1,1,2,2,4,4")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = make_model(FLAGS, 15).float().eval()
    n = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 3, 256, 256)
    t = torch.tensor([201])
    y = torch.tensor([3])
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            model(x, t, y)
        flops = fc.get_total_flops()
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            model(x, t, y)
            times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__}, {args.threads} threads: UNet {n} params (no feature head), "
          f"forward 256²: {times[0]:.2f} s, {times[1]:.2f} s; {flops / 1e9:.1f} GFLOP per forward "
          f"({flops / 1e9 / min(times):.1f} GFLOP/s); peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
