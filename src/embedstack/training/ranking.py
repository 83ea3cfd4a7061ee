"""What ColBERT and SPLADE training share: (query, positive, negatives) rows scored query × document over the
whole batch, and distillation from a teacher's scores of each row's own candidates.

:class:`RankingTrainer` is :class:`~embedstack.training.trainer.SentenceTrainer` with

* tokenization per role (queries and documents tokenized the way the model reads them, each text once);
* the batch's documents laid out as every row's positive first (column ``i`` is row ``i``'s), then each row's
  negatives together, with :meth:`RankingTrainer._own` giving each row's candidate columns;
* the loss's KL term (:func:`distill_kl`) to an optional teacher's scores, which the base trainer computes once
  before training (:func:`teacher_scores`; a cross-encoder, or a bi-encoder through :class:`BiEncoderTeacher`).

Example:
    >>> RankingTrainer._own(2, 1).tolist()  # row 0: its positive (col 0) and negative (col 2); row 1: cols 1, 3
    [[0, 2], [1, 3]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "ranking model training")

from torch import Tensor, nn  # noqa: E402

from embedstack.errors import ConfigError, ScoreError  # noqa: E402
from embedstack.evaluation.runners import l2_normalize  # noqa: E402
from embedstack.training.trainer import SentenceTrainer  # noqa: E402

__all__ = ["BiEncoderTeacher", "RankingTrainer", "distill_kl", "teacher_scores"]


def distill_kl(student: Tensor, teacher: Tensor, teacher_temperature: float = 1.0) -> Tensor:
    """``KL(softmax(teacher / T) ‖ softmax(student))`` over each row's own candidates ``(B, 1 + k)``, batch mean."""
    target = torch.softmax(teacher / teacher_temperature, dim=-1)
    return nn.functional.kl_div(torch.log_softmax(student, dim=-1), target, reduction="batchmean")


class BiEncoderTeacher:
    """A bi-encoder as a distillation teacher: ``predict(pairs)`` gives ``scale · cos(query, document)``, each
    distinct text encoded once (queries in the query role, documents in the document role).

    ``scale`` is the temperature a contrastive (MNRL) bi-encoder was trained at (20 by default, as
    sentence-transformers' MultipleNegativesRankingLoss): its softmax over a row's candidates is then the
    distribution the bi-encoder learned, which :func:`distill_kl` follows.

    Example:
        >>> class Unit:  # a stand-in encoder: texts to fixed unit vectors
        ...     def encode(self, texts, role="document"):
        ...         return np.array([[2.0, 0.0] if t == "a" else [0.0, 1.0] for t in texts])
        >>> BiEncoderTeacher(Unit(), scale=10.0).predict([("a", "a"), ("a", "b")]).tolist()
        [10.0, 0.0]
    """

    def __init__(self, encoder: Any, scale: float = 20.0) -> None:
        if not callable(getattr(encoder, "encode", None)):
            raise ConfigError(f"a bi-encoder teacher encodes texts; got a {type(encoder).__name__}.")
        if not (isinstance(scale, int | float) and 0 < scale < float("inf")):
            raise ConfigError(f"scale must be a finite number > 0 (20: MNRL's); got {scale!r}.")
        self.encoder, self.scale = encoder, float(scale)
        self.name = f"{getattr(encoder, 'name', type(encoder).__name__)} (bi-encoder, scale {self.scale:g})"

    def predict(self, pairs: Any, *, activation: bool = False, **_: Any) -> np.ndarray:
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        qv, dv = (l2_normalize(np.asarray(self.encoder.encode(texts, role=role), dtype=np.float32))
                  for texts, role in ((queries, "query"), (docs, "document")))
        qi = {t: i for i, t in enumerate(queries)}
        di = {t: i for i, t in enumerate(docs)}
        rows = np.fromiter((qi[q] for q, _ in pairs), dtype=np.int64, count=len(pairs))
        cols = np.fromiter((di[d] for _, d in pairs), dtype=np.int64, count=len(pairs))
        return self.scale * np.einsum("ij,ij->i", qv[rows], dv[cols])


def teacher_scores(teacher: Any, data: Any, doc_columns: list[str]) -> Tensor:
    """A teacher's raw scores (``predict(pairs, activation=False)``: a cross-encoder, or a :class:`BiEncoderTeacher`)
    of each row's candidates: ``(rows, len(doc_columns))``."""
    anchors = data.column("anchor")
    columns = [data.column(c) for c in doc_columns]
    pairs = [(a, col[r]) for r, a in enumerate(anchors) for col in columns]
    scores = np.asarray(teacher.predict(pairs, activation=False), dtype=np.float32)
    if not np.isfinite(scores).all():
        raise ScoreError(f"the teacher {getattr(teacher, 'name', type(teacher).__name__)} gave a non-finite score for "
                         f"{int((~np.isfinite(scores)).sum())} of {len(scores)} pair(s): its weights are broken or its "
                         "precision overflowed (load it with precision=fp32).")
    return torch.from_numpy(scores.reshape(len(anchors), len(doc_columns)))


class RankingTrainer(SentenceTrainer):
    """The shared part of :class:`~embedstack.training.colbert.ColBERTTrainer` and
    :class:`~embedstack.training.splade.SpladeTrainer` (see the module docstring).

    Subclasses give :meth:`_tokenize_texts` (``(ids, masks)`` of texts of one role) and the forward.
    """

    takes_teacher = True

    def _tokenize_texts(self, enc: Any, texts: list[str], role: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        raise NotImplementedError

    def _tokenize_columns(self, enc: Any) -> None:
        self._ids: dict[str, list[np.ndarray]] = {}
        self._masks: dict[str, list[np.ndarray]] = {}
        names = ["anchor", "positive", *[f"negative_{i + 1}" for i in range(self.n_negatives)]]
        cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for name in names:
            role = "query" if name == "anchor" else "document"
            values = self.data.column(name)
            todo = list(dict.fromkeys(t for t in values if (role, t) not in cache))
            for i in range(0, len(todo), 8192):
                part = todo[i:i + 8192]
                ids, masks = self._tokenize_texts(enc, part, role)
                cache.update({(role, t): (x, m) for t, x, m in zip(part, ids, masks, strict=True)})
            self._ids[name] = [cache[(role, t)][0] for t in values]
            self._masks[name] = [cache[(role, t)][1] for t in values]
        self._doc_columns = names[1:]
        self._lengths = np.zeros(len(self.data), dtype=np.int64)
        for ids in self._ids.values():
            self._lengths += np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))

    def _batch_texts(self, rows: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray],
                                                      list[np.ndarray]]:
        """Query ids and masks, then document ids and masks: the positives first, then each row's negatives."""
        q_ids = [self._ids["anchor"][r] for r in rows]
        q_masks = [self._masks["anchor"][r] for r in rows]
        cols = self._doc_columns[1:]
        d_ids = [self._ids["positive"][r] for r in rows] + [self._ids[c][r] for r in rows for c in cols]
        d_masks = [self._masks["positive"][r] for r in rows] + [self._masks[c][r] for r in rows for c in cols]
        return q_ids, q_masks, d_ids, d_masks

    @staticmethod
    def _own(b: int, k: int) -> Tensor:
        """``(b, 1 + k)``: the document columns of each row's positive and its ``k`` negatives."""
        return torch.cat([torch.arange(b)[:, None], b + torch.arange(b)[:, None] * k + torch.arange(k)[None, :]], dim=1)

