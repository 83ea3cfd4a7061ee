"""Cross-encoder losses: small modules that map pair logits (+ labels/scores) to a scalar tensor.

A cross-encoder gives one logit ``z`` per (query, document) pair; ``σ(z) = 1 / (1 + e^{−z})``. Each
class names the data columns it needs in ``columns``, as the bi-encoder losses do
(:mod:`embedstack.training.losses`), so the trainer checks the data against the loss the same way.

Example:
    >>> import torch
    >>> round(float(BinaryCrossEntropyLoss()(torch.tensor([0.0]), torch.tensor([1]))), 4)  # −log σ(0)
    0.6931
"""

from __future__ import annotations

from typing import Any

from embedstack._extras import require

torch = require("torch", "torch", "training losses")
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from embedstack._validation import check_float  # noqa: E402
from embedstack.errors import InputError  # noqa: E402

__all__ = ["BinaryCrossEntropyLoss", "ListwiseSoftmaxLoss", "ScoreRegressionLoss", "CE_LOSSES"]


def _logits(loss: str, z: Any, ndim: int) -> Tensor:
    if not isinstance(z, Tensor) or not z.is_floating_point() or z.ndim != ndim:
        shape = "(B,)" if ndim == 1 else "(B, 1 + k)"
        raise InputError(f"{loss}: logits must be a float tensor {shape}, got "
                         f"{getattr(z, 'shape', type(z).__name__)}.")
    return z


def _targets(loss: str, name: str, y: Any, n: int) -> Tensor:
    t = torch.as_tensor(y)
    if t.ndim != 1 or t.shape[0] != n:
        raise InputError(f"{loss}: {name} must be a 1-D tensor of {n} values, got shape {tuple(t.shape)}.")
    return t.float()


class BinaryCrossEntropyLoss(nn.Module):
    """Pointwise binary cross-entropy on labelled pairs (the classic cross-encoder objective).

    ``L = 1/B · Σ_i w_i · −[ y_i · log σ(z_i) + (1 − y_i) · log(1 − σ(z_i)) ]``

    with ``y_i ∈ [0, 1]`` (1 relevant, 0 not; soft labels allowed) and ``w_i = pos_weight`` for
    ``y_i = 1`` (default 1): with ``k`` mined negatives per positive, ``pos_weight = k`` balances the
    classes, so the loss cannot settle at the class prior.

    Example:
        >>> import torch
        >>> z, y = torch.tensor([2.0, -1.0]), torch.tensor([1, 0])
        >>> round(float(BinaryCrossEntropyLoss()(z, y)), 4)  # (−log σ(2) − log(1 − σ(−1))) / 2
        0.2201
    """

    columns: tuple[str, ...] = ("anchor", "positive", "label")
    optional_columns: tuple[str, ...] = ()

    def __init__(self, *, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.pos_weight = check_float(self, "pos_weight", pos_weight, low=0.0, low_open=True)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        z = _logits(type(self).__name__, logits, 1)  # (B,)
        y = _targets(type(self).__name__, "labels", labels, z.shape[0])  # (B,)
        if bool(((y < 0) | (y > 1)).any()):
            raise InputError(f"{type(self).__name__}: labels must lie in [0, 1] (1 relevant, 0 not), got "
                             f"{sorted(set(y.tolist()))[:5]}.")
        weight = None if self.pos_weight == 1.0 else torch.tensor(self.pos_weight)
        return F.binary_cross_entropy_with_logits(z.float(), y, pos_weight=weight)


class ListwiseSoftmaxLoss(nn.Module):
    """One positive against ``k`` negatives of the same query: softmax cross-entropy over the group.

    ``L = 1/B · Σ_i −log( exp(z_{i,0} / τ) / Σ_{j=0..k} exp(z_{i,j} / τ) )``

    where ``z_{i,0}`` is the logit of (query_i, positive_i) and ``z_{i,1..k}`` those of its negatives
    (the "localized contrastive estimation" of Gao et al. 2021 for rerankers), temperature ``τ``
    (default 1). Only the order within a group matters, so the logit scale is free.

    With a teacher's scores of each group (``forward(logits, teacher)``), ``distill_weight · KL(softmax(teacher /
    teacher_temperature) ‖ softmax(z))`` is added (:func:`~embedstack.training.ranking.distill_kl`, as ColBERT's
    and SPLADE's losses do).

    Example:
        >>> import torch
        >>> round(float(ListwiseSoftmaxLoss()(torch.tensor([[1.0, 0.0]]))), 4)  # −log(e / (e + 1))
        0.3133
    """

    columns: tuple[str, ...] = ("anchor", "positive", "negative")
    optional_columns: tuple[str, ...] = ()

    def __init__(self, *, temperature: float = 1.0, distill_weight: float = 1.0, teacher_temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_float(self, "temperature", temperature, low=0.0, low_open=True)
        self.distill_weight = check_float(self, "distill_weight", distill_weight, low=0.0)
        self.teacher_temperature = check_float(self, "teacher_temperature", teacher_temperature, low=0.0, low_open=True)

    def forward(self, logits: Tensor, teacher: Tensor | None = None) -> Tensor:
        z = _logits(type(self).__name__, logits, 2)  # (B, 1 + k)
        if z.shape[1] < 2:
            raise InputError(f"{type(self).__name__} needs at least one negative per row (got {z.shape[1] - 1}).")
        target = torch.zeros(z.shape[0], dtype=torch.long)
        loss = F.cross_entropy(z.float() / self.temperature, target)
        if teacher is not None and self.distill_weight > 0:
            from embedstack.training.ranking import distill_kl

            loss = loss + self.distill_weight * distill_kl(z.float(), teacher, self.teacher_temperature)
        return loss


class ScoreRegressionLoss(nn.Module):
    """Regression of ``σ(z)`` on a graded score in [0, 1] (STS-B scores / 5, teacher scores).

    ``L = 1/B · Σ_i (σ(z_i) − s_i)²``

    Example:
        >>> import torch
        >>> float(ScoreRegressionLoss()(torch.tensor([0.0]), torch.tensor([1.0])))  # (0.5 − 1)²
        0.25
    """

    columns: tuple[str, ...] = ("anchor", "positive", "score")
    optional_columns: tuple[str, ...] = ()

    def forward(self, logits: Tensor, scores: Tensor) -> Tensor:
        z = _logits(type(self).__name__, logits, 1)  # (B,)
        s = _targets(type(self).__name__, "scores", scores, z.shape[0])  # (B,)
        if bool(((s < 0) | (s > 1)).any()):
            raise InputError(f"{type(self).__name__}: scores must lie in [0, 1] (divide STS-B's 0-5 by 5), got "
                             f"min {float(s.min()):.3g}, max {float(s.max()):.3g}.")
        return F.mse_loss(torch.sigmoid(z.float()), s)


#: ``--loss`` names of ``embedstack train cross-encoder``
CE_LOSSES: dict[str, Any] = {"bce": BinaryCrossEntropyLoss, "listwise": ListwiseSoftmaxLoss, "regression": ScoreRegressionLoss}
