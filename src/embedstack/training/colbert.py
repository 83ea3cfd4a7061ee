"""Training ColBERT models with the same trainer as bi-encoders.

:class:`ColBERTTrainer` is :class:`~embedstack.training.trainer.SentenceTrainer` with a late-interaction
forward: queries and documents become token matrices
(:meth:`~embedstack.neural.colbert.ColBERT.forward_tokens`), every query is scored against every
document of the batch by MaxSim (:func:`~embedstack.neural.colbert.maxsim_scores`), and
:class:`ColBERTLoss` reads those scores:

* **contrastive** (in-batch + hard negatives): softmax cross-entropy of each query over all documents
  of the batch, its own positive the target; mined negatives (``negative_1..k``) join the pool;
* **distillation**: with a teacher (a cross-encoder), its scores of each row's positive and negatives
  are computed once before training and the loss adds ``KL(softmax(teacher / T_t) ‖ softmax(student))``
  over the row's own candidates (ColBERTv2's recipe; PyLate's ``Distillation`` loss).

Everything else is shared: AdamW with warmup and decay, accumulation, clipping, bf16, length pieces,
evaluation (``retrieval:...`` specs score the model through a multi-vector index) and best-checkpoint
selection, atomic resumable checkpoints, the JSONL log and the loss curve.

Example:
    >>> ColBERTLoss().columns
    ('anchor', 'positive')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "ColBERT training")

from torch import Tensor, nn  # noqa: E402

from embedstack.errors import ConfigError  # noqa: E402
from embedstack.training.trainer import SentenceTrainer  # noqa: E402

__all__ = ["ColBERTTrainer", "ColBERTLoss", "COLBERT_LOSSES", "distill_kl", "teacher_scores"]


class ColBERTLoss(nn.Module):
    """In-batch + hard-negative softmax over MaxSim scores, plus KL to a teacher's scores when given.

    Args:
        temperature: Scores are divided by it before the softmax (MaxSim sums ``query_length`` cosines,
            so 1.0 already spreads them; PyLate's default).
        distill_weight: Weight of the KL term (used only when teacher scores are given).
        contrastive_weight: Weight of the in-batch cross-entropy (0 with a teacher: pure distillation).
        teacher_temperature: The teacher's scores are divided by it before their softmax.
    """

    columns = ("anchor", "positive")
    optional_columns = ("negative",)
    in_batch_negatives = True  # batches are packed without duplicate texts (no false in-batch negatives)

    def __init__(self, temperature: float = 1.0, *, distill_weight: float = 1.0, contrastive_weight: float = 1.0,
                 teacher_temperature: float = 1.0) -> None:
        super().__init__()
        for label, value in (("temperature", temperature), ("teacher_temperature", teacher_temperature)):
            if not value > 0:
                raise ConfigError(f"{label} must be > 0. Got {value!r}.")
        if distill_weight < 0 or contrastive_weight < 0 or distill_weight + contrastive_weight == 0:
            raise ConfigError("distill_weight and contrastive_weight must be >= 0 and not both 0.")
        self.temperature = float(temperature)
        self.distill_weight = float(distill_weight)
        self.contrastive_weight = float(contrastive_weight)
        self.teacher_temperature = float(teacher_temperature)

    def forward(self, scores: Tensor, own: Tensor, teacher: Tensor | None = None) -> Tensor:
        """``scores`` (B, N): every query against every document of the batch, the positives first
        (column ``i`` is row ``i``'s positive); ``own`` (B, 1 + k): the column of each row's positive and
        its negatives; ``teacher`` (B, 1 + k) or None."""
        logits = scores / self.temperature
        loss = logits.new_zeros(())
        if self.contrastive_weight > 0 or teacher is None:
            target = torch.arange(len(scores))
            loss = loss + (self.contrastive_weight if teacher is not None else 1.0) \
                * nn.functional.cross_entropy(logits, target)
        if teacher is not None and self.distill_weight > 0:
            loss = loss + self.distill_weight * distill_kl(torch.gather(scores, 1, own), teacher, self.teacher_temperature)
        return loss


def distill_kl(student: Tensor, teacher: Tensor, teacher_temperature: float = 1.0) -> Tensor:
    """``KL(softmax(teacher / T) ‖ softmax(student))`` over each row's own candidates ``(B, 1 + k)``, batch mean."""
    target = torch.softmax(teacher / teacher_temperature, dim=-1)
    return nn.functional.kl_div(torch.log_softmax(student, dim=-1), target, reduction="batchmean")


def teacher_scores(teacher: Any, data: Any, doc_columns: list[str]) -> Tensor:
    """A reranker's raw scores (``predict(pairs, activation=False)``) of each row's candidates: ``(rows, len(doc_columns))``."""
    anchors = data.column("anchor")
    columns = [data.column(c) for c in doc_columns]
    pairs = [(a, col[r]) for r, a in enumerate(anchors) for col in columns]
    scores = np.asarray(teacher.predict(pairs, activation=False), dtype=np.float32)
    return torch.from_numpy(scores.reshape(len(anchors), len(doc_columns)))


COLBERT_LOSSES = {"contrastive": ColBERTLoss, "distillation": lambda: ColBERTLoss(contrastive_weight=0.0)}


class ColBERTTrainer(SentenceTrainer):
    """Fine-tune a :class:`~embedstack.neural.colbert.ColBERT` (trained in place).

    Args:
        model: The ColBERT (``ColBERT.from_pretrained_encoder(folder)`` starts one from a bi-encoder).
        loss: ``contrastive`` or ``distillation`` (:data:`COLBERT_LOSSES`) or a :class:`ColBERTLoss`.
        data: ``(anchor, positive[, negative_1..k])`` rows.
        teacher: A reranker (``predict(pairs)``, e.g. a :class:`~embedstack.neural.cross_encoder.CrossEncoder`)
            whose scores of each row's positive and negatives the KL term follows; scored once, before
            training. Needs negatives.
        args, evaluator, progress: As :class:`~embedstack.training.trainer.SentenceTrainer`;
            ``args.max_seq_length`` caps the document length in training (the saved model keeps its own).
    """

    def __init__(self, model: Any, loss: nn.Module | str, data: Any, *, teacher: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(model, loss, data, **kwargs)
        if teacher is not None and not self.n_negatives:
            raise ConfigError("distillation from a teacher needs (anchor, positive, negative_1..k) rows: mine hard "
                              "negatives first (hard_negatives='bm25').")
        self.teacher = teacher
        self._teacher_scores: Tensor | None = None

    def _check_model(self, model: Any) -> None:
        from embedstack.neural.colbert import ColBERT

        if not isinstance(model, ColBERT):
            raise ConfigError(f"ColBERTTrainer trains a ColBERT (ColBERT.from_pretrained_encoder(...) or a ColBERT "
                              f"folder); got {type(model).__name__}.")

    def _make_loss(self, name: str) -> nn.Module:
        if name not in COLBERT_LOSSES:
            from embedstack.models import did_you_mean

            raise ConfigError(f"Unknown ColBERT loss {name!r}{did_you_mean(name, list(COLBERT_LOSSES))}; use one of "
                              f"{list(COLBERT_LOSSES)}.", param=("loss", "loss"))
        module: nn.Module = COLBERT_LOSSES[name]()
        return module

    # ------------------------------------------------------------------------------------------- setup
    def _tokenize_columns(self, enc: Any) -> None:
        doc_length = self.args.max_seq_length or enc.document_length
        saved = enc.document_length
        enc.document_length = min(int(doc_length), enc.model.config.max_position_embeddings)
        try:
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
                    ids, masks = enc.tokenize(part, role)
                    cache.update({(role, t): (x, m) for t, x, m in zip(part, ids, masks, strict=True)})
                self._ids[name] = [cache[(role, t)][0] for t in values]
                self._masks[name] = [cache[(role, t)][1] for t in values]
        finally:
            enc.document_length = saved
        self._doc_columns = names[1:]
        self._lengths = np.zeros(len(self.data), dtype=np.int64)
        for ids in self._ids.values():
            self._lengths += np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if self.teacher is not None and self._teacher_scores is None:
            self._teacher_scores = self._score_teacher()

    def _score_teacher(self) -> Tensor:
        return teacher_scores(self.teacher, self.data, self._doc_columns)

    def _named_weights(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {f"model.{k}": p for k, p in self.model.model.named_parameters()}
        out.update({f"projection.{k}": p for k, p in self.model.projection.named_parameters()})
        out.update({f"loss.{k}": p for k, p in self.loss.named_parameters()})
        return out

    def _is_head(self, name: str) -> bool:
        """The token projection is the new head (``TrainingArgs.head_lr_scale``)."""
        return name.startswith(("projection.", "loss."))

    # ----------------------------------------------------------------------------------------- forward
    def _batch_loss(self, rows: np.ndarray) -> Tensor:
        b = len(rows)
        cols = self._doc_columns
        q_ids = [self._ids["anchor"][r] for r in rows]
        q_masks = [self._masks["anchor"][r] for r in rows]
        # positives first (column i = row i's positive), then each row's negatives together
        d_ids = [self._ids["positive"][r] for r in rows] + [self._ids[c][r] for r in rows for c in cols[1:]]
        d_masks = [self._masks["positive"][r] for r in rows] + [self._masks[c][r] for r in rows for c in cols[1:]]
        with self._autocast():
            q, _ = self.model.forward_tokens(q_ids, q_masks, "query", model=self._work,
                                             min_rows=self.args.min_piece_rows)
            d, keep = self.model.forward_tokens(d_ids, d_masks, "document", model=self._work,
                                                min_rows=self.args.min_piece_rows)
        from embedstack.neural.colbert import maxsim_scores

        q_keep = None
        if not self.model.do_query_expansion:
            width = q.shape[1]
            q_keep = torch.from_numpy(np.stack([np.pad(m.astype(bool), (0, width - len(m))) for m in q_masks]))
        scores = maxsim_scores(q.float(), d.float(), keep, q_keep)  # (B, B(1 + k))
        k = len(cols) - 1
        own = torch.cat([torch.arange(b)[:, None], b + torch.arange(b)[:, None] * k + torch.arange(k)[None, :]], dim=1)
        teacher = None if self._teacher_scores is None else self._teacher_scores[torch.from_numpy(np.asarray(rows))]
        return self.loss(scores, own, teacher)

    def _load_best(self, folder: Any) -> None:
        from embedstack.neural.colbert import ColBERT

        best = ColBERT.from_folder(folder, verify=False)
        with torch.no_grad():
            for p, q in zip(self.model.model.parameters(), best.model.parameters(), strict=True):
                p.copy_(q)
            self.model.projection.load_state_dict(best.projection.state_dict())
