"""Loaders on tiny files written by the tests: CRLF, headers, malformed lines, non-UTF-8, gzip, WikiExtractor."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from embedstack.data import (
    RetrievalDataset,
    iter_texts,
    load_analogies,
    load_beir,
    load_classification,
    load_nli,
    load_sts,
    load_word_similarity,
    read_qrels,
)
from embedstack.errors import ConfigError, DatasetError, FormatError, InputError


def _beir(root: Path, qrels: bytes, *, split: str = "test") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = [{"_id": "d1", "title": "Cats", "text": "Cats purr."}, {"_id": "d2", "title": "", "text": "Dogs bark."},
            {"_id": "d3", "title": "Birds", "text": "  Birds sing. "}]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    qs = [{"_id": "q1", "text": "cat sounds"}, {"_id": "q2", "text": "dog sounds"}, {"_id": "q3", "text": "unjudged"}]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in qs) + "\n", encoding="utf-8")
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_bytes(qrels)
    return root


def test_beir_crlf_with_header(tmp_path: Path) -> None:
    ds = load_beir(_beir(tmp_path / "b", b"query-id\tcorpus-id\tscore\r\nq1\td1\t2\r\nq2\td2\t1\r\nq1\td3\t0\r\n"))
    assert ds.doc_ids() == ["d1", "d2", "d3"]
    assert ds.doc_texts() == ["Cats Cats purr.", "Dogs bark.", "Birds   Birds sing."]
    assert ds.query_ids() == ["q1", "q2"]  # q3 has no qrels
    assert ds.query_texts() == ["cat sounds", "dog sounds"]
    assert ds.qrels == {"q1": {"d1": 2, "d3": 0}, "q2": {"d2": 1}}
    assert ds.name == "b"


def test_beir_without_header_and_trec_format(tmp_path: Path) -> None:
    ds = load_beir(_beir(tmp_path / "b", b"q1\td1\t1\nq2\td2\t1\n"))
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    trec = tmp_path / "trec.txt"
    trec.write_text("q1 0 d1 3\nq1 0 d2 0\n")
    assert read_qrels(trec) == {"q1": {"d1": 3, "d2": 0}}


def test_beir_malformed_qrels_line_names_file_and_line(tmp_path: Path) -> None:
    root = _beir(tmp_path / "b", b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\tmaybe\n")
    with pytest.raises(FormatError, match=r"test\.tsv:3: malformed qrels line .*Fix or delete"):
        load_beir(root)


def test_beir_malformed_first_line_is_not_taken_for_a_header(tmp_path: Path) -> None:
    root = _beir(tmp_path / "b", b"q1\td1\nq2\td2\t1\n")
    with pytest.raises(FormatError, match=r"test\.tsv:1: malformed qrels line"):
        load_beir(root)


def test_beir_missing_split_lists_existing(tmp_path: Path) -> None:
    root = _beir(tmp_path / "b", b"q1\td1\t1\n", split="train")
    with pytest.raises(DatasetError, match="splits present: train"):
        load_beir(root, split="test")


def test_beir_bad_json_and_missing_id(tmp_path: Path) -> None:
    root = _beir(tmp_path / "b", b"q1\td1\t1\n")
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n')
    with pytest.raises(FormatError, match=r"corpus\.jsonl:2: not valid JSON"):
        load_beir(root)
    (root / "corpus.jsonl").write_text('{"title": "t", "text": "no id"}\n')
    with pytest.raises(FormatError, match=r"corpus\.jsonl:1: .*no '_id'"):
        load_beir(root)


def test_beir_non_utf8_bytes(tmp_path: Path) -> None:
    root = _beir(tmp_path / "b", b"q1\td1\t1\n")
    (root / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"queries\.jsonl:1: byte offset 26 \(0xe9\) is not valid utf-8; "
                                         r"pass --encoding latin-1 \(or the file's encoding\) or --errors replace"):
        load_beir(root)
    ds = load_beir(root, errors="replace")
    assert ds.queries["q1"] == "caf\ufffd"
    assert load_beir(root, encoding="latin-1").queries["q1"] == "caf\xe9"


def test_retrieval_dataset_split_and_subset() -> None:
    corpus = {f"d{i}": {"title": "", "text": f"doc {i}"} for i in range(5)}
    queries = {f"q{i}": f"query {i}" for i in range(10)}
    qrels = {f"q{i}": {f"d{i % 5}": 1} for i in range(10)}
    ds = RetrievalDataset("t", corpus, queries, qrels)
    tune, held = ds.split_queries(0.7, seed=3)
    assert len(tune.query_ids()) == 7 and len(held.query_ids()) == 3
    assert set(tune.query_ids()).isdisjoint(held.query_ids())
    assert set(tune.query_ids()) | set(held.query_ids()) == set(ds.query_ids())
    again, _ = ds.split_queries(0.7, seed=3)
    assert again.query_ids() == tune.query_ids()
    sub = ds.subset_queries(["q2", "q5"])
    assert sub.query_ids() == ["q2", "q5"] and sub.qrels == {"q2": {"d2": 1}, "q5": {"d0": 1}}
    with pytest.raises(InputError, match="unknown query ids"):
        ds.subset_queries(["nope"])
    with pytest.raises(InputError, match="fraction"):
        ds.split_queries(1.0)


STS_ROWS = (
    "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.\n"
    'main-news\theadlines\t2013\t0002\t1.250\tHe said "no".\t"Yes" she said.\tsrc\tlicense\n'
)


def test_sts_quotes_and_extra_columns(tmp_path: Path) -> None:
    (tmp_path / "sts-test.csv").write_text(STS_ROWS, encoding="utf-8")
    sts = load_sts(tmp_path, "test")
    assert sts.s1 == ["A plane is taking off.", 'He said "no".']
    assert sts.s2 == ["An air plane is taking off.", '"Yes" she said.']
    np.testing.assert_array_equal(sts.scores, np.array([5.0, 1.25], dtype=np.float32))
    assert sts.scores.dtype == np.float32


def test_sts_crlf_and_malformed(tmp_path: Path) -> None:
    f = tmp_path / "sts-dev.csv"
    f.write_bytes(STS_ROWS.replace("\n", "\r\n").encode())
    assert load_sts(f).s2[1] == '"Yes" she said.'
    f.write_text(STS_ROWS + "main-news\tx\t2013\t0003\tfive\ta\tb\n")
    with pytest.raises(FormatError, match=r"sts-dev\.csv:3: expected 7\+ tab-separated fields"):
        load_sts(f)
    with pytest.raises(DatasetError, match="splits present: dev"):
        load_sts(tmp_path, "train")


def test_analogies_sections(tmp_path: Path) -> None:
    f = tmp_path / "q.txt"
    f.write_bytes(b": capital-common-countries\r\nAthens Greece Baghdad Iraq\r\n: family\r\nboy girl brother sister\r\n"
                  b"Boy Girl Man Woman\r\n")
    secs = load_analogies(f)
    assert secs == [("capital-common-countries", [("Athens", "Greece", "Baghdad", "Iraq")]),
                    ("family", [("boy", "girl", "brother", "sister"), ("Boy", "Girl", "Man", "Woman")])]
    f.write_text(": s\na b c\n")
    with pytest.raises(FormatError, match=r"q\.txt:2: expected 4"):
        load_analogies(f)
    f.write_text("a b c d\n")
    with pytest.raises(FormatError, match="before any ': section'"):
        load_analogies(f)


def test_word_similarity_formats(tmp_path: Path) -> None:
    f = tmp_path / "ws.tsv"
    f.write_bytes(b"# comment\r\n# Word 1\tWord 2\tHuman (mean)\r\nlove\tsex\t6.77\r\n\r\ntiger\tcat\t7.35\r\n")
    assert load_word_similarity(f) == [("love", "sex", 6.77), ("tiger", "cat", 7.35)]
    g = tmp_path / "combined.csv"
    g.write_text("Word 1,Word 2,Human (mean)\nlove,sex,6.77\n")
    assert load_word_similarity(g) == [("love", "sex", 6.77)]
    bad_first = tmp_path / "ws2.txt"
    bad_first.write_text("old new\nlove sex 6.77\n")
    with pytest.raises(FormatError, match=r"ws2\.txt:1"):
        load_word_similarity(bad_first)
    h = tmp_path / "ws.txt"
    h.write_text("old new 1.5\nbad line here\n")
    with pytest.raises(FormatError, match=r"ws\.txt:2"):
        load_word_similarity(h)


WIKI = (
    '<doc id="12" url="http://x?curid=12" title="Anarchism">\nAnarchism\n\nAnarchism is a philosophy.\n'
    "Etymology.\nThe term is old.\n</doc>\n"
    '<doc id="25" url="http://x?curid=25" title="Autism">\nAutism\n\nAutism is a disorder.\n</doc>\n'
)


def test_iter_texts_plain_gzip_wiki_folder(tmp_path: Path) -> None:
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"first line\r\n\r\nsecond line\n")
    assert list(iter_texts(plain)) == ["first line", "second line"]
    gz = tmp_path / "b.txt.gz"
    gz.write_bytes(gzip.compress(b"gz one\ngz two\n"))
    assert list(iter_texts(gz)) == ["gz one", "gz two"]
    wiki = tmp_path / "wiki_00"
    wiki.write_text(WIKI, encoding="utf-8")
    docs = list(iter_texts(wiki))
    assert docs == ["Anarchism is a philosophy.\nEtymology.\nThe term is old.", "Autism is a disorder."]
    (tmp_path / "README.md").write_text("not corpus")
    (tmp_path / ".hidden").write_text("not corpus")
    assert list(iter_texts(tmp_path)) == ["first line", "second line", "gz one", "gz two", *docs]
    assert list(iter_texts(tmp_path, limit=3)) == ["first line", "second line", "gz one"]
    assert list(iter_texts(wiki, kind="lines"))[0].startswith("<doc")


def test_iter_texts_gzip_wiki_and_jsonl(tmp_path: Path) -> None:
    gz = tmp_path / "wiki.txt.gz"
    gz.write_bytes(gzip.compress((WIKI + '<doc id="30" url="u" title="Stub">\nStub\n\n</doc>\n').encode()))
    assert list(iter_texts(gz))[1:] == ["Autism is a disorder.", "Stub"]  # a body-less page yields its title
    js = tmp_path / "r.jsonl"
    js.write_text('{"text": "great film", "label": "pos"}\n{"title": "T", "text": "bad"}\n')
    assert list(iter_texts(js)) == ["great film", "T bad"]


def test_iter_texts_is_lazy_and_streams(tmp_path: Path) -> None:
    f = tmp_path / "big.txt"
    f.write_text("".join(f"line {i}\n" for i in range(10_000)))
    it = iter_texts(f)
    assert next(it) == "line 0" and next(it) == "line 1"


def test_iter_texts_errors(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_bytes(b"ok\nalso ok\nbad \xff byte\n")
    it = iter_texts(f)
    assert next(it) == "ok"
    with pytest.raises(InputError, match=r"bad\.txt:3: byte offset 15 \(0xff\) is not valid utf-8"):
        list(it)
    assert list(iter_texts(f, errors="replace"))[2] == "bad \ufffd byte"
    assert list(iter_texts(f, encoding="latin-1"))[2] == "bad \xff byte"
    with pytest.raises(ConfigError, match="--errors must be"):
        iter_texts(f, errors="nope")
    with pytest.raises(ConfigError, match="--encoding 'nope' is not a known"):
        iter_texts(f, encoding="nope")
    with pytest.raises(ConfigError, match="'kind'"):
        iter_texts(f, kind="xml")
    with pytest.raises(DatasetError, match="does not exist"):
        iter_texts(tmp_path / "missing" / "x.txt")
    wiki = tmp_path / "w.txt"
    wiki.write_text('<doc id="1" title="A">\nA\ntext\n</doc>\nstray text\n')
    with pytest.raises(FormatError, match=r"w\.txt:5: text outside a <doc"):
        list(iter_texts(wiki))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no corpus files"):
        iter_texts(empty)


def test_classification_csv_and_agnews(tmp_path: Path) -> None:
    (tmp_path / "test.csv").write_text('text,category\n"Where is my card, please?",card_arrival\nHi,greeting\n')
    ds = load_classification(tmp_path, "test")
    assert ds.texts == ["Where is my card, please?", "Hi"] and ds.labels == ["card_arrival", "greeting"]
    ag = tmp_path / "ag"
    ag.mkdir()
    (ag / "classes.txt").write_text("World\nSports\n")
    (ag / "test.csv").write_text('"2","Win","A team won #36;5 in\\the cup"\n"1","War","Peace talks"\n')
    ds = load_classification(ag, "test")
    assert ds.labels == ["Sports", "World"] and ds.texts[0] == "Win A team won $5 in the cup"
    with pytest.raises(DatasetError, match="no train.csv"):
        load_classification(ag, "train")


def test_nli_senteval(tmp_path: Path) -> None:
    for k, v in {"s1": "A man sleeps .\nA dog runs .\nX\n", "s2": "A man is awake .\nAn animal moves .\nY\n",
                 "labels": "contradiction\nentailment\n-\n"}.items():
        (tmp_path / f"{k}.dev").write_text(v)
    nli = load_nli(tmp_path, "dev")
    assert len(nli) == 2 and nli.labels == ["contradiction", "entailment"] and nli.premises[1] == "A dog runs ."


def test_nli_official_jsonl(tmp_path: Path) -> None:
    rows = [{"sentence1": "A man.", "sentence2": "A person.", "gold_label": "entailment"},
            {"sentence1": "A dog.", "sentence2": "A cat.", "gold_label": "-"}]
    (tmp_path / "snli_1.0_test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    nli = load_nli(tmp_path, "test")
    assert (nli.premises, nli.hypotheses, nli.labels) == (["A man."], ["A person."], ["entailment"])
    (tmp_path / "snli_1.0_test.jsonl").write_text(json.dumps({**rows[0], "gold_label": "maybe"}) + "\n")
    with pytest.raises(FormatError, match="label 'maybe'"):
        load_nli(tmp_path, "test")


def test_imdb_layouts(tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    packed.mkdir()
    rows = [{"split": "test", "label": "pos", "id": 1, "rating": 9, "text": "Great.<br /><br />Loved it"},
            {"split": "train", "label": "neg", "id": 2, "rating": 1, "text": "train row"},
            {"split": "test", "label": "unsup", "id": 3, "rating": 0, "text": "unlabelled"}]
    (packed / "aclImdb_reviews.jsonl.gz").write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
    ds = load_classification(packed, "test")
    assert ds.texts == ["Great.  Loved it"] and ds.labels == ["pos"]
    folder = tmp_path / "aclImdb"
    for label, name, text in (("pos", "10_9.txt", "ten"), ("pos", "2_8.txt", "two"), ("neg", "5_1.txt", "bad")):
        (folder / "train" / label).mkdir(parents=True, exist_ok=True)
        (folder / "train" / label / name).write_text(text)
    ds = load_classification(folder, "train")
    assert ds.texts == ["bad", "two", "ten"] and ds.labels == ["neg", "pos", "pos"]  # numeric id order
