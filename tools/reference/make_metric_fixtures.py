"""Reference values for ran's evaluation metrics, from independent code:
- pixel and image AUROC: scikit-learn's roc_auc_score (pinned in requirements.txt);
- the anomaly_diff repository's own PRO variant (scikit-learn roc_curve thresholds; see
  pro_official_repo below);
- AU-PRO to FPR 0.3: the MVTec AD official definition (8-connected components with
  scipy.ndimage.label, FPR over all anomaly-free pixels, PRO = mean overlap over all components,
  tied scores merged, (0,0) and (1,1) added, trapezoid to 0.3 with linear interpolation, / 0.3),
  written here from that definition.

Cases: many small and large regions, regions touching diagonally (8-connectivity), heavy ties
(quantised scores), empty masks, all-normal images, a perfect and an inverted detector.
Writes tests/fixtures/metrics.safetensors: "<case>.scores" [N,H,W], "<case>.masks" [N,H,W] (0/1),
"<case>.image_scores" [N]; metadata "<case>" JSON {pixel_auroc, au_pro, pro_official_repo, image_auroc}.
Run:  python tools/reference/make_metric_fixtures.py
"""
import json
import os
from bisect import bisect

import numpy as np
import torch
from safetensors.torch import save_file
from scipy.ndimage import label
from sklearn.metrics import roc_auc_score

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "metrics.safetensors")
rng = np.random.default_rng(20231007)


def trapezoid(x, y, x_max):
    x, y = np.asarray(x, float), np.asarray(y, float)
    correction = 0.0
    if x_max not in x:
        ins = bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x, y = x[mask], y[mask]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def au_pro(scores, masks, limit=0.3):
    structure = np.ones((3, 3), dtype=int)
    fp_change = np.zeros(masks.shape, dtype=np.float64)
    pro_change = np.zeros(masks.shape, dtype=np.float64)
    n_ok = 0
    n_regions = 0
    for i in range(len(masks)):
        lab, n = label(masks[i], structure)
        n_regions += n
        ok = masks[i] == 0
        n_ok += ok.sum()
        fp_change[i][ok] = 1.0
        for r in range(1, n + 1):
            region = lab == r
            pro_change[i][region] = 1.0 / region.sum()
    s = scores.ravel()
    order = np.argsort(s, kind="mergesort")[::-1]
    s_sorted = s[order]
    fprs = np.cumsum(fp_change.ravel()[order]) / n_ok
    pros = np.cumsum(pro_change.ravel()[order]) / n_regions
    keep = np.append(np.diff(s_sorted) != 0, True)
    fprs, pros = np.clip(fprs[keep], 0, 1), np.clip(pros[keep], 0, 1)
    fprs = np.concatenate(([0.0], fprs, [1.0]))
    pros = np.concatenate(([0.0], pros, [1.0]))
    return trapezoid(fprs, pros, limit) / limit


def pro_official_repo(scores, masks, limit=0.3):
    """The anomaly_diff repository's own PRO (mvtec_tools/mvtec_evaluate.py `pro`, which produced
    the paper's numbers), re-written from its behaviour: scikit-learn roc_curve thresholds with
    FPR <= 0.3, subsampled to about 1000, per threshold the mean coverage (score >= threshold)
    over all 8-connected regions, trapezoids from (0, 0), then a rectangle at the last PRO to 0.3."""
    from sklearn.metrics import roc_curve
    fpr, _, thr = roc_curve(masks.ravel(), scores.ravel())
    keep = fpr <= limit
    vthr, vfpr = thr[keep], fpr[keep]
    if len(vfpr) > 1000:
        idx = np.arange(len(vfpr), step=len(vfpr) // 1000)
        vthr, vfpr = vthr[idx], vfpr[idx]
    regions = []
    for i in range(len(masks)):
        lab, n = label(masks[i], np.ones((3, 3), dtype=int))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    pros = np.array([np.mean([np.logical_and(reg, scores[i] >= t).sum() / reg.sum() for i, reg in regions]) for t in vthr])
    area, x0, y0 = 0.0, 0.0, 0.0
    for x, y in zip(vfpr, pros):
        area += 0.5 * (x - x0) * (y0 + y)
        x0, y0 = x, y
    area += (limit - x0) * y0
    return area / limit


def blobs(n, h, w, k, max_r):
    m = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n):
        for _ in range(rng.integers(0, k + 1)):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(0, max_r + 1)
            yy, xx = np.ogrid[:h, :w]
            m[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return m


def case(name, scores, masks, image_scores=None):
    scores = scores.astype(np.float32)
    if image_scores is None:
        image_scores = np.sort(scores.reshape(len(scores), -1), axis=1)[:, -8:].mean(axis=1)
    labels = masks.reshape(len(masks), -1).max(axis=1)
    meta = {"pixel_auroc": roc_auc_score(masks.ravel(), scores.ravel()), "au_pro": au_pro(scores, masks),
            "pro_official_repo": pro_official_repo(scores, masks),
            "image_auroc": roc_auc_score(labels, image_scores) if 0 < labels.sum() < len(labels) else None}
    cases[name] = (scores, masks, image_scores.astype(np.float32), meta)


cases = {}
m = blobs(12, 32, 32, 4, 6)
m[0] = 0
m[1] = 0  # all-normal images
noise = rng.normal(size=m.shape)
case("blobs_noisy", noise + 1.5 * m, m)
case("blobs_quantised_ties", np.round(noise + 1.2 * m), m)  # heavy ties
small = blobs(8, 24, 24, 12, 1)
small[3] = 0
case("many_small_regions", rng.normal(size=small.shape) + 2.0 * small, small)
diag = np.zeros((3, 16, 16), dtype=np.uint8)
diag[0, 2, 2] = diag[0, 3, 3] = diag[0, 4, 4] = 1  # one region under 8-connectivity
diag[1, 8:12, 8:12] = 1
diag[1, 12, 12] = 1
case("diagonal_regions", rng.normal(size=diag.shape) + diag, diag)
case("perfect", m + 0.01 * rng.random(size=m.shape), m)
case("inverted", -(m + 0.01 * rng.random(size=m.shape)), m)
case("constant_scores", np.zeros(m.shape), m)
big = blobs(16, 64, 64, 6, 10)
case("large_subsampled", rng.normal(size=big.shape) + 0.5 * big, big)  # > 1000 ROC thresholds below FPR 0.3

tensors, meta = {}, {}
for name, (s, mk, im, me) in cases.items():
    tensors[f"{name}.scores"] = torch.from_numpy(s).contiguous()
    tensors[f"{name}.masks"] = torch.from_numpy(mk.astype(np.uint8)).contiguous()
    tensors[f"{name}.image_scores"] = torch.from_numpy(im).contiguous()
    meta[name] = json.dumps({k: (None if v is None else float(v)) for k, v in me.items()})
    print(name, me)
save_file(tensors, OUT, metadata=meta)
