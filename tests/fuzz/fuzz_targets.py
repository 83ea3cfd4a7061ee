"""Fuzz targets: every parser of embedstack, a valid seed for each, and hypothesis strategies.

Shared by ``tests/fuzz/test_fuzz.py`` (a few hundred cases per parser in the default test run) and
``benchmarks/fuzz.py`` (>= 10,000 per parser, with a table). Each case replaces one file of a valid
seed folder with either *generated* content (format-shaped text, JSON with wrong types, raw bytes)
or a *mutated* copy of the seed (bits flipped, bytes inserted/deleted/duplicated, truncation), then
runs the parser on the folder. The property: the parser returns, or raises an
:class:`~embedstack.errors.EmbedstackError` subclass; anything else is a bug, and so is a case that
runs past the per-case time limit (a hang).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import struct
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from embedstack.errors import EmbedstackError

__all__ = ["Target", "TARGETS", "Case", "Hang", "Workspace", "case_strategy", "run_case", "time_limit"]

# Byte strings that tend to break parsers: separators, quotes, brackets, non-UTF-8 and NUL bytes, a
# BOM, gzip's magic number, numbers at and past the float range, JSON keywords and escapes.
INTERESTING: tuple[bytes, ...] = (
    b"\n", b"\r\n", b"\r", b"\t", b" ", b"\x00", b"\xff", b"\xe9", b"\xc3", b"\xef\xbb\xbf", b"\x1f\x8b",
    b'"', b"'", b"{", b"}", b"[", b"]", b",", b":", b"-", b"#", b"<doc>", b"</doc>",
    b"nan", b"inf", b"-inf", b"-1", b"0", b"1e308", b"1e999", b"99999999999999999999", b"4294967296",
    b"null", b"true", b"[]", b"{}", b"\\u0000", b"\\ud800", b"\xf0\x9f\x98\x80",
)
TOKENS: tuple[str, ...] = (
    "the", "cat", "caf\u00e9", "\u732b", "a b", "", " ", "0", "1", "-1", "0.5", "1e-3", "nan", "inf", "-inf",
    "1e39", "99999999999999999999", "\t", "\x00", "\ufffd", "\"", "main-captions", "title", ":", "#",
)


class Hang(BaseException):
    """Raised by the per-case alarm (a BaseException, so ``except Exception`` in a parser cannot hide it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (SIGALRM; a no-op where unavailable)."""
    if not hasattr(signal, "setitimer"):  # pragma: no cover - Windows
        yield
        return

    def _alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------------ strategies
def _pos() -> st.SearchStrategy[int]:
    # half the edits land in the first 96 bytes, where headers (word2vec counts, safetensors length) live
    return st.one_of(st.integers(0, 96), st.integers(0, 1 << 30))


_OPS = st.one_of(
    st.tuples(st.just("flip"), _pos(), st.integers(0, 7)),
    st.tuples(st.just("insert"), _pos(), st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=8))),
    st.tuples(st.just("delete"), _pos(), st.integers(1, 16)),
    st.tuples(st.just("truncate"), _pos(), st.just(0)),
    st.tuples(st.just("dup"), _pos(), st.integers(1, 64)),
    st.tuples(st.just("set"), _pos(), st.integers(0, 255)),
)


def mutate(data: bytes, ops: list[tuple[str, int, Any]]) -> bytes:
    """Apply byte-level edits to ``data`` (positions wrap around the current length)."""
    b = bytearray(data)
    for kind, pos, arg in ops:
        n = len(b)
        i = pos % (n + 1)
        if kind == "flip" and n:
            b[i % n] ^= 1 << arg
        elif kind == "set" and n:
            b[i % n] = arg
        elif kind == "insert":
            b[i:i] = arg
        elif kind == "delete":
            del b[i:i + arg]
        elif kind == "truncate":
            del b[i:]
        elif kind == "dup":
            b[i:i] = b[i:i + arg]
    return bytes(b)


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.sampled_from([0, 1, -1, 2, 7, 16, 10**12]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12), st.sampled_from(list(TOKENS)),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def json_edit(seed: Any) -> st.SearchStrategy[bytes]:
    """Valid JSON derived from ``seed``: one value (at any depth) replaced, a key dropped, or another value."""

    def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        out = [prefix]
        if isinstance(obj, dict):
            for k, v in obj.items():
                out += paths(v, (*prefix, k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                out += paths(v, (*prefix, i))
        return out

    all_paths = paths(seed)

    def apply(path: tuple[Any, ...], value: Any, drop: bool) -> bytes:
        obj = json.loads(json.dumps(seed))
        if not path:
            return json.dumps(value).encode()
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        if drop and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
        return json.dumps(obj, allow_nan=True).encode()

    return st.builds(apply, st.sampled_from(all_paths), JSON_VALUES, st.booleans())


def lines_of(fields: st.SearchStrategy[str], sep: str, *, min_fields: int = 0, max_fields: int = 8,
             max_lines: int = 6) -> st.SearchStrategy[bytes]:
    """Text made of lines of ``sep``-joined fields, encoded as UTF-8 or latin-1."""
    line = st.lists(fields, min_size=min_fields, max_size=max_fields).map(sep.join)
    return st.builds(lambda ls, enc, nl: nl.join(ls).encode(enc, "replace"),
                     st.lists(line, max_size=max_lines), st.sampled_from(["utf-8", "latin-1"]),
                     st.sampled_from(["\n", "\r\n"]))


FIELD = st.one_of(st.sampled_from(list(TOKENS)), st.text(max_size=6),
                  st.floats().map(repr), st.integers(-10**25, 10**25).map(str))


def jsonl_records(keys: list[str]) -> st.SearchStrategy[bytes]:
    """JSON lines whose objects use ``keys`` with values of any type (or whole lines of any JSON)."""
    rec = st.one_of(st.fixed_dictionaries({}, optional={k: JSON_VALUES for k in keys}), JSON_VALUES)
    return st.lists(rec, max_size=5).map(lambda rs: b"\n".join(json.dumps(r).encode() for r in rs))


# ------------------------------------------------------------------------------------------ targets
@dataclass
class Target:
    """One parser: a seed folder (file name → bytes), the files to fuzz, generators, and the call."""

    name: str
    seed: Callable[[], dict[str, bytes]]
    parse: Callable[[Path], Any]
    fuzz_files: list[str]
    generated: Callable[[dict[str, bytes]], dict[str, st.SearchStrategy[bytes]]] = field(default=lambda s: {})
    needs: str | None = None  # a module that must be importable (e.g. torch)

    def available(self) -> bool:
        if self.needs is None:
            return True
        import importlib.util

        return importlib.util.find_spec(self.needs) is not None


def _vectors() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    return ["the", "cat", "caf\u00e9", "sat"], rng.standard_normal((4, 5)).astype(np.float32)


def _seed_w2v(binary: bool, name: str) -> Callable[[], dict[str, bytes]]:
    def build() -> dict[str, bytes]:
        from embedstack.io.formats import write_word2vec

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            write_word2vec(p, *_vectors(), binary=binary)
            return {name: p.read_bytes()}
    return build


def _seed_glove() -> dict[str, bytes]:
    from embedstack.io.formats import write_glove

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "glove.txt"
        write_glove(p, *_vectors())
        return {"glove.txt": p.read_bytes()}


def _vec_text(header: bool) -> Callable[[dict[str, bytes]], dict[str, st.SearchStrategy[bytes]]]:
    def gen(seed: dict[str, bytes]) -> dict[str, st.SearchStrategy[bytes]]:
        name = next(iter(seed))
        body = lines_of(FIELD, " ", min_fields=1)
        if header:
            head = st.builds(lambda c, d: f"{c} {d}\n".encode(), st.integers(-2, 10**12), st.integers(-2, 10**9))
            body = st.builds(lambda h, b: h + b, st.one_of(head, st.just(b"4 5\n")), body)
        return {name: st.one_of(body, st.binary(max_size=200))}
    return gen


def _w2v_binary_gen(seed: dict[str, bytes]) -> dict[str, st.SearchStrategy[bytes]]:
    def build(count: int, dim: int, words: list[bytes], floats: bytes, nl: bool) -> bytes:
        out = [f"{count} {dim}\n".encode()]
        for w in words:
            out.append(w + b" " + floats[: 4 * max(dim, 0)] + (b"\n" if nl else b""))
        return b"".join(out)
    return {"vectors.bin": st.builds(build, st.integers(-1, 10**12), st.integers(-1, 64),
                                     st.lists(st.binary(max_size=10), max_size=5), st.binary(max_size=256),
                                     st.booleans())}


def _read_w2v(binary: bool, name: str) -> Callable[[Path], Any]:
    def parse(folder: Path) -> Any:
        from embedstack.io.formats import read_word2vec

        return read_word2vec(folder / name, binary=binary)
    return parse


def _read_vec(folder: Path) -> Any:
    from embedstack.io.formats import read_vectors

    return read_vectors(folder / "wiki.vec")


def _read_glove(folder: Path) -> Any:
    from embedstack.io.formats import read_glove

    return read_glove(folder / "glove.txt")


BEIR_CORPUS = (b'{"_id": "d1", "title": "Cats", "text": "The cat sat on the mat."}\n'
               b'{"_id": "d2", "title": "", "text": "Caf\xc3\xa9 au lait."}\n')
BEIR_QUERIES = b'{"_id": "q1", "text": "where did the cat sit"}\n{"_id": "q2", "text": "coffee"}\n'
BEIR_QRELS = b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n"


def _seed_beir() -> dict[str, bytes]:
    return {"corpus.jsonl": BEIR_CORPUS, "queries.jsonl": BEIR_QUERIES, "qrels/test.tsv": BEIR_QRELS}


def _beir_gen(which: str) -> Callable[[dict[str, bytes]], dict[str, st.SearchStrategy[bytes]]]:
    def gen(seed: dict[str, bytes]) -> dict[str, st.SearchStrategy[bytes]]:
        if which == "qrels/test.tsv":
            return {which: st.one_of(lines_of(FIELD, "\t"), lines_of(FIELD, " "), st.binary(max_size=120))}
        return {which: st.one_of(jsonl_records(["_id", "id", "title", "text"]), st.binary(max_size=120))}
    return gen


def _load_beir(folder: Path) -> Any:
    from embedstack.data import load_beir

    return load_beir(folder, split="test")


STS = (b"main-captions\tMSRvid\t2012test\t0001\t5.000\tA man plays a guitar.\tA man plays guitar.\n"
       b"main-news\tMSRpar\t2012test\t0002\t1.25\tCaf\xc3\xa9 news.\tOther news.\textra\n")


def _load_sts(folder: Path) -> Any:
    from embedstack.data import load_sts

    return load_sts(folder / "sts-test.csv")


WORDSIM = b"Word 1,Word 2,Human (mean)\ntiger,cat,7.35\nbook,paper,7.46\n"
ANALOGIES = b": capital-common-countries\nAthens Greece Baghdad Iraq\n: gram1\nfast faster slow slower\n"
NLI = (b'{"sentence1": "A cat sits.", "sentence2": "An animal sits.", "gold_label": "entailment"}\n'
       b'{"sentence1": "A dog runs.", "sentence2": "Nobody runs.", "gold_label": "contradiction"}\n')


def _all(*calls: Callable[[], Any]) -> list[Any]:
    """Run every call (a typed error of one does not hide the others); re-raise the first typed error."""
    out: list[Any] = []
    first: EmbedstackError | None = None
    for call in calls:
        try:
            out.append(call())
        except EmbedstackError as exc:
            first = first or exc
    if first is not None:
        raise first
    return out


def _load_pairs(folder: Path) -> Any:
    from embedstack.data import load_analogies, load_nli, load_word_similarity

    return _all(lambda: load_word_similarity(folder / "wordsim353.tsv"),
                lambda: load_analogies(folder / "questions-words.txt"),
                lambda: load_nli(folder, split="dev"))


def _pairs_gen(seed: dict[str, bytes]) -> dict[str, st.SearchStrategy[bytes]]:
    return {"wordsim353.tsv": st.one_of(lines_of(FIELD, ","), lines_of(FIELD, "\t"), lines_of(FIELD, " ")),
            "questions-words.txt": st.one_of(lines_of(FIELD, " "), lines_of(st.sampled_from([":", "a", "b"]), " ")),
            "snli_1.0_dev.jsonl": jsonl_records(["sentence1", "sentence2", "gold_label"])}


CLS_HEADER = b"text,category\n\"I lost my card\",card_lost\n\"Caf\xc3\xa9, please\",other\n"
CLS_AG = b'"3","Wall St.","Stocks &amp; bonds #39;rise#39;."\n"1","World","Peace\\talks."\n'


def _seed_cls() -> dict[str, bytes]:
    return {"test.csv": CLS_HEADER, "ag/test.csv": CLS_AG, "ag/classes.txt": b"World\nSports\nBusiness\nSci/Tech\n",
            "categories.json": b'["card_lost", "other"]'}


def _load_cls(folder: Path) -> Any:
    from embedstack.data import load_classification

    return _all(lambda: load_classification(folder, split="test"), lambda: load_classification(folder / "ag", split="test"))


def _cls_gen(seed: dict[str, bytes]) -> dict[str, st.SearchStrategy[bytes]]:
    csv_field = st.one_of(FIELD, FIELD.map(lambda s: '"' + s + '"'))
    return {"test.csv": st.builds(lambda h, b: h + b"\n" + b, st.sampled_from([b"text,category", b"text,label,x", b""]),
                                  lines_of(csv_field, ",")),
            "ag/test.csv": lines_of(csv_field, ","),
            "categories.json": JSON_VALUES.map(lambda v: json.dumps(v).encode())}


def _seed_manifest() -> dict[str, bytes]:
    from embedstack.io.manifest import write_manifest

    with tempfile.TemporaryDirectory() as d:
        write_manifest(d, "BM25", {"k1": 1.2, "b": 0.75, "analyzer": {"lowercase": True}}, count=3)
        return {"manifest.json": (Path(d) / "manifest.json").read_bytes()}


def _read_manifest(folder: Path) -> Any:
    from embedstack.io.manifest import read_manifest

    return read_manifest(folder)


def _json_gen(name: str) -> Callable[[dict[str, bytes]], dict[str, st.SearchStrategy[bytes]]]:
    def gen(seed: dict[str, bytes]) -> dict[str, st.SearchStrategy[bytes]]:
        return {name: st.one_of(json_edit(json.loads(seed[name])), JSON_VALUES.map(lambda v: json.dumps(v).encode()))}
    return gen


def _seed_safetensors() -> dict[str, bytes]:
    from embedstack.io.manifest import save_arrays

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "arrays.safetensors"
        save_arrays(p, {"vectors": np.arange(12, dtype=np.float32).reshape(3, 4), "ids": np.arange(3, dtype=np.int64),
                        "empty": np.zeros((0, 4), np.float16)}, metadata={"kind": "test"})
        return {"arrays.safetensors": p.read_bytes()}


def _safetensors_gen(seed: dict[str, bytes]) -> dict[str, st.SearchStrategy[bytes]]:
    raw = seed["arrays.safetensors"]
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    body = raw[8 + hlen:]

    def pack(hbytes: bytes, lie: int | None) -> bytes:
        n = len(hbytes) if lie is None else lie
        return struct.pack("<Q", n % (1 << 64)) + hbytes + body

    return {"arrays.safetensors": st.builds(pack, json_edit(header),
                                            st.one_of(st.none(), st.integers(0, 1 << 64)))}


def _load_arrays(folder: Path) -> Any:
    from embedstack.io.manifest import load_arrays

    a = load_arrays(folder / "arrays.safetensors")
    b = load_arrays(folder / "arrays.safetensors", mmap=True)
    out = [float(np.asarray(v, dtype=np.float64).sum()) if v.dtype != np.bool_ else 0.0 for v in (*a.values(), *b.values())]
    del a, b
    return out


def _seed_text() -> dict[str, bytes]:
    return {"corpus.txt": b"first line\n\ncaf\xc3\xa9 line\r\nlast line without newline",
            "docs.jsonl": b'{"title": "T", "text": "body"}\n{"text": "more"}\n',
            "wiki.txt": b'<doc id="1" title="Cat">\nCat\nCats purr.\n</doc>\n'}


def _read_text(folder: Path) -> Any:
    from embedstack.data import iter_texts
    from embedstack.data._io import iter_lines, read_text, scan_lines
    from embedstack.retrieval.build import read_corpus

    return _all(lambda: list(iter_lines(folder / "corpus.txt")),
                lambda: list(iter_lines(folder / "corpus.txt", encoding="latin-1")),
                lambda: list(iter_lines(folder / "corpus.txt", encoding="utf-16-le", errors="replace")),
                lambda: read_text(folder / "corpus.txt"),
                lambda: scan_lines(folder / "corpus.txt", errors="replace"),
                lambda: list(iter_texts(folder / "docs.jsonl")),
                lambda: list(iter_texts(folder / "wiki.txt")),
                lambda: read_corpus(folder / "docs.jsonl"),
                lambda: read_corpus(folder / "corpus.txt"))


def _text_gen(seed: dict[str, bytes]) -> dict[str, st.SearchStrategy[bytes]]:
    return {"corpus.txt": st.one_of(st.binary(max_size=200), lines_of(FIELD, " ")),
            "docs.jsonl": jsonl_records(["_id", "id", "title", "text"]),
            "wiki.txt": lines_of(st.sampled_from(['<doc id="1" title="A">', "</doc>", "A", "body", ""]), "\n")}


_MODEL_SEED: dict[str, bytes] | None = None


def _seed_model() -> dict[str, bytes]:
    """A tiny sentence-transformers folder (2 layers, 16 dims) saved by embedstack.

    Its ``embedstack.json`` lists no checksums (as in a folder from the Hugging Face hub), so that the
    damaged bytes reach the readers of config.json, modules.json, the tokenizer files and the weights
    instead of stopping at the size check.
    """
    global _MODEL_SEED
    if _MODEL_SEED is None:
        from embedstack.neural.config import BertConfig
        from embedstack.neural.sentence import SentenceEncoder
        from embedstack.neural.tokenizer import WordPiece
        from embedstack.neural.transformer import BertModel

        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s"]
        tok = WordPiece.from_vocab(words)
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=32, max_position_embeddings=32)
        enc = SentenceEncoder(BertModel(cfg).init_weights(seed=0), tok, max_seq_length=16)
        with tempfile.TemporaryDirectory() as d:
            enc.save(Path(d) / "m")
            root = Path(d) / "m"
            ours = json.loads((root / "embedstack.json").read_text())
            ours.pop("files", None)
            (root / "embedstack.json").write_text(json.dumps(ours, indent=2))
            _MODEL_SEED = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return dict(_MODEL_SEED)


def _model_gen(seed: dict[str, bytes]) -> dict[str, st.SearchStrategy[bytes]]:
    out: dict[str, st.SearchStrategy[bytes]] = {}
    for name, data in seed.items():
        if name.endswith(".json"):
            with contextlib.suppress(ValueError):
                out[name] = json_edit(json.loads(data))
        elif name.endswith(".safetensors"):
            out[name] = _safetensors_gen({"arrays.safetensors": data})["arrays.safetensors"]
        elif name.endswith(".txt"):
            out[name] = lines_of(FIELD, "")
    return out


def _load_model(folder: Path) -> Any:
    from embedstack.neural.sentence import SentenceEncoder

    return SentenceEncoder.from_folder(folder).dim


def _seed_model_vocab() -> dict[str, bytes]:
    """The same folder with only ``vocab.txt`` as its tokenizer (no ``tokenizer.json``), as older BERT folders."""
    seed = _seed_model()
    seed.pop("tokenizer.json", None)
    return seed


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("word2vec-text", _seed_w2v(False, "vectors.txt"), _read_w2v(False, "vectors.txt"), ["vectors.txt"],
           lambda s: {"vectors.txt": _vec_text(True)({"vectors.txt": b""})["vectors.txt"]}),
    Target("word2vec-binary", _seed_w2v(True, "vectors.bin"), _read_w2v(True, "vectors.bin"), ["vectors.bin"],
           _w2v_binary_gen),
    Target("glove", _seed_glove, _read_glove, ["glove.txt"], _vec_text(False)),
    Target("fasttext-vec", _seed_w2v(False, "wiki.vec"), _read_vec, ["wiki.vec"], _vec_text(True)),
    Target("beir-corpus", _seed_beir, _load_beir, ["corpus.jsonl"], _beir_gen("corpus.jsonl")),
    Target("beir-queries", _seed_beir, _load_beir, ["queries.jsonl"], _beir_gen("queries.jsonl")),
    Target("beir-qrels", _seed_beir, _load_beir, ["qrels/test.tsv"], _beir_gen("qrels/test.tsv")),
    Target("sts", lambda: {"sts-test.csv": STS}, _load_sts, ["sts-test.csv"],
           lambda s: {"sts-test.csv": st.one_of(lines_of(FIELD, "\t", max_fields=9), st.binary(max_size=150))}),
    Target("pair-files", lambda: {"wordsim353.tsv": WORDSIM, "questions-words.txt": ANALOGIES, "snli_1.0_dev.jsonl": NLI},
           _load_pairs, ["wordsim353.tsv", "questions-words.txt", "snli_1.0_dev.jsonl"], _pairs_gen),
    Target("classification-csv", _seed_cls, _load_cls, ["test.csv", "ag/test.csv", "ag/classes.txt", "categories.json"],
           _cls_gen),
    Target("manifest.json", _seed_manifest, _read_manifest, ["manifest.json"], _json_gen("manifest.json")),
    Target("safetensors", _seed_safetensors, _load_arrays, ["arrays.safetensors"], _safetensors_gen),
    Target("model-folder", _seed_model, _load_model, [], _model_gen, needs="torch"),
    Target("model-folder-vocab.txt", _seed_model_vocab, _load_model, ["vocab.txt", "tokenizer_config.json"],
           lambda s: {"vocab.txt": st.one_of(lines_of(FIELD, "", max_lines=20), st.binary(max_size=100))},
           needs="torch"),
    Target("text-reader", _seed_text, _read_text, ["corpus.txt", "docs.jsonl", "wiki.txt"], _text_gen),
]}


@dataclass
class Case:
    """One fuzz input: the seed file it replaces and the new bytes."""

    file: str
    data: bytes
    how: str  # "generated" or "mutated"

    def __repr__(self) -> str:
        return f"Case({self.file!r}, {self.how}, {self.data[:200]!r}{'...' if len(self.data) > 200 else ''})"


def case_strategy(target: Target) -> st.SearchStrategy[Case]:
    """Generated and mutated inputs for ``target`` (about half each)."""
    seed = target.seed()
    files = target.fuzz_files or sorted(seed)
    mutated = st.builds(lambda f, ops: Case(f, mutate(seed[f], ops), "mutated"),
                        st.sampled_from(files), st.lists(_OPS, min_size=1, max_size=6))
    gens = target.generated(seed)
    generated = [st.builds(lambda d, f=f: Case(f, d, "generated"), s) for f, s in sorted(gens.items())]
    generated.append(st.builds(lambda f, d: Case(f, d, "generated"), st.sampled_from(files), st.binary(max_size=64)))
    return st.one_of(mutated, st.one_of(generated))


class Workspace:
    """A temporary copy of a target's seed folder; each case swaps one file in and then restores it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.seed = target.seed()
        self.root = Path(tempfile.mkdtemp(prefix=f"embedstack-fuzz-{target.name}-"))
        for name, data in self.seed.items():
            self._write(name, data)

    def _write(self, name: str, data: bytes) -> None:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".fuzztmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)  # a new inode: memory maps of the previous case stay valid

    @contextlib.contextmanager
    def case(self, case: Case) -> Iterator[Path]:
        self._write(case.file, case.data)
        try:
            yield self.root
        finally:
            self._write(case.file, self.seed[case.file])

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def run_case(ws: Workspace, case: Case, *, limit_s: float = 5.0) -> tuple[str, str]:
    """Run one case: ``("ok", "")``, ``("typed", ErrorName)``, ``("other", traceback)`` or ``("hang", "")``."""
    logging.disable(logging.WARNING)  # loaders log skipped lines; not what is measured here
    try:
        with ws.case(case) as folder, time_limit(limit_s):
            result = ws.target.parse(folder)
            del result
        return "ok", ""
    except Hang:
        return "hang", repr(case)
    except EmbedstackError as exc:
        return "typed", type(exc).__name__
    except Exception:  # noqa: BLE001 - this is what the fuzzer is looking for
        return "other", f"{case!r}\n{traceback.format_exc()}"
    finally:
        logging.disable(logging.NOTSET)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
