"""Cluster errors: an address that does not answer, models that cannot run on a cluster (no cluster started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from embedstack.errors import ClusterError, ConfigError  # noqa: E402
from embedstack.scale import encode_ray  # noqa: E402


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, None, None, Path]:
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(20)))
    from embedstack.models import resolve

    resolve("lsa:4").fit([f"text {i} more words" for i in range(20)]).save(tmp_path / "lsa")
    return path, None, None, tmp_path / "lsa"


def test_unreachable_address_is_one_clear_error(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    import socket
    import time

    if ray.is_initialized():
        ray.shutdown()
    path, _, _, model = data
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at 127.0.0.1:{port} within 2s"):
        encode_ray(path, str(model), tmp_path / "o", address=f"127.0.0.1:{port}", timeout=2)
    assert time.perf_counter() - t0 < 5


def test_models_that_cannot_run_on_a_cluster(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    path, _, _, _ = data
    with pytest.raises(ConfigError, match="must be fitted on a corpus first"):
        encode_ray(path, "tfidf", tmp_path / "o")
