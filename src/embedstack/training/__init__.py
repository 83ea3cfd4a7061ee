"""Training sentence models (needs the ``torch`` extra): losses now; data, mining and the trainer later.

Modules import torch, so nothing here is imported by ``import embedstack``; names below load on first
use (``from embedstack.training import MultipleNegativesRankingLoss``):

* :mod:`~embedstack.training.losses` — contrastive, online contrastive, triplet, MNRL (+ hard
  negatives, symmetric), CoSENT, cosine regression, SBERT NLI softmax, Matryoshka wrapper; and
  :func:`~embedstack.training.losses.check_columns`.
* :mod:`~embedstack.training.cached` — the GradCache variant of MNRL for large batches on CPU.

A loss takes embeddings (tensors) and labels/scores and returns a scalar tensor; its ``columns`` class
attribute names the data columns it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ContrastiveLoss",
    "OnlineContrastiveLoss",
    "TripletLoss",
    "MultipleNegativesRankingLoss",
    "CachedMultipleNegativesRankingLoss",
    "CoSENTLoss",
    "CosineSimilarityLoss",
    "SoftmaxLoss",
    "MatryoshkaLoss",
    "check_columns",
]

_WHERE = {name: "embedstack.training.losses" for name in __all__}
_WHERE["CachedMultipleNegativesRankingLoss"] = "embedstack.training.cached"


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'embedstack.training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
