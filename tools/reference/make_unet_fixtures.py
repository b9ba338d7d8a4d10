"""Reference fixtures for ran's UNet: small configurations of upstream guided_diffusion's
UNetModel (PyPI guided-diffusion-sdk 1.0.0) with every parameter randomised, plus the anomaly
feature head of the paper's code (GroupNorm32 → SiLU → 1×1 conv to 272 channels on the output of
output_blocks[10], bilinearly resized to feat_shape²; docs/method.md §2), built here from torch modules.

For each configuration writes tests/fixtures/unet_<name>.safetensors holding the weights (the
PyTorch state_dict names), `__metadata__` {kind: "unet", model_flags: <flag string>}, the inputs
x [N,3,H,W], t [N] (the value the model receives), optional y [N], and the expected outputs
`out` (and `feat`), computed in float32 as upstream runs (its GroupNorm32 forces float32). Also writes one torch.save'd state_dict
(tests/fixtures/unet_tiny_pt.pt) for the `.pt` reader and `ran convert`.

Run:  python tools/reference/make_unet_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file

from upstream_unet import FeatHead, forward, make_model, parse_flags, randomise

HERE = os.path.dirname(__file__)
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures")


CONFIGS = [
    # the paper's kind of model in miniature: class-conditional, scale-shift, resblock up/down,
    # num_head_channels, learned sigma, attention at two resolutions, feature head
    ("guided_paperlike", "--image_size 16 --num_channels 32 --num_res_blocks 2 --channel_mult 1,1,1,2 "
     "--attention_resolutions 8,4 --num_head_channels 32 --resblock_updown True --use_scale_shift_norm True "
     "--class_cond True --learn_sigma True --feat_shape 4", 15, True, (2, 16), [20, 401], False),
    # plain: no scale-shift, conv down/up-sampling, num_heads, new attention order, no sigma
    ("guided_plain", "--image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 "
     "--attention_resolutions 8 --num_heads 2 --use_scale_shift_norm False --resblock_updown False "
     "--use_new_attention_order True --learn_sigma False", None, False, (2, 16), [5, 999], False),
    # improved-diffusion style: rescaled (fractional) timesteps, num_heads 4, attention at two levels
    ("improved_style", "--family improved --image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,1,2 "
     "--attention_resolutions 8,4 --num_heads 4 --learn_sigma True --use_scale_shift_norm True",
     None, False, (1, 16), [80.0], True),
]

gen = torch.Generator().manual_seed(20231003)
for name, flags, ncls, feat_head, (n, hw), ts, fractional in CONFIGS:
    model_flags = " ".join(t for t in flags.split() if t not in ("--family", "improved"))
    model = make_model(model_flags, ncls or 1000).float().eval()
    randomise(model, gen)
    head = None
    f = parse_flags(model_flags)
    feat_shape = int(f.get("feat_shape", 16))
    if feat_head:
        ch = model.output_blocks[10][0].out_channels
        head = FeatHead(ch).float()
        randomise(head, gen)
    x = torch.randn(n, 3, hw, hw, generator=gen, dtype=torch.float32)
    t = torch.tensor(ts, dtype=torch.float32) if fractional else torch.tensor(ts, dtype=torch.long)
    y = torch.randint(0, ncls, (n,), generator=gen) if ncls else None
    with torch.no_grad():
        out, feat = forward(model, head, x, t, y, feat_shape)
    tensors = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    if head is not None:
        tensors.update({k: v.half().contiguous() for k, v in head.state_dict().items()})
    tensors["x"] = x.float().contiguous()
    tensors["t"] = t.float().contiguous()
    if y is not None:
        tensors["y"] = y.float().contiguous()
    tensors["out"] = out.float().contiguous()
    if feat is not None:
        tensors["feat"] = feat.float().contiguous()
    meta = {"kind": "unet", "model_flags": flags, "generator": "tools/reference/make_unet_fixtures.py", "torch": torch.__version__}
    path = os.path.join(OUT, f"unet_{name}.safetensors")
    save_file(tensors, path, metadata=meta)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, out {tuple(out.shape)}, {os.path.getsize(path)} bytes")
    if name == "guided_plain":
        sd = {k: v.half() for k, v in model.state_dict().items()}
        pt = os.path.join(OUT, "unet_tiny_pt.pt")
        torch.save(sd, pt)
        with open(os.path.join(OUT, "unet_tiny_pt.flags"), "w") as fh:
            fh.write(model_flags + "\n")
        print(f"  + {pt} ({os.path.getsize(pt)} bytes)")
