"""The machine's practical f32 ceiling for `ran bench --ceiling`: the best rate of PyTorch's vendor
SGEMM (torch.mm, MKL/oneDNN on x86) on square n×n products at the given thread count.

    python tools/bench/torch_ceiling.py [--threads 2] [--n 4096] [--json]
"""
import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    a, b = torch.rand(args.n, args.n), torch.rand(args.n, args.n)
    torch.mm(a, b)
    best = min(_time(lambda: torch.mm(a, b)) for _ in range(args.reps))
    gflops = 2 * args.n ** 3 / best / 1e9
    print(f"torch {torch.__version__} SGEMM {args.n}^3 on {torch.get_num_threads()} threads: {gflops:.1f} GFLOP/s (best of {args.reps})")
    if args.json:
        print(json.dumps({"gflops": gflops, "threads": torch.get_num_threads(), "n": args.n}))


def _time(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
