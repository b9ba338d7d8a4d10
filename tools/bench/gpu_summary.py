"""The summary of one benches/gpu.sh run: reads OUTDIR (steps.jsonl, host.txt, ran_kernels.jsonl,
torch_kernels.jsonl, unet_*.json, detect_*.json), prints the markdown section for
benches/RESULTS.md on stdout and writes OUTDIR/summary.json. Standard library only (it also runs
where torch is missing).

    python3 tools/bench/gpu_summary.py OUTDIR [--device cuda|emulator]
"""
import argparse
import json
import os

# the targets on an H200 (issue #20, "Done when")
TARGETS = {"groupnorm_pct_dram": 60.0, "unet_b1_ms": 12.0, "detect_speedup": 1.5}
# the forward method of the op table that each PyTorch kernel family times
FORWARD = {"conv": ("conv2d",), "linear": ("linear",), "attention": ("attention", "attention_legacy"), "groupnorm": ("group_norm",)}


def jsonl(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def one(path):
    rows = jsonl(path)
    return rows[-1] if rows else None


def fmt(v, nd=2):
    return "—" if v is None else f"{v:.{nd}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    d = a.outdir
    steps = jsonl(os.path.join(d, "steps.jsonl"))
    host = open(os.path.join(d, "host.txt")).read().splitlines() if os.path.exists(os.path.join(d, "host.txt")) else []
    ran_k = jsonl(os.path.join(d, "ran_kernels.jsonl"))
    torch_k = jsonl(os.path.join(d, "torch_kernels.jsonl"))
    L = []
    dry = a.device != "cuda"
    title = host[0].lstrip("# ") if host else "ran GPU check"
    L.append(f"## {title}" + (" — DRY RUN (emulator, tiny shapes: no figure below is a GPU measurement)" if dry else ""))
    L.append("")
    L += [f"    {h}" for h in host[1:6]]
    L.append("")
    n_pass = sum(s["status"] == "pass" for s in steps)
    bad = [s for s in steps if s["status"] in ("fail", "timeout")]
    L.append(f"**Steps**: {n_pass} passed, {len(bad)} failed or timed out, {sum(s['status'] == 'skipped' for s in steps)} skipped.")
    L.append("")
    L.append("| step | status | seconds |")
    L.append("|---|---|---:|")
    for s in steps:
        L.append(f"| {s['step']} | {s['status']}{' (' + s['why'] + ')' if s.get('why') else ''} | {s.get('seconds', '')} |")
    L.append("")

    # kernel families side by side
    if ran_k or torch_k:
        L.append("**Kernel families at the UNet's shapes** (ran: backend cuda = the f32 FMA kernels, cuda-bf16 = the tensor-core paths; ratio column: the fastest ran row ÷ this row; % column: of the bf16 dense tensor peak for FLOP rows, "
                 "of DRAM bandwidth for byte rows; > 1: ran slower)")
        L.append("")
        L.append("| case | implementation | ms | TFLOP/s or GB/s | % of peak | ran ÷ this |")
        L.append("|---|---|---:|---:|---:|---:|")
        cases = []
        for r in torch_k:
            if r["case"] not in cases:
                cases.append(r["case"])
        summary_k = []
        for c in cases:
            fam = next(r["family"] for r in torch_k if r["case"] == c)
            # every ran row of the case (f32 "cuda", and "cuda-bf16" from --precision); the
            # ratio column is held to the fastest of them
            rans = [r for r in ran_k if r["case"] == c and r["method"] in FORWARD.get(fam, ()) and r["backend"].startswith("cuda")]
            rans = rans or [r for r in ran_k if r["case"] == c and r["method"] in FORWARD.get(fam, ())]
            ran = min(rans, key=lambda r: r["ms"]) if rans else None
            for rr in rans:
                rate = f"{rr['tflops']:.2f} TFLOP/s" if "tflops" in rr else f"{rr['gbs']:.0f} GB/s"
                pct = rr.get("pct_tensor_peak") if "tflops" in rr else rr.get("pct_dram")
                L.append(f"| {c} | ran {rr['method']} ({rr['backend']}) | {rr['ms']:.3f} | {rate} | {fmt(pct, 1)} | {fmt(rr['ms'] / ran['ms'])} |")
            for r in (r for r in torch_k if r["case"] == c):
                if "error" in r:
                    L.append(f"| {c} | torch {r['variant']} | — | error: {r['error'][:60]} | | |")
                    continue
                rate = f"{r['tflops']:.2f} TFLOP/s" if "tflops" in r else f"{r['gbs']:.0f} GB/s"
                pct = r.get("pct_tensor_peak") if "tflops" in r else r.get("pct_dram")
                ratio = ran["ms"] / r["ms"] if ran and r["ms"] > 0 else None
                L.append(f"| {c} | torch {r['variant']} | {r['ms']:.3f} | {rate} | {fmt(pct, 1)} | {fmt(ratio)} |")
                summary_k.append({"case": c, "torch": r, "ran": ran})
        L.append("")
        gn = [r for r in ran_k if r["case"].startswith("group_norm32+ss") and r["method"] == "group_norm" and r["backend"] == "cuda"]
        if gn and not dry:
            L.append(f"- target: group norm ≥ {TARGETS['groupnorm_pct_dram']:.0f}% of HBM bandwidth: ran {fmt(gn[0].get('pct_dram'), 1)}%")
        att_rows = [r for r in ran_k if r["case"].startswith("attention") and r["method"] in FORWARD["attention"] and r["backend"].startswith("cuda")]
        att_ran = min(att_rows, key=lambda r: r["ms"]) if att_rows else None
        att_t = [r for r in torch_k if r["family"] == "attention" and "ms" in r]
        if att_ran and att_t and not dry:
            best = min(att_t, key=lambda r: r["ms"])
            L.append(f"- target: attention ≥ torch SDPA: ran ({att_ran['backend']}) {att_ran['ms']:.3f} ms vs SDPA {best['variant']} {best['ms']:.3f} ms")
        L.append("")

    # UNet forward
    unet = {}
    for f in sorted(os.listdir(d)):
        if f.startswith("unet_") and f.endswith(".json"):
            r = one(os.path.join(d, f))
            if r:
                unet[f[:-5]] = r
    if unet:
        L.append("**UNet forward** (" + next(iter(unet.values())).get("config", "")[:120] + "…), min ms over the timed runs")
        L.append("")
        # the default run's precision (bf16 on a GPU, f32 on the emulator) names its column
        prec = next((v.get("precision") for k, v in unet.items() if k.startswith("unet_ran_b")), None) or "default"
        L.append(f"| batch | ran {prec} | ran f32 | torch f32 | torch fp16 channels-last | torch fp16 + torch.compile | ran {prec} ÷ torch fp16 | ran f32 ÷ torch f32 |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for b in sorted({int(k.rsplit("_b", 1)[1]) for k in unet}):
            g = lambda k: unet.get(f"{k}_b{b}", {}).get("min_ms")  # noqa: E731
            r, r32, t32, t16, tc = g("unet_ran"), g("unet_ran_f32"), g("unet_torch_float32"), g("unet_torch_float16"), g("unet_torch_compile")
            L.append(f"| {b} | {fmt(r, 1)} | {fmt(r32, 1)} | {fmt(t32, 1)} | {fmt(t16, 1)} | {fmt(tc, 1)} | {fmt(r / t16 if r and t16 else None)} | {fmt(r32 / t32 if r32 and t32 else None)} |")
        r1 = unet.get("unet_ran_b1", {}).get("min_ms")
        if r1 and not dry:
            L.append(f"\n- target: 553M forward at 256², batch 1 ≤ {TARGETS['unet_b1_ms']:.0f} ms: ran {r1:.1f} ms")
        L.append("")

    # the fusions' A/B (benches/gpu.sh step 6b): batch 1, beside the default's unet_ran_b1
    var = {f[len("variant_unet_"):-5]: one(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.startswith("variant_unet_") and f.endswith(".json")}
    var = {k: v for k, v in var.items() if v}
    if var:
        base = unet.get("unet_ran_b1", {}).get("min_ms")
        L.append("**Fusions A/B**, UNet forward batch 1, min ms (the default: casts in the conv loader, group norm folded)")
        L.append("")
        L.append("| variant | min ms | launches a forward | ÷ default |")
        L.append("|---|---:|---:|---:|")
        launches = lambda r: (r.get("driver_per_run") or {}).get("launches", "—")  # noqa: E731
        L.append(f"| default | {fmt(base, 2)} | {launches(unet.get('unet_ran_b1', {}))} | 1 |")
        for k, v in var.items():
            m, (name, val) = v.get("min_ms"), k.upper().rsplit("_", 1)
            L.append(f"| RAN_CUDA_{name}={val} | {fmt(m, 2)} | {launches(v)} | {fmt(m / base if m and base else None)} |")
        L.append("")

    # detection
    dr, dt = one(os.path.join(d, "detect_ran.json")), one(os.path.join(d, "detect_torch.json"))
    if dr or dt:
        L.append("**Full detection per image** (KL + feature maps, timesteps 5, 50, 100, tau mode), min ms")
        L.append("")
        L.append("| ran | upstream PyTorch pipeline | speed-up (torch ÷ ran) |")
        L.append("|---:|---:|---:|")
        rm, tm = (dr or {}).get("min_ms"), (dt or {}).get("min_ms")
        L.append(f"| {fmt(rm, 1)} | {fmt(tm, 1)} | {fmt(tm / rm if rm and tm else None)} |")
        if rm and tm and not dry:
            L.append(f"\n- target: ≥ {TARGETS['detect_speedup']}× faster than upstream: {tm / rm:.2f}×")
        L.append("")
    print("\n".join(L))
    json.dump({"device": a.device, "host": host, "steps": steps, "ran_kernels": ran_k, "torch_kernels": torch_k, "unet": unet,
               "detect": {"ran": dr, "torch": dt}}, open(os.path.join(d, "summary.json"), "w"), indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
