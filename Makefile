# `make demo` and `make test` each do their own set-up (a .venv with vidflow and its tools).
.PHONY: setup demo test test-gpu lint

setup:
	@bash scripts/setup.sh

demo: setup
	. .venv/bin/activate && vidflow demo

test: setup
	@bash scripts/test.sh

# On a GPU machine: GPU tests must run, not skip.
test-gpu: setup
	. .venv/bin/activate && VIDFLOW_REQUIRE_CUDA=1 python -m pytest -q tests/gpu

lint: setup
	. .venv/bin/activate && ruff check src tests
