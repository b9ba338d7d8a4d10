"""Reference fixtures for every CPU op and input gradient of ran's Backend trait.

Independent code: PyTorch's own functional ops and autograd (float64), and upstream
guided_diffusion (`QKVAttentionLegacy`, `timestep_embedding`) where the op is theirs.
Inputs are drawn in float32 (so the Rust side sees exactly the same values) and promoted to
float64; outputs and vector-Jacobian products are computed in float64 and stored as float32.

Writes tests/fixtures/ops.safetensors:
  tensors  "<case>.<name>"   inputs, "y" (output; ops with several outputs name each), "gy"
                            (upstream gradient), "g_<input>" (grads)
  metadata "<case>" -> JSON  {"op": ..., op parameters ..., "grads": [inputs with a gradient]}

Run:  python tools/reference/make_op_fixtures.py   (versions pinned in requirements.txt)
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from guided_diffusion.nn import timestep_embedding
from guided_diffusion.unet import QKVAttentionLegacy

torch.manual_seed(20231001)
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "ops.safetensors")

tensors = {}
meta = {}


def rnd(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float32) * scale).double()


def case(name, op, params, inputs, fn, grads=(), dtype=torch.float64):
    """fn(**inputs) -> output; grads: names of inputs to differentiate (vector-Jacobian with gy)."""
    assert name not in meta, name
    ins = {k: v.clone().to(dtype).requires_grad_(k in grads) for k, v in inputs.items()}
    y = fn(**ins)
    for k, v in inputs.items():
        tensors[f"{name}.{k}"] = v.float().contiguous()
    if isinstance(y, dict):  # several named outputs (no gradients)
        assert not grads, name
        for k, v in y.items():
            tensors[f"{name}.{k}"] = v.detach().float().contiguous()
        meta[name] = json.dumps({"op": op, **params, "grads": []})
        return
    tensors[f"{name}.y"] = y.detach().float().contiguous()
    if grads:
        gy = torch.randn(y.shape, dtype=torch.float32).to(dtype)
        gs = torch.autograd.grad(y, [ins[k] for k in grads], gy)
        tensors[f"{name}.gy"] = gy.float().contiguous()
        for k, g in zip(grads, gs):
            tensors[f"{name}.g_{k}"] = g.float().contiguous()
    meta[name] = json.dumps({"op": op, **params, "grads": list(grads)})


# ---- conv2d: F.conv2d after F.pad (asymmetric padding, as EfficientNet's static "same") -----------
def conv_case(name, x, w, stride, pad, groups, bias):
    ins = {"x": x, "w": w}
    if bias:
        ins["b"] = rnd(w.shape[0])

    def f(x, w, b=None):
        return F.conv2d(F.pad(x, tuple(pad)), w, b, stride=stride, groups=groups)

    case(name, "conv2d", {"stride": stride, "pad": list(pad), "groups": groups}, ins, f, grads=("x",))


conv_case("conv3x3_s1_p1_bias", rnd(2, 4, 7, 9), rnd(6, 4, 3, 3, scale=0.3), 1, (1, 1, 1, 1), 1, True)
conv_case("conv3x3_s2_same380", rnd(1, 3, 9, 8), rnd(5, 3, 3, 3, scale=0.3), 2, (0, 1, 0, 1), 1, False)
conv_case("conv_dw5x5_s2_p2_bias", rnd(2, 6, 11, 10), rnd(6, 1, 5, 5, scale=0.3), 2, (2, 2, 2, 2), 6, True)
conv_case("conv_dw3x3_s2_same380", rnd(1, 4, 8, 8), rnd(4, 1, 3, 3, scale=0.3), 2, (0, 1, 0, 1), 4, False)
conv_case("conv_dw3x3_mult2", rnd(1, 3, 6, 7), rnd(6, 1, 3, 3, scale=0.3), 1, (1, 1, 1, 1), 3, False)
conv_case("conv1x1_groups2_bias", rnd(2, 8, 5, 5), rnd(6, 4, 1, 1, scale=0.3), 1, (0, 0, 0, 0), 2, True)
conv_case("conv3x3_groups2", rnd(1, 4, 6, 6), rnd(6, 2, 3, 3, scale=0.3), 1, (1, 1, 1, 1), 2, False)
conv_case("conv1x1_s2", rnd(1, 8, 9, 9), rnd(4, 8, 1, 1, scale=0.3), 2, (0, 0, 0, 0), 1, False)
conv_case("conv7x7_s2_p3", rnd(1, 3, 15, 14), rnd(4, 3, 7, 7, scale=0.2), 2, (3, 3, 3, 3), 1, False)
conv_case("conv3x3_bands", rnd(1, 16, 40, 64), rnd(8, 16, 3, 3, scale=0.1), 1, (1, 1, 1, 1), 1, True)
conv_case("conv2x4_s3_asym", rnd(1, 2, 10, 11), rnd(3, 2, 2, 4, scale=0.3), 3, (1, 2, 0, 3), 1, True)

# ---- linear ---------------------------------------------------------------------------------------
case("linear_bias", "linear", {}, {"x": rnd(3, 10), "w": rnd(7, 10, scale=0.3), "b": rnd(7)},
     lambda x, w, b: F.linear(x, w, b), grads=("x",))
case("linear_nobias", "linear", {}, {"x": rnd(2, 33), "w": rnd(5, 33, scale=0.2)},
     lambda x, w: F.linear(x, w), grads=("x",))


# ---- group norm (+ scale-shift, + SiLU) -----------------------------------------------------------
def gn_case(name, x, groups, eps, silu, ss):
    c = x.shape[1]
    ins = {"x": x, "gamma": 1 + rnd(c, scale=0.2), "beta": rnd(c, scale=0.2)}
    if ss:
        ins["scale"] = rnd(x.shape[0], c, scale=0.3)
        ins["shift"] = rnd(x.shape[0], c, scale=0.3)

    def f(x, gamma, beta, scale=None, shift=None):
        h = F.group_norm(x, groups, gamma, beta, eps)
        if scale is not None:
            extra = (None,) * (x.dim() - 2)
            h = h * (1 + scale[(...,) + extra]) + shift[(...,) + extra]
        return F.silu(h) if silu else h

    grads = ("x",)
    case(name, "group_norm", {"groups": groups, "eps": eps, "silu": silu, "scale_shift": ss}, ins, f, grads=grads)


gn_case("gn32", rnd(2, 64, 5, 6, scale=2.0) + 0.5, 32, 1e-5, False, False)
gn_case("gn32_silu", rnd(2, 64, 5, 6), 32, 1e-5, True, False)
gn_case("gn32_scale_shift", rnd(2, 64, 4, 4), 32, 1e-5, False, True)
gn_case("gn32_scale_shift_silu", rnd(2, 64, 4, 4), 32, 1e-5, True, True)
gn_case("gn8_rank3", rnd(1, 16, 30), 8, 1e-6, False, False)


# ---- batch norm (inference) → channel affine --------------------------------------------------------
def bn(x, weight, bias, mean, var):
    return F.batch_norm(x, mean, var, weight, bias, training=False, eps=1e-3)


case("batch_norm_eval", "batch_norm", {"eps": 1e-3},
     {"x": rnd(2, 5, 4, 3), "weight": 1 + rnd(5, scale=0.2), "bias": rnd(5, scale=0.2),
      "mean": rnd(5, scale=0.5), "var": torch.rand(5, dtype=torch.float32).double() + 0.5},
     bn, grads=("x",))

# ---- activations ------------------------------------------------------------------------------------
for act, fn in [("silu", F.silu), ("relu", F.relu), ("sigmoid", torch.sigmoid), ("relu6", F.relu6)]:
    case(f"act_{act}", "activation", {"act": act}, {"x": rnd(2, 3, 4, 5, scale=3.0)},
         lambda x, fn=fn: fn(x), grads=("x",))

# ---- add / mul with broadcast ------------------------------------------------------------------------
for opname, fn in [("add", torch.add), ("mul", torch.mul)]:
    f2 = lambda a, b, fn=fn: fn(a, b)  # noqa: E731
    case(f"{opname}_same", opname, {}, {"a": rnd(2, 4, 3, 3), "b": rnd(2, 4, 3, 3)}, f2, grads=("a", "b"))
    case(f"{opname}_bcast_nc11", opname, {}, {"a": rnd(2, 4, 3, 5), "b": rnd(2, 4, 1, 1)}, f2, grads=("a", "b"))
    case(f"{opname}_bcast_1c11", opname, {}, {"a": rnd(3, 4, 2, 3), "b": rnd(1, 4, 1, 1)}, f2, grads=("a", "b"))
    case(f"{opname}_bcast_11hw", opname, {}, {"a": rnd(2, 3, 4, 5), "b": rnd(1, 1, 4, 5)}, f2, grads=("a", "b"))

# ---- pooling -----------------------------------------------------------------------------------------
case("avg_pool2x2", "avg_pool2d", {"kernel": 2, "stride": 2, "padding": 0}, {"x": rnd(2, 3, 8, 6)},
     lambda x: F.avg_pool2d(x, 2, 2), grads=("x",))
case("avg_pool2x2_odd", "avg_pool2d", {"kernel": 2, "stride": 2, "padding": 0}, {"x": rnd(1, 2, 7, 9)},
     lambda x: F.avg_pool2d(x, 2, 2), grads=("x",))
case("avg_pool3x3_s2_p1", "avg_pool2d", {"kernel": 3, "stride": 2, "padding": 1}, {"x": rnd(1, 2, 7, 8)},
     lambda x: F.avg_pool2d(x, 3, 2, 1), grads=("x",))
case("max_pool3x3_s2_p1", "max_pool2d", {"kernel": 3, "stride": 2, "padding": 1}, {"x": rnd(2, 3, 9, 8)},
     lambda x: F.max_pool2d(x, 3, 2, 1), grads=("x",))
case("max_pool3x3_s2_p1_even", "max_pool2d", {"kernel": 3, "stride": 2, "padding": 1}, {"x": rnd(1, 2, 16, 16)},
     lambda x: F.max_pool2d(x, 3, 2, 1), grads=("x",))
case("global_avg_pool", "global_avg_pool", {}, {"x": rnd(2, 5, 4, 6)},
     lambda x: F.adaptive_avg_pool2d(x, 1), grads=())

# ---- resampling --------------------------------------------------------------------------------------
case("nearest2x", "upsample_nearest2x", {}, {"x": rnd(2, 3, 4, 5)},
     lambda x: F.interpolate(x, scale_factor=2, mode="nearest"), grads=("x",))
for name, shape, size in [("bilinear_down4", (2, 3, 16, 16), (4, 4)), ("bilinear_down2", (1, 2, 16, 12), (8, 6)),
                          ("bilinear_up_frac", (2, 3, 4, 5), (9, 13)), ("bilinear_mixed", (1, 2, 10, 7), (4, 16)),
                          ("bilinear_up4", (1, 2, 16, 16), (64, 64))]:
    case(name, "resize_bilinear", {"size": list(size)}, {"x": rnd(*shape)},
         lambda x, size=size: F.interpolate(x, size=size, mode="bilinear", align_corners=False), grads=("x",))

# ---- layout ------------------------------------------------------------------------------------------
case("concat3", "concat_channels", {}, {"a": rnd(2, 3, 4, 4), "b": rnd(2, 5, 4, 4), "c": rnd(2, 1, 4, 4)},
     lambda a, b, c: torch.cat([a, b, c], dim=1), grads=("a", "b", "c"))
case("slice2_6", "slice_channels", {"start": 2, "end": 6}, {"x": rnd(2, 8, 3, 3)},
     lambda x: x[:, 2:6], grads=("x",))


# ---- attention: upstream guided_diffusion QKVAttentionLegacy -------------------------------------------
def attn_case(name, n, heads, d, t, scale):
    att = QKVAttentionLegacy(heads)
    case(name, "attention_legacy", {"heads": heads}, {"qkv": rnd(n, 3 * heads * d, t, scale=scale)},
         lambda qkv: att(qkv), grads=("qkv",))


attn_case("attn_h2_d8_t30", 2, 2, 8, 30, 1.0)
attn_case("attn_h4_d16_t64", 1, 4, 16, 64, 1.5)
attn_case("attn_h1_d64_t16", 1, 1, 64, 16, 0.7)

# ---- embeddings: upstream timestep_embedding (float32, like the model sees it) -------------------------
for name, ts, dim in [("temb256", [0, 1, 5, 20, 32, 201, 401, 999], 256), ("temb7_frac", [0.5, 12.25, 999.0], 7)]:
    case(name, "timestep_embedding", {"dim": dim, "max_period": 10000},
         {"t": torch.tensor(ts, dtype=torch.float32).double()},
         lambda t, dim=dim: timestep_embedding(t.float(), dim), dtype=torch.float32)
case("embedding", "embedding", {"ids": [3, 0, 14, 3]}, {"table": rnd(15, 12)},
     lambda table: F.embedding(torch.tensor([3, 0, 14, 3]), table))

# ---- reductions ---------------------------------------------------------------------------------------
case("mean_std", "mean_std", {}, {"x": rnd(1, 3, 16, 16, scale=2.0) + 0.3},
     lambda x: torch.stack([x.mean(), x.std()]))

# ---- PaDiM: channel selection and the Mahalanobis distance --------------------------------------------
case("gather_channels", "gather_channels", {"ids": [7, 0, 3, 11, 4]}, {"x": rnd(2, 12, 3, 5)},
     lambda x: x.index_select(1, torch.tensor([7, 0, 3, 11, 4])), grads=("x",))


def maha_case(name, n, d, h, w):
    """The reference is the textbook form sqrt((f−μ)ᵀ Σ⁻¹ (f−μ)) with Σ⁻¹ = torch.linalg.inv(Σ)
    (float64), as PaDiM computes it; the op's input is the packed inverse Cholesky factor."""
    p = h * w
    samples = rnd(p, 3 * d, d)
    mu = samples.mean(1)
    cen = samples - mu[:, None]
    cov = cen.transpose(1, 2) @ cen / (3 * d - 1) + 0.01 * torch.eye(d, dtype=torch.float64)
    linv = torch.linalg.inv(torch.linalg.cholesky(cov)).float()
    rows, cols = torch.tril_indices(d, d)
    packed = linv[:, rows, cols]  # row-major lower triangle: row i at i(i+1)/2
    # the inverse the reference uses is exactly the one the float32 factor represents
    prec = linv.double().transpose(1, 2) @ linv.double()
    assert torch.allclose(prec, torch.linalg.inv(cov), rtol=1e-4, atol=1e-4)
    f = rnd(n, d, h, w) * cov.diagonal(dim1=1, dim2=2).sqrt().T.reshape(1, d, h, w).float().double() + mu.T.reshape(1, d, h, w)

    def fn(f, mean, linv):
        delta = f.reshape(n, d, p).permute(0, 2, 1) - mean  # [n, p, d]
        m2 = torch.einsum("npi,pij,npj->np", delta, prec, delta)
        return m2.sqrt().reshape(n, 1, h, w)
    case(name, "mahalanobis", {}, {"f": f, "mean": mu.float().double(), "linv": packed.double()}, fn, grads=("f",))


