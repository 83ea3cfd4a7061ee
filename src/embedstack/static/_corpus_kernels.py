"""Numba kernels of the corpus pass: tokenize and intern texts to provisional ids, then remap to final ids.

The corpus pass of word2vec / fastText / GloVe (:class:`~embedstack.static._corpus.IdCorpus`) spent
most of its time in Python: a regex over every text and a dict lookup per token. For the default word
pattern (``\\w+``), this module does both in one numba pass over each text's UTF-8 bytes, with its own
open-addressing hash table of token bytes, and gives tokens the same provisional ids (first-seen
order) that the Python path gives. The result is identical to ``Analyzer.tokenize`` + a dict:

* Runs of bytes that are not *hard* separators (ASCII characters other than letters, digits, ``_``
  and the case-ignorable ``' . : ^ ```) form segments. A segment of ASCII bytes only is split here:
  its tokens are the runs of ``[A-Za-z0-9_]``, lowercased byte-wise (what ``str.lower`` and NFKC do to
  ASCII). A segment holding any non-ASCII byte goes to ``Analyzer.tokenize`` (normalisation,
  lowercase, regex) in Python. Hard separators are stable under every normal form, no normal form
  composes one of them with a following mark into a word character, and the Final_Sigma rule of
  ``str.lower`` looks through case-ignorable characters only, so a segment's tokens do not depend on
  the text around it.
* Only the analyzers whose output this reproduces take this path (:func:`supports`): the default
  pattern, no stopwords, no stemming, no minimum token length.

Example:
    >>> from embedstack.text import Analyzer
    >>> t = Interner(Analyzer())
    >>> t.text("The cat, the CAT's café.").tolist(), t.words()
    ([0, 1, 0, 1, 2, 3], ['the', 'cat', 's', 'café'])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack._extras import require
from embedstack.text import Analyzer
from embedstack.text.tokenize import WORD_PATTERN

require("numba", "fast", "word-vector training kernels")
import numba  # noqa: E402

__all__ = ["Interner", "supports", "remap_chunk"]

_jit: Any = numba.njit(nogil=True, cache=True)

_HARD, _WORD, _SOFT, _HIGH = 0, 1, 2, 3
_CLASS = np.zeros(256, dtype=np.uint8)
for _c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_":
    _CLASS[_c] = _WORD
for _c in b"'.:^`":
    _CLASS[_c] = _SOFT
_CLASS[128:] = _HIGH
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def supports(analyzer: Analyzer) -> bool:
    """True when :class:`Interner` reproduces ``analyzer.tokenize`` exactly."""
    return (analyzer.pattern == WORD_PATTERN and not analyzer.stopwords and analyzer.stem is None
            and analyzer.min_token_length <= 1)


@_jit
def _segments(buf, cls, segs):
    """Write (start, end) of every segment holding a non-ASCII byte into ``segs``; return their count."""
    n = buf.shape[0]
    i = 0
    k = 0
    while i < n:
        if cls[buf[i]] == _HARD:
            i += 1
            continue
        s = i
        high = False
        while i < n:
            c = cls[buf[i]]
            if c == _HARD:
                break
            if c == _HIGH:
                high = True
            i += 1
        if high:
            segs[2 * k] = s
            segs[2 * k + 1] = i
            k += 1
    return k


@numba.njit(nogil=True, cache=True, inline="always")
def _intern(src, a, b, lower, table, hashes, starts, lens, arena, state):
    """The provisional id of token ``src[a:b]`` (ASCII-lowercased first when ``lower``), new ones appended."""
    h = _FNV_OFFSET
    for p in range(a, b):
        ch = src[p]
        if lower and ch >= 65 and ch <= 90:
            ch += 32
        h = (h ^ np.uint64(ch)) * _FNV_PRIME
    mask = np.uint64(table.shape[0] - 1)
    slot = h & mask
    size = b - a
    while True:
        t = table[slot]
        if t < 0:
            nid = state[0]
            pos = state[1]
            for p in range(size):
                ch = src[a + p]
                if lower and ch >= 65 and ch <= 90:
                    ch += 32
                arena[pos + p] = ch
            table[slot] = nid
            hashes[nid] = h
            starts[nid] = pos
            lens[nid] = size
            state[0] = nid + 1
            state[1] = pos + size
            return nid
        if hashes[t] == h and lens[t] == size:
            st = starts[t]
            same = True
            for p in range(size):
                ch = src[a + p]
                if lower and ch >= 65 and ch <= 90:
                    ch += 32
                if arena[st + p] != ch:
                    same = False
                    break
            if same:
                return t
        slot = (slot + np.uint64(1)) & mask


@_jit
def _tokenize(buf, cls, lower, segs, nseg, extra, extra_counts, table, hashes, starts, lens, arena, state, out,
              o):
    """Ids of every token of ``buf`` into ``out[o:]``; non-ASCII segments take their tokens from ``extra``
    (tokens ended by ``\\n``, ``extra_counts[k]`` of them for segment k). Returns the new end of ``out``."""
    n = buf.shape[0]
    i = 0
    seg = 0
    ep = 0
    while i < n:
        if seg < nseg and i == segs[2 * seg]:
            for _ in range(extra_counts[seg]):
                e = ep
                while extra[e] != 10:
                    e += 1
                out[o] = _intern(extra, ep, e, False, table, hashes, starts, lens, arena, state)
                o += 1
                ep = e + 1
            i = segs[2 * seg + 1]
            seg += 1
            continue
        if cls[buf[i]] == _WORD:
            s = i
            while i < n and cls[buf[i]] == _WORD:
                i += 1
            out[o] = _intern(buf, s, i, lower, table, hashes, starts, lens, arena, state)
            o += 1
        else:
            i += 1
    return o


@_jit
def _intern_many(data, bounds, table, hashes, starts, lens, arena, state, out):
    """Ids of the tokens ``data[bounds[k]:bounds[k + 1]]`` (used as they are) into ``out``."""
    for k in range(bounds.shape[0] - 1):
        out[k] = _intern(data, bounds[k], bounds[k + 1], False, table, hashes, starts, lens, arena, state)


@_jit
def remap_chunk(raw, remap, starts, new_off, base, out):
    """Final ids of one chunk of the provisional stream: ``out[:k] = kept remap[raw]``, returns ``k``.

    ``starts`` are the sentence starts that fall in the chunk (relative to it, increasing, each in
    ``[0, len(raw)]``); ``new_off[i]`` gets ``base`` + the kept tokens before ``starts[i]``.
    """
    k = 0
    s = 0
    n_s = starts.shape[0]
    for p in range(raw.shape[0]):
        while s < n_s and starts[s] == p:
            new_off[s] = base + k
            s += 1
        m = remap[raw[p]]
        if m >= 0:
            out[k] = m
            k += 1
    while s < n_s:
        new_off[s] = base + k
        s += 1
    return k


@_jit
def _rehash(table, hashes, n):
    mask = np.uint64(table.shape[0] - 1)
    for t in range(n):
        slot = hashes[t] & mask
        while table[slot] >= 0:
            slot = (slot + np.uint64(1)) & mask
        table[slot] = t


def _grown(a: np.ndarray, need: int) -> np.ndarray:
    if len(a) >= need:
        return a
    out = np.empty(max(need, 2 * len(a)), dtype=a.dtype)
    out[: len(a)] = a
    return out


class Interner:
    """Texts → provisional token ids (first-seen order), for analyzers where :func:`supports` is True.

    ``text(text)`` returns the ids of one text's tokens, ``tokens(list)`` those of a token list (used
    as they are; each a view, valid until the next call), ``words()`` the tokens in id order.
    """

    def __init__(self, analyzer: Analyzer) -> None:
        if not supports(analyzer):
            raise ValueError("this analyzer is not reproduced by the numba tokenizer; use Analyzer.tokenize.")
        self.analyzer = analyzer
        self.lower = bool(analyzer.lowercase)
        self.table = np.full(1 << 16, -1, dtype=np.int32)
        self.hashes = np.zeros(1 << 14, dtype=np.uint64)
        self.starts = np.zeros(1 << 14, dtype=np.int64)
        self.lens = np.zeros(1 << 14, dtype=np.int32)
        self.arena = np.zeros(1 << 20, dtype=np.uint8)
        self.state = np.zeros(2, dtype=np.int64)  # ids so far, arena bytes used
        self.out = np.zeros(1 << 16, dtype=np.int32)
        self.segs = np.zeros(1 << 12, dtype=np.int64)
        self._empty = np.zeros(1, dtype=np.uint8)
        self._no_counts = np.zeros(1, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.state[0])

    def _reserve(self, new_tokens: int, new_bytes: int) -> None:
        n = int(self.state[0])
        need = n + new_tokens
        self.hashes = _grown(self.hashes, need)
        self.starts = _grown(self.starts, need)
        self.lens = _grown(self.lens, need)
        self.arena = _grown(self.arena, int(self.state[1]) + new_bytes)
        self.out = _grown(self.out, new_tokens)
        if 2 * need > len(self.table):
            size = len(self.table)
            while 2 * need > size:
                size *= 2
            self.table = np.full(size, -1, dtype=np.int32)
            _rehash(self.table, self.hashes, n)

    def text(self, text: str) -> np.ndarray:
        """Provisional ids of the tokens of ``text``, in order."""
        data = text.encode("utf-8", "surrogatepass")
        buf = np.frombuffer(data, dtype=np.uint8)
        extra, counts, n_extra, nseg = self._empty, self._no_counts, 0, 0
        segs = self.segs
        if not text.isascii():
            if len(segs) < len(buf) + 2:
                self.segs = segs = np.zeros(2 * len(buf) + 2, dtype=np.int64)
            nseg = int(_segments(buf, _CLASS, segs))
            tokenize = self.analyzer.tokenize
            parts: list[bytes] = []
            counts = np.zeros(max(nseg, 1), dtype=np.int64)
            for k in range(nseg):
                toks = tokenize(data[segs[2 * k]: segs[2 * k + 1]].decode("utf-8", "surrogatepass"))
                counts[k] = len(toks)
                n_extra += len(toks)
                for t in toks:
                    parts.append(t.encode("utf-8", "surrogatepass"))
                    parts.append(b"\n")
            if parts:
                extra = np.frombuffer(b"".join(parts), dtype=np.uint8)
        self._reserve((len(buf) + 1) // 2 + n_extra, len(buf) + len(extra))
        end = _tokenize(buf, _CLASS, self.lower, segs, nseg, extra, counts, self.table, self.hashes, self.starts,
                        self.lens, self.arena, self.state, self.out, 0)
        return self.out[:end]

    def tokens(self, tokens: list[str]) -> np.ndarray:
        """Provisional ids of already tokenized text (tokens used as they are)."""
        parts = [str(t).encode("utf-8", "surrogatepass") for t in tokens]
        bounds = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=bounds[1:])
        data = np.frombuffer(b"".join(parts) or b"\0", dtype=np.uint8)
        self._reserve(len(parts), int(bounds[-1]))
        _intern_many(data, bounds, self.table, self.hashes, self.starts, self.lens, self.arena, self.state, self.out)
        return self.out[: len(parts)]

    def words(self) -> list[str]:
        """The distinct tokens, in provisional-id order."""
        n = int(self.state[0])
        arena = self.arena.tobytes()
        starts, lens = self.starts[:n].tolist(), self.lens[:n].tolist()
        return [arena[s: s + ln].decode("utf-8", "surrogatepass") for s, ln in zip(starts, lens, strict=True)]
