"""The runnable examples in the data/text/io docstrings stay correct."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "embedstack.data", "embedstack.data._retrieval", "embedstack.data._pairs", "embedstack.data._corpus",
    "embedstack.data._classification", "embedstack.data._sample", "embedstack.data._registry", "embedstack.data._tokens",
    "embedstack.text.vocab", "embedstack.text.tokenize", "embedstack.io.atomic",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
