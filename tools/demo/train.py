"""Trains the demo model with the upstream training code (PyPI guided-diffusion-sdk: its
UNetModel, GaussianDiffusion and training losses — MSE on ε plus the variational bound for the
learned σ, like the paper's training) on the demo data set's train/good images, all categories in
one class-conditional model, on the CPU. Saves the EMA weights as a torch.save'd state_dict; ship
it with `ran convert` (README, weights/README.md).

  python tools/demo/train.py --data examples/demo --minutes 14 --out /tmp/demo_ema.pt
"""
import argparse
import copy
import glob
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from guided_diffusion.resample import UniformSampler  # noqa: E402
from guided_diffusion.script_util import create_gaussian_diffusion  # noqa: E402
from upstream_unet import make_model  # noqa: E402

CATS = ["brick", "moon", "gravel"]  # the order of the class labels
FLAGS = ("--image_size 64 --num_channels 32 --num_res_blocks 2 --channel_mult 1,2,2,2 --attention_resolutions 16,8 "
         "--num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True")


def load_train(data):
    """Every category's train/good images in [-1, 1] as [N, 3, H, W] and their class labels."""
    xs, ys = [], []
    for ci, c in enumerate(CATS):
        for p in sorted(glob.glob(os.path.join(data, c, "train", "good", "*.png"))):
            xs.append(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1)
            ys.append(ci)
    return torch.tensor(np.stack(xs)), torch.tensor(ys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="examples/demo")
    ap.add_argument("--out", default="/tmp/demo_ema.pt")
    ap.add_argument("--minutes", type=float, default=14)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    x_all, y_all = load_train(args.data)
    model = make_model(FLAGS, len(CATS)).float()
    ema = copy.deepcopy(model).eval()
    diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear")
    sampler = UniformSampler(diffusion)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{len(x_all)} images, {n_params} parameters, batch {args.batch}, {args.minutes} min")
    start, step, losses = time.time(), 0, []
    while time.time() - start < args.minutes * 60:
        idx = torch.randint(0, len(x_all), (args.batch,))
        t, w = sampler.sample(args.batch, "cpu")
        loss = (diffusion.training_losses(model, x_all[idx], t, model_kwargs={"y": y_all[idx]})["loss"] * w).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(args.ema).add_(pm, alpha=1 - args.ema)
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            print(f"step {step:5d}  {time.time() - start:6.0f} s  loss {np.mean(losses[-50:]):.4f}", flush=True)
    torch.save(ema.state_dict(), args.out)
    with open(args.out + ".flags", "w") as f:
        f.write(FLAGS + " --num_classes 3 --diffusion_steps 1000 --noise_schedule linear --timestep_respacing 250\n")
    print(f"saved {args.out} after {step} steps ({(time.time() - start) / 60:.1f} min); final loss {np.mean(losses[-50:]):.4f}")


if __name__ == "__main__":
    main()
