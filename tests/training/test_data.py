"""Training data: JSONL/CSV/TSV readers (aliases, columns=, label_map, gzip, FILE:LINE errors), the
in-memory dataset, and the no-duplicates batch sampler (property tests, determinism, resume, speed)."""

from __future__ import annotations

import doctest
import gzip
import json
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import embedstack.training.data as data_mod
from embedstack.errors import ConfigError, DatasetError, InputError, OutputExistsError
from embedstack.training.data import (
    NoDuplicatesBatchSampler,
    TrainingData,
    iter_training_rows,
    load_training_data,
)

ROWS = [
    {"anchor": "what is a cat", "positive": "a cat is a feline", "negative_1": "a dog barks", "score": 0.5},
    {"anchor": 'he said "hi", then left', "positive": "  spaces kept  ", "negative_1": "naïve café", "score": 1.0},
    {"anchor": "third", "positive": "3rd", "negative_1": "fourth", "score": -2.25},
]


def write(path, text, *, gz=False):
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def rows_of(d):
    return [d[i] for i in range(len(d))]


def test_doctests():
    assert doctest.testmod(data_mod, optionflags=doctest.ELLIPSIS).failed == 0


# ---------------------------------------------------------------- formats


def test_jsonl_round_trip(tmp_path):
    d = TrainingData.from_records(ROWS)
    out = d.to_jsonl(tmp_path / "t.jsonl")
    back = load_training_data(out)
    assert rows_of(back) == ROWS
    assert back.columns == ("anchor", "positive", "negative_1", "score")
    assert back.text_columns == ("anchor", "positive", "negative_1") and back.label_columns == ("score",)
    assert back.source == str(out)


def test_csv_and_tsv_round_trip(tmp_path):
    csv_text = "anchor,positive,negative_1,score\n" + "".join(
        ",".join('"' + str(v).replace('"', '""') + '"' for v in r.values()) + "\n" for r in ROWS)
    assert rows_of(load_training_data(write(tmp_path / "t.csv", csv_text))) == ROWS
    tsv_text = "anchor\tpositive\tnegative_1\tscore\n" + "".join(
        "\t".join(str(v) for v in r.values()) + "\r\n" for r in ROWS)
    assert rows_of(load_training_data(write(tmp_path / "t.tsv", tsv_text))) == ROWS


def test_gzip_and_format_override(tmp_path):
    lines = "".join(json.dumps(r) + "\n" for r in ROWS)
    assert rows_of(load_training_data(write(tmp_path / "t.jsonl.gz", lines, gz=True))) == ROWS
    assert rows_of(load_training_data(write(tmp_path / "t.txt", lines), format="jsonl")) == ROWS
    csv_gz = write(tmp_path / "p.csv.gz", "anchor,positive\na,b\n", gz=True)
    assert rows_of(load_training_data(csv_gz)) == [{"anchor": "a", "positive": "b"}]
    d = TrainingData.from_records(ROWS)
    back = load_training_data(d.to_jsonl(tmp_path / "w.jsonl.gz"))
    assert rows_of(back) == ROWS
    with pytest.raises(ConfigError, match="format="):
        load_training_data(tmp_path / "t.txt")
    with pytest.raises(ConfigError, match="format"):
        load_training_data(tmp_path / "t.txt", format="parquet")


def test_aliases_case_insensitive_and_negatives_list(tmp_path):
    p = write(tmp_path / "a.jsonl", json.dumps({"Query": "q", "document": "d", "negatives": ["n1", "n2"],
                                                "relevance": 2, "gold_label": 1}) + "\n")
    d = load_training_data(p)
    assert d.columns == ("anchor", "positive", "negative_1", "negative_2", "score", "label")
    assert d[0] == {"anchor": "q", "positive": "d", "negative_1": "n1", "negative_2": "n2", "score": 2.0, "label": 1}
    assert d.num_negatives == 2
    p = write(tmp_path / "a.tsv", "sentence1\tsentence2\tnegative\tsimilarity\nx\ty\tz\t4\n")
    assert load_training_data(p)[0] == {"anchor": "x", "positive": "y", "negative_1": "z", "score": 4.0}
    p = write(tmp_path / "n.csv", 'anchor,positive,negatives\na,b,"[""c"", ""d""]"\n')  # a JSON list in a cell
    assert load_training_data(p).row_texts(0) == ("a", "b", "c", "d")


