#!/usr/bin/env bash
# Ray for the GPU machine, small enough for the device's 64 MiB carry (issue 19's one-GPU run).
# The cp312 manylinux wheel is 79 MB; unpacked without what vidflow.fleet never imports (the Java
# jars, the dashboard's web build and source maps, rllib/tune/train/data/serve/llm/air) and xz'd it
# is ~20 MB. Writes .whl/ray312.tar.xz and .whl/ray-deps/*.whl (Ray core's pure dependencies).
# The fleet e2e tests pass on a local copy stripped the same way (Python 3.11 here).
# On the GPU machine: bash scripts/gpu-check.sh fleet   (unpacks both into /tmp/site)
set -euo pipefail
cd "$(dirname "$0")/.."
ver=${RAY_VERSION:-2.60.0}     # the version the CPU tests use (.venv); override to match another
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pl=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
pip download -q --no-deps "${pl[@]}" "ray==$ver" -d "$tmp"
mkdir -p "$tmp/x" .whl/ray-deps
(cd "$tmp/x" && unzip -q "$tmp"/ray-*.whl \
  && rm -rf ray/jars ray/dashboard/client/build ray/rllib ray/tune ray/train ray/data ray/serve ray/llm ray/air \
  && find . -name '*.map' -delete\
  && tar -cf - . | xz -9 -T0 > "$OLDPWD/.whl/ray312.tar.xz")
# Ray core's own requirements (the GPU machine has no package index); those it already has are skipped there
pip download -q "${pl[@]}" -d .whl/ray-deps click filelock jsonschema "msgpack>=1,<2" "packaging>=24.2" \
  "protobuf>=3.20.3" pyyaml requests
ls -la .whl/ray312.tar.xz; du -sh .whl/ray-deps
