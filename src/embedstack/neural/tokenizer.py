"""WordPiece tokenization through the Rust ``tokenizers`` library, with our own batching and padding.

The tokenizer is read from ``tokenizer.json`` (or built from ``vocab.txt``); its own padding and
truncation settings are switched off: :class:`WordPiece` truncates each text to ``max_length``
tokens (``[CLS]`` … ``[SEP]`` kept) and reports whether it had to, and the encoder pads each
length-sorted batch only to its own longest text.

Example:
    >>> tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"])
    >>> ids, truncated = tok.encode_batch(["Hello world", "world"], max_length=8)
    >>> [x.tolist() for x in ids], truncated
    ([[2, 5, 6, 3], [2, 6, 3]], 0)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._extras import require
from embedstack.errors import FormatError, InputError

__all__ = ["WordPiece", "pad_batch"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPiece:
    """A BERT WordPiece tokenizer (lower-casing, accent stripping, ``[CLS] … [SEP]`` template).

    Args:
        tokenizer: A ``tokenizers.Tokenizer`` holding a WordPiece model and BERT post-processor.
        do_lower_case: Recorded for the ``tokenizer_config.json`` written on save.
    """

    def __init__(self, tokenizer: Any, *, do_lower_case: bool = True) -> None:
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.do_lower_case = do_lower_case
        vocab = tokenizer.get_vocab()
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in vocab]
        if missing:
            raise FormatError(f"The tokenizer's vocabulary lacks the special tokens {missing}; it is not a BERT vocabulary.")
        self.pad_id = vocab["[PAD]"]
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.unk_id = vocab["[UNK]"]
        self.mask_id = vocab.get("[MASK]")
        self._truncation: tuple[int, str] | None = None

    # construction -----------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> WordPiece:
        """Read ``tokenizer.json`` (a file, or the folder holding it / a ``vocab.txt``)."""
        tokenizers = require("tokenizers", "torch", "WordPiece tokenization")
        path = Path(path)
        if path.is_dir():
            if (path / "tokenizer.json").is_file():
                path = path / "tokenizer.json"
            elif (path / "vocab.txt").is_file():
                raw = (path / "vocab.txt").read_bytes()
                try:
                    words = raw.decode("utf-8").splitlines()
                except UnicodeDecodeError as exc:
                    raise FormatError(f"{path / 'vocab.txt'}: byte offset {exc.start} is not valid UTF-8; re-save or "
                                      "re-download the model.") from None
                return cls.from_vocab(words, do_lower_case=_lower_case(path))
            else:
                raise FormatError(f"Missing {path / 'tokenizer.json'} (or vocab.txt): the model folder has no tokenizer.")
        if not path.is_file():
            raise FormatError(f"Missing tokenizer file {path}.")
        try:
            tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:
            raise FormatError(f"Cannot read {path} as a tokenizers JSON file ({exc}).") from None
        return cls(tok, do_lower_case=_lower_case(path.parent))

    @classmethod
    def from_vocab(cls, words: Sequence[str], *, do_lower_case: bool = True) -> WordPiece:
        """Build a BERT tokenizer from a WordPiece vocabulary list (index = id)."""
        tokenizers = require("tokenizers", "torch", "WordPiece tokenization")
        from tokenizers import models, normalizers, pre_tokenizers, processors

        vocab = {w: i for i, w in enumerate(words)}
        missing = [w for w in ("[CLS]", "[SEP]", "[UNK]") if w not in vocab]
        if missing:
            raise FormatError(f"The WordPiece vocabulary lacks the special tokens {missing}; a BERT vocab.txt holds "
                              "[PAD], [UNK], [CLS], [SEP] and [MASK].")
        tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        from tokenizers import decoders

        tok.decoder = decoders.WordPiece(prefix="##")
        specials = [w for w in SPECIAL_TOKENS if w in vocab]
        tok.add_special_tokens(specials)
        return cls(tok, do_lower_case=do_lower_case)

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 8000, min_frequency: int = 2,
              do_lower_case: bool = True) -> WordPiece:
        """Learn a WordPiece vocabulary from a text stream (Rust trainer, streaming)."""
        tokenizers = require("tokenizers", "torch", "WordPiece training")
        from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

        tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=do_lower_case)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        vocab = tok.get_vocab()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        tok.decoder = decoders.WordPiece(prefix="##")
        return cls(tok, do_lower_case=do_lower_case)

    # use ----------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def special_ids(self) -> list[int]:
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab[t] for t in SPECIAL_TOKENS if t in vocab)

    def encode_batch(self, texts: Sequence[str], *, max_length: int) -> tuple[list[np.ndarray], int]:
        """Token ids of each text (``[CLS] … [SEP]``, at most ``max_length``) and how many were cut.

        The whole batch goes to Rust in one call (parallel over texts).
        """
        if max_length < 2:
            raise InputError(f"max_length must be at least 2 ([CLS] and [SEP]). Got {max_length}.")
        self._truncate(max_length, "longest_first")
        for t in texts:
            if not isinstance(t, str):
                raise InputError(f"Texts must be strings; got {type(t).__name__} ({t!r:.40}).")
        if len(texts) == 1:  # one text (a query): no hand-off to the Rust thread pool (3x faster, no spinning workers)
            encodings = [self.tokenizer.encode(texts[0], add_special_tokens=True)]
        else:
            encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        truncated = sum(1 for e in encodings if e.overflowing)
        return ids, truncated

    def _truncate(self, max_length: int, strategy: str) -> None:
        if self._truncation != (max_length, strategy):
            self.tokenizer.enable_truncation(max_length=max_length, strategy=strategy)
            self._truncation = (max_length, strategy)

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], *, max_length: int
                     ) -> tuple[list[np.ndarray], list[np.ndarray], int, int]:
        """``[CLS] a [SEP] b [SEP]`` ids and token types (0 for ``a``, 1 for ``b``) of each pair.

        Truncation keeps the first text (the query) whole and cuts the second (the document); only
        a first text that leaves no room for the second is cut too (longest first). Returns
        ``(ids, token_types, pairs_cut, first_texts_cut)``.
        """
        items = _pair_items(pairs, max_length)
        self._truncate(max_length, "only_second")
        try:
            encodings = (self.tokenizer.encode_batch(items, add_special_tokens=True) if len(items) != 1
                         else [self.tokenizer.encode(*items[0], add_special_tokens=True)])
            long_first = 0
        except Exception:  # noqa: BLE001 - a first text too long for only_second: those pairs one by one
            encodings, long_first = [], 0
            for a, b in items:
                self._truncate(max_length, "only_second")
                try:
                    encodings.append(self.tokenizer.encode(a, b, add_special_tokens=True))
                except Exception:  # noqa: BLE001 - tokenizers raises a bare Exception for this case
                    self._truncate(max_length, "longest_first")
                    encodings.append(self.tokenizer.encode(a, b, add_special_tokens=True))
                    long_first += 1
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        types = [np.asarray(e.type_ids, dtype=np.int64) for e in encodings]
        return ids, types, sum(1 for e in encodings if e.overflowing), long_first

    def encode_pair_windows(self, pairs: Sequence[tuple[str, str]], *, max_length: int, stride: int
                            ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, int]:
        """``[CLS] a [SEP] b [SEP]`` windows of each pair: the first text (the query) whole in every window, the
        second (the document) in overlapping windows that together hold all of it (BERT-MaxP's passages).

        A pair that fits in ``max_length`` tokens is one window, as :meth:`encode_pairs` gives it. Otherwise each
        window is ``max_length`` tokens (the last may be shorter) and consecutive windows of a document share
        ``stride`` tokens, or fewer where a long query leaves less than ``2 * stride + 1`` tokens of room: then
        they share half the room. Only a query that would leave less than a quarter of ``max_length`` is cut, to
        leave that. Returns ``(ids, token_types, owner, first_texts_cut)``: ``owner[i]`` is the pair window ``i``
        belongs to, windows in pair order.
        """
        items = _pair_items(pairs, max_length)
        if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or not 0 <= stride <= (max_length - 4) // 2:
            raise InputError(f"stride must be an int in [0, {(max_length - 4) // 2}] (tokens two windows share; at most "
                             f"(max_length - 4) / 2 for max_length={max_length}). Got {stride!r}.")
        queries = list(dict.fromkeys(a for a, _ in items))
        docs = list(dict.fromkeys(b for _, b in items))
        q_ids = dict(zip(queries, self.encode_batch(queries, max_length=1 << 30)[0], strict=True))  # [CLS] a [SEP]
        d_ids = dict(zip(docs, self.encode_batch(docs, max_length=1 << 30)[0], strict=True))  # [CLS] b [SEP]
        sep = np.array([self.sep_id], dtype=np.int64)
        ids: list[np.ndarray] = []
        types: list[np.ndarray] = []
        owner: list[int] = []
        cut = 0
        for i, (a, b) in enumerate(items):
            q, d = q_ids[a], d_ids[b][1:-1]
            keep, room, step, n = window_plan(len(q), len(d), max_length, stride)
            if keep < len(q):  # the query leaves too little room: cut it (keep its [SEP])
                q = np.concatenate([q[:keep - 1], q[-1:]])
                cut += 1
            for s in range(0, n * step, step):
                w = d[s:s + room]
                ids.append(np.concatenate([q, w, sep]))
                types.append(np.concatenate([np.zeros(len(q), np.int64), np.ones(len(w) + 1, np.int64)]))
                owner.append(i)
        return ids, types, np.asarray(owner, dtype=np.int64), cut

    def tokenize(self, text: str) -> list[str]:
        """WordPiece strings of one text (without special tokens)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).tokens)

    def save(self, folder: str | os.PathLike[str], *, model_max_length: int = 512) -> None:
        """Write ``tokenizer.json``, ``vocab.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``.

        Each file is written atomically (:func:`embedstack.io.atomic_write_text`).
        """
        from embedstack.io import atomic_write_text

        folder = Path(folder)
        atomic_write_text(folder / "tokenizer.json", self.tokenizer.to_str(pretty=True))
        vocab = self.tokenizer.get_vocab()
        words = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        atomic_write_text(folder / "vocab.txt", "\n".join(words) + "\n")
        specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                    "mask_token": "[MASK]"}
        config = {"do_lower_case": self.do_lower_case, **specials, "tokenize_chinese_chars": True,
                  "strip_accents": None, "tokenizer_class": "BertTokenizer", "model_max_length": model_max_length}
        atomic_write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2))
        atomic_write_text(folder / "special_tokens_map.json", json.dumps(specials, indent=2))


