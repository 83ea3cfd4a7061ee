"""The embedding cache: keyed by model, settings and text; damaged files are rebuilt; one pass, three poolings."""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from embedstack.evaluation import cache as cache_mod  # noqa: E402
from embedstack.evaluation.cache import CachedEncoder, EmbeddingCache, encoder_settings  # noqa: E402

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "small", "red", "house", "tree", "ran", "over"]
TEXTS = ["the cat sat on the mat", "a big dog ran over the tree", "small red house", "the dog sat",
         "a cat ran on a big red mat over the small tree"]


def _encoder(seed: int = 0, **options):
    from embedstack.neural.config import BertConfig
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.neural.tokenizer import WordPiece
    from embedstack.neural.transformer import BertModel

    tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64)
    return SentenceEncoder(BertModel(cfg).init_weights(seed=seed), tok, max_seq_length=32, **options)


class Counting:
    """Counts the texts that reach the model (the wrapped encoder's encode / encode_poolings)."""

    def __init__(self, enc):
        self.enc, self.n = enc, 0

    def __getattr__(self, name):
        return getattr(self.__dict__["enc"], name)

    def encode(self, texts, **kw):
        self.n += len(texts)
        return self.enc.encode(texts, **kw)

    def encode_poolings(self, texts, poolings, **kw):
        self.n += len(texts)
        return self.enc.encode_poolings(texts, poolings, **kw)


def test_doctests():
    assert doctest.testmod(cache_mod, optionflags=doctest.ELLIPSIS).failed == 0


def test_encode_poolings_equals_three_separate_encodes():
    enc = _encoder()
    both = enc.encode_poolings(TEXTS, ("cls", "mean", "max"), batch_size=2)
    assert sorted(both) == ["cls", "max", "mean"]
    for mode in ("cls", "mean", "max"):
        alone = enc.with_options(pooling=mode).encode(TEXTS, batch_size=2)
        np.testing.assert_allclose(both[mode], alone, rtol=0, atol=1e-6)
    assert enc.encode_poolings([], ("cls",))["cls"].shape == (0, enc.dim)


@pytest.mark.filterwarnings("ignore:.*longer than max_seq_length")
def test_hits_misses_and_keys(tmp_path):
    cache = EmbeddingCache(tmp_path)
    base = Counting(_encoder())
    first = CachedEncoder(base, cache).encode(TEXTS)
    assert base.n == len(TEXTS)
    np.testing.assert_allclose(first, base.enc.encode(TEXTS), atol=1e-6)
    again = CachedEncoder(base, cache).encode(list(reversed(TEXTS)))  # same texts, any order: all hits
    assert base.n == len(TEXTS)
    np.testing.assert_array_equal(again, first[::-1])
    CachedEncoder(base, cache).encode(TEXTS[:2] + ["a new text"])  # another corpus: only the new text
    assert base.n == len(TEXTS) + 1
    # a single text (a latency probe) always reaches the model
    CachedEncoder(base, cache).encode([TEXTS[0]])
    assert base.n == len(TEXTS) + 2
    # model, settings or role prompt changed: misses
    for changed in (_encoder(seed=1), base.enc.with_options(pooling="max"), base.enc.with_options(max_seq_length=8),
                    base.enc.with_options(normalize=False), base.enc.with_options(prompts={"document": "doc: "})):
        c = Counting(changed)
        out = CachedEncoder(c, cache).encode(TEXTS)
        assert c.n == len(TEXTS), encoder_settings(changed)
        np.testing.assert_allclose(out, changed.encode(TEXTS), atol=1e-6)
    assert encoder_settings(base.enc) == encoder_settings(_encoder())
    assert encoder_settings(object()) is None
    assert "int8_product" not in encoder_settings(base.enc)  # other precisions keep their keys


