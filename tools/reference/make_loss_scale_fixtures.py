"""Reference for ran's f16 dynamic loss scaling (src/train/loss_scale.rs): upstream's
MixedPrecisionTrainer (guided_diffusion/fp16_util.py) and TrainLoop.run_step's EMA rule
(train_util.py:172-177) on a toy model, with a given sequence of gradients.

The toy has, like the paper's UNet under use_fp16, f16 parameters (the convolutions upstream
converts) and f32 ones (group norms, the timestep MLP) in both of upstream's master groups
(vectors and matrices). Its loss is sum_p sum(p.float() * G_p), so the gradient reaching each
parameter is f32(2^lg) * G_p in f32 — rounded to f16 (inf past 65504) for the f16 parameters by
the cast's backward. The G sequence is chosen so that some steps overflow: an f16 one (large
G), an f32-only one (G = 1e36 on an f32 parameter), several in a row, and gradients near
AdamW's eps, where the unscaling factor changes the update.

Writes tests/fixtures/loss_scale.safetensors:
  "init.<name>" (f32), "g.<k>.<name>" (G of step k), "after.<k>.<name>" (master weights after
  step k), "ema.<k>.<name>" (the EMA after step k);
  metadata "toy" -> JSON {"names", "f16" (names of the f16 parameters), "lr", "ema_rate",
  "lg0", "growth", "took" (per step), "lg" (lg_loss_scale before step 0 and after each step,
  as repr() strings)}

Run:  python tools/reference/make_loss_scale_fixtures.py   (versions pinned in requirements.txt)
"""
import json
import os
import tempfile

import torch
import torch.nn as nn
from guided_diffusion import logger
from guided_diffusion.fp16_util import INITIAL_LOG_LOSS_SCALE, MixedPrecisionTrainer
from guided_diffusion.nn import update_ema
from safetensors.torch import save_file

torch.manual_seed(20261202)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "loss_scale.safetensors")
logger.configure(dir=tempfile.mkdtemp(), format_strs=[])

SHAPES = {"a16": (8,), "b32": (3,), "c16": (4, 8), "d32": (2, 3)}
F16 = ["a16", "c16"]


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        for n, s in SHAPES.items():
            setattr(self, n, nn.Parameter(torch.randn(*s)))

    def convert_to_fp16(self):
        for n in F16:
            getattr(self, n).data = getattr(self, n).data.half()

    def forward(self, gs):
        return sum((getattr(self, n).float() * gs[n]).sum() for n in SHAPES)


def grads(kind):
    """G per parameter: log-uniform magnitudes from 1e-9 to `kind`'s top, random signs."""
    top = {"small": 1e-2, "big": 1.0, "half": 0.5}.get(kind, 1e-2)
    out = {}
    for n, s in SHAPES.items():
        mag = 10 ** (torch.rand(*s) * (torch.log10(torch.tensor(top)) + 9) - 9)
        out[n] = (mag * torch.sign(torch.randn(*s))).float()
    if kind == "f32_overflow":
        # past f32 once scaled: an inf gradient. (A finite one whose f32 norm overflows — beyond
        # ~1.8e19 — upstream skips too; ran tests the elements, not the norm, and would not.)
        out["b32"][1] = 1e36
    return out


# overflow at lg 20 needs |G| > 65520 / 2^20 = 0.0625 on an f16 parameter
KINDS = ["small", "small", "big", "half", "small", "small", "f32_overflow", "small", "big", "big", "small", "small"]

model = Toy()
init = {n: p.detach().clone() for n, p in model.named_parameters()}
mp = MixedPrecisionTrainer(model=model, use_fp16=True, fp16_scale_growth=1e-3, initial_lg_loss_scale=INITIAL_LOG_LOSS_SCALE)
LR, RATE = 1e-2, 0.9
opt = torch.optim.AdamW(mp.master_params, lr=LR, weight_decay=0.0)
ema = [p.detach().clone() for p in mp.master_params]
names = [n for n, _ in model.named_parameters()]
tensors = {f"init.{n}": v.float() for n, v in init.items()}
took, lg = [], [mp.lg_loss_scale]


def unflatten(flat_params):
    """Master (flattened) tensors back to {name: f32 tensor} in the model's shapes."""
    out = {}
    for flat, (group, _) in zip(flat_params, mp.param_groups_and_shapes):
        off = 0
        flat = flat.detach().reshape(-1)
        for n, p in group:
            k = p.numel()
            out[n] = flat[off : off + k].reshape(p.shape).float().clone()
            off += k
    return out


for k, kind in enumerate(KINDS):
    gs = grads(kind)
    for n in names:
        tensors[f"g.{k}.{n}"] = gs[n]
    # TrainLoop.forward_backward + run_step (train_util.py:172-214), one microbatch
    mp.zero_grad()
    mp.backward(model(gs))
    t = mp.optimize(opt)
    if t:
        update_ema(ema, mp.master_params, rate=RATE)
    took.append(bool(t))
    lg.append(mp.lg_loss_scale)
    for n, v in unflatten(mp.master_params).items():
        tensors[f"after.{k}.{n}"] = v
    for n, v in unflatten(ema).items():
        tensors[f"ema.{k}.{n}"] = v

assert not all(took) and any(took), took
# lg as repr() strings: the shortest text of each float, which a correctly rounding parser reads
# back to the same bits (serde_json's default float parser may be an ulp off)
meta = {"toy": json.dumps({"names": names, "f16": F16, "lr": LR, "ema_rate": RATE, "lg0": INITIAL_LOG_LOSS_SCALE, "growth": 1e-3, "took": took, "lg": [repr(v) for v in lg]})}
save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
print(f"wrote {len(KINDS)} steps to {os.path.normpath(OUT)}: took {took}, lg {lg}")