def test_columns_mapping_selects_only_those(tmp_path):
    p = write(tmp_path / "m.jsonl", json.dumps({"q": "a", "d": "b", "id": 7, "junk": [1]}) + "\n")
    d = load_training_data(p, columns={"q": "anchor", "d": "positive"})
    assert d.columns == ("anchor", "positive") and d[0] == {"anchor": "a", "positive": "b"}
    p = write(tmp_path / "m.csv", "id,q,d,neg,rel\n1,a,b,c,0.5\n")
    d = load_training_data(p, columns={"d": "positive", "q": "anchor", "neg": "negative", "rel": "score"})
    assert d[0] == {"anchor": "a", "positive": "b", "negative_1": "c", "score": 0.5}
    with pytest.raises(InputError, match=r"m\.csv:1: the header has no column named 'x'"):
        load_training_data(p, columns={"x": "anchor"})
    for bad in ({"q": "query"}, {"q": "anchor", "d": "anchor"}, {"d": "positive"}, {}):
        with pytest.raises(ConfigError, match="columns="):
            load_training_data(p, columns=bad)


def test_unknown_columns_name_known_names_and_columns_option(tmp_path):
    p = write(tmp_path / "u.jsonl", json.dumps({"q": "a", "d": "b"}) + "\n")
    with pytest.raises(InputError) as err:
        load_training_data(p)
    msg = str(err.value)
    assert f"{p}:1" in msg and "'q'" in msg and "columns=" in msg and "--columns" in msg and "sentence1" in msg
    p = write(tmp_path / "u.csv", "a,b\nx,y\n")  # no header
    with pytest.raises(InputError, match="header"):
        load_training_data(p)


