"""Training SPLADE models with the same trainer as bi-encoders.

:class:`SpladeTrainer` is :class:`~embedstack.training.trainer.SentenceTrainer` with a sparse forward:
queries and documents become pooled vocabulary weights (:meth:`~embedstack.neural.splade.SpladeEncoder.forward_sparse`),
scored by dot product, and :class:`SpladeLoss` adds

* the ranking loss: softmax cross-entropy of each query over every document of the batch (in-batch +
  mined hard negatives; MNRL on raw dot products);
* FLOPS regularisation (Paria et al. 2020; SPLADE): ``λ · Σ_j (mean_i w_ij)²`` over the batch's queries
  and, separately, its documents, with ``λ`` raised quadratically from 0 over ``lambda_warmup_steps``
  (SPLADE's schedule), so the vectors get sparse without collapsing early;
* with a teacher (a cross-encoder, or a bi-encoder), ``KL(softmax(teacher) ‖ softmax(student))`` over each row's candidates.

Everything else is shared: AdamW with warmup and decay, bf16, length pieces, evaluation
(``retrieval:...`` specs score through the sparse path) and best-checkpoint selection, atomic resumable
checkpoints, the JSONL log and the loss curve.

Example:
    >>> SpladeLoss(lambda_query=5e-4).lambda_at(0), SpladeLoss(lambda_warmup_steps=0).lambda_at(0)
    (0.0, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "SPLADE training")

from torch import Tensor, nn  # noqa: E402

from embedstack.errors import ConfigError  # noqa: E402
from embedstack.training.ranking import RankingTrainer, distill_kl  # noqa: E402

__all__ = ["SpladeTrainer", "SpladeLoss", "flops"]


def flops(weights: Tensor) -> Tensor:
    """FLOPS regulariser of a batch of sparse vectors ``(n, |V|)``: ``Σ_j (mean_i w_ij)²``."""
    return (weights.mean(dim=0) ** 2).sum()


class SpladeLoss(nn.Module):
    """In-batch + hard-negative softmax over dot products, FLOPS regularisation, optional distillation.

    Args:
        lambda_query, lambda_document: FLOPS weights (SPLADE v2 used 3e-4 / 1e-4 at full scale; sparser
            documents cost less to index and search).
        lambda_warmup_steps: Steps over which each ``λ`` rises quadratically from 0 to its value.
        distill_weight: Weight of the KL term when teacher scores are given.
    """

    columns = ("anchor", "positive")
    optional_columns = ("negative",)
    in_batch_negatives = True

    def __init__(self, lambda_query: float = 5e-4, lambda_document: float = 1e-4, *, lambda_warmup_steps: int = 50,
                 distill_weight: float = 1.0) -> None:
        super().__init__()
        if lambda_query < 0 or lambda_document < 0 or distill_weight < 0:
            raise ConfigError("lambda_query, lambda_document and distill_weight must be >= 0.")
        if lambda_warmup_steps < 0:
            raise ConfigError(f"lambda_warmup_steps must be >= 0. Got {lambda_warmup_steps}.")
        self.lambda_query = float(lambda_query)
        self.lambda_document = float(lambda_document)
        self.lambda_warmup_steps = int(lambda_warmup_steps)
        self.distill_weight = float(distill_weight)
        self.step: Tensor
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.last: dict[str, float] = {}

    def lambda_at(self, step: int) -> float:
        """The share of each ``λ`` in force at ``step`` (quadratic warm-up)."""
        if self.lambda_warmup_steps == 0:
            return 1.0
        return float(min(1.0, (step / self.lambda_warmup_steps) ** 2))

    def forward(self, queries: Tensor, docs: Tensor, own: Tensor, teacher: Tensor | None = None) -> Tensor:
        """``queries`` (B, |V|), ``docs`` (N, |V|) with row ``i``'s positive at column ``i``; ``own`` (B, 1 + k)
        the columns of each row's candidates; ``teacher`` (B, 1 + k) or None."""
        scores = queries @ docs.T
        rank = nn.functional.cross_entropy(scores, torch.arange(len(queries)))
        share = self.lambda_at(int(self.step))
        reg = share * (self.lambda_query * flops(queries) + self.lambda_document * flops(docs))
        loss = rank + reg
        if teacher is not None and self.distill_weight > 0:
            loss = loss + self.distill_weight * distill_kl(torch.gather(scores, 1, own), teacher)
        if self.training:
            self.step.add_(1)
        with torch.no_grad():
            self.last = {"rank": float(rank), "flops_reg": float(reg),
                         "query_terms": float((queries > 0).sum(dim=1).float().mean()),
                         "doc_terms": float((docs > 0).sum(dim=1).float().mean())}
        return loss


class SpladeTrainer(RankingTrainer):
    """Fine-tune a :class:`~embedstack.neural.splade.SpladeEncoder` (trained in place).

    Args:
        model: The SPLADE encoder (``SpladeEncoder.from_pretrained(encoder, head=...)``: an encoder with its MLM head).
        loss: A :class:`SpladeLoss` (or ``"splade"`` for the defaults).
        data: ``(anchor, positive[, negative_1..k])`` rows.
        teacher: A reranker whose scores of each row's candidates the KL term follows (scored once, before
            training; needs negatives).
        args, evaluator, progress: As :class:`~embedstack.training.trainer.SentenceTrainer`;
            ``args.max_seq_length`` caps the document length in training.
    """

    def _check_model(self, model: Any) -> None:
        from embedstack.neural.splade import SpladeEncoder

        if not isinstance(model, SpladeEncoder):
            raise ConfigError(f"SpladeTrainer trains a SpladeEncoder (SpladeEncoder.from_pretrained(...) or a SPLADE "
                              f"folder); got {type(model).__name__}.")

    def _make_loss(self, name: str) -> nn.Module:
        if name != "splade":
            raise ConfigError(f"Unknown SPLADE loss {name!r}; use 'splade' or a SpladeLoss(...) with your λ.",
                              param=("loss", "loss"))
        return SpladeLoss()

    def _tokenize_texts(self, enc: Any, texts: list[str], role: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ids = enc._tokenize(texts)  # SentenceTrainer._tokenize set the training max_seq_length
        return ids, [np.ones(len(x), dtype=np.int64) for x in ids]

    def _named_weights(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {f"model.{k}": p for k, p in self.model.model.named_parameters()}
        # the head's decoder is the word-embedding matrix (tied): listed once, under model.*
        out.update({f"head.{k}": p for k, p in self.model.head.named_parameters() if not k.startswith("decoder.")})
        out.update({f"loss.{k}": p for k, p in self.loss.named_parameters()})
        return out

    def _is_head(self, name: str) -> bool:
        return name.startswith(("head.", "loss."))

    def _batch_loss(self, rows: np.ndarray) -> Tensor:
        q_ids, _, d_ids, _ = self._batch_texts(rows)
        with self._autocast():
            q = self.model.forward_sparse(q_ids, model=self._work, min_rows=self.args.min_piece_rows)
            d = self.model.forward_sparse(d_ids, model=self._work, min_rows=self.args.min_piece_rows)
        return self.loss(q.float(), d.float(), self._own(len(rows), len(self._doc_columns) - 1), self._teacher_for(rows))

    def _load_best(self, folder: Any) -> None:
        from embedstack.neural.splade import SpladeEncoder

        best = SpladeEncoder.from_folder(folder, verify=False)
        with torch.no_grad():
            for p, q in zip(self.model.model.parameters(), best.model.parameters(), strict=True):
                p.copy_(q)
            self.model.head.transform.load_state_dict(best.head.transform.state_dict())
            self.model.head.bias.copy_(best.head.bias)
