"""Reference for one whole training step of ran (src/train/step.rs) against the official recipe:
upstream guided_diffusion's training_losses (1000 linear steps, learned-range sigma, LossType.MSE)
on a small class-conditional UNetModel with the paper's feature head, loss = mean(mse + vb) +
feat_mse, backward, one torch.optim.AdamW step over every parameter, one EMA update
(guided_diffusion's update_ema), all in float64.

Writes tests/fixtures/train_step.safetensors: the initial weights (state_dict names, float16-exact),
x0, eps, t, y, feat_target, the loss terms, and per parameter "after.<name>" and "ema.<name>" (and
"grad.<name>", ∂loss/∂w, for the GRAD_PARAMS) at the flat indices "idx.<name>": up to 256 elements whose gradient is above 1e-3 of the tensor's
largest and 1e-6 of the largest of all (none for a parameter whose true gradient is 0). (AdamW's first step moves every weight by about lr·sign(g), so a gradient upstream gets as
exactly zero and float32 gets as 1e-7 would move by lr either way: those elements say nothing
about the step.)

Run:  python tools/reference/make_train_step_fixtures.py   (versions pinned in requirements.txt)
"""
import json
import os

import torch
from guided_diffusion.nn import update_ema
from guided_diffusion.script_util import create_gaussian_diffusion
from safetensors.torch import save_file

from upstream_unet import FeatHead, forward, make_model, parse_flags, randomise, use_float64_norm_and_softmax

use_float64_norm_and_softmax()
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "train_step.safetensors")
FLAGS = ("--image_size 16 --num_channels 32 --num_res_blocks 2 --channel_mult 1,1,1,2 --attention_resolutions 8,4 "
         "--num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --class_cond True "
         "--learn_sigma True --feat_shape 4")
LR, BETAS, EPS, WD, EMA_RATE = 1e-3, (0.9, 0.999), 1e-8, 0.0, 0.9
# the parameters whose gradients the fixture holds: one per kind of layer, first to last
GRAD_PARAMS = ["input_blocks.0.0.weight", "time_embed.0.weight", "label_emb.weight", "input_blocks.3.0.emb_layers.1.weight",
               "middle_block.1.qkv.weight", "middle_block.1.proj_out.weight", "output_blocks.11.0.out_layers.3.weight",
               "out.2.weight", "out.2.bias", "feat_rec1.2.weight"]

gen = torch.Generator().manual_seed(20261205)
model = make_model(FLAGS, 15).float()
randomise(model, gen)
head = FeatHead(model.output_blocks[10][0].out_channels).float()
randomise(head, gen)
weights = {**{k: v.clone() for k, v in model.state_dict().items()}, **{k: v.clone() for k, v in head.state_dict().items()}}
model, head = model.double(), head.double()
feat_shape = int(parse_flags(FLAGS)["feat_shape"])

n = 2
x0 = (torch.randint(0, 256, (n, 3, 16, 16), generator=gen).float() / 127.5 - 1.0).double()
eps = torch.randn(n, 3, 16, 16, generator=gen, dtype=torch.float32).double()
t = torch.tensor([0, 613])
y = torch.tensor([3, 11])
feat_target = torch.randn(n, 272, feat_shape, feat_shape, generator=gen, dtype=torch.float32).double()

diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear", use_kl=False,
                                      predict_xstart=False, rescale_timesteps=False, rescale_learned_sigmas=False,
                                      timestep_respacing="")
stash = {}


def model_fn(x, ts, y=None):
    out, feat = forward(model, head, x, ts, y, feat_shape)
    stash["feat"] = feat
    return out


terms = diffusion.training_losses(model_fn, x0, t, model_kwargs={"y": y}, noise=eps)
feat_mse = ((stash["feat"] - feat_target) ** 2).mean()
loss = terms["loss"].mean() + feat_mse
params = {**dict(model.named_parameters()), **dict(head.named_parameters())}
opt = torch.optim.AdamW(list(params.values()), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)
opt.zero_grad()
loss.backward()
grads = {k: p.grad.detach().clone() for k, p in params.items()}
ema = [p.detach().clone() for p in params.values()]
opt.step()
update_ema(ema, list(params.values()), rate=EMA_RATE)

tensors = {k: v.half().contiguous() for k, v in weights.items()}
assert set(GRAD_PARAMS) <= set(params), set(GRAD_PARAMS) - set(params)
g_all = max(g.abs().max().item() for g in grads.values())
for (k, p), e in zip(params.items(), ema):
    g = grads[k].flatten()
    # away from zero within the tensor and overall (a conv bias before a one-channel-per-group
    # norm has gradient exactly 0: only rounding noise, however it compares with its own max)
    ok = torch.nonzero((g.abs() > 1e-3 * g.abs().max()) & (g.abs() > 1e-6 * g_all)).flatten()
    idx = ok[torch.randperm(ok.numel(), generator=gen)[:256]].sort().values
    tensors[f"idx.{k}"] = idx.float()
    tensors[f"after.{k}"] = p.detach().flatten()[idx].float()
    tensors[f"ema.{k}"] = e.flatten()[idx].float()
    if k in GRAD_PARAMS:
        tensors[f"grad.{k}"] = g[idx].float()
tensors.update({"x0": x0.float(), "eps": eps.float(), "t": t.float(), "y": y.float(), "feat_target": feat_target.float(),
                "mse": terms["mse"].detach().float(), "vb": terms["vb"].detach().float(), "feat_mse": feat_mse.detach().float().reshape(1),
                "loss": loss.detach().float().reshape(1)})
meta = {"kind": "train_step", "model_flags": FLAGS, "hyper": json.dumps({"lr": LR, "beta1": BETAS[0], "beta2": BETAS[1], "eps": EPS, "weight_decay": WD, "ema_rate": EMA_RATE}),
        "generator": "tools/reference/make_train_step_fixtures.py", "torch": torch.__version__}
save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
print(f"loss {loss.item():.6f} (mse {terms['mse'].tolist()}, vb {terms['vb'].tolist()}, feat {feat_mse.item():.6f}); {os.path.getsize(OUT)} bytes")
