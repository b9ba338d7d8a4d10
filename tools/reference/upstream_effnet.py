"""Shared by the CNN reference scripts: randomise every parameter and BN statistic of a network
(float16-exact values, so fixtures can store them as F16), and run a lukemelas-layout
EfficientNet to its tapped blocks."""
import torch
import torch.nn.functional as F


def is_effnet_bn_weight(name, p):
    return name.endswith(("_bn0.weight", "_bn1.weight", "_bn2.weight"))


def randomise(model, gen, is_norm_weight=is_effnet_bn_weight):
    """Norm weights 1 ± 0.2, other vectors ± 0.1, matrices / sqrt(fan-in); BN mean and var random."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_norm_weight(name, p):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            p.copy_(p.half().float())
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_((0.2 * torch.randn(b.shape, generator=gen)).half().float())
            elif name.endswith("running_var"):
                b.copy_((0.5 + torch.rand(b.shape, generator=gen)).half().float())


def taps(model, x, tap_idx):
    """Outputs of the blocks in tap_idx (stem + blocks, as the package's forward)."""
    out = {}
    h = model._swish(model._bn0(model._conv_stem(x)))
    for i, blk in enumerate(model._blocks):
        h = blk(h)
        if i in tap_idx:
            out[i] = h
        if i == max(tap_idx):
            break
    return [out[i] for i in tap_idx]


def features(model, x, tap_idx, s):
    return torch.cat([F.interpolate(t, size=(s, s), mode="bilinear", align_corners=False) for t in taps(model, x, tap_idx)], dim=1)