maha_case("mahalanobis_d7", 2, 7, 3, 4)
maha_case("mahalanobis_d70", 1, 70, 2, 3)

# ---- scale_add_scalar: alpha·x + beta (z-scoring, step updates) -----------------------------------
case("scale_add_scalar_zscore", "scale_add_scalar", {"alpha": 0.37, "beta": -1.25}, {"x": rnd(2, 3, 5, 7, scale=3.0)},
     lambda x: 0.37 * x - 1.25)

# ---- beyond one tile (docs/emulator.md: what the small cases cannot see) ---------------------------
# Drawn after every case above, so those stay bit-identical. The GEMM kernels tile 64×64 outputs with
# K steps of 16: these have M, N and K over two tiles and not multiples of them; attention at 200 and
# 1024 tokens (the kernels' thread-stride loops; the paper's model has 1024 at 32²) and with logits
# near 100 (exp overflows without the max subtracted); group norm with more than 256 values per
# group (a block-stride loop) on small-variance input at two eps (eps ≈ the variance, so a fixed eps
# shows); Mahalanobis at d = 300; bilinear and pools at odd sizes. "large": the cross-backend suite
# runs these once (forward schedule, race detector on) instead of under every schedule.
L = {"large": True}
conv_case_l = lambda name, x, w, stride, pad, bias: case(
    name, "conv2d", {"stride": stride, "pad": list(pad), "groups": 1, **L},
    {"x": x, "w": w, **({"b": rnd(w.shape[0])} if bias else {})},
    lambda x, w, b=None: F.conv2d(F.pad(x, tuple(pad)), w, b, stride=stride), grads=("x",))
