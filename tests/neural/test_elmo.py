"""ELMo: characters, layer shapes, causality of each direction, training, save/load, SPECs, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from embedstack.errors import ConfigError, FormatError, InputError  # noqa: E402
from embedstack.neural.elmo import (  # noqa: E402
    BOS_CHAR,
    BOW,
    EOW,
    PAD_CHAR,
    SPECIALS,
    Elmo,
    ElmoConfig,
    ElmoModel,
    char_ids,
    perplexity,
)
from embedstack.training.elmo import split_documents, train_elmo, windows  # noqa: E402

TINY = {"char_dim": 4, "filters": [[1, 8], [2, 8], [3, 8]], "highway_layers": 1, "proj_dim": 8, "hidden_dim": 16}
WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "red", "house", "ran", "fox", "."]
DOCS = ["the cat sat on the mat .\nthe dog sat on the mat .", "a big red house .\nthe fox ran .",
        "the big dog ran on the mat .", "a red fox sat on a big house ."] * 6


@pytest.fixture(scope="module")
def elmo() -> Elmo:
    cfg = ElmoConfig(vocab_size=len(SPECIALS) + len(WORDS), **TINY)
    return Elmo(ElmoModel(cfg, seed=0), [*SPECIALS, *WORDS])


def test_char_ids_mark_words_and_sentences():
    ids, lengths = char_ids([["Hi", "x" * 80], []], max_chars=10)
    assert ids.shape == (2, 4, 10) and lengths.tolist() == [4, 2]
    assert ids[0, 0, :3].tolist() == [BOW, BOS_CHAR, EOW]  # <S>
    assert ids[0, 1, :4].tolist() == [BOW, ord("H"), ord("i"), EOW] and ids[0, 1, 4] == PAD_CHAR
    assert ids[0, 2].tolist() == [BOW, *[ord("x")] * 8, EOW]  # cut at max_chars
    assert ids[1, 2:].tolist() == [[PAD_CHAR] * 10] * 2  # a shorter sentence is padded
    assert char_ids([["é"]])[0][0, 1, 1:3].tolist() == list("é".encode())  # UTF-8 bytes


def test_word_layers_shapes_and_batch_independence(elmo):
    sents = [["the", "cat", "sat"], ["a"], [], ["unseen", "Words", "are", "fine", "too", "!"]]
    out = elmo.word_layers(sents, batch_size=2)
    assert [x.shape for x in out] == [(3, 3, 16), (3, 1, 16), (3, 0, 16), (3, 6, 16)]
    assert all(x.dtype == np.float32 for x in out)
    assert np.array_equal(out[0][0, :, :8], out[0][0, :, 8:])  # layer 0 = char CNN duplicated
    alone = elmo.word_layers([sents[0]])[0]
    assert np.allclose(alone, out[0], atol=1e-5)  # padding (longer words, longer sentences) changes nothing
    assert elmo.word_layers([]) == []


def test_each_direction_sees_only_its_side(elmo):
    p = elmo.model.config.proj_dim
    base = ["the", "cat", "sat", "on", "the", "mat"]
    k = 3
    changed = [*base[:k], "house", *base[k + 1:]]
    a, b = elmo.word_layers([base, changed])
    for layer in (1, 2):
        fwd_a, fwd_b = a[layer, :, :p], b[layer, :, :p]
        bwd_a, bwd_b = a[layer, :, p:], b[layer, :, p:]
        assert np.allclose(fwd_a[:k], fwd_b[:k], atol=1e-6)  # forward states at < k cannot see word k
        assert not np.allclose(fwd_a[k:], fwd_b[k:], atol=1e-6)
        assert np.allclose(bwd_a[k + 1:], bwd_b[k + 1:], atol=1e-6)  # backward states at > k cannot see word k
        assert not np.allclose(bwd_a[:k + 1], bwd_b[:k + 1], atol=1e-6)


def test_training_lowers_the_loss_and_reports_perplexity():
    seen = []
    res = train_elmo(DOCS, config=TINY, minutes=None, max_steps=40, batch_size=8, lr=1e-2, warmup_steps=1,
                     held_out_every=4, log_every=5, seed=0, progress=seen.append)
    first, last = res.losses[0], res.losses[-1]
    assert res.steps == 40 and res.stopped_by == "max_steps" and len(seen) == 40
    assert last[1] < first[1] - 0.5 and last[2] < first[2] - 0.5  # both directions learn
    ppl = res.perplexity
    assert 1.0 < ppl["forward"] < 30 and 1.0 < ppl["backward"] < 30
    assert ppl["average"] == pytest.approx((ppl["forward"] + ppl["backward"]) / 2)
    assert seen[-1]["tokens"] == res.tokens > 0 and seen[-1]["total"] == 40
    again = train_elmo(DOCS, config=TINY, minutes=None, max_steps=40, batch_size=8, lr=1e-2, warmup_steps=1,
                       held_out_every=4, log_every=5, seed=0)
    assert again.losses == res.losses  # seeded: a step budget is deterministic
    words = train_elmo(DOCS, config=TINY, minutes=None, max_words=30, batch_size=8, held_out_every=4)
    assert words.stopped_by == "max_words" and words.steps < 5


def test_held_out_documents_are_never_trained_on():
    docs = [f"document number {i} words here" for i in range(10)]
    train = list(split_documents(docs, held_out_every=5, held_out=False))
    held = list(split_documents(docs, held_out_every=5, held_out=True))
    assert held == [docs[4], docs[9]] and not set(train) & set(held) and len(train) == 8
    assert list(windows(["a b c d e\nf g"], window=2)) == [["a", "b"], ["c", "d"], ["f", "g"]]


def test_save_load_roundtrip(tmp_path, elmo):
    from embedstack.registry import load_component

    folder = elmo.save(tmp_path / "elmo")
    assert {p.name for p in folder.iterdir()} == {"manifest.json", "model.safetensors", "vocab.txt"}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["type"] == "Elmo" and set(manifest["files"]) == {"model.safetensors", "vocab.txt"}
    back = load_component(folder)
    assert isinstance(back, Elmo) and back.vocab == elmo.vocab
    sents = [["the", "cat"], ["Unknown", "words", "too"]]
    for x, y in zip(elmo.word_layers(sents), back.word_layers(sents), strict=True):
        assert np.array_equal(x, y)
    texts = ["The cat sat on the mat.", "A red fox!"]
    assert np.array_equal(elmo.encode(texts), back.encode(texts))
    ppl = perplexity(elmo, sents)
    assert perplexity(back, sents) == ppl and ppl["tokens"] == 7


def test_spec_resolves_and_encodes(tmp_path, monkeypatch, elmo):
    import embedstack
    from embedstack.base import DenseEncoder
    from embedstack.training.recipes import recipe_dir

    folder = elmo.save(tmp_path / "m")
    mixed = embedstack.load(f"elmo:{folder}")
    assert isinstance(mixed, DenseEncoder) and mixed.layer == "mix" and mixed.dim == 16
    layers = elmo.word_layers([["the", "cat", "sat"]])[0]
    assert np.allclose(mixed.encode("the cat sat"), layers.mean(axis=0).mean(axis=0), atol=1e-6)  # equal mix, γ=1
    top = embedstack.load(f"elmo:{folder},layer=2")
    assert np.allclose(top.encode(["the cat sat"])[0], layers[2].mean(axis=0), atol=1e-6)
    assert [t.shape for t in top.encode_tokens(["the cat", "a"])] == [(2, 16), (1, 16)]
    assert embedstack.load(str(folder)).encode(["the cat"]).shape == (1, 16)  # a folder resolves too
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(embedstack.errors.ModelNotFoundError, match="embedstack recipe elmo-enwiki"):
        embedstack.load("recipe:elmo-enwiki")
    elmo.save(recipe_dir("elmo-enwiki"))
    assert embedstack.load("recipe:elmo-enwiki@layer=1").layer == 1


def test_bad_input_and_options(tmp_path, elmo):
    import embedstack

    enc = elmo.encode([])
    assert enc.shape == (0, 16) and enc.dtype == np.float32
    assert np.array_equal(elmo.encode(["", "!!"])[0], np.zeros(16, dtype=np.float32))  # no words: zeros
    with pytest.raises(InputError, match="word #1 of sentence #0"):
        elmo.word_layers([["a", ""]])
    with pytest.raises(InputError, match="list of words"):
        elmo.word_layers(["the cat"])
    folder = elmo.save(tmp_path / "m")
    with pytest.raises(ConfigError, match="'pool'"):
        embedstack.load(f"elmo:{folder},pool=mean")
    with pytest.raises(ConfigError, match="layer=7 is out of range"):
        embedstack.load(f"elmo:{folder},layer=7")
    with pytest.raises(ConfigError, match="layer='top'"):
        embedstack.load(f"elmo:{folder},layer=top")
    with pytest.raises(ConfigError, match="batch_size"):
        elmo.word_layers([["a"]], batch_size=0)
    with pytest.raises(ConfigError, match="budget"):
        train_elmo(DOCS, minutes=None)


def test_corrupt_folder_is_a_format_error(tmp_path, elmo):
    folder = elmo.save(tmp_path / "m")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="model.safetensors"):
        Elmo.load(folder)
    folder = elmo.save(tmp_path / "n")
    (folder / "vocab.txt").unlink()
    with pytest.raises(FormatError):
        Elmo.load(folder)
    with pytest.raises(FormatError, match="manifest.json"):
        Elmo.load(tmp_path / "nothing-here")


@pytest.mark.parametrize("module", ["embedstack.neural.elmo", "embedstack.training.elmo"])
def test_docstring_examples(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


def test_short_words_fit_the_widest_filter():
    # "I am" has words of 1-2 characters: fewer character positions than a width-5 filter needs
    cfg = ElmoConfig(vocab_size=len(SPECIALS) + len(WORDS), **{**TINY, "filters": [[1, 4], [5, 4]]})
    wide = Elmo(ElmoModel(cfg, seed=0), [*SPECIALS, *WORDS])
    assert wide.encode(["I am", "a b", "OK"]).shape == (3, 16)
    # a short word gets the same vectors alone as beside a long one (padding is what a long word would add)
    alone = wide.word_layers([["a"]])[0]
    beside = wide.word_layers([["a"], ["extraordinarily"]])[0]
    np.testing.assert_allclose(alone, beside, atol=1e-5)


def test_bad_training_budgets_and_configs_are_config_errors(elmo):
    for kwargs, flag in (({"minutes": -5}, "minutes"), ({"minutes": None, "max_steps": 0}, "max_steps"),
                         ({"minutes": None, "max_steps": 2, "threads": 0}, "threads"),
                         ({"minutes": None, "max_steps": 2, "config": {"hiden_dim": 8}}, "hiden_dim")):
        with pytest.raises(ConfigError, match=flag):
            train_elmo(DOCS, **kwargs)
    for bad in ({"filters": [[1]]}, {"cutoffs": (20, 10)}, {"div_value": 0.0}, {"highway_layers": -1}):
        with pytest.raises(ConfigError):
            ElmoConfig(vocab_size=20, **bad)
    with pytest.raises(ConfigError, match="batch_size"):
        perplexity(elmo, [["the", "cat"]], batch_size=0)
    assert not elmo.model.training
