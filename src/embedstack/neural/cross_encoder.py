"""Cross-encoders: one transformer reads the query and the document together and scores the pair.

:class:`CrossEncoder` is a :class:`~embedstack.base.Reranker`. It is BERT over
``[CLS] query [SEP] document [SEP]`` (token types 0 then 1), BERT's pooler (dense + tanh on ``[CLS]``)
and a linear classifier: one logit for relevance (sigmoid → a score in [0, 1]) or several for
classification (three for NLI). It reads a sentence-transformers ``CrossEncoder`` folder or a Hugging
Face ``BertForSequenceClassification`` folder, and writes one that both load. It runs on the same
CPU fast path as the bi-encoder (:class:`~embedstack.neural.runtime.TransformerRuntime`: length-sorted
batches, bf16, bf16-pure, int8, ``compile``, workers, ONNX).

A cross-encoder re-tokenizes the texts it scores with its own tokenizer, so it can rerank the hits of
any first stage (BM25, another bi-encoder, a hybrid) whatever that stage's tokenizer was.

Exact order at low precision (``exact_top=k``): bf16 and int8 move a pair's logit by a few hundredths, enough
to swap two candidates whose scores are that close. With ``exact_top``, the pairs that could trade places within a
query's first ``k`` (their low-precision logits within ``2 · exact_margin`` of a neighbour there) are settled in
fp32; every other pair is more than that from its neighbours, so its place cannot change. The first ``k`` of
each query then come out in the order fp32 gives whenever no logit moved by more than ``exact_margin``, at the
cost of fp32 passes over pairs in near-ties (see :func:`near_ties`). Two passes, not one: the first scores all but
a set of near-ties more than ``2 · exact_margin`` apart, the second only those of that set that an fp32 score landed
next to (:func:`settle_ties`); on SciFact this scores a quarter fewer pairs again. The default margins are not
worst-case bounds: most moves are far smaller than the largest (SciFact reranker, bf16-pure: median 0.009, 99th
percentile 0.057, largest 0.078 logits), and a margin of 0.1, which covers the largest, re-scored 46% of all pairs
there. bf16-pure's default, 0.03, kept the first 10 of all 20 tuning queries in fp32's order while re-scoring 24% of
the pairs (benchmarks/exact_margin.py); pass a larger ``exact_margin`` for a bound. fp32 is the reference on any backend:
it re-scores nothing, nor does fp32-bf16x3. On a CPU with AMX the settling passes run as fp32-bf16x3 (float32 values,
products as three bf16 ones on the tiles: logits within about 2e-5 of fp32's, twice as fast), so two pairs closer
than that could still come out in either order. A query's candidates are the pairs of one
call with the same query text (a server that merges two requests with the same query orders them as one list).

Truncation: a pair longer than ``max_seq_length`` keeps the query whole and cuts the document; only a
query that leaves no room for the document is cut too. Either is said once per model (a warning).

Long documents (``doc_stride=s``): instead of cutting it, a document too long for one pair is read as overlapping
windows, each ``[CLS] query [SEP] window [SEP]`` of at most ``max_seq_length`` tokens, consecutive windows sharing
``s`` tokens, and the pair's logit is its best window's (BERT-MaxP, Dai & Callan 2019). A reranker trained on
short pairs then sees every part of an abstract at the length it was trained on: on SciFact's tune-dev queries,
``minilm-scifact-ce`` (trained on pairs of 128 tokens) reranking the hybrid's top 100 alone went from 61.75 (cut at 256
tokens) to 76.36 nDCG@10 with windows of 128 sharing 32 (benchmarks/train_reranker.py, arm ``dev-blend-windows-128``).
It costs one pass per window. A pair that fits is one window, as without ``doc_stride``; a query is cut only when it
would leave a window less than a quarter of ``max_seq_length``.

Example:
    >>> ce = CrossEncoder.from_folder("models/my-reranker")  # doctest: +SKIP
    >>> ce.rank("do statins reduce mortality", ["Statins lower ...", "Aspirin ..."], top_k=1)  # doctest: +SKIP
    [{'corpus_id': 0, 'score': 0.93}]
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "cross-encoders")

from torch import nn  # noqa: E402

from embedstack._threads import SMALL_BATCH  # noqa: E402
from embedstack.errors import ConfigError, FormatError, InputError, ScoreError  # noqa: E402
from embedstack.io import atomic_dir  # noqa: E402
from embedstack.neural.config import BertConfig  # noqa: E402
from embedstack.neural.runtime import TransformerRuntime, pad_types  # noqa: E402
from embedstack.neural.tokenizer import WordPiece, pad_batch  # noqa: E402
from embedstack.neural.transformer import BertModel, BertPooler, check_config_fits, has_pooler, load_weights  # noqa: E402

__all__ = ["CrossEncoder", "ACTIVATIONS", "ScoreError", "near_ties", "settle", "settle_ties", "still_tied", "exact_margin",
           "EXACT_MARGINS", "EXACT_PRECISIONS"]

# activation applied by predict(); the names sentence-transformers writes into its config
ACTIVATIONS = {"sigmoid": "torch.nn.modules.activation.Sigmoid", "identity": "torch.nn.modules.linear.Identity",
               "softmax": "torch.nn.modules.activation.Softmax", "tanh": "torch.nn.modules.activation.Tanh"}
_ST_ACTIVATION_NAMES = {v.rsplit(".", 1)[-1].lower(): k for k, v in ACTIVATIONS.items()}
#: the default ``exact_margin`` per precision (logits), chosen by benchmarks/exact_margin.py on 400 SciFact (query,
#: BM25 candidate) pairs of 20 queries other than the ones benchmarks/rerank_speed.py times: one step above the
#: smallest margin tried that kept the first 10 of every tuning query in fp32's order (int8's measured on int8-smooth)
EXACT_MARGINS = {"bf16": 0.02, "bf16-pure": 0.03, "int8": 0.3}
#: the precisions ``exact_top`` leaves alone: their logits are fp32's (fp32-bf16x3: to about 1e-5)
EXACT_PRECISIONS = ("fp32", "fp32-bf16x3")


def exact_margin(precision: str) -> float:
    """The default ``exact_margin`` (logits) of a precision: its entry in :data:`EXACT_MARGINS`, int8 variants
    sharing int8's, 0 for fp32 and fp32-bf16x3 (float32 values, products to 2^-16: nothing to settle)."""
    if precision in EXACT_PRECISIONS:
        return 0.0
    return EXACT_MARGINS.get(precision, EXACT_MARGINS["int8"] if precision.startswith("int8") else max(EXACT_MARGINS.values()))


