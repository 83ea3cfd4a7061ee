"""Imported once by the fork server of the corpus worker processes (see :mod:`._corpus_parallel`).

It loads what every worker needs (numpy, the analyzer, and numba's compiled tokenizer when it is
installed: about 1 s of start-up), so the workers forked from the server start warm.
"""

from __future__ import annotations

import contextlib

from embedstack.static import _corpus, _corpus_parallel  # noqa: F401
from embedstack.text import Analyzer

with contextlib.suppress(Exception):  # a worker that finds nothing warm still works, only slower to start
    _corpus._id_mapper(Analyzer()).text("warm up, café")
