"""Metrics: the collector's families from a summary, sink stats(), the timing observer."""

from __future__ import annotations

import math

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vidflow.serve.health import Monitor
from vidflow.serve.metrics import PipelineCollector, TimingObserver, build_registry
from vidflow.stats import RunSummary, SourceStats


def samples(registry) -> dict:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class StatsSink:
    name = "broker"

    def write(self, batch) -> None: ...

    def stats(self) -> dict:
        return {"name": "broker", "state": "running", "queued": 3, "queue_size": 8, "lag_s": 0.25, "written": 40,
                "dropped": 2, "spool_bytes": 1024, "error": None, "flag": True}


def test_collector_reports_sources_states_and_sinks_without_uris():
    s = RunSummary(batches=7, started=1.0)
    s.sources[0] = SourceStats(0, uri="rtsp://admin:hunter22@cam/1", state="running", frames=10, decoded=12, dropped=1,
                               errors=2, reconnects=3, stalls=1)
    s.sources["gone"] = SourceStats("gone", state="removed", frames=5)
    reg = build_registry(PipelineCollector(lambda: s, Monitor(), sinks=lambda: [StatsSink(), object()]))
    text = generate_latest(reg).decode()
    assert "hunter22" not in text and "rtsp" not in text
    got = samples(reg)
    src = (("source", "0"),)
    assert got[("vidflow_source_frames_decoded_total", src)] == 12
    assert got[("vidflow_source_frames_delivered_total", src)] == 10
    assert got[("vidflow_source_frames_dropped_total", src)] == 1
    assert got[("vidflow_source_decode_errors_total", src)] == 2
    assert got[("vidflow_source_reconnects_total", src)] == 3
    assert got[("vidflow_source_backlog_frames", src)] == 1
    assert got[("vidflow_source_state", (("source", "0"), ("state", "running")))] == 1
    assert got[("vidflow_source_state", (("source", "0"), ("state", "stalled")))] == 0
    assert not any(dict(k[1]).get("source") == "gone" for k in got)           # removed: its series go
    assert got[("vidflow_batches_total", ())] == 7
    assert got[("vidflow_pipeline_running", ())] == 1
    sk = (("sink", "broker"),)
    assert got[("vidflow_sink_queue_depth", sk)] == 3
    assert got[("vidflow_sink_lag_seconds", sk)] == 0.25
    assert got[("vidflow_sink_written_total", sk)] == 40
    assert got[("vidflow_sink_spool_bytes", sk)] == 1024
    assert got[("vidflow_sink_state", (("sink", "broker"), ("state", "running")))] == 1
    assert ("process_cpu_seconds_total", ()) in got and ("process_resident_memory_bytes", ()) in got
    assert not any(k[0].startswith("vidflow_gpu") for k in got)               # CPU pipeline: no GPU series


def test_timing_observer_fills_histograms():
    reg = build_registry(PipelineCollector(RunSummary, Monitor()), process=False)
    obs = TimingObserver(reg, batch_size=8)
    obs.on_stage("detect.launch", 8, 0.004)
    obs.on_stage("detect.launch", 8, 0.006)
    obs.on_write("jsonl", 8, 0.002)
    obs.on_batch(4, 0.01, [0.05, 0.07])
    obs.on_batch(8, math.nan, [])
    got = samples(reg)
    assert got[("vidflow_stage_seconds_count", (("stage", "detect.launch"),))] == 2
    assert abs(got[("vidflow_stage_seconds_sum", (("stage", "detect.launch"),))] - 0.01) < 1e-9
    assert got[("vidflow_sink_write_seconds_count", (("sink", "jsonl"),))] == 1
    assert got[("vidflow_muxer_batch_fill_ratio_count", ())] == 2
    assert got[("vidflow_muxer_batch_fill_ratio_bucket", (("le", "0.5"),))] == 1
    assert got[("vidflow_muxer_wait_seconds_count", ())] == 1                # NaN wait: not observed
    assert got[("vidflow_frame_latency_seconds_count", ())] == 2
