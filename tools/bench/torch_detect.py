"""PyTorch CPU side of the detection benchmark in benches/models.rs: the paper's pipeline built
from the upstream packages (guided_diffusion 553M UNet + the feature head, efficientnet-pytorch
B4, random weights) on one 256² image, timesteps 5, 50, 100, in both feature-timestep modes
(the official code's second pass at k, or τ_k sharing the KL pass's UNet call), same threads.

    python tools/bench/torch_detect.py --threads 2
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_pytorch import EfficientNet

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from guided_diffusion import gaussian_diffusion as gd  # noqa: E402
from guided_diffusion.script_util import create_gaussian_diffusion  # noqa: E402
from upstream_effnet import features  # noqa: E402
from upstream_unet import FeatHead, forward, make_model  # noqa: E402

FLAGS = ("--image_size 256 --num_channels 256 --num_res_blocks 2 --attention_resolutions 32,16,8 --num_head_channels 64 "
         "--resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --channel_mult 1,1,2,2,4,4")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = make_model(FLAGS, 15).float().eval()
    head = FeatHead(512).float().eval()
    eff = EfficientNet.from_name("efficientnet-b4").eval()
    diff = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear", timestep_respacing="250")
    x0 = torch.rand(1, 3, 256, 256) * 2 - 1
    y = torch.tensor([3])
    with torch.no_grad():
        for mode in ("index", "tau"):
            t0 = time.perf_counter()
            tgt = features(eff, x0, (1, 5, 9, 21), 16)
            vb, dsum = 0, 0
            for k in (5, 50, 100):
                t = torch.tensor([k])
                xt = diff.q_sample(x0, t, noise=torch.randn_like(x0))
                tau = torch.tensor([float(diff.timestep_map[k])])
                out, feat = forward(model, head, xt, tau, y, 16)
                o = diff.p_mean_variance(lambda *_a, **_k: out, xt, t, clip_denoised=True)
                tm, _, tlv = diff.q_posterior_mean_variance(x0, xt, t)
                kl = gd.normal_kl(tm, tlv, o["mean"], o["log_variance"]) / np.log(2.0)
                vb = vb + (kl - kl.mean()) / kl.std()
                if mode == "index":
                    _, feat = forward(model, head, xt, t.float(), y, 16)
                d = ((feat - tgt) ** 2).mean(1, keepdim=True)
                dsum = dsum + F.interpolate(d, size=(256, 256), mode="bilinear", align_corners=False)
            score = 0.5 * (vb / 3).mean(1) + 0.5 * (dsum / 3)[:, 0]
            s = score.reshape(-1).topk(64).values.mean().item()
            print(f"torch {torch.__version__}, {args.threads} threads: detect 256² (feature timestep {mode}): "
                  f"{time.perf_counter() - t0:.1f} s per image (score {s:.3f})")


if __name__ == "__main__":
    main()
