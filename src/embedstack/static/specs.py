"""Model SPEC factories for word vectors: ``word2vec:PATH``, ``fasttext:PATH``, ``glove:PATH``.

``PATH`` is any vectors file or folder :func:`~embedstack.static.load_vectors` reads; options follow
after commas: ``word2vec:vecs.bin,pool=sif,a=0.001``. Without a path the default location of
vectors trained by ``embedstack train KIND enwiki`` (see :func:`default_vectors_path`) is used.
The result is a :class:`~embedstack.static.pooling.PooledWordEncoder` (mean pooling by default;
SIF needs ``fit`` on a corpus first).

Example:
    >>> parse_options("vecs.txt,pool=sif,a=0.01")
    ('vecs.txt', {'pool': 'sif', 'a': '0.01'})
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from embedstack.errors import ConfigError

__all__ = ["word2vec", "fasttext", "glove", "parse_options", "default_vectors_path", "pooled", "available"]

_OPTIONS = {"pool", "a"}


def default_vectors_path(kind: str) -> Path:
    """Where ``embedstack train KIND`` puts vectors by default: ``<cache>/vectors/KIND-enwiki``."""
    from embedstack.data._registry import cache_dir

    return cache_dir() / "vectors" / f"{kind}-enwiki"


def parse_options(arg: str) -> tuple[str, dict[str, str]]:
    """Split ``PATH,key=value,...`` into the path and the options (unknown keys raise ConfigError)."""
    from embedstack.models import split_options

    return split_options(arg, _OPTIONS, "word-vector")


def pooled(kind: str, arg: str | None) -> object:
    """Build the pooling encoder for ``kind:arg``."""
    from embedstack.static.keyedvectors import load_vectors
    from embedstack.static.pooling import PooledWordEncoder

    path, opts = parse_options(arg or "")
    if not path:
        p = default_vectors_path(kind)
        if not p.exists():
            raise ConfigError(
                f"no {kind} vectors at {p}; train them with `embedstack train {kind} enwiki --out {p}` "
                f"or give a file: '{kind}:PATH'."
            )
    else:
        p = Path(os.path.expandvars(path)).expanduser()
    try:
        a = float(opts.get("a", "1e-3"))
    except ValueError:
        raise ConfigError(f"option a={opts['a']!r} is not a number.") from None
    kv = load_vectors(p)
    return PooledWordEncoder(kv, pool=opts.get("pool", "mean"), a=a, name=f"{kind}:{p.name}")


def word2vec(arg: str | None) -> object:
    """``word2vec[:PATH][,pool=mean|sif][,a=...]``."""
    return pooled("word2vec", arg)


def fasttext(arg: str | None) -> object:
    """``fasttext[:PATH][,pool=mean|sif][,a=...]``."""
    return pooled("fasttext", arg)


def glove(arg: str | None) -> object:
    """``glove[:PATH][,pool=mean|sif][,a=...]``."""
    return pooled("glove", arg)


def available(kind: str) -> Callable[[], str | None]:
    """A ladder availability check: None when default ``kind`` vectors exist, else how to make them."""

    def check() -> str | None:
        try:
            import numba  # noqa: F401
        except ImportError:
            return "needs numba (pip install 'embedstack[fast]')"
        p = default_vectors_path(kind)
        if p.exists():
            return None
        return f"no {kind} vectors at {p}: run `embedstack train {kind} enwiki` (a few minutes on 2 cores)"

    return check
