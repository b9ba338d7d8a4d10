#!/usr/bin/env bash
# The GPU check, in one call, on a host with an NVIDIA GPU, its driver and PyTorch, and nothing
# else (no Rust, no network): correctness on the device, compute-sanitizer, and benchmarks side by
# side with PyTorch on the same GPU. It runs from the root of the bundle that
# benches/make_gpu_bundle.sh builds (gpu-bundle/), in about 8 minutes, each step under its own
# timeout so one slow step cannot eat the others:
#
#   1 tests      the op table on the device vs the references and the CPU (tests/backends_agree.rs
#                real_gpu_…), the UNet and the detection pipeline vs upstream's fixtures on the
#                device (…_on_the_gpu), and the CLI/metrics tests (they prove the bundle's paths)
#   2 unet       the 553M UNet forward at 256², batch 1 and 8: ran (bf16, the GPU's default) vs
#                upstream UNetModel in f32 and fp16 channels-last, and torch.compile if it builds
#                within its timeout
#   3 detect     full detection per image (tau mode): ran vs the upstream pipeline
#   4 kernels    every op-table row on the GPU (benches/kernels.rs --gpu-only) and PyTorch's
#                kernel families at the same shapes (tools/bench/gpu_kernels.py: cuDNN conv
#                f32/TF32/fp16/bf16, SDPA, F.group_norm), TFLOP/s or GB/s, % of the bf16 tensor
#                peak (989 TFLOP/s) / HBM bandwidth (4.8 TB/s) on an H200
#   5 verify     upstream guided_diffusion run NOW on this GPU in float64 (tools/reference/
#                dump_reference.py --device cuda --float64) for the demo model, a random 64² model
#                and the random 553M paper model at 256²; `ran verify --device cuda` against each
#                (UNet outputs and the KL map); a mismatched pair must fail (negative control);
#                bf16 too where ran has --precision
#   6 sanitizer  compute-sanitizer memcheck and racecheck over one small UNet forward
#   7 A/B        the UNet at batch 1 in f32, and with each fusion undone (RAN_CUDA_CAST_FIRST=1,
#                RAN_CUDA_FOLD_NORM=0)
#   8 summary    summary.md + summary.json (tools/bench/gpu_summary.py), appended to
#                benches/RESULTS.md (the bundle's copy; copy the section into the repository's)
#
# The measurements come before the slow checks (verify's float64 references, racecheck): when the
# budget runs out, what is cut is a check that CI's emulator runs anyway, not the one figure only
# this host can give.
#
#   bash benches/gpu.sh OUTDIR [--pack DIR]
#
# Everything goes to OUTDIR (logs, JSON, summary.md). --pack DIR then writes DIR/gpu-check.tar.gz
# (all of OUTDIR) and DIR/summary.md: the device tool brings back at most 8 files from $OUT.
# The call, from the session's checkout after benches/make_gpu_bundle.sh:
#   run(command="cd gpu-bundle && bash benches/gpu.sh /tmp/gpu-check --pack $OUT", carry=["gpu-bundle"], timeout_s=600)
#
# RAN_DEVICE=emulator is the dry run (CI, .ci/run): tiny shapes, the CUDA emulator instead of the
# GPU, the Python steps on CPU torch when PYTHON has torch (else recorded as skipped), no
# sanitizer; it proves the script starts, finds every file and writes every output.
# Environment: PYTHON (default python3), RAN_GPU_PEAKS (fp32,tensor,gbs; default the H200's
# datasheet 67,989,4800 when nvidia-smi names an H200, else the device's attributes).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=${1:?usage: bash benches/gpu.sh OUTDIR [--pack DIR]}
shift
PACK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pack) PACK=${2:?--pack DIR}; shift 2 ;;
    *) echo "gpu.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/gpu-check.log
STEPS=$OUTDIR/steps.jsonl
: > "$LOG"
: > "$STEPS"
T0=$(date +%s)
say() { echo "[gpu.sh +$(($(date +%s) - T0))s] $*" | tee -a "$LOG" >&2; }

DEVICE=${RAN_DEVICE:-cuda}
case "$DEVICE" in
  cuda) DRY=0; TORCH_DEV=cuda ;;
  emulator) DRY=1; TORCH_DEV=cpu ;;
  *) echo "gpu.sh: RAN_DEVICE=$DEVICE: cuda (default) or emulator (the dry run)" >&2; exit 2 ;;