def test_label_map(tmp_path):
    lines = [{"sentence1": "a", "sentence2": "b", "label": "entailment"},
             {"sentence1": "c", "sentence2": "d", "label": "contradiction"},
             {"sentence1": "e", "sentence2": "f", "label": 1.0},
             {"sentence1": "g", "sentence2": "h", "label": True}]
    p = write(tmp_path / "nli.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    d = load_training_data(p, label_map={"entailment": 0, "neutral": 1, "contradiction": 2})
    assert d.column("label") == [0, 2, 1, 1]
    with pytest.raises(InputError, match=rf"{p}:1: .*label_map="):
        load_training_data(p)
    with pytest.raises(ConfigError, match="label_map="):
        load_training_data(p, label_map={"entailment": "0"})


def test_limit_and_streaming(tmp_path):
    p = write(tmp_path / "s.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS) + "{bad json\n")
    assert len(load_training_data(p, limit=2)) == 2
    it = iter_training_rows(p)
    assert [n for n, _ in (next(it), next(it), next(it))] == [1, 2, 3]  # rows come before the bad line is read
    with pytest.raises(InputError, match=rf"{p}:4"):
        next(it)


def test_options_are_checked_at_call_time(tmp_path):
    with pytest.raises(DatasetError):
        iter_training_rows(tmp_path / "missing.jsonl")
    p = write(tmp_path / "ok.jsonl", json.dumps(ROWS[0]) + "\n")
    with pytest.raises(ConfigError):
        iter_training_rows(p, limit=0)
    with pytest.raises(ConfigError):
        iter_training_rows(p, encoding="nope")


# ---------------------------------------------------------------- bad rows name FILE:LINE


GOOD = json.dumps({"anchor": "a", "positive": "b", "score": 1.0, "label": 1})
BAD_JSONL = {
    "not valid JSON": "{oops",
    "expected a JSON object": "[1, 2]",
    "missing;": json.dumps({"anchor": "a", "score": 1.0, "label": 1}),
    "must be a number": json.dumps({"anchor": "a", "positive": "b", "score": "high", "label": 1}),
    "must be a finite number": json.dumps({"anchor": "a", "positive": "b", "score": "nan", "label": 1}),
    "must be an integer class id": json.dumps({"anchor": "a", "positive": "b", "score": 1, "label": 1.5}),
    "class id >= 0": json.dumps({"anchor": "a", "positive": "b", "score": 1, "label": -1}),
    "empty text": json.dumps({"anchor": "  ", "positive": "b", "score": 1, "label": 1}),
    "must be a text": json.dumps({"anchor": 5, "positive": "b", "score": 1, "label": 1}),
    "is null": json.dumps({"anchor": "a", "positive": None, "score": 1, "label": 1}),
    "that the first row": json.dumps({"anchor": "a", "positive": "b", "score": 1, "label": 1, "extra": 1}),
}


@pytest.mark.parametrize("problem", sorted(BAD_JSONL))
def test_bad_jsonl_row_names_file_and_line(tmp_path, problem):
    p = write(tmp_path / "bad.jsonl", f"{GOOD}\n\n{BAD_JSONL[problem]}\n{GOOD}\n")
    with pytest.raises(InputError) as err:
        load_training_data(p)
    assert f"{p}:3:" in str(err.value) and problem in str(err.value)


BAD_TABLE = {
    ("csv", "fields, but the header"): "a,b,1\nc,d\n",
    ("csv", "must be a number"): "a,b,1\nc,d,x\n",
    ("csv", "empty text"): 'a,b,1\n"",d,2\n',
    ("csv", "not valid CSV"): 'a,b,1\n"c,d,2\n',
    ("tsv", "fields, but the header"): "a\tb\t1\nc\td\te\t2\n",
    ("tsv", "must be a finite number"): "a\tb\t1\nc\td\tinf\n",
}


@pytest.mark.parametrize("fmt,problem", sorted(BAD_TABLE))
def test_bad_table_row_names_file_and_line(tmp_path, fmt, problem):
    sep = "," if fmt == "csv" else "\t"
    p = write(tmp_path / f"bad.{fmt}", f"anchor{sep}positive{sep}score\n" + BAD_TABLE[fmt, problem])
    with pytest.raises(InputError) as err:
        load_training_data(p)
    assert f"{p}:3:" in str(err.value) and problem in str(err.value)


def test_csv_quoted_newlines_keep_line_numbers(tmp_path):
    p = write(tmp_path / "ml.csv", 'anchor,positive,label\n"two\nlines",b,1\nc,d,x\n')
    assert list(iter_training_rows(p, limit=1)) == [(2, {"anchor": "two\nlines", "positive": "b", "label": 1})]
    with pytest.raises(InputError, match=rf"{p}:4: .*integer class id"):
        load_training_data(p)


def test_ragged_negatives_and_decode_errors(tmp_path):
    rows = [{"anchor": "a", "positive": "b", "negatives": ["x", "y"]},
            {"anchor": "c", "positive": "d", "negatives": ["z"]}]
    p = write(tmp_path / "r.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=rf"{p}:2: 1 negatives, but {p}:1 has 2"):
        load_training_data(p)
    with pytest.raises(InputError, match=r"records\[1\]: 1 negatives"):
        TrainingData.from_records(rows)
    p = tmp_path / "latin.tsv"
    p.write_bytes(b"anchor\tpositive\ncaf\xe9\tx\n")
    with pytest.raises(InputError, match=rf"{p}:2"):
        load_training_data(p)
    assert load_training_data(p, encoding="latin-1")[0]["anchor"] == "café"


@pytest.mark.parametrize("name,text", [("e.jsonl", ""), ("e2.jsonl", "\n\n"), ("e.csv", "anchor,positive\n"),
                                       ("e.tsv", "")])
def test_empty_file(tmp_path, name, text):
    p = write(tmp_path / name, text)
    with pytest.raises(InputError) as err:
        load_training_data(p)
    assert str(p) in str(err.value) and "no training rows" in str(err.value) and "expected" in str(err.value)


# ---------------------------------------------------------------- the dataset


def test_from_columns_and_accessors():
    d = TrainingData.from_columns({"positive": ["p1", "p2", "p3"], "anchor": ["a1", "a2", "a3"],
                                   "negatives": np.array([["n1", "m1"], ["n2", "m2"], ["n3", "m3"]]),
                                   "label": np.array([0, 1, 2])})
    assert d.columns == ("anchor", "positive", "negative_1", "negative_2", "label")
    assert d[-1] == {"anchor": "a3", "positive": "p3", "negative_1": "n3", "negative_2": "m3", "label": 2}
    assert d.row_texts(0) == ("a1", "p1", "n1", "m1") and len(d) == 3
    col = d.column("anchor")
    col.append("x")
    assert len(d.column("anchor")) == 3  # a copy
    assert rows_of(d.select([2, 0])) == [d[2], d[0]]
    assert repr(d) == ("TrainingData(3 rows, columns=('anchor', 'positive', 'negative_1', 'negative_2', 'label'), "
                       "source='columns')")
    assert list(d) == rows_of(d)
    with pytest.raises(IndexError):
        d[3]
    with pytest.raises(IndexError):
        d.select([0, 3])
    with pytest.raises(InputError):
        d.select([])
    with pytest.raises(ConfigError, match="no column 'score'"):
        d.column("score")


@pytest.mark.parametrize("cols,match", [
    ({"anchor": ["a", "b"], "positive": ["c"]}, "different lengths"),
    ({"anchor": [], "positive": []}, "no training rows"),
    ({"anchor": ["a", ""], "positive": ["c", "d"]}, r"columns\[1\]: column 'anchor' is an empty text"),
    ({"anchor": ["a"], "score": ["x"]}, "must be a number"),
    ({"anchor": ["a"], "negative_1": ["b"]}, "need a positive"),
    ({"anchor": ["a"], "positive": ["b"], "negative_2": ["c"]}, "numbered negative_1"),
    ({"positive": ["b"]}, "no anchor"),
    ({"anchor": ["a"], "idx": [1]}, "unknown column 'idx'"),
    ({"anchor": "abc"}, "must be a sequence"),
    ({"anchor": ["a", "b"], "positive": ["c", "d"], "negatives": [["x"], ["y", "z"]]}, r"columns\[1\]: 2 negatives"),
])
def test_from_columns_errors(cols, match):
    with pytest.raises(InputError, match=match):
        TrainingData.from_columns(cols)


def test_from_records_errors():
    with pytest.raises(InputError, match="records holds no training rows"):
        TrainingData.from_records([])
    with pytest.raises(InputError, match=r"mine\[1\]: column\(s\) \['positive'\] missing"):
        TrainingData.from_records([{"anchor": "a", "positive": "b"}, {"anchor": "c"}], source="mine")
    with pytest.raises(InputError, match=r"records\[0\]: expected a JSON object"):
        TrainingData.from_records(["just a string"])


def test_split_is_deterministic_and_disjoint():
    d = TrainingData.from_columns({"anchor": [f"q{i // 4}" for i in range(100)],
                                   "positive": [f"p{i}" for i in range(100)]})
    train, dev = d.split(0.2, seed=3)
    assert (len(train), len(dev)) == (80, 20)
    assert rows_of(d.split(0.2, seed=3)[1]) == rows_of(dev)
    assert rows_of(d.split(0.2, seed=4)[1]) != rows_of(dev)
    assert sorted(train.column("positive") + dev.column("positive")) == sorted(d.column("positive"))
    train, dev = d.split(0.2, seed=3, by="anchor")
    assert not set(train.column("anchor")) & set(dev.column("anchor")) and 20 <= len(dev) <= 23
    with pytest.raises(InputError):
        TrainingData.from_columns({"anchor": ["a"]}).split(0.5, seed=0)
    with pytest.raises(ConfigError):
        d.split(1.0, seed=0)


def test_to_jsonl_is_atomic_and_guarded(tmp_path):
    d = TrainingData.from_records(ROWS)
    csv_file = write(tmp_path / "keep.csv", "anchor,positive\na,b\n")
    with pytest.raises(OutputExistsError):
        d.to_jsonl(csv_file)
    assert csv_file.read_text() == "anchor,positive\na,b\n"
    out = d.to_jsonl(tmp_path / "d.jsonl")
    d.select([0]).to_jsonl(out)  # an earlier JSONL output may be replaced
    assert len(load_training_data(out)) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- the sampler


def check_epoch(d, batches, size, drop_last=False):
    seen = []
    for b in batches:
        assert 1 <= len(b) <= size
        texts = [t for i in b for t in set(d.row_texts(i))]
        assert len(texts) == len(set(texts)), b
        seen += b
    if drop_last:
        assert all(len(b) == size for b in batches) and len(seen) == len(set(seen))
    else:
        assert sorted(seen) == list(range(len(d)))


def reference_batches(d, size, seed, epoch, drop_last):
    """The packing rule, written plainly: a row goes to the first non-full batch after every batch that
    took one of its texts."""
    batches, last = [], {}
    for row in np.random.default_rng([seed, epoch]).permutation(len(d)).tolist():
        texts = set(d.row_texts(row))
        b = max((last.get(t, -1) + 1 for t in texts), default=0)
        while b < len(batches) and len(batches[b]) == size:
            b += 1
        if b == len(batches):
            batches.append([])
        batches[b].append(row)
        last.update(dict.fromkeys(texts, b))
    return [b for b in batches if len(b) == size] if drop_last else batches


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(0, 30)), min_size=1, max_size=80),
       st.integers(1, 9), st.integers(0, 3), st.booleans())
def test_sampler_property(rows, size, seed, drop_last):
    d = TrainingData.from_columns({"anchor": [f"t{a}" for a, _, _ in rows], "positive": [f"t{b}" for _, b, _ in rows],
                                   "negative": [f"t{c}" for _, _, c in rows]})
    if drop_last and size > len(d):
        return
    s = NoDuplicatesBatchSampler(d, size, seed=seed, drop_last=drop_last)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s) == s.position
        check_epoch(d, batches, size, drop_last)
        assert batches == reference_batches(d, size, seed, epoch, drop_last)


