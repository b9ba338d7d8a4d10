"""Reference for ran's whole scoring pipeline (docs/method.md §1–§3), built from the upstream packages with
identical noise: guided_diffusion (SpacedDiffusion "250", q_sample, p_mean_variance with x̂0
clipped, q_posterior, normal_kl), the paper's feature head, and efficientnet-pytorch.

Model: tests/fixtures/unet_guided_paperlike.safetensors (class-conditional, learned sigma, head of
272 channels). Extractor: an EfficientNet with B4's width (so its taps give 24+32+56+160 = 272
channels) and depth 0.25, padded for 380, random weights; written to
tests/fixtures/effnet_b4w.safetensors (the blocks after the last tap omitted).

Pipeline, per image (the official code runs batch 1: its z-score is per image):
  for k in (5, 50, 100): x_k = q_sample(x0, k, noise_k)
    KL_k = KL(q(x_{k-1}|x_k,x0) || p(x_{k-1}|x_k)) in bits [3,H,W]; vb_k = (KL_k - mean)/std (unbiased)
    F_k = head(UNet(x_k, t_feat)) with t_feat = k (the official quirk) or τ_k
    d_k = mean_c (F_k - EffNet(x0) at S×S)², bilinear to H×W
  kl_map = mean_c(Σ vb_k / 3); feat_map = Σ d_k / 3; score = α·feat + (1-α)·kl (α = 0.5);
  image_score = mean of the top 64 pixels.
Writes tests/fixtures/detect_paperlike.safetensors: x0, noise_k5/50/100, y, and kl_map, feat_map,
feat_map_tau (the τ_k variant), score_map, image_score.
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import round_repeats
from safetensors.torch import load_file, save_file

from guided_diffusion import gaussian_diffusion as gd
from guided_diffusion.script_util import create_gaussian_diffusion
from upstream_effnet import features, randomise
from upstream_unet import FeatHead, forward, make_model, parse_flags

HERE = os.path.dirname(__file__)
FIX = os.path.join(HERE, "..", "..", "tests", "fixtures")
gen = torch.Generator().manual_seed(20231005)
KS = (5, 50, 100)


def stage_ends(model):
    ends, i = [], -1
    for a in model._blocks_args:
        i += round_repeats(a.num_repeat, model._global_params)
        ends.append(i)
    return ends


def effnet():
    m = EfficientNet.from_name("efficientnet-b4", depth_coefficient=0.25, image_size=380).eval()
    randomise(m, gen)
    ends = stage_ends(m)
    return m, [ends[0], ends[1], ends[2], ends[4]]


def main():
    st = load_file(os.path.join(FIX, "unet_guided_paperlike.safetensors"))
    from safetensors import safe_open
    flags = safe_open(os.path.join(FIX, "unet_guided_paperlike.safetensors"), "pt").metadata()["model_flags"]
    f = parse_flags(flags)
    feat_shape = int(f.get("feat_shape", 16))
    data = {"x", "t", "y", "out", "feat"}
    sd = {k: v.float() for k, v in st.items() if k not in data and not k.startswith("feat_rec1.")}
    model = make_model(flags, st["label_emb.weight"].shape[0]).float().eval()
    model.load_state_dict(sd)
    head = FeatHead(st["feat_rec1.0.weight"].shape[0]).float().eval()
    head.load_state_dict({k: v.float() for k, v in st.items() if k.startswith("feat_rec1.")})
    eff, taps = effnet()
    diff = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear", timestep_respacing="250")

    n, hw = 2, 16
    x0 = torch.rand(n, 3, hw, hw, generator=gen) * 2 - 1
    y = torch.randint(0, st["label_emb.weight"].shape[0], (n,), generator=gen)
    noises = {k: torch.randn(n, 3, hw, hw, generator=gen) for k in KS}
    with torch.no_grad():
        tgt = features(eff, x0, taps, feat_shape)
        vb_sum = torch.zeros(n, 3, hw, hw)
        d_sum = {"index": torch.zeros(n, 1, hw, hw), "tau": torch.zeros(n, 1, hw, hw)}
        for k in KS:
            t = torch.full((n,), k, dtype=torch.long)
            xt = diff.q_sample(x0, t, noise=noises[k])
            out = diff.p_mean_variance(model, xt, t, clip_denoised=True, model_kwargs={"y": y})
            tm, _, tlv = diff.q_posterior_mean_variance(x0, xt, t)
            kl = gd.normal_kl(tm, tlv, out["mean"], out["log_variance"]) / np.log(2.0)
            for i in range(n):  # per image, as the official batch-1 loop
                vb_sum[i] += (kl[i] - kl[i].mean()) / kl[i].std()
            for mode, tf in (("index", t.float()), ("tau", torch.tensor([diff.timestep_map[k]] * n, dtype=torch.float32))):
                _, feat = forward(model, head, xt, tf, y, feat_shape)
                d = ((feat - tgt) ** 2).mean(dim=1, keepdim=True)
                d_sum[mode] += F.interpolate(d, size=(hw, hw), mode="bilinear", align_corners=False)
        kl_map = (vb_sum / 3).mean(dim=1)
        feat_map = (d_sum["index"] / 3)[:, 0]
        feat_tau = (d_sum["tau"] / 3)[:, 0]
        score = 0.5 * feat_map + 0.5 * kl_map
        image_score = score.reshape(n, -1).topk(64, dim=1).values.mean(dim=1)

    ew = {k: v.half().contiguous() for k, v in eff.state_dict().items()
          if v.is_floating_point() and not k.startswith(("_conv_head", "_bn1.", "_fc."))
          and not (k.startswith("_blocks.") and int(k.split(".")[1]) > taps[-1])}
    save_file(ew, os.path.join(FIX, "effnet_b4w.safetensors"),
              metadata={"kind": "effnet_weights", "width": "1.4", "depth": "0.25", "image_size": "380", "taps": json.dumps(taps)})
    tensors = dict(x0=x0, y=y.float(), kl_map=kl_map, feat_map=feat_map, feat_map_tau=feat_tau, score_map=score, image_score=image_score)
    tensors.update({f"noise_k{k}": v for k, v in noises.items()})
    meta = {"kind": "detect", "diffusion_flags": "--diffusion_steps 1000 --noise_schedule linear --timestep_respacing 250",
            "timesteps": "5,50,100", "alpha": "0.5", "topk": "64", "feature_timestep": "index",
            "generator": "tools/reference/make_detect_fixtures.py", "torch": torch.__version__}
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, os.path.join(FIX, "detect_paperlike.safetensors"), metadata=meta)
    print(f"taps {taps}, target {tuple(tgt.shape)}, kl_map {tuple(kl_map.shape)}, image_score {image_score.tolist()}")


if __name__ == "__main__":
    main()
