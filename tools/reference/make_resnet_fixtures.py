"""Reference for ran's ResNet feature extractor (PaDiM's backbone, docs/method.md §4): torchvision's ResNet
with Bottleneck blocks — the class wide_resnet50_2 and resnet50 are built from (PyPI torchvision
0.29.2) — scaled down (blocks [2, 1, 2], width_per_group 16) so the fixture stays small, every
parameter and BN statistic random (float16-exact), eval mode; input 64×64 in [-1, 1] (no ImageNet
normalisation, as the paper's code); expected layer1, layer2, layer3 outputs. Then the same for a
BasicBlock ResNet (resnet18's block, one block per layer; tensors prefixed `basic.`, outputs
`basic_layer1..3`).
Metadata: the config and torchvision's parameter count of wide_resnet50_2's layers 1–3.
Run:  python tools/reference/make_resnet_fixtures.py
"""
import json
import os

import torch
from safetensors.torch import save_file
from torchvision.models import wide_resnet50_2
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from upstream_effnet import randomise

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "resnet_small.safetensors")
gen = torch.Generator().manual_seed(20231008)


def random_net_and_layers(block, layers, shape, **kw):
    """A ResNet with every parameter and BN statistic drawn from `gen`, an input of `shape` in
    [-1, 1] drawn after them, and its layer1..3 outputs."""
    model = ResNet(block, layers, **kw).eval()
    randomise(model, gen, lambda name, p: name.endswith("weight") and p.dim() == 1)
    x = torch.rand(*shape, generator=gen) * 2 - 1
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        l1 = model.layer1(h)
        l2 = model.layer2(l1)
        l3 = model.layer3(l2)
    return model, x, l1, l2, l3


def main():
    model, x, l1, l2, l3 = random_net_and_layers(Bottleneck, [2, 1, 2, 1], (2, 3, 64, 64), width_per_group=16)
    keep = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
    tensors = {k: v.half().contiguous() for k, v in model.state_dict().items() if v.is_floating_point() and k.startswith(keep)}
    tensors.update(x=x, layer1=l1, layer2=l2, layer3=l3)
    # BasicBlock network, drawn after the Bottleneck one so those values stay as they were
    basic, xb, b1, b2, b3 = random_net_and_layers(BasicBlock, [1, 1, 1, 1], (1, 3, 32, 48))
    tensors.update({f"basic.{k}": v.half().contiguous() for k, v in basic.state_dict().items() if v.is_floating_point() and k.startswith(keep)})
    tensors.update(basic_x=xb, basic_layer1=b1, basic_layer2=b2, basic_layer3=b3)
    wrn = wide_resnet50_2()
    wrn_params = sum(p.numel() for n, p in wrn.named_parameters() if n.startswith(keep))
    meta = {"kind": "resnet", "layers": json.dumps([2, 1, 2]), "width_per_group": "16", "wide_resnet50_2_params_l123": str(wrn_params),
            "basic_layers": json.dumps([1, 1, 1]),
            "generator": "tools/reference/make_resnet_fixtures.py", "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
    print(f"layer shapes {tuple(l1.shape)} {tuple(l2.shape)} {tuple(l3.shape)}; WRN50-2 layers 1-3 params {wrn_params}; {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
