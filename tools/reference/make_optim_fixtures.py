"""Reference fixtures for ran's optimiser ops: torch.optim.AdamW (float64, amsgrad off) over three
steps with given gradients, and guided_diffusion's update_ema (the paper's EMA, rate 0.997).

Writes tests/fixtures/optim.safetensors:
  "<case>.param0", "<case>.grad{t}", and after step t = 1..3: "<case>.param{t}", "<case>.m{t}",
  "<case>.v{t}" (torch's exp_avg / exp_avg_sq); "ema.ema0", "ema.param", "ema.ema1".
  metadata "<case>" -> JSON {"lr", "beta1", "beta2", "eps", "weight_decay"} / {"rate"}

Run:  python tools/reference/make_optim_fixtures.py   (versions pinned in requirements.txt)
"""
import json
import os

import torch
from guided_diffusion.nn import update_ema
from safetensors.torch import save_file

torch.manual_seed(20261202)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "optim.safetensors")
tensors, meta = {}, {}


def f32(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float32) * scale).double()


def adamw_case(name, shape, grad_scales, lr, betas, eps, wd):
    p = torch.nn.Parameter(f32(*shape))
    tensors[f"{name}.param0"] = p.detach().float().clone()
    opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=wd, foreach=False)
    for t, s in enumerate(grad_scales, start=1):
        g = f32(*shape, scale=s)
        tensors[f"{name}.grad{t}"] = g.float()
        p.grad = g.clone()
        opt.step()
        st = opt.state[p]
        tensors[f"{name}.param{t}"] = p.detach().float().clone()
        tensors[f"{name}.m{t}"] = st["exp_avg"].float().clone()
        tensors[f"{name}.v{t}"] = st["exp_avg_sq"].float().clone()
    meta[name] = json.dumps({"op": "adamw_step", "lr": lr, "beta1": betas[0], "beta2": betas[1], "eps": eps, "weight_decay": wd})


# the paper's settings; gradients of changing scale so the bias corrections matter at every step
adamw_case("adamw_paper", (3, 70), [1.0, 0.1, 3.0], 1e-4, (0.9, 0.999), 1e-8, 0.0)
# decoupled weight decay and a larger step
adamw_case("adamw_decay", (5, 7, 3), [0.5, 0.5, 0.5], 1e-3, (0.8, 0.99), 1e-8, 0.05)
# gradients near eps: the denominator's eps term dominates
adamw_case("adamw_tiny_grads", (129,), [1e-8, 2e-8, 1e-9], 1e-4, (0.9, 0.999), 1e-8, 0.0)

ema0, param = f32(4, 33), f32(4, 33)
ema1 = ema0.clone()
update_ema([ema1], [param], rate=0.997)
tensors.update({"ema.ema0": ema0.float(), "ema.param": param.float(), "ema.ema1": ema1.float()})
meta["ema"] = json.dumps({"op": "axpby", "rate": 0.997})

save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
print(f"wrote {len(meta)} cases to {os.path.normpath(OUT)}")
