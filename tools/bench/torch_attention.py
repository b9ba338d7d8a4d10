"""PyTorch side of `ran bench attention`: guided-diffusion's QKVAttentionLegacy (the module the
UNet runs, einsum + softmax) or F.scaled_dot_product_attention on the same qkv [batch, 3·heads·d,
tokens] split into heads (`--impl sdpa`, torch's fused CPU flash kernel); with --backward also the
input gradient. The same options and JSON fields as ran's (bench_common.py).

    python tools/bench/torch_attention.py [--impl legacy|sdpa] [--tokens 1024] [--heads 4]
        [--head-dim 64] [--batch 1] [--backward] [--threads 2] [--json]

FLOPs: FlopCounterMode counts the legacy einsums (2·2·T²·d per head) but not every build counts
sdpa, so the count is the same formula for both, 4·B·H·T²·d forward, twice that more backward.
"""
import argparse
import warnings

import torch
import torch.nn.functional as F

from bench_common import add_common, measure, report, setup

warnings.filterwarnings("ignore", category=FutureWarning)
from guided_diffusion.unet import QKVAttentionLegacy  # noqa: E402


def sdpa(qkv, heads):
    """The legacy layout through F.scaled_dot_product_attention (its scale is d^-½, as legacy's)."""
    bs, width, t = qkv.shape
    d = width // (3 * heads)
    q, k, v = qkv.reshape(bs * heads, 3 * d, t).split(d, dim=1)
    a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return a.transpose(1, 2).reshape(bs, heads * d, t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["legacy", "sdpa"], default="legacy")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--backward", action="store_true")
    add_common(ap)
    args = ap.parse_args()
    setup(args)
    b, h, d, t = args.batch, args.heads, args.head_dim, args.tokens
    qkv = torch.rand(b, 3 * h * d, t) - 0.5
    gy = torch.rand(b, h * d, t) - 0.5
    legacy = QKVAttentionLegacy(h)
    fwd = (lambda x: legacy(x)) if args.impl == "legacy" else (lambda x: sdpa(x, h))

    def run():
        if args.backward:
            with torch.enable_grad():
                x = qkv.detach().requires_grad_(True)
                fwd(x).backward(gy)
        else:
            with torch.no_grad():
                fwd(qkv)

    # (the count run is the forward: FlopCounterMode does not follow autograd.grad's engine)
    times, _ = measure("attention", args, run, count=lambda: fwd(qkv))
    flops = 4 * b * h * t * t * d * (3 if args.backward else 1)
    what = "forward + input gradient" if args.backward else "forward"
    report(args, "attention", f"attention_legacy {what}, {h} heads x {d} channels, {t} tokens", b, times, flops, {"impl": args.impl})


if __name__ == "__main__":
    main()
