"""Reference parameter gradients of the UNet (+ the paper's feature head) for ran's training
backward pass: upstream guided_diffusion's UNetModel (PyPI guided-diffusion-sdk 1.0.0) in float64,
torch autograd of L = Σ out·g_out + Σ feat·g_feat for random g_out, g_feat.

Upstream runs GroupNorm32 and the attention softmax in float32 even in a float64 model; here both
are switched to float64 (same formulas) so the reference is accurate to ~1e-12 and the comparison
measures ran's float32 arithmetic, not upstream's.

For each configuration writes tests/fixtures/unet_grad_<name>.safetensors: the weights (state_dict
names, float16-exact values), inputs x, t, y, the upstream gradients g_out (and g_feat), and
"grad.<parameter>" for every parameter (flattened; for tensors over 8192 elements, 2048 of them at
the sorted flat indices "gidx.<parameter>"); metadata {kind: "unet_grad", model_flags}.

Run:  python tools/reference/make_unet_grad_fixtures.py   (versions pinned in requirements.txt)
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from upstream_unet import FeatHead, forward, make_model, parse_flags, randomise, use_float64_norm_and_softmax

SAMPLE_ABOVE, SAMPLES = 8192, 2048
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")


use_float64_norm_and_softmax()

CONFIGS = [
    # the paper's kind of model in miniature: class-conditional, scale-shift, resblock up/down,
    # num_head_channels, learned sigma, attention at two resolutions, the feature head on block 10
    ("paperlike", "--image_size 16 --num_channels 32 --num_res_blocks 2 --channel_mult 1,1,1,2 "
     "--attention_resolutions 8,4 --num_head_channels 32 --resblock_updown True --use_scale_shift_norm True "
     "--class_cond True --learn_sigma True --feat_shape 4", 15, True, 2, [20, 401]),
    # the other branches: no scale-shift (the embedding added before the norm), conv down- and
    # up-sampling, skip convolutions, num_heads, no sigma, unconditional
    ("plain", "--image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 "
     "--attention_resolutions 8 --num_heads 2 --use_scale_shift_norm False --resblock_updown False "
     "--learn_sigma False", None, False, 2, [5, 999]),
]

gen = torch.Generator().manual_seed(20261203)
for name, flags, ncls, feat_head, n, ts in CONFIGS:
    model = make_model(flags, ncls or 1000).float().eval()
    randomise(model, gen)
    head = None
    feat_shape = int(parse_flags(flags).get("feat_shape", 16))
    if feat_head:
        head = FeatHead(model.output_blocks[10][0].out_channels).float()
        randomise(head, gen)
    x = torch.randn(n, 3, 16, 16, generator=gen, dtype=torch.float32)
    t = torch.tensor(ts, dtype=torch.long)
    y = torch.randint(0, ncls, (n,), generator=gen) if ncls else None
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    if head is not None:
        weights.update({k: v.clone() for k, v in head.state_dict().items()})
    model = model.double()
    head = head.double() if head is not None else None
    out, feat = forward(model, head, x.double(), t, y, feat_shape)
    g_out = torch.randn(out.shape, generator=gen, dtype=torch.float32)
    loss = (out * g_out.double()).sum()
    tensors = {}
    if feat is not None:
        g_feat = torch.randn(feat.shape, generator=gen, dtype=torch.float32)
        loss = loss + (feat * g_feat.double()).sum()
        tensors["g_feat"] = g_feat
    params = dict(model.named_parameters())
    if head is not None:
        params.update(dict(head.named_parameters()))
    grads = torch.autograd.grad(loss, list(params.values()))
    tensors.update({k: v.half().contiguous() for k, v in weights.items()})
    for k, g in zip(params, grads):
        g = g.float().flatten()
        if g.numel() > SAMPLE_ABOVE:
            # a fixed random subset keeps the file small; an index error still moves most samples
            idx = torch.randperm(g.numel(), generator=gen)[:SAMPLES].sort().values
            tensors[f"gidx.{k}"] = idx.float()
            g = g[idx]
        tensors[f"grad.{k}"] = g.contiguous()
    tensors.update({"x": x, "t": t.float(), "g_out": g_out})
    if y is not None:
        tensors["y"] = y.float()
    path = os.path.join(OUT, f"unet_grad_{name}.safetensors")
    save_file(tensors, path, metadata={"kind": "unet_grad", "model_flags": flags, "generator": "tools/reference/make_unet_grad_fixtures.py", "torch": torch.__version__})
    print(f"{name}: {len(params)} parameters, {os.path.getsize(path)} bytes")
