"""Declarative parameter checks with scikit-learn style messages."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, overload

from embedstack.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["check_int", "check_float", "check_choice", "check_k"]


def _owner(owner: object | str) -> str:
    return owner if isinstance(owner, str) else type(owner).__name__


@overload
def check_int(owner: object | str, name: str, value: Any, *, low: int | None = None,
              high: int | None = None, allow_none: Literal[False] = False) -> int: ...


@overload
def check_int(owner: object | str, name: str, value: Any, *, low: int | None = None,
              high: int | None = None, allow_none: bool) -> int | None: ...


def check_int(owner: object | str, name: str, value: Any, *, low: int | None = None,
              high: int | None = None, allow_none: bool = False) -> int | None:
    """Check that ``value`` is an int in ``[low, high]``; return it."""
    if value is None and allow_none:
        return None
    rng = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    what = f"The {name!r} parameter of {_owner(owner)}"
    if isinstance(value, bool) or not isinstance(value, int | _np_int()):
        raise ConfigError(f"{what} must be an int in {rng}. Got {value!r} instead.", param=(name, what))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{what} must be an int in {rng}. Got {value!r} instead.", param=(name, what))
    return int(value)


def check_float(owner: object | str, name: str, value: Any, *, low: float | None = None,
                high: float | None = None, low_open: bool = False) -> float:
    """Check that ``value`` is a finite real in the given range; return it as float."""
    lo = "(" if low_open else "["
    rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    what = f"The {name!r} parameter of {_owner(owner)}"
    msg = f"{what} must be a float in {rng}. Got {value!r} instead."
    if isinstance(value, bool):
        raise ConfigError(msg, param=(name, what))
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(msg, param=(name, what)) from None
    if math.isnan(v) or (low is not None and (v < low or (low_open and v == low))) or (high is not None and v > high):
        raise ConfigError(msg, param=(name, what))
    return v


def check_choice(owner: object | str, name: str, value: Any, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    opts = list(choices)
    if value not in opts:
        what = f"The {name!r} parameter of {_owner(owner)}"
        raise ConfigError(f"{what} must be one of {opts}. Got {value!r} instead.", param=(name, what))
    return str(value)


def check_k(k: Any) -> int:
    """Check a cut-off / number of results."""
    return int(check_int("search", "k", k, low=1))  # type: ignore[arg-type]


def _np_int() -> type[np.integer[Any]]:
    import numpy as np

    return np.integer
