#!/usr/bin/env bash
# GPU check, prepared to run on a host with an NVIDIA GPU in under 8 minutes:
#   1. the whole test suite, with the cross-backend table also on the real device (gpu-tests);
#   2. the kernel benchmarks (CPU backend and GPU, GFLOP/s, GB/s and % of the device's peak) and
#      one gradient-denoising step (benches/padim.rs).
# Writes benches/gpu-results.txt. With cargo on the host it builds here; without (a bare GPU
# host), it runs the prebuilt binaries of gpu-bundle/ made by benches/make_gpu_bundle.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benches}/gpu-results.txt
mkdir -p "$(dirname "$out")"
{
  echo "# ran GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi not available"
} > "$out"
status=0
if command -v cargo >/dev/null 2>&1; then
  timeout 420 cargo test --release --features gpu-tests 2>&1 | tee -a "$out" || status=1
  timeout 150 cargo bench --bench kernels 2>&1 | tee -a "$out" || status=1
  timeout 120 cargo bench --bench padim 2>&1 | tee -a "$out" || status=1
elif [ -d gpu-bundle ]; then
  export RAN_FIXTURES_DIR="$PWD/tests/fixtures"
  [ -x gpu-bundle/ran ] && gpu-bundle/ran info 2>&1 | tee -a "$out"
  for t in gpu-bundle/*; do
    case "$(basename "$t")" in
      ran|kernels|padim|cli) continue ;;  # cli runs target/release/ran by its build path
    esac
    echo "== $(basename "$t")" | tee -a "$out"
    timeout 240 "$t" --include-ignored 2>&1 | tee -a "$out" || status=1
  done
  timeout 150 gpu-bundle/kernels --bench 2>&1 | tee -a "$out" || status=1
  timeout 120 gpu-bundle/padim --bench 2>&1 | tee -a "$out" || status=1
else
  echo "neither cargo nor gpu-bundle/ (benches/make_gpu_bundle.sh) is here" | tee -a "$out"
  status=1
fi
echo "exit status $status" | tee -a "$out"
exit $status
