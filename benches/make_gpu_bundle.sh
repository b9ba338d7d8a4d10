#!/usr/bin/env bash
# Builds, on this machine, everything benches/gpu.sh needs on a GPU host that has no Rust
# toolchain and no network: the test binaries (with --features gpu-tests), the kernel and gradient-step benchmarks
# and the ran binary, stripped, into gpu-bundle/ (git-ignored; hand it to the GPU host as is).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf gpu-bundle && mkdir -p gpu-bundle
exes=$( { cargo test --release --features gpu-tests --no-run --message-format=json;
          cargo bench --bench kernels --no-run --message-format=json;
          cargo bench --bench padim --no-run --message-format=json; } 2>/dev/null |
        python3 -c 'import sys, json
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"): continue
    kind = m["target"]["kind"]
    if kind in (["test"], ["bench"]) or (kind == ["bin"] and m["target"]["name"] == "ran"):
        print(m["target"]["name"] + " " + m["executable"])')
while read -r name path; do
  [ -n "$name" ] || continue
  cp "$path" "gpu-bundle/$name"
  strip "gpu-bundle/$name" 2>/dev/null || true
done <<< "$exes"
ls -la gpu-bundle
du -sh gpu-bundle
