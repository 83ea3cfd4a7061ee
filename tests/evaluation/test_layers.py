"""Layer-wise probes: the CoNLL-U and WiC readers, per-layer word vectors of a tiny BERT, the linear probe and
its learned mix, the baselines, and typed errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedstack.data import load_conllu, load_wic
from embedstack.errors import ConfigError, DatasetError, FormatError, InputError, NotFittedError

CONLLU = """# newdoc id = d1
# sent_id = s1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = s2
1\tSo\tso\tADV\tRB\t_\t2\tadvmod\t_\t_
2\tdid\tdo\tVERB\tVBD\t_\t0\troot\t_\t_
2.1\tknow\tknow\tVERB\tVB\t_\t_\t_\t2:conj\tCopyOf=2
3\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_
"""


def _conllu(tmp_path: Path, text: str = CONLLU) -> Path:
    p = tmp_path / "x-ud-dev.conllu"
    p.write_text(text, encoding="utf-8")
    return p


def test_conllu_skips_multiword_tokens_and_empty_nodes(tmp_path: Path) -> None:
    ds = load_conllu(_conllu(tmp_path))  # the last sentence has no final blank line
    assert ds.sentences == [["I", "do", "n't", "know", "."], ["So", "did", "I"]]
    assert ds.tags == [["PRON", "AUX", "PART", "VERB", "PUNCT"], ["ADV", "VERB", "PRON"]]
    assert load_conllu(tmp_path, "dev", column="xpos").tags[0] == ["PRP", "VBP", "RB", "VB", "."]
    assert ds.n_words == 8 and len(ds.head(1)) == 1


def test_conllu_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r":2: expected 10 tab-separated"):
        load_conllu(_conllu(tmp_path, "# c\n1\tI\tI\tPRON\n\n"))
    with pytest.raises(FormatError, match="word ID '3'"):
        load_conllu(_conllu(tmp_path, "1\tI\tI\tPRON\t_\t_\t0\troot\t_\t_\n3\tx\tx\tX\t_\t_\t1\tdep\t_\t_\n"))
    with pytest.raises(DatasetError, match="holds no sentences"):
        load_conllu(_conllu(tmp_path, "# only a comment\n"))
    with pytest.raises(DatasetError, match="no \\*-ud-test.conllu"):
        load_conllu(tmp_path, "test")
    with pytest.raises(InputError, match="column"):
        load_conllu(_conllu(tmp_path), column="lemma")


def _wic(folder: Path, data: str, gold: str, split: str = "dev") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.data.txt").write_text(data, encoding="utf-8")
    (folder / f"{split}.gold.txt").write_text(gold, encoding="utf-8")
    return folder


WIC = ("carry\tV\t2-1\tYou must carry your camping gear .\tSound carries well over water .\n"
       "bank\tN\t1-4\tThe bank is closed .\tWe sat on the bank .\n")


def test_wic_reader_aligns_gold_and_targets(tmp_path: Path) -> None:
    ds = load_wic(_wic(tmp_path / "flat", WIC, "F\nT\n"), "dev")
    assert len(ds) == 2 and ds.labels.tolist() == [False, True]
    assert ds.targets(0) == ("carry", "carries") and ds.targets(1) == ("bank", "bank")
    assert ds.pos == ["V", "N"] and ds.sentences2[0][ds.index2[0]] == "carries"
    nested = _wic(tmp_path / "zip" / "dev", WIC, "F\nT\n")  # the official zip: one folder per split
    assert load_wic(nested.parent, "dev").targets(0) == ("carry", "carries")


def test_wic_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="2 pairs but .* 1 labels"):
        load_wic(_wic(tmp_path / "a", WIC, "F\n"), "dev")
    with pytest.raises(FormatError, match="label T or F"):
        load_wic(_wic(tmp_path / "b", WIC, "F\nyes\n"), "dev")
    with pytest.raises(FormatError, match="outside the sentences"):
        load_wic(_wic(tmp_path / "c", "bank\tN\t9-0\tThe bank .\tA bank .\n", "T\n"), "dev")
    with pytest.raises(FormatError, match="5 tab-separated"):
        load_wic(_wic(tmp_path / "d", "bank\tN\t1-1\tThe bank .\n", "T\n"), "dev")
    with pytest.raises(DatasetError, match="no test.data.txt"):
        load_wic(tmp_path / "a", "test")


# ------------------------------------------------------------------------------------------ word layers
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    from embedstack.neural.config import BertConfig
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.neural.tokenizer import WordPiece
    from embedstack.neural.transformer import BertModel

    words = ["the", "cat", "dog", "sat", "on", "mat", "play", "un", "."]
    tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ing", "##happy"])
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=32)
    enc = SentenceEncoder(BertModel(cfg).init_weights(seed=0), tok, max_seq_length=32)
    folder = tmp_path_factory.mktemp("tiny-bert")
    enc.save(folder, force=True)
    return SentenceEncoder.from_folder(folder), folder


def _reference(enc, ids: list[int]) -> list[np.ndarray]:
    """Every layer's output of one unpadded [CLS] ids [SEP] sequence, run through the stock forward."""
    import torch

    x = torch.tensor([[enc.tokenizer.cls_id, *ids, enc.tokenizer.sep_id]])
    with torch.inference_mode():
        h = enc.model.embeddings(x, torch.zeros_like(x))
        out = [h[0].numpy()]
        for block in enc.model.encoder.layer:
            h = block(h, None)
            out.append(h[0].numpy())
        last = enc.model(x, torch.ones_like(x))[0].numpy()
    np.testing.assert_allclose(out[-1], last, atol=1e-5)  # block by block == the model's forward
    return out


