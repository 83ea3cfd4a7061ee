"""errors.py, registry.py, _validation.py, _extras.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedstack import errors as E
from embedstack._extras import require
from embedstack._validation import check_choice, check_float, check_int, check_k
from embedstack.base import Component, check_is_fitted
from embedstack.registry import declare, load_component, lookup, register, registered


def test_hierarchy_and_builtin_bases() -> None:
    for cls in (E.ConfigError, E.InputError, E.NotFittedError, E.FormatError, E.DimensionMismatch,
                E.ModelMismatch, E.MissingExtra, E.DatasetError, E.UnknownKeyError, E.IndexStateError):
        assert issubclass(cls, E.EmbedstackError)
    assert issubclass(E.ConfigError, ValueError) and issubclass(E.DatasetError, FileNotFoundError)
    assert issubclass(E.MissingExtra, ImportError) and issubclass(E.UnknownKeyError, KeyError)
    assert issubclass(E.NotFittedError, AttributeError)
    assert set(E.__all__) == {n for n in dir(E) if isinstance(getattr(E, n), type)
                              and issubclass(getattr(E, n), E.EmbedstackError)}


def test_messages_name_problem_and_fix() -> None:
    class Model:
        pass

    assert "This Model instance is not fitted yet. Call 'fit'" in str(E.NotFittedError(Model()))
    m = E.MissingExtra("torch", "torch", "transformers")
    assert "pip install 'embedstack[torch]'" in str(m) and m.package == "torch" and m.extra == "torch"
    k = E.UnknownKeyError("zebra", "Check the spelling.")
    assert str(k) == "'zebra' is not in the vocabulary. Check the spelling." and k.key == "zebra"


def test_require() -> None:
    assert require("json", "core").__name__ == "json"
    with pytest.raises(E.MissingExtra, match=r"pip install 'embedstack\[torch\]'"):
        require("no_such_module_xyz", "torch", "neural encoders")


def test_check_int() -> None:
    assert check_int("M", "n", 3, low=1) == 3
    assert check_int("M", "n", np.int64(4), low=1) == 4
    assert check_int("M", "n", None, allow_none=True) is None
    with pytest.raises(E.ConfigError, match=r"The 'n' parameter of M must be an int in \[1, inf\]. Got 0 instead."):
        check_int("M", "n", 0, low=1)
    for bad in (True, 2.0, "3", None):
        with pytest.raises(E.ConfigError):
            check_int("M", "n", bad, low=1)
    with pytest.raises(E.ConfigError, match=r"\[-inf, 5\]"):
        check_int(object(), "n", 6, high=5)


def test_check_float() -> None:
    assert check_float("BM25", "k1", 1, low=0.0) == 1.0
    with pytest.raises(E.ConfigError, match=r"The 'k1' parameter of BM25 must be a float in \[0.0, inf\]. Got -1"):
        check_float("BM25", "k1", -1, low=0.0)
    with pytest.raises(E.ConfigError, match=r"\(0.0, 1.0\]"):
        check_float("M", "b", 0.0, low=0.0, high=1.0, low_open=True)
    for bad in (float("nan"), "x", None, True):
        with pytest.raises(E.ConfigError):
            check_float("M", "x", bad)


def test_check_choice_and_k() -> None:
    assert check_choice("M", "metric", "cosine", ["cosine", "dot"]) == "cosine"
    with pytest.raises(E.ConfigError, match=r"must be one of \['cosine', 'dot'\]. Got 'l1' instead"):
        check_choice("M", "metric", "l1", ["cosine", "dot"])
    assert check_k(5) == 5
    for bad in (0, -1, 1.5):
        with pytest.raises(E.ConfigError, match="'k'"):
            check_k(bad)


class _Thing(Component):
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def get_config(self) -> dict:
        return {"scale": self.scale}

    def fit(self, x: np.ndarray) -> _Thing:
        self.w_ = np.asarray(x, dtype=np.float32) * self.scale
        return self

    def _state(self):  # type: ignore[no-untyped-def]
        check_is_fitted(self, "w_")
        return {"w": self.w_}, {"n": len(self.w_)}

    def _set_state(self, arrays, state):  # type: ignore[no-untyped-def]
        self.w_ = arrays["w"]
        assert state["n"] == len(self.w_)


@pytest.fixture
def thing(monkeypatch: pytest.MonkeyPatch) -> type[_Thing]:
    """Register _Thing in a private copy of the registry tables (undone after the test)."""
    from embedstack import registry

    monkeypatch.setattr(registry, "_TABLE", dict(registry._TABLE))
    monkeypatch.setattr(registry, "_LAZY", dict(registry._LAZY))
    return register("_TestThing")(_Thing)


def test_registry_roundtrip(tmp_path: Path, thing: type[_Thing]) -> None:
    assert lookup("_TestThing") is _Thing and _Thing.type_name == "_TestThing"
    assert "_TestThing" in registered() and "Vocabulary" in registered()
    _Thing(2.0).fit(np.arange(3)).save(tmp_path / "t")
    t = load_component(tmp_path / "t")
    assert isinstance(t, _Thing) and t.scale == 2.0 and t.w_.tolist() == [0.0, 2.0, 4.0]
    t2 = load_component(tmp_path / "t", mmap=True)
    assert t2.w_.tolist() == [0.0, 2.0, 4.0]
    with pytest.raises(E.NotFittedError):
        _Thing().save(tmp_path / "u")
    assert not (tmp_path / "u").exists()


def test_registry_errors(tmp_path: Path, thing: type[_Thing]) -> None:
    with pytest.raises(E.FormatError, match=r"unknown component type 'Nope'; known types: \["):
        lookup("Nope")
    with pytest.raises(RuntimeError, match="registered twice"):
        register("_TestThing")(type("Other", (), {}))
    declare("_Lazy", "json")
    with pytest.raises(E.FormatError, match="unknown component type '_Lazy'"):
        lookup("_Lazy")  # the module imports fine but never registers that name
    from embedstack.io import write_manifest

    (tmp_path / "x").mkdir()
    write_manifest(tmp_path / "x", "Nope", {})
    with pytest.raises(E.FormatError, match="unknown component type 'Nope'"):
        load_component(tmp_path / "x")


def test_lazy_lookup_imports_module() -> None:
    assert lookup("Vocabulary").__name__ == "Vocabulary"
