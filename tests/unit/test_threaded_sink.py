"""ThreadedSink's declared policies, driven by a sink whose worker waits on an event (no sleeps),
and the disk spool's bound and restart."""

from __future__ import annotations

import threading

import pytest

from tests.unit._brokers import wait_until
from vidflow.errors import SinkError
from vidflow.sinks._spool import DiskSpool, MemorySpool
from vidflow.sinks.base import Sink, SupportsEndSource, SupportsStats, ThreadedSink


class Gate(ThreadedSink):
    """Processes an item only when the gate is open; records what it processed."""

    def __init__(self, fail_on=None, **kw):
        super().__init__(name="gate", **kw)
        self.gate, self.done, self.ended, self.fail_on, self.finished = threading.Event(), [], [], fail_on, False

    def _process(self, item):
        self.gate.wait(30)
        if item == self.fail_on:
            raise OSError(28, "No space left on device")
        self.done.append(item)

    def _end_source(self, sid):
        self.ended.append((sid, list(self.done)))

    def _finish(self):
        self.finished = True


def test_protocols():
    g = Gate()
    assert isinstance(g, Sink) and isinstance(g, SupportsEndSource) and isinstance(g, SupportsStats)
    assert g.stats()["state"] == "idle"           # no thread before the first write
    g.close()
    assert g.finished


def test_drop_oldest_never_blocks_and_counts():
    g = Gate(queue_size=2, when_full="drop_oldest")
    g.write(0)
    wait_until(lambda: g.stats()["queued"] == 0, what="the worker to take item 0 (then it waits)")
    for i in range(1, 10):
        g.write(i)                               # never waits: the worker is stuck on item 0
    assert g.stats()["dropped"] == 7
    st = g.stats()
    assert st["queued"] == 2 and st["lag_s"] >= 0 and st["state"] == "running"
    g.gate.set()
    g.close()
    assert g.done == [0, 8, 9] and g.stats()["written"] == 3


def test_block_loses_nothing_and_end_source_is_ordered():
    g = Gate(queue_size=1)
    g.gate.set()
    for i in range(20):
        g.write(i)
    g.end_source(7)
    g.close()
    assert g.done == list(range(20)) and g.ended == [(7, list(range(20)))] and g.stats()["dropped"] == 0


def test_isolate_then_raise_at_close_and_stop_policy():
    g = Gate(fail_on=1)
    g.gate.set()
    g.write(0)
    g.write(1)
    wait_until(lambda: g.failed, what="failure")
    g.write(2)                                   # isolated: dropped, counted, no raise
    st = g.stats()
    assert st["state"] == "failed" and "No space left" in st["error"] and st["dropped"] == 1
    with pytest.raises(SinkError, match="gate: OSError"):
        g.close()
    assert g.finished                           # files still get closed after a failure
    s = Gate(fail_on=0, on_error="stop")
    s.gate.set()
    s.write(0)
    wait_until(lambda: s.failed, what="failure")
    with pytest.raises(SinkError):
        s.write(1)
    s.close()                                    # raised once already


def test_bad_policies():
    with pytest.raises(ValueError, match="when_full"):
        Gate(when_full="drop_newest")
    with pytest.raises(ValueError, match="on_error"):
        Gate(on_error="ignore")


@pytest.mark.parametrize("kind", ["disk", "memory"])
def test_spool_bound_order_and_restart(tmp_path, kind):
    mk = (lambda: DiskSpool(tmp_path / "s.db", max_messages=5)) if kind == "disk" else (lambda: MemorySpool(max_messages=5))
    sp = mk()
    sp.append([("t", "k", b"%d" % i) for i in range(4)], {0: 4})
    sp.append([("t", "k", b"%d" % i) for i in range(4, 8)], {0: 8})
    assert sp.size() == (5, 5) and sp.dropped == 3
    rows = sp.peek(3)
    assert [r[3] for r in rows] == [b"3", b"4", b"5"]
    sp.ack(rows[1][0])
    assert [r[3] for r in sp.peek(10)] == [b"5", b"6", b"7"]
    sp.close()
    if kind == "disk":
        again = mk()
        assert [r[3] for r in again.peek(10)] == [b"5", b"6", b"7"] and again.seqs() == {0: 8}
        again.close()
    new = DiskSpool(tmp_path / "n.db", max_messages=3, on_full="drop_newest")
    new.append([("t", "k", b"%d" % i) for i in range(5)], {})
    assert [r[3] for r in new.peek(10)] == [b"0", b"1", b"2"] and new.dropped == 2
