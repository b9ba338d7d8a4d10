"""Reference for ran's training loss (src/train/loss.rs): upstream guided_diffusion's
GaussianDiffusion.training_losses (1000 linear steps, learned-range sigma, LossType.MSE, as the
paper's training) in float64 on a fixed model output, plus the paper's feature MSE, with torch
autograd for the gradient of the batch loss with respect to the model output and the feature
prediction.

Writes tests/fixtures/train_loss.safetensors: x0, eps, t, xt, out (ε̂ | v), mse, vb, loss, g_out,
feat_pred, feat_target, feat_mse, g_feat. t covers 0 (the decoder NLL, with x0 on the −1 and +1
edge bins) and the last step.

Run:  python tools/reference/make_loss_fixtures.py   (versions pinned in requirements.txt)
"""
import os

import torch
from guided_diffusion.script_util import create_gaussian_diffusion
from safetensors.torch import save_file

torch.manual_seed(20261204)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "train_loss.safetensors")

diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear", use_kl=False,
                                      predict_xstart=False, rescale_timesteps=False, rescale_learned_sigmas=False,
                                      timestep_respacing="")
n, c, hw = 4, 3, 8
# image values as the loader makes them (k/127.5 − 1), with both edge values present
x0 = (torch.randint(0, 256, (n, c, hw, hw)).float() / 127.5 - 1.0).double()
x0[0, 0, 0, :4] = -1.0
x0[0, 1, 0, :4] = 1.0
eps = torch.randn(n, c, hw, hw, dtype=torch.float32).double()
t = torch.tensor([0, 1, 500, 999])
out = torch.cat([eps + 0.3 * torch.randn(n, c, hw, hw, dtype=torch.float32).double(),
                 (2 * torch.rand(n, c, hw, hw, dtype=torch.float32) - 1).double()], dim=1)
out = out.float().double().requires_grad_(True)


def fake_model(x, ts, **kwargs):
    return out


terms = diffusion.training_losses(fake_model, x0, t, noise=eps)
feat_pred = torch.randn(n, 16, 4, 4, dtype=torch.float32).double().requires_grad_(True)
feat_target = torch.randn(n, 16, 4, 4, dtype=torch.float32).double()
feat_mse = ((feat_pred - feat_target) ** 2).mean()
loss = terms["loss"].mean() + feat_mse
g_out, g_feat = torch.autograd.grad(loss, [out, feat_pred])
xt = diffusion.q_sample(x0, t, noise=eps)
tensors = {"x0": x0, "eps": eps, "t": t.double(), "xt": xt, "out": out.detach(), "mse": terms["mse"].detach(),
           "vb": terms["vb"].detach(), "loss": loss.detach().reshape(1), "g_out": g_out, "feat_pred": feat_pred.detach(),
           "feat_target": feat_target, "feat_mse": feat_mse.detach().reshape(1), "g_feat": g_feat}
save_file({k: v.float().contiguous() for k, v in tensors.items()}, OUT, metadata={"generator": "tools/reference/make_loss_fixtures.py", "torch": torch.__version__})
print("mse", terms["mse"].tolist(), "vb", terms["vb"].tolist(), "loss", loss.item())
