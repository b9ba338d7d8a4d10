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

Without a checkpoint, `--random-init SEED --write-state PATH` randomises every parameter
(upstream_unet.randomise: upstream zero-initialises the last conv of each block, which would hide
most of the network) and writes the state dict for `ran convert`. `--device cuda` runs upstream on
the GPU (benches/gpu.sh); `--float64` computes the reference in float64 there (norms and softmax
too), an independent, higher-precision reference for ran's f32 kernels.
"""
import argparse
import json

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from guided_diffusion import gaussian_diffusion as gd
from guided_diffusion.script_util import create_gaussian_diffusion
from upstream_unet import FeatHead, forward, make_model, parse_flags, randomise, truthy, use_float64_norm_and_softmax


def load_state(path):
    if path.endswith(".safetensors"):
        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="the weights (or --random-init)")
    ap.add_argument("--random-init", type=int, default=None, metavar="SEED", help="random weights instead of a checkpoint")
    ap.add_argument("--write-state", default=None, help="with --random-init: save the state dict here (safetensors)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the reference's device)")
    ap.add_argument("--float64", action="store_true", help="compute the reference in float64")
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

    if (args.checkpoint is None) == (args.random_init is None):
        ap.error("give one of --checkpoint and --random-init")
    torch.manual_seed(args.seed)
    f = parse_flags(args.flags)
    data_names = {"x", "t", "y", "out", "feat", "x0", "k", "noise", "kl", "pred_xstart"}  # reference files carry these
    head = None
    if args.checkpoint is not None:
        state = {k: v.float() for k, v in load_state(args.checkpoint).items() if k not in data_names}
        head_state = {k: v for k, v in state.items() if k.startswith("feat_rec1.")}
        num_classes = state["label_emb.weight"].shape[0] if "label_emb.weight" in state else 1000
        model = make_model(args.flags, num_classes).float().eval()
        model.load_state_dict({k: v for k, v in state.items() if k not in head_state})
        if head_state:
            head = FeatHead(head_state["feat_rec1.0.weight"].shape[0], head_state["feat_rec1.2.weight"].shape[0]).float().eval()
            head.load_state_dict(head_state)
    else:
        num_classes = int(f.get("num_classes", 1000))
        model = make_model(args.flags, num_classes).float().eval()
        randomise(model, torch.Generator().manual_seed(args.random_init))
        if args.write_state:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.write_state)
    dt = torch.float64 if args.float64 else torch.float32
    if args.float64:
        use_float64_norm_and_softmax()
    dev = torch.device(args.device)
    # no TF32 in an f32 reference on the GPU (PyTorch allows it in cuDNN convolutions by default)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = model.to(dev, dt)
    model.dtype = dt  # UNetModel.forward casts its input to this (float32 unless use_fp16)
    head = head.to(dev, dt) if head is not None else None
    n, size = args.batch, args.size or int(f.get("image_size", 64))
    y = torch.randint(0, num_classes, (n,)) if truthy(f.get("class_cond", "False")) else None
    tensors, meta = {}, {"kind": args.kind, "model_flags": args.flags, "generator": "tools/reference/dump_reference.py"}
    with torch.no_grad():
        if args.kind == "unet":
            x = torch.rand(n, 3, size, size) * 2 - 1
            t = torch.tensor([float(v) for v in args.t.split(",")][:n])
            yd = y.to(dev) if y is not None else None
            out, feat = forward(model, head, x.to(dev, dt), t.to(dev, dt), yd, int(f.get("feat_shape", 16)))
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
            x0d, kd = x0.to(dev, dt), k.to(dev)
            xt = diff.q_sample(x0d, kd, noise=noise.to(dev, dt))
            kw = {"y": y.to(dev)} if y is not None else {}
            # upstream's own forward, which embeds the timestep in float32 (the model may be float64)
            net = (lambda x, t, y=None: forward(model, None, x, t, y, 16)[0]) if args.float64 else model
            out = diff.p_mean_variance(net, xt, kd, clip_denoised=True, model_kwargs=kw)
            true_mean, _, true_logvar = diff.q_posterior_mean_variance(x0d, xt, kd)
            kl = gd.normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"]) / np.log(2.0)
            tensors.update(x0=x0, k=k.float(), noise=noise, kl=kl, pred_xstart=out["pred_xstart"])
    if y is not None:
        tensors["y"] = y.float()
    meta["reference_device"] = f"{args.device} {'float64' if args.float64 else 'float32'}"
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, args.out, metadata=meta)
    print(f"wrote {args.out}: kind={args.kind}, " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()))


if __name__ == "__main__":
    main()
