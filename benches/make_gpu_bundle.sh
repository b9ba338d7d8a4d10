#!/usr/bin/env bash
# Builds, on this machine, everything benches/gpu.sh needs on a GPU host that has the NVIDIA
# driver, PyTorch and nothing else (no Rust, no network): gpu-bundle/ (git-ignored), laid out as the
# checkout so that `bash benches/gpu.sh OUTDIR` runs from its root:
#
#   bin.tar.xz            ran, the test binaries gpu.sh runs, the kernel benchmark (stripped, xz)
#   benches/gpu.sh, tools/bench/*.py, tools/reference/{dump_reference,upstream_unet,upstream_effnet}.py
#   tests/fixtures/…      the fixture files those tests read (only those)
#   weights/demo/, examples/demo/   the demo models (ran- and Python-trained), its EfficientNet-Lite0 taps, images
#   wheels/               guided-diffusion-sdk and efficientnet-pytorch (pure Python; the host lacks them)
#   MANIFEST              commit, glibc / libstdc++ versions the binaries need, sizes
#
#   benches/make_gpu_bundle.sh [--no-travel-check]
#
# Kernels: RAN_REQUIRE_NVRTC=1 makes the build fail unless NVRTC compiled every kernel to PTX and
# CUBINs (sm_80/86/89/90), so the GPU host never needs libnvrtc; the script also checks `ran info`.
# Size: the device tool sends the working tree plus carried paths, 64 MiB in all. The bundle is
# checked against 64 MiB; and, unless --no-travel-check (CI's dry run), so is what a call from
# this checkout would send: the tracked and untracked-not-ignored files plus the bundle.
# This checkout's tracked tree is over that by itself: wrap the call in `benches/travel_light.sh on`
# / `off` (index-only, reversible) and build the bundle with --no-travel-check.
# Then, with the device tool:  run(command="cd gpu-bundle && bash benches/gpu.sh /tmp/gpu-check --pack $OUT",
#                                  carry=["gpu-bundle"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
TRAVEL_CHECK=1
for a in "$@"; do
  case "$a" in
    --no-travel-check) TRAVEL_CHECK=0 ;;
    *) echo "make_gpu_bundle.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
LIMIT=$((64 * 1024 * 1024))
B=gpu-bundle
die() { echo "make_gpu_bundle.sh: $*" >&2; exit 1; }

export RAN_REQUIRE_NVRTC=1
if [ -z "${RAN_NVRTC_LIB:-}" ]; then
  for f in "$HOME"/.cache/ran/nvrtc-*/nvidia/cuda_nvrtc/lib/libnvrtc.so.12; do [ -f "$f" ] && RAN_NVRTC_LIB=$f; done
  [ -n "${RAN_NVRTC_LIB:-}" ] || die "no NVRTC: set RAN_NVRTC_LIB (or run .ci/run once, which installs it into ~/.cache/ran/)"
  export RAN_NVRTC_LIB
fi

# the test binaries gpu.sh runs: the device checks, and the CLI/metrics tests that prove the
# bundle's paths (RAN_BIN, RAN_DATA_ROOT) on the host
TESTS=(backends_agree unet_vs_upstream detect_vs_upstream cli cli_convert_verify metrics_vs_sklearn)
test_args=()
for t in "${TESTS[@]}"; do test_args+=(--test "$t"); done
# cargo's messages stay on stderr; its JSON on stdout names the executables
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo build --release --locked --bin ran --message-format=json > "$json"
cargo test --release --locked --no-run "${test_args[@]}" --message-format=json >> "$json"
# the release profile, not cargo bench's own (which would compile the library once more)
cargo build --release --locked --bench kernels --message-format=json >> "$json"

rm -rf "$B" && mkdir -p "$B/bin/tests" "$B/benches" "$B/tools/bench" "$B/tools/reference" "$B/tests/fixtures" "$B/weights/demo" "$B/examples" "$B/wheels"
python3 - "$json" "$B/bin" <<'PY'
import json, shutil, subprocess, sys
src, dst = sys.argv[1], sys.argv[2]
seen = {}
for line in open(src):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kind, name = m["target"]["kind"], m["target"]["name"]
    if kind == ["bin"] and name == "ran":
        seen["ran"] = m["executable"]
    elif kind in (["test"], ["bench"]):
        seen[("tests/" if kind == ["test"] else "") + name] = m["executable"]
