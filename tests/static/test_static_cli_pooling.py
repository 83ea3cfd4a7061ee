"""The train/vectors commands, the word2vec:PATH specs and sentence pooling (mean, SIF)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from embedstack.errors import NotFittedError
from embedstack.static import KeyedVectors
from embedstack.static.pooling import PooledWordEncoder

runner = CliRunner()


def _corpus(tmp_path):
    rng = np.random.default_rng(0)
    words = ["king", "queen", "man", "woman", "castle", "royal", "prince", "boy", "girl"]
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(" ".join(rng.choice(words, 10)) for _ in range(300)) + "\n", encoding="utf-8")
    return p


def test_train_and_query_commands(tmp_path):
    pytest.importorskip("numba")
    from embedstack.cli.app import app

    corpus = _corpus(tmp_path)
    out = tmp_path / "w2v"
    res = runner.invoke(app, ["train", "word2vec", str(corpus), "--out", str(out), "--dim", "8", "--epochs", "1",
                              "--min-count", "1", "--workers", "1", "--cbow", "--json", "--word2vec-format"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["vocab_size"] == 9 and info["raw_words"] == 3000 and info["words_per_second"] > 0
    assert info["alpha"] == 0.05  # CBOW's default initial rate (word2vec.c's), not skip-gram's 0.025
    for flags, rate in ((["--sg"], 0.025), (["--cbow", "--alpha", "0.03"], 0.03)):
        res = runner.invoke(app, ["train", "word2vec", str(corpus), "--out", str(tmp_path / "w2"), "--dim", "4",
                                  "--epochs", "1", "--min-count", "1", "--workers", "1", "--json", "--force", *flags])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["alpha"] == rate
    assert (out / "vectors.txt").is_file()
    res = runner.invoke(app, ["vectors", "neighbors", str(out), "king", "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["neighbors"]["king"]) == 3
    res = runner.invoke(app, ["vectors", "analogy", str(out / "vectors.txt"), "man", "king", "woman", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["answers"]
    res = runner.invoke(app, ["vectors", "neighbors", str(out), "king", "-k", "2"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[1].split("\t") == ["#", "word", "cosine"]  # results on stdout
    assert len(res.stdout.splitlines()) == 4 and "cosine" not in res.stderr
    res = runner.invoke(app, ["vectors", "neighbors", str(out), "kingdom"])
    assert res.exit_code == 2 and "kingdom" in res.output
    res = runner.invoke(app, ["train", "fasttext", str(corpus), "--out", str(tmp_path / "ft"), "--dim", "0"])
    assert res.exit_code == 2 and "dim" in res.output
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    res = runner.invoke(app, ["train", "glove", str(empty), "--out", str(tmp_path / "g"), "--quiet"])
    assert res.exit_code == 2 and "empty" in res.output


def _kv():
    keys = ["good", "bad", "movie", "the"]
    vecs = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32)
    return KeyedVectors(keys, vecs, counts=np.array([10, 10, 10, 1000]))


def test_mean_pooling_hand_computed():
    enc = PooledWordEncoder(_kv())
    out = enc.encode(["Good movie!", "nothing known", ""])
    assert out.shape == (3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.5, 0, 0.5])
    np.testing.assert_array_equal(out[1], 0)
    assert enc.encode([]).shape == (0, 3)


def test_sif_weights_and_component_removal():
    enc = PooledWordEncoder(_kv(), pool="sif", a=1e-3)
    assert enc.requires_fit and not enc.is_fitted
    with pytest.raises(NotFittedError):
        enc.encode(["good movie"])
    texts = ["good movie", "bad movie", "the good the bad", "the movie"]
    enc.fit(texts)
    p = np.array([10, 10, 10, 1000]) / 1030
    np.testing.assert_allclose(enc.weights_, 1e-3 / (1e-3 + p), rtol=1e-5)
    out = enc.encode(texts)
    np.testing.assert_allclose(out @ enc.component_, 0, atol=1e-5)
    # without stored counts, p(w) is fitted from the texts
    kv = _kv()
    kv.counts = None
    enc2 = PooledWordEncoder(kv, pool="sif").fit(texts)
    assert enc2.weights_[3] < enc2.weights_[0]


def test_specs_resolve_vectors_files(tmp_path, monkeypatch):
    from embedstack.errors import ConfigError
    from embedstack.models import needs_fit, resolve

    p = tmp_path / "v.txt"
    _kv().save_word2vec_format(p)
    enc = resolve(f"word2vec:{p}")
    assert isinstance(enc, PooledWordEncoder) and enc.dim == 3 and not needs_fit(enc)
    sif = resolve(f"glove:{p},pool=sif")
    assert needs_fit(sif)
    with pytest.raises(ConfigError, match="unknown word-vector spec option"):
        resolve(f"fasttext:{p},bogus=1")
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="embedstack train fasttext"):
        resolve("fasttext")


def test_word_similarity_runner_accepts_keyedvectors():
    words = pytest.importorskip("embedstack.evaluation.words")
    res = words.evaluate_analogies(_kv(), [("s", [("good", "bad", "good", "bad")])], restrict_vocab=4)
    assert "accuracy" in res


def test_train_defaults_out_and_rejects_bad_bytes(tmp_path, monkeypatch):
    pytest.importorskip("numba")
    from embedstack.cli.app import app
    from embedstack.static.specs import default_vectors_path

    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    corpus = _corpus(tmp_path)
    res = runner.invoke(app, ["train", "glove", str(corpus), "--dim", "4", "--epochs", "2", "--min-count", "1",
                              "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["out"] == str(default_vectors_path("glove"))
    from embedstack.models import resolve

    assert resolve("glove").dim == 4  # the spec finds the default vectors
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good words here\nbad \xff\xfe bytes\n")
    res = runner.invoke(app, ["train", "word2vec", str(bad), "--out", str(tmp_path / "w"), "--min-count", "1"])
    assert res.exit_code == 2 and "not valid utf-8; pass --encoding latin-1" in res.output
    assert "--errors replace" in res.output
