"""Prometheus metrics of a running pipeline (``prometheus-client``).

Two parts, both on one :class:`~prometheus_client.CollectorRegistry` per server:

- :class:`PipelineCollector` reads ``Pipeline.snapshot()`` (through the monitor) at scrape time:
  per-source counters, states, fps and time since the last frame; sink ``stats()``; GPU memory.
  Nothing is counted twice and nothing runs between scrapes.
- :class:`TimingObserver` is a pipeline observer (``vidflow.observe``) that fills histograms:
  per-stage and per-sink wall time, muxer batch fill and wait, frame latency (receipt -> sinks).

Names follow Prometheus conventions: ``vidflow_`` prefix, ``_total`` counters, base units
(seconds, bytes), the ``source`` label is the source id (never a URI), ``sink`` the sink's name.
Process CPU seconds and resident memory come from prometheus-client's process collector.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import redact_uri
from ..stats import RunSummary
from .health import STATES, Monitor, canonical_state

__all__ = ["PipelineCollector", "TimingObserver", "build_registry"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FILL_BUCKETS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
# known keys of a sink's stats() -> (metric suffix, kind)
_SINK_KEYS = {"queued": ("queue_depth", "gauge"), "queue_size": ("queue_capacity", "gauge"),
              "lag_s": ("lag_seconds", "gauge"), "written": ("written", "counter"),
              "dropped": ("dropped", "counter"), "spool_messages": ("spool_messages", "gauge"),
              "spool_bytes": ("spool_bytes", "gauge"), "sent": ("sent", "counter"),
              "errors": ("errors", "counter")}


def _label(v: Any) -> str:
    return redact_uri(v)


def _sink_name(sink: Any, i: int) -> str:
    return str(getattr(sink, "name", None) or f"{type(sink).__name__}[{i}]")


class PipelineCollector(Collector):
    """Reads a pipeline's state at scrape time. ``snapshot``: returns the run summary;
    ``sinks``: returns the pipeline's sinks (those with ``stats()`` are reported);
    ``cuda``: returns the CUDA device index when the pipeline runs on CUDA, else None."""

    def __init__(self, snapshot: Callable[[], RunSummary], monitor: Monitor, *,
                 sinks: Callable[[], Sequence[Any]] = tuple, cuda: Callable[[], int | None] = lambda: None) -> None:
        self.snapshot, self.monitor, self.sinks, self.cuda = snapshot, monitor, sinks, cuda

    def describe(self) -> list:
        return []          # collected lazily: never at registration time

    def collect(self) -> Iterator[Metric]:
        summary = self.snapshot()
        self.monitor.sample(summary)
        health = self.monitor.sources()
        yield from self._sources(summary, health)
        yield from self._sinks()
        yield from self._gpu()

    def _sources(self, summary: RunSummary, health: dict) -> Iterator[Metric]:
        lab = ["source"]
        fams = {
            "decoded": CounterMetricFamily("vidflow_source_frames_decoded", "Frames the source's decoder produced", labels=lab),
            "frames": CounterMetricFamily("vidflow_source_frames_delivered", "Frames delivered to the sinks", labels=lab),
            "dropped": CounterMetricFamily("vidflow_source_frames_dropped", "Frames a live source dropped (queue full)", labels=lab),
            "errors": CounterMetricFamily("vidflow_source_decode_errors", "Decode errors and failures", labels=lab),
            "reconnects": CounterMetricFamily("vidflow_source_reconnects", "Successful reconnections", labels=lab),
            "stalls": CounterMetricFamily("vidflow_source_stalls", "Times the source went quiet past its stall timeout", labels=lab),
        }
        fps = GaugeMetricFamily("vidflow_source_fps", "Frames delivered per second over the last few seconds", labels=lab)
        since = GaugeMetricFamily("vidflow_source_seconds_since_last_frame", "Seconds since the source last decoded a frame", labels=lab)
        backlog = GaugeMetricFamily("vidflow_source_backlog_frames", "Frames decoded but not yet delivered or dropped", labels=lab)
        state = GaugeMetricFamily("vidflow_source_state", "1 for the source's current state (one of: " + ", ".join(STATES) + ")",
                                  labels=["source", "state"])
        for sid, st in summary.sources.items():
            if st.state == "removed":
                continue
            sl = [_label(sid)]
            for key, fam in fams.items():
                fam.add_metric(sl, float(getattr(st, key)))
            h = health.get(sid)
            cur = h.state if h is not None else canonical_state(st.state)
            for s in STATES:
                state.add_metric([sl[0], s], 1.0 if s == cur else 0.0)
            if h is not None:
                fps.add_metric(sl, h.fps)
                backlog.add_metric(sl, float(h.backlog))
                if h.since_frame_s is not None:
                    since.add_metric(sl, h.since_frame_s)
        yield from fams.values()
        yield from (fps, since, backlog, state)
        yield CounterMetricFamily("vidflow_batches", "Batches that went through the sinks", value=float(summary.batches))
        yield GaugeMetricFamily("vidflow_pipeline_running", "1 while the pipeline runs",
                                value=1.0 if summary.started and not summary.wall_s else 0.0)

    def _sinks(self) -> Iterator[Metric]:
        fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        state = GaugeMetricFamily("vidflow_sink_state", "1 for the sink's current state", labels=["sink", "state"])
        for i, sink in enumerate(self.sinks()):
            stats = getattr(sink, "stats", None)
            if not callable(stats):
                continue
            try:
                d = stats()
            except Exception as e:  # noqa: BLE001 - a scrape must not fail for one sink
                log.warning("sink %s: stats() failed: %s", _sink_name(sink, i), redact_uri(e))
                continue
            name = _label(d.get("name") or _sink_name(sink, i))
            if isinstance(d.get("state"), str):
                state.add_metric([name, d["state"]], 1.0)
            for key, v in d.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    continue
                suffix, kind = _SINK_KEYS.get(key, (re.sub(r"[^a-zA-Z0-9_]", "_", key), "gauge"))
                mname = f"vidflow_sink_{suffix}"
                if mname not in fams:
                    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                    fams[mname] = cls(mname, f"Sink stats() {key!r}", labels=["sink"])
                fams[mname].add_metric([name], float(v))
        yield from fams.values()
        if state.samples:
            yield state

    def _gpu(self) -> Iterator[Metric]:
        idx = self.cuda()
        if idx is None:
            return
        import torch

        if not torch.cuda.is_initialized():      # never initialise CUDA from a scrape
            return
        alloc = GaugeMetricFamily("vidflow_gpu_memory_allocated_bytes", "torch.cuda.memory_allocated", labels=["device"])
        res = GaugeMetricFamily("vidflow_gpu_memory_reserved_bytes", "torch.cuda.memory_reserved", labels=["device"])
        alloc.add_metric([str(idx)], float(torch.cuda.memory_allocated(idx)))
        res.add_metric([str(idx)], float(torch.cuda.memory_reserved(idx)))
        yield alloc
        yield res


class TimingObserver:
    """A pipeline observer (``ObservesStages``, ``ObservesWrites``, ``ObservesBatches``) filling
    histograms. ``batch_size``: the muxer's batch size, for the fill ratio. Each hook costs a
    few microseconds on the thread that did the work."""

    def __init__(self, registry: CollectorRegistry, *, batch_size: int) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"TimingObserver: batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.stage = Histogram("vidflow_stage_seconds", "Wall time of a stage (or half of a split stage) per batch",
                               ["stage"], registry=registry, buckets=_LATENCY_BUCKETS)
        self.write = Histogram("vidflow_sink_write_seconds", "Wall time of a sink's write per batch", ["sink"],
                               registry=registry, buckets=_LATENCY_BUCKETS)
        self.fill = Histogram("vidflow_muxer_batch_fill_ratio", "Frames per batch / the muxer's batch size",
                              registry=registry, buckets=_FILL_BUCKETS)
        self.wait = Histogram("vidflow_muxer_wait_seconds", "How long the muxer waited to fill a batch",
                              registry=registry, buckets=_LATENCY_BUCKETS)
        self.latency = Histogram("vidflow_frame_latency_seconds", "Frame receipt to the end of the sinks",
                                 registry=registry, buckets=_LATENCY_BUCKETS)

    def on_stage(self, stage: str, batch_size: int, seconds: float) -> None:
        self.stage.labels(stage).observe(seconds)

    def on_write(self, sink: str, batch_size: int, seconds: float) -> None:
        self.write.labels(sink).observe(seconds)

    def on_batch(self, frames: int, wait_s: float, latencies_s: Sequence[float]) -> None:
        self.fill.observe(frames / self.batch_size)
        if math.isfinite(wait_s):
            self.wait.observe(wait_s)
        for x in latencies_s:
            self.latency.observe(x)


def build_registry(collector: PipelineCollector, *, process: bool = True) -> CollectorRegistry:
    """A registry with the pipeline collector and (Linux) the process collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    if process:
        ProcessCollector(registry=reg)
    return reg