conv_case_l("big_conv3x3_m100_k216_n286", rnd(2, 24, 13, 11), rnd(100, 24, 3, 3, scale=0.1), 1, (1, 1, 1, 1), True)
conv_case_l("big_conv1x1_m130_k200_n143", rnd(1, 200, 13, 11), rnd(130, 200, 1, 1, scale=0.07), 1, (0, 0, 0, 0), False)
conv_case_l("big_conv3x3_s2_top1_left0_m70", rnd(1, 40, 21, 19), rnd(70, 40, 3, 3, scale=0.08), 2, (0, 1, 1, 0), True)
case("big_linear_200x130_to_100", "linear", dict(L), {"x": rnd(200, 130), "w": rnd(100, 130, scale=0.1), "b": rnd(100)},
     lambda x, w, b: F.linear(x, w, b), grads=("x",))
# "tol_scale": logits near 100 have an f32 rounding of ~1e-5 each, which moves the softmax weights by
# as much: the tolerance (relative to the output's scale already) is 4× the ordinary one
for name, n, heads, d, t, scale, ts in [("big_attn_h2_d16_t200", 1, 2, 16, 200, 1.0, 1), ("big_attn_h1_d32_t1024", 1, 1, 32, 1024, 1.0, 1),
                                        ("big_attn_large_logits_h1_d16_t50", 1, 1, 16, 50, 10.0, 4)]:
    att = QKVAttentionLegacy(heads)
    case(name, "attention_legacy", {"heads": heads, "tol_scale": ts, **L}, {"qkv": rnd(n, 3 * heads * d, t, scale=scale)},
         lambda qkv, att=att: att(qkv), grads=("qkv",))
