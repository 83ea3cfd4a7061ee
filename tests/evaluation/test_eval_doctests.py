"""The examples in the evaluation modules' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["embedstack.evaluation", "embedstack.evaluation.metrics",
                                  "embedstack.evaluation.words", "embedstack.evaluation.ladder",
                                  "embedstack.evaluation.runners", "embedstack.evaluation.probes",
                                  "embedstack.evaluation.layers"])
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