def test_int8_token_vectors_are_keyed_by_their_product(monkeypatch):
    keys = {}
    for product in ("int_mm", "fbgemm"):  # the same model and precision, multiplied two ways (by CPU, or forced)
        monkeypatch.setenv("EMBEDSTACK_INT8_PRODUCT", product)
        settings = encoder_settings(_encoder(precision="int8-token"))
        assert settings["int8_product"] == product
        keys[product] = settings
    assert keys["int_mm"] != keys["fbgemm"]


def test_disk_persistence_and_damaged_file_is_rebuilt(tmp_path):
    enc = _encoder()
    cache = EmbeddingCache(tmp_path)
    ref = CachedEncoder(enc, cache).encode(TEXTS)
    (path,) = cache.flush()
    assert path.is_file() and path.parent == tmp_path
    c = Counting(enc)
    np.testing.assert_array_equal(CachedEncoder(c, EmbeddingCache(tmp_path)).encode(TEXTS), ref)
    assert c.n == 0  # a new process reads the file
    # same-size damage in the vectors: the checksum catches it, the file is ignored and rebuilt
    raw = bytearray(path.read_bytes())
    raw[-8:] = b"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f"
    path.write_bytes(bytes(raw))
    c = Counting(enc)
    fresh = EmbeddingCache(tmp_path)
    with pytest.warns(RuntimeWarning, match="damaged embedding cache"):
        out = CachedEncoder(c, fresh).encode(TEXTS)
    assert c.n == len(TEXTS) and fresh.rejected == [str(path)]
    np.testing.assert_allclose(out, ref, atol=1e-6)
    fresh.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = Counting(enc)
        CachedEncoder(c, EmbeddingCache(tmp_path)).encode(TEXTS)
    assert c.n == 0
    # truncated / not a safetensors file: ignored too
    path.write_bytes(b"garbage")
    c = Counting(enc)
    with pytest.warns(RuntimeWarning):
        CachedEncoder(c, EmbeddingCache(tmp_path)).encode(TEXTS)
    assert c.n == len(TEXTS)
    # a file holding another namespace's vectors (renamed) is not trusted
    other = EmbeddingCache(tmp_path / "other")
    CachedEncoder(enc.with_options(pooling="cls"), other).encode(TEXTS)
    (other_file,) = other.flush()
    other_file.replace(path)
    c = Counting(enc)
    with pytest.warns(RuntimeWarning, match="namespace"):
        CachedEncoder(c, EmbeddingCache(tmp_path)).encode(TEXTS)
    assert c.n == len(TEXTS)


def test_shared_pooling_pass_fills_the_siblings(tmp_path):
    cache = EmbeddingCache(tmp_path)
    base = _encoder()
    counters = {m: Counting(base.with_options(pooling=m)) for m in ("cls", "mean", "max")}
    outs = {m: CachedEncoder(c, cache, poolings=("cls", "mean", "max")).encode(TEXTS) for m, c in counters.items()}
    assert counters["cls"].n == len(TEXTS) and counters["mean"].n == 0 and counters["max"].n == 0
    for m, out in outs.items():
        np.testing.assert_allclose(out, base.with_options(pooling=m).encode(TEXTS), atol=1e-6)
    assert len(cache.flush()) == 3


@pytest.mark.filterwarnings("ignore:.*longer than max_seq_length")
def test_weights_changed_in_memory_miss_the_cache(tmp_path):
    import torch

    from embedstack.neural.sentence import SentenceEncoder

    _encoder().save(tmp_path / "model")
    enc = SentenceEncoder.from_folder(tmp_path / "model")
    cache = EmbeddingCache(tmp_path / "cache")
    before = CachedEncoder(enc, cache).encode(TEXTS)
    with torch.no_grad():  # fine-tuned in this process: the weights file on disk is unchanged
        for p in enc.model.parameters():
            p.add_(0.05)
    counted = Counting(enc)
    after = CachedEncoder(counted, cache).encode(TEXTS)
    assert counted.n == len(TEXTS)  # all misses: the key follows the tensors, not the file
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, enc.encode(TEXTS), atol=1e-6)
