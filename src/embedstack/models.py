"""One resolver from model SPEC strings to encoders, used by every command.

A SPEC is ``kind`` or ``kind:arg`` (``bow``, ``tfidf``, ``bm25``, ``lsa:256``, ``word2vec:PATH``),
a saved component folder, or a transformer model name / folder. Counting models come back unfitted:
callers fit them on the corpus they evaluate (see :func:`needs_fit`).

Example:
    >>> enc = resolve("lsa:64")
    >>> type(enc).__name__, enc.n_components
    ('LSA', 64)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from embedstack.errors import ConfigError, EmbedstackError, ModelNotFoundError

__all__ = ["load", "resolve", "register_spec", "known_specs", "needs_fit", "parse_spec", "did_you_mean",
           "split_options"]

Factory = Callable[[str | None], Any]

# kind -> "module:function" (lazy, so `import embedstack` stays light). Functions take the arg or None.
_SPECS: dict[str, str] = {
    "bow": "embedstack.count.specs:bow",
    "binary-bow": "embedstack.count.specs:binary_bow",
    "tfidf": "embedstack.count.specs:tfidf",
    "bm25": "embedstack.count.specs:bm25",
    "bm25-nostem": "embedstack.count.specs:bm25_nostem",
    "lsa": "embedstack.count.specs:lsa",
    "word2vec": "embedstack.static.specs:word2vec",
    "fasttext": "embedstack.static.specs:fasttext",
    "glove": "embedstack.static.specs:glove",
    "elmo": "embedstack.neural.elmo:elmo_spec",
    "recipe": "embedstack.training.recipes:load_recipe_model",
    "whiten": "embedstack.geometry.whitening:whiten_spec",
}
_HELP: dict[str, str] = {
    "bow": "bag of words (counts)",
    "binary-bow": "bag of words (binary)",
    "tfidf": "TF-IDF (smooth idf, sublinear tf, l2)",
    "bm25": "BM25 (k1=1.2, b=0.75, Lucene idf, English Snowball stemmer + stopwords)",
    "bm25-nostem": "BM25 without stemming or stopwords",
    "lsa": "lsa:DIM — truncated SVD of TF-IDF (dense)",
    "word2vec": "word2vec[:PATH][,pool=mean|sif] — pooled word2vec vectors (any vectors file/folder)",
    "fasttext": "fasttext[:PATH][,pool=mean|sif] — pooled fastText vectors (OOV words from n-grams)",
    "glove": "glove[:PATH][,pool=mean|sif] — pooled GloVe vectors",
    "elmo": "elmo[:PATH][,layer=0|1|2|mix] — ELMo word vectors (one layer or the scalar mix), mean-pooled",
    "recipe": "recipe:NAME[@options] — a model built by `embedstack recipe NAME` (see `embedstack recipe --list`)",
    "whiten": "whiten:[K:]BASE — BASE's vectors whitened (Su et al. 2021) to K dims, fitted on the corpus like LSA",
}
# Fallback for folders and model names (transformers); set by the neural package.
_FALLBACK: str | None = "embedstack.neural.specs:load_named"


def register_spec(kind: str, target: str, help: str = "") -> None:
    """Add ``kind`` → ``"module:function"`` to the spec table."""
    _SPECS[kind] = target
    _HELP[kind] = help


def known_specs() -> dict[str, str]:
    """Spec kinds and their one-line descriptions."""
    return {k: _HELP.get(k, "") for k in _SPECS}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``kind:arg``; raise ConfigError on an empty or malformed spec."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("A model SPEC must be a non-empty string such as 'bm25', 'lsa:256' or a model folder.")
    spec = spec.strip()
    kind, sep, arg = spec.partition(":")
    if sep and not arg:
        raise ConfigError(f"Model spec {spec!r} has an empty argument after ':'; e.g. 'lsa:256'.")
    return kind.lower(), (arg if sep else None)


def split_options(arg: str, known: set[str] | frozenset[str], what: str, example: str = "") -> tuple[str, dict[str, str]]:
    """Split a SPEC argument ``PATH,key=value,...`` into the path and its options (keys lower-cased).

    Raises:
        ConfigError: a key not in ``known`` (the message lists them; ``example`` shows a valid SPEC).

    Example:
        >>> split_options("vecs.txt,pool=sif", {"pool"}, "word-vector")
        ('vecs.txt', {'pool': 'sif'})
    """
    parts = arg.split(",")
    opts: dict[str, str] = {}
    for p in parts:
        if "=" in p:
            k, _, v = p.partition("=")
            k = k.strip().lower()
            if k not in known:
                raise ConfigError(f"unknown {what} spec option {k!r}; known options: {sorted(known)}"
                                  + (f" (e.g. {example})." if example else "."))
            opts[k] = v.strip()
    return ",".join(p for p in parts if "=" not in p).strip(), opts


def _call(target: str, arg: str | None) -> Any:
    mod, _, fn = target.partition(":")
    return getattr(importlib.import_module(mod), fn)(arg)


def did_you_mean(word: str, candidates: list[str]) -> str:
    """`` Did you mean 'x'?`` for the closest candidate (case-insensitive), or ``""`` when none is close."""
    import difflib

    lower: dict[str, str] = {}
    for c in candidates:  # the first spelling of a name wins (the display form comes first)
        lower.setdefault(c.lower(), c)
    best = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.75)
    return f" Did you mean {lower[best[0]]!r}?" if best else ""


def _known_names() -> list[str]:
    """Spec kinds, the packaged/aliased transformer names and the models in the local cache."""
    names = list(_SPECS)
    try:
        from embedstack.neural.hub import _ALIASES as aliases
        from embedstack.neural.hub import PACKAGED_MODELS, cache_dir

        names += ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", *aliases, *PACKAGED_MODELS]
        models = cache_dir() / "models"
        if models.is_dir():
            names += [p.name.replace("__", "/") for p in models.iterdir() if p.is_dir()]
            names += [p.name.split("__")[-1] for p in models.iterdir() if p.is_dir()]
    except ImportError:  # pragma: no cover - the neural package is part of the core install
        pass
    return list(dict.fromkeys(names))


def resolve(spec: str) -> Any:
    """Turn a SPEC into an encoder (unfitted for counting models).

    A SPEC that matches nothing raises :class:`~embedstack.errors.ConfigError` (or
    :class:`~embedstack.errors.ModelNotFoundError` for a transformer name) with the closest known name
    ("did you mean 'bm25'?").
    """
    kind, arg = parse_spec(spec)
    if kind in _SPECS and not (os.sep in spec and Path(spec).exists() and arg is None):
        return _call(_SPECS[kind], arg)
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "manifest.json").is_file():
        from embedstack.registry import load_component

        component = load_component(path)
        from embedstack.static.keyedvectors import KeyedVectors

        if isinstance(component, KeyedVectors):  # a trained vectors folder encodes as `word2vec:FOLDER` does
            from embedstack.static.pooling import PooledWordEncoder

            return PooledWordEncoder(component, name=path.name)
        return component
    if _FALLBACK is not None and (path.exists() or "/" in spec or "-" in spec):
        try:
            return _call(_FALLBACK, spec)
        except ModuleNotFoundError as exc:
            if not exc.name or not exc.name.startswith("embedstack"):
                raise
        except EmbedstackError as exc:
            if not isinstance(exc, ModelNotFoundError) or path.exists():
                raise
            hint = did_you_mean(spec.partition("@")[0], _known_names())
            if not hint:
                raise
            raise ModelNotFoundError(f"Model {spec.partition('@')[0]!r} was not found.{hint} "
                                     f"({exc.message_for(None)})") from None
    raise ConfigError(
        f"Cannot parse model spec {spec!r}.{did_you_mean(kind, _known_names())} Use one of {sorted(_SPECS)} "
        "(e.g. 'lsa:256'), a saved model folder, or a transformer model name."
    )


def load(spec: str, **options: Any) -> Any:
    """``embedstack.load``: any model SPEC → an encoder (``bm25``, ``lsa:256``, ``word2vec:PATH``, a saved
    folder, ``all-MiniLM-L6-v2@pooling=cls`` ...).

    Counting models and SIF pooling come back unfitted (see :func:`needs_fit`): ``.fit(texts)`` them
    (it returns the encoder). ``options`` are transformer options (``pooling="cls"``, ``precision="bf16"``
    ...), as in the ``@option=value`` suffix; other models take none.

    Example:
        >>> load("lsa:2").fit(["cats purr", "dogs bark", "cats and dogs", "birds sing"]).encode("cats").shape
        (2,)
    """
    encoder = resolve(spec)
    if options:
        if not callable(getattr(encoder, "with_options", None)):
            raise ConfigError(f"{type(encoder).__name__} from {spec!r} takes no options; got {sorted(options)}.")
        encoder = encoder.with_options(**options)
    return encoder


def needs_fit(encoder: Any) -> bool:
    """True if ``encoder`` must be fitted on a corpus before encoding."""
    return bool(getattr(encoder, "requires_fit", False)) and not bool(getattr(encoder, "is_fitted", True))
