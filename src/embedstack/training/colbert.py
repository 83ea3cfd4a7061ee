"""Training ColBERT models with the same trainer as bi-encoders.

:class:`ColBERTTrainer` is :class:`~embedstack.training.trainer.SentenceTrainer` with a late-interaction
forward: queries and documents become token matrices
(:meth:`~embedstack.neural.colbert.ColBERT.forward_tokens`), every query is scored against every
document of the batch by MaxSim (:func:`~embedstack.neural.colbert.maxsim_scores`), and
:class:`ColBERTLoss` reads those scores:

* **contrastive** (in-batch + hard negatives): softmax cross-entropy of each query over all documents
  of the batch, its own positive the target; mined negatives (``negative_1..k``) join the pool;
* **distillation**: with a teacher (a cross-encoder, or a bi-encoder), its scores of each row's positive and negatives
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
from embedstack.training.ranking import RankingTrainer, distill_kl  # noqa: E402

__all__ = ["ColBERTTrainer", "ColBERTLoss", "COLBERT_LOSSES"]


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


COLBERT_LOSSES = {"contrastive": ColBERTLoss, "distillation": lambda: ColBERTLoss(contrastive_weight=0.0)}


class ColBERTTrainer(RankingTrainer):
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

    def _tokenize_texts(self, enc: Any, texts: list[str], role: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if role == "query" or self.args.max_seq_length is None:
            return enc.tokenize(texts, role)
        saved = enc.document_length  # training may cut documents shorter; the saved model keeps its own length
        enc.document_length = min(int(self.args.max_seq_length), enc.model.config.max_position_embeddings)
        try:
            return enc.tokenize(texts, role)
        finally:
            enc.document_length = saved

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
        from embedstack.neural.colbert import maxsim_scores

        q_ids, q_masks, d_ids, d_masks = self._batch_texts(rows)
        with self._autocast():
            q, _ = self.model.forward_tokens(q_ids, q_masks, "query", model=self._work,
                                             min_rows=self.args.min_piece_rows)
            d, keep = self.model.forward_tokens(d_ids, d_masks, "document", model=self._work,
                                                min_rows=self.args.min_piece_rows)
        q_keep = None
        if not self.model.do_query_expansion:
            width = q.shape[1]
            q_keep = torch.from_numpy(np.stack([np.pad(m.astype(bool), (0, width - len(m))) for m in q_masks]))
        scores = maxsim_scores(q.float(), d.float(), keep, q_keep)  # (B, B(1 + k))
        return self.loss(scores, self._own(len(rows), len(self._doc_columns) - 1), self._teacher_for(rows))

    def _load_best(self, folder: Any) -> None:
        from embedstack.neural.colbert import ColBERT

        best = ColBERT.from_folder(folder, verify=False)
        with torch.no_grad():
            for p, q in zip(self.model.model.parameters(), best.model.parameters(), strict=True):
                p.copy_(q)
            self.model.projection.load_state_dict(best.projection.state_dict())
