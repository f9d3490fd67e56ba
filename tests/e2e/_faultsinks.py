"""Sinks for the fault tests, named in their YAML as ``tests.e2e._faultsinks:Name`` (with
``--allow-code tests.e2e._faultsinks``): a slow disk and a sink that never finishes a write."""

from __future__ import annotations

import threading
import time

from vidflow.sinks.base import ThreadedSink


class SlowSink(ThreadedSink):
    """Spends ``delay`` seconds on each batch (a slow disk or network), so a backlog builds up;
    ``hang=True``: the first batch never finishes (a write stuck in the kernel)."""

    def __init__(self, delay: float = 0.2, queue_size: int = 64, hang: bool = False, name: str = "slow") -> None:
        super().__init__(name=name, queue_size=queue_size)
        self.delay, self.hang = float(delay), bool(hang)
        self._never = threading.Event()

    def _process(self, batch) -> None:
        if self.hang:
            self._never.wait()
        time.sleep(self.delay)
