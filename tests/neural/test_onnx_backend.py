"""ONNX export + onnxruntime backend agree with torch (tiny model: fast; MiniLM: slow)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = ["the cat sat on the mat", "a dog", "", "the quick brown fox jumps over the lazy dog"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))


def test_onnx_fp32_matches_torch_and_fuses_attention(tiny_encoder, tmp_path):
    from embedstack.neural.onnx import export_onnx, optimize_onnx

    ref = tiny_encoder.encode(TEXTS)
    onnx_enc = tiny_encoder.with_options(backend="onnx")
    out = onnx_enc.encode(TEXTS, batch_size=3)
    assert np.abs(out - ref).max() < 1e-5
    export_onnx(tiny_encoder.model, tmp_path / "raw.onnx")
    stats = optimize_onnx(tmp_path / "raw.onnx", tmp_path / "opt.onnx", num_heads=4, hidden_size=16)
    assert stats.get("Attention") == 2 and stats.get("SkipLayerNormalization") == 4
    # the export leaves the shared model in eval mode: the torch encoder still gives the same vectors (no dropout)
    assert not tiny_encoder.model.training
    assert np.abs(tiny_encoder.encode(TEXTS) - ref).max() == 0.0


def test_onnx_int8_recipes_run(tiny_encoder):
    ref = tiny_encoder.encode(TEXTS)
    for precision in ("int8", "int8-fast", "int8-dynamic"):
        out = tiny_encoder.with_options(backend="onnx", precision=precision).encode(TEXTS)
        assert out.shape == ref.shape
        assert float(np.mean(np.sum(out * ref, axis=1))) > 0.95


@pytest.mark.slow
def test_minilm_onnx_fp32_is_exact(minilm):
    texts = ["A man is playing a guitar.", "A woman is slicing an onion.", ""]
    ref = minilm.encode(texts)
    out = minilm.with_options(backend="onnx").encode(texts)
    assert np.sum(ref * out, axis=1).min() > 0.99999


def test_quantizer_root_logger_notes_do_not_reach_the_terminal(capsys, caplog):
    import logging

    from embedstack.neural.quantize import _root_logging_to, log

    root = logging.getLogger()
    handlers = list(root.handlers)
    with caplog.at_level(logging.DEBUG, logger=log.name), _root_logging_to(log):
        logging.warning("Please consider to run pre-processing before quantization.")  # what onnxruntime does
    assert "WARNING:root" not in capsys.readouterr().err
    assert root.handlers == handlers  # no stderr handler left behind by logging.basicConfig
    assert any("pre-processing" in r.getMessage() and r.name == log.name for r in caplog.records)


def test_small_backend_sends_a_few_short_texts_through_onnx_and_the_rest_through_torch(tiny_encoder, monkeypatch):
    import embedstack.neural.onnx as onnx_mod
    from embedstack.errors import ConfigError

    shapes: list[tuple[int, int]] = []
    real = onnx_mod.onnx_runner

    def spy(*args, **kwargs):
        run = real(*args, **kwargs)

        def counted(ids, mask, types=None):
            shapes.append(ids.shape)
            return run(ids, mask, types)

        return counted

    monkeypatch.setattr(onnx_mod, "onnx_runner", spy)
    hybrid = tiny_encoder.with_options(small_backend="onnx")
    assert hybrid.runtime_options()["small_backend"] == "onnx"
    ref = tiny_encoder.encode(TEXTS)
    np.testing.assert_allclose(hybrid.encode(TEXTS), ref, atol=1e-5)  # 4 short texts: one onnx batch
    assert len(shapes) == 1 and shapes[0][0] == 4
    many = [f"text number {i} about the cat and the mat" for i in range(40)]
    np.testing.assert_allclose(hybrid.encode(many, batch_size=16), tiny_encoder.encode(many, batch_size=16), atol=1e-5)
    assert len(shapes) == 1  # batches of 16 rows went to torch
    bf16 = tiny_encoder.with_options(precision="bf16-pure", small_backend="onnx")
    assert float(np.sum(bf16.encode(TEXTS[:1]) * ref[:1])) > 0.99999  # the small path is fp32 either way
    with pytest.raises(ConfigError, match="small_backend"):
        tiny_encoder.with_options(backend="onnx", small_backend="onnx")
    with pytest.raises(ConfigError, match="small_backend"):
        tiny_encoder.with_options(small_backend="tensorrt")


def test_small_backend_for_a_cross_encoder_reads_token_types(tiny_tokenizer, tiny_config):
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.transformer import BertModel

    ce = CrossEncoder(BertModel(tiny_config).init_weights(seed=0), tiny_tokenizer, max_seq_length=32)
    pairs = [("the cat", "sat on the mat"), ("a dog", "barked")]
    np.testing.assert_allclose(ce.with_options(small_backend="onnx").predict(pairs), ce.predict(pairs), atol=1e-5)
