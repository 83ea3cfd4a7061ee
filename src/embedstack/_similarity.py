"""``embedstack.similarity(a, b)``: cosine similarity between embeddings, shaped like ``a @ b.T``."""

from __future__ import annotations

from typing import Any

__all__ = ["similarity"]


def similarity(a: Any, b: Any) -> Any:
    """Cosine similarity of every row of ``a`` with every row of ``b``.

    Shapes follow the ``@`` operator: ``(n, d)`` and ``(m, d)`` give an ``(n, m)`` matrix; a 1-D vector
    counts as one row whose axis is dropped from the result, so ``(d,)`` with ``(m, d)`` gives ``(m,)``
    and two ``(d,)`` vectors give a float. Zero vectors have similarity 0 with everything. Sparse rows
    (``scipy.sparse``) are accepted too (densified). The result is float32 (a Python float for two vectors).

    Args:
        a: embeddings, ``(d,)`` or ``(n, d)`` (numpy, lists, torch CPU tensors, scipy.sparse).
        b: embeddings, ``(d,)`` or ``(m, d)``.

    Raises:
        DimensionMismatch: the two sides have different dimensionality.
        InputError: an input is not 1-D or 2-D, or holds NaN/inf.

    Example:
        >>> import embedstack
        >>> embedstack.similarity([[1, 0], [0, 2]], [[3, 0], [1, 1], [0, 0]]).astype(float).round(3).tolist()
        [[1.0, 0.707, 0.0], [0.0, 0.707, 0.0]]
        >>> round(embedstack.similarity([1, 0], [1, 1]), 3)
        0.707
    """
    import numpy as np

    from embedstack.errors import DimensionMismatch, InputError

    def rows(x: Any, name: str) -> tuple[np.ndarray, bool]:
        if hasattr(x, "toarray"):  # scipy.sparse
            x = x.toarray()
        elif hasattr(x, "detach"):  # torch
            x = x.detach().cpu().numpy()
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"similarity: {name} must be embeddings (numbers of one shape), not texts or ragged "
                             "lists; encode the texts first, e.g. embedstack.load(SPEC).encode(texts).") from None
        if arr.ndim not in (1, 2):
            raise InputError(f"similarity: {name} must be a vector (d,) or a matrix (n, d); got shape {arr.shape}.")
        if not np.isfinite(arr).all():
            raise InputError(f"similarity: {name} holds NaN or infinite values.")
        one = arr.ndim == 1
        arr = arr[None, :] if one else arr
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (arr / norms).astype(np.float32), one  # normalised in float64: no overflow at 1e20

    x, a1 = rows(a, "a")
    y, b1 = rows(b, "b")
    if x.shape[1] != y.shape[1]:
        raise DimensionMismatch(f"similarity: a has {x.shape[1]} dimensions but b has {y.shape[1]}; "
                                "compare embeddings of the same model.")
    s = x @ y.T
    if a1 and b1:
        return float(s[0, 0])
    if a1:
        return s[0]
    if b1:
        return s[:, 0]
    return s
