#!/usr/bin/env bash
# Each `ran bench` workload and its PyTorch twin (tools/bench/torch_*.py), back to back with the
# same thread count, then the table of ratios (ran time / torch time; below 1 means ran is faster).
# First the machine's f32 ceiling is measured (torch.mm SGEMM, torch_ceiling.py) and passed to
# both sides with --ceiling. Every run's JSON is kept in $OUT.
#
#   tools/bench/compare.sh [--threads 2] [--iters 3] [--only conv,unet-mid,...] [--paper] [--quick]
#
#   cases: conv (256x64x64, 3x3), unet-mid (128 channels at 64²), effnet (B4 at 256²), effnet-380 (B4 at 380²),
#          wrn50-grad (256²), train-demo and train-mid (one training step, batch 2); with --paper also unet-paper (553M at 256²), detect-index and
#          detect-tau (paper config, one 256² image); --quick runs tiny shapes, 1 iteration (a smoke test).
# Environment: RAN (default target/release/ran), PYTHON (default python3; needs torch,
# guided_diffusion, efficientnet_pytorch, torchvision), OUT (default a fresh temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."
RAN=${RAN:-target/release/ran}
PY=${PYTHON:-python3}
THREADS=2 ITERS=3 ONLY="" PAPER=0 QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) THREADS=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --paper) PAPER=1; shift ;;
    --quick) QUICK=1; ITERS=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$(mktemp -d /tmp/ran-compare.XXXXXX)}
mkdir -p "$OUT"
[ -x "$RAN" ] || { echo "no $RAN: cargo build --release first" >&2; exit 2; }

PAPER_FLAGS="--image_size 256 --num_channels 256 --num_res_blocks 2 --attention_resolutions 32,16,8 --num_head_channels 64 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --num_classes 15 --channel_mult 1,1,2,2,4,4"
MID_FLAGS="--image_size 64 --num_channels 128 --num_res_blocks 2 --attention_resolutions 32,16,8 --num_head_channels 64 --resblock_updown True --use_scale_shift_norm True --learn_sigma True"
if [ "$QUICK" = 1 ]; then
  CONV_SHAPE=16x16x16; MID_FLAGS="--image_size 16 --num_channels 32 --num_res_blocks 1 --attention_resolutions 8 --channel_mult 1,2 --learn_sigma True"
  PAPER_FLAGS="--image_size 16 --num_channels 32 --num_res_blocks 2 --attention_resolutions 8 --num_head_channels 32 --learn_sigma True --class_cond True --num_classes 3 --channel_mult 1,1,2,2"
  IMG=64; PAPER=1
else
  CONV_SHAPE=256x64x64; IMG=256
fi

want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

CEIL=$("$PY" tools/bench/torch_ceiling.py --threads "$THREADS" --json $([ "$QUICK" = 1 ] && echo "--n 1024 --reps 2") | tail -1 | "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["gflops"], 1))')
echo "ceiling: torch.mm SGEMM on $THREADS threads = $CEIL GFLOP/s" >&2
COMMON=(--threads "$THREADS" --iters "$ITERS" --ceiling "$CEIL" --json)

# name, then the ran bench arguments, then "--", then the torch script and its arguments
pair() {
  local name=$1; shift
  local ran_args=() torch_args=()
  while [ "$1" != "--" ]; do ran_args+=("$1"); shift; done
  shift
  torch_args=("$@")
  want "$name" || return 0
  echo "== $name: ran" >&2
  "$RAN" bench "${ran_args[@]}" "${COMMON[@]}" > "$OUT/$name.ran.txt"
  echo "== $name: torch" >&2
  "$PY" "${torch_args[@]}" "${COMMON[@]}" > "$OUT/$name.torch.txt"
  tail -1 "$OUT/$name.ran.txt" > "$OUT/$name.ran.json"
  tail -1 "$OUT/$name.torch.txt" > "$OUT/$name.torch.json"
  echo "$name" >> "$OUT/cases"
}

: > "$OUT/cases"
pair conv conv --shape "$CONV_SHAPE" --kernel 3 -- tools/bench/torch_conv.py --shape "$CONV_SHAPE" --kernel 3
pair unet-mid unet --flags "$MID_FLAGS" -- tools/bench/torch_unet.py --flags "$MID_FLAGS"
pair effnet effnet --variant b4 --image-size "$IMG" -- tools/bench/torch_effnet.py --variant b4 --image-size "$IMG"
# B4 at its own resolution (380², the size its static padding is computed for; --quick: 96²)
IMG380=$([ "$QUICK" = 1 ] && echo 96 || echo 380)
pair effnet-380 effnet --variant b4 --image-size "$IMG380" -- tools/bench/torch_effnet.py --variant b4 --image-size "$IMG380"
pair wrn50-grad wrn50-grad --image-size "$IMG" -- tools/bench/torch_wrn50_grad.py --image-size "$IMG"
# one training step (fwd + head + loss + bwd + AdamW + EMA), batch 2: the demo's config, and 128 channels at 64²
if [ "$QUICK" = 1 ]; then
  TRAIN_DEMO="$PAPER_FLAGS --feat_shape 4"; TRAIN_MID="$PAPER_FLAGS --feat_shape 4"
else
  TRAIN_DEMO="--image_size 64 --num_channels 32 --num_res_blocks 2 --channel_mult 1,2,2,2 --attention_resolutions 16,8 --num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --num_classes 3 --feat_shape 16"
  TRAIN_MID="$MID_FLAGS --feat_shape 16"
fi
pair train-demo train --flags "$TRAIN_DEMO" --batch 2 -- tools/bench/torch_train.py --flags "$TRAIN_DEMO" --batch 2
pair train-mid train --flags "$TRAIN_MID" --batch 2 -- tools/bench/torch_train.py --flags "$TRAIN_MID" --batch 2
if [ "$PAPER" = 1 ]; then
  pair unet-paper unet --flags "$PAPER_FLAGS" -- tools/bench/torch_unet.py --flags "$PAPER_FLAGS"
  for m in index tau; do
    pair "detect-$m" detect --flags "$PAPER_FLAGS" --feature-timestep "$m" -- tools/bench/torch_detect.py --flags "$PAPER_FLAGS" --feature-timestep "$m"
  done
fi

"$PY" - "$OUT" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
cases = [l.strip() for l in open(os.path.join(out, "cases")) if l.strip()]
rows = []
for c in cases:
    r = json.load(open(os.path.join(out, c + ".ran.json")))
    t = json.load(open(os.path.join(out, c + ".torch.json")))
    rows.append((c, r, t))
if rows:
    r0 = rows[0][1]
    print(f"ran {r0['commit']}, {r0['threads']} threads, ceiling {r0['ceiling_gflops']} GFLOP/s (torch.mm SGEMM); times in ms, ratio = ran / torch (< 1: ran faster)")
print("| case | ran min | torch min | ratio (min) | ran median | torch median | ratio (median) | ran GFLOP/s (best) | torch GFLOP/s (best) | ran % of ceiling | GFLOP ran / torch |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c, r, t in rows:
    print(f"| {c} | {r['min_ms']:.1f} | {t['min_ms']:.1f} | **{r['min_ms'] / t['min_ms']:.2f}** | {r['median_ms']:.1f} | {t['median_ms']:.1f} | "
          f"{r['median_ms'] / t['median_ms']:.2f} | {r['gflops_best']:.1f} | {t['gflops_best']:.1f} | {r['pct_of_ceiling_best']:.0f}% | "
          f"{r['gflop']:.2f} / {t['gflop']:.2f} |")
print(f"(JSON of every run in {out})")
PYEOF
