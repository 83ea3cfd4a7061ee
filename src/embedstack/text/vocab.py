"""Vocabulary: streaming word counts, ``min_count``/``max_size`` pruning, word2vec sampling tables.

The vocabulary is the shared first step of every word-vector trainer: it counts tokens in one pass
over a (possibly huge, streamed) corpus, keeps words seen at least ``min_count`` times, orders them by
descending frequency with ties broken by the word itself (so the result never depends on hash or
insertion order), and derives the two tables word2vec needs: per-word keep probabilities for
frequent-word subsampling and the unigram^0.75 negative-sampling distribution.

Example:
    >>> vocab = Vocabulary(min_count=2).fit([["a", "b", "a"], ["c", "a", "b"]])
    >>> vocab.words_, vocab.counts_.tolist(), vocab.total_words_
    (['a', 'b'], [3, 2], 6)
    >>> vocab.encode(["b", "zzz", "a"]).tolist()
    [1, 0]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from embedstack._validation import check_float, check_int
from embedstack.base import Component, check_is_fitted
from embedstack.errors import FormatError, InputError, UnknownKeyError
from embedstack.registry import register

__all__ = ["Vocabulary"]


@register("Vocabulary")
class Vocabulary(Component):
    """Word counts with pruning and frequency order, built in one streaming pass.

    Args:
        min_count: keep words seen at least this many times (>= 1).
        max_size: keep at most this many words (the most frequent); None for no limit.

    Attributes (after ``fit``):
        words_: kept words, by descending count, ties by word ascending.
        counts_: ``int64`` count of each kept word, same order.
        index_: word → id (its position in ``words_``).
        total_words_: number of tokens seen in the corpus, including those of pruned words.

    Example:
        >>> v = Vocabulary().fit([["to", "be", "or", "not", "to", "be"]])
        >>> v.words_
        ['be', 'to', 'not', 'or']
        >>> round(float(v.noise_distribution().sum()), 6)
        1.0
    """

    def __init__(self, min_count: int = 1, max_size: int | None = None) -> None:
        self.min_count = min_count
        self.max_size = max_size

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        check_int(self, "min_count", self.min_count, low=1)
        check_int(self, "max_size", self.max_size, low=1, allow_none=True)

    def fit(self, token_lists: Iterable[Sequence[str]]) -> Vocabulary:
        """Count the tokens of ``token_lists`` (an iterable of token lists, consumed once) and prune.

        The corpus is streamed: only the counts are kept in memory, never the texts.

        Raises:
            InputError: the corpus is empty, holds raw strings instead of token lists, or no word
                reaches ``min_count``.
        """
        self._check_params()
        counter: Counter[str] = Counter()
        update = counter.update
        for i, tokens in enumerate(token_lists):
            if isinstance(tokens, str | bytes):
                raise InputError(
                    f"Vocabulary.fit expects an iterable of token lists, but item #{i} is a "
                    f"{type(tokens).__name__}; tokenize first, e.g. Analyzer().tokenize_many(texts)."
                )
            update(tokens)
        total = sum(counter.values())
        return self._finalise(counter, total)

    def fit_counts(self, counts: Mapping[str, int], *, total_words: int | None = None) -> Vocabulary:
        """Build the vocabulary from precomputed ``word -> count`` (e.g. merged from several workers).

        Args:
            counts: occurrences of every word.
            total_words: tokens in the corpus; defaults to ``sum(counts.values())``.
        """
        self._check_params()
        bad = [w for w, c in counts.items() if int(c) < 0]
        if bad:
            raise InputError(f"counts must be >= 0; got a negative count for {bad[0]!r}.")
        total = int(sum(int(c) for c in counts.values())) if total_words is None else int(total_words)
        return self._finalise(counts, total)

    def _finalise(self, counts: Mapping[str, int], total: int) -> Vocabulary:
        min_count = int(self.min_count)
        kept = [(w, int(c)) for w, c in counts.items() if c >= min_count]
        if not kept:
            if total == 0:
                raise InputError(
                    "Vocabulary.fit got an empty corpus (no tokens at all); pass a non-empty iterable "
                    "of token lists."
                )
            raise InputError(
                f"No word occurs at least {min_count} times (the minimum count) in the corpus ({total} tokens, "
                f"{len(counts)} distinct words); use a larger corpus or a lower minimum count.",
                fix={"min_count": 1},
            )
        kept.sort(key=lambda wc: (-wc[1], wc[0]))
        if self.max_size is not None:
            kept = kept[: int(self.max_size)]
        self._set_words([w for w, _ in kept], np.fromiter((c for _, c in kept), dtype=np.int64, count=len(kept)))
        self.total_words_ = int(total)
        return self

    def _set_words(self, words: list[str], counts: np.ndarray) -> None:
        self.words_ = words
        self.counts_ = counts
        self.index_ = {w: i for i, w in enumerate(words)}

    # ------------------------------------------------------------------ lookup
    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run."""
        return getattr(self, "words_", None) is not None

    def __len__(self) -> int:
        check_is_fitted(self, "words_")
        return len(self.words_)

    def __contains__(self, word: object) -> bool:
        check_is_fitted(self, "words_")
        return word in self.index_

    def __iter__(self) -> Iterator[str]:
        check_is_fitted(self, "words_")
        return iter(self.words_)

    def __getitem__(self, word: str) -> int:
        """Id of ``word``; raises UnknownKeyError for out-of-vocabulary words."""
        check_is_fitted(self, "words_")
        try:
            return self.index_[word]
        except KeyError:
            raise UnknownKeyError(word, f"The vocabulary holds {len(self.words_)} words (min_count={self.min_count}).") from None

    def count(self, word: str) -> int:
        """Corpus count of ``word`` (0 when it is not in the vocabulary)."""
        check_is_fitted(self, "words_")
        i = self.index_.get(word)
        return 0 if i is None else int(self.counts_[i])

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Ids of ``tokens`` as ``int32``; out-of-vocabulary tokens are dropped."""
        check_is_fitted(self, "words_")
        get = self.index_.get
        return np.fromiter((i for i in map(get, tokens) if i is not None), dtype=np.int32)

    def encode_many(self, token_lists: Iterable[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Encode many token lists into one flat ``int32`` id array plus ``int64`` offsets.

        Text ``j`` has ids ``ids[offsets[j]:offsets[j + 1]]``; ``len(offsets) == n_texts + 1``.
        """
        check_is_fitted(self, "words_")
        get = self.index_.get
        flat: list[int] = []
        extend = flat.extend
        offsets = [0]
        for tokens in token_lists:
            extend(i for i in map(get, tokens) if i is not None)
            offsets.append(len(flat))
        return np.asarray(flat, dtype=np.int32), np.asarray(offsets, dtype=np.int64)

    # ------------------------------------------------------------------ sampling tables
    def keep_probabilities(self, sample: float = 1e-3) -> np.ndarray:
        """word2vec subsampling: probability of keeping each occurrence of each word (``float32``).

        ``p = (sqrt(f / (s*T)) + 1) * (s*T) / f`` clipped to 1, with ``f`` the word's count, ``s`` the
        ``sample`` threshold and ``T`` the total count of the kept vocabulary. ``sample=0`` keeps all.
        """
        check_is_fitted(self, "words_")
        s = check_float(self, "sample", sample, low=0.0)
        f = self.counts_.astype(np.float64)
        if s == 0.0:
            return np.ones(len(f), dtype=np.float32)
        threshold = s * float(f.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            p = (np.sqrt(f / threshold) + 1.0) * (threshold / f)
        p = np.where(f > 0, p, 1.0)
        return np.minimum(p, 1.0).astype(np.float32)

    def noise_distribution(self, power: float = 0.75) -> np.ndarray:
        """Negative-sampling distribution ``count^power / sum`` (``float64``, sums to 1)."""
        check_is_fitted(self, "words_")
        pw = check_float(self, "power", power, low=0.0)
        w = self.counts_.astype(np.float64) ** pw
        total = w.sum()
        if total <= 0:  # every count is 0 (only possible through fit_counts)
            return np.full(len(w), 1.0 / len(w))
        return w / total

    # ------------------------------------------------------------------ persistence
    def get_config(self) -> dict[str, Any]:
        return {"min_count": self.min_count, "max_size": self.max_size}

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        check_is_fitted(self, "words_")
        text = "".join(self.words_)
        lengths = np.fromiter((len(w) for w in self.words_), dtype=np.int64, count=len(self.words_))
        offsets = np.zeros(len(self.words_) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        arrays: dict[str, np.ndarray] = {
            "words_utf8": np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy(),
            "word_char_offsets": offsets,
            "counts": np.ascontiguousarray(self.counts_, dtype=np.int64),
        }
        return arrays, {"total_words": int(self.total_words_), "n_words": len(self.words_)}

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        try:
            blob, offsets, counts = arrays["words_utf8"], arrays["word_char_offsets"], arrays["counts"]
            text = bytes(np.asarray(blob, dtype=np.uint8)).decode("utf-8")
        except KeyError as exc:
            raise FormatError(f"saved Vocabulary lacks the array {exc}; save it again.") from None
        except UnicodeDecodeError as exc:
            raise FormatError(f"saved Vocabulary words are not valid UTF-8 (byte {exc.start}); save it again.") from None
        offsets = np.asarray(offsets, dtype=np.int64)
        n = len(offsets) - 1
        if n < 0 or len(counts) != n or (n and (offsets[0] != 0 or offsets[-1] != len(text))) or np.any(np.diff(offsets) < 0):
            raise FormatError("saved Vocabulary arrays are inconsistent (offsets/counts/words); save it again.")
        bounds = offsets.tolist()
        self._set_words([text[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                        np.array(counts, dtype=np.int64))
        if len(self.index_) != n:
            raise FormatError("saved Vocabulary holds duplicate words; save it again.")
        self.total_words_ = int(state.get("total_words", int(self.counts_.sum())))

    def __repr__(self) -> str:
        size = f", {len(self.words_)} words" if self.is_fitted else ""
        return f"Vocabulary(min_count={self.min_count}, max_size={self.max_size}{size})"
