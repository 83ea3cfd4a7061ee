"""Training sentence models (needs the ``torch`` extra): losses, data, hard-negative mining, the trainer.

Modules import torch, so nothing here is imported by ``import embedstack``; names below load on first
use (``from embedstack.training import MultipleNegativesRankingLoss``):

* :mod:`~embedstack.training.losses` — contrastive, online contrastive, triplet, MNRL (+ hard
  negatives, symmetric), CoSENT, cosine regression, SBERT NLI softmax, Matryoshka wrapper; and
  :func:`~embedstack.training.losses.check_columns`.
* :mod:`~embedstack.training.cached` — the GradCache variant of MNRL for large batches on CPU.
* :mod:`~embedstack.training.data` — pair/triplet/scored-pair data from JSONL/CSV/TSV, and the
  no-duplicates batch sampler.
* :mod:`~embedstack.training.mining` — hard negatives from BM25, a dense model, or both.
* :mod:`~embedstack.training.trainer` — :class:`SentenceTrainer`, :class:`TrainingArgs`, checkpoints
  (:mod:`~embedstack.training.checkpoint`) and evaluators (:mod:`~embedstack.training.evaluators`).

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
    "TrainingData",
    "load_training_data",
    "iter_training_rows",
    "NoDuplicatesBatchSampler",
    "SentenceTrainer",
    "TrainingArgs",
    "TrainResult",
    "TrainingError",
    "make_loss",
    "STSEvaluator",
    "RetrievalEvaluator",
    "evaluator_from_spec",
]

_WHERE = {name: "embedstack.training.losses" for name in __all__[:10]}
_WHERE["CachedMultipleNegativesRankingLoss"] = "embedstack.training.cached"
_WHERE.update({n: "embedstack.training.data" for n in ("TrainingData", "load_training_data", "iter_training_rows",
                                                        "NoDuplicatesBatchSampler")})
_WHERE.update({n: "embedstack.training.trainer" for n in ("SentenceTrainer", "TrainingArgs", "TrainResult",
                                                           "TrainingError", "make_loss")})
_WHERE.update({n: "embedstack.training.evaluators" for n in ("STSEvaluator", "RetrievalEvaluator",
                                                              "evaluator_from_spec")})


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'embedstack.training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
