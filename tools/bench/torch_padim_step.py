"""PyTorch CPU side of benches/padim.rs: one gradient step of the paper's gradient denoising with
autograd, as the official code computes it — torchvision wide_resnet50_2 (random weights, eval)
to layer3 at 256², layers 2/3 bilinearly resized to 64², concatenated, index_select of 500
channels, the Mahalanobis map with full inverse covariances [4096, 500, 500], bilinear to 256²,
L = mean, L.backward(). Also the forward alone. Same thread count; prints median times.

    python tools/bench/torch_padim_step.py --threads 2
"""
import argparse
import resource
import time

import torch
import torch.nn.functional as F
from torchvision.models import wide_resnet50_2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = wide_resnet50_2().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    s, d = 256, 500
    p = (s // 4) ** 2
    idx = torch.randperm(1792)[:d]
    mean = torch.zeros(p, d)
    lp = torch.tril(torch.full((d, d), 1e-3)) + 0.5 * torch.eye(d)
    prec = (lp.T @ lp).expand(p, d, d).contiguous()  # [4096, 500, 500], 4.1 GB
    x0 = torch.randn(1, 3, s, s)

    def map_of(x):
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        l1 = net.layer1(h)
        l2 = net.layer2(l1)
        l3 = net.layer3(l2)
        e = torch.cat([l1, F.interpolate(l2, size=l1.shape[-2:], mode="bilinear", align_corners=False),
                       F.interpolate(l3, size=l1.shape[-2:], mode="bilinear", align_corners=False)], 1)
        e = torch.index_select(e, 1, idx)
        delta = e.reshape(1, d, p).permute(2, 0, 1) - mean[:, None]  # [p, 1, d]
        m = torch.bmm(torch.bmm(delta, prec), delta.transpose(1, 2)).reshape(1, 1, s // 4, s // 4).clamp_min(0).sqrt()
        return F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False)

    def fwd():
        with torch.no_grad():
            map_of(x0)

    def step():
        x = x0.clone().requires_grad_(True)
        map_of(x).mean().backward()
        x.grad.std()

    def backbone():
        x = x0.clone().requires_grad_(True)
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        l1 = net.layer1(h)
        l2 = net.layer2(l1)
        l3 = net.layer3(l2)
        (l1.sum() + l2.sum() + l3.sum()).backward()

    def med(f):
        f()
        ts = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return sorted(ts)[len(ts) // 2]

    tf, ts, tb = med(fwd), med(step), med(backbone)
    print(f"torch {torch.__version__}, {args.threads} threads: forward (map) {tf:.3f} s, gradient step (fwd+bwd) {ts:.3f} s, "
          f"backbone fwd+bwd only {tb:.3f} s, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
