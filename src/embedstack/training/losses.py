"""Sentence-embedding losses: small modules that map embeddings (+ labels/scores) to a scalar tensor.

Every loss here takes embeddings that a model has already produced, so the same module serves any
encoder. ``B`` is the batch size, ``D`` the embedding size, ``k`` hard negatives per row.
``cos(u, v) = u·v / (‖u‖ ‖v‖)``. Each class names the data columns it needs in ``columns`` (and
columns it can use in ``optional_columns``); :func:`check_columns` turns a mismatch into a
:class:`~embedstack.errors.ConfigError` naming the loss and both column lists.

Example:
    >>> import torch
    >>> anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (B=2, D=2)
    >>> positives = torch.tensor([[1.0, 0.1], [0.1, 1.0]])  # (B, D)
    >>> loss = MultipleNegativesRankingLoss()(anchors, positives)
    >>> round(float(loss), 4) < 1e-6
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from embedstack._extras import require

torch = require("torch", "torch", "training losses")
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from embedstack._validation import check_choice, check_float, check_int  # noqa: E402
from embedstack.errors import ConfigError, DimensionMismatch, InputError  # noqa: E402

__all__ = [
    "ContrastiveLoss",
    "OnlineContrastiveLoss",
    "TripletLoss",
    "MultipleNegativesRankingLoss",
    "CoSENTLoss",
    "CosineSimilarityLoss",
    "SoftmaxLoss",
    "MatryoshkaLoss",
    "check_columns",
    "mnrl_from_embeddings",
]

DISTANCES = ("cosine", "euclidean")


# ---------------------------------------------------------------- validation helpers


def check_columns(loss: nn.Module | type, available: Iterable[str]) -> None:
    """Raise :class:`ConfigError` unless ``available`` holds every column ``loss`` needs.

    Example:
        >>> check_columns(CoSENTLoss, ["sentence1", "sentence2"])
        Traceback (most recent call last):
        ...
        embedstack.errors.ConfigError: CoSENTLoss needs the columns ('sentence1', 'sentence2', 'score') but the data has ['sentence1', 'sentence2'] (missing: ['score']). Choose a loss that fits the data, or add the missing columns.
    """
    cls = loss if isinstance(loss, type) else type(loss)
    needed: tuple[str, ...] = tuple(getattr(loss, "columns", ()))
    have = list(available)
    missing = [c for c in needed if c not in have]
    if missing:
        raise ConfigError(
            f"{cls.__name__} needs the columns {needed} but the data has {have} (missing: {missing}). "
            "Choose a loss that fits the data, or add the missing columns."
        )


def _check_embeddings(loss: str, name: str, x: Any, ndim: int = 2) -> Tensor:
    if not isinstance(x, Tensor):
        raise InputError(f"{loss}: {name} must be a torch.Tensor of embeddings, got {type(x).__name__}.")
    if x.ndim != ndim or not x.is_floating_point():
        shape = "(B, k, D)" if ndim == 3 else "(B, D)"
        raise DimensionMismatch(
            f"{loss}: {name} must be a floating {ndim}-D tensor {shape}, got shape {tuple(x.shape)} "
            f"and dtype {x.dtype}."
        )
    if x.shape[0] == 0:
        raise InputError(f"{loss}: {name} is an empty batch (shape {tuple(x.shape)}); give at least one row.")
    return x


def _check_same(loss: str, names: Sequence[str], tensors: Sequence[Tensor]) -> None:
    ref_name, ref = names[0], tensors[0]
    for name, x in zip(names[1:], tensors[1:], strict=True):
        if x.shape[0] != ref.shape[0] or x.shape[-1] != ref.shape[-1]:
            raise DimensionMismatch(
                f"{loss}: {ref_name} has shape {tuple(ref.shape)} but {name} has shape {tuple(x.shape)}; "
                "they need the same batch size and embedding size."
            )


def _check_targets(loss: str, name: str, y: Any, batch: int, *, integer: bool = False) -> Tensor:
    if not isinstance(y, Tensor):
        try:
            y = torch.as_tensor(y)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"{loss}: {name} must be numbers (a tensor or a list), got {type(y).__name__}.") from None
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise InputError(f"{loss}: {name} holds NaN or infinite values; fix or drop those rows.")
    if y.ndim != 1 or y.shape[0] != batch:
        raise DimensionMismatch(
            f"{loss}: {name} must have shape ({batch},) to match the embeddings, got {tuple(y.shape)}."
        )
    if integer and y.is_floating_point():
        raise InputError(f"{loss}: {name} must be integer class ids, got dtype {y.dtype}.")
    return y


def _distance(a: Tensor, b: Tensor, kind: str) -> Tensor:
    """Row-wise distance of (B, D) tensors → (B,): ``1 − cos`` or Euclidean ``‖a − b‖₂``."""
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=-1)  # (B,)
    return F.pairwise_distance(a, b)  # (B,); its eps keeps the gradient finite at a == b


# ---------------------------------------------------------------- pair losses with binary labels


class ContrastiveLoss(nn.Module):
    """Contrastive loss (Hadsell, Chopra & LeCun 2006) on a pair distance, halved as in Sentence-BERT.

    ``L = 1/B · Σ_i ½ · [ y_i · d_i² + (1 − y_i) · max(0, m − d_i)² ]``

    with ``d_i = 1 − cos(u_i, v_i)`` (``distance="cosine"``, default) or ``‖u_i − v_i‖₂``
    (``"euclidean"``), ``y_i = 1`` for a similar pair and ``0`` for a dissimilar one, margin ``m``.
    Similar pairs are pulled together; dissimilar ones pushed apart until they are ``m`` apart.

    Args:
        margin: ``m``; dissimilar pairs farther apart than this cost nothing.
        distance: ``"cosine"`` or ``"euclidean"``.

    Example:
        >>> import torch
        >>> u, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # orthogonal: d = 1
        >>> float(ContrastiveLoss(margin=0.5)(u, v, torch.tensor([1])))  # ½ · 1²
        0.5
    """

    columns: tuple[str, ...] = ("sentence1", "sentence2", "label")
    optional_columns: tuple[str, ...] = ()

    def __init__(self, *, margin: float = 0.5, distance: str = "cosine") -> None:
        super().__init__()
        self.margin = check_float(self, "margin", margin, low=0.0)
        self.distance = check_choice(self, "distance", distance, DISTANCES)

    def _distances(self, u: Tensor, v: Tensor, labels: Any) -> tuple[Tensor, Tensor]:
        name = type(self).__name__
        _check_embeddings(name, "u", u)  # (B, D)
        _check_embeddings(name, "v", v)  # (B, D)
        _check_same(name, ("u", "v"), (u, v))
        y = _check_targets(name, "labels", labels, u.shape[0]).to(u.dtype)  # (B,)
        if bool(((y != 0) & (y != 1)).any()):
            raise InputError(f"{name}: labels must be 1 (similar) or 0 (dissimilar), got {sorted(set(y.tolist()))}.")
        return _distance(u, v, self.distance), y

    def forward(self, u: Tensor, v: Tensor, labels: Tensor) -> Tensor:
        d, y = self._distances(u, v, labels)  # (B,), (B,)
        per_pair = y * d.pow(2) + (1.0 - y) * F.relu(self.margin - d).pow(2)  # (B,)
        return 0.5 * per_pair.mean()


class OnlineContrastiveLoss(ContrastiveLoss):
    """Contrastive loss on the hard pairs of the batch only, summed (not halved, not averaged).

    ``L = Σ_{i ∈ P_hard} d_i² + Σ_{j ∈ N_hard} max(0, m − d_j)²``

    where, with ``P`` the positive pairs (label 1) and ``N`` the negative pairs (label 0) of the batch,
    ``P_hard = {i ∈ P : d_i > min_{j∈N} d_j}`` (positives farther apart than the closest negative) and
    ``N_hard = {j ∈ N : d_j < max_{i∈P} d_i}`` (negatives closer than the farthest positive). When the
    batch has no negatives every positive counts as hard, and when it has no positives every negative
    does. ``d`` as in :class:`ContrastiveLoss`. A batch with no hard pair gives 0 (still differentiable).

    Example:
        >>> import torch
        >>> u = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        >>> v = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # d = [1, 0]
        >>> float(OnlineContrastiveLoss(margin=0.5)(u, v, torch.tensor([1, 0])))  # 1² + (0.5 − 0)²
        1.25
    """

    def forward(self, u: Tensor, v: Tensor, labels: Tensor) -> Tensor:
        d, y = self._distances(u, v, labels)  # (B,), (B,)
        pos, neg = d[y == 1], d[y == 0]  # (P,), (N,)
        hard_pos = pos[pos > neg.min()] if neg.numel() else pos
        hard_neg = neg[neg < pos.max()] if pos.numel() else neg
        return hard_pos.pow(2).sum() + F.relu(self.margin - hard_neg).pow(2).sum() + 0.0 * d.sum()


# ---------------------------------------------------------------- triplets


class TripletLoss(nn.Module):
    """Triplet loss with a margin (Schroff et al. 2015; Sentence-BERT's triplet objective).

    ``L = 1/B · Σ_i max(0, d(a_i, p_i) − d(a_i, n_i) + m)``

    with ``d`` the Euclidean distance ``‖x − y‖₂`` (default) or the cosine distance ``1 − cos(x, y)``.

    Args:
        margin: ``m``: how much closer the positive must be than the negative.
        distance: ``"euclidean"`` or ``"cosine"``.

    Example:
        >>> import torch
        >>> a, p, n = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])
        >>> round(float(TripletLoss(margin=1.0)(a, p, n)), 4)  # max(0, 5 − 1 + 1)
        5.0
    """

    columns: tuple[str, ...] = ("anchor", "positive", "negative")
    optional_columns: tuple[str, ...] = ()

    def __init__(self, *, margin: float = 1.0, distance: str = "euclidean") -> None:
        super().__init__()
        self.margin = check_float(self, "margin", margin, low=0.0)
        self.distance = check_choice(self, "distance", distance, DISTANCES)

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        name = type(self).__name__
        for arg, x in (("anchor", anchor), ("positive", positive), ("negative", negative)):
            _check_embeddings(name, arg, x)  # (B, D)
        _check_same(name, ("anchor", "positive", "negative"), (anchor, positive, negative))
        d_pos = _distance(anchor, positive, self.distance)  # (B,)
        d_neg = _distance(anchor, negative, self.distance)  # (B,)
        return F.relu(d_pos - d_neg + self.margin).mean()


# ---------------------------------------------------------------- in-batch negatives


def mnrl_from_embeddings(anchor: Tensor, positive: Tensor, negatives: Tensor | None = None, *,
                         scale: float = 20.0, symmetric: bool = False) -> Tensor:
    """The MNRL value on embeddings; ``negatives`` is a flat pool (N, D) of extra candidates.

    Shared by :class:`MultipleNegativesRankingLoss` and the cached variant (no validation here).
    """
    a = F.normalize(anchor, dim=-1)  # (B, D)
    candidates = positive if negatives is None else torch.cat([positive, negatives], dim=0)  # (B + N, D)
    c = F.normalize(candidates, dim=-1)  # (B + N, D)
    scores = scale * a @ c.T  # (B, B + N)
    target = torch.arange(a.shape[0], device=a.device)  # (B,): row i's positive is column i
    loss = F.cross_entropy(scores, target)
    if symmetric:
        back = scores[:, : a.shape[0]].T  # (B, B): positive j against every anchor
        loss = 0.5 * (loss + F.cross_entropy(back, target))
    return loss


class MultipleNegativesRankingLoss(nn.Module):
    """In-batch softmax cross-entropy (Henderson et al. 2017; InfoNCE with temperature ``1/scale``).

    For anchors ``a_i`` and positives ``p_i`` (i = 1..B) and optional hard negatives ``n_{j,1..k}``
    per row, the candidates are ``C = {p_1..p_B} ∪ {n_{j,l} : all j, l}`` (every row's positive and
    every row's hard negatives are negatives for the other rows), and

    ``L = 1/B · Σ_i −log( exp(s·cos(a_i, p_i)) / Σ_{c ∈ C} exp(s·cos(a_i, c)) )``

    with ``s = scale = 1/temperature`` (default 20, i.e. temperature 0.05). With ``symmetric=True``
    the loss also ranks anchors for each positive and averages the two directions:

    ``L_sym = ½ · ( L + 1/B · Σ_i −log( exp(s·cos(p_i, a_i)) / Σ_j exp(s·cos(p_i, a_j)) ) )``

    (the positive → anchor direction has only the B anchors as candidates).

    Args:
        scale: ``s``; pass ``scale=1/temperature``.
        symmetric: Add the positive → anchor direction.

    Example:
        >>> import torch
        >>> a = torch.eye(2)  # (B=2, D=2)
        >>> round(float(MultipleNegativesRankingLoss(scale=1.0)(a, a)), 4)  # −log(e / (e + 1))
        0.3133
    """

    columns: tuple[str, ...] = ("anchor", "positive")
    optional_columns: tuple[str, ...] = ("negative",)

    def __init__(self, *, scale: float = 20.0, symmetric: bool = False) -> None:
        super().__init__()
        self.scale = check_float(self, "scale", scale, low=0.0, low_open=True)
        self.symmetric = bool(symmetric)

    def forward(self, anchor: Tensor, positive: Tensor, negatives: Tensor | None = None) -> Tensor:
        """``anchor`` (B, D), ``positive`` (B, D), ``negatives`` (B, k, D) or None."""
        name = type(self).__name__
        _check_embeddings(name, "anchor", anchor)  # (B, D)
        _check_embeddings(name, "positive", positive)  # (B, D)
        _check_same(name, ("anchor", "positive"), (anchor, positive))
        flat = None
        if negatives is not None:
            _check_embeddings(name, "negatives", negatives, ndim=3)  # (B, k, D)
            _check_same(name, ("anchor", "negatives"), (anchor, negatives))
            flat = negatives.reshape(-1, negatives.shape[-1])  # (B·k, D)
        return mnrl_from_embeddings(anchor, positive, flat, scale=self.scale, symmetric=self.symmetric)


# ---------------------------------------------------------------- scored pairs


def _scored_pair(loss: str, u: Tensor, v: Tensor, scores: Any) -> tuple[Tensor, Tensor]:
    _check_embeddings(loss, "u", u)  # (B, D)
    _check_embeddings(loss, "v", v)  # (B, D)
    _check_same(loss, ("u", "v"), (u, v))
    s = _check_targets(loss, "scores", scores, u.shape[0]).to(u.dtype)  # (B,)
    return F.cosine_similarity(u, v, dim=-1), s  # (B,), (B,)


class CoSENTLoss(nn.Module):
    """CoSENT (Su 2022): rank pair cosines in the order of their gold scores.

    ``L = log( 1 + Σ_{(i, j) : s_i > s_j} exp( λ · (cos(u_j, v_j) − cos(u_i, v_i)) ) )``

    over all ordered pairs of batch rows whose gold scores ``s`` differ, ``λ = scale`` (default 20).
    Only the order of the scores matters, so any score range works.

    Example:
        >>> import torch
        >>> u = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        >>> v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos = [1, 0]
        >>> round(float(CoSENTLoss(scale=1.0)(u, v, torch.tensor([0.0, 1.0]))), 4)  # log(1 + e^{1 − 0})
        1.3133
    """

    columns: tuple[str, ...] = ("sentence1", "sentence2", "score")
    optional_columns: tuple[str, ...] = ()

    def __init__(self, *, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = check_float(self, "scale", scale, low=0.0, low_open=True)  # λ < 0 would invert the ranking

    def forward(self, u: Tensor, v: Tensor, scores: Tensor) -> Tensor:
        cos, s = _scored_pair(type(self).__name__, u, v, scores)  # (B,), (B,)
        diff = self.scale * (cos[None, :] - cos[:, None])  # (B, B): [i, j] = λ(cos_j − cos_i)
        keep = s[:, None] > s[None, :]  # (B, B): s_i > s_j
        terms = diff.masked_fill(~keep, float("-inf")).reshape(-1)  # (B·B,)
        return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)  # log(e⁰ + Σ …)


class CosineSimilarityLoss(nn.Module):
    """Regression of the pair cosine onto the gold score mapped to [0, 1].

    ``L = 1/B · Σ_i ( cos(u_i, v_i) − (s_i − lo) / (hi − lo) )²``

    with ``(lo, hi) = score_range`` (default ``(0, 1)``: scores already in [0, 1]; STS-B's 0–5 scale is
    ``score_range=(0, 5)``). The target is in **[0, 1]**; a score outside ``score_range`` raises.

    Example:
        >>> import torch
        >>> u, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])  # cos = 0.7071
        >>> round(float(CosineSimilarityLoss(score_range=(0, 5))(u, v, torch.tensor([5.0]))), 4)
        0.0858
    """

    columns: tuple[str, ...] = ("sentence1", "sentence2", "score")
    optional_columns: tuple[str, ...] = ()

    def __init__(self, *, score_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        pair = list(score_range) if isinstance(score_range, (tuple, list)) else []
        lo, hi = (check_float(self, "score_range", x) for x in pair) if len(pair) == 2 else (0.0, 0.0)
        if not hi > lo:
            raise ConfigError(f"The 'score_range' parameter of {type(self).__name__} must be (lo, hi) with hi > lo. "
                              f"Got {score_range!r} instead.",
                              param=("score_range", f"The 'score_range' parameter of {type(self).__name__}"))
        self.score_range = (lo, hi)

    def forward(self, u: Tensor, v: Tensor, scores: Tensor) -> Tensor:
        name = type(self).__name__
        cos, s = _scored_pair(name, u, v, scores)  # (B,), (B,)
        lo, hi = self.score_range
        if bool(((s < lo) | (s > hi)).any()):
            raise InputError(f"{name}: scores must lie in score_range {self.score_range}, got values in "
                             f"[{float(s.min())}, {float(s.max())}].", fix={"score_range": (float(s.min()), float(s.max()))})
        target = (s - lo) / (hi - lo)  # (B,) in [0, 1]
        return F.mse_loss(cos, target)


class SoftmaxLoss(nn.Module):
    """Sentence-BERT's NLI classifier: cross-entropy of ``W [u; v; |u − v|] + b``.

    ``L = 1/B · Σ_i −log softmax( W · [u_i; v_i; |u_i − v_i|] + b )[y_i]``

    with ``W`` of shape ``(n_labels, 3·D)``. The module owns the linear layer (``self.classifier``),
    so its parameters must go to the optimizer along with the encoder's.

    Args:
        dim: ``D``, the embedding size.
        n_labels: Number of classes (3 for NLI: entailment, neutral, contradiction).

    Example:
        >>> import torch
        >>> loss = SoftmaxLoss(4, n_labels=3)
        >>> loss(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 2])).ndim
        0
    """

    columns: tuple[str, ...] = ("sentence1", "sentence2", "label")
    optional_columns: tuple[str, ...] = ()
    truncatable = False  # the classifier's input size is fixed at 3·dim

    def __init__(self, dim: int, *, n_labels: int = 3) -> None:
        super().__init__()
        self.dim = check_int(self, "dim", dim, low=1)
        self.n_labels = check_int(self, "n_labels", n_labels, low=2)
        self.classifier = nn.Linear(3 * self.dim, self.n_labels)

    def forward(self, u: Tensor, v: Tensor, labels: Tensor) -> Tensor:
        name = type(self).__name__
        _check_embeddings(name, "u", u)  # (B, D)
        _check_embeddings(name, "v", v)  # (B, D)
        _check_same(name, ("u", "v"), (u, v))
        if u.shape[1] != self.dim:
            raise DimensionMismatch(f"{name}: embeddings have shape {tuple(u.shape)} but the classifier was built "
                                    f"for dim={self.dim}.", fix={"dim": u.shape[1]})
        y = _check_targets(name, "labels", labels, u.shape[0], integer=True).long()  # (B,)
        if bool(((y < 0) | (y >= self.n_labels)).any()):
            raise InputError(f"{name}: labels must be in [0, {self.n_labels}), got values in "
                             f"[{int(y.min())}, {int(y.max())}].")
        features = torch.cat([u, v, (u - v).abs()], dim=-1)  # (B, 3D)
        return F.cross_entropy(self.classifier(features), y)  # logits (B, n_labels)


# ---------------------------------------------------------------- Matryoshka


class MatryoshkaLoss(nn.Module):
    """Sum an embedding loss over leading-dimension truncations (Kusupati et al. 2022).

    ``L = Σ_k w_k · inner( x_1[..., :d_k], x_2[..., :d_k], …, labels )``

    Every floating tensor argument of 2 or more dimensions (embeddings ``(B, D)`` or ``(B, k, D)``) is
    cut to its first ``d_k`` features; other arguments (labels, scores) pass unchanged. The inner losses
    compute cosines from the truncated vectors themselves, so no re-normalisation is needed; Euclidean
    losses see the plain truncated vectors.

    Args:
        loss: Any loss of this module whose inputs are embeddings (not :class:`SoftmaxLoss`, whose
            classifier has a fixed input size).
        dims: Truncation sizes ``d_k``, e.g. ``(384, 256, 128, 64)``; each at most ``D``.
        weights: ``w_k``, one per dim; default 1 each.

    Example:
        >>> import torch
        >>> m = MatryoshkaLoss(CosineSimilarityLoss(), dims=(2, 1))
        >>> u, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
        >>> round(float(m(u, v, torch.tensor([1.0]))), 4)  # (0.7071 − 1)² + (1 − 1)²
        0.0858
    """

    def __init__(self, loss: nn.Module, *, dims: Sequence[int] = (384, 256, 128, 64),
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module) or not getattr(loss, "truncatable", True) or not hasattr(loss, "columns"):
            raise ConfigError(f"MatryoshkaLoss cannot wrap {type(loss).__name__}: it needs a loss that takes "
                              "embeddings of any size (contrastive, triplet, MNRL, CoSENT, cosine regression).")
        dims = [check_int(self, "dims", d, low=1) for d in dims]
        if not dims:
            raise ConfigError("The 'dims' parameter of MatryoshkaLoss must hold at least one size. Got () instead.",
                              param=("dims", "The 'dims' parameter of MatryoshkaLoss"))
        w = [1.0] * len(dims) if weights is None else [check_float(self, "weights", x, low=0.0) for x in weights]
        if len(w) != len(dims):
            raise ConfigError(f"MatryoshkaLoss got {len(dims)} dims {dims} but {len(w)} weights {w}; "
                              "give one weight per dim.")
        self.loss = loss
        self.dims, self.weights = tuple(dims), tuple(w)
        self.columns = loss.columns
        self.optional_columns = getattr(loss, "optional_columns", ())

    def forward(self, *args: Any) -> Tensor:
        emb = [a for a in args if isinstance(a, Tensor) and a.is_floating_point() and a.ndim >= 2]
        if not emb:
            raise InputError("MatryoshkaLoss got no embedding tensors (floating, 2-D or more).")
        full = emb[0].shape[-1]
        if any(e.shape[-1] != full for e in emb):  # truncation would hide the mismatch
            raise DimensionMismatch(f"MatryoshkaLoss: embeddings of different sizes {[tuple(e.shape) for e in emb]}; "
                                    "they must share the embedding size.")
        if max(self.dims) > full:
            raise DimensionMismatch(f"MatryoshkaLoss: dims {self.dims} exceed the embedding size {full} "
                                    f"(embeddings of shape {tuple(emb[0].shape)}).",
                                    fix={"dims": tuple(d for d in self.dims if d <= full)})
        total: Tensor | None = None
        for d, w in zip(self.dims, self.weights, strict=True):
            cut = [a[..., :d] if any(a is e for e in emb) else a for a in args]  # (..., d)
            term = w * self.loss(*cut)
            total = term if total is None else total + term
        assert total is not None
        return total
