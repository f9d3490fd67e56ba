#!/usr/bin/env bash
# Set up a virtual environment in .venv with vidflow (editable) and its test tools.
# Reuses a torch that is already installed (a CUDA build on a GPU machine); otherwise installs
# torch==2.13.0. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv --system-site-packages .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q torch==2.13.0
fi
stamp=.venv/.vidflow-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
