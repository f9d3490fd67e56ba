"""CPU threads: cores from affinity and cgroup quotas (v1, v2, unlimited), the default torch
thread count, the environment override, apply_threads' restore value, torch_threads in YAML."""

from __future__ import annotations

import os

import pytest
import torch

from vidflow import _threads
from vidflow._threads import apply_threads, available_cpus, cgroup_cpu_limit, default_threads, resolve_threads
from vidflow.config import build_parts, load_config
from vidflow.errors import ConfigError


def _proc_cgroup(monkeypatch, text):
    real = _threads._read

    def fake(path):
        return text if str(path) == "/proc/self/cgroup" else real(path)
    monkeypatch.setattr(_threads, "_read", fake)


def test_cgroup_v2_quota(tmp_path, monkeypatch):
    _proc_cgroup(monkeypatch, "0::/job\n")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert available_cpus(root=tmp_path) == min(2, len(os.sched_getaffinity(0)))   # 1.5 rounds up


def test_cgroup_v2_unlimited_and_v1_quota(tmp_path, monkeypatch):
    _proc_cgroup(monkeypatch, "0::/\n")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    _proc_cgroup(monkeypatch, "4:cpu,cpuacct:/docker/abc\n")
    d = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("100000")
    (d / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_limit(tmp_path) == 1.0
    assert available_cpus(root=tmp_path) == 1
    (d / "cpu.cfs_quota_us").write_text("-1")      # v1 unlimited
    assert cgroup_cpu_limit(tmp_path) is None


def test_affinity_caps_the_count(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    _proc_cgroup(monkeypatch, "")
    assert available_cpus(root=tmp_path) == 1


def test_default_threads_leave_a_core_and_cuda_gets_one():
    assert default_threads("cpu", cpus=1) == 1
    assert default_threads("cpu", cpus=2) == 1
    assert default_threads("cpu", cpus=8) == 7
    assert default_threads("cpu", cpus=128) == _threads.MAX_DEFAULT
    assert default_threads("cuda:0", cpus=64) == 1


def test_decoder_threads_share_the_cores():
    from vidflow._threads import decoder_threads

    assert decoder_threads(1, cpus=2) == 2 and decoder_threads(4, cpus=2) == 1
    assert decoder_threads(4, cpus=64) == 4 and decoder_threads(0, cpus=8) == 8


def test_resolve_threads_env_and_errors(monkeypatch):
    monkeypatch.delenv(_threads.ENV, raising=False)
    assert resolve_threads(3) == 3
    assert resolve_threads(None) == default_threads("cpu")
    monkeypatch.setenv(_threads.ENV, "5")
    assert resolve_threads(None) == 5 and resolve_threads(2) == 2
    monkeypatch.setenv(_threads.ENV, "many")
    with pytest.raises(ValueError, match="VIDFLOW_TORCH_THREADS"):
        resolve_threads(None)
    with pytest.raises(ValueError, match=">= 1"):
        resolve_threads(0)


def test_apply_threads_returns_the_count_before():
    start = torch.get_num_threads()
    try:
        before = apply_threads(1)
        assert before == start and torch.get_num_threads() == 1
        assert apply_threads(before) == 1 and torch.get_num_threads() == start
    finally:
        torch.set_num_threads(start)


def test_torch_threads_in_yaml(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("torch_threads: 1\nsources: [{synthetic: {frames: 1}}]\nsinks: []\n")
    assert build_parts(load_config(y)).settings["torch_threads"] == 1
    with pytest.raises(ConfigError, match="torch_threads: expected int"):
        build_parts(load_config(y, ["torch_threads=abc"]))