def test_transformer_word_layers_shapes_and_subword_alignment(tiny_bert) -> None:
    from embedstack.evaluation.layers import transformer_word_layers

    enc, folder = tiny_bert
    vocab = enc.tokenizer.tokenizer.get_vocab()
    sents = [["the", "cats", "sat"], ["unhappy", "dog", "playing", "on", "the", "mat", "."]]
    out = transformer_word_layers(folder, sents, batch_size=1)
    assert [a.shape for a in out] == [(3, 3, 8), (3, 7, 8)] and out[0].dtype == np.float32
    # sentence 2 alone: un ##happy | dog | play ##ing | on | the | mat | .
    ids = [vocab[t] for t in ["un", "##happy", "dog", "play", "##ing", "on", "the", "mat", "."]]
    ref = _reference(enc, ids)
    for layer in range(3):
        r = ref[layer][1:-1]  # drop [CLS], [SEP]
        np.testing.assert_allclose(out[1][layer, 0], r[0:2].mean(0), atol=1e-5)
        np.testing.assert_allclose(out[1][layer, 1], r[2], atol=1e-5)
        np.testing.assert_allclose(out[1][layer, 2], r[3:5].mean(0), atol=1e-5)
        np.testing.assert_allclose(out[1][layer, 6], r[8], atol=1e-5)
    # padding in a batch changes nothing; "first" takes the first piece
    batched = transformer_word_layers(enc, sents, batch_size=2)
    np.testing.assert_allclose(batched[1], out[1], atol=1e-5)
    first = transformer_word_layers(enc, sents[1:], subword="first")[0]
    np.testing.assert_allclose(first[2, 2], ref[2][1 + 3], atol=1e-5)


def test_long_sentences_are_windowed_not_lost(tiny_bert, caplog: pytest.LogCaptureFixture) -> None:
    from embedstack.evaluation.layers import transformer_word_layers

    enc, _ = tiny_bert
    long = ["the", "cat", "sat", "on", "the", "mat", "."] * 3  # 21 words > 8 - 2 sub-words
    with caplog.at_level("WARNING", logger="embedstack.evaluation.layers"):
        out = transformer_word_layers(enc, [long, ["the", "dog"]], max_length=8)
    assert out[0].shape == (3, 21, 8) and np.isfinite(out[0]).all()
    assert "1 of 2 sentences" in caplog.text
    # each window is encoded like a sentence of its own: words 6..11 == the second window alone
    alone = transformer_word_layers(enc, [long[6:12]], max_length=8)[0]
    np.testing.assert_allclose(out[0][:, 6:12], alone, atol=1e-5)


def test_word_layers_bad_input(tiny_bert) -> None:
    from embedstack.evaluation.layers import transformer_word_layers, word_layers

    enc, _ = tiny_bert
    for bad in ([], [[]], ["the cat"], [["the", 3]]):
        with pytest.raises(InputError):
            transformer_word_layers(enc, bad)
    with pytest.raises(ConfigError, match="subword"):
        transformer_word_layers(enc, [["the"]], subword="last")
    with pytest.raises(ConfigError, match="word_layers"):
        word_layers(object(), [["the"]])


class FakeElmo:
    """The duck-typed ELMo interface: word_layers(sentences) -> [(3, n_words, dim)]."""

    def __init__(self, n_words_off: int = 0) -> None:
        self.off = n_words_off

    def word_layers(self, sentences):
        return [np.full((3, len(s) + self.off, 4), float(len(s)), dtype=np.float64) for s in sentences]