def test_sampler_without_duplicates_chunks_the_permutation():
    d = TrainingData.from_columns({"anchor": [f"a{i}" for i in range(103)], "positive": [f"p{i}" for i in range(103)]})
    s = NoDuplicatesBatchSampler(d, 10, seed=7)
    batches = list(s)
    order = np.random.default_rng([7, 0]).permutation(103).tolist()
    assert batches == [order[i:i + 10] for i in range(0, 103, 10)]
    assert len(list(NoDuplicatesBatchSampler(d, 10, drop_last=True))) == 10
    assert [len(b) for b in NoDuplicatesBatchSampler(d, 500)] == [103]  # batch_size > rows: one smaller batch


def test_sampler_defers_instead_of_dropping():
    d = TrainingData.from_columns({"anchor": ["same"] * 5 + ["x", "y"],
                                   "positive": ["p1", "p2", "p3", "p4", "same", "x", "z"]})  # row 5: anchor == positive
    s = NoDuplicatesBatchSampler(d, 4, seed=1)
    batches = list(s)
    check_epoch(d, batches, 4)
    assert len(batches) == 5  # 'same' is in five rows: five batches, each row exactly once
    assert [i for b in batches for i in b].count(5) == 1


def test_sampler_hash_collisions_fall_back_to_exact(monkeypatch):
    rng = np.random.default_rng(0)
    d = TrainingData.from_columns({"anchor": [f"q{i}" for i in rng.integers(0, 40, 300)],
                                   "positive": [f"p{i}" for i in rng.integers(0, 200, 300)]})
    exact = list(NoDuplicatesBatchSampler(d, 16, seed=2))
    monkeypatch.setattr(data_mod, "hash", lambda s: len(s) % 3, raising=False)  # collisions everywhere
    assert list(NoDuplicatesBatchSampler(d, 16, seed=2)) == exact