for eps in (1e-5, 1e-3):
    x = rnd(2, 64, 12, 12, scale=1e-2) + 0.3
    c = 64
    ins = {"x": x, "gamma": 1 + rnd(c, scale=0.2), "beta": rnd(c, scale=0.2), "scale": rnd(2, c, scale=0.3), "shift": rnd(2, c, scale=0.3)}

    def gnf(x, gamma, beta, scale, shift, eps=eps):
        return F.silu(F.group_norm(x, 32, gamma, beta, eps) * (1 + scale[..., None, None]) + shift[..., None, None])
    case(f"big_gn32_288_per_group_var1e-4_eps{eps:g}", "group_norm", {"groups": 32, "eps": eps, "silu": True, "scale_shift": True, **L},
         ins, gnf, grads=("x",))
maha_case("big_mahalanobis_d300", 1, 300, 2, 3)
for name, shape, size in [("bilinear_odd_up", (1, 3, 23, 17), (64, 48)), ("bilinear_odd_down", (1, 2, 37, 29), (10, 7))]:
    case(name, "resize_bilinear", {"size": list(size)}, {"x": rnd(*shape)},
         lambda x, size=size: F.interpolate(x, size=size, mode="bilinear", align_corners=False), grads=("x",))
case("avg_pool2x2_13x11", "avg_pool2d", {"kernel": 2, "stride": 2, "padding": 0}, {"x": rnd(2, 3, 13, 11)},
     lambda x: F.avg_pool2d(x, 2, 2), grads=("x",))