esac

# step NAME TIMEOUT_S CMD...: runs CMD under a timeout with its output in OUTDIR/NAME.log and the
# log; records {step, status, rc, seconds} in steps.jsonl. status: pass, fail, timeout, or
# skipped once the whole run's budget (RAN_GPU_BUDGET_S, default 480 s: the device tool stops a
# command at 600 s) is spent; a step's timeout is cut to what is left of the budget.
FAILED=0
BUDGET=${RAN_GPU_BUDGET_S:-480}
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - T0)))
  if [ "$left" -lt 10 ]; then
    skip "$name" "out of time: the ${BUDGET}s budget is spent"
    FAILED=1
    return 124
  fi
  [ "$limit" -le "$left" ] || limit=$left
  say "== $name (timeout ${limit}s): $*"
  local t=$(date +%s) rc
  timeout --kill-after=10 "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  rc=$?
  cat "$OUTDIR/$name.log" >> "$LOG"
  local st=pass
  if [ $rc = 124 ] || [ $rc = 137 ]; then st=timeout; elif [ $rc != 0 ]; then st=fail; fi
  [ $st = pass ] || FAILED=1
  echo "{\"step\": \"$name\", \"status\": \"$st\", \"rc\": $rc, \"seconds\": $(($(date +%s) - t))}" >> "$STEPS"
  say "   $name: $st (rc $rc, $(($(date +%s) - t))s)"
  return $rc
}
skip() {
  echo "{\"step\": \"$1\", \"status\": \"skipped\", \"why\": \"$2\"}" >> "$STEPS"
  say "== $1: skipped ($2)"
}
# the last line of a command's output (the JSON of `ran bench --json` and the torch scripts)
last_json() { tail -1 "$OUTDIR/$1.log" > "$OUTDIR/$1.json"; }

# ---- 0. the bundle, the host, Python
for f in bin.tar.xz MANIFEST tools/bench/gpu_kernels.py tools/bench/gpu_summary.py tools/bench/torch_unet.py \
         tools/bench/torch_detect.py tools/reference/dump_reference.py tests/fixtures/ops.safetensors \
         weights/demo/unet_demo.safetensors examples/demo; do
  [ -e "$ROOT/$f" ] || { say "missing $ROOT/$f: run benches/make_gpu_bundle.sh and carry gpu-bundle/"; exit 1; }
done
WORK=$(mktemp -d /tmp/ran-gpu.XXXXXX)
tar -C "$WORK" -xJf "$ROOT/bin.tar.xz" || { say "cannot unpack bin.tar.xz"; exit 1; }
BIN=$WORK
RAN=$BIN/ran
export RAN_BIN=$RAN RAN_DATA_ROOT=$ROOT RAN_FIXTURES_DIR=$ROOT/tests/fixtures
{
  echo "# ran GPU check, $(date -u +%Y-%m-%dT%H:%MZ), device $DEVICE"
  cat "$ROOT/MANIFEST" | head -3
  echo "host: $(uname -srm); $(ldd --version 2>&1 | head -1)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 || echo "nvidia-smi not available"
  echo "ldd ran:"; ldd "$RAN" 2>&1
} > "$OUTDIR/host.txt"
cat "$OUTDIR/host.txt" >> "$LOG"
if ldd "$RAN" 2>&1 | grep -q "not found"; then say "the ran binary lacks a library on this host (host.txt)"; exit 1; fi
step info 30 "$RAN" info || { say "ran does not start here (host.txt: glibc?)"; exit 1; }
if [ $DRY = 0 ]; then
  grep -q "cuda  *available" "$OUTDIR/info.log" || { say "ran sees no usable GPU (info.log)"; exit 1; }
fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
if [ -z "${RAN_GPU_PEAKS:-}" ] && [[ "$GPU_NAME" == *H200* ]]; then RAN_GPU_PEAKS=67,989,4800; fi
export RAN_BENCH_PEAKS=${RAN_GPU_PEAKS:-}
TORCH_PEAKS=${RAN_GPU_PEAKS:-67,989,4800}

