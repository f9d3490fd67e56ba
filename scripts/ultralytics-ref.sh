#!/usr/bin/env bash
# Unpack the `ultralytics` wheel into .ul/ (git-ignored) as the *reference* for the GPU machine:
# tests/gpu/test_heads_gpu.py (VIDFLOW_ULTRALYTICS=$PWD/.ul) and `gpu-check.sh ultralytics`.
# Never a dependency of vidflow (AGPL): nothing under src/ imports it. Carry .ul (~5 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${ULTRALYTICS_VERSION:-8.4.190}
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps "ultralytics==$version" ultralytics-thop -d "$tmp"
rm -rf .ul && mkdir -p .ul
for w in "$tmp"/*.whl; do python3 -m zipfile -e "$w" .ul; done
rm -rf .ul/*.dist-info "$tmp"
grep -q '^/.ul/$' .gitignore || echo '/.ul/' >> .gitignore
echo "ultralytics $version unpacked into .ul/ (the reference only)"
