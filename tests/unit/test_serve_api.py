"""The server in-process on a running pipeline (FakeSource): control API errors naming the
field, DeepStream's bodies, control off, auth, body limit, Host and Origin rules."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from vidflow import serve
from vidflow.mux import Muxer
from vidflow.pipeline import Pipeline
from vidflow.serve.auth import parse_bind, resolve_token
from vidflow.testing import FakeSource, MemorySink

TOKEN = "t0ken-abcdefghijklmnop"


def wait_until(pred, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def running():
    servers = []

    def make(**kw):
        pipe = Pipeline([FakeSource(None, delay=1 / 60)], Muxer(batch_size=2, max_wait_ms=10),
                        sinks=[MemorySink(keep_images=False)], device="cpu")
        srv = serve.start(pipe, "127.0.0.1:0", **kw)
        t = threading.Thread(target=pipe.run, daemon=True)
        t.start()
        client = httpx.Client(base_url=srv.url, timeout=10)
        servers.append((pipe, srv, t, client))
        wait_until(lambda: client.get("/readyz", headers=_auth(kw)).status_code == 200)
        return pipe, srv, client

    yield make
    for pipe, srv, t, client in servers:
        client.close()
        pipe.stop()
        t.join(10)
        srv.stop()


def _auth(kw) -> dict:
    return {"Authorization": f"Bearer {kw['token']}"} if kw.get("token") else {}


def test_bind_rules(monkeypatch, tmp_path):
    assert parse_bind("8080") == ("127.0.0.1", 8080) and parse_bind(9000) == ("127.0.0.1", 9000)
    assert parse_bind("[::1]:81") == ("::1", 81) and parse_bind(":82") == ("127.0.0.1", 82)
    with pytest.raises(ValueError, match="port"):
        parse_bind("host:99999")
    monkeypatch.delenv("VIDFLOW_TOKEN", raising=False)
    assert resolve_token("127.0.0.1") is None
    with pytest.raises(ValueError, match="needs a token"):
        resolve_token("0.0.0.0")
    with pytest.raises(ValueError, match="at least 16"):
        resolve_token("0.0.0.0", "short")
    f = tmp_path / "tok"
    f.write_text(TOKEN + "\n")
    assert resolve_token("0.0.0.0", token_file=f) == TOKEN
    monkeypatch.setenv("VIDFLOW_TOKEN", TOKEN)
    assert resolve_token("10.1.2.3") == TOKEN


def test_own_api_errors_name_the_field(running):
    pipe, srv, c = running()
    r = c.post("/api/v1/sources", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = c.post("/api/v1/sources", json={"source": {"file": {"paht": "x.mp4"}}})
    assert r.status_code == 400 and r.json()["field"].startswith("source.file") and "paht" in r.json()["error"]
    r = c.post("/api/v1/sources", json={"source": {"mypkg.evil:Source": {}}})
    assert r.status_code == 400 and "allowed over HTTP" in r.json()["error"]
    r = c.post("/api/v1/sources", json={"source": {"synthetic": {}}, "uri": "rtsp://x/y"})
    assert r.status_code == 400 and r.json()["field"] == "source"
    r = c.post("/api/v1/sources", json={"colour": 1})
    assert r.status_code == 400 and r.json()["field"] == "colour"
    r = c.post("/api/v1/sources", json={"id": 0, "source": {"synthetic": {"width": 64, "height": 48}}})
    assert r.status_code == 409 and r.json()["field"] == "id"
    assert c.delete("/api/v1/sources/nosuch").status_code == 404
    assert c.get("/api/v1/sources/nosuch").status_code == 404
    r = c.post("/api/v1/sources", json={"id": "s2", "source": {"synthetic": {"width": 64, "height": 48, "frames": None,
                                                                             "live": True}}})
    assert r.status_code == 201 and r.json()["source"]["id"] == "s2"
    wait_until(lambda: c.get("/api/v1/sources/s2").json()["frames"] > 0)
    assert c.delete("/api/v1/sources/s2").json() == {"removed": "s2"}
    assert c.get("/api/v1/sources/s2").status_code == 404
    assert "s2" not in [s["id"] for s in c.get("/api/v1/sources").json()["sources"]]


def test_deepstream_bodies(running, tmp_path):
    pipe, srv, c = running()
    r = c.post("/api/v1/stream/add", json={"key": "sensor", "value": {"camera_url": "x.mp4"}})
    assert r.status_code == 400 and r.json()["reason"] == "STREAM_ADD_FAIL" and r.json()["field"] == "value.camera_id"
    r = c.post("/api/v1/stream/add", json={"key": "sensor", "value": {"camera_id": "c", "camera_url": "x.mp4",
                                                                      "change": "camera_remove"}})
    assert r.status_code == 400 and r.json()["field"] == "value.change"
    r = c.post("/api/v1/stream/add", json={"key": "roi", "value": {}})
    assert r.status_code == 400 and r.json()["field"] == "key"
    r = c.post("/api/v1/stream/add", json={"key": "sensor", "value": {"camera_id": "c", "camera_url": str(tmp_path / "none.mp4")}})
    assert r.status_code == 400 and r.json()["field"] == "value.camera_url" and "no such file" in r.json()["error"]
    r = c.post("/api/v1/stream/remove", json={"key": "sensor", "value": {"camera_id": "zz", "change": "camera_remove"}})
    assert r.status_code == 404 and r.json() ["reason"] == "STREAM_REMOVE_FAIL"
    info = c.get("/api/v1/stream/get-stream-info").json()
    assert info["reason"] == "GET_LIVE_STREAM_INFO_SUCCESS" and info["stream-info"]["stream-count"] == 1
    assert info["stream-info"]["stream-info"] == [{"camera_id": "0", "camera_name": "0"}]


def test_control_off_keeps_reads(running):
    pipe, srv, c = running(control=False)
    assert c.get("/api/v1/sources").status_code == 200
    r = c.post("/api/v1/sources", json={"source": {"synthetic": {}}})
    assert r.status_code == 403 and "turned off" in r.json()["error"]
    assert c.delete("/api/v1/sources/0").status_code == 403
    assert c.post("/api/v1/stream/remove", json={"key": "sensor", "value": {"camera_id": "0"}}).status_code == 403
    assert len(pipe.summary.sources) == 1 and pipe.summary.sources[0].state == "running"


def test_token_body_limit_host_origin(running):
    pipe, srv, c = running(token=TOKEN, max_body=1000)
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert c.get("/livez").status_code == 200                   # the one open endpoint
    for path in ("/readyz", "/startupz", "/metrics", "/api/v1/sources", "/api/v1/status", "/view", "/view/frame.jpg",
                 "/api/v1/stream/get-stream-info"):
        r = c.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
        assert c.get(path, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert c.get("/metrics", headers=ok).status_code == 200
    assert c.post("/api/v1/sources", json={}).status_code == 401
    # the page opened with ?token= sets a cookie; the cookie reads but never changes anything
    r = c.get(f"/view?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and "HttpOnly" in r.headers["set-cookie"] and r.headers["location"] == "/view"
    jar = {"vidflow_token": TOKEN}
    assert httpx.get(srv.url + "/api/v1/sources", cookies=jar).status_code == 200
    assert httpx.delete(srv.url + "/api/v1/sources/0", cookies=jar).status_code == 401
    big = b'{"uri": "' + b"x" * 2000 + b'"}'
    r = c.post("/api/v1/sources", content=big, headers={**ok, "content-type": "application/json"})
    assert r.status_code == 413
    def chunks():
        yield b'{"uri": "'
        yield b"y" * 2000
        yield b'"}'
    r = c.post("/api/v1/sources", content=chunks(), headers={**ok, "content-type": "application/json"})
    assert r.status_code == 413
    r = c.post("/api/v1/sources", json={"uri": "rtsp://x/y"}, headers={**ok, "Origin": "http://evil.example"})
    assert r.status_code == 403
    assert c.get("/livez", headers={"Host": "evil.example"}).status_code == 403    # DNS rebinding


def test_view_websocket_refuses_other_origins(running):
    import websockets.sync.client as wsc

    pipe, srv, c = running()
    host = srv.url.split("://", 1)[1]
    with wsc.connect(f"ws://{host}/view/ws", origin=f"http://{host}") as ws:
        head = json.loads(ws.recv(timeout=20))
        jpeg = ws.recv(timeout=20)
        assert head["seq"] >= 1 and jpeg[:2] == b"\xff\xd8"
        ws.send(json.dumps({"ack": head["seq"], "shown_ms": 12.0}))
    with pytest.raises(Exception):  # noqa: B017 - refused at the handshake or closed with 4403
        with wsc.connect(f"ws://{host}/view/ws", origin="http://evil.example") as ws:
            ws.recv(timeout=10)
