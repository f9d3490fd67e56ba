"""vidflow never depends on ``ultralytics`` (AGPL): no module under ``src/`` imports it and no
requirement of the package names it. It is a reference for tests and benchmarks on the GPU
machine only (``scripts/ultralytics-ref.sh``)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_imports_ultralytics():
    pat = re.compile(r"^\s*(import\s+ultralytics|from\s+ultralytics[\s.])", re.M)
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py") if pat.search(p.read_text())]
    assert hits == []


def test_no_requirement_names_ultralytics():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    assert reqs and not [r for r in reqs if re.match(r"\s*ultralytics\b", r, re.I)]
