"""Shared by the reference scripts: upstream guided_diffusion's UNetModel built from ran-style flag
strings, the paper code's feature head (docs/method.md §2), and a forward pass that also returns the
head's output. Kept in one place so fixtures and `dump_reference.py` agree.
"""
import torch
import torch.nn.functional as F

from guided_diffusion import script_util
from guided_diffusion.nn import GroupNorm32, timestep_embedding

# flags that configure the diffusion, the family or the head, not create_model
NON_MODEL = {"family", "feat_shape", "num_classes", "diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl",
             "predict_xstart", "rescale_timesteps", "rescale_learned_sigmas", "sigma_small", "use_checkpoint"}


def parse_flags(s):
    toks = s.split()
    out, i = {}, 0
    while i < len(toks):
        k = toks[i][2:]
        if "=" in k:
            k, v = k.split("=", 1)
            i += 1
        else:
            v = toks[i + 1]
            i += 2
        out[k] = v
    return out


def truthy(v):
    return v in ("True", "true", "1", "yes")


def make_model(flags, num_classes=1000):
    f = parse_flags(flags)
    script_util.NUM_CLASSES = int(f.get("num_classes", num_classes))
    d = dict(image_size=64, num_channels=128, num_res_blocks=2, channel_mult="", learn_sigma=False, class_cond=False,
             attention_resolutions="16,8", num_heads=4, num_head_channels=-1, num_heads_upsample=-1,
             use_scale_shift_norm=True, resblock_updown=False, use_new_attention_order=False, dropout=0.0, use_fp16=False)
    for k, v in f.items():
        if k in NON_MODEL:
            continue
        cur = d[k]
        d[k] = truthy(v) if isinstance(cur, bool) else type(cur)(v)
    return script_util.create_model(**d)


class FeatHead(torch.nn.Module):
    """The paper code's `feat_rec1` (docs/method.md §2)."""

    def __init__(self, ch, out=272):
        super().__init__()
        self.feat_rec1 = torch.nn.Sequential(GroupNorm32(32, ch), torch.nn.SiLU(), torch.nn.Conv2d(ch, out, 1))


def forward(model, head, x, t, y, feat_shape, tap=10):
    """upstream UNetModel.forward, plus the feature head on output_blocks[tap]'s output."""
    emb = model.time_embed(timestep_embedding(t, model.model_channels).to(x.dtype))
    if model.num_classes is not None:
        emb = emb + model.label_emb(y)
    hs, h, feat_src = [], x, None
    for m in model.input_blocks:
        h = m(h, emb)
        hs.append(h)
    h = model.middle_block(h, emb)
    for j, m in enumerate(model.output_blocks):
        h = torch.cat([h, hs.pop()], dim=1)
        h = m(h, emb)
        if j == tap:
            feat_src = h
    out = model.out(h)
    feat = None
    if head is not None:
        f = F.interpolate(feat_src, size=(feat_shape, feat_shape), mode="bilinear", align_corners=False)
        feat = head.feat_rec1(f)
    return out, feat


def randomise(module, gen):
    """Every parameter random (zero-initialised layers would hide bugs), rounded to float16 so the
    fixtures can store them as F16 (exact in float32) and stay small."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1 and ("norm" in name or name.endswith(("in_layers.0.weight", "out_layers.0.weight", "out.0.weight", "feat_rec1.0.weight"))):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
            p.copy_(p.half().float())


def use_float64_norm_and_softmax():
    """Upstream runs GroupNorm32 and the attention softmax in float32 even in a float64 model;
    for float64 references, switch both to the tensor's own dtype (same formulas)."""
    from guided_diffusion import nn as gd_nn
    from guided_diffusion import unet as gd_unet

    def group_norm_f64(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def legacy_attention_f64(self, qkv):
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / ch ** 0.25
        w = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        return torch.einsum("bts,bcs->bct", w, v).reshape(bs, -1, length)

    gd_nn.GroupNorm32.forward = group_norm_f64
    gd_unet.QKVAttentionLegacy.forward = legacy_attention_f64
