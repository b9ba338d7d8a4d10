"""Shared by the PyTorch sides of `ran bench` (torch_unet.py, torch_effnet.py, torch_wrn50_grad.py,
torch_detect.py, torch_conv.py): the same options as ran's (--iters, --warmup, --threads, --json,
--quiet, --ceiling), the same timing loop, and the same report: the times in words, and with
--json one JSON object as the last line with the fields `ran bench --json` prints (median_ms,
min_ms, max_ms, gflop, threads, commit, ...), so tools/bench/compare.sh can pair them.

FLOPs come from torch.utils.flop_counter.FlopCounterMode (matrix products and convolutions, 2 per
multiply-add), counted in one extra untimed run before the warm-up.
"""
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools", "reference"))
# guided_diffusion's torch.cuda.amp decorators warn on import; nothing to do with the CPU timing
warnings.filterwarnings("ignore", category=FutureWarning)

PAPER_FLAGS = ("--image_size 256 --num_channels 256 --num_res_blocks 2 --attention_resolutions 32,16,8 --num_head_channels 64 "
               "--resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --num_classes 15 "
               "--channel_mult 1,1,2,2,4,4")


def add_common(ap):
    ap.add_argument("--iters", type=int, default=5, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads [default: torch's]")
    ap.add_argument("--ceiling", type=float, default=None, help="the machine's f32 GFLOP/s (percentages)")
    ap.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (benches/gpu.sh: the same GPU as ran)")


def setup(args):
    if args.iters < 1:
        sys.exit("error: --iters must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.dev = torch.device(args.device)
    if args.dev.type == "cuda":
        # f32 means f32 here, as in ran's kernels: no TF32 unless a script asks for it
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def commit():
    def git(*a):
        r = subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    h = git("rev-parse", "--short=12", "HEAD")
    if h is None:
        return "unknown commit"
    return h + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


CPU_MS = {"user_ms": [], "sys_ms": []}


def measure(label, args, f, count=None):
    """(times in ms of the timed runs, FLOPs of one run); f runs the workload once, `count` (default
    f) is the run whose FLOPs are counted (the eager model of a torch.compile'd one). The process's
    user and system CPU time of each timed run go to CPU_MS (as ran's user_ms / sys_ms)."""
    import resource
    if getattr(args, "dev", None) is not None and args.dev.type == "cuda":
        # a GPU works asynchronously: each run is timed to its completion
        g = f

        def f():
            g()
            torch.cuda.synchronize()
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            (count or f)()
        flops = fc.get_total_flops()
    times = []
    for i in range(args.warmup + args.iters):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        f()
        ms = (time.perf_counter() - t0) * 1e3
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        warm = i < args.warmup
        k, n = (i + 1, args.warmup) if warm else (i + 1 - args.warmup, args.iters)
        if not args.quiet:
            print(f"[torch {label}] {'warm-up' if warm else 'iteration'} {k}/{n}: {ms:.1f} ms", file=sys.stderr, flush=True)
        if not warm:
            times.append(ms)
            CPU_MS["user_ms"].append((r1.ru_utime - r0.ru_utime) * 1e3)
            CPU_MS["sys_ms"].append((r1.ru_stime - r0.ru_stime) * 1e3)
    return times, flops


def report(args, bench, config, batch, times, flops, extra=None):
    import resource
    med, lo, hi = statistics.median(times), min(times), max(times)
    gflop = flops / 1e9
    threads = torch.get_num_threads()
    rate = lambda ms: gflop / (ms / 1e3)  # noqa: E731
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__} bench {bench}: {config} (batch {batch}, {len(times)} iterations after {args.warmup} warm-up), {threads} threads")
    print(f"  median {med:.2f} ms   min {lo:.2f} ms   max {hi:.2f} ms")
    pct = f" = {100 * rate(lo) / args.ceiling:.0f}% of the ceiling {args.ceiling:.0f} GFLOP/s" if args.ceiling else ""
    print(f"  {gflop:.3f} GFLOP per iteration: {rate(med):.1f} GFLOP/s at the median, {rate(lo):.1f} at the min{pct}")
    print(f"  peak RSS {rss:.0f} MB (the whole process)")
    out = {"bench": bench, "config": config, "batch": batch, "iters": len(times), "warmup": args.warmup, "times_ms": times,
           "median_ms": med, "min_ms": lo, "max_ms": hi, "gflop": gflop, "gflops_median": rate(med), "gflops_best": rate(lo),
           "ceiling_gflops": args.ceiling, "pct_of_ceiling_best": 100 * rate(lo) / args.ceiling if args.ceiling else None,
           "user_ms": CPU_MS["user_ms"], "sys_ms": CPU_MS["sys_ms"], "threads": threads,
           "device": f"torch {torch.__version__} " + (torch.cuda.get_device_name(args.dev) if args.dev.type == "cuda" else "cpu"), "commit": commit(), "peak_rss_mb": rss, "side": "torch"}
    out.update(extra or {})
    if args.json:
        print(json.dumps(out, sort_keys=True))
