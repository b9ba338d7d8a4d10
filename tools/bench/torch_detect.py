"""PyTorch side of `ran bench detect`: the paper's pipeline built from the upstream packages —
guided_diffusion's UNet of MODEL_FLAGS with the paper code's feature head, efficientnet-pytorch
B4 (random weights) — on seeded images: timesteps 5, 50, 100 of the linear 1000-step schedule
respaced to 250, KL map + feature map, α = 0.5. `--feature-timestep index` is the official code
(the head sees k: a second UNet pass per k); `tau` lets the KL pass's UNet call (at τ_k) serve
both. The same options and JSON fields as ran's (bench_common.py).

    python tools/bench/torch_detect.py [--flags "<MODEL_FLAGS>"] [--feature-timestep index|tau] [--threads 2] [--json] [--device cuda]
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_pytorch import EfficientNet

from bench_common import PAPER_FLAGS, add_common, measure, report, setup
from guided_diffusion import gaussian_diffusion as gd
from guided_diffusion.script_util import create_gaussian_diffusion
from upstream_effnet import features
from upstream_unet import FeatHead, forward, make_model, parse_flags, truthy

FEAT_TAP = 10
EFFNET_TAPS = (1, 5, 9, 21)  # the last blocks of B4's stages 0, 1, 2, 4


def feat_tap_channels(model):
    """Channels of output_blocks[FEAT_TAP]'s output: its last module's out_channels."""
    blk = model.output_blocks[FEAT_TAP]
    for m in reversed(list(blk.modules())):
        if isinstance(m, torch.nn.Conv2d):
            return m.out_channels
    raise SystemExit("no conv in output_blocks[10]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flags", default=PAPER_FLAGS)
    ap.add_argument("--feature-timestep", choices=("index", "tau"), default="index")
    ap.add_argument("--batch", type=int, default=1)
    add_common(ap)
    args = ap.parse_args()
    setup(args)
    f = parse_flags(args.flags)
    dev = args.dev
    model = make_model(args.flags).float().eval().to(dev)
    head = FeatHead(feat_tap_channels(model)).float().eval().to(dev)
    feat_shape = int(f.get("feat_shape", 16))
    eff = EfficientNet.from_name("efficientnet-b4").eval().to(dev)
    diff = create_gaussian_diffusion(steps=1000, learn_sigma=truthy(f.get("learn_sigma", "False")), noise_schedule="linear", timestep_respacing="250")
    s, n = int(f.get("image_size", 64)), args.batch
    x0 = (torch.rand(n, 3, s, s) * 2 - 1).to(dev)
    y = torch.tensor([(3 + i) % model.num_classes for i in range(n)], device=dev) if model.num_classes is not None else None
    noise = {k: torch.randn(n, 3, s, s).to(dev) for k in (5, 50, 100)}
    mode = args.feature_timestep

    def run():
        with torch.no_grad():
            tgt = features(eff, x0, EFFNET_TAPS, feat_shape)
            vb, dsum = 0, 0
            for k in (5, 50, 100):
                t = torch.full((n,), k, device=dev)
                xt = diff.q_sample(x0, t, noise=noise[k])
                tau = torch.full((n,), float(diff.timestep_map[k]), device=dev)
                out, feat = forward(model, head, xt, tau, y, feat_shape)
                o = diff.p_mean_variance(lambda *_a, **_k: out, xt, t, clip_denoised=True)
                tm, _, tlv = diff.q_posterior_mean_variance(x0, xt, t)
                kl = gd.normal_kl(tm, tlv, o["mean"], o["log_variance"]) / np.log(2.0)
                vb = vb + (kl - kl.mean()) / kl.std()
                if mode == "index":
                    _, feat = forward(model, head, xt, t.float(), y, feat_shape)
                d = ((feat - tgt) ** 2).mean(1, keepdim=True)
                dsum = dsum + F.interpolate(d, size=(s, s), mode="bilinear", align_corners=False)
            score = 0.5 * (vb / 3).mean(1) + 0.5 * (dsum / 3)[:, 0]
            score.reshape(n, -1).topk(64, dim=1).values.mean(1)

    times, flops = measure("detect", args, run)
    config = (f"detect (KL + feature maps, EfficientNet-B4, timesteps 5,50,100, feature timestep {mode}) at {s}x{s}, "
              f"flags `{args.flags}`")
    report(args, "detect", config, n, times, flops)


if __name__ == "__main__":
    main()
