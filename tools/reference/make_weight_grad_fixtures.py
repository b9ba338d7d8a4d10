"""Reference fixtures for the weight gradients of ran's Backend trait (training's *_w_backward ops).

Independent code: PyTorch's functional ops and autograd in float64. Inputs are drawn in float32
(so the Rust side sees exactly the same values) and promoted to float64; the vector-Jacobian
products with a random upstream gradient gy are stored as float32.

Writes tests/fixtures/weight_grads.safetensors:
  tensors  "<case>.<name>"   inputs, "gy", and "g_<param>" for every parameter gradient
  metadata "<case>" -> JSON  {"op": ..., op parameters ..., "grads": [parameters with a gradient]}

Cases go beyond one 64×64 tile of the GEMM kernels (M, N, K not multiples of 64; K over two tiles)
and cover depthwise, groups, stride, asymmetric padding (top ≠ left), bias, scale-shift + SiLU,
small-variance input, and repeated embedding ids.

Run:  python tools/reference/make_weight_grad_fixtures.py   (versions pinned in requirements.txt)
"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(20261201)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "weight_grads.safetensors")

tensors = {}
meta = {}


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float32) * scale).double()


def case(name, op, params, inputs, fn, grads):
    """fn(**inputs) -> output; the gradients of `grads` (inputs) against a random gy are stored."""
    assert name not in meta, name
    ins = {k: v.clone().requires_grad_(k in grads) for k, v in inputs.items()}
    y = fn(**ins)
    for k, v in inputs.items():
        tensors[f"{name}.{k}"] = v.float().contiguous()
    gy = torch.randn(y.shape, dtype=torch.float32).double()
    gs = torch.autograd.grad(y, [ins[k] for k in grads], gy)
    tensors[f"{name}.gy"] = gy.float().contiguous()
    for k, g in zip(grads, gs):
        tensors[f"{name}.g_{k}"] = g.float().contiguous()
    meta[name] = json.dumps({"op": op, **params, "grads": list(grads)})


# ---- conv2d: F.conv2d after F.pad (left, right, top, bottom) ----------------------------------------
def conv_case(name, x, w, stride, pad, groups, bias):
    ins = {"x": x, "w": w}
    if bias:
        ins["b"] = rnd(w.shape[0])

    def f(x, w, b=None):
        return F.conv2d(F.pad(x, tuple(pad)), w, b, stride=stride, groups=groups)

    case(name, "conv2d_w_backward", {"stride": stride, "pad": list(pad), "groups": groups}, ins, f,
         ("w", "b") if bias else ("w",))


conv_case("wconv3x3_s1_p1_bias", rnd(2, 4, 7, 9), rnd(6, 4, 3, 3, scale=0.3), 1, (1, 1, 1, 1), 1, True)
# M = 70 output channels (two tiles), N = 5·9 = 45 taps, K = 2·10·11 = 220 pixels (four K tiles)
conv_case("wconv3x3_m70_k220", rnd(2, 5, 10, 11), rnd(70, 5, 3, 3, scale=0.2), 1, (1, 1, 1, 1), 1, True)
# N = 16·9 = 144 taps (three tiles): the second and third N tile of the weight gradient
conv_case("wconv3x3_n144", rnd(1, 16, 9, 8), rnd(8, 16, 3, 3, scale=0.2), 1, (1, 1, 1, 1), 1, False)
conv_case("wconv2x4_s3_asym", rnd(1, 2, 10, 11), rnd(3, 2, 2, 4, scale=0.3), 3, (1, 2, 0, 3), 1, True)
conv_case("wconv3x3_s2_top1_left0", rnd(2, 3, 9, 8), rnd(5, 3, 3, 3, scale=0.3), 2, (0, 1, 1, 0), 1, False)
conv_case("wconv1x1_groups2_bias", rnd(2, 8, 5, 5), rnd(6, 4, 1, 1, scale=0.3), 1, (0, 0, 0, 0), 2, True)
conv_case("wconv3x3_groups2", rnd(1, 4, 6, 6), rnd(6, 2, 3, 3, scale=0.3), 1, (1, 1, 1, 1), 2, False)
conv_case("wconv_dw5x5_s2_p2_bias", rnd(2, 6, 11, 10), rnd(6, 1, 5, 5, scale=0.3), 2, (2, 2, 2, 2), 6, True)
conv_case("wconv_dw3x3_mult2", rnd(1, 3, 6, 7), rnd(6, 1, 3, 3, scale=0.3), 1, (1, 1, 1, 1), 3, False)
# a pointwise conv over 130 pixels: the 1×1 stride-1 GEMM path on the CPU
conv_case("wconv1x1_pointwise_130px", rnd(2, 7, 5, 13), rnd(66, 7, 1, 1, scale=0.3), 1, (0, 0, 0, 0), 1, True)

# ---- linear -------------------------------------------------------------------------------------------
case("wlinear_bias", "linear_w_backward", {}, {"x": rnd(3, 10), "w": rnd(7, 10, scale=0.3), "b": rnd(7)},
     lambda x, w, b: F.linear(x, w, b), ("w", "b"))
# out 130, in 100, rows 150: several tiles in M and N, K over two tiles
case("wlinear_130x100_rows150", "linear_w_backward", {}, {"x": rnd(150, 100), "w": rnd(130, 100, scale=0.1), "b": rnd(130)},
     lambda x, w, b: F.linear(x, w, b), ("w", "b"))
case("wlinear_nobias", "linear_w_backward", {}, {"x": rnd(5, 33), "w": rnd(9, 33, scale=0.3)},
     lambda x, w: F.linear(x, w), ("w",))


# ---- group norm: GN(x)·(1+scale)+shift, optional SiLU -------------------------------------------------
def gn_case(name, x, groups, eps, silu, ss):
    c = x.shape[1]
    ins = {"x": x, "gamma": 1.0 + 0.3 * rnd(c), "beta": rnd(c)}
    if ss:
        ins["scale"] = 0.5 * rnd(x.shape[0], c)
        ins["shift"] = rnd(x.shape[0], c)

    def f(x, gamma, beta, scale=None, shift=None):
        y = F.group_norm(x, groups, gamma, beta, eps)
        if scale is not None:
            shp = (x.shape[0], c) + (1,) * (x.dim() - 2)
            y = y * (1 + scale.reshape(shp)) + shift.reshape(shp)
        return F.silu(y) if silu else y

    grads = ("gamma", "beta", "scale", "shift") if ss else ("gamma", "beta")
    case(name, "group_norm_w_backward", {"groups": groups, "eps": eps, "silu": silu}, ins, f, grads)


gn_case("wgn_plain", rnd(2, 8, 5, 3), 4, 1e-5, False, False)
gn_case("wgn_silu_ss", rnd(2, 8, 4, 4), 2, 1e-5, True, True)
# 300 values per group (more than one 256-thread pass), small variance where eps matters
gn_case("wgn_300_per_group_eps1e-3", rnd(2, 6, 10, 10, scale=1e-2), 2, 1e-3, True, True)
gn_case("wgn_3d_ss", rnd(3, 4, 7), 2, 1e-6, False, True)

# ---- embedding: table[ids]; repeated ids add up -----------------------------------------------------
ids = [2, 0, 2, 4, 2]
case("wembedding_repeat", "embedding_w_backward", {"ids": ids}, {"table": rnd(6, 9)},
     lambda table: table[torch.tensor(ids)], ("table",))

os.makedirs(os.path.dirname(OUT), exist_ok=True)
save_file(tensors, OUT, metadata=meta)
print(f"wrote {len(meta)} cases to {os.path.normpath(OUT)}")
