"""One exception hierarchy for every user-facing failure.

Every message names the problem *and* the fix. Classes also derive from the matching builtin
(``ValueError``, ``KeyError``, ``ImportError`` ...) so ordinary ``except`` clauses keep working.
"""

from __future__ import annotations

__all__ = [
    "EmbedstackError",
    "ModelNotFoundError",
    "TrainingDiverged",
    "ConfigError",
    "InputError",
    "ScoreError",
    "NotFittedError",
    "FormatError",
    "DimensionMismatch",
    "ModelMismatch",
    "MissingExtra",
    "DatasetError",
    "UnknownKeyError",
    "IndexStateError",
    "NotFoundError",
    "OutputExistsError",
    "OutputError",
    "NotDenseError",
    "ClusterError",
]


class EmbedstackError(Exception):
    """Base class of every error raised on purpose by embedstack.

    ``fix`` names the options that fix the problem, as ``{python_keyword: value}``. They are shown
    the way the reader can use them: ``Pass split='train'.`` from Python; the command line shows
    ``Pass --split train.`` when the running command has that flag and leaves the hint out when it
    has not (see :meth:`message_for`).

    Example:
        >>> err = EmbedstackError("no qrels for split 'test'.", fix={"split": "train"})
        >>> str(err)
        "no qrels for split 'test'. Pass split='train'."
        >>> err.message_for({"split": "--split"})
        "no qrels for split 'test'. Pass --split train."
        >>> err.message_for({})
        "no qrels for split 'test'."

    ``param`` names the keyword a validation message is about ("The 'k' parameter of search ..."); the
    command line shows the flag instead of that phrase:

        >>> ConfigError("The 'k' parameter of search must be an int in [1, inf]. Got 0 instead.",
        ...             param=("k", "The 'k' parameter of search")).message_for({"k": "--k"})
        '--k must be an int in [1, inf]. Got 0 instead.'
    """

    def __init__(self, *args: object, fix: dict[str, object] | None = None,
                 param: tuple[str, str] | None = None) -> None:
        super().__init__(*args)
        self.fix: dict[str, object] = dict(fix or {})
        self.param = param  # (python keyword, the phrase naming it in the message)

    def _base(self) -> str:
        return super().__str__()

    def __str__(self) -> str:
        return self.message_for(None)

    def message_for(self, flags: dict[str, str] | None) -> str:
        """The message with its fix written as Python keywords (``flags`` None) or as the given CLI flags.

        Args:
            flags: Python keyword → command-line flag of the running command (``{"split": "--split"}``);
                fixes whose keyword is not in it are left out.
        """
        base = self._base()
        if flags is not None and self.param is not None and self.param[0] in flags:
            base = base.replace(self.param[1], flags[self.param[0]], 1)
        if not self.fix:
            return base
        if flags is None:
            parts = [f"{k}={v!r}" for k, v in self.fix.items()]
        else:
            parts = [f"{flags[k]} {v}" for k, v in self.fix.items() if k in flags]
        return f"{base} Pass {' and '.join(parts)}." if parts else base


class ConfigError(EmbedstackError, ValueError):
    """A parameter, option or model spec is invalid."""


class InputError(EmbedstackError, ValueError):
    """The data handed to a function cannot be used (empty corpus, NaN vectors, k <= 0 ...)."""


class ScoreError(EmbedstackError, ValueError):
    """A model produced a non-finite score (the weights or the input are broken): not a ranking."""


class NotFittedError(EmbedstackError, AttributeError):
    """A model was used before ``fit`` was called."""

    def __init__(self, obj: object, how: str | None = None) -> None:
        name = type(obj).__name__
        super().__init__(f"This {name} instance is not fitted yet. "
                         + (how or "Call 'fit' with a corpus before using it."))


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

    def _base(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class NotFoundError(EmbedstackError, LookupError):
    """A named thing does not exist: a served model, an index or alias, a document id (HTTP 404)."""


class TrainingDiverged(EmbedstackError, FloatingPointError):
    """Training produced non-finite weights (NaN or inf); nothing was kept or saved."""


class IndexStateError(EmbedstackError, RuntimeError):
    """An index operation is not possible in the index's current state (unknown id, duplicate id ...)."""


class OutputExistsError(EmbedstackError, FileExistsError):
    """An output path holds something a save would destroy (not an embedstack artifact of the same kind).

    The hint depends on the reader: Python gets ``force=True``, the command line its ``--force`` flag
    (left out, with only "choose another path", where the command has none or forcing cannot help).
    """

    def __init__(self, message: str, *, can_force: bool = True) -> None:
        super().__init__(message)
        self.can_force = can_force

    def _base(self) -> str:
        return str(self.args[0])

    def message_for(self, flags: dict[str, str] | None) -> str:
        base = self._base()
        if not self.can_force:
            return base
        if flags is None:
            return f"{base} Choose another path, or pass force=True to replace it."
        if "force" in flags:
            return f"{base} Choose another path, or pass {flags['force']} to replace it."
        return f"{base} Choose another path."

    def __str__(self) -> str:
        return self.message_for(None)


class OutputError(EmbedstackError, OSError):
    """An output path cannot be written: its folder cannot be created, no permission, a read-only file system."""


class NotDenseError(EmbedstackError, AttributeError):
    """A dense-only call (``encode``) on a sparse model; an AttributeError, so ``hasattr`` stays False."""


class ClusterError(EmbedstackError, ConnectionError):
    """A Ray cluster or an external vector database does not answer, or lost the job."""
