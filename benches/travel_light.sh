#!/usr/bin/env bash
# The device tool sends the checkout's tracked and untracked-not-ignored files (64 MiB with the
# carried gpu-bundle/), and this repository's tracked tree alone is larger (tests/fixtures/,
# weights/demo/). The GPU check needs only gpu-bundle/, which carries its own copies of what it
# reads. So, around the one device call:
#
#   benches/travel_light.sh on     # untrack (index only) and ignore everything but benches/ and tools/
#   run(command="cd gpu-bundle && bash benches/gpu.sh /tmp/gpu-check --pack $OUT", carry=["gpu-bundle"], timeout_s=600)
#   benches/travel_light.sh off    # the index and the ignore list exactly as before
#
# Nothing in the work tree is touched: `on` removes paths from the index (git rm --cached) and
# lists them in .git/info/exclude between two marker lines; `off` runs `git reset -q` (the index
# back to HEAD) and deletes the marked lines. Refuses to start with staged changes (they would be lost).
set -euo pipefail
cd "$(dirname "$0")/.."
EX=.git/info/exclude
BEGIN="# ran travel_light: begin" END="# ran travel_light: end"
mkdir -p .git/info && touch "$EX"
case "${1:-}" in
  on)
    grep -qxF "$BEGIN" "$EX" && { echo "travel_light: already on (run: $0 off)" >&2; exit 1; }
    git diff --cached --quiet || { echo "travel_light: the index has staged changes; commit or unstage them first" >&2; exit 1; }
    mapfile -t heavy < <(git ls-files | cut -d/ -f1 | sort -u | grep -vxE 'benches|tools|\.gitignore|\.ci')
    { echo "$BEGIN"; for p in "${heavy[@]}"; do echo "/$p"; done; echo "$END"; } >> "$EX"
    git rm -r -q --cached -- "${heavy[@]}"
    echo "travel_light on: $(git ls-files | xargs du -cb 2>/dev/null | tail -1 | cut -f1) bytes tracked; untracked: ${heavy[*]}"
    ;;
  off)
    git reset -q
    sed -i "/^$BEGIN\$/,/^$END\$/d" "$EX"
    echo "travel_light off: $(git ls-files | wc -l) files tracked"
    ;;
  *) echo "usage: $0 on|off" >&2; exit 2 ;;
esac