def near_ties(scores: np.ndarray, k: int, margin: float) -> np.ndarray:
    """Positions in ``scores`` (one query's candidates, each within ``margin`` of its true score) whose order
    within the first ``k`` is not certain: the candidates that can reach the first ``k`` (at most ``2 · margin``
    below the k-th score) lying within ``2 · margin`` of a neighbour among them. Every other candidate keeps its
    place under the true scores, also against re-scored ones.

    Example:
        >>> near_ties(np.array([5.0, 1.0, 4.95, 3.0, 0.99]), k=2, margin=0.05).tolist()
        [0, 2]
    """
    n = len(scores)
    if n < 2 or k < 1:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    reach = s >= s[min(k, n) - 1] - 2 * margin  # a prefix of the sorted order
    cand = order[reach]
    close = np.diff(s[reach]) >= -2 * margin  # adjacent candidates within 2 * margin (the diffs are <= 0)
    tied = np.zeros(len(cand), dtype=bool)
    tied[:-1] |= close
    tied[1:] |= close
    return np.sort(cand[tied])


def settle_ties(scores: np.ndarray, k: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The near-ties of ``scores`` (one query's candidates, each within ``margin`` of its true score) in two rounds
    of exact scoring: ``(first, held)``. Score ``first`` exactly; then score the candidates of ``held`` that an exact
    score of ``first`` landed within ``margin`` of (:func:`still_tied`), and the first ``k`` are in the true order.

    Why it holds: ``held`` is a greedy largest set of :func:`near_ties` whose scores are more than ``2 · margin``
    apart, so their true scores keep their order among themselves; an exact score more than ``margin`` from a held
    one is on the same side of its true score. Every other near-tie is in ``first``. A pair of candidates
    ``2 · margin`` apart or less costs one exact score instead of two whenever the exact one lands clear of the other.
    :func:`settle` runs both rounds for one query.

    Example:
        >>> first, held = settle_ties(np.array([5.0, 1.0, 4.95, 3.0, 0.99]), k=2, margin=0.05)
        >>> first.tolist(), held.tolist()
        ([2], [0])
    """
    tied = near_ties(scores, k, margin)
    keep = np.zeros(len(tied), dtype=bool)
    last = np.inf
    for i in np.argsort(-scores[tied], kind="stable"):  # descending: keep each one clear of the last kept
        if last - scores[tied[i]] > 2 * margin:
            keep[i], last = True, scores[tied[i]]
    return tied[~keep], tied[keep]


def still_tied(held: np.ndarray, exact: np.ndarray, margin: float) -> np.ndarray:
    """Which ``held`` scores (low precision, within ``margin`` of true) have an ``exact`` score within ``margin``:
    their order against it is not certain (:func:`settle_ties`'s second round)."""
    if not held.size or not exact.size:
        return np.zeros(len(held), dtype=bool)
    return (np.abs(held[:, None] - exact[None, :]) <= margin).any(axis=1)


def settle(scores: np.ndarray, k: int, margin: float,
           exact: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Both rounds of :func:`settle_ties` for one query, ``exact(positions)`` giving true scores: ``(the positions
    scored exactly, the scores with theirs in place)``."""
    first, held = settle_ties(scores, k, margin)
    out = np.array(scores, dtype=np.float64, copy=True)
    if first.size:
        out[first] = exact(first)
    again = held[still_tied(out[held], out[first], margin)]
    if again.size:
        out[again] = exact(again)
    return np.sort(np.concatenate([first, again])), out


class CrossEncoder(TransformerRuntime):
    """A BERT cross-encoder: ``score(query, document)`` from one forward pass over the pair.

    Args:
        model: The transformer; its pooler (dense + tanh on ``[CLS]``) feeds the classifier (created,
            initialised as the identity, when the model has none).
        tokenizer: Its WordPiece tokenizer.
        num_labels: 1 (a relevance logit) or the number of classes.
        classifier: The ``Linear(hidden, num_labels)`` head (new, N(0, 0.02) weights, when None).
        activation: Applied by :meth:`predict`: ``sigmoid`` (default for one label), ``identity``
            (default otherwise), ``softmax`` or ``tanh``.
        labels: Class names (``id2label``), for ``num_labels > 1``.
        max_seq_length: Longest pair in tokens (default: 512 or the model's limit).
        doc_stride: None (default): a document too long for ``max_seq_length`` is cut. An int: it is scored as
            windows of ``max_seq_length`` tokens (query included) sharing ``doc_stride`` tokens, the pair's
            logit the largest of its windows' (relevance models only).
        backend, precision, num_threads, compile, workers, small_backend: As
            :class:`~embedstack.neural.sentence.SentenceEncoder` (the shared runtime).
        name, source: A display name and where the model came from.

    Example:
        >>> from embedstack.neural.config import BertConfig
        >>> from embedstack.neural.tokenizer import WordPiece
        >>> tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])
        >>> cfg = BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16)
        >>> ce = CrossEncoder(BertModel(cfg).init_weights(seed=0), tok)
        >>> ce.predict([("a", "b"), ("b", "a b")]).shape
        (2,)
    """

    token_types = True
    first_token_only = True  # the pooler reads [CLS]: the last block computes that row alone (inference and training)
    # Pairs run up to 512 tokens: the bi-encoder's 8 MiB slices would be 2 rows thin there. On 32 SciFact
    # (query, abstract) pairs of up to 512 tokens, 2 threads, under load: 8 MiB 10.7-11.4 s, 32 MiB 7.5-7.9 s,
    # 64 MiB 6.9-7.7 s, 256 MiB 7.2-7.5 s (benchmarks/rerank_speed.py measures the modes properly).
    activation_budget = 64 * 2**20

    def __init__(
        self,
        model: BertModel,
        tokenizer: WordPiece,
        *,
        num_labels: int = 1,
        classifier: nn.Linear | None = None,
        activation: str | None = None,
        labels: Sequence[str] | None = None,
        max_seq_length: int | None = None,
        backend: str = "torch",
        precision: str = "fp32",
        num_threads: int | None = None,
        compile: bool = False,
        workers: int = 1,
        small_backend: str | None = None,
        exact_top: int = 0,
        exact_margin: float | None = None,
        doc_stride: int | None = None,
        name: str | None = None,
        source: str | None = None,
    ) -> None:
        if isinstance(num_labels, bool) or not isinstance(num_labels, int | np.integer) or int(num_labels) < 1:
            raise ConfigError(f"num_labels must be an int >= 1 (1: a relevance score, 3: NLI). Got {num_labels!r}.")
        hidden = model.config.hidden_size
        if model.pooler is None:  # a bi-encoder or MLM checkpoint without BERT's pooler: start it as tanh(h_cls)
            model.pooler = BertPooler(model.config)
            identity_pooler(model.pooler)
        if max_seq_length is None:
            max_seq_length = min(512, model.config.max_position_embeddings)
        self._init_runtime(model, tokenizer, max_seq_length=max_seq_length, backend=backend, precision=precision,
                           num_threads=num_threads, compile=compile, workers=workers, small_backend=small_backend)
        self.num_labels = int(num_labels)
        if classifier is None:
            classifier = nn.Linear(hidden, self.num_labels)
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                classifier.weight.normal_(0.0, model.config.initializer_range, generator=gen)
                classifier.bias.zero_()
        if tuple(classifier.weight.shape) != (self.num_labels, hidden):
            raise ConfigError(f"classifier has shape {tuple(classifier.weight.shape)}; expected ({self.num_labels}, "
                              f"{hidden}) for num_labels={self.num_labels} and hidden size {hidden}.")
        self.classifier = classifier.eval()
        activation = activation or ("sigmoid" if self.num_labels == 1 else "identity")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"Unknown activation {activation!r}; use one of {list(ACTIVATIONS)}.")
        self.activation = activation
        self.labels = list(labels) if labels else [f"LABEL_{i}" for i in range(self.num_labels)]
        if len(self.labels) != self.num_labels:
            raise ConfigError(f"{len(self.labels)} label names for num_labels={self.num_labels}.")
        if isinstance(exact_top, bool) or not isinstance(exact_top, int | np.integer) or int(exact_top) < 0:
            raise ConfigError(f"exact_top must be an int >= 0 (0: off; 10: each query's first 10 in fp32's order). "
                              f"Got {exact_top!r}.")
        if exact_top and self.num_labels != 1:
            raise ConfigError(f"exact_top orders relevance scores; this model has {self.num_labels} labels.")
        margin = 0.0 if exact_margin is None else exact_margin
        if (isinstance(margin, bool) or not isinstance(margin, int | float | np.integer | np.floating)
                or not 0 <= float(margin) < float("inf")):
            raise ConfigError(f"exact_margin must be a finite number >= 0 (logits). Got {exact_margin!r}.")
        if doc_stride is not None:
            limit = (int(self.max_seq_length) - 4) // 2
            if isinstance(doc_stride, bool) or not isinstance(doc_stride, int | np.integer) or not 0 <= doc_stride <= limit:
                raise ConfigError(f"doc_stride must be an int in [0, {limit}] (tokens two windows of a document share; "
                                  f"at most (max_seq_length - 4) / 2 for max_seq_length={self.max_seq_length}), or None "
                                  f"to cut long documents. Got {doc_stride!r}. A recipe or a saved folder may set it: "
                                  "give your own with max_seq_length (MODEL@max_seq_length=64,doc_stride=16, or "
                                  "doc_stride=none).")
            if self.num_labels != 1:
                raise ConfigError(f"doc_stride scores a document by its best window, a relevance score; this model "
                                  f"has {self.num_labels} labels.")
        self.doc_stride = None if doc_stride is None else int(doc_stride)
        self.exact_top = int(exact_top)
        self.exact_margin = None if exact_margin is None else float(exact_margin)
        self._fp32: CrossEncoder | None = None  # the exact scorer of near-ties (exact_top), made on first use
        self.last_rescored = 0  # pairs the last predict() scored again in fp32 (exact_top)
        self.name = name or "cross-encoder"
        self.source = source
        self.folder: Path | None = None

    def __repr__(self) -> str:
        return (f"CrossEncoder(name={self.name!r}, num_labels={self.num_labels}, activation={self.activation!r}, "
                f"backend={self.backend!r}, precision={self.precision!r})")

    # ---------------------------------------------------------------------------------------- inputs
    def _tokenize_pairs(self, pairs: Sequence[tuple[str, str]], *, windows: bool = True
                        ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
        """Ids and token types of each pair (``owner`` None), or of each window of each pair with ``doc_stride``
        (``owner[i]``: the pair window ``i`` is part of; ``windows=False``, as training does: cut, one per pair)."""
        if self.doc_stride is not None and windows:
            ids, types, owner, query_cut = self.tokenizer.encode_pair_windows(pairs, max_length=self.max_seq_length,
                                                                              stride=self.doc_stride)
            if query_cut:
                self._warn_truncated(query_cut, "pair(s) (queries too long to leave a document window room; cut)")
            return ids, types, owner
        ids, types, cut, query_cut = self.tokenizer.encode_pairs(pairs, max_length=self.max_seq_length)
        if cut:
            what = "pair(s)" + (f" ({query_cut} with the query cut too)" if query_cut else
                                " (the documents were cut; the queries kept whole)")
            self._warn_truncated(cut, what)
        return ids, types, None

    def _head(self, tokens: Any, pooler: nn.Module | None = None) -> Any:
        """Logits (B, num_labels): BERT's pooler (dense + tanh on [CLS]), dropout when training, the classifier.

        ``pooler``: another copy's (a bf16 working copy in training); it runs in its own dtype and the
        classifier in fp32, outside any autocast region.
        """
        if isinstance(tokens, np.ndarray):
            tokens = torch.from_numpy(tokens)
        pool = pooler if pooler is not None else self.model.pooler
        assert pool is not None  # set in __init__
        with torch.autocast("cpu", enabled=False):
            dtype = next(pool.parameters()).dtype  # fp32, or bf16 in a bf16-pure working copy
            pooled = pool(tokens.to(dtype)).float()  # (B, C)
            if self.classifier.training:
                from embedstack.neural.transformer import dropout

                pooled = dropout(pooled, float(self.model.config.hidden_dropout_prob), True)
            return self.classifier(pooled)  # (B, num_labels)

    def _activate(self, logits: np.ndarray) -> np.ndarray:
        if self.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        if self.activation == "tanh":
            return np.tanh(logits)
        if self.activation == "softmax":
            z = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return z / z.sum(axis=-1, keepdims=True)
        return logits

    # ---------------------------------------------------------------------------------------- scoring
    def predict(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32, activation: bool = True,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Scores of ``(query, document)`` pairs: ``(n,)`` for one label, ``(n, num_labels)`` otherwise.

        Args:
            pairs: ``(text_a, text_b)`` tuples (one tuple gives one score, as sentence-transformers).
            batch_size: Pairs per forward pass (length-sorted: each batch pads to its own longest pair).
            activation: Apply the model's activation (sigmoid for relevance); ``False`` gives raw logits.
            progress: Called with the number of pairs finished after every batch.

        Raises:
            ScoreError: a score is NaN or infinite (never returned as a ranking).
        """
        single = isinstance(pairs, tuple) and len(pairs) == 2 and all(isinstance(t, str) for t in pairs)
        items: list[tuple[str, str]] = [pairs] if single else list(pairs)  # type: ignore[list-item]
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1. Got {batch_size}.")
        out = np.empty((len(items), self.num_labels), dtype=np.float32)
        self.last_rescored = 0
        if items:
            ids, types, owner = self._tokenize_pairs(items)
            rows = out if owner is None else np.empty((len(ids), self.num_labels), dtype=np.float32)  # pairs or windows
            run = self._get_runner()
            done = [0]

            def one(sel: np.ndarray) -> None:
                input_ids, mask = pad_batch([ids[i] for i in sel], self.tokenizer.pad_id)
                tt = pad_types([types[i] for i in sel], input_ids.shape[1])
                rows[sel] = self._head(run(input_ids, mask, tt)).numpy()

            def on_batch(k: int) -> None:
                done[0] += k
                if progress is not None:  # in pairs, also when the rows are windows
                    progress(done[0] * len(items) // len(ids))

            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            small = len(ids) <= SMALL_BATCH and int(lengths.sum()) <= 128 * SMALL_BATCH  # a few short pairs
            with torch.inference_mode(), self._threads(small):
                self._run_batches(lengths, int(batch_size), one, on_batch)
            if owner is not None:  # MaxP: each pair's best window (np.maximum keeps a NaN, checked below)
                out.fill(-np.inf)
                np.maximum.at(out, owner, rows)
            if self.exact_top and self.precision not in EXACT_PRECISIONS:
                self._rescore_near_ties(items, out, int(batch_size))
            bad = ~np.isfinite(out).all(axis=1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ScoreError(f"the cross-encoder gave a non-finite score for {int(bad.sum())} of {len(items)} "
                                 f"pair(s), e.g. pair {i} ({items[i][0]!r:.40}, {items[i][1]!r:.40}); the model "
                                 "weights are broken (NaN) or the precision overflowed: try precision='fp32'.")
        scores = self._activate(out) if activation else out
        if self.num_labels == 1:
            scores = scores[:, 0]
        return scores[0] if single else scores

    def _rescore_near_ties(self, items: list[tuple[str, str]], logits: np.ndarray, batch_size: int) -> None:
        """``exact_top``: score again in fp32 the pairs in near-ties within their query's first ``exact_top``
        (pairs grouped by query text), in place in ``logits`` (n, 1)."""
        groups: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(items):
            groups.setdefault(query, []).append(i)
        margin = exact_margin(self.precision) if self.exact_margin is None else self.exact_margin
        plans = []
        for rows in groups.values():  # settle_ties's two rounds, each one fp32 call over every query's pairs
            idx = np.asarray(rows)
            first, held = settle_ties(logits[idx, 0], self.exact_top, margin)
            plans.append((idx[first], idx[held]))
        again = [int(i) for first, _ in plans for i in first]
        self._score_fp32(items, logits, again, batch_size)
        second = [int(i) for first, held in plans for i in held[still_tied(logits[held, 0], logits[first, 0], margin)]]
        self._score_fp32(items, logits, second, batch_size)
        self.last_rescored = len(again) + len(second)  # how many pairs the last call scored twice (benchmarks read it)

    def _score_fp32(self, items: list[tuple[str, str]], logits: np.ndarray, rows: list[int], batch_size: int) -> None:
        """``logits[rows]`` = fp32's logits of those pairs (``exact_top``): float32 values, with the products as three
        bf16 ones on the AMX tiles where the CPU has them (``fp32-bf16x3``: logits within about 1e-5 of fp32's, far
        inside any margin, at twice the speed), else plain fp32."""
        if not rows:
            return
        if self._fp32 is None:
            from embedstack.neural import packed

            exact = "fp32-bf16x3" if packed.x3_available(self.model) else "fp32"  # fp32: shares self.model
            self._fp32 = self.with_options(precision=exact, backend="torch", compile=False, small_backend=None,
                                           exact_top=0)
        logits[rows, 0] = self._fp32.predict([items[i] for i in rows], batch_size=batch_size, activation=False)

    def _check_relevance(self) -> None:
        if self.num_labels != 1:
            raise ConfigError(f"{self.name} has {self.num_labels} labels ({', '.join(self.labels)}): it classifies "
                              "pairs; reranking needs a one-label relevance model.")

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The :class:`~embedstack.base.Reranker` protocol: ``predict(pairs)`` (one relevance score per pair)."""
        self._check_relevance()
        return np.asarray(self.predict(list(pairs)), dtype=np.float32)

    def rank(self, query: str, documents: Sequence[str], *, top_k: int | None = None,
             return_documents: bool = False, batch_size: int = 32) -> list[dict[str, Any]]:
        """``documents`` sorted by score for ``query``: ``[{"corpus_id", "score"[, "text"]}]``, best first.

        An empty ``documents`` gives ``[]``; ``top_k`` keeps the best ``top_k``.
        """
        if not isinstance(query, str):
            raise InputError(f"rank() takes one query string; got {type(query).__name__}.")
        if isinstance(documents, str):
            raise InputError("rank() takes a list of documents, not a single string; wrap it: [document].")
        if top_k is not None and (isinstance(top_k, bool) or int(top_k) < 1):
            raise ConfigError(f"top_k must be >= 1 (or None for all). Got {top_k!r}.")
        docs = list(documents)
        if not docs:
            return []
        self._check_relevance()  # a classifier (num_labels > 1) does not rank: say so before any work
        scores = np.asarray(self.predict([(query, d) for d in docs], batch_size=batch_size), dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[: top_k or len(docs)]
        return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": docs[i]} if return_documents else {})}
                for i in order]

    # ---------------------------------------------------------------------------------------- training
    def forward_pairs(self, ids: Sequence[np.ndarray], types: Sequence[np.ndarray], *, model: Any = None,
                      min_rows: int = 8) -> Any:
        """Logits ``(n, num_labels)`` of tokenized pairs **with autograd** (training), rows in input order.

        Pairs run as length pieces (:func:`~embedstack.neural.sentence.length_pieces`), each padded to its
        own longest pair; ``model`` runs instead of ``self.model`` (a bf16 working copy, say).
        """
        net = self.model if model is None else model
        if len(ids) == 0:
            return torch.zeros((0, self.num_labels))

        def run(sel: np.ndarray) -> Any:
            input_ids, mask = pad_batch([ids[i] for i in sel], self.tokenizer.pad_id)
            tt = pad_types([types[i] for i in sel], input_ids.shape[1])
            tokens = net(torch.from_numpy(input_ids), torch.from_numpy(mask), torch.from_numpy(tt), first_only=True)
            return self._head(tokens, getattr(net, "pooler", None))  # (rows, num_labels)

        return self._pieced(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), min_rows, run)

    def _head_modules(self) -> list[Any]:
        return [self.classifier]  # BERT's pooler is part of the transformer

    def with_options(self, **options: Any) -> CrossEncoder:
        """A new cross-encoder sharing the weights, with other backend/precision/... options."""
        return self._copy_with(dict(num_labels=self.num_labels, classifier=self.classifier, activation=self.activation,
                                    labels=self.labels, exact_top=self.exact_top, exact_margin=self.exact_margin,
                                    doc_stride=self.doc_stride, name=self.name, source=self.source), options)

    # ----------------------------------------------------------------------------------- persistence
    @classmethod
    def from_pretrained_encoder(cls, path: str | os.PathLike[str], *, num_labels: int = 1, pooler: str = "identity",
                                seed: int = 0, **options: Any) -> CrossEncoder:
        """A new cross-encoder from a BERT or bi-encoder folder (all-MiniLM-L6-v2 ...): the transformer's
        weights, a fresh classifier, and BERT's pooler set by ``pooler``:

        * ``identity`` (default): dense = identity, bias 0, so the head first sees ``tanh(h_cls)``.
          all-MiniLM-L6-v2's pooler was never trained (bias all zero, weight std 0.009): kept, it
          shrinks ``[CLS]`` about 100-fold and the new head learns from tiny inputs;
        * ``keep``: the checkpoint's pooler as it is; ``random``: N(0, 0.02).
        """
        if pooler not in ("identity", "keep", "random"):
            raise ConfigError(f"pooler must be 'identity', 'keep' or 'random'. Got {pooler!r}.")
        folder = _transformer_dir(Path(path))
        config = BertConfig.from_json_file(folder / "config.json")
        weights = folder / "model.safetensors"
        check_config_fits(config, weights)
        keep = pooler == "keep" and has_pooler(weights)
        model = load_weights(BertModel(config, add_pooler=keep), weights)
        if model.pooler is None:
            model.pooler = BertPooler(config)
        if pooler == "identity":
            identity_pooler(model.pooler)
        elif pooler == "random":
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                model.pooler.dense.weight.normal_(0.0, config.initializer_range, generator=gen)
                model.pooler.dense.bias.zero_()
        classifier = nn.Linear(config.hidden_size, int(num_labels))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            classifier.weight.normal_(0.0, config.initializer_range, generator=gen)
            classifier.bias.zero_()
        options.setdefault("name", Path(path).name)
        return cls(model, WordPiece.from_file(folder), num_labels=int(num_labels), classifier=classifier,
                   source=str(path), **options)

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str], **options: Any) -> CrossEncoder:
        """Load a sentence-transformers CrossEncoder / Hugging Face ``BertForSequenceClassification`` folder.

        ``options`` override what the folder says (``activation``, ``max_seq_length``, ``backend`` ...).
        Folders saved by embedstack are checked against their ``embedstack.json`` checksums unless
        ``verify=False`` or ``EMBEDSTACK_VERIFY=0``.
        """
        from safetensors import safe_open

        from embedstack.io import verify_files
        from embedstack.neural.sentence import _read_json_opt

        root = Path(path)
        verify = options.pop("verify", None)
        if not root.is_dir():
            raise FormatError(f"Model folder {root} does not exist.")
        verify_files(root, _read_json_opt(root / "embedstack.json"), verify=verify)
        folder = _transformer_dir(root)
        raw = _read_json_opt(folder / "config.json")
        config = BertConfig.from_json_file(folder / "config.json")
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise FormatError(f"Missing weights file {weights}: the folder has config.json but no model.safetensors.")
        check_config_fits(config, weights)
        try:
            with safe_open(str(weights), framework="pt") as fh:
                keys = set(fh.keys())
                head = {k: fh.get_tensor(k) for k in ("classifier.weight", "classifier.bias") if k in keys}
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise FormatError(f"Cannot read {weights} as safetensors ({exc}); re-save or re-download it.") from None
        if len(head) != 2:
            raise FormatError(f"{weights} has no classifier head (classifier.weight / classifier.bias): it is not a "
                              "cross-encoder. Start one from it with CrossEncoder.from_pretrained_encoder(...) or "
                              "`embedstack train cross-encoder --model ...`.")
        num_labels = int(head["classifier.weight"].shape[0])
        id2label = raw["id2label"] if isinstance(raw.get("id2label"), dict) else {}
        labels = [str(id2label.get(str(i), f"LABEL_{i}")) for i in range(num_labels)]
        model = load_weights(BertModel(config, add_pooler=has_pooler(weights)), weights)
        classifier = nn.Linear(config.hidden_size, num_labels)
        if tuple(head["classifier.weight"].shape) != (num_labels, config.hidden_size):
            raise FormatError(f"{weights}: classifier.weight has shape {tuple(head['classifier.weight'].shape)}; "
                              f"config.json implies hidden size {config.hidden_size}.")
        with torch.no_grad():
            classifier.weight.copy_(head["classifier.weight"].float())
            classifier.bias.copy_(head["classifier.bias"].float())
        st = _read_json_opt(root / "config_sentence_transformers.json")
        act_name = st.get("activation_fn") or raw.get("sbert_ce_default_activation_function")
        activation = None
        if isinstance(act_name, str) and act_name:
            activation = _ST_ACTIVATION_NAMES.get(act_name.rsplit(".", 1)[-1].lower())
            if activation is None and "activation" not in options:
                raise FormatError(f"{root}: activation {act_name!r} is not supported (supported: "
                                  f"{', '.join(ACTIVATIONS)}); pass activation=... to override.")
        st_cfg = _read_json_opt(folder / "sentence_bert_config.json")
        tok_cfg = _read_json_opt(folder / "tokenizer_config.json")
        max_len = st_cfg.get("max_seq_length") or tok_cfg.get("model_max_length") or 512
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 4:
            max_len = 512
        ours = _read_json_opt(root / "embedstack.json")
        kwargs: dict[str, Any] = {"num_labels": num_labels, "classifier": classifier, "activation": activation,
                                  "labels": labels, "max_seq_length": min(max_len, config.max_position_embeddings),
                                  "name": ours.get("name") if isinstance(ours.get("name"), str) else root.name,
                                  "source": str(root)}
        stride = ours.get("doc_stride")  # how the model reads long documents, saved with it (our folders only)
        if isinstance(stride, int) and not isinstance(stride, bool):
            kwargs["doc_stride"] = stride
        kwargs.update(options)
        ce = cls(model, WordPiece.from_file(folder), **kwargs)
        ce.folder = root
        return ce

    def save(self, path: str | os.PathLike[str], *, force: bool = False,
             extra: Callable[[Path], None] | None = None) -> Path:
        """Write a folder that sentence-transformers' ``CrossEncoder`` and Hugging Face
        ``AutoModelForSequenceClassification`` load (and :meth:`from_folder`), atomically.

        ``extra`` is called with the temporary folder to add files of its own before the swap.
        """
        from safetensors.torch import save_file

        from embedstack.io import SENTENCE_MODEL, file_checksums
        from embedstack.neural.sentence import _version

        # the same kind as a bi-encoder folder: both are sentence-transformers models (embedstack.json marker)
        with atomic_dir(path, kind=SENTENCE_MODEL, force=force) as tmp:
            cfg = self.model.config.to_dict()
            cfg["architectures"] = ["BertForSequenceClassification"]
            cfg["id2label"] = {str(i): name for i, name in enumerate(self.labels)}
            cfg["label2id"] = {name: i for i, name in enumerate(self.labels)}
            cfg["sbert_ce_default_activation_function"] = ACTIVATIONS[self.activation]  # sentence-transformers < 4
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
            tensors = {f"bert.{k}": v.detach().float().contiguous().cpu() for k, v in self.model.state_dict().items()}
            tensors.update({f"classifier.{k}": v.detach().float().contiguous().cpu()
                            for k, v in self.classifier.state_dict().items()})
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            self.tokenizer.save(tmp, model_max_length=self.max_seq_length)
            st = {"activation_fn": ACTIVATIONS[self.activation], "model_type": "CrossEncoder",
                  "__version__": {"embedstack": _version()}}
            (tmp / "config_sentence_transformers.json").write_text(json.dumps(st, indent=2), encoding="utf-8")
            if extra is not None:
                extra(tmp)
            ours = {"name": self.name, "kind": "cross-encoder", "max_seq_length": self.max_seq_length,
                    **({} if self.doc_stride is None else {"doc_stride": self.doc_stride}),
                    "format_version": 1, "files": file_checksums(tmp, exclude=("embedstack.json",))}
            (tmp / "embedstack.json").write_text(json.dumps(ours, indent=2), encoding="utf-8")
        self.folder = Path(path)
        return Path(path)


def identity_pooler(pooler: BertPooler) -> BertPooler:
    """Set BERT's pooler to dense = identity, bias 0 (it then gives ``tanh(h_cls)``)."""
    with torch.no_grad():
        pooler.dense.weight.copy_(torch.eye(pooler.dense.weight.shape[0]))
        pooler.dense.bias.zero_()
    return pooler


def _transformer_dir(folder: Path) -> Path:
    """Where config.json and the weights are: the folder itself, or its Transformer module's sub-folder."""
    from embedstack.neural.sentence import _read_modules

    if (folder / "config.json").is_file():
        return folder
    for entry in _read_modules(folder):
        if str(entry.get("type", "")).endswith("Transformer"):
            return folder / entry.get("path", "")
    raise FormatError(f"{folder} holds no config.json: not a BERT / cross-encoder model folder.")
