"""Shared fixtures of the end-to-end tests: ``gst`` (GStreamer's RTSP server is there, else a skip;
``VIDFLOW_REQUIRE_GST=1`` turns the skip into a failure, as in CI)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rtsp_server import gst_available  # noqa: E402

REQUIRE_GST = os.environ.get("VIDFLOW_REQUIRE_GST", "") not in ("", "0", "false", "False")


@pytest.fixture(scope="module")
def gst() -> None:
    why = gst_available()
    if why is not None:
        if REQUIRE_GST:
            pytest.fail(f"VIDFLOW_REQUIRE_GST=1 but {why}")
        pytest.skip(why)
