"""Python API habits: encode("one text") is 1-D, embedstack.load(any SPEC), similarity, fluent returns."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import embedstack
from embedstack.errors import ConfigError, DimensionMismatch, InputError

DOCS = ["cats purr on the sofa", "dogs bark at the mailman", "the stock market fell", "rain falls all day",
        "cats and dogs play", "markets rally after the fall"]


def test_lsa_one_text_gives_one_vector():
    enc = embedstack.load("lsa:3").fit(DOCS)  # fit returns the encoder
    one = enc.encode("cats purr")
    assert one.shape == (3,) and one.dtype == np.float32
    assert np.allclose(one, enc.encode(["cats purr"])[0])
    assert enc.encode(["cats purr", "dogs"]).shape == (2, 3)


def test_pooled_word_vectors_one_text_gives_one_vector():
    from embedstack.static.keyedvectors import KeyedVectors
    from embedstack.static.pooling import PooledWordEncoder

    kv = KeyedVectors(["cats", "dogs", "purr"], np.eye(3, dtype=np.float32))
    enc = PooledWordEncoder(kv).fit(DOCS)
    assert enc.encode("cats purr").shape == (3,)
    assert np.allclose(enc.encode("cats purr"), [0.5, 0.0, 0.5])


def test_load_takes_every_spec_kind(tmp_path):
    from embedstack.count import BM25, LSA

    assert isinstance(embedstack.load("bm25"), BM25)
    assert isinstance(embedstack.load("lsa:16"), LSA) and embedstack.load("lsa:16").n_components == 16
    saved = embedstack.load("tfidf").fit(DOCS).save(tmp_path / "tfidf")
    again = embedstack.load(str(saved))
    assert again.is_fitted and again.n_features > 0
    from embedstack.static.keyedvectors import KeyedVectors

    KeyedVectors(["cats", "dogs"], np.eye(2, dtype=np.float32)).save_word2vec_format(tmp_path / "v.txt")
    pooled = embedstack.load(f"word2vec:{tmp_path / 'v.txt'}")
    assert pooled.encode("cats").shape == (2,)
    with pytest.raises(ConfigError, match="takes no options"):
        embedstack.load("bm25", pooling="cls")
    with pytest.raises(ConfigError, match="Did you mean 'bm25'"):
        embedstack.load("bm52")


def test_saved_vectors_folder_is_a_model_spec(tmp_path):
    """A folder written by `embedstack train word2vec --out FOLDER` works as -m FOLDER, as word2vec:FOLDER does
    (it used to come back as bare KeyedVectors: `encode -m FOLDER` ended in an AttributeError traceback)."""
    from typer.testing import CliRunner

    from embedstack.cli.app import app
    from embedstack.static.keyedvectors import KeyedVectors

    folder = tmp_path / "w2v"
    KeyedVectors(["cats", "dogs", "purr"], np.eye(3, dtype=np.float32)).save(folder)
    enc = embedstack.load(str(folder))
    assert np.allclose(enc.encode("cats purr"), [0.5, 0.0, 0.5])
    (tmp_path / "t.txt").write_text("cats purr\ndogs\n")
    out = tmp_path / "v.npy"
    res = CliRunner().invoke(app, ["encode", "-m", str(folder), str(tmp_path / "t.txt"), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert np.load(out).shape == (2, 3)


def test_similarity_shapes_and_values():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    s = embedstack.similarity(a, b)
    assert s.shape == (2, 3)
    assert np.allclose(s, [[1.0, 2 ** -0.5, 0.0], [0.0, 2 ** -0.5, 0.0]], atol=1e-6)
    assert embedstack.similarity(a[0], b).shape == (3,)
    assert embedstack.similarity(a, b[1]).shape == (2,)
    assert isinstance(embedstack.similarity([1, 0], [1, 1]), float)
    assert embedstack.similarity([1, 0], [1, 1]) == pytest.approx(2 ** -0.5)
    with pytest.raises(DimensionMismatch):
        embedstack.similarity(a, np.ones((2, 3)))
    with pytest.raises(InputError):
        embedstack.similarity(np.ones((2, 2, 2)), a)


def test_fluent_calls_return_self():
    from embedstack.count import BM25
    from embedstack.index import FlatIndex

    bm = BM25()
    assert bm.index(DOCS) is bm
    assert bm.search(["purr"], k=1)[0][0].id == "0"
    assert BM25().index(DOCS).search(["market"], k=1)[0][0].id in ("2", "5")
    idx = FlatIndex(2)
    assert idx.add(np.eye(2, dtype=np.float32), ["a", "b"]) is idx
    assert idx.add(np.zeros((0, 2), dtype=np.float32), []) is idx
    tf = embedstack.load("tfidf")
    assert tf.fit(DOCS) is tf


def test_import_stays_light():
    code = "import sys, embedstack; print(sorted(m for m in ('numpy', 'torch', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("module", ["embedstack", "embedstack._similarity", "embedstack._threads", "embedstack.base",
                                    "embedstack.models", "embedstack.errors"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


def test_sparse_models_say_what_to_call_instead_of_encode() -> None:
    import pytest

    from embedstack.count import BM25, TfIdf
    from embedstack.errors import NotDenseError

    model = TfIdf().fit(["a cat", "a dog"])
    assert not hasattr(model, "encode")  # never mistaken for a dense encoder
    with pytest.raises(NotDenseError, match="encode_sparse"):
        model.encode("a cat")
    with pytest.raises(AttributeError):
        model.no_such_thing  # noqa: B018 - other names keep the ordinary message
    assert BM25().fit(["a cat", "a dog"]).encode_sparse(["cat"]).shape[0] == 1


def test_similarity_rejects_texts_and_survives_large_values() -> None:
    import pytest

    import embedstack
    from embedstack.errors import InputError

    with pytest.raises(InputError, match="encode the texts first"):
        embedstack.similarity("a cat", "a dog")
    with pytest.raises(InputError, match="ragged"):
        embedstack.similarity([[1.0, 2.0], [1.0]], [1.0, 2.0])
    assert embedstack.similarity([1e20, 0.0], [3e20, 0.0]) == pytest.approx(1.0)
