"""Checks for optional dependencies: a missing extra raises MissingExtra naming the pip command."""

from __future__ import annotations

import importlib
from types import ModuleType

from embedstack.errors import MissingExtra

__all__ = ["require"]


def require(module: str, extra: str, feature: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` telling which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised with monkeypatch in tests
        raise MissingExtra(module.split(".")[0], extra, feature) from exc
