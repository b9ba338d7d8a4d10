#!/usr/bin/env bash
# Mutation check of the test suite: applies each deliberate bug below, one at a time, to a scratch
# copy of the repository, rebuilds, runs the test aimed at it and reports caught (the test fails)
# or MISSED (it passes). A mutation whose pattern no longer matches is reported as STALE, so the
# list cannot rot silently. Not part of CI (each entry is a rebuild); record the last result in
# kernels/README.md ("Mutations and the tests that catch them").
#
# usage: tools/mutate.sh [ID...]        (no IDs: all; takes a rebuild and a test run per ID)
# env:   RAN_MUTATE_DIR (scratch copy, default /tmp/ran-mutate), CARGO_TARGET_DIR (default
#        $RAN_MUTATE_DIR/target: the first build is a full one, later ones rebuild the crate),
#        RAN_NVRTC_LIB / RAN_REQUIRE_NVRTC as for any build.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${RAN_MUTATE_DIR:-/tmp/ran-mutate}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$scratch/target}"

# id | file | sed expression (applied to the file) | cargo test arguments | the bug
MUTATIONS=(
  "barrier|kernels/common.cuh|s#^  __syncthreads();  // scratch may still be read by a previous call#  // mutation: barrier removed#|--test emulator race_detector_guards_block_sum_scratch_reuse|block_sum reuses scratch without the barrier (#19)"
  "igemm-bound|kernels/igemm.cuh|s#if (n < N) st(m, n, acc\[i\]\[j\]);#if (n <= N) st(m, n, acc[i][j]);#|--test backends_agree|igemm stores one column past N (#19)"
  "attn-stride|kernels/attention.cu|s#for (int j = threadIdx.x; j < t; j += blockDim.x) p\[j\] \*= inv;#if ((int)threadIdx.x < t) p[threadIdx.x] *= inv;#|--test backends_agree|attention normalises only the first blockDim.x keys (#19)"
  "gn-eps|kernels/group_norm.cu|s#(float)k.len + eps);#(float)k.len + 1e-5f);#|--test backends_agree|group norm ignores its eps (#19)"
  "gn-onepass|kernels/group_norm.cu|s#return __shfl_sync(KC_FULL_MASK, v, 0);  // x0#return 0.0f;  // x0#; s#if (a.n == 0.0f) a.d0 = d;  // the thread's own shift#if (a.n == 0.0f) a.d0 = 0.0f;#|--test backends_agree|group norm statistics as one-pass raw sums Σx, Σx² (no shift: catastrophic cancellation under a large mean, #20)"
  "gn-chan|kernels/group_norm.cu|s#m2 += m2b + d \* d \* n \* w;#m2 += m2b;#|--test backends_agree|Chan's merge drops the between-chunk term of M2 (#20)"
  "ew-tail|kernels/elementwise.cu|s#i0 = 4 \* (n / 4);#i0 = n;#|--test vector_tails|the maps skip the n mod 4 values after the last float4 (#20)"
  "walk-carry|kernels/index_walk.cuh|s#    ++w.q;#    // mutation: carry dropped#|--test vector_tails|the division-free walk forgets the carry from r into q (#20)"
  "gn-reread|src/backend/cuda/mod.rs|s#^\(        launch::group_norm_stats_f32(.*)?;\)\$#\1\n\1#|--test traffic_bound unet_kernels_stay_within_their_traffic_bounds|group norm reads x three times: its statistics launched twice, results unchanged (#20 item 6)"
  "kl-const|kernels/scheduler.cu|s#1.0f / 0.6931471805599453f#1.0f / 0.7f#|--test backends_agree|kl_bits with a wrong ln 2 (#19)"
  "conv-pad|src/ops/conv.rs|s#pt: v(p.padding.top)?,#pt: v(p.padding.left)?,#|--test ops_vs_torch|the conv geometry (shared by the CPU and CUDA backends) takes the left padding for the top (#19)"
)

want=("$@")
mkdir -p "$scratch"
rm -rf "$scratch/src-copy" && mkdir -p "$scratch/src-copy" || exit 2
tar -C "$root" --exclude=./target --exclude=./.git -cf - . | tar -C "$scratch/src-copy" -xf - || exit 2
cd "$scratch/src-copy" || exit 2
printf '%-12s %-8s %s\n' ID RESULT "TEST / BUG"
for m in "${MUTATIONS[@]}"; do
  IFS='|' read -r id file expr targs what <<<"$m"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " =~ " $id " ]]; then continue; fi
  cp "$file" "$file.orig"
  sed -i "$expr" "$file"
  if cmp -s "$file" "$file.orig"; then
    printf '%-12s %-8s %s\n' "$id" STALE "pattern no longer matches $file"
    mv "$file.orig" "$file"
    continue
  fi
  log="$scratch/$id.log"
  # shellcheck disable=SC2086
  if cargo test --release $targs >"$log" 2>&1; then
    result=MISSED
    # a test that did not run (e.g. needs the instrumented emulator build) misses nothing by design
    grep -q " 0 passed; 0 failed; [1-9][0-9]* ignored" "$log" && result=MISSED-IGNORED
  elif grep -q "test result: FAILED\|panicked" "$log"; then
    result=caught
  else
    result=BUILD-ERR  # neither pass nor a failing test: see the log
  fi
  msg="$(grep -m1 -E "out-of-bounds|race \(|error backend|got .* want" "$log" | cut -c1-200)"
  printf '%-12s %-8s %s — %s\n' "$id" "$result" "cargo test $targs" "$what"
  [ "$result" = caught ] && printf '%-12s %-8s   %s\n' "" "" "$msg"
  mv "$file.orig" "$file"
done
