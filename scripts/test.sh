#!/usr/bin/env bash
# Run the test suite (CPU; GPU tests skip without CUDA). Installs what the tests need first.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# shellcheck disable=SC1091
. .venv/bin/activate
if [ -f scripts/install-ci-deps.sh ]; then bash scripts/install-ci-deps.sh || echo "warning: system test dependencies not installed" >&2; fi
if [ -f scripts/fetch_test_clips.py ]; then python scripts/fetch_test_clips.py || echo "warning: real test clips not fetched" >&2; fi
if [ "${CI:-}" = "true" ]; then export VIDFLOW_REQUIRE_GST=1 VIDFLOW_REQUIRE_REAL_CLIPS=1; fi
# the type check of src/ ([tool.mypy] in pyproject.toml); VIDFLOW_SKIP_MYPY=1 skips it locally
if [ "${VIDFLOW_SKIP_MYPY:-}" != "1" ]; then
  python -m mypy || { echo "type check failed: mypy (see [tool.mypy] in pyproject.toml)" >&2; exit 1; }
fi
python -m pytest -q -p no:cacheprovider --timeout=600 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$rc"