def test_word_layers_duck_typed_elmo() -> None:
    from embedstack.evaluation.layers import stack_words, wic_targets, word_layers

    out = word_layers(FakeElmo(), [["a", "b"], ["c"]])
    assert [a.shape for a in out] == [(3, 2, 4), (3, 1, 4)] and out[0].dtype == np.float32
    assert stack_words(out).shape == (3, 3, 4)
    pairs = wic_targets(out, [1, 0], out[::-1], [0, 1])
    assert pairs.shape == (3, 2, 2, 4) and pairs[0, 0, 1, 0] == 1.0
    with pytest.raises(InputError, match="expected \\(n_layers, 2, dim\\)"):
        word_layers(FakeElmo(1), [["a", "b"]])
    with pytest.raises(InputError, match="differ in length"):
        wic_targets(out, [0], out, [0, 0])


# ------------------------------------------------------------------------------------------ the probe
def _synthetic(n: int = 900, informative: int = 1, layers: int = 3, dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centers = rng.normal(size=(3, dim)) * 3.0
    x = rng.normal(size=(layers, n, dim)).astype(np.float32)
    x[informative] += centers[y].astype(np.float32)  # only this layer carries the label (well separated)
    labels = np.array(["ADJ", "NOUN", "VERB"])[y]
    return x, labels


def test_probe_learns_separable_task_and_mix_finds_the_layer() -> None:
    pytest.importorskip("torch")
    from embedstack.evaluation.layers import probe_layers

    x, y = _synthetic()
    res = probe_layers(x[:, :600], y[:600], x[:, 600:750], y[600:750], x[:, 750:], y[750:], l2=1e-4)
    accs = [r["test"] for r in res["layers"]]
    assert accs[1] > 0.97 and max(accs[0], accs[2]) < 0.6
    assert res["mix"]["test"] > 0.97
    w = res["mix"]["weights"]
    assert abs(sum(w) - 1) < 1e-5 and w[1] > 0.6 and w[1] == max(w)
    assert res["n_classes"] == 3 and res["n_train"] == 600
    again = probe_layers(x[:, :600], y[:600], x[:, 600:750], y[600:750], x[:, 750:], y[750:], l2=1e-4)
    assert again == res  # deterministic with a seed


def test_probe_pos_and_wic_runners() -> None:
    pytest.importorskip("torch")
    from embedstack.evaluation.layers import probe_pos, probe_wic

    x, y = _synthetic(n=500, informative=0, layers=2)
    per_sentence = [x[:, i:i + 5] for i in range(0, 400, 5)]
    tags = [list(y[i:i + 5]) for i in range(0, 400, 5)]
    res = probe_pos(per_sentence, tags, x[:, 400:], y[400:], mix=False, l2=1e-4)  # dev carved from train
    assert "mix" not in res and res["layers"][0]["test"] > 0.95 and res["n_dev"] == 40
    rng = np.random.default_rng(1)
    same = rng.integers(0, 2, size=400).astype(bool)
    u = rng.normal(size=(2, 400, 5)).astype(np.float32)
    v = np.where(same[None, :, None], u, rng.normal(size=u.shape)).astype(np.float32)
    v[0] = rng.normal(size=v[0].shape)  # layer 0 knows nothing
    pairs = np.stack([u, v], axis=2)  # (L, N, 2, D)
    res = probe_wic(pairs[:, :250], same[:250], pairs[:, 250:320], same[250:320], pairs[:, 320:], same[320:])
    assert res["layers"][1]["test"] > 0.9 and res["layers"][0]["test"] < 0.75
    assert res["mix"]["weights"][1] > 0.5


def test_probe_errors() -> None:
    pytest.importorskip("torch")
    from embedstack.evaluation.layers import LinearProbe, probe_layers, probe_pos

    x, y = _synthetic(n=60)
    with pytest.raises(InputError, match="L=1"):
        LinearProbe().fit(x, y, x, y)
    with pytest.raises(InputError, match="60 rows but 59 labels"):
        LinearProbe().fit(x[:1], y[:59], x[:1], y)
    with pytest.raises(InputError, match="single class"):
        LinearProbe().fit(x[:1], np.zeros(60), x[:1], y)
    with pytest.raises(InputError, match="no rows"):
        LinearProbe().fit(x[:1, :0], y[:0], x[:1], y)
    with pytest.raises(ConfigError, match="'patience'"):
        LinearProbe(patience=0).fit(x[:1], y, x[:1], y)
    with pytest.raises(NotFittedError):
        LinearProbe().predict(x[:1])
    with pytest.raises(ConfigError, match="l2"):
        probe_layers(x, y, x, y, x, y, l2=-1.0)
    with pytest.raises(ConfigError, match="unknown probe option"):
        probe_layers(x, y, x, y, x, y, epochs=3)
    with pytest.raises(InputError, match="same number of layers"):
        probe_layers(x, y, x[:2], y, x, y)
    with pytest.raises(InputError, match="2 sentences but 1 tag"):
        probe_pos([x[:, :2], x[:, 2:4]], [["A", "B"]], x, y)
    with pytest.raises(InputError, match="sentence #0 has 3 tags"):
        probe_pos([x[:, :2]], [["A", "B", "C"]], x, y)


def test_baselines() -> None:
    from embedstack.evaluation.layers import majority_class, most_frequent_tag

    train = [["the", "run", "run", "run"], ["a", "run"]]
    tags = [["DET", "VERB", "NOUN", "NOUN"], ["DET", "NOUN"]]
    res = most_frequent_tag(train, tags, [["The", "run", "zzz"]], [["DET", "NOUN", "NOUN"]])
    assert res == {"accuracy": 1.0, "unknown_rate": 1 / 3, "n_test": 3}  # unknown → overall most frequent (NOUN)
    assert majority_class([True, False, False], [False, True])["accuracy"] == 0.5
    with pytest.raises(InputError):
        most_frequent_tag(train, tags[:1], [], [])
    with pytest.raises(InputError):
        majority_class([], [1])


# ------------------------------------------------------------------------------------------ the real data
def test_real_ud_ewt_counts(data_env: Path) -> None:
    dev = load_conllu("ud-english-ewt", "dev")  # counts from ud-english-ewt/SOURCE.md
    assert len(dev) == 2001 and dev.n_words == 25147
    assert len({t for s in dev.tags for t in s}) == 17


def test_real_wic_counts(data_env: Path) -> None:
    for split, n in (("dev", 638), ("test", 1400)):
        ds = load_wic("wic", split)
        assert len(ds) == n and int(ds.labels.sum()) == n // 2
    train = load_wic("wic", "train")
    assert train.targets(0) == ("carry", "carries") and not train.labels[0]


def test_probe_minibatches_are_full_on_a_small_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from embedstack.evaluation import layers

    sizes: list[int] = []
    real = torch.nn.functional.cross_entropy

    def spy(logits, target, *a, **k):  # type: ignore[no-untyped-def]
        sizes.append(int(target.shape[0]))
        return real(logits, target, *a, **k)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)
    x = np.random.default_rng(0).normal(size=(1, 150, 3)).astype(np.float32)
    y = (x[0, :, 0] > 0).astype(int)
    layers.LinearProbe(batch_size=256, max_epochs=1).fit(x[:, :100], y[:100], x[:, 100:], y[100:])
    assert len(sizes) == layers.MIN_STEPS and set(sizes) == {256}  # no empty or short step (was 30 of 50 empty)


