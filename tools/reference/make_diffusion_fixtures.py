"""Reference fixtures for ran's Gaussian diffusion: schedule tables and the per-element step math.

Independent code: upstream OpenAI guided_diffusion (PyPI guided-diffusion-sdk 1.0.0, pinned in
requirements.txt): `create_gaussian_diffusion` (schedules, respacing), `q_sample`,
`q_posterior_mean_variance`, `p_mean_variance`, `normal_kl`, `p_sample`, `ddim_sample`.
The step math runs in float32 exactly as upstream does (its coefficient tables are float64 and
extracted with `.float()`); the model is a stub returning a fixed random output.

Writes tests/fixtures/diffusion.safetensors:
  "<sched>.<table>"            float64 tables of each schedule (+ "timestep_map")
  "<case>.<name>"              float32 inputs and outputs of the step math
  metadata "<sched>" / "<case>" JSON with the parameters
Run:  python tools/reference/make_diffusion_fixtures.py
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

from guided_diffusion import gaussian_diffusion as gd
from guided_diffusion.script_util import create_gaussian_diffusion

torch.manual_seed(20231002)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "diffusion.safetensors")
tensors, meta = {}, {}

TABLES = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
          "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"]

SCHEDULES = {
    "linear1000_r250": dict(steps=1000, noise_schedule="linear", timestep_respacing="250"),
    "cosine1000_ddim25": dict(steps=1000, noise_schedule="cosine", timestep_respacing="ddim25"),
    "linear1000_sections": dict(steps=1000, noise_schedule="linear", timestep_respacing="10,15,5"),
    "cosine4000_full": dict(steps=4000, noise_schedule="cosine", timestep_respacing=""),
    "linear100_full": dict(steps=100, noise_schedule="linear", timestep_respacing=""),
}

diffs = {}
for name, kw in SCHEDULES.items():
    d = create_gaussian_diffusion(learn_sigma=True, **kw)
    diffs[name] = d
    for t in TABLES:
        tensors[f"{name}.{t}"] = torch.from_numpy(np.asarray(getattr(d, t), dtype=np.float64)).contiguous()
    tmap = getattr(d, "timestep_map", list(range(d.num_timesteps)))
    tensors[f"{name}.timestep_map"] = torch.tensor(list(tmap), dtype=torch.float64)
    meta[name] = json.dumps({"kind": "schedule", **kw})


class Stub:
    """Stands in for the UNet: returns a fixed output whatever it is given."""

    def __init__(self, out):
        self.out = out

    def __call__(self, x, t, **kw):
        return self.out


def step_case(name, sched, k, var_type, clip, eta, shape=(2, 3, 6, 5)):
    base = diffs[sched]
    d = create_gaussian_diffusion(learn_sigma=var_type in ("learned_range", "learned"), sigma_small=var_type == "fixed_small",
                                  **SCHEDULES[sched])
    if var_type == "learned":
        d.model_var_type = gd.ModelVarType.LEARNED
    n, c = shape[0], shape[1]
    x0 = (torch.rand(shape) * 2 - 1).float()
    noise = torch.randn(shape)
    eps = torch.randn(shape)
    if var_type in ("learned_range", "learned"):
        v = (torch.rand(shape) * 2 - 1) if var_type == "learned_range" else (torch.randn(shape) * 0.5 - 5.0)
        model_out = torch.cat([eps, v], dim=1)
    else:
        model_out = eps
    t = torch.full((n,), k, dtype=torch.long)
    xt = d.q_sample(x0, t, noise=noise)
    true_mean, _, true_logvar = d.q_posterior_mean_variance(x0, xt, t)
    out = d.p_mean_variance(Stub(model_out), xt, t, clip_denoised=clip)
    kl = gd.normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"]) / np.log(2.0)
    seed = 1000 + k
    torch.manual_seed(seed)
    ps = d.p_sample(Stub(model_out), xt, t, clip_denoised=clip)["sample"]
    torch.manual_seed(seed)
    z = torch.randn_like(xt)
    torch.manual_seed(seed)
    dd = d.ddim_sample(Stub(model_out), xt, t, clip_denoised=clip, eta=eta)["sample"]
    for key, val in dict(x0=x0, noise=noise, model_out=model_out, xt=xt, true_mean=true_mean, p_mean=out["mean"],
                         p_logvar=out["log_variance"], pred_xstart=out["pred_xstart"], kl_bits=kl, z=z, p_sample=ps,
                         ddim=dd).items():
        tensors[f"{name}.{key}"] = val.float().contiguous()
    meta[name] = json.dumps({"kind": "step", "schedule": sched, "k": k, "var_type": var_type, "clip": clip, "eta": eta})


step_case("r250_k5_range", "linear1000_r250", 5, "learned_range", True, 0.0)
step_case("r250_k50_range", "linear1000_r250", 50, "learned_range", True, 0.5)
step_case("r250_k100_range", "linear1000_r250", 100, "learned_range", True, 1.0)
step_case("r250_k8_range_noclip", "linear1000_r250", 8, "learned_range", False, 0.0)
step_case("r250_k0_range", "linear1000_r250", 0, "learned_range", True, 0.0)
step_case("ddim25_k10_learned", "cosine1000_ddim25", 10, "learned", True, 0.0)
step_case("lin100_k30_fixed_large", "linear100_full", 30, "fixed_large", True, 0.3)
step_case("lin100_k30_fixed_small", "linear100_full", 30, "fixed_small", False, 0.0)

meta["__generator__"] = json.dumps({"script": "tools/reference/make_diffusion_fixtures.py", "torch": torch.__version__,
                                    "python": sys.version.split()[0]})
save_file(tensors, OUT, metadata=meta)
print(f"wrote {len(meta) - 1} entries, {len(tensors)} tensors, {os.path.getsize(OUT)} bytes to {os.path.normpath(OUT)}")
