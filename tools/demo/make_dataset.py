"""The demo data set: MVTec-AD layout, made reproducibly from textures that ship inside the
scikit-image wheel (brick, moon, gravel; 512² grayscale), at 64² so CPU runs stay short.

  <category>/train/good/*.png        crops of the top three quarters of the texture
  <category>/test/good/*.png         crops of the unseen bottom quarter
  <category>/test/<defect>/*.png     the same with a synthetic defect:
      scratch (a thin bright or dark line), spot (a coloured disc), patch (a square of a foreign
      texture, grass by default, pasted in), hole (a dark flat ellipse)
  <category>/ground_truth/<defect>/*_mask.png   0/255 masks

Run:  python tools/demo/make_dataset.py [--out examples/demo] [--seed 7]

The first demo set (--cats brick,grass,gravel --patch-from next: each category's patches from the
next one) is the same command with those flags; README.md compares the two.
"""
import argparse
import os

import numpy as np
from PIL import Image, ImageDraw
from skimage import data

CATS = ["brick", "moon", "gravel"]
SIZE = 64


def crops(tex, rows, n, rng):
    out = []
    for _ in range(n):
        y = rng.integers(rows[0], rows[1] - 2 * SIZE + 1)
        x = rng.integers(0, tex.shape[1] - 2 * SIZE + 1)
        c = tex[y:y + 2 * SIZE, x:x + 2 * SIZE]
        # 2× box down-sampling: the texture's grain at 64² stays visible
        c = c.reshape(SIZE, 2, SIZE, 2).mean(axis=(1, 3))
        out.append(np.stack([c, c, c], -1).astype(np.uint8))
    return out


def defect(img, kind, other, rng):
    im = Image.fromarray(img.copy())
    mask = Image.new("L", (SIZE, SIZE), 0)
    d, m = ImageDraw.Draw(im), ImageDraw.Draw(mask)
    if kind == "scratch":
        x0, y0 = rng.integers(4, 20, size=2)
        x1, y1 = rng.integers(44, 60, size=2)
        v = int(rng.choice([20, 235]))
        d.line([(x0, y0), (x1, y1)], fill=(v, v, v), width=2)
        m.line([(x0, y0), (x1, y1)], fill=255, width=2)
    elif kind == "spot":
        cx, cy, r = rng.integers(16, 48), rng.integers(16, 48), rng.integers(5, 9)
        colour = tuple(int(c) for c in rng.choice([[200, 60, 40], [60, 160, 60], [50, 80, 200]]))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        m.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == "patch":
        s = int(rng.integers(12, 20))
        x, y = rng.integers(4, SIZE - s - 4, size=2)
        arr = np.array(im)
        arr[y:y + s, x:x + s] = other[y:y + s, x:x + s]
        im = Image.fromarray(arr)
        m.rectangle([x, y, x + s - 1, y + s - 1], fill=255)
    else:  # hole
        cx, cy = rng.integers(16, 48, size=2)
        rx, ry = rng.integers(5, 10), rng.integers(4, 8)
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(30, 30, 30))
        m.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return np.array(im), np.array(mask)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "examples", "demo"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--train", type=int, default=80)
    ap.add_argument("--cats", default=",".join(CATS))
    ap.add_argument("--patch-from", default="grass", help="texture the patches come from: a scikit-image name, or next (the next category)")
    args = ap.parse_args()
    cats = args.cats.split(",")
    rng = np.random.default_rng(args.seed)
    names = set(cats) | ({args.patch_from} if args.patch_from != "next" else set())
    tex = {c: getattr(data, c)().astype(np.float64) for c in names}
    for ci, c in enumerate(cats):
        root = os.path.join(args.out, c)
        t = tex[c]
        for i, im in enumerate(crops(t, (0, 384), args.train, rng)):
            os.makedirs(os.path.join(root, "train", "good"), exist_ok=True)
            Image.fromarray(im).save(os.path.join(root, "train", "good", f"{i:03d}.png"))
        tests = crops(t, (384, 512), 8 + 16, rng)
        os.makedirs(os.path.join(root, "test", "good"), exist_ok=True)
        for i, im in enumerate(tests[:8]):
            Image.fromarray(im).save(os.path.join(root, "test", "good", f"{i:03d}.png"))
        src = cats[(ci + 1) % len(cats)] if args.patch_from == "next" else args.patch_from
        other = crops(tex[src], (384, 512), 16, rng)
        for j, kind in enumerate(["scratch", "spot", "patch", "hole"]):
            for k in range(4):
                im, mask = defect(tests[8 + 4 * j + k], kind, other[4 * j + k], rng)
                for sub, arr in (("test", im), ("ground_truth", mask)):
                    os.makedirs(os.path.join(root, sub, kind), exist_ok=True)
                name = f"{k:03d}.png"
                Image.fromarray(im).save(os.path.join(root, "test", kind, name))
                Image.fromarray(mask).save(os.path.join(root, "ground_truth", kind, f"{k:03d}_mask.png"))
    print(f"wrote {args.out}: {len(cats)} categories, {args.train} train / 24 test images each, seed {args.seed}")


if __name__ == "__main__":
    main()