def window_plan(query_len: int, doc_len: int, max_length: int, stride: int) -> tuple[int, int, int, int]:
    """How :meth:`WordPiece.encode_pair_windows` reads one pair: ``(query tokens kept, document tokens per window,
    step between window starts, number of windows)``, from the query's length with ``[CLS]`` and ``[SEP]`` and the
    document's without special tokens (a serving token budget counts windows with it)."""
    room = max_length - 1 - query_len  # document tokens per window: [CLS] a [SEP] is the query's, one [SEP] after
    min_room = max(1, max_length // 4)  # a query that leaves less (and does not fit whole with the document) is cut
    if doc_len > room and room < min_room:
        query_len, room = max_length - 1 - min_room, min_room
    step = room - min(stride, (room - 1) // 2)  # >= 1: windows share `stride` tokens, or half the room
    n = 1 if doc_len <= room else 1 + -(-(doc_len - room) // step)
    return query_len, room, step, n


def _pair_items(pairs: Sequence[tuple[str, str]], max_length: int) -> list[tuple[str, str]]:
    if max_length < 4:
        raise InputError(f"max_length must be at least 4 for a pair ([CLS] a [SEP] b [SEP]). Got {max_length}.")
    items: list[tuple[str, str]] = []
    for p in pairs:
        if not isinstance(p, tuple | list) or len(p) != 2 or not all(isinstance(t, str) for t in p):
            raise InputError(f"Pairs must be (str, str) tuples; got {p!r:.60}.")
        items.append((p[0], p[1]))
    return items


def _lower_case(folder: Path) -> bool:
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        from embedstack.data._io import read_json

        data = read_json(cfg, hint="re-save or re-download the model")
        return bool(data.get("do_lower_case", True)) if isinstance(data, dict) else True
    return True


def pad_batch(ids: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id arrays to the longest one: ``(input_ids, attention_mask)``, both int64 (B, T)."""
    T = max((len(x) for x in ids), default=0)
    input_ids = np.full((len(ids), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), T), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return input_ids, mask
