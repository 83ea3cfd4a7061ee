"""Word-vector runners: word similarity (Spearman vs human scores) and analogies (3CosAdd / 3CosMul).

Both take any object following the :class:`WordVectors` protocol (``key_to_index``, ``index_to_key``,
``vectors``) — embedstack's ``KeyedVectors``, a gensim ``KeyedVectors``, or a tiny test double.

Analogies follow gensim's ``evaluate_word_analogies`` defaults:

* only the first ``restrict_vocab`` words (the most frequent, for frequency-sorted vectors) are
  candidates; a question with any word outside them is counted as OOV and skipped;
* lookup is case-insensitive: every word is lowercased and, where several keys lowercase to the same
  word, the first (most frequent) one stands for it;
* the answer is the best-scoring candidate whose lowercased form is none of the three question words;
* accuracy is correct / answered (OOV questions excluded); sections whose name starts with ``gram``
  are syntactic, the others semantic.

3CosAdd scores ``cos(x, b) - cos(x, a) + cos(x, c)``; 3CosMul (Levy & Goldberg, 2014) scores
``cos'(x, b) * cos'(x, c) / (cos'(x, a) + 1e-6)`` with cosines shifted to ``[0, 1]`` by
``(1 + cos) / 2``. Questions are answered in batches with matrix products.

Example:
    >>> import numpy as np
    >>> class V:  # any object with these three attributes works
    ...     index_to_key = ["king", "queen", "man", "woman"]
    ...     key_to_index = {w: i for i, w in enumerate(index_to_key)}
    ...     vectors = np.array([[1, 1], [1, -1], [0.1, 1], [0.1, -1]], dtype=np.float32)
    >>> evaluate_analogies(V(), [("royals", [("man", "king", "woman", "queen")])])["accuracy"]
    1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from embedstack.errors import ConfigError, InputError
from embedstack.evaluation.metrics import pearson, spearman

__all__ = ["WordVectors", "evaluate_word_similarity", "evaluate_analogies"]

_EPS_COSMUL = 1e-6


@runtime_checkable
class WordVectors(Protocol):
    """Static word vectors: ``key_to_index``, ``index_to_key`` and a float ``(n, d)`` matrix."""

    key_to_index: dict[str, int]
    index_to_key: list[str]
    vectors: np.ndarray


def _parts(vectors: Any) -> tuple[dict[str, int], list[str], np.ndarray]:
    try:
        k2i, i2k, mat = vectors.key_to_index, list(vectors.index_to_key), np.asarray(vectors.vectors)
    except AttributeError:
        raise InputError(
            f"word vectors must have key_to_index, index_to_key and vectors; got {type(vectors).__name__}. "
            "Load them with embedstack.static.load_vectors(path)."
        ) from None
    if mat.ndim != 2 or mat.shape[0] != len(i2k):
        raise InputError(f"vectors has shape {mat.shape} but there are {len(i2k)} words.")
    if mat.shape[0] == 0:
        raise InputError("the word vectors are empty (no words).")
    return k2i, i2k, mat


def _unit(mat: np.ndarray) -> np.ndarray:
    m = np.asarray(mat, dtype=np.float32)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return m / n


def _lower_map(words: Sequence[str]) -> dict[str, int]:
    """lowercased word -> index of its first (most frequent) spelling."""
    out: dict[str, int] = {}
    for i, w in enumerate(words):
        out.setdefault(w.lower(), i)
    return out


def evaluate_word_similarity(vectors: Any, pairs: Iterable[tuple[str, str, float]], *,
                             case_insensitive: bool = True) -> dict[str, Any]:
    """Spearman correlation between cosine similarities and human similarity judgements.

    A word is looked up as written, then (``case_insensitive``) by its lowercase form. Pairs with a
    word not found are counted in ``oov`` and left out of the correlation.

    Args:
        vectors: a :class:`WordVectors`.
        pairs: ``(word1, word2, score)`` triples, e.g. from ``embedstack.data.load_word_similarity``.
        case_insensitive: fall back to the lowercase form.

    Returns:
        ``spearman`` and ``pearson`` (in [-1, 1], as gensim reports them), ``n`` (pairs scored),
        ``oov`` (pairs skipped), ``total``, ``oov_ratio`` and ``primary_metric``.
    """
    k2i, i2k, mat = _parts(vectors)
    lower: dict[str, int] | None = None  # built on the first miss only

    def find(w: str) -> int | None:
        nonlocal lower
        i = k2i.get(w)
        if i is None and case_insensitive:
            if lower is None:
                lower = _lower_map(i2k)
            i = lower.get(w.lower())
        return i

    left, right, gold = [], [], []
    total = oov = 0
    for item in pairs:
        try:
            w1, w2, score = item
        except (TypeError, ValueError):
            raise InputError(f"word-similarity pairs must be (word1, word2, score) triples; got {item!r}.") from None
        total += 1
        i, j = find(str(w1)), find(str(w2))
        if i is None or j is None:
            oov += 1
            continue
        left.append(i)
        right.append(j)
        gold.append(float(score))
    if total == 0:
        raise InputError("no word pairs were given; check the word-similarity file.")
    if len(gold) < 2:
        raise InputError(
            f"only {len(gold)} of {total} word pairs have both words in the vocabulary; a correlation needs "
            "at least 2. Use vectors trained on a larger corpus or a larger vocabulary."
        )
    a, b = _unit(mat[left]), _unit(mat[right])  # only the rows needed, not the whole table
    cos = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    return {
        "spearman": spearman(cos, gold),
        "pearson": pearson(cos, gold),
        "n": len(gold),
        "oov": oov,
        "total": total,
        "oov_ratio": oov / total,
        "primary_metric": "spearman",
    }


def _is_syntactic(section: str) -> bool:
    return section.strip().lower().startswith("gram")


def evaluate_analogies(vectors: Any, sections: Iterable[tuple[str, Sequence[tuple[str, str, str, str]]]], *,
                       restrict_vocab: int = 30000, method: str = "3cosadd",
                       batch_size: int = 512) -> dict[str, Any]:
    """Answer "a is to b as c is to ?" questions and report accuracy per section and overall.

    Args:
        vectors: a :class:`WordVectors` (ideally sorted by descending frequency).
        sections: ``(name, [(a, b, c, expected), ...])`` as returned by ``embedstack.data.load_analogies``.
        restrict_vocab: only the first N words are candidates and may appear in questions.
        method: ``"3cosadd"`` or ``"3cosmul"``.
        batch_size: questions scored per matrix product.

    Returns:
        ``accuracy`` (correct / answered), ``correct``, ``total`` (answered), ``oov`` (skipped
        questions), ``oov_ratio``, ``semantic`` and ``syntactic`` (each ``{"accuracy", "correct",
        "total"}``), ``sections`` (name -> ``{"accuracy", "correct", "total", "oov"}``), ``method``,
        ``restrict_vocab`` and ``primary_metric``.
    """
    method = str(method).lower()
    if method not in ("3cosadd", "3cosmul"):
        raise ConfigError(f"The 'method' parameter of evaluate_analogies must be '3cosadd' or '3cosmul'. Got {method!r}.")
    if isinstance(restrict_vocab, bool) or not isinstance(restrict_vocab, int) or restrict_vocab <= 0:
        raise ConfigError(f"restrict_vocab must be a positive int (gensim's default is 30000). Got {restrict_vocab!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive int. Got {batch_size!r}.")
    _, i2k, mat = _parts(vectors)
    n = min(restrict_vocab, len(i2k))
    words = [str(w) for w in i2k[:n]]
    lower = _lower_map(words)  # lowercase -> representative index (most frequent spelling)
    # group id of each candidate: the representative index of its lowercase form
    group = np.fromiter((lower[w.lower()] for w in words), dtype=np.int64, count=n)
    unit = _unit(mat[:n])

    # ---- gather answerable questions
    names: list[str] = []
    per_section_total: list[int] = []
    q_sec: list[int] = []
    q_idx: list[tuple[int, int, int, int]] = []
    oov_per: list[int] = []
    for s_i, item in enumerate(sections):
        try:
            name, questions = item
        except (TypeError, ValueError):
            raise InputError(f"analogy sections must be (name, questions) pairs; got {item!r}.") from None
        names.append(str(name))
        oov = 0
        count = 0
        for q in questions:
            if len(q) != 4:
                raise InputError(f"analogy question {q!r} in section {name!r} does not have 4 words.")
            ids = [lower.get(str(w).lower()) for w in q]
            count += 1
            if any(i is None for i in ids):
                oov += 1
                continue
            q_sec.append(s_i)
            q_idx.append(tuple(ids))  # type: ignore[arg-type]
        oov_per.append(oov)
        per_section_total.append(count)
    if not names or sum(per_section_total) == 0:
        raise InputError("no analogy questions were given; check the analogies file.")

    correct = np.zeros(len(q_idx), dtype=bool)
    if q_idx:
        arr = np.asarray(q_idx, dtype=np.int64)  # (Q, 4): a, b, c, expected
        for s in range(0, len(arr), batch_size):
            blk = arr[s:s + batch_size]
            a, b, c = unit[blk[:, 0]], unit[blk[:, 1]], unit[blk[:, 2]]
            if method == "3cosadd":
                scores = (b - a + c) @ unit.T  # (B, n): cos(x,b) - cos(x,a) + cos(x,c)
            else:
                ca = (1.0 + a @ unit.T) / 2.0
                cb = (1.0 + b @ unit.T) / 2.0
                cc = (1.0 + c @ unit.T) / 2.0
                scores = cb * cc / (ca + _EPS_COSMUL)
            excl = ((group[None, :] == blk[:, 0:1]) | (group[None, :] == blk[:, 1:2])
                    | (group[None, :] == blk[:, 2:3]))
            scores = np.where(excl, -np.inf, scores)
            pred = np.argmax(scores, axis=1)
            correct[s:s + len(blk)] = group[pred] == blk[:, 3]

    sec_arr = np.asarray(q_sec, dtype=np.int64)
    per_section: dict[str, dict[str, Any]] = {}
    sem = [0, 0]
    syn = [0, 0]
    for s_i, name in enumerate(names):
        mask = sec_arr == s_i
        tot = int(mask.sum())
        cor = int(correct[mask].sum()) if tot else 0
        entry = {"accuracy": cor / tot if tot else 0.0, "correct": cor, "total": tot, "oov": oov_per[s_i]}
        key = name if name not in per_section else f"{name} ({s_i})"
        per_section[key] = entry
        bucket = syn if _is_syntactic(name) else sem
        bucket[0] += cor
        bucket[1] += tot
    total = len(q_idx)
    n_correct = int(correct.sum())
    n_oov = sum(oov_per)
    return {
        "accuracy": n_correct / total if total else 0.0,
        "correct": n_correct,
        "total": total,
        "oov": n_oov,
        "oov_ratio": n_oov / (n_oov + total),
        "semantic": {"accuracy": sem[0] / sem[1] if sem[1] else 0.0, "correct": sem[0], "total": sem[1]},
        "syntactic": {"accuracy": syn[0] / syn[1] if syn[1] else 0.0, "correct": syn[0], "total": syn[1]},
        "sections": per_section,
        "method": method,
        "restrict_vocab": n,
        "primary_metric": "accuracy",
    }