PY=${PYTHON:-python3}
HAVE_TORCH=0
if $PY -c "import torch" 2>/dev/null; then
  HAVE_TORCH=1
  SITE=$WORK/site
  mkdir -p "$SITE"
  if ! $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$ROOT"/wheels/*.whl >> "$LOG" 2>&1; then
    say "pip could not install the wheels; importing them as zip files"
    SITE=$(printf '%s:' "$ROOT"/wheels/*.whl)
  fi
  export PYTHONPATH="$SITE:$ROOT/tools/reference:$ROOT/tools/bench${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
  if [ $DRY = 0 ]; then
    $PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no GPU'" >> "$LOG" 2>&1 || { say "torch sees no GPU"; HAVE_TORCH=0; FAILED=1; }
  fi
  $PY -c "import guided_diffusion, efficientnet_pytorch" >> "$LOG" 2>&1 || { say "the bundled wheels do not import"; HAVE_TORCH=0; FAILED=1; }
fi
[ $HAVE_TORCH = 1 ] || say "no usable torch in $PY: the PyTorch steps are skipped"

PAPER="--image_size 256 --num_channels 256 --num_res_blocks 2 --attention_resolutions 32,16,8 --num_head_channels 64 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --num_classes 15 --channel_mult 1,1,2,2,4,4"
MID="--image_size 64 --num_channels 128 --num_res_blocks 2 --attention_resolutions 32,16,8 --num_head_channels 64 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --num_classes 15"
TINY="--image_size 16 --num_channels 32 --num_res_blocks 2 --attention_resolutions 8 --num_head_channels 32 --learn_sigma True --class_cond True --num_classes 3 --channel_mult 1,1,2,2"
if [ $DRY = 1 ]; then BIG=$TINY; MID=$TINY; BATCHES="1 2"; ITERS=1; else BIG=$PAPER; BATCHES="1 8"; ITERS=10; fi

# ---- 1. tests on the device
if [ $DRY = 0 ]; then
  step test_op_table 200 "$BIN/tests/backends_agree" --ignored --exact real_gpu_matches_the_references_and_cpu --nocapture
  step test_unet_vs_upstream 60 "$BIN/tests/unet_vs_upstream" --ignored --exact unet_matches_upstream_on_the_gpu --nocapture
  step test_detect_vs_upstream 60 "$BIN/tests/detect_vs_upstream" --ignored --exact detection_pipeline_matches_upstream_on_the_gpu --nocapture
else
  # the emulated suites run in CI proper (minutes); here: each binary starts and has the very test
  # the real run names, and one emulated reference test proves the bundle's fixtures are found
  for t in backends_agree:real_gpu_matches_the_references_and_cpu unet_vs_upstream:unet_matches_upstream_on_the_gpu \
           detect_vs_upstream:detection_pipeline_matches_upstream_on_the_gpu; do
    step "test_${t%%:*}_listed" 30 bash -c "'$BIN/tests/${t%%:*}' --list --ignored | grep -qx '${t#*:}: test'"
  done
  step test_unet_vs_upstream 240 "$BIN/tests/unet_vs_upstream" --exact unet_matches_upstream_on_emulated_cuda
fi
step test_cli_convert_verify 120 "$BIN/tests/cli_convert_verify"
step test_metrics 60 "$BIN/tests/metrics_vs_sklearn"
if [ $DRY = 0 ]; then step test_cli_demo 180 "$BIN/tests/cli"; else skip test_cli_demo "dry run: the demo's detect+eval on the CPU takes minutes; CI runs tests/cli.rs"; fi

# ---- 2. the UNet forward, batch 1 and 8
for b in $BATCHES; do
  step "unet_ran_b$b" 120 "$RAN" bench unet --device "$DEVICE" --flags "$BIG" --batch "$b" --iters $ITERS --warmup 1 --json --quiet && last_json "unet_ran_b$b"
  if [ $HAVE_TORCH = 1 ]; then
    for v in "float32" "float16 --channels-last"; do
      tag=$(echo "$v" | cut -d' ' -f1)
      # shellcheck disable=SC2086
      step "unet_torch_${tag}_b$b" 120 $PY "$ROOT/tools/bench/torch_unet.py" --device "$TORCH_DEV" --flags "$BIG" --batch "$b" --dtype $v \
        --iters $ITERS --warmup 2 --json --quiet && last_json "unet_torch_${tag}_b$b"
    done
  fi
done
if [ $HAVE_TORCH = 1 ] && [ $DRY = 0 ]; then
  step unet_torch_compile_b1 150 $PY "$ROOT/tools/bench/torch_unet.py" --device cuda --flags "$BIG" --batch 1 --dtype float16 --channels-last --compile \
    --iters $ITERS --warmup 3 --json --quiet && last_json unet_torch_compile_b1
else
  skip unet_torch_compile_b1 "dry run or no torch"
fi

# ---- 3. full detection per image, tau mode
step detect_ran 150 "$RAN" bench detect --device "$DEVICE" --flags "$BIG" --feature-timestep tau --iters $((ITERS / 2 + 1)) --warmup 1 --json --quiet && last_json detect_ran
if [ $HAVE_TORCH = 1 ]; then
  step detect_torch 150 $PY "$ROOT/tools/bench/torch_detect.py" --device "$TORCH_DEV" --flags "$BIG" --feature-timestep tau \
    --iters $((ITERS / 2 + 1)) --warmup 1 --json --quiet && last_json detect_torch
else
  skip detect_torch "no torch"
fi

# ---- 4. kernel families: ran's kernels and PyTorch's at the same shapes
rm -f "$OUTDIR/ran_kernels.jsonl"
if [ $DRY = 0 ]; then
  RAN_BENCH_JSON=$OUTDIR/ran_kernels.jsonl step kernels_ran 180 "$BIN/kernels" --gpu-only --precision bf16
else
  # no GPU: the CPU rows of one family prove the JSON path
  RAN_BENCH_JSON=$OUTDIR/ran_kernels.jsonl step kernels_ran 120 "$BIN/kernels" group_norm
fi
if [ $HAVE_TORCH = 1 ]; then
  step kernels_torch 120 $PY "$ROOT/tools/bench/gpu_kernels.py" --device "$TORCH_DEV" --peaks "$TORCH_PEAKS" --json $([ $DRY = 1 ] && echo --tiny)
  grep '^{' "$OUTDIR/kernels_torch.log" > "$OUTDIR/torch_kernels.jsonl"
else
  skip kernels_torch "no torch"
fi

# ---- 5. ran verify against upstream computed on this GPU now (float64)
verify_pair() {  # NAME FLAGS CHECKPOINT|random:SEED SIZE
  local name=$1 flags=$2 src=$3 d=$WORK/verify/$1
  mkdir -p "$d"
  local model=$d/model.safetensors init=()
  if [[ "$src" == random:* ]]; then
    init=(--random-init "${src#random:}" --write-state "$d/state.safetensors")
  else
    init=(--checkpoint "$src"); model=$src
  fi
  step "verify_${name}_ref" 150 $PY "$ROOT/tools/reference/dump_reference.py" "${init[@]}" --flags "$flags" --kind unet --batch 1 --t 401 \
    --device "$TORCH_DEV" --float64 --out "$d/ref_unet.safetensors" || return
  if [[ "$src" == random:* ]]; then
    step "verify_${name}_convert" 60 "$RAN" convert --checkpoint "$d/state.safetensors" --flags "$flags" --out "$model" || return
  fi
  step "verify_${name}_kl_ref" 150 $PY "$ROOT/tools/reference/dump_reference.py" --checkpoint "$model" --flags "$flags" --kind kl --batch 1 --k 50 \
    --device "$TORCH_DEV" --float64 --out "$d/ref_kl.safetensors"
  step "verify_${name}_unet_f32" 120 "$RAN" verify --device "$DEVICE" --model "$model" --reference "$d/ref_unet.safetensors"
  [ -f "$d/ref_kl.safetensors" ] && step "verify_${name}_kl_f32" 120 "$RAN" verify --device "$DEVICE" --model "$model" --reference "$d/ref_kl.safetensors"
  if "$RAN" verify --help | grep -q -- "--precision"; then
    # bf16 operands, f32 accumulation: ~3 significant digits per product
    step "verify_${name}_unet_bf16" 120 "$RAN" verify --device "$DEVICE" --precision bf16 --atol 3e-2 --rtol 3e-2 --model "$model" --reference "$d/ref_unet.safetensors"
  else
    skip "verify_${name}_unet_bf16" "this ran has no --precision"
  fi
}
if [ $HAVE_TORCH = 1 ]; then
  DEMO_FLAGS=$($PY -c "from safetensors import safe_open; print(safe_open('$ROOT/weights/demo/unet_demo.safetensors', 'pt').metadata()['model_flags'])")
  [ $DRY = 0 ] && verify_pair demo "$DEMO_FLAGS" "$ROOT/weights/demo/unet_demo.safetensors"
  verify_pair mid "$MID" random:1
  [ $DRY = 0 ] && verify_pair paper "$PAPER" random:2
  # negative control: the 'mid' model against another seed's reference must be refused
  d=$WORK/verify/control && mkdir -p "$d"
  if step verify_control_ref 150 $PY "$ROOT/tools/reference/dump_reference.py" --random-init 7 --flags "$MID" --kind unet --batch 1 --t 401 \
       --device "$TORCH_DEV" --float64 --out "$d/ref.safetensors"; then
    "$RAN" verify --device "$DEVICE" --model "$WORK/verify/mid/model.safetensors" --reference "$d/ref.safetensors" > "$OUTDIR/verify_control.log" 2>&1
    rc=$?
    st=pass; [ $rc = 1 ] || { st=fail; FAILED=1; }
    echo "{\"step\": \"verify_control_must_fail\", \"status\": \"$st\", \"rc\": $rc}" >> "$STEPS"
    say "== verify_control_must_fail: $st (ran verify exit $rc, want 1)"
  fi
else
  skip verify "no torch"
fi

# ---- 6. compute-sanitizer over one small UNet forward
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
SMALL=(bench unet --flags "$TINY" --iters 1 --warmup 0 --quiet)
if [ $DRY = 1 ]; then
  step sanitizer_command 120 "$RAN" "${SMALL[@]}" --device emulator
  skip sanitizer "dry run: the emulator's race detector runs in tests/backends_agree.rs"
elif [ -z "$SAN" ]; then
  skip sanitizer "no compute-sanitizer on this host"
else
  step sanitizer_memcheck 120 "$SAN" --tool memcheck --error-exitcode 1 "$RAN" "${SMALL[@]}" --device cuda
  step sanitizer_racecheck 150 "$SAN" --tool racecheck --error-exitcode 1 "$RAN" "${SMALL[@]}" --device cuda
fi

# ---- 7. batch 1 again: in f32 (beside torch f32), and the fusions' A/B (kernels/README.md): the
# conv's activation cast as a pass of its own, and group norm unfolded; last, so they never take
# the time of the steps above
step unet_ran_f32_b1 90 "$RAN" bench unet --device "$DEVICE" --flags "$BIG" --precision f32 --batch 1 --iters $((ITERS / 2 + 1)) --warmup 1 --json --quiet \
  && last_json unet_ran_f32_b1
for v in CAST_FIRST=1 FOLD_NORM=0; do
  tag=$(echo "$v" | tr 'A-Z=' 'a-z_')
  step "variant_unet_$tag" 90 env "RAN_CUDA_$v" "$RAN" bench unet --device "$DEVICE" --flags "$BIG" --batch 1 --iters $((ITERS / 2 + 1)) --warmup 1 --json --quiet \
    && last_json "variant_unet_$tag"
done

# ---- 8. summary
SUMMARY_PY=python3
[ $HAVE_TORCH = 1 ] && SUMMARY_PY=$PY
if $SUMMARY_PY "$ROOT/tools/bench/gpu_summary.py" "$OUTDIR" --device "$DEVICE" > "$OUTDIR/summary.md" 2>> "$LOG"; then
  { echo; cat "$OUTDIR/summary.md"; } >> "$ROOT/benches/RESULTS.md"
  cp "$ROOT/benches/RESULTS.md" "$OUTDIR/RESULTS.md"
  say "summary: $OUTDIR/summary.md (appended to $ROOT/benches/RESULTS.md)"
else
  say "gpu_summary.py failed (log)"
  FAILED=1
fi
rm -rf "$WORK"
say "done in $(($(date +%s) - T0))s; $(grep -c '"pass"' "$STEPS") steps passed, $(grep -c '"fail"\|"timeout"' "$STEPS") failed or timed out, $(grep -c '"skipped"' "$STEPS") skipped"
if [ -n "$PACK" ]; then
  mkdir -p "$PACK"
  tar -C "$(dirname "$OUTDIR")" -czf "$PACK/gpu-check.tar.gz" "$(basename "$OUTDIR")"
  cp "$OUTDIR/summary.md" "$PACK/" 2>/dev/null
fi
[ -f "$OUTDIR/summary.md" ] && cat "$OUTDIR/summary.md"
exit $FAILED
