"""A closed name -> class table used by save/load: no dotted-path imports, no pickle."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, TypeVar

from embedstack.errors import FormatError

__all__ = ["register", "lookup", "load_component", "registered"]

T = TypeVar("T", bound=type)

_TABLE: dict[str, type] = {}

# Types that live in modules not imported by default: type name -> module that registers it.
_LAZY: dict[str, str] = {
    "BagOfWords": "embedstack.count",
    "TfIdf": "embedstack.count",
    "BM25": "embedstack.count",
    "LSA": "embedstack.count",
    "PPMI": "embedstack.count",
    "Vocabulary": "embedstack.text",
    "KeyedVectors": "embedstack.static.keyedvectors",
    "FastTextKeyedVectors": "embedstack.static.keyedvectors",
    "FlatIndex": "embedstack.index",
    "HNSWIndex": "embedstack.index",
    "SparseIndex": "embedstack.index",
    "MultiVectorIndex": "embedstack.index",
    "MatryoshkaIndex": "embedstack.index",
    "QdrantIndex": "embedstack.scale.qdrant",
    "Elmo": "embedstack.neural.elmo",
    "WhitenedEncoder": "embedstack.geometry.whitening",
}


def register(name: str, module: str | None = None) -> Any:
    """Class decorator adding ``cls`` to the table under ``name`` (sets ``cls.type_name``)."""

    def deco(cls: T) -> T:
        if name in _TABLE and _TABLE[name] is not cls:
            raise RuntimeError(f"component type {name!r} registered twice")
        cls.type_name = name  # type: ignore[attr-defined]
        _TABLE[name] = cls
        if module:
            _LAZY.setdefault(name, module)
        return cls

    return deco


def declare(name: str, module: str) -> None:
    """Declare where a type lives so it can be loaded without importing its module first."""
    _LAZY.setdefault(name, module)


def lookup(name: str) -> type:
    """Return the class registered as ``name``, importing its module on first use."""
    if name not in _TABLE and name in _LAZY:
        importlib.import_module(_LAZY[name])
    try:
        return _TABLE[name]
    except KeyError:
        known = sorted(set(_TABLE) | set(_LAZY))
        raise FormatError(f"unknown component type {name!r}; known types: {known}.") from None


def registered() -> list[str]:
    """Names of every known component type."""
    return sorted(set(_TABLE) | set(_LAZY))


def load_component(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load any saved component folder by reading its manifest's type."""
    from embedstack.io import read_manifest

    manifest = read_manifest(Path(path))
    cls = lookup(manifest["type"])
    return cls.load(path, **kwargs)  # type: ignore[attr-defined]
