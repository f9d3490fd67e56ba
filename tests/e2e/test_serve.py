"""`vidflow serve` for real: a server process on a demo-like pipeline, scraped and steered over
HTTP; the live page in headless Chromium (Debian's, through Playwright); auth and redaction.

Under CI=true the browser test fails when /usr/bin/chromium or Playwright is missing
(scripts/install-ci-deps.sh installs Chromium, the 'test' extra Playwright).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vidflow.scenes import make_clip

CHROMIUM = "/usr/bin/chromium"
CI = os.environ.get("CI", "") == "true"
TOKEN = "e2e-token-0123456789abcdef"
SECRET = "s3cretpw"
ARTEFACTS = Path(os.environ.get("VIDFLOW_TEST_ARTEFACTS", "out/test-artefacts"))


def wait_until(pred, timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not met within {timeout} s")
        time.sleep(0.05)


class Served:
    """`python -m vidflow.cli serve ...` as a child process; its URL read from stderr."""

    def __init__(self, args: list[str], tmp: Path, env: dict | None = None) -> None:
        self.err_path = tmp / "serve.stderr"
        self.err = self.err_path.open("w")
        e = {**os.environ, **(env or {})}
        e["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"), e.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen([sys.executable, "-m", "vidflow.cli", "-v", "serve", *args], stdout=subprocess.PIPE,
                                     stderr=self.err, env=e, text=True)
        self.url = ""

    def wait_url(self) -> str:
        def found() -> bool:
            m = re.search(r"serving (http://\S+)", self.err_path.read_text())
            if m:
                self.url = m.group(1)
            assert self.proc.poll() is None, self.err_path.read_text()
            return bool(m)
        wait_until(found, 60, "server start")
        return self.url

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        self.err.close()
        return self.proc.returncode, out, self.err_path.read_text()


def scrape(c: httpx.Client) -> tuple[float, dict]:
    t = time.monotonic()
    text = c.get("/metrics").text
    got = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            got[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return t, got


def write_yaml(tmp: Path, clip: Path) -> Path:
    y = tmp / "pipeline.yaml"
    # queue_size 64: the paced file source (live: it would drop when its queue is full) has 2 s of
    # slack, so a drop means the loop really stalled while sources were added and removed
    y.write_text(f"""device: cpu
queue_size: 64
sources:
  - file: {{path: "{clip}", realtime: true}}
  - synthetic: {{width: 160, height: 120, frames: null, fps: 30, live: true, seed: 3}}
muxer: {{batch_size: 4, max_wait_ms: 20}}
stages:
  - draw: {{}}
sinks:
  - jsonl: "{tmp / 'frames.jsonl'}"