case("max_pool3x3_s2_p1_15x13", "max_pool2d", {"kernel": 3, "stride": 2, "padding": 1}, {"x": rnd(1, 3, 15, 13)},
     lambda x: F.max_pool2d(x, 3, 2, 1), grads=("x",))

# ---- the split group norm and the vector paths (kernels/README.md, "Group norm", "Elementwise") --------
# Drawn after every case above, so those stay bit-identical. Group norm is cut into chunks of ≥ 128
# values, one block each, their moments merged per group: groups of 1024 and 578 values (several
# chunks, the last one short; 578 = 2·17²: every other group starts off a 16-byte boundary and
# the aligned ones end in a partial float4; s = 289: no float4 in the apply), batch 3, groups of
# 50 (every other one off a 16-byte boundary, s = 25), and a mean of 1.5 with σ = 0.01: the
# one-pass Σx² − (Σx)²/n in f32 keeps about one digit of the variance there (mean² alone rounds
# by 1e-3 of it). The input is rounded to f32 before the reference sees it (+ 1.5 in float64
# would give the reference values the f32 fixture cannot hold). The CPU twin folds the affine
# into x·k + m in f32, which at mean/σ = 150 rounds by ~1e-5: a larger mean would fail the CPU,
# not the kernels.
gn_case("gn8_split8_ss_silu", rnd(1, 32, 16, 16), 8, 1e-5, True, True)
gn_case("gn32_split4_odd17x17", rnd(1, 64, 17, 17, scale=1.5) - 0.7, 32, 1e-5, False, True)
gn_case("gn4_batch3_ss_silu", rnd(3, 16, 12, 12), 4, 1e-5, True, True)
gn_case("gn3_unaligned_6x5x5", rnd(1, 6, 5, 5), 3, 1e-5, True, True)
gn_case("gn4_mean1.5_sigma0.01", (rnd(1, 16, 8, 8, scale=0.01) + 1.5).float().double(), 4, 1e-5, False, False)
gn_case("gn8_mean1.5_sigma0.01_odd", (rnd(2, 32, 9, 9, scale=0.01) + 1.5).float().double(), 8, 1e-5, True, True)
# broadcasts by pattern: per row (inner = H·W a multiple of 4: one b value per float4), per channel
# with wrap ([1,C,1,1] over batch 3), a scalar, a trailing block, the general kernel's [N,1,H,W],
# odd sizes (the float4 path and its tail, or the scalar path); the scalar b stays small: its gradient
# is one f32 sum of all of a, which the SIMPLE tolerance does not cover beyond a few dozen terms
for opname, fn in [("add", torch.add), ("mul", torch.mul)]:
    f2 = lambda a, b, fn=fn: fn(a, b)  # noqa: E731
    case(f"{opname}_bcast_nc11_hw16", opname, {}, {"a": rnd(2, 4, 4, 4), "b": rnd(2, 4, 1, 1)}, f2, grads=("a", "b"))
    case(f"{opname}_bcast_1c11_hw8_batch3", opname, {}, {"a": rnd(3, 4, 4, 2), "b": rnd(1, 4, 1, 1)}, f2, grads=("a", "b"))
    case(f"{opname}_bcast_scalar", opname, {}, {"a": rnd(1, 2, 2, 4), "b": rnd(1, 1, 1, 1)}, f2, grads=("a", "b"))
    case(f"{opname}_bcast_scalar_odd", opname, {}, {"a": rnd(1, 3, 5), "b": rnd(1, 1, 1)}, f2, grads=("a", "b"))
    case(f"{opname}_same_odd", opname, {}, {"a": rnd(3, 5, 7), "b": rnd(3, 5, 7)}, f2, grads=("a", "b"))
    case(f"{opname}_bcast_n1hw_general", opname, {}, {"a": rnd(2, 3, 4, 5), "b": rnd(2, 1, 4, 5)}, f2, grads=("a", "b"))
