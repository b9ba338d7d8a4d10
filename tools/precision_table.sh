#!/usr/bin/env bash
# The accuracy table behind --precision (README, "Precision"): `ran eval --demo` in f32, tf32,
# bf16 and f16, and whether the GPU's default precision follows the rule (bf16 if within 0.002
# of f32 on mean pixel AUROC, PRO and image AUROC, else tf32).
#   tools/precision_table.sh [cpu|emulator|cuda|cuda:N] [DATA_DIR] [CALIBRATION_IMAGES]
# cpu (the default) is the CPU proxy of the kernels' rounding (~4 min a precision on 2 cores);
# the emulator runs the kernels themselves at ~1.5 min an image (the whole demo: hours per
# precision); a smaller data set in the demo's layout (DATA_DIR) gives a quicker, noisier check.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAN_ACCURACY_DEVICE="${1:-cpu}"
[ -n "${2:-}" ] && export RAN_ACCURACY_DATA="$2"
[ -n "${3:-}" ] && export RAN_ACCURACY_CALIBRATION_IMAGES="$3"
exec cargo test --release --locked --test precision_accuracy -- --ignored --nocapture
