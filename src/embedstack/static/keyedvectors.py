"""KeyedVectors: the trained word-vector artifact, independent of any trainer.

``key_to_index`` / ``index_to_key`` / ``vectors`` (float32) — the ``WordVectors`` protocol the
evaluation runners take — plus similarity queries (``most_similar``, ``analogy`` with 3CosAdd and
3CosMul, ``doesnt_match``, ``similarity``) and the interchange formats (word2vec text/binary, GloVe,
fastText ``.vec``). :class:`FastTextKeyedVectors` adds n-gram buckets, so out-of-vocabulary words get
vectors from their character n-grams.

Example:
    >>> import numpy as np
    >>> kv = KeyedVectors(["king", "queen", "man", "woman"],
    ...                   np.array([[1, 1], [1, -1], [0.1, 1], [0.1, -1]], dtype=np.float32))
    >>> kv.analogy("man", "king", "woman")[0][0]
    'queen'
    >>> round(kv.similarity("king", "queen"), 3)
    0.0
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._validation import check_choice, check_int
from embedstack.base import Component
from embedstack.errors import FormatError, InputError, UnknownKeyError
from embedstack.registry import register

__all__ = ["KeyedVectors", "FastTextKeyedVectors", "load_vectors"]

Query = str | np.ndarray


def _pack_keys(keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    enc = [k.encode("utf-8") for k in keys]
    off = np.zeros(len(enc) + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(b) for b in enc])
    return np.frombuffer(b"".join(enc), dtype=np.uint8).copy(), off


def _unpack_keys(blob: np.ndarray, off: np.ndarray) -> list[str]:
    raw = np.asarray(blob, dtype=np.uint8).tobytes()
    o = off.tolist()
    return [raw[o[i]: o[i + 1]].decode("utf-8") for i in range(len(o) - 1)]


@register("KeyedVectors")
class KeyedVectors(Component):
    """Word → vector lookup with similarity queries.

    Args:
        keys: the words, most frequent first by convention.
        vectors: float32 array of shape ``(len(keys), dim)``.
        counts: optional corpus count of each word (used by SIF pooling).
        meta: JSON-able facts about how the vectors were made (trainer, options, timings).

    Example:
        >>> import numpy as np
        >>> kv = KeyedVectors(["a", "b", "c"], np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32))
        >>> [w for w, _ in kv.most_similar("a", topn=2)]
        ['b', 'c']
    """

    def __init__(self, keys: Sequence[str] | None = None, vectors: np.ndarray | None = None, *,
                 counts: np.ndarray | None = None, meta: dict[str, Any] | None = None) -> None:
        self._set(list(keys or []), np.zeros((0, 0), np.float32) if vectors is None else vectors, counts)
        self.meta: dict[str, Any] = dict(meta or {})

    def _set(self, keys: list[str], vectors: np.ndarray, counts: np.ndarray | None) -> None:
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(keys):
            raise InputError(f"need one vector row per key: {len(keys)} keys, vectors of shape {vecs.shape}.")
        self.index_to_key: list[str] = keys
        self.key_to_index: dict[str, int] = {k: i for i, k in enumerate(keys)}
        if len(self.key_to_index) != len(keys):
            raise InputError("keys must be unique.")
        self.vectors: np.ndarray = vecs
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self._normed: np.ndarray | None = None

    # ------------------------------------------------------------------ basics
    @property
    def dim(self) -> int:
        """Vector dimensionality."""
        return int(self.vectors.shape[1])

    vector_size = dim

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, key: object) -> bool:
        return key in self.key_to_index

    def has_vector(self, key: str) -> bool:
        """Whether a vector can be produced for ``key``."""
        return key in self.key_to_index

    def get_index(self, key: str) -> int:
        """Row of ``key``; raises UnknownKeyError (a KeyError) naming the word."""
        try:
            return self.key_to_index[key]
        except KeyError:
            raise UnknownKeyError(key, f"These vectors hold {len(self)} words.") from None

    def get_vector(self, key: str, *, norm: bool = False) -> np.ndarray:
        """The vector of ``key`` (unit-length with ``norm=True``)."""
        i = self.get_index(key)
        return self.normed_vectors()[i] if norm else self.vectors[i]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.get_vector(key)

    def normed_vectors(self) -> np.ndarray:
        """Unit-length rows (zero rows stay zero), computed once."""
        if self._normed is None:
            n = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            n[n == 0] = 1.0
            self._normed = (self.vectors / n).astype(np.float32)
        return self._normed

    def _unit(self, q: Query) -> np.ndarray:
        v = self.get_vector(q) if isinstance(q, str) else np.asarray(q, dtype=np.float32)
        if v.shape != (self.dim,):
            raise InputError(f"a query vector must have shape ({self.dim},); got {v.shape}.")
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v

    # ------------------------------------------------------------------ queries
    def similarity(self, w1: Query, w2: Query) -> float:
        """Cosine similarity of two words (or vectors)."""
        return float(self._unit(w1) @ self._unit(w2))

    def _top(self, scores: np.ndarray, topn: int, exclude: set[int]) -> list[tuple[str, float]]:
        k = min(len(scores), topn + len(exclude))
        if k <= 0:
            return []
        idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        idx = idx[np.lexsort((idx, -scores[idx]))]
        out = [(self.index_to_key[i], float(scores[i])) for i in idx.tolist() if i not in exclude]
        return out[:topn]

    def most_similar(self, positive: Query | Sequence[Query] | None = None,
                     negative: Query | Sequence[Query] | None = None, *, topn: int = 10,
                     restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """Words nearest (cosine) to the mean of ``positive`` minus ``negative`` unit vectors.

        Query words themselves are excluded. ``restrict_vocab`` limits candidates to the first N words.
        Raises UnknownKeyError naming any unknown word.
        """
        check_int(self, "topn", topn, low=1)
        pos = [positive] if isinstance(positive, str | np.ndarray) else list(positive or [])
        neg = [negative] if isinstance(negative, str | np.ndarray) else list(negative or [])
        if not pos and not neg:
            raise InputError("most_similar needs at least one positive or negative word.")
        terms = [self._unit(q) for q in pos] + [-self._unit(q) for q in neg]
        mean = np.mean(terms, axis=0)
        exclude = {self.key_to_index[q] for q in pos + neg if isinstance(q, str) and q in self.key_to_index}
        return self._search(mean, topn, restrict_vocab, exclude)

    def similar_by_vector(self, vector: np.ndarray, *, topn: int = 10,
                          restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """Words nearest (cosine) to ``vector``."""
        return self._search(self._unit(vector), topn, restrict_vocab, set())

    def _search(self, q: np.ndarray, topn: int, restrict_vocab: int | None, exclude: set[int]
                ) -> list[tuple[str, float]]:
        n = float(np.linalg.norm(q))
        q = q / n if n > 0 else q
        limit = len(self) if restrict_vocab is None else int(restrict_vocab)
        check_int(self, "restrict_vocab", limit, low=1)
        scores = self.normed_vectors()[:limit] @ q.astype(np.float32)
        return self._top(scores, topn, {i for i in exclude if i < limit})

    def analogy(self, a: str, b: str, c: str, *, method: str = "3cosadd", topn: int = 1,
                restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """``a`` is to ``b`` as ``c`` is to ?; 3CosAdd (b - a + c) or 3CosMul (Levy & Goldberg)."""
        check_choice(self, "method", method, ["3cosadd", "3cosmul"])
        if method == "3cosadd":
            return self.most_similar([b, c], [a], topn=topn, restrict_vocab=restrict_vocab)
        limit = len(self) if restrict_vocab is None else int(restrict_vocab)
        m = self.normed_vectors()[:limit]
        ca, cb, cc = ((m @ self._unit(w) + 1.0) / 2.0 for w in (a, b, c))
        scores = cb * cc / (ca + 1e-6)
        exclude = {self.key_to_index[w] for w in (a, b, c)}
        return self._top(scores, topn, {i for i in exclude if i < limit})

    def doesnt_match(self, words: Sequence[str]) -> str:
        """The word furthest (cosine) from the mean of ``words``."""
        words = list(words)
        if len(words) < 2:
            raise InputError("doesnt_match needs at least two words.")
        units = np.vstack([self._unit(w) for w in words])
        mean = units.mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        return words[int(np.argmin(units @ mean))]

    def rank(self, query_positive: Sequence[str], query_negative: Sequence[str], target: str, *,
             restrict_vocab: int | None = None) -> int:
        """1-based rank of ``target`` among the answers to ``most_similar(positive, negative)``."""
        t = self.get_index(target)
        terms = [self._unit(q) for q in query_positive] + [-self._unit(q) for q in query_negative]
        q = np.mean(terms, axis=0)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        limit = len(self) if restrict_vocab is None else int(restrict_vocab)
        scores = self.normed_vectors()[:limit] @ q
        skip = [self.key_to_index[w] for w in [*query_positive, *query_negative]]
        skip = [i for i in skip if i < limit and i != t]
        scores[skip] = -np.inf
        if t >= limit:
            raise InputError(f"{target!r} is outside the first {limit} words.")
        return int((scores > scores[t]).sum()) + 1

    # ------------------------------------------------------------------ persistence
    def get_config(self) -> dict[str, Any]:
        return {}

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        blob, off = _pack_keys(self.index_to_key)
        arrays = {"vectors": self.vectors, "keys_utf8": blob, "keys_offsets": off}
        if self.counts is not None:
            arrays["counts"] = self.counts
        return arrays, {"n": len(self), "dim": self.dim, "meta": self.meta}

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        try:
            keys = _unpack_keys(arrays["keys_utf8"], arrays["keys_offsets"])
            self._set(keys, arrays["vectors"], arrays.get("counts"))
            self.meta = dict(state.get("meta", {}))
        except KeyError as exc:
            raise FormatError(f"saved vectors lack the array {exc}; save them again.") from None

    def save_word2vec_format(self, path: str | os.PathLike[str], *, binary: bool = False) -> Path:
        """Write the word2vec text (= fastText ``.vec``) or binary format."""
        from embedstack.io.formats import write_word2vec

        write_word2vec(path, self.index_to_key, self.vectors, binary=binary)
        return Path(path)

    def save_glove_format(self, path: str | os.PathLike[str]) -> Path:
        """Write the GloVe text format (no header)."""
        from embedstack.io.formats import write_glove

        write_glove(path, self.index_to_key, self.vectors)
        return Path(path)

    @classmethod
    def load_word2vec_format(cls, path: str | os.PathLike[str], *, binary: bool | None = None) -> KeyedVectors:
        """Read the word2vec text/binary format (detected when ``binary`` is None)."""
        from embedstack.io.formats import read_word2vec

        keys, vecs = read_word2vec(path, binary=binary)
        return cls(keys, vecs)


@register("FastTextKeyedVectors")
class FastTextKeyedVectors(KeyedVectors):
    """KeyedVectors plus fastText n-gram buckets: any word, even unseen, gets a vector.

    ``vectors`` holds the composed vector of each vocabulary word (mean of its word row and its n-gram
    rows, as fastText's ``.vec`` output). Out-of-vocabulary words get the mean of their n-gram rows.
    Only the buckets that some vocabulary word uses are stored (``ngram_ids`` sorted, ``ngram_vectors``);
    an OOV n-gram that falls in an unused bucket contributes nothing.

    Example:
        >>> import numpy as np
        >>> kv = FastTextKeyedVectors(["cat"], np.ones((1, 2), np.float32), minn=3, maxn=3, bucket=100,
        ...                           ngram_ids=np.arange(100), ngram_vectors=np.ones((100, 2), np.float32))
        >>> "cats" in kv, kv.has_vector("cats"), kv.get_vector("cats").tolist()
        (False, True, [1.0, 1.0])
    """

    def __init__(self, keys: Sequence[str] | None = None, vectors: np.ndarray | None = None, *,
                 counts: np.ndarray | None = None, meta: dict[str, Any] | None = None, minn: int = 3, maxn: int = 6, bucket: int = 2_000_000,
                 ngram_ids: np.ndarray | None = None, ngram_vectors: np.ndarray | None = None) -> None:
        super().__init__(keys, vectors, counts=counts, meta=meta)
        self.minn, self.maxn, self.bucket = int(minn), int(maxn), int(bucket)
        dim = self.vectors.shape[1] if self.vectors.size else (0 if ngram_vectors is None else ngram_vectors.shape[1])
        self.ngram_ids = np.zeros(0, np.int64) if ngram_ids is None else np.asarray(ngram_ids, dtype=np.int64)
        self.ngram_vectors = (np.zeros((0, dim), np.float32) if ngram_vectors is None
                              else np.asarray(ngram_vectors, dtype=np.float32))

    def _ngram_rows(self, word: str) -> np.ndarray:
        from embedstack.text.ngrams import ngram_buckets

        b = np.asarray(ngram_buckets(word, self.minn, self.maxn, self.bucket), dtype=np.int64)
        if len(b) == 0 or len(self.ngram_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(self.ngram_ids, b)
        pos = np.minimum(pos, len(self.ngram_ids) - 1)
        return pos[self.ngram_ids[pos] == b]

    def has_vector(self, key: str) -> bool:
        return key in self.key_to_index or len(self._ngram_rows(key)) > 0

    def get_vector(self, key: str, *, norm: bool = False) -> np.ndarray:
        if key in self.key_to_index:
            return super().get_vector(key, norm=norm)
        rows = self._ngram_rows(key)
        if len(rows) == 0:
            raise UnknownKeyError(key, "It is not in the vocabulary and none of its character n-grams was trained.")
        v = self.ngram_vectors[rows].mean(axis=0).astype(np.float32)
        if norm:
            n = float(np.linalg.norm(v))
            v = v / n if n > 0 else v
        return v

    def get_config(self) -> dict[str, Any]:
        return {"minn": self.minn, "maxn": self.maxn, "bucket": self.bucket}

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, state = super()._state()
        arrays["ngram_ids"] = self.ngram_ids
        arrays["ngram_vectors"] = self.ngram_vectors
        return arrays, state

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        super()._set_state(arrays, state)
        self.ngram_ids = np.asarray(arrays.get("ngram_ids", np.zeros(0, np.int64)), dtype=np.int64)
        self.ngram_vectors = np.asarray(arrays.get("ngram_vectors", np.zeros((0, self.dim), np.float32)))


def load_vectors(path: str | os.PathLike[str], *, encoding: str = "utf-8", errors: str = "strict") -> KeyedVectors:
    """Load word vectors from a saved folder, word2vec text/binary, GloVe text or fastText ``.vec``.

    A folder may be a saved :class:`KeyedVectors` / :class:`FastTextKeyedVectors` (or a trainer's
    output folder, which holds one). Files are detected from their first lines; ``encoding``/``errors``
    decode their words (see :func:`embedstack.io.formats.read_vectors`).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        from embedstack.registry import load_component

        if not (p / "manifest.json").is_file():
            raise FormatError(f"{p} is a folder without manifest.json; it is not saved word vectors.")
        obj = load_component(p)
        if isinstance(obj, KeyedVectors):
            return obj
        wv = getattr(obj, "wv_", None)
        if isinstance(wv, KeyedVectors):
            return wv
        raise FormatError(f"{p} holds a {type(obj).__name__}, not word vectors.")
    if not p.exists():
        raise FormatError(
            f"{p} does not exist; train vectors with `embedstack train word2vec CORPUS --out DIR` "
            "or give a word2vec/GloVe/.vec file."
        )
    from embedstack.io.formats import read_vectors

    keys, vecs = read_vectors(p, encoding=encoding, errors=errors)
    return KeyedVectors(keys, vecs)
