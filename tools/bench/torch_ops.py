"""PyTorch CPU timings for the shapes of benches/kernels.rs, same thread count, same metric.

    python tools/bench/torch_ops.py [--threads 2]

Prints the same lines as `cargo bench --bench kernels` so the ratio can be read off one run.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from guided_diffusion.unet import QKVAttentionLegacy


def timeit(f):
    f()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < 2.0 and len(times) < 200):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def report(name, s, flops=None, nbytes=None):
    rate = f"{flops / s / 1e9:8.1f} GFLOP/s" if flops else f"{nbytes / s / 1e9:8.1f} GB/s"
    print(f"{name:<44} {s * 1e3:9.3f} ms  {rate}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__} CPU, {torch.get_num_threads()} threads (median of runs)")
    with torch.no_grad():
        for c, hw in [(256, 64), (128, 256)]:
            x = torch.randn(1, c, hw, hw)
            w = torch.randn(c, c, 3, 3)
            b = torch.randn(c)
            flops = 2.0 * c * c * 9 * hw * hw
            report(f"conv2d_3x3 {c}->{c} @{hw}x{hw}", timeit(lambda: F.conv2d(x, w, b, padding=1)), flops=flops)
            if c == 256:
                gy = torch.randn(1, c, hw, hw)
                report(f"conv2d_x_backward_3x3 {c}->{c} @{hw}x{hw}",
                       timeit(lambda: torch.nn.grad.conv2d_input(x.shape, w, gy, padding=1)), flops=flops)
        # the weight gradient (benches/kernels.rs conv2d_w_backward rows): the paper's 256 channels,
        # and the demo's training shapes at batch 2
        for n, c, hw in [(1, 256, 64), (2, 32, 64), (2, 64, 32)]:
            x = torch.randn(n, c, hw, hw)
            gy = torch.randn(n, c, hw, hw)
            flops = 2.0 * n * c * c * 9 * hw * hw
            report(f"conv2d_w_backward_3x3 {c}->{c} @{hw}x{hw} batch {n}",
                   timeit(lambda: torch.nn.grad.conv2d_weight(x, (c, c, 3, 3), gy, padding=1)), flops=flops)
        x = torch.randn(1, 256, 64, 64)
        g, be = torch.randn(256), torch.randn(256)
        report("group_norm+silu 256ch @64x64", timeit(lambda: F.silu(F.group_norm(x, 32, g, be, 1e-5))),
               nbytes=2.0 * 4 * 256 * 64 * 64)
        # PaDiM as the official code computes it: full inverse covariances [4096, 500, 500]
        # (4.1 GB); GB/s counts the bytes of ran's packed factors, so the ratio is per job done
        d, p = 500, 64 * 64
        prec = torch.randn(d, d)
        prec = (prec @ prec.T / d).expand(p, d, d).contiguous()
        delta = torch.randn(p, 1, d)
        report("mahalanobis 500 dims @64x64", timeit(lambda: torch.bmm(torch.bmm(delta, prec), delta.transpose(1, 2)).clamp_min(0).sqrt()),
               nbytes=4.0 * p * d * (d + 1) / 2)
        del prec
        x = torch.randn(1, 1024, 64, 64)
        ids = torch.arange(0, 1000, 2)
        report("gather_channels 1024 -> 500 @64x64", timeit(lambda: torch.index_select(x, 1, ids)), nbytes=2.0 * 4 * 500 * 64 * 64)
        qkv = torch.randn(1, 3 * 256, 1024)
        att = QKVAttentionLegacy(4)
        report("attention_legacy 4 heads x 64 dims, 1024 tokens", timeit(lambda: att(qkv)),
               flops=4.0 * 4.0 * 1024 * 1024 * 64)


if __name__ == "__main__":
    main()
