"""Batch encoding on a real multi-node Ray cluster started by the test (several raylets on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from embedstack.errors import InputError  # noqa: E402
from embedstack.models import resolve  # noqa: E402
from embedstack.scale import encode_ray, index_from_shards, read_shards  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def _corpus(tmp: Path, n: int = 1200) -> tuple[Path, list[str], list[str]]:
    rng = np.random.default_rng(0)
    words = ["vector", "search", "index", "query", "token", "model", "embedding", "cluster", "node", "shard", "ray", "encode", "dense", "sparse"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 30)))) + f" doc{i}" for i in range(n)]
    ids = [f"d{i}" for i in range(n)]
    path = tmp / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=True)))
    return path, ids, texts


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str], Path]:
    tmp = tmp_path_factory.mktemp("ray")
    path, ids, texts = _corpus(tmp)
    model = tmp / "lsa"
    resolve("lsa:32").fit(texts).save(model)
    return path, ids, texts, model


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    """A head without CPUs (the driver's node) and three one-CPU worker nodes: actors live on the workers."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [c.add_node(num_cpus=1) for _ in range(3)]
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


def test_multi_node_job_matches_single_process(cluster, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c, _ = cluster
    path, ids, texts, model = data
    assert sum(1 for n in ray.nodes() if n["Alive"]) >= 4
    shards = encode_ray(path, str(model), tmp_path / "out", actors=3, block_tokens=400, shard_rows=500)
    assert shards.stats["nodes"] >= 4 and shards.stats["batches"] > 3
    got_ids, vecs = shards.arrays()
    assert got_ids == ids
    np.testing.assert_array_equal(vecs, resolve(str(model)).encode(texts))
    assert [len(s.ids) for s in shards] == [500, 500, 200]
    assert read_shards(tmp_path / "out").count == len(ids)  # every file checked against its sha256


def test_worker_node_killed_mid_job_every_row_once(cluster, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c, workers = cluster
    path, ids, texts, model = data
    victim = workers[0]
    killed: list[int] = []

    def kill(n_batches: int) -> None:
        if n_batches == 2 and not killed:
            c.remove_node(victim, allow_graceful=False)  # SIGKILL the raylet and its workers
            killed.append(n_batches)

    shards = encode_ray(path, str(model), tmp_path / "out", actors=3, block_tokens=150, on_batch=kill)
    assert killed, "the job finished before a node could be killed"
    assert shards.stats["nodes"] == 3  # the head and two workers finished it
    got_ids, vecs = shards.arrays()
    assert sorted(got_ids) == sorted(ids) and len(got_ids) == len(set(got_ids))  # every row exactly once
    assert got_ids == ids
    np.testing.assert_array_equal(vecs, resolve(str(model)).encode(texts))
    workers.remove(victim)
    workers.append(c.add_node(num_cpus=1))  # back to three workers for the tests after this one
    c.wait_for_nodes()


def test_bad_row_fails_cleanly_or_is_skipped(cluster, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, ids, texts, model = data
    lines = path.read_text().splitlines()
    lines[7] = '{"_id": "broken", "text": '  # not JSON
    lines[30] = b'{"_id": "latin", "text": "caf\xe9"}'.decode("latin-1")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(("\n".join(lines[:7]) + "\n").encode() + lines[7].encode() + b"\n"
                    + ("\n".join(lines[8:30]) + "\n").encode() + b'{"_id": "latin", "text": "caf\xe9"}\n'
                    + ("\n".join(lines[31:]) + "\n").encode())
    with pytest.raises(InputError, match=r"bad.jsonl:8.*not valid JSON.*on_error='skip'") as exc:
        encode_ray(bad, str(model), tmp_path / "fail", actors=2)
    assert "Traceback" not in str(exc.value)
    assert not (tmp_path / "fail").exists()  # nothing half-written is left
    shards = encode_ray(bad, str(model), tmp_path / "skip", actors=2, on_error="skip", keep_text=True)
    assert shards.count == len(ids) - 2 and shards.skipped == 2
    report = [json.loads(x) for x in (tmp_path / "skip" / "errors.jsonl").read_text().splitlines()]
    assert [r["where"].rsplit(":", 1)[1] for r in report] == ["8", "31"]
    assert "not valid utf-8" in report[1]["error"]
    idx = index_from_shards(shards, index="flat")
    assert len(idx) == len(ids) - 2 and idx.get("d0").text == texts[0]


def test_ray_dataset_input_and_parquet_output(cluster, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, ids, texts, model = data
    ds = ray.data.from_items([{"id": i, "text": t} for i, t in zip(ids[:300], texts[:300], strict=True)])
    shards = encode_ray(ds, str(model), tmp_path / "pq", actors=2, fmt="parquet", max_rows=64)
    got_ids, vecs = shards.arrays()
    assert sorted(got_ids) == sorted(ids[:300])
    ref = dict(zip(ids[:300], resolve(str(model)).encode(texts[:300]), strict=True))
    np.testing.assert_allclose(vecs, np.stack([ref[i] for i in got_ids]), atol=1e-6)
    dup = ray.data.from_items([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    with pytest.raises(InputError, match="repeats ids"):
        encode_ray(dup, str(model), tmp_path / "dup", actors=1)


def test_cli_encode_and_index_build_on_the_cluster(cluster, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from embedstack.cli.app import app

    path, ids, texts, model = data
    runner = CliRunner()
    res = runner.invoke(app, ["encode", str(path), "-m", str(model), "--out", str(tmp_path / "sh"), "--ray",
                              "--actors", "2", "--shard-format", "parquet", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["n"] == len(ids) and info["nodes"] >= 4 and info["skipped"] == 0
    assert read_shards(tmp_path / "sh").format == "parquet"
    res = runner.invoke(app, ["index", "build", str(path), "-m", str(model), "--out", str(tmp_path / "idx"), "--ray",
                              "--actors", "2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["count"] == len(ids)
    assert not list(tmp_path.glob(".idx.*.tmp"))  # the temporary shards are gone
    res = runner.invoke(app, ["search", str(tmp_path / "idx"), texts[5], "--k", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["hits"][0]["id"] == ids[5]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text() + "{not json\n")
    res = runner.invoke(app, ["encode", str(bad), "-m", str(model), "--out", str(tmp_path / "b"), "--ray"])
    assert res.exit_code != 0 and "Pass --on-error skip" in res.output and "Traceback" not in res.output


def test_sparse_model_on_the_cluster(cluster, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, ids, texts, _ = data
    bm25 = resolve("bm25").fit(texts)
    bm25.save(tmp_path / "bm25")
    ref = resolve(str(tmp_path / "bm25")).encode_sparse(texts).toarray()
    for fmt in ("npy", "parquet"):
        shards = encode_ray(path, str(tmp_path / "bm25"), tmp_path / fmt, actors=2, fmt=fmt, shard_rows=700,
                            keep_text=True)
        got_ids, mat = shards.arrays()
        assert got_ids == ids and shards.sparse
        np.testing.assert_allclose(mat.toarray(), ref, rtol=1e-6)
        idx = index_from_shards(shards)
        assert type(idx).__name__ == "SparseIndex" and len(idx) == len(ids)


def test_multi_vector_model_on_the_cluster(cluster, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    from embedstack.neural.colbert import ColBERT
    from embedstack.neural.config import BertConfig
    from embedstack.neural.tokenizer import WordPiece
    from embedstack.neural.transformer import BertModel

    path, ids, texts, _ = data
    words = sorted({w for t in texts for w in t.split()})
    tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", *words])
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64)
    folder = ColBERT(BertModel(cfg).init_weights(seed=0), tok, dim=8, query_length=8, document_length=24).save(
        tmp_path / "colbert")
    small = tmp_path / "small.jsonl"
    small.write_text("".join(path.read_text().splitlines(keepends=True)[:200]))
    shards = encode_ray(small, str(folder), tmp_path / "out", actors=2, shard_rows=64, keep_text=True,
                        block_tokens=300)
    got_ids, mats = shards.arrays()
    ref = resolve(str(folder)).encode_tokens(texts[:200])
    assert got_ids == ids[:200] and shards.multi and len(shards.manifest["shards"]) == 4
    for a, b in zip(mats, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    idx = index_from_shards(shards)
    assert type(idx).__name__ == "MultiVectorIndex" and len(idx) == 200
    from embedstack.index import multivector_from_spec

    direct = multivector_from_spec("multivector", dim=8).add(ref, ids[:200])
    q = resolve(str(folder)).encode_tokens(texts[:5], role="query")
    assert [[h.id for h in r] for r in idx.search(q, k=5)] == [[h.id for h in r] for r in direct.search(q, k=5)]
    assert idx.get(ids[7]).text == texts[7]
    with pytest.raises(Exception, match="npy"):
        encode_ray(small, str(folder), tmp_path / "pq", fmt="parquet")