case("act_silu_odd", "activation", {"act": "silu"}, {"x": rnd(3, 5, 7, scale=3.0)}, lambda x: F.silu(x), grads=("x",))
case("scale_add_scalar_aligned", "scale_add_scalar", {"alpha": -0.61, "beta": 0.25}, {"x": rnd(2, 4, 4, 4, scale=3.0)},
     lambda x: -0.61 * x + 0.25)
case("batch_norm_eval_odd", "batch_norm", {"eps": 1e-3},
     {"x": rnd(1, 3, 5, 5), "weight": 1 + rnd(3, scale=0.2), "bias": rnd(3, scale=0.2),
      "mean": rnd(3, scale=0.5), "var": torch.rand(3, dtype=torch.float32).double() + 0.5},
     bn, grads=("x",))
case("concat2_odd", "concat_channels", {}, {"a": rnd(2, 2, 3, 3), "b": rnd(2, 1, 3, 3)},
     lambda a, b: torch.cat([a, b], dim=1), grads=("a", "b"))
case("slice1_4_vec", "slice_channels", {"start": 1, "end": 4}, {"x": rnd(2, 6, 2, 4)},
     lambda x: x[:, 1:4], grads=("x",))


# ---- group norm feeding a conv (Backend::group_norm_conv2d: the UNet's norm → conv pairs) ---------
# Drawn after every case above, so those stay bit-identical. beta and shift are far from 0, so a
# conv that normalised its zero padding as well (act(bb) ≠ 0) is off at every border pixel; scale and
# shift sit in an emb row at an odd offset between filler columns (as group_norm_emb's cases); groups
# that one block normalises and groups split over blocks (6,384 values, above the one-block limit
# of 6,144: 7 chunks); batch 2 with
# different scale-shift per image (a record taken from the wrong image shows); odd spatial sizes; a
# residual; a 1×1 conv over [N, C, T, 1] without SiLU (the attention block's qkv); stride 2 with
# asymmetric padding; a mean of 1.5 with σ = 0.01 (the normalisation's cancellation).
EMB_BEFORE, EMB_AFTER = 3, 2


