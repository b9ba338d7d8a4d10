"""Alternating A/B rounds of one `ran bench` command under several environments (the CPU
backend's switches: RAN_CPU_ON_WORKERS, RAN_CPU_BANDS, RAN_CPU_DEPTHWISE, RAN_CPU_SIMD, ...), for
comparing levers on a loaded machine: each round runs every variant once, back to back, so load
swings hit all of them alike. Prints per variant the least and median wall time per iteration and
the user + system CPU time per iteration (summed over the timed iterations of a run, divided by
their count; /proc's 10 ms ticks), least and median over the rounds, and the ratio of each to the
first variant's.

    python tools/bench/ab_env.py --rounds 5 --variant whole:RAN_CPU_BANDS=0 --variant bands: \\
        --variant workers:RAN_CPU_ON_WORKERS=1 [--variant old@/tmp/ran-old:] -- effnet --variant b4 --image-size 256 --iters 10 --threads 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def parse_variant(s, ran):
    """NAME[@BINARY]:K=V,K=V"""
    name, _, envs = s.partition(":")
    name, _, binary = name.partition("@")
    env = {}
    for kv in filter(None, envs.split(",")):
        k, _, v = kv.partition("=")
        env[k] = v
    return name, binary or ran, env


def run(ran, args, env):
    full = dict(os.environ)
    full.update(env)
    out = subprocess.run([ran, "bench", *args, "--json", "--quiet"], env=full, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ran bench failed ({env}): {out.stderr}")
    j = json.loads(out.stdout.strip().splitlines()[-1])
    n = len(j.get("user_ms") or [])
    cpu = (sum(j["user_ms"]) + sum(j["sys_ms"])) / n if n else float("nan")
    return j["min_ms"], j["median_ms"], cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ran", default="target/release/ran")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variant", action="append", required=True, help="NAME[@BINARY]:K=V,K=V (empty: the defaults; BINARY: another ran than --ran)")
    ap.add_argument("bench", nargs=argparse.REMAINDER, help="-- then the `ran bench` arguments")
    a = ap.parse_args()
    args = a.bench[1:] if a.bench[:1] == ["--"] else a.bench
    variants = [parse_variant(v, a.ran) for v in a.variant]
    res = {name: [] for name, _, _ in variants}
    for r in range(a.rounds):
        for name, binary, env in variants:
            res[name].append(run(binary, args, env))
            print(f"round {r + 1} {name}: min {res[name][-1][0]:.1f} ms, median {res[name][-1][1]:.1f} ms, cpu {res[name][-1][2]:.1f} ms", file=sys.stderr)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"ran bench {' '.join(args)}; {a.rounds} alternating rounds; load average after: {' '.join(load)}")
    print("| variant | binary, env | wall min (ms) | wall median of medians (ms) | CPU/iter least (ms) | CPU/iter median (ms) | ratio (wall min) | ratio (CPU median) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    base = None
    for name, binary, env in variants:
        rs = res[name]
        wmin = min(x[0] for x in rs)
        wmed = statistics.median(x[1] for x in rs)
        cmin = min(x[2] for x in rs)
        cmed = statistics.median(x[2] for x in rs)
        if base is None:
            base = (wmin, cmed)
        envs = binary + " " + (",".join(f"{k}={v}" for k, v in env.items()) or "(defaults)")
        print(f"| {name} | {envs} | {wmin:.1f} | {wmed:.1f} | {cmin:.1f} | {cmed:.1f} | {wmin / base[0]:.2f} | {cmed / base[1]:.2f} |")


if __name__ == "__main__":
    main()
