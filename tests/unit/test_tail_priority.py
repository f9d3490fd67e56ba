"""``VIDFLOW_TAIL_PRIORITY``: the tail stream's CUDA priority (an experiment's knob, read when a
pipeline's tail starts)."""

from __future__ import annotations

import pytest

from vidflow.runtime.overlap import tail_priority


def test_default_is_zero(monkeypatch):
    monkeypatch.delenv("VIDFLOW_TAIL_PRIORITY", raising=False)
    assert tail_priority() == 0
    monkeypatch.setenv("VIDFLOW_TAIL_PRIORITY", " ")
    assert tail_priority() == 0


def test_integer(monkeypatch):
    monkeypatch.setenv("VIDFLOW_TAIL_PRIORITY", "-1")
    assert tail_priority() == -1


def test_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("VIDFLOW_TAIL_PRIORITY", "high")
    with pytest.raises(ValueError, match="VIDFLOW_TAIL_PRIORITY.*'high'"):
        tail_priority()
