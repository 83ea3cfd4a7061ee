"""fastText character n-grams: ``<word>`` boundaries, minn..maxn characters, FNV-1a 32-bit buckets.

This follows fastText's ``Dictionary::computeSubwords`` exactly: the word is wrapped in ``<`` ``>``,
n-grams are taken over characters (UTF-8 continuation bytes never start a new character), the
one-character n-grams ``<`` and ``>`` are skipped, and each n-gram is hashed with FNV-1a 32-bit over
its UTF-8 bytes where each byte is first sign-extended (fastText's ``int8_t`` cast), then reduced
modulo the number of buckets. Vectors saved with these bucket ids line up with fastText and gensim.

Example:
    >>> char_ngrams("where", 3, 3)
    ['<wh', 'whe', 'her', 'ere', 're>']
    >>> fasttext_hash("<wh")
    1048167652
    >>> ngram_buckets("where", 3, 3, 2_000_000)[:2]
    [167652, 420941]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["char_ngrams", "fasttext_hash", "ngram_buckets", "subword_table"]

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619


def fasttext_hash(ngram: str | bytes) -> int:
    """fastText's FNV-1a 32-bit hash of the UTF-8 bytes of ``ngram`` (bytes sign-extended)."""
    data = ngram.encode("utf-8") if isinstance(ngram, str) else ngram
    h = _FNV_OFFSET
    for byte in data:
        signed = byte - 256 if byte >= 128 else byte
        h ^= signed & 0xFFFFFFFF
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def char_ngrams(word: str, minn: int = 3, maxn: int = 6) -> list[str]:
    """The character n-grams of ``<word>`` of length minn..maxn, in fastText's order."""
    w = f"<{word}>"
    out = []
    n_chars = len(w)
    for i in range(n_chars):
        for n in range(1, maxn + 1):
            j = i + n
            if j > n_chars:
                break
            if n >= minn and not (n == 1 and (i == 0 or j == n_chars)):
                out.append(w[i:j])
    return out


def ngram_buckets(word: str, minn: int = 3, maxn: int = 6, bucket: int = 2_000_000) -> list[int]:
    """Bucket ids of ``word``'s n-grams (empty when ``maxn < minn`` or ``bucket == 0``)."""
    if bucket <= 0 or maxn < minn:
        return []
    return [fasttext_hash(g) % bucket for g in char_ngrams(word, minn, maxn)]


def subword_table(words: Sequence[str], minn: int, maxn: int, bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket ids of many words as CSR ``(ptr int64 (n+1,), ids int32)``; numba-accelerated when present."""
    n = len(words)
    if bucket <= 0 or maxn < minn or n == 0:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int32)
    encoded = [f"<{w}>".encode() for w in words]
    try:
        from embedstack.static._kernels import subword_hashes
    except ImportError:
        lists = [ngram_buckets(w, minn, maxn, bucket) for w in words]
        ptr = np.zeros(n + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(x) for x in lists])
        ids = np.fromiter((b for x in lists for b in x), dtype=np.int32, count=int(ptr[-1]))
        return ptr, ids
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=n)
    word_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=word_ptr[1:])
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return subword_hashes(buf, word_ptr, int(minn), int(maxn), int(bucket))