""")
    return y


def test_metrics_and_control_through_both_apis(tmp_path):
    clip = tmp_path / "a.mp4"
    make_clip(clip, width=160, height=120, frames=300, fps=30, seed=1)
    extra = tmp_path / "b.mp4"
    make_clip(extra, width=160, height=120, frames=600, fps=30, seed=2)
    srv = Served([str(write_yaml(tmp_path, clip)), "--http", "127.0.0.1:0"], tmp_path)
    try:
        with httpx.Client(base_url=srv.wait_url(), timeout=20) as c:
            wait_until(lambda: c.get("/readyz").status_code == 200, 60, "ready")
            assert c.get("/startupz").status_code == 200 and c.get("/livez").json() == {"status": "ok"}
            # counters grow; the fps gauge agrees with the rate between two scrapes
            t1, m1 = scrape(c)
            key = ("vidflow_source_frames_delivered_total", (("source", "1"),))
            wait_until(lambda: scrape(c)[1][key] >= m1[key] + 120, 60, "120 more frames")
            t2, m2 = scrape(c)
            for name in ("vidflow_source_frames_decoded_total", "vidflow_source_frames_delivered_total"):
                assert m2[(name, (("source", "1"),))] > m1[(name, (("source", "1"),))]
            rate = (m2[key] - m1[key]) / (t2 - t1)
            gauge = m2[("vidflow_source_fps", (("source", "1"),))]
            print(f"fps gauge {gauge:.2f}, rate from two scrapes {rate:.2f}")
            assert abs(gauge - rate) <= 0.1 * rate
            assert m2[("vidflow_source_state", (("source", "1"), ("state", "running")))] == 1
            assert m2[("vidflow_batches_total", ())] > m1[("vidflow_batches_total", ())]
            assert m2[("vidflow_frame_latency_seconds_count", ())] > 0
            assert ("process_resident_memory_bytes", ()) in m2
            # DeepStream's API: add, list, remove
            r = c.post("/api/v1/stream/add", json={
                "key": "sensor", "value": {"camera_id": "cam-ds", "camera_name": "door", "camera_url": f"file://{extra}",
                                           "change": "camera_add", "metadata": {"resolution": "160 x 120", "codec": "h264",
                                                                                "framerate": 30}},
                "headers": {"source": "test", "created_at": "2026-12-03T00:00:00.000Z"}})
            assert r.status_code == 200 and r.json() == {"status": "HTTP/1.1 200 OK", "reason": "STREAM_ADD_SUCCESS"}
            info = c.get("/api/v1/stream/get-stream-info").json()["stream-info"]
            assert {"camera_id": "cam-ds", "camera_name": "door"} in info["stream-info"]
            wait_until(lambda: c.get("/api/v1/sources/cam-ds").json()["frames"] > 10, 30, "cam-ds frames")
            r = c.post("/api/v1/stream/remove", json={"key": "sensor", "value": {"camera_id": "cam-ds", "change": "camera_remove"}})
            assert r.json()["reason"] == "STREAM_REMOVE_SUCCESS"
            assert c.get("/api/v1/sources/cam-ds").status_code == 404
            # vidflow's own API: add, get, delete
            r = c.post("/api/v1/sources", json={"id": "cam-own", "source": {"synthetic": {
                "width": 160, "height": 120, "frames": None, "fps": 15, "live": True}}})
            assert r.status_code == 201, r.text
            wait_until(lambda: c.get("/api/v1/sources/cam-own").json()["frames"] > 10, 30, "cam-own frames")
            assert c.delete("/api/v1/sources/cam-own").status_code == 200
            ids = [s["id"] for s in c.get("/api/v1/sources").json()["sources"]]
            assert ids == [0, 1]
            # the file stream ran through all of this: every frame it offered was delivered
            wait_until(lambda: c.get("/api/v1/sources/0").json()["frames"] == 300, 60, "file source delivered")
            rec = c.get("/api/v1/sources/0").json()
            assert rec["decoded"] == 300 and rec["frames"] == 300
    finally:
        code, out, err = srv.stop()
    assert code == 143, err           # stopped by SIGTERM after a clean stop (vidflow.cli)
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    nums = sorted(x["frame_num"] for x in lines if x["source_id"] == 0)
    assert nums == list(range(300))
    assert any(x["source_id"] == "cam-ds" for x in lines) and any(x["source_id"] == "cam-own" for x in lines)


def test_auth_and_redaction(tmp_path):
    clip = tmp_path / "a.mp4"
    make_clip(clip, width=160, height=120, frames=30, fps=30)
    y = write_yaml(tmp_path, clip)
    # not loopback, no token: refuses to start (nothing is bound)
    env = {k: v for k, v in os.environ.items() if k != "VIDFLOW_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "vidflow.cli", "serve", str(y), "--http", "0.0.0.0:0"], env={
        **env, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}, capture_output=True, text=True,
        timeout=120)
    assert r.returncode == 2 and "needs a token" in r.stderr and "serving" not in r.stderr
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    tok.chmod(0o600)
    srv = Served([str(y), "--http", "127.0.0.1:0", "--token-file", str(tok)], tmp_path)
    ok = {"Authorization": f"Bearer {TOKEN}"}
    try:
        url = srv.wait_url()
        with httpx.Client(base_url=url, timeout=20) as c:
            assert c.get("/livez").status_code == 200
            for path in ("/readyz", "/metrics", "/api/v1/sources", "/view", "/api/v1/stream/get-stream-info"):
                assert c.get(path).status_code == 401, path
            wait_until(lambda: c.get("/readyz", headers=ok).status_code == 200, 60, "ready")
            bad = f"rtsp://admin:{SECRET}@127.0.0.1:9/stream"
            r = c.post("/api/v1/sources", json={"id": "cam-pw", "uri": bad}, headers=ok)
            assert r.status_code == 201 and SECRET not in r.text and "admin:***@" in r.text
            r = c.post("/api/v1/stream/add", headers=ok, json={"key": "sensor", "value": {
                "camera_id": "cam-pw2", "camera_url": bad.replace("/stream", "/two")}})
            assert r.status_code == 200
            wait_until(lambda: c.get("/api/v1/sources/cam-pw", headers=ok).json()["last_error"] != "", 60, "error shown")
            bodies = [c.get(p, headers=ok).text for p in ("/api/v1/sources", "/api/v1/sources/cam-pw", "/api/v1/status",
                                                           "/api/v1/stream/get-stream-info", "/metrics", "/view",
                                                           "/readyz", "/startupz")]
            assert all(SECRET not in b for b in bodies)
            assert "admin:***@127.0.0.1:9" in bodies[0]
            r = c.post("/api/v1/sources", json={"id": "cam-pw", "uri": bad}, headers=ok)     # 409 names it, redacted
            assert r.status_code == 409 and SECRET not in r.text
    finally:
        code, out, err = srv.stop()
    assert SECRET not in err and SECRET not in out
    assert "cam-pw" in out                                   # the summary table lists it, redacted


def test_live_page_in_chromium(tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if CI:
            pytest.fail("playwright is not installed (the 'test' extra)")
        pytest.skip("playwright is not installed")
    if not os.path.exists(CHROMIUM):
        if CI:
            pytest.fail(f"{CHROMIUM} is missing: scripts/install-ci-deps.sh installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing")
    from vidflow import serve
    from vidflow.mux import Muxer
    from vidflow.pipeline import Pipeline
    from vidflow.sources.synthetic import SyntheticSource
    from vidflow.testing import MemorySink

    pipe = Pipeline({"door": SyntheticSource(320, 240, frames=None, fps=20, live=True, seed=1),
                     "yard": SyntheticSource(320, 240, frames=None, fps=20, live=True, seed=2),
                     "gate": SyntheticSource(320, 240, frames=None, fps=20, live=True, seed=3)}
                    if _takes_id_dict() else
                    [SyntheticSource(320, 240, frames=None, fps=20, live=True, seed=i) for i in range(3)],
                    Muxer(batch_size=3, max_wait_ms=20), sinks=[MemorySink(keep_images=False)], device="cpu")
    srv = serve.start(pipe, "127.0.0.1:0", view_fps=10)
    run = threading.Thread(target=pipe.run, daemon=True)
    run.start()
    ids = [str(k) for k in pipe.summary.sources]
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shot = (ARTEFACTS / "serve_live_page.png").resolve()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 720}, bypass_csp=True)   # (for wait_for_function)
            page.goto(srv.url + "/view")
            page.wait_for_function("Number(document.getElementById('view').dataset.seq || 0) > 0", timeout=60_000)
            for sid in ids:
                page.wait_for_selector(f"#states tr[data-id='{sid}']", timeout=30_000)
            img = page.locator("#view")
            first = img.screenshot()
            seq = page.evaluate("document.getElementById('view').dataset.seq")
            page.wait_for_function(f"document.getElementById('view').dataset.seq !== '{seq}'", timeout=30_000)
            page.wait_for_function("document.getElementById('view').complete", timeout=10_000)
            second = img.screenshot()
            assert first != second, "the live image did not change"
            rows = page.locator("#states tbody tr").all_inner_texts()
            assert sorted(r.split()[0] for r in rows) == sorted(ids)
            assert all("running" in r for r in rows)
            page.wait_for_function("document.getElementById('lat').textContent.includes('median')", timeout=30_000)
            for _ in range(20):                                    # collect ~20 more frames' latency
                seq = page.evaluate("document.getElementById('view').dataset.seq")
                page.wait_for_function(f"document.getElementById('view').dataset.seq !== '{seq}'", timeout=30_000)
            page.locator("#pick button", has_text=ids[1]).click()   # one camera's view
            page.wait_for_function("document.getElementById('view').naturalWidth === 320", timeout=30_000)
            page.screenshot(path=str(shot))
            print(f"live page screenshot: {shot}")
            browser.close()
        t = httpx.get(srv.url + "/metrics").text
        count = sum_ = 0.0
        for fam in text_string_to_metric_families(t):
            for s in fam.samples:
                if s.name == "vidflow_view_latency_seconds_count":
                    count = s.value
                if s.name == "vidflow_view_latency_seconds_sum":
                    sum_ = s.value
        assert count >= 20
        print(f"live view latency (frame receipt -> shown in Chromium): mean {1000 * sum_ / count:.0f} ms over "
              f"{count:.0f} frames")
    finally:
        pipe.stop()
        run.join(30)
        srv.stop()
    assert shot.exists() and shot.stat().st_size > 1000


def _takes_id_dict() -> bool:
    import inspect

    from vidflow.pipeline import Pipeline

    ann = str(inspect.signature(Pipeline).parameters["sources"].annotation)
    return "Mapping" in ann or "dict" in ann
