"""CrossEncoder: pair scoring, ranking, truncation, the shared fast paths, and folders both ways."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from embedstack.errors import ConfigError, FormatError, InputError

PAIRS = [("the cat sat", "a cat sat on the mat"), ("a dog ran", "the quick brown fox jumps over the lazy dog"),
         ("red house", "a big red house"), ("man", "a man is playing a guitar ."), ("tree", "tree")]


@pytest.fixture
def tiny_ce(tiny_tokenizer, tiny_config):
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.transformer import BertModel

    return CrossEncoder(BertModel(tiny_config, add_pooler=True).init_weights(seed=0), tiny_tokenizer, max_seq_length=32)


def test_predict_rank_and_score_shapes(tiny_ce) -> None:
    scores = tiny_ce.predict(PAIRS)
    assert scores.shape == (5,) and scores.dtype == np.float32
    assert ((scores > 0) & (scores < 1)).all()  # sigmoid
    logits = tiny_ce.predict(PAIRS, activation=False)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), scores, rtol=1e-5)
    assert np.isscalar(tiny_ce.predict(PAIRS[0])) or tiny_ce.predict(PAIRS[0]).shape == ()
    assert tiny_ce.predict([]).shape == (0,)
    np.testing.assert_allclose(tiny_ce.score(PAIRS), scores)
    # batch size and order do not change a pair's score (length-sorted batches, padding masked)
    np.testing.assert_allclose(tiny_ce.predict(PAIRS[::-1], batch_size=2)[::-1], scores, atol=1e-6)
    docs = [d for _, d in PAIRS]
    ranked = tiny_ce.rank("the cat", docs, top_k=3, return_documents=True)
    want = tiny_ce.predict([("the cat", d) for d in docs])
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-want, kind="stable")[:3])
    assert ranked[0]["text"] == docs[ranked[0]["corpus_id"]] and ranked[0]["score"] >= ranked[1]["score"]
    assert tiny_ce.rank("the cat", []) == []


def test_bad_input_is_a_clear_error(tiny_ce, tiny_tokenizer, tiny_config) -> None:
    from embedstack.neural.cross_encoder import CrossEncoder, ScoreError
    from embedstack.neural.transformer import BertModel

    with pytest.raises(InputError, match="Pairs must be"):
        tiny_ce.predict([("only one",)])
    with pytest.raises(InputError, match="list of documents"):
        tiny_ce.rank("q", "one document")
    with pytest.raises(ConfigError, match="top_k"):
        tiny_ce.rank("q", ["d"], top_k=0)
    nli = CrossEncoder(BertModel(tiny_config).init_weights(seed=0), tiny_tokenizer, num_labels=3,
                       labels=["entailment", "neutral", "contradiction"])
    assert nli.predict(PAIRS).shape == (5, 3) and nli.activation == "identity"
    with pytest.raises(ConfigError, match="classifies"):
        nli.rank("q", ["d"])
    broken = tiny_ce.with_options()
    with __import__("torch").no_grad():
        broken.classifier.weight.fill_(float("nan"))
    with pytest.raises(ScoreError, match="non-finite"):
        broken.predict(PAIRS)


def test_truncation_keeps_the_query_and_warns_once(tiny_tokenizer, tiny_config) -> None:
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.transformer import BertModel

    ce = CrossEncoder(BertModel(tiny_config).init_weights(seed=0), tiny_tokenizer, max_seq_length=10)
    ids, types, cut, query_cut = tiny_tokenizer.encode_pairs([("the big red", "a " * 30 + "tree")], max_length=10)
    assert len(ids[0]) == 10 and cut == 1 and query_cut == 0
    assert ids[0][:5].tolist() == [tiny_tokenizer.cls_id, *tiny_tokenizer.tokenizer.encode(
        "the big red", add_special_tokens=False).ids, tiny_tokenizer.sep_id]  # the query whole
    assert types[0].tolist() == [0] * 5 + [1] * 5
    _, _, cut, query_cut = tiny_tokenizer.encode_pairs([("the " * 20, "tree")], max_length=10)
    assert cut == 1 and query_cut == 1  # a query with no room left is cut too
    with pytest.warns(UserWarning, match="queries kept whole") as record:
        ce.predict([("the big red", "a " * 30 + "tree")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ce.predict([("the big red", "a " * 30 + "tree")])  # once per model
    assert len(record) == 1


def test_pair_windows_cover_the_document_with_the_query_whole(tiny_tokenizer) -> None:
    query = "the big red"
    doc = " ".join(["a", "cat", "sat", "on", "the", "mat", "tree", "house", "dog", "man"] * 4)  # 40 tokens
    q_ids, d_ids = (x[1:-1].tolist() for x in tiny_tokenizer.encode_batch([query, doc], max_length=1000)[0])
    ids, types, owner, cut = tiny_tokenizer.encode_pair_windows([(query, doc), ("man", "tree")], max_length=16, stride=3)
    assert cut == 0 and owner.tolist() == [0] * (len(ids) - 1) + [1]
    room = 16 - 3 - len(q_ids)
    parts = []
    for w, t in zip(ids[:-1], types[:-1], strict=True):
        assert len(w) <= 16 and w[0] == tiny_tokenizer.cls_id and w[-1] == tiny_tokenizer.sep_id
        assert w[1:1 + len(q_ids)].tolist() == q_ids and w[1 + len(q_ids)] == tiny_tokenizer.sep_id  # the query whole
        assert t.tolist() == [0] * (len(q_ids) + 2) + [1] * (len(w) - len(q_ids) - 2)
        parts.append(w[2 + len(q_ids):-1].tolist())
    assert all(len(p) == room for p in parts[:-1])
    for a, b in zip(parts, parts[1:], strict=False):
        assert a[-3:] == b[:3]  # consecutive windows share `stride` tokens
    assert parts[0] == d_ids[:room] and parts[-1] == d_ids[-len(parts[-1]):]  # every token, first to last
    assert len(ids[-1]) == 5  # a document that fits: one window, as encode_pairs gives
    assert ids[-1].tolist() == tiny_tokenizer.encode_pairs([("man", "tree")], max_length=16)[0][0].tolist()
    # a pair that fits is one window whatever the query's length: nothing cut, as encode_pairs gives it
    long_q = "the big red cat sat on"  # 6 tokens: [CLS] q [SEP] leaves 16 - 1 - 8 = 7 of room
    ids, _, owner, cut = tiny_tokenizer.encode_pair_windows([(long_q, "tree")], max_length=16, stride=6)
    assert cut == 0 and len(ids) == 1
    assert ids[0].tolist() == tiny_tokenizer.encode_pairs([(long_q, "tree")], max_length=16)[0][0].tolist()
    # a query that leaves less than 2 * stride + 1 of room is kept whole; its windows share half the room
    ids, types, _, cut = tiny_tokenizer.encode_pair_windows([(long_q, doc)], max_length=16, stride=6)
    parts = [w[8:-1].tolist() for w in ids]
    assert cut == 0 and all(len(w) <= 16 and w[1:7].tolist() == ids[0][1:7].tolist() for w in ids)
    assert all(a[-3:] == b[:3] for a, b in zip(parts, parts[1:], strict=False))  # (7 - 1) // 2 = 3 shared
    assert parts[0] + [t for p in parts[1:] for t in p[3:]] == d_ids  # every token once, in order
    # only a query leaving less than a quarter of max_length is cut, to leave that
    ids, _, _, cut = tiny_tokenizer.encode_pair_windows([("the " * 20, doc)], max_length=16, stride=3)
    assert cut == 1 and len(ids) > 1 and all(len(w) == 16 for w in ids[:-1])
    assert ids[0][10] == tiny_tokenizer.sep_id and all(w[:11].tolist() == ids[0][:11].tolist() for w in ids)  # 4 left
    with pytest.raises(InputError, match="stride"):
        tiny_tokenizer.encode_pair_windows([(query, doc)], max_length=16, stride=7)


def test_doc_stride_scores_a_pair_by_its_best_window(tiny_ce, tiny_tokenizer) -> None:
    from embedstack.neural.specs import parse_options

    doc = " ".join(["a", "cat", "sat", "on", "the", "mat", "tree", "house", "dog", "man"] * 6)
    pairs = [("the big red", doc), *PAIRS]
    maxp = tiny_ce.with_options(doc_stride=6)
    assert maxp.doc_stride == 6 and maxp.with_options(precision="bf16").doc_stride == 6
    got = maxp.predict(pairs, activation=False, batch_size=2)
    ids, types, owner = maxp._tokenize_pairs(pairs)
    assert (owner == 0).sum() > 1  # the long document is several windows
    each = []
    for w, t in zip(ids, types, strict=True):  # each window scored alone, as a pair of its own
        a = tiny_tokenizer.tokenizer.decode(w[1:int((t == 0).sum()) - 1].tolist())
        b = tiny_tokenizer.tokenizer.decode(w[int((t == 0).sum()):-1].tolist())
        each.append(tiny_ce.predict((a, b), activation=False))
    want = [max(s for s, o in zip(each, owner, strict=True) if o == i) for i in range(len(pairs))]
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got[1:], tiny_ce.predict(PAIRS, activation=False), atol=1e-5)  # short pairs: as before
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is cut, so nothing is said
        maxp.predict(pairs)
    from embedstack.serve.models import _Counter

    # a server's token budget counts the windows the model will run
    counted = _Counter(maxp).count_pairs("the big red", [doc, "tree", ""])
    ids, _, owner = maxp._tokenize_pairs([("the big red", d) for d in (doc, "tree", "")])
    assert counted == [sum(len(w) for w, o in zip(ids, owner, strict=True) if o == i) for i in range(3)]
    # exact_top re-scores near-ties in windows too (a margin this wide re-scores every pair of the query)
    one_query = [("the big red", doc), ("the big red", "a big red house"), ("the big red", "tree")]
    settled = maxp.with_options(precision="bf16", exact_top=3, exact_margin=100.0)
    np.testing.assert_allclose(settled.predict(one_query, activation=False), maxp.predict(one_query, activation=False),
                               atol=1e-5)
    assert settled.last_rescored == 3
    assert parse_options("m@doc_stride=32")[1] == {"doc_stride": 32}
    assert parse_options("m@max_seq_length=256,doc_stride=none")[1] == {"max_seq_length": 256, "doc_stride": None}
    for bad in (-1, 15, 2.5, True):
        with pytest.raises(ConfigError, match="doc_stride"):
            tiny_ce.with_options(doc_stride=bad)
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.transformer import BertModel

    with pytest.raises(ConfigError, match="3 labels"):
        CrossEncoder(BertModel(tiny_ce.model.config).init_weights(seed=0), tiny_tokenizer, num_labels=3, doc_stride=4)


def test_fast_paths_give_the_same_scores(tiny_ce) -> None:
    ref = tiny_ce.predict(PAIRS, activation=False)
    np.testing.assert_allclose(tiny_ce.with_options(workers=2, num_threads=2).predict(PAIRS, activation=False, batch_size=2),
                               ref, atol=1e-5)
    np.testing.assert_allclose(tiny_ce.with_options(precision="bf16").predict(PAIRS, activation=False), ref, atol=0.05)
    np.testing.assert_allclose(tiny_ce.with_options(precision="bf16-pure").predict(PAIRS, activation=False), ref, atol=0.05)
    assert tiny_ce.with_options(precision="int8").predict(PAIRS).shape == (5,)
    from embedstack.neural.quantize import ffn_onednn_available

    if ffn_onednn_available(tiny_ce.model) is None:  # the int8 feed-forward on the [CLS]-only last block too
        for precision in ("bf16-int8-ffn", "bf16-int8-all"):  # all: bf16 Q, K, V for the [CLS] row
            np.testing.assert_allclose(tiny_ce.with_options(precision=precision).predict(PAIRS, activation=False),
                                       ref, atol=0.1)


def test_onnx_backend_reads_token_types(tiny_ce, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    ref = tiny_ce.predict(PAIRS, activation=False)
    np.testing.assert_allclose(tiny_ce.with_options(backend="onnx").predict(PAIRS, activation=False), ref, atol=1e-4)


def test_forward_pairs_matches_predict_and_has_gradients(tiny_ce) -> None:
    ids, types, _ = tiny_ce._tokenize_pairs(PAIRS)
    tiny_ce.eval()
    logits = tiny_ce.forward_pairs(ids, types, min_rows=2)
    np.testing.assert_allclose(logits.detach().numpy()[:, 0], tiny_ce.predict(PAIRS, activation=False), atol=1e-5)
    logits.sum().backward()
    assert tiny_ce.classifier.weight.grad is not None and tiny_ce.model.pooler.dense.weight.grad is not None


def test_save_load_round_trip_and_dispatch(tiny_ce, tmp_path: Path) -> None:
    import embedstack
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.neural.specs import is_cross_encoder

    folder = tiny_ce.save(tmp_path / "ce")
    assert is_cross_encoder(folder)
    back = CrossEncoder.from_folder(folder)
    np.testing.assert_allclose(back.predict(PAIRS), tiny_ce.predict(PAIRS), atol=1e-6)
    assert back.max_seq_length == 32 and back.activation == "sigmoid"
    loaded = embedstack.load(str(folder))
    assert isinstance(loaded, CrossEncoder)
    with pytest.raises(ConfigError, match="bi-encoders only"):
        embedstack.load(f"{folder}@pooling=cls")
    with pytest.raises(FormatError, match="cross-encoder"):
        SentenceEncoder.from_folder(folder)
    assert back.doc_stride is None
    windows = CrossEncoder.from_folder(tiny_ce.with_options(doc_stride=8).save(tmp_path / "ce-windows"))
    assert windows.doc_stride == 8  # how the model reads long documents is saved with it
    assert CrossEncoder.from_folder(tmp_path / "ce-windows", doc_stride=None).doc_stride is None  # options win
    assert embedstack.load(f"{tmp_path / 'ce-windows'}@doc_stride=4").doc_stride == 4


def test_a_bi_encoder_folder_is_not_a_cross_encoder(tiny_encoder, tmp_path: Path) -> None:
    from embedstack.neural.cross_encoder import CrossEncoder

    folder = tiny_encoder.save(tmp_path / "bi")
    with pytest.raises(FormatError, match="from_pretrained_encoder"):
        CrossEncoder.from_folder(folder)
    ce = CrossEncoder.from_pretrained_encoder(folder, seed=0)
    np.testing.assert_allclose(ce.model.pooler.dense.weight.detach().numpy(), np.eye(16), atol=0)
    assert ce.predict(PAIRS).shape == (5,)


def test_hugging_face_and_sentence_transformers_load_our_folder_and_we_load_theirs(tiny_ce, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    st = pytest.importorskip("sentence_transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from embedstack.neural.cross_encoder import CrossEncoder

    with torch.no_grad():  # a head that is not all near zero, so the comparison means something
        tiny_ce.classifier.weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))
    ours = tiny_ce.predict(PAIRS)
    folder = tiny_ce.save(tmp_path / "ours")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    batch = tok([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation="only_second",
                max_length=32, return_tensors="pt")
    with torch.no_grad():
        hf_logits = hf(**batch).logits[:, 0].numpy()
    np.testing.assert_allclose(tiny_ce.predict(PAIRS, activation=False), hf_logits, atol=1e-5)
    theirs = st.CrossEncoder(str(folder), device="cpu")
    np.testing.assert_allclose(theirs.predict(PAIRS), ours, atol=1e-5)
    # and back: their save, our load
    theirs.save(str(tmp_path / "theirs"))
    again = CrossEncoder.from_folder(tmp_path / "theirs")
    np.testing.assert_allclose(again.predict(PAIRS), ours, atol=1e-5)
    assert again.activation == "sigmoid"


def test_near_ties_keep_every_other_candidate_in_its_true_place() -> None:
    """Re-scoring exactly the near-ties puts the first k in the true order whenever no score moved by more
    than the margin (random scores, random moves within the margin, many draws)."""
    from embedstack.neural.cross_encoder import near_ties

    rng = np.random.default_rng(0)
    rescored = 0
    for trial in range(2000):
        n, k = int(rng.integers(1, 30)), int(rng.integers(1, 12))
        true = np.round(rng.normal(size=n) * rng.choice([0.05, 0.5, 3.0]), 3)
        margin = float(rng.choice([0.0, 0.01, 0.05, 0.2]))
        low = true + rng.uniform(-margin, margin, size=n)  # what a lower precision gave
        again = near_ties(low, k, margin)
        mixed = low.copy()
        mixed[again] = true[again]
        got = np.argsort(-mixed, kind="stable")[:k]
        want = np.argsort(-true, kind="stable")[:k]
        assert np.array_equal(true[got], true[want]), trial  # the same scores in the same places (ties aside)
        rescored += len(again)
    assert 0 < rescored < 2000 * 12
    assert near_ties(np.array([1.0]), 5, 0.1).size == 0 and near_ties(np.array([]), 5, 0.1).size == 0
    assert near_ties(np.array([3.0, 2.0, 1.0]), 1, 0.0).size == 0  # exact scores: nothing to settle
    assert near_ties(np.array([3.0, 3.0, 1.0]), 1, 0.0).tolist() == [0, 1]  # a tie at the top is settled


def test_settle_in_two_rounds_gives_the_true_order_scoring_fewer() -> None:
    """settle(): the first k in the true order whenever no score moved by more than the margin, as near_ties
    gives, with fewer exact scores in all (random scores and moves, many draws); only near-ties are scored."""
    from embedstack.neural.cross_encoder import near_ties, settle, settle_ties, still_tied

    rng = np.random.default_rng(1)
    one_round = two_rounds = 0
    for trial in range(3000):
        n, k = int(rng.integers(1, 30)), int(rng.integers(1, 12))
        true = np.round(rng.normal(size=n) * rng.choice([0.05, 0.5, 3.0]), 3)
        margin = float(rng.choice([0.0, 0.01, 0.05, 0.2]))
        low = true + rng.uniform(-margin, margin, size=n)
        asked: list[int] = []

        def exact(i: np.ndarray, asked: list[int] = asked, true: np.ndarray = true) -> np.ndarray:
            asked.extend(i.tolist())
            return true[i]

        scored, mixed = settle(low, k, margin, exact)
        got, want = np.argsort(-mixed, kind="stable")[:k], np.argsort(-true, kind="stable")[:k]
        assert np.array_equal(true[got], true[want]), trial
        ties = near_ties(low, k, margin)
        assert sorted(asked) == scored.tolist() and set(asked) <= set(ties.tolist()), trial  # each once, near-ties only
        one_round, two_rounds = one_round + len(ties), two_rounds + len(scored)
    assert 0 < two_rounds < one_round  # fewer than near_ties alone (a quarter fewer on SciFact: few long chains there)
    first, held = settle_ties(np.array([5.0, 4.94, 4.88, 1.0]), 3, 0.05)  # a chain: the middle one first
    assert first.tolist() == [1] and held.tolist() == [0, 2]
    assert still_tied(np.array([5.0, 4.9]), np.array([4.97]), 0.05).tolist() == [True, False]
    assert still_tied(np.array([5.0]), np.array([]), 0.05).tolist() == [False]


def test_exact_top_gives_fp32_order_at_low_precision(tiny_ce, tiny_tokenizer) -> None:
    """``exact_top``: each query's first k come out in fp32's order; only near-ties are scored twice."""
    import dataclasses

    import torch

    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.transformer import BertModel

    # weights spread wide enough that candidates' logits differ by more than bf16 moves them (the tiny default
    # model scores every pair within 1e-5 of the others: everything would be a near-tie)
    cfg = dataclasses.replace(tiny_ce.model.config, initializer_range=0.5)
    spread = CrossEncoder(BertModel(cfg, add_pooler=True).init_weights(seed=0), tiny_tokenizer, max_seq_length=32)
    with torch.no_grad():
        spread.classifier.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    docs = [d for _, d in PAIRS] + ["the cat", "a red mat", "the lazy dog ran", "a man sat", "red cat", "the man ran",
                                    "a dog sat on a mat"]
    pairs = [(q, d) for q in ("the cat", "a dog ran") for d in docs]
    exact = spread.predict(pairs, activation=False)
    low = spread.with_options(precision="bf16-pure").predict(pairs, activation=False)
    bound = float(np.abs(low - exact).max())
    ce = spread.with_options(precision="bf16-pure", exact_top=5, exact_margin=bound + 1e-6)
    got = ce.predict(pairs, activation=False)
    n = len(docs)
    for g in range(2):  # grouped by query text
        rows = slice(g * n, (g + 1) * n)
        assert np.array_equal(np.argsort(-got[rows], kind="stable")[:5], np.argsort(-exact[rows], kind="stable")[:5])
    assert 0 < ce.last_rescored < len(pairs)  # some pairs, not all
    again = got != low  # the re-scored pairs carry fp32's logits, the others keep bf16's
    assert again.sum() <= ce.last_rescored
    # fp32's logits to float32 rounding: the re-scored pairs run in other batches (other padding), where MKL's
    # AVX2 kernels (an EPYC without AVX-512) sum in another order: 1.7e-6 on a logit of -2.24 was seen
    np.testing.assert_allclose(got[again], exact[again], atol=1e-5)
    np.testing.assert_array_equal(got[~again], low[~again])
    # a huge margin re-scores every candidate that can reach the first k: they all carry fp32's scores
    wide = spread.with_options(precision="bf16-pure", exact_top=3, exact_margin=100.0)
    np.testing.assert_allclose(wide.predict(pairs, activation=False), exact, atol=1e-5)
    assert wide.last_rescored == len(pairs)
    assert wide.with_options(workers=2).exact_top == 3  # copies keep it
    ranked = ce.rank("the cat", docs, top_k=5)  # rank() goes through the same path
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-exact[:n], kind="stable")[:5])
    # fp32 itself has nothing to re-score
    same = spread.with_options(exact_top=5)
    np.testing.assert_allclose(same.predict(pairs, activation=False), exact, atol=1e-6)
    # nor fp32-bf16x3 (float32 values, products to 2^-16; plain fp32 where the tiles cannot run this model)
    from embedstack.neural.cross_encoder import exact_margin

    assert exact_margin("fp32-bf16x3") == 0.0
    x3 = spread.with_options(precision="fp32-bf16x3", exact_top=5)
    np.testing.assert_allclose(x3.predict(pairs, activation=False), exact, atol=1e-4)


def test_exact_top_settles_on_the_tiles_where_they_run(tiny_tokenizer, tiny_config) -> None:
    """A reranker whose widths are multiples of 32: exact_top's settling passes run as fp32-bf16x3 where the AMX
    build runs (plain fp32, sharing the model, elsewhere); the re-scored logits are fp32's to 1e-4 (weights at BERT's
    initial scale: far larger ones blow the states up until 2^-16 of an attention score moves a softmax weight)."""
    import dataclasses

    import torch

    from embedstack.neural import packed
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.transformer import BertModel

    cfg = dataclasses.replace(tiny_config, hidden_size=64, num_attention_heads=2, intermediate_size=128)
    ce = CrossEncoder(BertModel(cfg, add_pooler=True).init_weights(seed=0), tiny_tokenizer, max_seq_length=32)
    with torch.no_grad():
        ce.classifier.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    pairs = [(q, d) for q in ("the cat", "a dog ran") for _, d in PAIRS]
    exact = ce.predict(pairs, activation=False)
    wide = ce.with_options(precision="bf16-pure", exact_top=3, exact_margin=100.0)  # every candidate re-scored
    np.testing.assert_allclose(wide.predict(pairs, activation=False), exact, atol=1e-4)
    assert wide._fp32.precision == ("fp32-bf16x3" if packed.x3_available(ce.model) else "fp32")


def test_exact_top_options_are_checked(tiny_ce, tiny_encoder, tiny_tokenizer, tiny_config, tmp_path: Path) -> None:
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.specs import load, parse_options
    from embedstack.neural.transformer import BertModel

    for bad in ({"exact_top": -1}, {"exact_top": 2.5}, {"exact_top": True}, {"exact_margin": -0.1},
                {"exact_margin": float("nan")}, {"exact_margin": "wide"}):
        with pytest.raises(ConfigError, match="exact_"):
            tiny_ce.with_options(**bad)
    assert tiny_ce.with_options(exact_margin=np.float32(0.05)).exact_margin == pytest.approx(0.05)
    assert tiny_ce.last_rescored == 0
    with pytest.raises(ConfigError, match="3 labels"):
        CrossEncoder(BertModel(tiny_config, add_pooler=True), tiny_tokenizer, num_labels=3, exact_top=10)
    assert parse_options("reranker@precision=bf16-pure,exact_top=10,exact_margin=0.05")[1] == {
        "precision": "bf16-pure", "exact_top": 10, "exact_margin": 0.05}
    with pytest.raises(ConfigError, match="must be a number"):
        parse_options("reranker@exact_margin=wide")
    tiny_encoder.save(tmp_path / "bi")
    with pytest.raises(ConfigError, match="not a cross-encoder"):  # a bi-encoder SPEC: named, not a TypeError
        load(str(tmp_path / "bi"), exact_top=10)
    tiny_ce.save(tmp_path / "ce")
    assert load(str(tmp_path / "ce"), exact_top=10, precision="bf16-pure").exact_top == 10


def test_a_recipe_spec_applies_the_recipe_inference_options_first(tiny_tokenizer, tiny_config, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import embedstack
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.transformer import BertModel
    from embedstack.training import recipes

    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    assert recipes.get_recipe("minilm-scifact-ce").inference == "max_seq_length=128,doc_stride=32"
    CrossEncoder(BertModel(tiny_config, add_pooler=True).init_weights(seed=0), tiny_tokenizer,
                 max_seq_length=32).save(recipes.recipe_dir("minilm-scifact-ce"))
    monkeypatch.setitem(recipes.RECIPES, "minilm-scifact-ce", dataclasses.replace(
        recipes.RECIPES["minilm-scifact-ce"], inference="max_seq_length=24,doc_stride=6"))
    ce = embedstack.load("recipe:minilm-scifact-ce")
    assert (ce.max_seq_length, ce.doc_stride) == (24, 6)
    ce = embedstack.load("recipe:minilm-scifact-ce@doc_stride=4")  # the SPEC's own options win
    assert (ce.max_seq_length, ce.doc_stride) == (24, 4)
    ce = embedstack.load("recipe:minilm-scifact-ce@max_seq_length=32,doc_stride=off")  # long documents cut again
    assert (ce.max_seq_length, ce.doc_stride) == (32, None)
    with pytest.raises(ConfigError, match="doc_stride=none"):  # the recipe's stride does not fit: the fix is named
        embedstack.load("recipe:minilm-scifact-ce@max_seq_length=12")
    ce = CrossEncoder.from_folder(recipes.recipe_dir("minilm-scifact-ce"))  # the folder itself is as it was saved
    assert (ce.max_seq_length, ce.doc_stride) == (32, None)