def test_sampler_deterministic_per_seed_and_epoch():
    rng = np.random.default_rng(0)
    d = TrainingData.from_columns({"anchor": [f"q{i}" for i in rng.integers(0, 300, 1000)],
                                   "positive": [f"p{i}" for i in range(1000)]})
    a, b = NoDuplicatesBatchSampler(d, 32, seed=5), NoDuplicatesBatchSampler(d, 32, seed=5)
    e0 = list(a)
    assert e0 == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    e1 = list(a)
    assert e1 == list(b) and e1 != e0
    assert list(NoDuplicatesBatchSampler(d, 32, seed=6)) != e0
    check_epoch(d, e0, 32)
    check_epoch(d, e1, 32)


def test_sampler_resume_mid_epoch():
    rng = np.random.default_rng(1)
    d = TrainingData.from_columns({"anchor": [f"q{i}" for i in rng.integers(0, 100, 500)],
                                   "positive": [f"p{i}" for i in range(500)]})
    s = NoDuplicatesBatchSampler(d, 16, seed=9)
    s.set_epoch(2)
    ref = NoDuplicatesBatchSampler(d, 16, seed=9)
    ref.set_epoch(2)
    full = list(ref)
    it = iter(s)
    first = [next(it) for _ in range(7)]
    state = s.state_dict()
    assert state == {"epoch": 2, "position": 7, "seed": 9, "batch_size": 16, "n_rows": 500}
    fresh = NoDuplicatesBatchSampler(d, 16, seed=9)
    fresh.load_state_dict(json.loads(json.dumps(state)))
    fresh.set_epoch(2)  # the current epoch keeps its position
    rest = list(fresh)
    assert first + rest == full and fresh.position == len(fresh)
    fresh.set_epoch(3)
    assert fresh.position == 0 and len(list(fresh)) == len(fresh)
    for change in ({"n_rows": 499}, {"batch_size": 8}, {"seed": 1}):
        with pytest.raises(ConfigError, match="changed since the checkpoint"):
            fresh.load_state_dict({**state, **change})
    with pytest.raises(ConfigError):
        fresh.load_state_dict({**state, "position": 10_000})
    with pytest.raises(ConfigError):
        fresh.load_state_dict({"epoch": 1})