for rel, path in sorted(seen.items()):
    out = f"{dst}/{rel}"
    subprocess.run(["strip", "-o", out, path], check=True)
    print(f"  {rel:<36} <- {path}")
PY
for t in ran kernels "${TESTS[@]/#/tests/}"; do [ -x "$B/bin/$t" ] || die "the build made no $t"; done
info=$("$B/bin/ran" info)
echo "$info" | grep -q "CUBIN .*sm_90" || die "ran info lists no sm_90 CUBIN: the kernels were not compiled by NVRTC ($info)"

# what the binaries need of the host's C libraries (the H200 image is a recent Linux; gpu.sh
# checks with ldd there before anything else)
need() { objdump -T "$B/bin/ran" "$B"/bin/tests/* "$B/bin/kernels" | grep -o "$1_[0-9.]*" | sort -Vu | tail -1; }
GLIBC_NEED=$(need GLIBC)
GLIBCXX_NEED=$(need GLIBCXX)
tar -C "$B/bin" -cJf "$B/bin.tar.xz" .
rm -rf "$B/bin"

cp benches/gpu.sh benches/RESULTS.md "$B/benches/"
cp tools/bench/*.py "$B/tools/bench/"
cp tools/reference/dump_reference.py tools/reference/upstream_unet.py tools/reference/upstream_effnet.py "$B/tools/reference/"
# fixtures: the op table (src/optable/fixtures.rs), the UNet and detection references, the CLI tests'
FIXTURES=(ops.safetensors weight_grads.safetensors optim.safetensors diffusion.safetensors
  unet_guided_paperlike.safetensors unet_guided_plain.safetensors unet_improved_style.safetensors
  effnet_b4w.safetensors detect_paperlike.safetensors kl_paperlike.safetensors effnet_small.safetensors
  unet_tiny_pt.pt unet_tiny_pt.flags metrics.safetensors)
for f in "${FIXTURES[@]}"; do cp "tests/fixtures/$f" "$B/tests/fixtures/" || die "tests/fixtures/$f is missing"; done
cp weights/demo/unet_demo.safetensors weights/demo/unet_demo_python.safetensors weights/demo/efficientnet_lite0_taps.safetensors "$B/weights/demo/"
cp -r examples/demo "$B/examples/"
# pure-Python packages the reference scripts import and the host's image lacks (the pins of
# tools/reference/requirements.txt); pip builds a wheel from an sdist where PyPI has no wheel
python3 -m pip wheel --quiet --no-deps -w "$B/wheels" guided-diffusion-sdk==1.0.0 efficientnet-pytorch==0.7.1
for w in "$B"/wheels/*; do
  case "$w" in *-py3-none-any.whl) ;; *) die "$w is not a pure-Python wheel" ;; esac
done

{
  echo "ran GPU bundle, commit $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src kernels tests benches tools || echo +dirty), built $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m)"
  echo "needs: glibc >= ${GLIBC_NEED#GLIBC_}, libstdc++ with ${GLIBCXX_NEED} (built on $(ldd --version | head -1))"
  echo "$info" | grep "kernels:" | sed 's/^ *//'
  (cd "$B" && find . -type f ! -name MANIFEST -printf '%s %p\n' | sort -k2)
} > "$B/MANIFEST"

size=$(du -sb "$B" | cut -f1)
echo "gpu-bundle: $((size / 1024)) KiB ($(du -sh "$B" | cut -f1)); $(sed -n 2p "$B/MANIFEST")"
[ "$size" -le "$LIMIT" ] || die "gpu-bundle is $size bytes, over the device tool's 64 MiB ($LIMIT): trim FIXTURES or TESTS"
if [ "$TRAVEL_CHECK" = 1 ]; then
  # what a call from this checkout sends: tracked + untracked-not-ignored files, and the carried bundle
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
  total=$((tree + size))
  echo "a device call from this checkout sends $((tree / 1024 / 1024)) MiB of working tree + $((size / 1024 / 1024)) MiB of bundle = $((total / 1024 / 1024)) MiB (limit 64)"
  [ "$total" -le "$LIMIT" ] || die "the working tree plus gpu-bundle is $total bytes, over the device tool's 64 MiB ($LIMIT): the call would be refused; the tracked tree alone is $tree bytes (git ls-files | xargs du: the largest are weights/demo/padim_demo_brick.safetensors and tests/fixtures/); benches/travel_light.sh on (and off after the call) sends only benches/ and tools/ beside the bundle"
fi
