"""Reference for ran's PaDiM loss, its input gradient and the paper's Algorithm 1 (docs/method.md §4), from
PyTorch autograd (float64) — the official code's own formulation, independent of ran's:

Backbone: torchvision's ResNet with Bottleneck blocks (the class of wide_resnet50_2), scaled down,
weights from tests/fixtures/resnet_small.safetensors. Embedding: layer1, layer2, layer3 with layers
2 and 3 resized by F.interpolate(bilinear, align_corners=False) to layer1's size, concatenated
(256+512+1024 = 1792 channels), then index_select of D = 40 channels from torch.randperm (unsorted,
as the official code; the distance does not depend on their order).
PaDiM fit on 8 training images: per-position mean, Σ = cov (N−1) + 0.01·I, Σ⁻¹ = torch.linalg.inv.
Map: sqrt((f−μ)ᵀΣ⁻¹(f−μ)) per position, bilinear to the image size; L = mean; ∂L/∂x by autograd.
Algorithm 1, one outer iteration: 5 × {g = −∇L; g /= g.std(); g /= g.var().sqrt(); x = √(1−s²)x + s·g}
(s = 0.02, the official double normalisation), then the posterior mean of guided_diffusion's
SpacedDiffusion ("250" of 1000 linear) at respaced index k = 8 with x̂0 clipped, model =
tests/fixtures/unet_guided_plain.safetensors run at 32×32.

Writes tests/fixtures/padim_small.safetensors: train [8,3,32,32], x [1,3,32,32], map [1,1,32,32],
loss [1], grad [1,3,32,32], step1..step5 and denoised [1,3,32,32], losses [5] (L before each step).

Then the paper's own backbone: torchvision's wide_resnet50_2 itself at 64×64 with 500 channels, 4
training images, its 68.9 M layer1–3 weights drawn by a counter-based generator (He-scaled; see
counter_value) that ran's test reproduces, so no weights are stored: tests/fixtures/
padim_wrn50.safetensors holds train, x, map, loss, grad and the state dict's names and shapes.
Run:  python tools/reference/make_padim_fixtures.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torchvision.models.resnet import Bottleneck, ResNet

from guided_diffusion.script_util import create_gaussian_diffusion
from upstream_unet import make_model

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "..", "..", "tests", "fixtures")
OUT = os.path.join(FIX, "padim_small.safetensors")
gen = torch.Generator().manual_seed(20231010)
D, LR, K, ND = 40, 0.02, 8, 5


def backbone():
    st = load_file(os.path.join(FIX, "resnet_small.safetensors"))
    net = ResNet(Bottleneck, [2, 1, 2, 1], width_per_group=16)
    sd = {k: v.double() for k, v in st.items() if k.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "layer3."))}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith(("layer4.", "fc.")) or k.endswith("num_batches_tracked") for k in missing), missing
    return net.double().eval()


def embedding(net, x, idx):
    h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    l1 = net.layer1(h)
    l2 = net.layer2(l1)
    l3 = net.layer3(l2)
    size = l1.shape[-2:]
    e = torch.cat([l1, F.interpolate(l2, size=size, mode="bilinear", align_corners=False),
                   F.interpolate(l3, size=size, mode="bilinear", align_corners=False)], dim=1)
    return torch.index_select(e, 1, idx)


def padim_map(net, x, idx, mean, prec):
    e = embedding(net, x, idx)
    n, d, h, w = e.shape
    delta = e.reshape(n, d, h * w).permute(0, 2, 1) - mean  # [n, p, d]
    m = torch.einsum("npi,pij,npj->np", delta, prec, delta).sqrt().reshape(n, 1, h, w)
    return F.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)


def main():
    net = backbone()
    idx = torch.randperm(1792, generator=gen)[:D]
    train = (torch.rand(8, 3, 32, 32, generator=gen) * 2 - 1).double()
    with torch.no_grad():
        e = embedding(net, train, idx)
    n, d, h, w = e.shape
    f = e.reshape(n, d, h * w).permute(2, 0, 1)  # [p, n, d]
    mean = f.mean(1)
    cen = f - mean[:, None]
    cov = cen.transpose(1, 2) @ cen / (n - 1) + 0.01 * torch.eye(d, dtype=torch.float64)
    prec = torch.linalg.inv(cov)

    x = (torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1).double()
    x[:, :, 8:16, 10:20] = 0.9  # a bright patch: an "anomaly"

    def loss_grad(v):
        v = v.clone().requires_grad_(True)
        m = padim_map(net, v, idx, mean, prec)
        loss = m.mean()
        (g,) = torch.autograd.grad(loss, v)
        return m.detach(), loss.detach(), g

    m0, l0, g0 = loss_grad(x)
    tensors = {"train": train.float(), "x": x.float(), "map": m0.float(), "loss": l0.reshape(1).float(), "grad": g0.float()}

    # Algorithm 1, one outer iteration
    cur, losses = x.clone(), []
    for j in range(ND):
        _, l, g = loss_grad(cur)
        losses.append(l.item())
        g = -g
        g = g / g.std()
        g = g / g.var().sqrt()
        cur = math.sqrt(1 - LR * LR) * cur + LR * g
        tensors[f"step{j + 1}"] = cur.float()
    from safetensors import safe_open
    flags = safe_open(os.path.join(FIX, "unet_guided_plain.safetensors"), "pt").metadata()["model_flags"]
    ust = load_file(os.path.join(FIX, "unet_guided_plain.safetensors"))
    model = make_model(flags)
    model.load_state_dict({k: v.float() for k, v in ust.items() if k not in ("x", "t", "out")})
    model.eval()
    diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=False, noise_schedule="linear", timestep_respacing="250")
    with torch.no_grad():
        out = diffusion.p_mean_variance(model, cur.float(), torch.tensor([K]), clip_denoised=True)
    tensors["denoised"] = out["mean"].float()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float32)

    meta = {"kind": "padim", "channels": json.dumps(idx.tolist()), "dims": str(D), "lr": str(LR), "k": str(K), "nd": str(ND),
            "unet": "unet_guided_plain.safetensors", "model_flags": flags, "backbone": "resnet_small.safetensors",
            "diffusion_flags": "--diffusion_steps 1000 --noise_schedule linear --timestep_respacing 250",
            "generator": "tools/reference/make_padim_fixtures.py", "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
    print(f"L {l0.item():.6f}, |grad| max {g0.abs().max().item():.3e}; losses {losses}; {os.path.getsize(OUT)} bytes")


# ---- the full wide_resnet50_2 at 64×64: weights from a counter-based generator both sides share ------
def counter_uniform(name, n):
    """u_i in [-1, 1) for i < n: splitmix64(fnv1a64(name) ^ i·0x9E3779B97F4A7C15), top 24 bits.
    ran's twin: tests/common/mod.rs `CounterWeights` (numbers only; the network is torchvision's)."""
    h = 0xCBF29CE484222325
    for c in name.encode():
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    import numpy as np
    with np.errstate(over="ignore"):
        z = np.uint64(h) ^ (np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24) * 2.0 - 1.0


def counter_value(name, shape):
    """He-scaled conv weights, BN γ = 1 + 0.1u, β = mean = 0.1u, var = 1 + 0.5|u| (as float32)."""
    import numpy as np
    n = int(np.prod(shape))
    u = counter_uniform(name, n)
    if name.endswith("running_var"):
        v = 1.0 + 0.5 * np.abs(u)
    elif len(shape) == 1 and name.endswith("weight"):
        v = 1.0 + 0.1 * u
    elif len(shape) == 1:
        v = 0.1 * u
    else:
        v = u * math.sqrt(2.0 / (n // shape[0]))
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def wrn50_case():
    from torchvision.models import wide_resnet50_2
    net = wide_resnet50_2()
    keep = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
    sd = {k: v for k, v in net.state_dict().items() if k.startswith(keep) and not k.endswith("num_batches_tracked")}
    net.load_state_dict({k: counter_value(k, tuple(v.shape)) for k, v in sd.items()}, strict=False)
    net = net.double().eval()
    g = torch.Generator().manual_seed(20231011)
    idx = torch.randperm(1792, generator=g)[:500]
    train = (torch.rand(4, 3, 64, 64, generator=g) * 2 - 1).double()
    with torch.no_grad():
        e = embedding(net, train, idx)
    n, d, h, w = e.shape
    f = e.reshape(n, d, h * w).permute(2, 0, 1)
    mean = f.mean(1)
    cen = f - mean[:, None]
    cov = cen.transpose(1, 2) @ cen / (n - 1) + 0.01 * torch.eye(d, dtype=torch.float64)
    prec = torch.linalg.inv(cov)
    x = (torch.rand(1, 3, 64, 64, generator=g) * 2 - 1).double().requires_grad_(True)
    m = padim_map(net, x, idx, mean, prec)
    loss = m.mean()
    (grad,) = torch.autograd.grad(loss, x)
    out = os.path.join(FIX, "padim_wrn50.safetensors")
    shapes = {k: list(v.shape) for k, v in sd.items()}
    save_file({"train": train.float(), "x": x.detach().float(), "map": m.detach().float(), "loss": loss.detach().reshape(1).float(), "grad": grad.float()}, out,
              metadata={"kind": "padim", "channels": json.dumps(idx.tolist()), "state_dict_shapes": json.dumps(shapes),
                        "generator": "tools/reference/make_padim_fixtures.py (wrn50_case)", "torch": torch.__version__})
    print(f"wide_resnet50_2: L {loss.item():.6f}, |grad| max {grad.abs().max().item():.3e}, map range {m.min().item():.3f}..{m.max().item():.3f}; {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
    wrn50_case()
