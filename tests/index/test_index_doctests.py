"""The runnable examples in the index / retrieval docstrings stay correct."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "embedstack.index", "embedstack.index.flat", "embedstack.index.hnsw", "embedstack.index.sparse",
    "embedstack.index.multivector", "embedstack.index.fusion", "embedstack.index.matryoshka",
    "embedstack.index.store", "embedstack.retrieval.pipeline",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
