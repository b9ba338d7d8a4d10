#!/usr/bin/env bash
# The accuracy table behind --precision (README, "Precision"): `ran eval --demo` in f32, tf32,
# bf16 and f16 on the CUDA backend, and whether the GPU's default precision follows the rule
# (bf16 if within 0.002 of f32 on mean pixel AUROC, PRO and image AUROC, else tf32).
#   tools/precision_table.sh [emulator|cuda|cuda:N] [DATA_DIR] [CALIBRATION_IMAGES]
# The emulator takes ~1.5 min an image on a 2-core machine (the whole demo: hours per
# precision); a smaller data set in the demo's layout (DATA_DIR) gives a quicker, noisier check.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAN_ACCURACY_DEVICE="${1:-emulator}"
[ -n "${2:-}" ] && export RAN_ACCURACY_DATA="$2"
[ -n "${3:-}" ] && export RAN_ACCURACY_CALIBRATION_IMAGES="$3"
exec cargo test --release --locked --test precision_accuracy -- --ignored --nocapture