def test_sampler_second_iteration_does_not_repeat():
    d = TrainingData.from_columns({"anchor": list("abcdefgh"), "positive": list("ABCDEFGH")})
    s = NoDuplicatesBatchSampler(d, 3)
    assert len(list(s)) == 3
    with pytest.warns(RuntimeWarning, match=r"set_epoch\(1\)"):
        assert list(s) == []
    s.set_epoch(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(s)) == 3
    s.set_epoch(2)
    it = iter(s)
    head = next(it)
    del it  # a broken-off iteration: the next one resumes after the batches it handed out
    ref = NoDuplicatesBatchSampler(d, 3)
    ref.set_epoch(2)
    assert [head] + list(s) == list(ref)


def test_sampler_group_by_length_reduces_spread():
    rng = np.random.default_rng(0)
    n = 4000
    d = TrainingData.from_columns({"anchor": [f"q{i}" for i in range(n)], "positive": [f"p{i}" for i in range(n)]})
    lengths = rng.integers(5, 300, n)

    def spread(batches):
        return float(np.mean([np.ptp(lengths[b]) for b in batches]))

    grouped = NoDuplicatesBatchSampler(d, 16, seed=0, group_by_length=True, lengths=lengths)
    batches = list(grouped)
    check_epoch(d, batches, 16)
    assert spread(batches) < 0.5 * spread(list(NoDuplicatesBatchSampler(d, 16, seed=0)))
    again = NoDuplicatesBatchSampler(d, 16, seed=0, group_by_length=True, lengths=lengths.tolist())
    assert list(again) == batches
    with pytest.raises(ConfigError, match="lengths="):
        NoDuplicatesBatchSampler(d, 16, group_by_length=True)
    with pytest.raises(ConfigError, match="lengths="):
        NoDuplicatesBatchSampler(d, 16, lengths=lengths)
    with pytest.raises(ConfigError, match="lengths="):
        NoDuplicatesBatchSampler(d, 16, group_by_length=True, lengths=lengths[:-1])


def test_sampler_bad_options():
    d = TrainingData.from_columns({"anchor": ["a", "b"], "positive": ["c", "d"]})
    for size in (0, -1, 1.5, None):
        with pytest.raises(ConfigError, match="batch_size"):
            NoDuplicatesBatchSampler(d, size)
    with pytest.raises(ConfigError, match="drop_last"):
        NoDuplicatesBatchSampler(d, 3, drop_last=True)
    with pytest.raises(ConfigError, match="seed"):
        NoDuplicatesBatchSampler(d, 1, seed=-1)
    with pytest.raises(ConfigError, match="TrainingData"):
        NoDuplicatesBatchSampler([("a", "b")], 1)  # type: ignore[arg-type]


def test_sampler_epoch_of_200k_rows_is_fast():
    n = 200_000
    rng = np.random.default_rng(0)
    d = TrainingData.from_columns({"anchor": [f"query {i // 3}" for i in range(n)],  # every anchor thrice
                                   "positive": [f"doc {i}" for i in range(n)],
                                   "negative": [f"doc {j}" for j in rng.integers(0, n, n)]})
    t = time.perf_counter()
    s = NoDuplicatesBatchSampler(d, 64, seed=0)
    assert len(s) >= n // 64
    assert time.perf_counter() - t < 10
    batches = s._batches()
    assert sum(map(len, batches)) == n
    sample = [batches[i] for i in rng.integers(0, len(batches), 50)]
    for b in sample:
        texts = [t for i in b for t in set(d.row_texts(i))]
        assert len(texts) == len(set(texts))
