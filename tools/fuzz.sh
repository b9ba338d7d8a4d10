#!/usr/bin/env bash
# Runs each cargo-fuzz (libFuzzer) target of fuzz/ for a bounded time (FUZZ_SECONDS, default 60),
# seeded from the test fixtures; a crash stops the script with the reproducer under
# fuzz/artifacts/<target>/ (make it an ordinary regression test in tests/hostile_inputs.rs).
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly compiler, or RUSTC_BOOTSTRAP=1 on
# a stable one (what this script sets), for -Zsanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS="${*:-pt_reader safetensors_reader flags_parser image_preprocess dataset_scanner}"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 2; }

# seeds: real files of each kind from the fixtures
seed() {
    local t="$1" d="fuzz/corpus/$1"
    mkdir -p "$d"
    case "$t" in
        pt_reader) cp tests/fixtures/*.pt tests/fixtures/*.pth "$d"/ 2>/dev/null || true ;;
        safetensors_reader) for f in tests/fixtures/preprocess.safetensors tests/fixtures/metrics.safetensors tests/fixtures/diffusion.safetensors; do [ -f "$f" ] && head -c 65536 "$f" > "$d/$(basename "$f")"; done ;;
        flags_parser) [ -f tests/fixtures/unet_tiny_pt.flags ] && cp tests/fixtures/unet_tiny_pt.flags "$d"/
                      printf -- '--image_size 64 --num_channels 64 --timestep_respacing 250' > "$d/flags1"
                      printf 'custom:1.0,1.0,224' > "$d/effnet1"; printf '1000;ddim50' > "$d/respacing1" ;;
        image_preprocess) for f in tests/fixtures/hostile_images/*.png tests/fixtures/hostile_images/*.jpg; do { printf '\x10'; cat "$f"; } > "$d/$(basename "$f")"; done ;;
        dataset_scanner) printf '\x00\x00\x00\x00\x01\x02\x00\x02\x04\x02\x03\x09\x03\x01\x00' > "$d/tree1" ;;
    esac
}

# built once, then each binary run directly (`cargo fuzz run` would rebuild ran for every target)
cargo fuzz build --fuzz-dir fuzz
BIN="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
for t in $TARGETS; do
    seed "$t"
    mkdir -p "fuzz/artifacts/$t"
    echo "== $t: ${SECONDS_EACH}s"
    # -rss_limit_mb: an input that makes a reader allocate past 2 GiB is a finding too
    "$BIN/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=20 -max_len=1048576 -print_final_stats=1 "fuzz/corpus/$t"
done
echo "fuzz: all targets ran clean for ${SECONDS_EACH}s each"