def gnconv_case(name, x, gn_groups, silu, ss, w, stride, pad, bias, res, large=False):
    n, c = x.shape[:2]
    ins = {"x": x, "gamma": 1 + rnd(c, scale=0.2), "beta": rnd(c, scale=0.5) + 0.3, "w": w}
    params = {"gn_groups": gn_groups, "eps": 1e-5, "silu": silu, "stride": stride, "pad": list(pad), "groups": 1}
    if large:
        params["large"] = True
    if bias:
        ins["b"] = rnd(w.shape[0])
    if ss:
        filler = lambda k: 50 + 10 * torch.rand(n, k, dtype=torch.float32).double()  # noqa: E731
        ins["emb"] = torch.cat([filler(EMB_BEFORE), rnd(n, c, scale=0.3), rnd(n, c, scale=0.3) + 0.2, filler(EMB_AFTER)], dim=1)
        params["offset"] = EMB_BEFORE
    ho = (x.shape[2] + pad[2] + pad[3] - w.shape[2]) // stride + 1
    wo = (x.shape[3] + pad[0] + pad[1] - w.shape[3]) // stride + 1
    if res:
        ins["res"] = rnd(n, w.shape[0], ho, wo)

    def f(x, gamma, beta, w, b=None, emb=None, res=None):
        h = F.group_norm(x, gn_groups, gamma, beta, 1e-5)
        if emb is not None:
            scale, shift = emb[:, EMB_BEFORE:EMB_BEFORE + c], emb[:, EMB_BEFORE + c:EMB_BEFORE + 2 * c]
            h = h * (1 + scale[..., None, None]) + shift[..., None, None]
        if silu:
            h = F.silu(h)
        y = F.conv2d(F.pad(h, tuple(pad)), w, b, stride=stride)
        return y if res is None else y + res

    case(name, "group_norm_conv2d", params, ins, f)


gnconv_case("gnconv3x3_silu_emb_res_batch2", rnd(2, 16, 7, 9) + 0.5, 4, True, True, rnd(8, 16, 3, 3, scale=0.2), 1, (1, 1, 1, 1), True, True)
gnconv_case("gnconv1x1_t50_nosilu", rnd(1, 32, 50, 1), 8, False, False, rnd(48, 32, 1, 1, scale=0.2), 1, (0, 0, 0, 0), True, False)
gnconv_case("gnconv3x3_s2_asym_nobias", rnd(1, 8, 9, 8), 2, True, False, rnd(6, 8, 3, 3, scale=0.3), 2, (0, 1, 0, 1), False, False)
gnconv_case("gnconv3x3_mean1.5_sigma0.01", (rnd(1, 16, 6, 6, scale=0.01) + 1.5).float().double(), 4, True, True, rnd(8, 16, 3, 3, scale=0.2),
            1, (1, 1, 1, 1), True, False)
gnconv_case("big_gnconv3x3_split_emb_res", rnd(1, 32, 56, 57, scale=1.5) - 0.7, 16, True, True, rnd(16, 32, 3, 3, scale=0.07), 1, (1, 1, 1, 1),
            True, True, large=True)


# ---- group-norm statistics made by the producer (Backend::conv2d_gn, concat_channels_gn,
# group_norm_resample) --------------------------------------------------------------------------
# Drawn after every case above, so those stay bit-identical. Each case also names the norm the
# output meets next (gamma, beta, its groups, emb's scale-shift) and a 3×3 conv (w2, b2) over
# silu(that norm(y)): "z", which a backend computes from the records its producer made. Sizes
# where the CUDA backend makes them (64-value tiles in one image; a two-part concat) and where it
# cannot (144 values an image); a group straddling two row tiles or the concat's parts (3 channels
# a group); a mean of 1000 against a spread of 1 carried by the bias (the moments' shift).
def f32(t):
    """A shifted draw rounded to float32, so the reference sees the values the Rust side loads."""
    return t.float().double()


def next_norm(ins, params, n, c, gn_groups, ss):
    ins["gamma"] = f32(1 + rnd(c, scale=0.2))
    ins["beta"] = f32(rnd(c, scale=0.5) + 0.3)
    params.update({"gn_groups": gn_groups, "eps": 1e-5, "silu": True})
    if ss:
        filler = lambda k: 50 + 10 * torch.rand(n, k, dtype=torch.float32).double()  # noqa: E731
        ins["emb"] = f32(torch.cat([filler(EMB_BEFORE), rnd(n, c, scale=0.3), rnd(n, c, scale=0.3) + 0.2, filler(EMB_AFTER)], dim=1))
        params["offset"] = EMB_BEFORE
    ins["w2"] = rnd(8, c, 3, 3, scale=1.0 / (3 * c) ** 0.5)
    ins["b2"] = rnd(8)


def normed(y, gamma, beta, gn_groups, emb=None):
    c = y.shape[1]
    h = F.group_norm(y, gn_groups, gamma, beta, 1e-5)
    if emb is not None:
        scale, shift = emb[:, EMB_BEFORE:EMB_BEFORE + c], emb[:, EMB_BEFORE + c:EMB_BEFORE + 2 * c]
        h = h * (1 + scale[..., None, None]) + shift[..., None, None]
    return F.silu(h)


