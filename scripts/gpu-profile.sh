#!/usr/bin/env bash
# On the GPU machine: where the CPU goes at 64 streams, with py-spy (carried in .whl/extra).
#   1. D-p8 (decode only, 8 decode processes): on-CPU samples of one decode process;
#   2. E-p8 (the whole pipeline): on-CPU samples of the pipeline's process, per thread.
# Writes raw collapsed stacks to $OUT (or ./out/gpu-profile) and prints the top frames with
# scripts/pyspy_top.py. Same carry as gpu-check.sh (.whl, .models).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu-profile}
mkdir -p "$out" /tmp/site
if [ -f .whl/site312.tar.xz ] && [ ! -d /tmp/site/av ]; then tar -xJf .whl/site312.tar.xz -C /tmp/site; fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/extra/*.whl
export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
spy=/tmp/site/bin/py-spy
B="python3 -m vidflow.cli bench --streams ${STREAMS:-64} --model .models/yolo11n_shapes.torchscript --decode-processes 8 --seconds 20 --copy-seconds 0 --breakdown-seconds 0"
$B --skip M E B --out "$out/d.jsonl" > "$out/d.log" 2>&1 &
bench=$!
sleep 15
pid=$(pgrep -f "sources\.pool [0-9]" | head -1)
$spy record --nonblocking -r 50 -d 8 -f raw -o "$out/decode.txt" --pid "$pid" > /dev/null 2>&1
wait $bench
cut -c1-400 "$out/d.jsonl"
echo "== one decode process, on-CPU"
python3 scripts/pyspy_top.py "$out/decode.txt"
$B --skip D M B --variants full --out "$out/e.jsonl" > "$out/e.log" 2>&1 &
bench=$!
sleep 20
$spy record --nonblocking -r 50 -d 8 -f raw --threads -o "$out/main.txt" --pid "$bench" > /dev/null 2>&1
wait $bench
cut -c1-400 "$out/e.jsonl"
echo "== the pipeline's process, on-CPU, per thread"
python3 scripts/pyspy_top.py --threads "$out/main.txt"
