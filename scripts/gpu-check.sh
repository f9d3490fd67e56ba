#!/usr/bin/env bash
# The GPU machine's full check, in one run (see docs/STATUS.md). Expects, carried from here:
#   .whl/site312.tar.xz   (../shared/tools/device-wheels.sh) and .whl/extra/*.whl (motmetrics,
#                          xmltodict: pip download --no-deps --python-version 3.12 -d .whl/extra ...)
#   .models/              (copies of ../shared/models/*)       tests/data/ (scripts/fetch_test_clips.py)
#   .whl/ray312.tar.xz, .whl/ray-deps/ (scripts/device-ray.sh; only for the fleet step, which uses the
#                          demo model: carry site312 + Ray + .whl/extra (orjson), no .models: under 64 MiB)
#   .before/src           (only for the compare step: mkdir .before && git archive e07be02 src | tar -x -C .before)
#   .ul/ultralytics       (only for the ultralytics step and the heads parity test: pip download --no-deps ultralytics,
#                          unzip into .ul; the reference only, never a dependency)
# Usage there: bash scripts/gpu-check.sh [tests|demo|bench|fleet|live|seg|compare|contention|startup|ultralytics|host]...   (default: tests demo bench)
#   compare: E/D/M of this tree against .before/src, alternated A B A B on the same host (issue 13)
#   live: issue 14's targets through `vidflow bench --live` (LIVE_TARGETS="h264 hevc reconnect max";
#         ~90 s, ~90 s, ~330 s, ~300 s: keep one call under 10 min, e.g. LIVE_TARGETS="h264 hevc" first)
# Writes logs to $OUT (or ./out/gpu-check) and prints the figures. The tests step reports warnings
# instead of failing on them (pyproject's filterwarnings=error is tuned to CI's libraries, not the
# GPU machine's cp312 site); GPU_WARNINGS=-Werror makes them errors there too.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu-check}
mkdir -p "$out" /tmp/site
if [ -f .whl/site312.tar.xz ] && [ ! -d /tmp/site/av ]; then tar -xJf .whl/site312.tar.xz -C /tmp/site; fi
if ls .whl/extra/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/extra/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ -f .whl/ray312.tar.xz ] && [ ! -d /tmp/site-ray/ray ]; then
  # last on the path: the machine's own packages win; Ray and what it lacks come from here
  mkdir -p /tmp/site-ray && tar -xJf .whl/ray312.tar.xz -C /tmp/site-ray
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-ray .whl/ray-deps/*.whl
fi
[ -d /tmp/site-ray ] && export PYTHONPATH=$PYTHONPATH:/tmp/site-ray
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(tests demo bench)
rc=0
for step in "${steps[@]}"; do
  case "$step" in
    tests)
      VIDFLOW_REQUIRE_CUDA=1 VIDFLOW_MOT_FRAMES=${VIDFLOW_MOT_FRAMES:-300} timeout 420 python3 -m pytest -q -s \
        -p no:cacheprovider ${GPU_WARNINGS:--W default} tests/gpu tests/unit/test_color.py tests/unit/test_real_clips.py tests/e2e/test_mot.py \
        > "$out/gpu_tests.log" 2>&1 || rc=1
      grep -E '^(FIGURE )?\{|MOTA|passed|failed|^FAILED|^ERROR' "$out/gpu_tests.log" | cut -c1-400 ;;
    demo)
      ( time timeout 300 python3 -m vidflow.cli demo --device cuda --out /tmp/vidflow-demo ) > "$out/demo.log" 2>&1 || rc=1
      tail -n 15 "$out/demo.log" ;;
    bench)
      timeout 420 python3 -m vidflow.cli bench --streams ${BENCH_STREAMS:-64} --seconds ${BENCH_SECONDS:-8} \
        --model .models/yolo11n_shapes.torchscript --variants full paced --pace 30 ${BENCH_EXTRA:-} --out "$out/bench.jsonl" \
        > "$out/bench.log" 2>&1 || rc=1
      cut -c1-600 "$out/bench.jsonl" 2>/dev/null; tail -n 5 "$out/bench.log" ;;
    fleet)   # issue 19's one-GPU target: 2 workers sharing the GPU, 64 cameras, a worker killed; the
             # single pipeline gets the fleet's 4 decode processes in all (FLEET_SINGLE_DP=2: one worker's)
      timeout 540 python3 benchmarks/fleet.py --device cuda --cameras 64 --workers 2 --num-gpus 0.5 --num-cpus 4 \
        --size 1920x1080 --batch 32 --decode-processes 2 --single-decode-processes ${FLEET_SINGLE_DP:-4} --rounds 2 --kill > "$out/fleet.log" 2>&1 || rc=1
      grep -E '^\{' "$out/fleet.log" | cut -c1-600; tail -n 5 "$out/fleet.log" ;;
    seg)     # issue 18: seg E over detect E at 64 x 1080p (benchmarks/seg.py; both models in .models)
      timeout 300 python3 benchmarks/seg.py --rounds ${SEG_ROUNDS:-1} --seconds ${BENCH_SECONDS:-6} > "$out/seg.log" 2>&1 || rc=1
      grep -E '^\{' "$out/seg.log" | python3 -c 'import json,sys
for l in sys.stdin:
    d = json.loads(l); d.pop("memory_curve_s_rss_gpu_mb", None); print(json.dumps(d)[:700])' ;;
    compare)
      # no profiler window (--copy-seconds 0): torch.profiler's stop segfaulted in 2 of 8 E runs here
      # (CUPTI teardown while CUDA graphs replay on the pipeline's threads); the bench step counts copies.
      # ~100 s per tree and round: COMPARE_ROUNDS=2 needs ~420 s of one call
      B="--streams ${BENCH_STREAMS:-64} --seconds ${BENCH_SECONDS:-6} --warmup 2 --skip B --copy-seconds 0 --model .models/yolo11n_shapes.torchscript"
      for round in $(seq 1 ${COMPARE_ROUNDS:-2}); do
        for tree in after before; do
          src=$PWD/src; [ $tree = before ] && src=$PWD/.before/src
          [ -d "$src" ] || { echo "compare: $src missing"; rc=2; continue; }
          # one log and one JSONL for all rounds: the device hands back at most 8 files a call
          echo "== $tree, round $round" | tee -a "$out/compare.log" >> "$out/compare.jsonl"
          PYTHONPATH=/tmp/site:$src timeout 240 python3 -m vidflow.cli bench $B --out "$out/compare_now.jsonl" \
            >> "$out/compare.log" 2>&1 || rc=1
          cut -c1-400 "$out/compare_now.jsonl" 2>/dev/null; cat "$out/compare_now.jsonl" >> "$out/compare.jsonl" 2>/dev/null
          rm -f "$out/compare_now.jsonl"
        done
      done ;;
    live)    # issue 14: 64 live 1080p30 cameras H.264 / HEVC, 100 reconnects, max cameras (docs/PERFORMANCE.md)
      for t in ${LIVE_TARGETS:-h264 hevc reconnect max}; do
        case "$t" in
          h264|hevc) a="--codec $t --seconds ${LIVE_SECONDS:-60}" ;;
          reconnect) a="--kill-every 3 --seconds 303" ;;
          max) a="--max-cameras --streams ${LIVE_MAX_FROM:-80} --step ${LIVE_STEP:-8} --resolution ${LIVE_RESOLUTION:-4} --seconds 20" ;;
          *) echo "unknown live target $t (h264 | hevc | reconnect | max)"; rc=2; continue ;;
        esac
        timeout 590 python3 -m vidflow.cli bench --live --streams ${LIVE_STREAMS:-64} $a ${LIVE_EXTRA:-} \
          --out "$out/live.jsonl" > "$out/live_$t.log" 2>&1 || rc=1
        grep -E '^\{' "$out/live_$t.log" | cut -c1-900; tail -n 3 "$out/live_$t.log" | grep -v '^{'
      done ;;
    ultralytics)  # issue 15: vidflow's E beside Ultralytics' predict(stream=True), one model per thread, 64 streams
      # (carry .ul: `pip download --no-deps ultralytics` unzipped there; the reference only); ~150 s
      timeout 500 python3 benchmarks/ultralytics_streams.py --ultralytics .ul --streams ${BENCH_STREAMS:-64} \
        --seconds ${BENCH_SECONDS:-20} > "$out/ultralytics.log" 2>&1 || rc=1
      grep -E '^\{' "$out/ultralytics.log" | cut -c1-500; tail -n 3 "$out/ultralytics.log" | grep -v '^{' ;;
    host)         # issue 15: vidflow's own Python per frame on this host's CPU, no model compute (~40 s)
      timeout 200 python3 benchmarks/host_overhead.py --seconds 8 --decode-processes 0 2 8 > "$out/host.log" 2>&1 || rc=1
      timeout 100 python3 benchmarks/host_overhead.py --seconds 8 --fake-sources --decode-processes 0 >> "$out/host.log" 2>&1 || rc=1
      grep -E '^\{' "$out/host.log" | cut -c1-400 ;;
    startup)      # issue 15: `vidflow run` of a 300-frame 1080p clip with the detector, twice (cold, then warm)
      python3 -c "from vidflow.bench.cli import make_bench_clip as m; print(m())" > "$out/startup.log" 2>&1
      clip=$(tail -n 1 "$out/startup.log")
      printf 'device: cuda\nsources:\n  - file: %s\nstages:\n  - detect: {model: %s}\n  - track: {}\nsinks:\n  - jsonl: /tmp/startup.jsonl\n' \
        "$clip" "$PWD/.models/yolo11n_shapes.torchscript" > /tmp/startup.yaml
      for run in cold warm; do
        echo "== $run" >> "$out/startup.log"
        ( time timeout 200 python3 -m vidflow.cli run /tmp/startup.yaml ) >> "$out/startup.log" 2>&1 || rc=1
      done
      grep -E '^==|^total|^start-up|^process|^real' "$out/startup.log" ;;
    contention)   # issue 15: does the model slow down while the decode processes run (another process)?
      # M alone, D alone, then M in a second process while D runs; nvidia-smi dmon's sm % / dec % beside
      # them (~110 s). If M under D falls toward 1/(1/D+1/M) the GPU serialises the two (no MPS)
      B="python3 -m vidflow.cli bench --streams ${BENCH_STREAMS:-64} --copy-seconds 0 --warmup 1 --model .models/yolo11n_shapes.torchscript"
      python3 -c "from vidflow.bench.cli import make_bench_clip as m; print(m())" > "$out/contention.log" 2>&1
      $B --skip D E B --seconds 5 --out "$out/m_alone.jsonl" >> "$out/contention.log" 2>&1 || rc=1
      $B --skip M E B --seconds 5 --out "$out/d_alone.jsonl" >> "$out/contention.log" 2>&1 || rc=1
      $B --skip M E B --seconds 40 --out "$out/d_with_m.jsonl" >> "$out/contention.log" 2>&1 &
      dpid=$!
      sleep 12; nvidia-smi dmon -s u -c 30 > "$out/dmon.log" 2>&1 &
      $B --skip D E B --seconds 8 --out "$out/m_with_d.jsonl" >> "$out/contention.log" 2>&1 || rc=1
      wait $dpid || rc=1; wait
      for f in m_alone d_alone m_with_d d_with_m; do
        python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d["bench"] != "summary": print(sys.argv[2], d["bench"], d["fps"], "fps", d["cpu_cores"], "cores", d.get("host_cpu"), d["device"])' "$out/$f.jsonl" $f || rc=1
      done
      cat "$out/dmon.log" ;;
    *) echo "unknown step $step (tests | demo | bench | fleet | compare | live | seg | contention | startup | ultralytics | host)"; rc=2 ;;
  esac
done
exit $rc
