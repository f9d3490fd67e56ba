"""Shared test set-up: the ``gpu`` marker and ``VIDFLOW_REQUIRE_CUDA``.

Tests marked ``@pytest.mark.gpu`` are skipped when CUDA is not available, unless
``VIDFLOW_REQUIRE_CUDA=1`` is set (as on the GPU machine), in which case a missing GPU fails them.
"""

from __future__ import annotations

import os

import pytest
import torch

REQUIRE_CUDA = os.environ.get("VIDFLOW_REQUIRE_CUDA", "") not in ("", "0", "false", "False")


def _no_cuda() -> None:
    if REQUIRE_CUDA:
        pytest.fail("VIDFLOW_REQUIRE_CUDA=1 but torch.cuda.is_available() is False")
    pytest.skip("needs CUDA (VIDFLOW_REQUIRE_CUDA=1 turns this skip into a failure)")


def pytest_runtest_setup(item):
    if "gpu" in item.keywords and not torch.cuda.is_available():
        _no_cuda()


@pytest.fixture
def cuda_device() -> torch.device:
    """The CUDA device for GPU tests."""
    if not torch.cuda.is_available():
        _no_cuda()
    return torch.device("cuda")
