"""One test per crash the fuzzer found: each input used to raise a non-embedstack exception (or ask for
terabytes of memory) and now raises a typed error naming the file."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from embedstack.errors import ConfigError, FormatError, InputError


# ------------------------------------------------------------------------------ word-vector formats
def test_word2vec_binary_huge_count_is_checked_before_allocating(tmp_path: Path) -> None:
    # was: numpy's MemoryError "Unable to allocate 72.8 TiB" from the header alone
    from embedstack.io.formats import read_vectors, read_word2vec

    p = tmp_path / "v.bin"
    p.write_bytes(b"999999999999 20\nthe " + b"\x00" * 80)
    with pytest.raises(FormatError, match=r"announces 999999999999 vectors of dimension 20 .* only 84 bytes"):
        read_word2vec(p, binary=True)
    with pytest.raises(FormatError, match="truncated or not word2vec binary"):
        read_vectors(p)


def test_word2vec_binary_nan_vector_is_an_error(tmp_path: Path) -> None:
    from embedstack.io.formats import read_word2vec

    p = tmp_path / "v.bin"
    p.write_bytes(b"2 2\na " + np.array([1, 2], "<f4").tobytes() + b"\nb " + np.array([np.nan, 0], "<f4").tobytes())
    with pytest.raises(FormatError, match="record 2 holds a value that is NaN"):
        read_word2vec(p, binary=True)


@pytest.mark.parametrize("value", ["1e39", "nan", "-inf"])
def test_text_vectors_out_of_float32_range(tmp_path: Path, value: str) -> None:
    # was: a silent inf/nan row (and numpy's overflow RuntimeWarning on the terminal)
    from embedstack.io.formats import read_glove, read_word2vec

    p = tmp_path / "v.txt"
    p.write_text(f"2 2\na 1 2\nb {value} 0\n")
    with pytest.raises(FormatError, match=r"v\.txt: line 3 holds a value that is NaN, infinite or outside"):
        read_word2vec(p)
    g = tmp_path / "g.txt"
    g.write_text(f"a 1 2\nb 0 {value}\n")
    with pytest.raises(FormatError, match="line 2"):
        read_glove(g)


def test_vectors_file_in_latin1(tmp_path: Path) -> None:
    from embedstack.io.formats import read_vectors

    p = tmp_path / "v.txt"
    p.write_bytes(b"2 2\ncaf\xe9 1 2\nb 3 4\n")
    with pytest.raises(InputError, match=r"v\.txt:2: byte offset 7 \(0xe9\) is not valid utf-8; pass --encoding "
                                         r"latin-1 \(or the file's encoding\) or --errors replace"):
        read_vectors(p)
    assert read_vectors(p, encoding="latin-1")[0] == ["caf\xe9", "b"]
    assert read_vectors(p, errors="replace")[0][0] == "caf\ufffd"


# ------------------------------------------------------------------------------ safetensors / manifest
def _safetensors(path: Path, header: object, body: bytes = b"") -> Path:
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + body)
    return path


@pytest.mark.parametrize("header", [[{"dtype": "F32"}], None, 3, "x"])
def test_safetensors_header_not_an_object(tmp_path: Path, header: object) -> None:
    # was: AttributeError: 'list' object has no attribute 'items'
    from embedstack.io.manifest import load_arrays

    p = _safetensors(tmp_path / "a.safetensors", header)
    with pytest.raises(FormatError, match="safetensors header is a JSON .*, not an object"):
        load_arrays(p)


@pytest.mark.parametrize("entry", [
    {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]},
    {"dtype": "F32", "shape": [-2, -1], "data_offsets": [0, 8]},
    {"dtype": "F32", "shape": [2], "data_offsets": [0, float("inf")]},
])
def test_safetensors_negative_or_infinite_offsets(tmp_path: Path, entry: dict) -> None:
    from embedstack.io.manifest import load_arrays

    p = _safetensors(tmp_path / "a.safetensors", {"x": entry}, b"\x00" * 8)
    for mmap in (False, True):
        with pytest.raises(FormatError, match="tensor 'x' has an unsupported dtype or a malformed header entry"):
            load_arrays(p, mmap=mmap)


@pytest.mark.parametrize("version", [[], ":", "1", True, 0, 1.5])
def test_manifest_format_version_of_the_wrong_type(tmp_path: Path, version: object) -> None:
    # was: TypeError/ValueError from int(manifest["format_version"])
    from embedstack.io.manifest import read_manifest

    (tmp_path / "manifest.json").write_text(json.dumps({"type": "BM25", "format_version": version}))
    with pytest.raises(FormatError, match="format_version must be a positive integer"):
        read_manifest(tmp_path)


# ------------------------------------------------------------------------------ datasets
def test_classification_categories_json_damaged(tmp_path: Path) -> None:
    # was: json.JSONDecodeError
    from embedstack.data import load_classification

    (tmp_path / "test.csv").write_text("text,category\nhello,a\n")
    (tmp_path / "categories.json").write_bytes(b'["a", "b"] "b"]')
    with pytest.raises(FormatError, match=r"categories\.json is not valid JSON \(Extra data at line 1 column 12\)"):
        load_classification(tmp_path)
    (tmp_path / "categories.json").write_text('{"a": 1}')
    with pytest.raises(FormatError, match="must hold a JSON list of category names"):
        load_classification(tmp_path)


def test_read_corpus_jsonl_non_utf8_and_non_object_lines(tmp_path: Path) -> None:
    # was: UnicodeDecodeError (open(..., encoding="utf-8")) and AttributeError ('list' has no 'pop')
    from embedstack.retrieval import read_corpus

    p = tmp_path / "docs.jsonl"
    p.write_bytes(b'{"_id": "1", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"docs\.jsonl:1: byte offset 25 \(0xe9\) .* --encoding latin-1"):
        read_corpus(p)
    assert read_corpus(p, encoding="latin-1")[1] == ["caf\xe9"]
    assert read_corpus(p, errors="replace")[1] == ["caf\ufffd"]
    p.write_text('{"_id": "1", "text": "a"}\n[1, 2]\n')
    with pytest.raises(FormatError, match=r"docs\.jsonl:2: expected a JSON object per line, got list"):
        read_corpus(p)


# ------------------------------------------------------------------------------ the text reader
def test_utf16_without_byte_order_mark(tmp_path: Path) -> None:
    # was: UnicodeError "UTF-16 stream does not start with BOM" from the line reader, even with
    # errors="replace"; now it decodes as bytes.decode and read_text do (little-endian)
    from embedstack.data._io import iter_lines, read_text

    p = tmp_path / "t.txt"
    p.write_bytes("a\r\nb\n".encode("utf-16-le"))
    assert list(iter_lines(p, encoding="utf-16", errors="replace")) == [(1, "a"), (2, "b")]
    assert read_text(p, encoding="utf-16") == "a\r\nb\n"
    p.write_bytes("a\nb\n".encode("utf-16") + b"x")  # an odd byte count: truncated data
    for call in (lambda: list(iter_lines(p, encoding="utf-16")), lambda: read_text(p, encoding="utf-16")):
        with pytest.raises(InputError, match=r"t\.txt:3: byte offset 10 is not valid utf-16 .*--encoding with the "
                                             r"file's encoding \(e\.g\. utf-16-le\) or --errors replace"):
            call()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le"])
def test_truncated_gzip(tmp_path: Path, encoding: str) -> None:
    # was: EOFError "Compressed file ended before the end-of-stream marker was reached"
    from embedstack.data._io import iter_lines, read_text

    p = tmp_path / "t.txt.gz"
    p.write_bytes(gzip.compress(b"line\n" * 5000)[:-30])
    with pytest.raises(InputError, match=r"t\.txt\.gz: the gzip data is damaged or truncated"):
        list(iter_lines(p, encoding=encoding))
    with pytest.raises(InputError, match="damaged or truncated"):
        read_text(p)


def test_decode_error_names_file_line_byte_and_flags(tmp_path: Path) -> None:
    from embedstack.data._io import iter_lines, read_text, scan_lines

    p = tmp_path / "latin1.txt"
    p.write_bytes(b"ok\r\nsecond caf\xe9\n")
    want = (rf"^{p}:2: byte offset 14 \(0xe9\) is not valid utf-8; pass --encoding latin-1 \(or the file's "
            r"encoding\) or --errors replace\.$")
    for call in (lambda: list(iter_lines(p)), lambda: read_text(p), lambda: scan_lines(p)):
        with pytest.raises(InputError, match=want) as info:
            call()
        assert "errors=" not in str(info.value) and "\n" not in str(info.value)
    assert scan_lines(p, encoding="latin-1") == 2
    assert read_text(p, errors="replace") == "ok\r\nsecond caf\ufffd\n"
    with pytest.raises(ConfigError, match="--encoding 'latin-9000' is not a known text encoding"):
        list(iter_lines(p, encoding="latin-9000"))


# ------------------------------------------------------------------------------ model folders
@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fuzz_targets import _seed_model

    root = tmp_path_factory.mktemp("model")
    for name, data in _seed_model().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _edit_json(folder: Path, name: str, **changes: object) -> None:
    data = json.loads((folder / name).read_text())
    data.update(changes)
    (folder / name).write_text(json.dumps(data))


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_model_folder_huge_config_is_refused_before_allocating(tiny_model_folder: Path, tmp_path: Path) -> None:
    # was: BertModel(config) allocating intermediate_size x hidden_size floats before the shape check
    from embedstack.neural.sentence import SentenceEncoder

    f = _copy(tiny_model_folder, tmp_path / "m")
    _edit_json(f, "config.json", intermediate_size=10**12)
    with pytest.raises(FormatError, match=r"intermediate\.dense\.weight' has shape \(32, 16\) but config\.json implies "
                                          r"\(1000000000000, 16\)"):
        SentenceEncoder.from_folder(f, verify=False)
    _edit_json(f, "config.json", intermediate_size=32, num_hidden_layers=3)
    with pytest.raises(FormatError, match="config.json asks for 3 layers but .* holds 2"):
        SentenceEncoder.from_folder(f, verify=False)


@pytest.mark.parametrize(("name", "content", "error", "match"), [
    ("embedstack.json", b'{"name": "x", \xdb}', FormatError, r"embedstack\.json: byte offset 14 is not valid UTF-8"),
    ("tokenizer_config.json", b'{"do_lower_case": "\xeb"}', FormatError, r"tokenizer_config\.json: byte offset 19"),
    ("config.json", b'{"hidden_act": ["gelu"]}', ConfigError, r"BertConfig\.hidden_act must be a string"),
    ("config.json", b"[1, 2]", FormatError, r"config\.json must hold a JSON object"),
    ("1_Pooling/config.json", b'{"pooling_mode_mean_tokens": \xc6}', FormatError, r"config\.json: byte offset 29"),
    ("modules.json", b"[1, 2]", FormatError, r"modules\.json must hold a JSON list of modules"),
    ("sentence_bert_config.json", b'{"max_seq_length": [-1, -1]}', FormatError,
     r"sentence_bert_config\.json: max_seq_length must be an integer"),
    ("config_sentence_transformers.json", b'{"prompts": ["a"]}', FormatError, r"'prompts' must map names to strings"),
])
def test_model_folder_damaged_files(tiny_model_folder: Path, tmp_path: Path, name: str, content: bytes,
                                    error: type, match: str) -> None:
    from embedstack.neural.sentence import SentenceEncoder

    f = _copy(tiny_model_folder, tmp_path / "m")
    if name == "config.json" and content.startswith(b"{"):
        data = json.loads((f / name).read_text())
        data.update(json.loads(content))
        content = json.dumps(data).encode()
    (f / name).write_bytes(content)
    with pytest.raises(error, match=match):
        SentenceEncoder.from_folder(f, verify=False)


def test_model_folder_truncate_dim_of_the_wrong_type(tiny_model_folder: Path, tmp_path: Path) -> None:
    # was: TypeError from int(truncate_dim) in SentenceEncoder.__init__
    from embedstack.neural.sentence import SentenceEncoder

    f = _copy(tiny_model_folder, tmp_path / "m")
    _edit_json(f, "embedstack.json", truncate_dim=[16])
    with pytest.raises(ConfigError, match=r"truncate_dim must be an int in \[1, 16\]. Got \[16\]"):
        SentenceEncoder.from_folder(f, verify=False)
    assert SentenceEncoder.from_folder(tiny_model_folder).dim == 16


@pytest.mark.parametrize(("content", "match"), [
    (b"[PAD]\n[UNK]\n[CLS]\n[SEP]\ncaf\xe9\n", r"vocab\.txt: byte offset 27 is not valid UTF-8"),
    (b"[PAD]\n[UNK]\n[CLS]\n[S]\nthe\n", r"lacks the special tokens \['\[SEP\]'\]"),
    (b"", r"lacks the special tokens \['\[CLS\]', '\[SEP\]', '\[UNK\]'\]"),
])
def test_model_folder_vocab_txt(tiny_model_folder: Path, tmp_path: Path, content: bytes, match: str) -> None:
    # was: UnicodeDecodeError (read_text) and KeyError: '[CLS]' (WordPiece.from_vocab)
    from embedstack.neural.sentence import SentenceEncoder

    f = _copy(tiny_model_folder, tmp_path / "m")
    (f / "tokenizer.json").unlink()
    (f / "vocab.txt").write_bytes(content)
    with pytest.raises(FormatError, match=match):
        SentenceEncoder.from_folder(f)


def test_classification_csv_carriage_return_in_a_field(tmp_path: Path) -> None:
    # was: _csv.Error "new-line character seen in unquoted field"
    from embedstack.data import load_classification

    (tmp_path / "test.csv").write_bytes(b"text,label\nok,a\nbro\rken,b\n")
    with pytest.raises(FormatError, match=r"test\.csv:3: not valid CSV \(new-line character seen in unquoted field\)"):
        load_classification(tmp_path)


@pytest.mark.parametrize("pad", [11, -1, 10**6])
def test_model_folder_pad_token_id_outside_the_vocabulary(tiny_model_folder: Path, tmp_path: Path, pad: int) -> None:
    # was: AssertionError "Padding_idx must be within num_embeddings" from torch's nn.Embedding
    from embedstack.neural.sentence import SentenceEncoder

    f = _copy(tiny_model_folder, tmp_path / "m")
    _edit_json(f, "config.json", pad_token_id=pad)
    with pytest.raises(ConfigError, match=r"pad_token_id must be an integer in \[0, vocab_size=11\)"):
        SentenceEncoder.from_folder(f)


def test_sts_score_beyond_float32_is_an_error(tmp_path) -> None:
    import warnings

    import pytest

    from embedstack.data import load_sts
    from embedstack.errors import FormatError

    p = tmp_path / "sts-test.csv"
    p.write_text("main-captions\tMSRvid\t2012\t1\t1e300\ta cat\ta dog\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning, no silent inf
        with pytest.raises(FormatError, match=r"sts-test\.csv:1"):
            load_sts(p)


def test_ag_news_class_in_non_ascii_digits_and_huge_entities(tmp_path) -> None:
    import pytest

    from embedstack.data import load_classification
    from embedstack.errors import FormatError

    folder = tmp_path / "ag"
    folder.mkdir()
    (folder / "test.csv").write_text('"\u00b9","title","body"\n', encoding="utf-8")
    with pytest.raises(FormatError, match=r"test\.csv:1"):
        load_classification(folder, split="test")
    (folder / "test.csv").write_text('"1","title","big #99999999; and #233; ok"\n', encoding="utf-8")
    ds = load_classification(folder, split="test")
    assert ds.texts == ["title big #99999999; and \u00e9 ok"]
