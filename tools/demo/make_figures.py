"""README figures from the demo's outputs (run after `ran detect --demo` and `ran reconstruct --demo`
in the repository root): docs/demo.png — per category (rows) the input and its overlay for a
normal image and the four defect kinds; docs/reconstruct_demo.png — per defect the frames strip
of the gradient denoising and |x0 − x̂|. Images are scaled 2× (nearest) for visibility.

  python tools/demo/make_figures.py
"""
import glob
import json
import os

from PIL import Image

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CATS = ["brick", "moon", "gravel"]
KINDS = ["good", "scratch", "spot", "patch", "hole"]


def grid(rows, gap=4):
    w = max(sum(i.size[0] for i in r) + gap * (len(r) - 1) for r in rows)
    h = sum(r[0].size[1] for r in rows) + gap * (len(rows) - 1)
    out = Image.new("RGB", (w, h), "white")
    y = 0
    for r in rows:
        x = 0
        for im in r:
            out.paste(im, (x, y))
            x += im.size[0] + gap
        y += r[0].size[1] + gap
    return out.resize((out.size[0] * 2, out.size[1] * 2), Image.NEAREST)


def main():
    # the overlay of each input, by the input's path
    results = json.load(open(os.path.join(ROOT, "ran-demo", "results.json")))["images"]
    overlay = {"/".join([r["category"]] + os.path.normpath(r["file"]).split(os.sep)[-2:]): r["overlay"] for r in results}
    rows = []
    for c in CATS:
        r = []
        for k in KINDS:
            r.append(Image.open(os.path.join(ROOT, "examples/demo", c, "test", k, "000.png")).convert("RGB"))
            r.append(Image.open(os.path.join(ROOT, overlay[f"{c}/{k}/000.png"])).convert("RGB"))
        rows.append(r)
    grid(rows).save(os.path.join(ROOT, "docs/demo.png"))
    rows = []
    for k in KINDS[1:]:
        stem = glob.glob(os.path.join(ROOT, "ran-demo-reconstruct", f"*_{k}_000_frames.png"))[0][: -len("frames.png")]
        rows.append([Image.open(stem + "frames.png").convert("RGB"), Image.open(stem + "diff_heatmap.png").convert("RGB")])
    grid(rows, gap=2).save(os.path.join(ROOT, "docs/reconstruct_demo.png"))


if __name__ == "__main__":
    main()
