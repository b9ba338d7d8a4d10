"""Fine-tunes the demo model jointly, as the paper trains (docs/method.md §5): UNet and feature head
together with loss = mse(ε) + vb + feat_mse, from the separately trained UNet + head
(tools/demo/train.py, then train_head.py), EMA 0.997 initialised from the loaded weights.
The feature term uses samples with t < 400 (the timesteps the demo scores at, τ ≤ 401); the
diffusion terms use all t, with upstream guided_diffusion's training_losses.

  python tools/demo/train_joint.py --data examples/demo --init /tmp/demo_full.pt --minutes 20 \\
      --out /tmp/demo_joint.pt
"""
import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from guided_diffusion.resample import UniformSampler  # noqa: E402
from guided_diffusion.script_util import create_gaussian_diffusion  # noqa: E402
from train import CATS, FLAGS, load_train  # noqa: E402
from train_head import FEAT, lite0_targets  # noqa: E402
from upstream_unet import FeatHead, forward, make_model  # noqa: E402


class WithHead(torch.nn.Module):
    """The UNet as training_losses calls it; keeps the head's output of the same pass."""

    def __init__(self, unet, head):
        super().__init__()
        self.unet, self.head, self.feat = unet, head, None

    def forward(self, x, t, y=None):
        out, self.feat = forward(self.unet, self.head, x, t, y, FEAT)
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="examples/demo")
    ap.add_argument("--init", default="/tmp/demo_full.pt")
    ap.add_argument("--out", default="/tmp/demo_joint.pt")
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--ema", type=float, default=0.997)
    args = ap.parse_args()
    torch.manual_seed(1)
    torch.set_num_threads(2)
    x_all, y_all = load_train(args.data)
    sd = torch.load(args.init, map_location="cpu")
    unet = make_model(FLAGS, len(CATS)).float()
    unet.load_state_dict({k: v for k, v in sd.items() if not k.startswith("feat_rec1.")})
    head = FeatHead(sd["feat_rec1.0.weight"].shape[0], out=sd["feat_rec1.2.weight"].shape[0])
    head.load_state_dict({k: v for k, v in sd.items() if k.startswith("feat_rec1.")})
    model = WithHead(unet, head)
    ema = copy.deepcopy(model).eval()
    _, targets = lite0_targets(x_all)
    diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear")
    sampler = UniformSampler(diffusion)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    start, step, hist = time.time(), 0, []
    while time.time() - start < args.minutes * 60:
        idx = torch.randint(0, len(x_all), (args.batch,))
        t, w = sampler.sample(args.batch, "cpu")
        diff_loss = (diffusion.training_losses(model, x_all[idx], t, model_kwargs={"y": y_all[idx]})["loss"] * w).mean()
        keep = t < 400
        feat_loss = F.mse_loss(model.feat[keep], targets[idx][keep]) if keep.any() else torch.zeros(())
        loss = diff_loss + feat_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(args.ema).add_(pm, alpha=1 - args.ema)
        hist.append((diff_loss.item(), feat_loss.item()))
        step += 1
        if step % 50 == 0:
            d, f = np.mean(hist[-50:], axis=0)
            print(f"step {step:5d}  {time.time() - start:6.0f} s  diffusion {d:.4f}  feature {f:.4f}", flush=True)
    out = dict(ema.unet.state_dict())
    out.update(ema.head.state_dict())
    torch.save(out, args.out)
    d, f = np.mean(hist[-50:], axis=0)
    print(f"saved {args.out} after {step} steps; diffusion {d:.4f}, feature {f:.4f} (target variance {targets.var().item():.4f})")


if __name__ == "__main__":
    main()
