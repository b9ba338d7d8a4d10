"""PyTorch side of `ran bench train`: one training step as the paper's code runs it, from the
upstream packages — guided_diffusion's UNetModel of MODEL_FLAGS with the paper's feature head
(upstream_unet.FeatHead on output_blocks[10], bilinear to feat_shape²), GaussianDiffusion's
training_losses (ε-MSE + the variational bound, learned σ) plus the feature MSE against a fixed
random target, backward, torch.optim.AdamW (lr 1e-4, weight decay 0) and the EMA update (0.997);
float32, random weights, the same timesteps and batch as ran's bench (t = 100 + 397·i).

    python tools/bench/torch_train.py [--flags "<MODEL_FLAGS>"] [--batch 2] [--iters 5] [--threads 2] [--json]
"""
import argparse

import torch
from guided_diffusion.nn import update_ema
from guided_diffusion.script_util import create_gaussian_diffusion

from bench_common import add_common, measure, report, setup
from upstream_unet import FeatHead, forward, make_model, parse_flags

DEMO_FLAGS = ("--image_size 64 --num_channels 32 --num_res_blocks 2 --channel_mult 1,2,2,2 --attention_resolutions 16,8 "
              "--num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True "
              "--num_classes 3 --diffusion_steps 1000 --noise_schedule linear --feat_shape 16")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flags", default=DEMO_FLAGS)
    ap.add_argument("--batch", type=int, default=2)
    add_common(ap)
    args = ap.parse_args()
    setup(args)
    f = parse_flags(args.flags)
    model = make_model(args.flags).float().train()
    head = FeatHead(model.output_blocks[10][0].out_channels).float().train()
    params = list(model.parameters()) + list(head.parameters())
    s, n = int(f.get("image_size", 64)), args.batch
    steps = int(f.get("diffusion_steps", 1000))
    feat_shape = int(f.get("feat_shape", 64))
    diffusion = create_gaussian_diffusion(steps=steps, learn_sigma=f.get("learn_sigma") == "True", noise_schedule=f.get("noise_schedule", "linear"),
                                          use_kl=False, predict_xstart=False, rescale_timesteps=False, rescale_learned_sigmas=False,
                                          timestep_respacing="")
    x0 = torch.rand(n, 3, s, s) * 2 - 1
    eps = torch.randn(n, 3, s, s)
    t = torch.tensor([(100 + 397 * i) % steps for i in range(n)])
    y = torch.tensor([(3 + i) % model.num_classes for i in range(n)]) if model.num_classes is not None else None
    target = torch.randn(n, 272, feat_shape, feat_shape)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    stash = {}

    def model_fn(x, ts, y=None):
        out, feat = forward(model, head, x, ts, y, feat_shape)
        stash["feat"] = feat
        return out

    def step():
        # measure() counts FLOPs under no_grad: a training step needs the graph
        with torch.enable_grad():
            opt.zero_grad(set_to_none=True)
            terms = diffusion.training_losses(model_fn, x0, t, model_kwargs={"y": y}, noise=eps)
            loss = terms["loss"].mean() + ((stash["feat"] - target) ** 2).mean()
            loss.backward()
            opt.step()
            update_ema(ema, params, rate=0.997)

    times, flops = measure("train", args, step)
    report(args, "train", f"training step (fwd + head + loss + bwd + AdamW + EMA) at {s}x{s}, flags `{args.flags}`", n, times, flops,
           {"params": sum(p.numel() for p in params)})


if __name__ == "__main__":
    main()
