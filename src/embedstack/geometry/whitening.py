"""Whitening (Su et al. 2021, "Whitening sentence representations"): ``x ↦ (x − μ) W``, ``W = U Λ^{-1/2}``.

Fit the mean ``μ`` and covariance ``Σ = U Λ Uᵀ`` of a corpus' vectors; the whitened vectors have zero
mean and identity covariance, so cosine stops being dominated by the few directions every vector
shares (the anisotropy of :mod:`embedstack.geometry.anisotropy`). Keeping the first ``k`` columns of
``W`` also reduces the dimension (their BERT-whitening-256).

* :class:`Whitening` — the numpy transform (fit on vectors).
* :class:`WhitenedEncoder` — wraps any dense encoder SPEC; ``fit(texts)`` encodes the texts and fits the
  transform; a saved component (``manifest.json`` + arrays) and the SPEC ``whiten:[K:]BASE``, e.g.
  ``whiten:256:all-MiniLM-L6-v2`` or ``whiten:lsa:256``. Like LSA it is fitted on the corpus it is
  evaluated on (``embedstack eval`` and the ladder do that; no labels are used).

Example:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((500, 8)) @ rng.standard_normal((8, 8)) + 5.0
    >>> z = Whitening().fit(x).transform(x)
    >>> bool(np.allclose(z.mean(0), 0, atol=1e-4)), bool(np.allclose(np.cov(z.T, bias=True), np.eye(8), atol=1e-3))
    (True, True)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embedstack._validation import check_int
from embedstack.base import Component, Role, one_text_one_vector
from embedstack.errors import ConfigError, DimensionMismatch, FormatError, NotFittedError
from embedstack.geometry._checks import as_matrix
from embedstack.registry import register

__all__ = ["Whitening", "WhitenedEncoder", "whiten_spec"]

_BASE_DIR = "base"


class Whitening:
    """Mean-centre and decorrelate vectors, keeping the top ``k`` principal directions (all when ``k`` is None).

    Args:
        k: output dimension (``1 <= k <= dim``); None keeps every direction.
        eps: added to the eigenvalues before ``Λ^{-1/2}`` (directions with no variance stay finite).
    """

    def __init__(self, k: int | None = None, *, eps: float = 1e-6) -> None:
        self.k = k
        self.eps = eps

    def fit(self, x: Any) -> Whitening:
        """Learn ``mean_`` (dim,) and ``matrix_`` (dim, k) from ``x`` ``(n, dim)``; returns self."""
        m = as_matrix(x, "the vectors to fit whitening on", min_rows=2)
        n, d = m.shape
        k = d if self.k is None else check_int(self, "k", self.k, low=1)
        if k > d:
            raise ConfigError(f"whitening keeps k={k} directions but the vectors have only {d} dimensions; "
                              f"use k <= {d}.")
        if n <= k:
            raise ConfigError(f"whitening to k={k} dimensions needs more than {k} vectors to fit on; got {n}. "
                              "Fit on more texts or lower k.")
        mu = m.mean(axis=0)
        c = m - mu
        evals, evecs = np.linalg.eigh(c.T @ c / n)  # ascending
        order = np.argsort(evals)[::-1][:k]
        lam = np.clip(evals[order], 0.0, None)
        self.mean_ = mu.astype(np.float32)
        self.matrix_ = (evecs[:, order] / np.sqrt(lam + self.eps)).astype(np.float32)  # (d, k)
        self.eigenvalues_ = lam.astype(np.float32)
        return self

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "matrix_", None) is not None

    def transform(self, x: Any) -> np.ndarray:
        """``(x − mean_) @ matrix_`` as float32 ``(n, k)``."""
        if not self.is_fitted:
            raise NotFittedError(self)
        m = np.asarray(x, dtype=np.float32)
        if m.ndim != 2 or m.shape[1] != self.mean_.shape[0]:
            raise DimensionMismatch(f"whitening was fitted on {self.mean_.shape[0]}-d vectors; got shape {m.shape}.")
        return (m - self.mean_) @ self.matrix_

    def __repr__(self) -> str:
        return f"Whitening(k={self.k!r})"


def _split_whiten_arg(arg: str) -> tuple[int | None, str]:
    head, sep, rest = arg.partition(":")
    if sep and head.strip().isdigit():
        return int(head), rest
    return None, arg


def whiten_spec(arg: str | None) -> WhitenedEncoder:
    """The SPEC factory: ``whiten:[K:]BASE`` → an unfitted :class:`WhitenedEncoder`."""
    if not arg:
        raise ConfigError("whiten needs a base model: whiten:[K:]BASE, e.g. 'whiten:256:all-MiniLM-L6-v2' or "
                          "'whiten:lsa:256'.")
    k, base = _split_whiten_arg(arg)
    if not base.strip():
        raise ConfigError(f"whiten:{arg}: the base model SPEC after the dimension is empty; e.g. "
                          "'whiten:256:all-MiniLM-L6-v2'.")
    return WhitenedEncoder(base, k=k)


@register("WhitenedEncoder")
class WhitenedEncoder(Component):
    """A dense encoder followed by whitening fitted on a corpus (``DenseEncoder``, needs ``fit``).

    Args:
        base: the wrapped encoder's SPEC (``all-MiniLM-L6-v2``, ``lsa:256``, ``word2vec:PATH`` ...); it is
            resolved when first used, and stored by name when saved.
        k: output dimension (None: the base encoder's).
        normalize: L2-normalise the whitened vectors (Su et al. compare them by cosine).
        batch_size: encoder batch size while fitting.
        encoder: an already-built base encoder for ``base`` (saves resolving it again).

    Example:
        >>> enc = WhitenedEncoder("lsa:4", k=2).fit(["cats purr", "dogs bark", "cats and dogs",
        ...                                          "a cat purrs", "the dog barks", "birds sing"])
        >>> enc.encode(["cats"]).shape
        (1, 2)
    """

    requires_fit: ClassVar[bool] = True

    def __init__(self, base: str, *, k: int | None = None, normalize: bool = True, batch_size: int = 64,
                 encoder: Any = None) -> None:
        if not isinstance(base, str) or not base.strip():
            raise ConfigError("WhitenedEncoder needs the base encoder's SPEC string (e.g. 'all-MiniLM-L6-v2').")
        self.base = base
        self.k = k
        self.normalize = normalize
        self.batch_size = batch_size
        self._encoder = encoder

    @property
    def name(self) -> str:
        return f"whiten:{'' if self.k is None else f'{self.k}:'}{self.base}"

    @property
    def encoder(self) -> Any:
        """The wrapped base encoder (resolved from its SPEC on first use)."""
        if self._encoder is None:
            from embedstack.models import resolve

            enc = resolve(self.base)
            if not callable(getattr(enc, "encode", None)) or callable(getattr(enc, "encode_sparse", None)):
                raise ConfigError(f"whiten:{self.base}: whitening needs a dense encoder (vectors of a fixed, modest "
                                  f"dimension); {type(enc).__name__} is sparse. Use lsa:256 or a transformer instead.")
            self._encoder = enc
        return self._encoder

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "whitening_", None) is not None

    @property
    def dim(self) -> int:
        if self.is_fitted:
            return int(self.whitening_.matrix_.shape[1])
        return int(self.k) if self.k is not None else int(self.encoder.dim)

    def fit(self, texts: Sequence[str], y: Any = None) -> WhitenedEncoder:
        """Fit the base encoder if it needs it, encode ``texts``, fit the whitening; returns self."""
        from embedstack.evaluation.runners import encode_dense, fit_if_needed

        texts = list(texts)
        enc = self.encoder
        fit_if_needed(enc, texts)
        vectors = encode_dense(enc, texts, batch_size=self.batch_size)
        self.whitening_ = Whitening(self.k).fit(vectors)
        return self

    @one_text_one_vector
    def encode(self, texts: Sequence[str], *, role: Role = "document", batch_size: int = 64) -> np.ndarray:
        """float32 ``(len(texts), k)`` whitened vectors (unit length when ``normalize``)."""
        if not self.is_fitted:
            raise NotFittedError(self, "fit it on a corpus first: WhitenedEncoder(...).fit(texts)")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        z = self.whitening_.transform(self.encoder.encode(texts, role=role, batch_size=batch_size))
        if self.normalize:
            norms = np.linalg.norm(z, axis=1, keepdims=True)
            z = z / np.where(norms > 0, norms, 1.0)
        return z.astype(np.float32, copy=False)

    # ------------------------------------------------------------------ persistence
    def get_config(self) -> dict[str, Any]:
        return {"base": self.base, "k": self.k, "normalize": self.normalize, "batch_size": self.batch_size}

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if not self.is_fitted:
            raise NotFittedError(self, "fit it before saving")
        w = self.whitening_
        return {"mean": w.mean_, "matrix": w.matrix_, "eigenvalues": w.eigenvalues_}, {}

    def _fitted_base(self) -> Any:
        """The base encoder when it was fitted here (LSA ...): saved inside the folder, since its SPEC alone
        would come back unfitted."""
        enc = self._encoder
        return enc if enc is not None and getattr(enc, "requires_fit", False) else None

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Save atomically (a fitted base encoder goes into ``base/`` inside the folder, checksummed alike)."""
        from embedstack.io import atomic_dir, save_arrays, write_manifest

        arrays, state = self._state()
        base = self._fitted_base()
        with atomic_dir(path, kind=self.type_name, force=force) as tmp:
            save_arrays(tmp / "arrays.safetensors", arrays)
            if base is not None:
                if not callable(getattr(base, "save", None)):
                    raise ConfigError(f"whiten:{self.base}: the fitted base {type(base).__name__} cannot be saved.")
                base.save(tmp / _BASE_DIR)
            write_manifest(tmp, self.type_name, self.get_config(), state={**state, "base_saved": base is not None})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = False, verify: bool | None = None) -> WhitenedEncoder:
        obj = super().load(path, mmap=mmap, verify=verify)
        assert isinstance(obj, WhitenedEncoder)
        if (Path(path) / _BASE_DIR).is_dir():
            from embedstack.registry import load_component

            obj._encoder = load_component(Path(path) / _BASE_DIR, verify=verify)
        return obj

    def _set_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        try:
            mean, matrix, evals = arrays["mean"], arrays["matrix"], arrays["eigenvalues"]
        except KeyError as exc:
            raise FormatError(f"a WhitenedEncoder folder lacks the array {exc.args[0]!r}.") from None
        if matrix.ndim != 2 or mean.shape != (matrix.shape[0],):
            raise FormatError(f"WhitenedEncoder arrays disagree: mean {mean.shape}, matrix {matrix.shape}.")
        w = Whitening(self.k)
        w.mean_, w.matrix_, w.eigenvalues_ = np.asarray(mean), np.asarray(matrix), np.asarray(evals)
        self.whitening_ = w

    def __repr__(self) -> str:
        return f"WhitenedEncoder(base={self.base!r}, k={self.k!r})"
