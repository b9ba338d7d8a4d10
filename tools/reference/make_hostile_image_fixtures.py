"""Reference for how ran decodes unusual and damaged images: what Pillow 11.3's
`Image.open(p).convert("RGB")` gives (or that it refuses the file), and the official
`center_crop_arr` on images of extreme aspect ratio.

Writes tests/fixtures/hostile_images/: the input files and manifest.json, one entry per file:
  {"file", "pillow": "ok" | "refused", "w", "h", "rgb": "<file>.rgb" (raw RGB8 of convert("RGB"))}
and crop entries {"file", "crop": size, "rgb"} with center_crop_arr's output.
Run:  python tools/reference/make_hostile_image_fixtures.py   (pillow==11.3.0, numpy)
"""
import json
import os
import random
import struct
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(__file__)
OUT = os.path.join(HERE, "..", "..", "tests", "fixtures", "hostile_images")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(15)
manifest = []


def raw_png(name, w, h, colour_type, depth, rows):
    """A PNG written chunk by chunk (Pillow cannot write 16-bit RGB or LA)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"".join(b"\x00" + r for r in rows)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(png)


def record(name):
    """Pillow's verdict on `name` and, when it decodes, its RGB pixels."""
    path = os.path.join(OUT, name)
    try:
        im = Image.open(path).convert("RGB")
    except Exception as e:  # noqa: BLE001 - any refusal counts
        manifest.append({"file": name, "pillow": "refused", "why": str(e)})
        return
    a = np.asarray(im)
    with open(path + ".rgb", "wb") as f:
        f.write(a.tobytes())
    manifest.append({"file": name, "pillow": "ok", "w": im.width, "h": im.height, "rgb": name + ".rgb"})


# colour modes Pillow converts in its own ways
vals16 = [int(v) for v in rng.integers(0, 65536, 48)] + [0, 255, 256, 300, 65535, 32768]
w16 = len(vals16)
raw_png("gray16.png", w16, 1, 0, 16, [b"".join(struct.pack(">H", v) for v in vals16)])
raw_png("rgb16.png", w16, 1, 2, 16, [b"".join(struct.pack(">HHH", v, 65535 - v, v // 3) for v in vals16)])
raw_png("rgba16.png", w16, 1, 6, 16, [b"".join(struct.pack(">HHHH", v, v // 2, 65535 - v, v) for v in vals16)])
raw_png("la16.png", w16, 1, 4, 16, [b"".join(struct.pack(">HH", v, 65535 - v) for v in vals16)])
for n in ["gray16.png", "rgb16.png", "rgba16.png", "la16.png"]:
    record(n)

rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(os.path.join(OUT, "palette.png"))
p = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
p.info["transparency"] = 3
p.save(os.path.join(OUT, "palette_trns.png"), transparency=3)
Image.fromarray(rgb[:, :, 0]).save(os.path.join(OUT, "gray8.png"))
Image.fromarray(np.dstack([rgb[:, :, 0], rgb[:, :, 1]])).convert("LA").save(os.path.join(OUT, "la8.png"))
Image.fromarray(np.dstack([rgb, rgb[:, :, :1]])).save(os.path.join(OUT, "rgba8.png"))
Image.fromarray((rgb[:, :, 0] > 127).astype(np.uint8) * 255).convert("1").save(os.path.join(OUT, "bilevel.png"))
for n in ["palette.png", "palette_trns.png", "gray8.png", "la8.png", "rgba8.png", "bilevel.png"]:
    record(n)

# damaged PNGs and JPEGs: Pillow's verdict is the reference (pixels of JPEGs are decoder-specific
# and not compared)
smooth = (np.add.outer(np.arange(48), np.arange(64))[:, :, None] * np.array([2, 3, 1]) % 256).astype(np.uint8)
smooth = (smooth.astype(int) + rng.integers(0, 40, smooth.shape)).clip(0, 255).astype(np.uint8)
Image.fromarray(smooth).save(os.path.join(OUT, "ok.png"))
Image.fromarray(smooth).save(os.path.join(OUT, "ok.jpg"), quality=90)
Image.fromarray(smooth).save(os.path.join(OUT, "ok_progressive.jpg"), quality=85, progressive=True)
Image.fromarray(smooth).convert("CMYK").save(os.path.join(OUT, "cmyk.jpg"), quality=95)
png = open(os.path.join(OUT, "ok.png"), "rb").read()
jpg = open(os.path.join(OUT, "ok.jpg"), "rb").read()
damaged = {
    "png_half.png": png[: len(png) // 2],
    "png_no_iend.png": png[:-12],
    "jpg_half.jpg": jpg[: len(jpg) // 2],
    "jpg_no_eoi.jpg": jpg[:-2],
    "jpg_header_only.jpg": jpg[: jpg.find(b"\xff\xda") + 14],
}
sos = jpg.find(b"\xff\xda")
for seed, n in enumerate([5, 20, 50, 200, 500, 2000]):
    random.seed(seed)
    g = bytearray(jpg)
    for _ in range(n):
        g[random.randint(sos + 20, len(jpg) - 3)] = random.randint(0, 255)
    damaged[f"jpg_garbled{seed}.jpg"] = bytes(g)
for name, b in damaged.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b)
for n in ["ok.png", "ok.jpg", "ok_progressive.jpg", "cmyk.jpg"] + list(damaged):
    record(n)


def center_crop_arr(pil_image, image_size):
    # as upstream guided_diffusion/image_datasets.py
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size]


# extreme aspect ratios: the crop-only resize must equal the full resize's centre
for name, (w, h), size in [("tall_1x3000.png", (1, 3000), 16), ("wide_2000x3.png", (2000, 3), 8), ("strip_7x900.png", (7, 900), 12)]:
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(a).save(os.path.join(OUT, name))
    c = center_crop_arr(Image.open(os.path.join(OUT, name)).convert("RGB"), size)
    with open(os.path.join(OUT, f"{name}.crop{size}.rgb"), "wb") as f:
        f.write(c.tobytes())
    manifest.append({"file": name, "crop": size, "rgb": f"{name}.crop{size}.rgb"})

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print(json.dumps([(m["file"], m.get("pillow", "crop")) for m in manifest]))
