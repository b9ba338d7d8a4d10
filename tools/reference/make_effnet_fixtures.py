"""Reference fixtures for ran's EfficientNet feature extractor, from the lukemelas package the
paper's code uses (PyPI efficientnet-pytorch 0.7.1, pinned in requirements.txt).

tests/fixtures/effnet_small.safetensors: a scaled-down EfficientNet (width 0.5, depth 0.5, static
"same" padding computed for image_size 76 while the input is 64×64, as the paper pads for 380 and
feeds 256), every parameter and BN statistic random (float16-exact), eval mode; inputs x in [-1, 1]
(no ImageNet normalisation, as the paper); expected `tap{i}` outputs of the last block of stages
0, 1, 2 and 4 and `features` = the taps bilinearly resized to 8×8 and concatenated (docs/method.md §2).
Metadata: the config, and efficientnet-pytorch's own parameter count of B4's feature part.
tests/fixtures/effnet_small.pth: the same state_dict torch.save'd (with BN num_batches_tracked and the
conv head, without the classifier _fc).

Run:  python tools/reference/make_effnet_fixtures.py
"""
import json
import os

import torch
import torch.nn.functional as F
from efficientnet_pytorch import EfficientNet
from safetensors.torch import save_file

from upstream_effnet import randomise, taps

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
gen = torch.Generator().manual_seed(20231004)
HEAD = ("_conv_head", "_bn1.", "_fc.")  # classifier part, unused for features


def stage_ends(model):
    """Index of the last block of each stage (a stage = blocks sharing one BlockArgs row)."""
    ends, i = [], -1
    for args in model._blocks_args:
        from efficientnet_pytorch.utils import round_repeats
        i += round_repeats(args.num_repeat, model._global_params)
        ends.append(i)
    return ends


def main():
    model = EfficientNet.from_name("efficientnet-b0", width_coefficient=0.5, depth_coefficient=0.5, image_size=76).eval()
    randomise(model, gen)
    ends = stage_ends(model)
    tap_idx = [ends[0], ends[1], ends[2], ends[4]]
    x = (torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1)
    with torch.no_grad():
        ts = taps(model, x, tap_idx)
        feats = torch.cat([F.interpolate(t, size=(8, 8), mode="bilinear", align_corners=False) for t in ts], dim=1)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD)}
    tensors = {k: v.half().contiguous() for k, v in sd.items() if v.is_floating_point()}
    tensors["x"] = x.contiguous()
    for i, t in enumerate(ts):
        tensors[f"tap{i}"] = t.contiguous()
    tensors["features"] = feats.contiguous()
    b4 = EfficientNet.from_name("efficientnet-b4")
    last_tap = stage_ends(b4)[4]  # blocks after the last tap do not feed the features
    b4_feat_params = sum(p.numel() for n, p in b4.named_parameters()
                         if not n.startswith(HEAD) and not (n.startswith("_blocks.") and int(n.split(".")[1]) > last_tap))
    b4_blocks = len(b4._blocks)
    meta = {"kind": "effnet", "width": "0.5", "depth": "0.5", "image_size": "76", "taps": json.dumps(tap_idx), "feat_size": "8",
            "b4_feature_params": str(b4_feat_params), "b4_blocks": str(b4_blocks), "b4_stage_ends": json.dumps(stage_ends(b4)),
            "generator": "tools/reference/make_effnet_fixtures.py", "torch": torch.__version__}
    save_file(tensors, os.path.join(OUT, "effnet_small.safetensors"), metadata=meta)
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items() if not k.startswith("_fc.")},
               os.path.join(OUT, "effnet_small.pth"))
    print(f"taps {tap_idx}, channels {[t.shape[1] for t in ts]}, features {tuple(feats.shape)}, "
          f"{sum(v.numel() for v in sd.values())} params; B4 feature params {b4_feat_params}, blocks {b4_blocks}, stage ends {stage_ends(b4)}")


def lite():
    """tests/fixtures/effnet_lite_small.safetensors: EfficientNet-Lite (PyPI efficientnet-lite-pytorch
    0.1.0: ReLU6, no squeeze-excite, stem and first/last stages unscaled) at width 1.2 / depth 0.5,
    padded for 76, random weights, 64×64 inputs; expected taps and 8×8 features as above (the blocks
    after the last tap omitted)."""
    from efficientnet_lite_pytorch import EfficientNet as Lite
    from efficientnet_lite_pytorch.utils import round_repeats as lite_repeats
    model = Lite.from_name("efficientnet-lite0", width_coefficient=1.2, depth_coefficient=0.5, image_size=76).eval()
    randomise(model, gen)
    ends, i = [], -1
    for si, a in enumerate(model._blocks_args):
        fixed = si in (0, len(model._blocks_args) - 1)
        i += a.num_repeat if fixed else lite_repeats(a.num_repeat, model._global_params)
        ends.append(i)
    tap_idx = [ends[0], ends[1], ends[2], ends[4]]
    x = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        ts = taps(model, x, tap_idx)
        feats = torch.cat([F.interpolate(t, size=(8, 8), mode="bilinear", align_corners=False) for t in ts], dim=1)
    tensors = {k: v.half().contiguous() for k, v in model.state_dict().items() if v.is_floating_point() and not k.startswith(HEAD)
               and not (k.startswith("_blocks.") and int(k.split(".")[1]) > tap_idx[-1])}
    tensors["x"] = x.contiguous()
    for j, t in enumerate(ts):
        tensors[f"tap{j}"] = t.contiguous()
    tensors["features"] = feats.contiguous()
    meta = {"kind": "effnet", "arch": "lite", "width": "1.2", "depth": "0.5", "image_size": "76", "taps": json.dumps(tap_idx), "feat_size": "8",
            "stage_ends": json.dumps(ends), "generator": "tools/reference/make_effnet_fixtures.py", "torch": torch.__version__}
    save_file(tensors, os.path.join(OUT, "effnet_lite_small.safetensors"), metadata=meta)
    print(f"lite: taps {tap_idx}, channels {[t.shape[1] for t in ts]}, stage ends {ends}")


if __name__ == "__main__":
    main()
    lite()
