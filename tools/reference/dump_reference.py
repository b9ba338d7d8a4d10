"""Writes a reference file for `ran verify` with upstream guided_diffusion (PyPI
guided-diffusion-sdk 1.0.0): run your own checkpoint through the upstream code once, then check
that ran reproduces it.

  python tools/reference/dump_reference.py --checkpoint ema_0.997_010000.pt \\
      --flags "--image_size 256 --num_channels 256 ... --learn_sigma True" \\
      --kind kl --k 5,50,100 --out ref.safetensors [--diffusion_flags "--diffusion_steps 1000 --timestep_respacing 250"]

kind=unet: tensors x [N,3,H,W], t [N] (the value the model receives), [y]; expected out [, feat]
kind=kl:   tensors x0, k [N] (respaced index), noise, [y]; metadata diffusion_flags; expected kl
           (bits per element, KL(q(x_{k-1}|x_k,x0) || p(x_{k-1}|x_k)) with x̂0 clipped; docs/method.md §1)
           and pred_xstart.
The checkpoint may be a torch.save'd state_dict (.pt/.pth) or safetensors; a `feat_rec1.*` head in
it is run too (kind=unet). Inputs are random with --seed (x in [-1, 1]).
"""
import argparse
import json

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from guided_diffusion import gaussian_diffusion as gd
from guided_diffusion.script_util import create_gaussian_diffusion
from upstream_unet import FeatHead, forward, make_model, parse_flags, truthy


def load_state(path):
    if path.endswith(".safetensors"):
        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--flags", required=True)
    ap.add_argument("--diffusion_flags", default="--diffusion_steps 1000 --noise_schedule linear --timestep_respacing 250")
    ap.add_argument("--kind", choices=["unet", "kl"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=0, help="input size (default: image_size)")
    ap.add_argument("--t", default="20,401", help="kind=unet: timesteps the model receives")
    ap.add_argument("--k", default="5,50", help="kind=kl: respaced indices, one per sample")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    f = parse_flags(args.flags)
    data_names = {"x", "t", "y", "out", "feat", "x0", "k", "noise", "kl", "pred_xstart"}  # reference files carry these
    state = {k: v.float() for k, v in load_state(args.checkpoint).items() if k not in data_names}
    head_state = {k: v for k, v in state.items() if k.startswith("feat_rec1.")}
    num_classes = state["label_emb.weight"].shape[0] if "label_emb.weight" in state else 1000
    model = make_model(args.flags, num_classes).float().eval()
    model.load_state_dict({k: v for k, v in state.items() if k not in head_state})
    head = None
    if head_state:
        head = FeatHead(head_state["feat_rec1.0.weight"].shape[0]).float().eval()
        head.load_state_dict(head_state)
    n, size = args.batch, args.size or int(f.get("image_size", 64))
    y = torch.randint(0, num_classes, (n,)) if truthy(f.get("class_cond", "False")) else None
    tensors, meta = {}, {"kind": args.kind, "model_flags": args.flags, "generator": "tools/reference/dump_reference.py"}
    with torch.no_grad():
        if args.kind == "unet":
            x = torch.rand(n, 3, size, size) * 2 - 1
            t = torch.tensor([float(v) for v in args.t.split(",")][:n])
            out, feat = forward(model, head, x, t, y, int(f.get("feat_shape", 16)))
            tensors.update(x=x, t=t, out=out)
            if feat is not None:
                tensors["feat"] = feat
        else:
            df = parse_flags(args.diffusion_flags)
            diff = create_gaussian_diffusion(
                steps=int(df.get("diffusion_steps", 1000)), learn_sigma=truthy(f.get("learn_sigma", "False")),
                sigma_small=truthy(df.get("sigma_small", "False")), noise_schedule=df.get("noise_schedule", "linear"),
                rescale_timesteps=truthy(df.get("rescale_timesteps", "False")), timestep_respacing=df.get("timestep_respacing", ""))
            meta["diffusion_flags"] = args.diffusion_flags
            x0 = torch.rand(n, 3, size, size) * 2 - 1
            noise = torch.randn_like(x0)
            k = torch.tensor([int(v) for v in args.k.split(",")][:n])
            xt = diff.q_sample(x0, k, noise=noise)
            kw = {"y": y} if y is not None else {}
            out = diff.p_mean_variance(model, xt, k, clip_denoised=True, model_kwargs=kw)
            true_mean, _, true_logvar = diff.q_posterior_mean_variance(x0, xt, k)
            kl = gd.normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"]) / np.log(2.0)
            tensors.update(x0=x0, k=k.float(), noise=noise, kl=kl, pred_xstart=out["pred_xstart"])
    if y is not None:
        tensors["y"] = y.float()
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, args.out, metadata=meta)
    print(f"wrote {args.out}: kind={args.kind}, " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()))


if __name__ == "__main__":
    main()