def then_conv(y, gamma, beta, gn_groups, w2, b2, emb=None):
    return F.conv2d(F.pad(normed(y, gamma, beta, gn_groups, emb), (1, 1, 1, 1)), w2, b2)


def conv_gn_case(name, x, w, gn_groups, ss, res, offset=0.0, in_groups=None):
    n, c = x.shape[0], w.shape[0]
    ins = {"x": f32(x), "w": w, "b": f32(rnd(c) + offset)}
    params = {"stride": 1, "pad": [1, 1, 1, 1], "groups": 1}
    if in_groups:
        ins["in_gamma"] = f32(1 + rnd(x.shape[1], scale=0.2))
        ins["in_beta"] = f32(rnd(x.shape[1], scale=0.5) + 0.3)
        params["in_groups"] = in_groups
    if res:
        ins["res"] = rnd(n, c, x.shape[2], x.shape[3])
    next_norm(ins, params, n, c, gn_groups, ss)

    def f(x, w, b, gamma, beta, w2, b2, res=None, emb=None, in_gamma=None, in_beta=None):
        h = x if in_gamma is None else F.silu(F.group_norm(x, in_groups, in_gamma, in_beta, 1e-5))
        y = F.conv2d(F.pad(h, (1, 1, 1, 1)), w, b)
        if res is not None:
            y = y + res
        return {"y": y, "z": then_conv(y, gamma, beta, gn_groups, w2, b2, emb)}

    case(name, "conv2d_gn", params, ins, f)


conv_gn_case("convgn_96ch_straddle_batch2", rnd(2, 8, 16, 16), rnd(96, 8, 3, 3, scale=0.2), 32, False, False)
conv_gn_case("convgn_normin_res_emb_mean100", rnd(1, 32, 8, 24) + 0.4, rnd(64, 32, 3, 3, scale=0.06), 16, True, True, offset=100.0, in_groups=4)
conv_gn_case("convgn_12x12_no_records", rnd(2, 8, 12, 12), rnd(64, 8, 3, 3, scale=0.2), 32, True, True)


def concat_gn_case(name, a, b, gn_groups, ss):
    n, c = a.shape[0], a.shape[1] + b.shape[1]
    ins = {"a": f32(a), "b": f32(b)}
    params = {}
    next_norm(ins, params, n, c, gn_groups, ss)

    def f(a, b, gamma, beta, w2, b2, emb=None):
        y = torch.cat([a, b], dim=1)
        return {"y": y, "z": then_conv(y, gamma, beta, gn_groups, w2, b2, emb)}

    case(name, "concat_channels_gn", params, ins, f)


concat_gn_case("concatgn_40+56_levels_emb_batch2", rnd(2, 40, 9, 12) + 100, rnd(2, 56, 9, 12) - 3, 32, True)
concat_gn_case("concatgn_64+64_8x8", rnd(1, 64, 8, 8), rnd(1, 64, 8, 8) + 0.5, 32, False)


def gn_resample_case(name, a, b, gn_groups, up):
    c = a.shape[1] + b.shape[1]
    ins = {"a": f32(a), "b": f32(b), "gamma": f32(1 + rnd(c, scale=0.2)), "beta": f32(rnd(c, scale=0.5) + 0.3)}
    params = {"gn_groups": gn_groups, "eps": 1e-5, "silu": True, "up": up}

    def f(a, b, gamma, beta):
        h = normed(torch.cat([a, b], dim=1), gamma, beta, gn_groups)
        return F.interpolate(h, scale_factor=2, mode="nearest") if up else F.avg_pool2d(h, 2)

    case(name, "group_norm_resample", params, ins, f)


gn_resample_case("gnresample_up_9x11_batch2", rnd(2, 48, 9, 11), rnd(2, 48, 9, 11) + 0.3, 32, True)
gn_resample_case("gnresample_down_9x11_batch2", rnd(2, 48, 9, 11), rnd(2, 48, 9, 11) + 0.3, 32, False)
gn_resample_case("gnresample_down_16x16", rnd(1, 32, 16, 16) + 2, rnd(1, 32, 16, 16), 16, False)

os.makedirs(os.path.dirname(OUT), exist_ok=True)
meta["__generator__"] = json.dumps({"script": "tools/reference/make_op_fixtures.py", "torch": torch.__version__,
                                    "python": sys.version.split()[0]})
save_file(tensors, OUT, metadata=meta)
print(f"wrote {len(meta) - 1} cases, {len(tensors)} tensors, {os.path.getsize(OUT)} bytes to {os.path.normpath(OUT)}")