def test_wic_targets_and_files_name_their_bad_input(tmp_path: Path) -> None:
    from embedstack.evaluation.layers import wic_targets

    a = np.zeros((2, 3, 4), dtype=np.float32)
    with pytest.raises(InputError, match="index 5 is outside sentence 2"):
        wic_targets([a], [0], [a], [5])
    folder = _wic(tmp_path / "w", WIC, "F\nT\n")
    with pytest.raises(InputError, match="'dev' split but split='test'"):
        load_wic(folder / "dev.data.txt", "test")
    assert len(load_wic(folder / "dev.data.txt", "dev").labels) == 2


def test_word_layers_loads_a_saved_elmo_folder(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from embedstack.evaluation.layers import word_layers
    from embedstack.neural.elmo import SPECIALS, Elmo, ElmoConfig, ElmoModel

    cfg = ElmoConfig(vocab_size=len(SPECIALS) + 2, char_dim=4, filters=((1, 4), (2, 4)), highway_layers=1,
                     proj_dim=4, hidden_dim=8)
    elmo = Elmo(ElmoModel(cfg, seed=0), [*SPECIALS, "a", "cat"])
    elmo.save(tmp_path / "elmo")
    got = word_layers(str(tmp_path / "elmo"), [["a", "cat"]])
    np.testing.assert_allclose(got[0], elmo.word_layers([["a", "cat"]])[0], atol=1e-6)
