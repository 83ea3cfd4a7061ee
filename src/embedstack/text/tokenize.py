"""Unicode normalisation, lowercasing, a configurable regex word tokenizer and an analyzer chain.

The :class:`Analyzer` is the one text → tokens pipeline every counting model and word-vector
trainer uses: normalise → lowercase → regex tokens → optional stopwords → optional Snowball stem.

Example:
    >>> Analyzer().tokenize("Café au LAIT, 3 times!")
    ['café', 'au', 'lait', '3', 'times']
    >>> Analyzer(stem="english", stopwords="english").tokenize("The runners were running")
    ['runner', 'run']
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from embedstack._validation import check_choice
from embedstack.errors import ConfigError, InputError

__all__ = ["normalize", "WORD_PATTERN", "Analyzer", "ENGLISH_STOPWORDS", "to_text"]

# Letters/digits runs, keeping inner apostrophes and hyphens out (split on them) — the usual IR choice.
WORD_PATTERN = r"(?u)\b\w\w*\b"

# A short standard English stop list (the Lucene/Snowball core set).
ENGLISH_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves""".split()  # noqa: SIM905
)


def to_text(value: Any, *, where: str = "input") -> str:
    """Return ``value`` as ``str``; bytes must be UTF-8, anything else raises InputError."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{where} contains bytes that are not valid UTF-8 (byte offset {exc.start}); "
                "decode the text yourself (e.g. latin-1) or fix the file's encoding."
            ) from None
    raise InputError(f"{where} must be str, got {type(value).__name__}; pass a list of strings.")


def normalize(text: str, form: str = "NFKC") -> str:
    """Unicode-normalise ``text`` (NFKC by default: compatibility forms folded, e.g. 'ﬁ' → 'fi')."""
    return unicodedata.normalize(form, text)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Analyzer:
    """Text → tokens. Frozen and JSON-serialisable so it is stored in every model manifest.

    Args:
        lowercase: lowercase before tokenising.
        normalization: Unicode normal form ("NFKC", "NFC", ... or None for none).
        pattern: regex whose matches are tokens.
        stopwords: None, "english", or a tuple of words to drop.
        stem: None or a Snowball language name ("english") — uses PyStemmer.
        min_token_length: drop shorter tokens.
    """

    lowercase: bool = True
    normalization: str | None = "NFKC"
    pattern: str = WORD_PATTERN
    stopwords: str | tuple[str, ...] | None = None
    stem: str | None = None
    min_token_length: int = 1

    def __post_init__(self) -> None:
        if self.normalization is not None:
            check_choice(self, "normalization", self.normalization, ["NFC", "NFD", "NFKC", "NFKD"])
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"The 'pattern' parameter of Analyzer is not a valid regex: {exc}.") from None
        if isinstance(self.stopwords, list):
            object.__setattr__(self, "stopwords", tuple(self.stopwords))
        if isinstance(self.stopwords, str) and self.stopwords != "english":
            raise ConfigError(
                f"The 'stopwords' parameter of Analyzer must be None, 'english' or a list of words. "
                f"Got {self.stopwords!r} instead."
            )
        if self.stem is not None:
            self._stemmer  # noqa: B018 - fail early on an unknown language

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        # For the default pattern, ``\w+`` finds the same tokens (a maximal run of word characters has a
        # word boundary at both ends) about 20% faster.
        return re.compile(r"\w+" if self._word_runs else self.pattern)

    @cached_property
    def _word_runs(self) -> bool:
        """Whether the tokens are the runs of word characters (the default pattern)."""
        return self.pattern == WORD_PATTERN

    @cached_property
    def _stop(self) -> frozenset[str]:
        if self.stopwords is None:
            return frozenset()
        if self.stopwords == "english":
            return ENGLISH_STOPWORDS
        return frozenset(self.stopwords)

    @cached_property
    def _stemmer(self) -> Any:
        from embedstack._extras import require

        stemmer_mod = require("Stemmer", "core", "stemming (PyStemmer)")
        try:
            return stemmer_mod.Stemmer(self.stem)
        except KeyError:
            raise ConfigError(
                f"The 'stem' parameter of Analyzer names an unknown Snowball language {self.stem!r}; "
                f"choose one of {sorted(stemmer_mod.algorithms())}."
            ) from None

    @cached_property
    def _stem_cache(self) -> dict[str, str]:
        return {}

    def tokenize(self, text: str | bytes) -> list[str]:
        """Tokens of one text."""
        s = to_text(text)
        if self.normalization:
            s = unicodedata.normalize(self.normalization, s)  # type: ignore[arg-type]
        if self.lowercase:
            s = s.lower()
        # Only spaces between runs of letters/digits (pre-tokenized text): str.split gives the default
        # pattern's tokens (``\w`` is exactly isalnum() or "_", and no alphanumeric character is
        # whitespace), about 2x faster than the regex.
        toks = s.split() if self._word_runs and s.replace(" ", "").isalnum() else self._regex.findall(s)
        if self.min_token_length > 1:
            toks = [t for t in toks if len(t) >= self.min_token_length]
        if self._stop:
            stop = self._stop
            toks = [t for t in toks if t not in stop]
        if self.stem is not None:
            cache = self._stem_cache
            missing = [t for t in set(toks) if t not in cache]
            if missing:
                for t, s_ in zip(missing, self._stemmer.stemWords(missing), strict=True):
                    cache[t] = s_
                if len(cache) > 2_000_000:  # bound memory on huge vocabularies
                    cache.clear()
                    return self._stemmer.stemWords(toks)
            toks = [cache[t] for t in toks]
        return toks

    def __call__(self, text: str | bytes) -> list[str]:
        return self.tokenize(text)

    def tokenize_many(self, texts: Iterable[str | bytes]) -> Iterator[list[str]]:
        """Tokens of each text, lazily."""
        for i, t in enumerate(texts):
            try:
                yield self.tokenize(t)
            except InputError as exc:
                raise InputError(f"text #{i}: {exc}") from None

    def get_config(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["stopwords"], tuple):
            d["stopwords"] = list(d["stopwords"])
        return d

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Analyzer:
        cfg = dict(config)
        if isinstance(cfg.get("stopwords"), list):
            cfg["stopwords"] = tuple(cfg["stopwords"])
        return cls(**cfg)

    def __copy__(self) -> Analyzer:
        # Caches (compiled regex, PyStemmer object, stem cache) are rebuilt lazily; the stemmer cannot be copied.
        return Analyzer.from_config(self.get_config())

    def __deepcopy__(self, memo: dict[int, Any]) -> Analyzer:
        return self.__copy__()
