"""One exception hierarchy for every user-facing failure.

Every message names the problem *and* the fix. Classes also derive from the matching builtin
(``ValueError``, ``KeyError``, ``ImportError`` ...) so ordinary ``except`` clauses keep working.
"""

from __future__ import annotations

__all__ = [
    "EmbedstackError",
    "ModelNotFoundError",
    "ConfigError",
    "InputError",
    "NotFittedError",
    "FormatError",
    "DimensionMismatch",
    "ModelMismatch",
    "MissingExtra",
    "DatasetError",
    "UnknownKeyError",
    "IndexStateError",
]


class EmbedstackError(Exception):
    """Base class of every error raised on purpose by embedstack."""


class ConfigError(EmbedstackError, ValueError):
    """A parameter, option or model spec is invalid."""


class InputError(EmbedstackError, ValueError):
    """The data handed to a function cannot be used (empty corpus, NaN vectors, k <= 0 ...)."""


class NotFittedError(EmbedstackError, AttributeError):
    """A model was used before ``fit`` was called."""

    def __init__(self, obj: object) -> None:
        name = type(obj).__name__
        super().__init__(f"This {name} instance is not fitted yet. Call 'fit' with a corpus before using it.")


class FormatError(EmbedstackError, ValueError):
    """A file on disk is malformed, truncated or of an unsupported format version."""


class DimensionMismatch(EmbedstackError, ValueError):
    """Vectors of the wrong dimensionality were given."""


class ModelMismatch(EmbedstackError, ValueError):
    """An index is searched with an encoder other than the one that built it."""


class MissingExtra(EmbedstackError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, feature: str = "") -> None:
        what = f" for {feature}" if feature else ""
        super().__init__(
            f"The package {package!r} is required{what} but is not installed. "
            f"Install it with: pip install 'embedstack[{extra}]'"
        )
        self.package = package
        self.extra = extra


class DatasetError(EmbedstackError, FileNotFoundError):
    """A dataset cannot be found locally, downloaded, or parsed."""


class ModelNotFoundError(DatasetError):
    """A model name or folder cannot be resolved: not a folder, not cached, not packaged, not downloadable.

    A :class:`DatasetError` too (models and datasets share the local → cache → download path), so
    handlers written for either keep working.
    """


class UnknownKeyError(EmbedstackError, KeyError):
    """A word (or id) is not in the vocabulary."""

    def __init__(self, key: object, hint: str = "") -> None:
        msg = f"{key!r} is not in the vocabulary."
        if hint:
            msg += " " + hint
        super().__init__(msg)
        self.key = key

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class IndexStateError(EmbedstackError, RuntimeError):
    """An index operation is not possible in the index's current state (unknown id, duplicate id ...)."""
