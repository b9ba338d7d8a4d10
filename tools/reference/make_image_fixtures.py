"""Reference for ran's image preprocessing: Pillow's resampling and the official code's
`center_crop_arr` (guided-diffusion image_datasets.py: BOX-halve while the short side is at least
twice the target, BICUBIC resize of the short side to the target, centre crop; docs/method.md §3).

Writes small PNG/JPEG inputs to tests/fixtures/images/ and, in
tests/fixtures/preprocess.safetensors, Pillow's outputs (uint8):
  resize.<img>.<filter>.<w>x<h>   Image.resize((w, h), filter) of the RGB image
  crop.<img>.<size>               center_crop_arr(image, size)
  maskcrop.<size>                 the same geometry on a grayscale mask, then (v/255).long()
Run:  python tools/reference/make_image_fixtures.py   (Pillow pinned in requirements.txt)
"""
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "..", "..", "tests", "fixtures")
IMG = os.path.join(FIX, "images")
rng = np.random.default_rng(20231006)


def center_crop_arr(pil_image, image_size):
    # as upstream guided_diffusion/image_datasets.py
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]


def smooth_image(w, h):
    """Textured but compressible: gradients, blobs, a little noise, hard edges (ringing tests)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(3):
        f = 40 * np.sin(xx / (7 + 3 * c)) + 40 * np.cos(yy / (11 + c)) + 128
        f += 30 * ((xx // 37 + yy // 29 + c) % 2)
        f += rng.normal(0, 6, size=f.shape)
        chans.append(f)
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def main():
    os.makedirs(IMG, exist_ok=True)
    imgs = {"a": Image.fromarray(smooth_image(320, 240)), "b": Image.fromarray(smooth_image(150, 171))}
    imgs["a"].save(os.path.join(IMG, "a.png"))
    imgs["b"].save(os.path.join(IMG, "b.png"))
    # grayscale and RGBA variants of a (the official code converts every image to RGB)
    imgs["a"].convert("L").save(os.path.join(IMG, "a_gray.png"))
    rgba = imgs["a"].convert("RGBA")
    rgba.putalpha(200)
    rgba.save(os.path.join(IMG, "a_rgba.png"))
    t = {}
    for name, im in imgs.items():
        for filt, fname in ((Image.BICUBIC, "bicubic"), (Image.BOX, "box")):
            for (w, h) in ((64, 48), (200, 131), (33, 301), (im.size[0] // 2, im.size[1] // 2)):
                t[f"resize.{name}.{fname}.{w}x{h}"] = torch.from_numpy(np.array(im.resize((w, h), resample=filt)))
        for size in (32, 64, 100):
            t[f"crop.{name}.{size}"] = torch.from_numpy(center_crop_arr(im, size))
    for size in (64, 100):
        t[f"crop.a_gray.{size}"] = torch.from_numpy(center_crop_arr(Image.open(os.path.join(IMG, "a_gray.png")).convert("RGB"), size))
        t[f"crop.a_rgba.{size}"] = torch.from_numpy(center_crop_arr(Image.open(os.path.join(IMG, "a_rgba.png")).convert("RGB"), size))
    # a ground-truth mask: 0/255 regions; after the geometry only exact 255 counts (docs/method.md §3)
    m = np.zeros((240, 320), dtype=np.uint8)
    m[60:130, 90:200] = 255
    m[170:180, 20:300] = 255
    Image.fromarray(m).save(os.path.join(IMG, "a_mask.png"))
    for size in (64, 100):
        arr = center_crop_arr(Image.fromarray(m), size)
        t[f"maskcrop.{size}"] = torch.from_numpy((arr / 255).astype(np.int64).astype(np.uint8))
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(FIX, "preprocess.safetensors"),
              metadata={"generator": "tools/reference/make_image_fixtures.py", "pillow": Image.__version__})
    print(f"{len(t)} reference arrays")


if __name__ == "__main__":
    main()
