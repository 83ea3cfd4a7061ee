"""The ladder: every generation implemented so far, run on the same data, in one table.

Each rung is a :class:`LadderRow` in :data:`LADDER_ROWS`. Areas append their rows (word vectors,
transformers, hybrids) with :func:`add_row`; the ladder resolves each row's model SPEC through
:func:`embedstack.models.resolve` and runs

* retrieval on BEIR SciFact (the train queries, the only judged split available here), and
* STS-B test (cosine vs gold, Spearman x100) for rows with ``sts=True``,

reporting quality beside cost: nDCG@10, Recall@100, STS-B Spearman, build time (fit + encode the
corpus + build the index), query latency and bytes per document. A row whose requirements are
missing (an extra not installed, vectors not trained) is shown with the reason instead of numbers.
When the datasets cannot be reached the ladder runs on the small sample bundled with embedstack
(``embedstack.data.sample_retrieval`` / ``sample_sts``) and says so in the report.

``quick=True`` (``embedstack ladder --quick``, ``make demo``) still shows every era, on bounded work that
the report states: :data:`QUICK_QUERIES` queries and :data:`QUICK_PAIRS` STS pairs spread evenly over the files (all the
documents); static rows on vectors trained here on the first :data:`QUICK_STATIC_WORDS` words of enwiki
(once: they are kept in the cache); transformer rows with texts cut at :data:`QUICK_MAX_TOKENS` tokens,
in ``bf16-pure`` where the CPU has bf16 matmuls. Transformer vectors go through the embedding cache
(:mod:`embedstack.evaluation.cache`, keyed by model, settings and text), and a miss computes CLS, mean and
max pooling from one forward pass, so the three pooling rows cost one encode and a second run none.

Example:
    >>> from embedstack.evaluation.ladder import LadderRow, run_ladder
    >>> rows = [LadderRow("BM25", "bm25", era="counting")]
    >>> report = run_ladder(rows, quick=True, sample=True)  # doctest: +SKIP
    >>> report.results[0].status  # doctest: +SKIP
    'ok'
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from embedstack._threads import available_cores
from embedstack.errors import ConfigError, DatasetError, EmbedstackError, InputError

__all__ = [
    "LadderRow",
    "LadderResult",
    "LadderData",
    "LadderReport",
    "LADDER_ROWS",
    "QUICK_QUERIES",
    "QUICK_PAIRS",
    "QUICK_STATIC_WORDS",
    "QUICK_MAX_TOKENS",
    "POOLINGS",
    "slice_vectors",
    "write_plot",
    "LEGEND",
    "ERA_ORDER",
    "add_row",
    "describe_rows",
    "requires_modules",
    "requires_path",
    "load_ladder_data",
    "run_ladder",
]

#: Judged queries / STS pairs used by ``--quick`` (spread evenly over the file, see :func:`spread_indices`).
QUICK_QUERIES = 300
QUICK_PAIRS = 500
#: ``--quick``: static vectors are trained on the first this many enwiki words (about 20-40 s each on 2 cores).
QUICK_STATIC_WORDS = 1_000_000
#: ``--quick``: transformer inputs are cut at this many tokens (SciFact abstracts average ~300).
QUICK_MAX_TOKENS = 128
#: The poolings computed together (one forward pass) when a transformer's vectors are not cached.
POOLINGS = ("cls", "mean", "max")

#: How to read the cost columns (printed under the table and in the Markdown report).
LEGEND = ("Build s = fit + encode the corpus + build the index. ms/query = median time to answer one query "
          "alone (encode + search + top-k); rows marked 'batched' report the batched time per query. "
          "bytes/doc = size of the index structure / number of documents.")

#: ``progress(row_label, stage, done, total)``
LadderProgress = Callable[[str, str, int, int], None]


@dataclass(frozen=True)
class LadderRow:
    """One rung of the ladder.

    Args:
        label: what the table shows ("BM25 (stemmed)").
        spec: model SPEC for :func:`embedstack.models.resolve` ("bm25", "lsa:256", a model name ...).
        era: "counting", "static", "transformer", "hybrid" ...
        retrieval: run the retrieval task.
        sts: run STS-B (for encoders whose cosine means similarity).
        available: returns None when the row can run, else the reason it cannot (shown in the table).
        quick: include the row in ``--quick`` runs (set False for rows that take minutes).
        index: dense index spec for retrieval (``embedstack.index.from_spec``); None = exact scan.
        retrieve: custom retrieval runner ``(dataset, progress) -> dict`` returning the keys of
            :func:`embedstack.evaluation.runners.evaluate_retrieval` (for pipelines such as hybrids
            that are not a single encoder); ``spec`` is then only displayed.
        note: a remark shown in the report (below the table in the terminal).
        quick_spec: ``(data, progress) -> (spec, note)`` used instead of ``spec`` in ``--quick`` runs
            (e.g. train word vectors on a slice of enwiki once and point at them); ``note`` says what it did.

    Example:
        >>> LadderRow("TF-IDF", "tfidf", era="counting", sts=True).label
        'TF-IDF'
    """

    label: str
    spec: str
    era: str
    retrieval: bool = True
    sts: bool = False
    available: Callable[[], str | None] | None = None
    quick: bool = True
    index: str | None = None
    retrieve: Callable[..., dict[str, Any]] | None = None
    note: str = ""
    quick_spec: Callable[[Any, Callable[[str, int, int], None]], tuple[str, str]] | None = None


@dataclass
class LadderResult:
    """What one row produced: ``status`` is "ok", "skipped" or "failed" (with ``reason``)."""

    label: str
    spec: str
    era: str
    status: str = "ok"
    reason: str = ""
    ndcg10: float | None = None
    recall100: float | None = None
    mrr10: float | None = None
    sts_spearman: float | None = None
    build_seconds: float | None = None
    latency_ms: float | None = None
    single_query_ms: float | None = None
    bytes_per_doc: float | None = None
    retrieval: dict[str, Any] = field(default_factory=dict)
    sts: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    cached: bool = False  # corpus vectors came from the embedding cache (or the shared pooling pass)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LadderData:
    """The datasets a ladder run uses, and human-readable names for the report."""

    retrieval: Any
    retrieval_name: str
    sts: Any | None
    sts_name: str
    sample: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class LadderReport:
    """The outcome of :func:`run_ladder`."""

    results: list[LadderResult]
    data: LadderData
    quick: bool
    seconds: float
    not_selected: list[str] = field(default_factory=list)
    full_only: list[str] = field(default_factory=list)  # quick=False rows left out of a --quick run

    @property
    def failed(self) -> list[LadderResult]:
        return [r for r in self.results if r.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "sample_data": self.data.sample,
            "retrieval_dataset": self.data.retrieval_name,
            "sts_dataset": self.data.sts_name,
            "notes": list(self.data.notes),
            "seconds": self.seconds,
            "not_selected": list(self.not_selected),
            "full_run_only": list(self.full_only),
            "rows": [r.to_dict() for r in self.results],
        }

    def table_rows(self) -> list[list[str]]:
        """Formatted cells: era, model, nDCG@10, Recall@100, STS-B, build s, latency ms, bytes/doc, note."""
        out = []
        for r in self.results:
            if r.status != "ok":
                cells = ["—"] * 6
                note = f"{r.status}: {r.reason}"
            else:
                ms = _fmt(r.single_query_ms, "{:.2f}")
                if r.single_query_ms is None and r.latency_ms is not None:
                    ms = _fmt(r.latency_ms, "{:.2f}") + " (batched)"
                cells = [_fmt(r.ndcg10, "{:.3f}"), _fmt(r.recall100, "{:.3f}"), _fmt(r.sts_spearman, "{:.1f}"),
                         _fmt(r.build_seconds, "{:.2f}") + ("*" if r.cached else ""), ms, _fmt_bytes(r.bytes_per_doc)]
                note = r.note
            out.append([r.era, r.label, *cells, note])
        return out

    def to_markdown(self) -> str:
        """The report as a Markdown section (a table plus the data notes)."""
        head = ["era", "model", "nDCG@10", "Recall@100", "STS-B ρ×100", "build s", "ms/query", "bytes/doc", "note"]
        lines = [f"Retrieval: {self.data.retrieval_name}. STS: {self.data.sts_name}.", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for cells in self.table_rows():
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines.append("")
        lines += [f"- {n}" for n in self.data.notes]
        if self.not_selected:
            lines.append(f"- Rows not selected for this run (--only): {'; '.join(self.not_selected)}.")
        if self.full_only:
            lines.append(f"- Full run only (not in --quick): {'; '.join(self.full_only)}.")
        if any(r.cached for r in self.results):
            lines.append(f"- {CACHED_NOTE}")
        lines.append(f"- {'Quick' if self.quick else 'Full'} run, {self.seconds:.0f} s in total. {LEGEND}")
        return "\n".join(lines) + "\n"

    def compact(self) -> tuple[list[list[str]], list[str]]:
        """The table for a 100-column terminal and the notes printed below it.

        Cells: era, model, nDCG@10, R@100, STS, build s, ms/query, bytes/doc, and a short note (a
        skip reason cut to its gist, or ``[n]`` pointing at note n below the table).
        """
        rows: list[list[str]] = []
        notes: list[str] = []
        for r, cells in zip(self.results, self.table_rows(), strict=True):
            cells = list(cells)
            if r.status == "failed":
                short, full = "", f"failed: {r.reason}"
            elif r.status != "ok":
                short, full = _short_reason(r.reason), f"{r.status}: {r.reason}"
            else:
                short, full = "", r.note
            if full:
                if full not in notes:  # rows with the same reason share one note
                    notes.append(full)
                short = (short + " " if short else "") + f"[{notes.index(full) + 1}]"
            cells[-1] = f"failed {short}" if r.status == "failed" else short
            cells[6] = cells[6].replace(" (batched)", " b")
            rows.append(cells)
        return rows, notes


#: Printed under a table where a build time carries ``*``.
CACHED_NOTE = ("build s marked * = the corpus vectors came from the embedding cache (an earlier run, or the "
               "CLS/mean/max pass shared by the pooling rows), so it is the time to read them, not to encode.")

_SHORT = (("full run only", "full run only"), ("pretrain it", "not pretrained"), ("vectors at", "no vectors"),
          ("pip install", "extra missing"), ("not reachable", "no data"), ("DatasetError", "no data"),
          ("MissingExtra", "extra missing"))


def _short_reason(reason: str) -> str:
    """A skip/failure reason cut to a few words for the table (the full text goes below it)."""
    for needle, short in _SHORT:
        if needle in reason:
            if short == "extra missing" and "embedstack[" in reason:
                return "needs [" + reason.split("embedstack[", 1)[1].split("]", 1)[0] + "]"
            return short
    head = reason.split(":", 1)[0].strip()
    return head if len(head) <= 18 else head[:17] + "…"


def _fmt(v: float | None, pattern: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return pattern.format(v)


def _fmt_bytes(v: float | None) -> str:
    if v is None:
        return "—"
    for unit in ("B", "KB", "MB"):
        if v < 1024 or unit == "MB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} MB"  # pragma: no cover


# --------------------------------------------------------------------------- availability helpers


def requires_modules(*modules: tuple[str, str]) -> Callable[[], str | None]:
    """An ``available`` check: each ``(module, extra)`` must be importable.

    Example:
        >>> check = requires_modules(("numpy", "core"))
        >>> check() is None
        True
    """

    def check() -> str | None:
        for mod, extra in modules:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"needs {mod} (pip install 'embedstack[{extra}]')"
        return None

    return check


def requires_path(path: str | os.PathLike[str], hint: str = "") -> Callable[[], str | None]:
    """An ``available`` check: ``path`` (``~`` and ``$VARS`` expanded) must exist, e.g. trained vectors.

    Example:
        >>> requires_path("/no/such/vectors", "train them with `embedstack train word2vec`")()
        'not found: /no/such/vectors (train them with `embedstack train word2vec`)'
    """

    def check() -> str | None:
        p = os.path.expanduser(os.path.expandvars(os.fspath(path)))
        if os.path.exists(p):
            return None
        return f"not found: {p}" + (f" ({hint})" if hint else "")

    return check


def _static_quick_spec(kind: str, spec: str) -> Callable[[Any, Callable[[str, int, int], None]], tuple[str, str]]:
    """The ``quick_spec`` of a static row: :func:`slice_vectors` for ``kind``/``spec``."""
    return lambda data, cb: slice_vectors(kind, spec, data, cb)


def _static_available(kind: str) -> Callable[[], str | None]:
    """The ``available`` check of a static row: ``embedstack.static.specs.available(kind)``, imported when called."""
    return lambda: importlib.import_module("embedstack.static.specs").available(kind)()


LADDER_RERANK_K = 100  # hits the cross-encoder rows rerank (BENCHMARKS.md, train_reranker: chosen on tune-dev)
LADDER_RERANK_FUSION = "convex-z:0.7"  # the reranker's score blended with the first stage's (chosen on tune-dev)

# The counting era. Other eras append their rows at the end of this list (or call add_row from their
# own module); the table shows rows in list order.
LADDER_ROWS: list[LadderRow] = [
    LadderRow("Bag of words", "bow", era="counting", sts=True,
              available=requires_modules(("embedstack.count", "core"))),
    LadderRow("TF-IDF", "tfidf", era="counting", sts=True,
              available=requires_modules(("embedstack.count", "core"))),
    LadderRow("BM25 (stemmed)", "bm25", era="counting",
              available=requires_modules(("embedstack.count", "core"), ("Stemmer", "core"))),
    LadderRow("BM25 (no stem)", "bm25-nostem", era="counting",
              available=requires_modules(("embedstack.count", "core"))),
    LadderRow("LSA-256", "lsa:256", era="counting", sts=True,
              available=requires_modules(("embedstack.count", "core"))),
    # static word vectors (pooled); vectors come from `embedstack train word2vec|fasttext|glove enwiki`; --quick
    # trains them on the first QUICK_STATIC_WORDS words of enwiki instead (once, kept in the cache)
    *[LadderRow(label, spec, era="static", sts=True, quick_spec=_static_quick_spec(kind, spec),
                available=_static_available(kind))
      for label, spec, kind in (("word2vec SG, mean", "word2vec", "word2vec"),
                                ("word2vec SG, SIF", "word2vec:,pool=sif", "word2vec"),
                                ("fastText SG, mean", "fasttext", "fasttext"),
                                ("GloVe, SIF", "glove:,pool=sif", "glove"))],
    LadderRow("BM25 + MiniLM (RRF)", "bm25 + all-MiniLM-L6-v2", era="hybrid",
              retrieve=lambda ds, cb, resolve=None: importlib.import_module(
                  "embedstack.retrieval.evaluate").evaluate_pipeline(["bm25", "all-MiniLM-L6-v2"], ds, fusion="rrf",
                                                                     progress=cb, resolve=resolve),
              available=requires_modules(("embedstack.neural", "torch"), ("torch", "torch")),
              note="reciprocal rank fusion (k=60) of BM25 and MiniLM (mean pooling) top-100"),
    # transformers (embedstack.neural): our BERT encoder; specs are NAME[@option=value,...]
    *[LadderRow(f"MiniLM-L6, {pool} pooling", f"all-MiniLM-L6-v2@pooling={pool}", era="transformer", sts=True,
                available=lambda: importlib.import_module("embedstack.neural.specs").available()(),
                note="all-MiniLM-L6-v2 weights in our encoder" + (" (its trained pooling)" if pool == "mean" else ""))
      for pool in POOLINGS],
    LadderRow("MiniLM-L6, onnx int8", "all-MiniLM-L6-v2@backend=onnx,precision=int8", era="transformer", sts=True,
              quick=False, available=lambda: importlib.import_module("embedstack.neural.specs").available()(),
              note="onnxruntime: attention projections int8, feed-forward fp32"),
    LadderRow("MiniLM-L6, bf16", "all-MiniLM-L6-v2@precision=bf16", era="transformer", sts=True,
              quick=False, available=lambda: importlib.import_module("embedstack.neural.specs").available()(),
              note="torch autocast bfloat16 (AMX / AVX-512 BF16 matmuls)"),
    # fine-tuned here (`embedstack recipe NAME`; skipped until built)
    LadderRow("MiniLM-L6 + STS-B CoSENT (ours)", "recipe:minilm-stsb-cosent", era="transformer", sts=True, quick=False,
              available=lambda: _recipe_available("minilm-stsb-cosent"),
              note="all-MiniLM-L6-v2 fine-tuned on STS-B train by `embedstack recipe minilm-stsb-cosent`"),
    LadderRow("MiniLM-L6 + SciFact MNRL (ours)", "recipe:minilm-scifact", era="transformer", sts=True, quick=False,
              available=lambda: _recipe_available("minilm-scifact"),
              retrieve=lambda ds, cb, resolve=None: _report_half_retrieval("recipe:minilm-scifact", ds, cb, resolve),
              note="`embedstack recipe minilm-scifact`: trained on the tune half of SciFact's train queries, so its "
                   "nDCG/recall are on the report half only (all-MiniLM-L6-v2 on that half: BENCHMARKS.md, "
                   "train_retrieval)"),
    # retrieve-then-rerank with the cross-encoder trained here (on tune-train, inside the tune half: scored on the
    # report half only)
    LadderRow("BM25 → cross-encoder (ours)", "bm25 → recipe:minilm-scifact-ce", era="hybrid", quick=False,
              available=lambda: _recipe_available("minilm-scifact-ce"),
              retrieve=lambda ds, cb, resolve=None: _report_half_reranked(["bm25"], ds, cb, resolve),
              note=f"BM25's top {LADDER_RERANK_K} reranked by `embedstack recipe minilm-scifact-ce` (abstracts read as "
                   "windows of 128 tokens), its score blended with "
                   f"BM25's ({LADDER_RERANK_FUSION}, chosen on tune-dev); trained on 70% of the tune half of SciFact's "
                   "train queries: report half only (BENCHMARKS.md, train_reranker: the same without blending)"),
    LadderRow("BM25 + MiniLM (RRF) → cross-encoder (ours)", "bm25 + all-MiniLM-L6-v2 → recipe:minilm-scifact-ce",
              era="hybrid", quick=False, available=lambda: _recipe_available("minilm-scifact-ce"),
              retrieve=lambda ds, cb, resolve=None: _report_half_reranked(["bm25", "all-MiniLM-L6-v2"], ds, cb, resolve),
              note=f"the RRF hybrid's top {LADDER_RERANK_K} reranked by the same cross-encoder, blended "
                   f"({LADDER_RERANK_FUSION}) with the hybrid's score (report half only)"),
    # late interaction and learned sparse retrieval trained here (on tune-train: report half only)
    LadderRow("ColBERT, MiniLM (ours)", "recipe:minilm-scifact-colbert", era="late interaction", quick=False,
              available=lambda: _recipe_available("minilm-scifact-colbert"),
              retrieve=lambda ds, cb, resolve=None: _report_half_retrieval("recipe:minilm-scifact-colbert", ds, cb,
                                                                           resolve),
              note="`embedstack recipe minilm-scifact-colbert`: 128-d token vectors, exact MaxSim over every abstract; "
                   "report half only (BENCHMARKS.md, train_colbert: the compressed index)"),
    LadderRow("SPLADE, MiniLM (ours)", "recipe:minilm-scifact-splade", era="learned sparse", quick=False,
              available=lambda: _recipe_available("minilm-scifact-splade"),
              retrieve=lambda ds, cb, resolve=None: _report_half_retrieval("recipe:minilm-scifact-splade", ds, cb,
                                                                           resolve),
              note="`embedstack recipe minilm-scifact-splade` (on recipe:minilm-mlm-head): MLM-head term weights, "
                   "sparse dot product; report half only (BENCHMARKS.md, train_splade)"),
    *[LadderRow(f"small MLM BERT (ours), {pool}", f"embedstack/mlm-bert-enwiki@pooling={pool}", era="transformer",
                sts=True, note="raw MLM BERT pretrained from scratch on enwiki by `embedstack train mlm` "
                "(size and steps: its training.json)",
                available=lambda: importlib.import_module("embedstack.neural.specs").available(
                    "embedstack/mlm-bert-enwiki")())
      for pool in POOLINGS],
    LadderRow("ELMo (ours), scalar mix, mean", "recipe:elmo-enwiki", era="contextual", sts=True, quick=False,
              available=lambda: _recipe_available("elmo-enwiki"),
              note="`embedstack recipe elmo-enwiki`: char CNN + 2-layer biLSTM LM trained here on enwiki within a time "
                   "budget; equal-weight mix of its 3 layers, mean over words (BENCHMARKS.md, train_elmo)"),
    # whitening (embedstack.geometry, Su et al. 2021), fitted without labels on what is evaluated (the corpus, the
    # STS sentences), like LSA; k chosen on STS-B dev and SciFact's tune half (BENCHMARKS.md, geometry_whitening)
    *[LadderRow(f"small MLM BERT (ours), {pool}, whitened k=128", f"whiten:128:recipe:bert-mlm-small@pooling={pool}",
                era="transformer", sts=True, quick=False, available=lambda: _recipe_available("bert-mlm-small"),
                note="`embedstack recipe bert-mlm-small` + whitening to 128 dims (the k chosen on dev/tune); the "
                "seed's anisotropy fix")
      for pool in ("cls", "mean")],
]


def _recipe_available(name: str) -> str | None:
    reason: str | None = importlib.import_module("embedstack.neural.specs").available()()
    if reason:
        return reason
    from embedstack.training.recipes import recipe_dir

    folder = recipe_dir(name)
    built = (folder / "embedstack.json").is_file() or (folder / "manifest.json").is_file()  # model folder / component
    return None if built else f"build it: embedstack recipe {name}"


def _report_half_reranked(specs: list[str], ds: Any, cb: Any, resolve: Any = None) -> dict[str, Any]:
    """A first stage reranked (top :data:`LADDER_RERANK_K`) by the cross-encoder recipe, its score blended with
    the first stage's (:data:`LADDER_RERANK_FUSION`), on the report half."""
    from embedstack.retrieval.evaluate import evaluate_pipeline
    from embedstack.training.evaluators import query_half

    held_out = query_half(ds, "report") if str(getattr(ds, "name", "")).lower().startswith("scifact") else ds
    return evaluate_pipeline(specs, held_out, fusion="rrf", progress=cb, resolve=resolve,
                             reranker="recipe:minilm-scifact-ce@precision=bf16",  # abstracts in windows of 128
                             rerank_k=LADDER_RERANK_K, rerank_fusion=LADDER_RERANK_FUSION)


def _report_half_retrieval(spec: str, ds: Any, cb: Any, resolve: Any = None) -> dict[str, Any]:
    """Retrieval of a model trained on the tune half of SciFact's queries, scored on the report half only."""
    from embedstack.evaluation.runners import evaluate_retrieval
    from embedstack.models import resolve as resolve_spec
    from embedstack.training.evaluators import query_half

    encoder = resolve(spec, transformer=True) if resolve is not None else resolve_spec(spec)
    held_out = query_half(ds, "report") if str(getattr(ds, "name", "")).lower().startswith("scifact") else ds
    return evaluate_retrieval(encoder, held_out, progress=cb)


# --------------------------------------------------------------------------- --quick: static vectors on a slice

# fastText: 200k n-gram buckets (not 2M: 80 MB of n-gram vectors instead of 800 MB to write and read back)
_SLICE_OPTIONS: dict[str, dict[str, Any]] = {"word2vec": {}, "fasttext": {"bucket": 200_000}, "glove": {"epochs": 10}}


def _slice_texts(source: Any, words: int) -> Iterator[str]:
    """Texts from ``source`` until about ``words`` whitespace-separated words have been given."""
    from embedstack.data import iter_texts

    seen = 0
    for text in (iter_texts(source) if isinstance(source, str) else source):
        yield text
        seen += len(text.split())
        if seen >= words:
            return


def slice_vectors(kind: str, spec: str, data: Any, progress: Callable[[str, int, int], None] | None = None,
                  *, words: int | None = None) -> tuple[str, str]:
    """``--quick`` static rows: vectors trained on a slice, once; returns ``(spec, note)``.

    The first ``words`` (default :data:`QUICK_STATIC_WORDS`) words of enwiki (on the bundled sample, or
    when enwiki cannot be found: the retrieval corpus's own documents) train ``kind`` vectors (defaults of ``embedstack train``; GloVe 10 epochs) into
    ``<cache>/vectors/KIND-enwiki-slice-<words>`` and later runs reuse them (a folder that does not load is
    trained again). ``spec``'s options (``,pool=sif``) are kept; the note says what was trained and how long
    it took.
    """
    from embedstack.data._registry import cache_dir
    from embedstack.static import specs as static_specs

    words = QUICK_STATIC_WORDS if words is None else int(words)
    on_docs = bool(getattr(data, "sample", False))
    if not on_docs:
        from embedstack.data._registry import resolve_dataset

        try:
            resolve_dataset("enwiki")
        except DatasetError:  # no enwiki here (it is not downloadable): the corpus's own documents
            on_docs = True
    n_docs = len(data.retrieval.doc_ids())
    source = f"docs{n_docs}" if on_docs else "enwiki"
    folder = cache_dir() / "vectors" / f"{kind}-{source}-slice-{words}"
    _, opts = static_specs.parse_options(spec.partition(":")[2])
    row_spec = f"{kind}:{folder}" + "".join(f",{k}={v}" for k, v in opts.items())
    what = (f"the {n_docs:,} retrieval documents (no enwiki found)" if on_docs and not data.sample
            else "the bundled sample's documents" if on_docs else f"the first {words / 1e6:.1f}M words of enwiki")
    if folder.exists():
        try:
            from embedstack.io import read_manifest, verify_files

            manifest = read_manifest(folder)
            verify_files(folder, manifest)  # a damaged folder is trained again, never trusted
            meta = (manifest.get("state") or manifest.get("config") or {}).get("meta") or {}
            secs = meta.get("ladder_seconds", meta.get("seconds"))
            took = f" in {secs:.0f} s" if isinstance(secs, int | float) else ""
            return row_spec, f"{kind} vectors trained{took} on {what} by an earlier --quick run ({folder})"
        except EmbedstackError as exc:
            warnings.warn(f"retraining {kind} slice vectors: {folder} does not load ({_first_line(exc)}).",
                          RuntimeWarning, stacklevel=2)
    from embedstack.static._corpus import IdCorpus

    trainer_cls = {"word2vec": "Word2Vec", "fasttext": "FastText", "glove": "GloVe"}[kind]
    trainer = getattr(importlib.import_module(f"embedstack.static.{kind}"), trainer_cls)(**_SLICE_OPTIONS[kind])
    t0 = time.perf_counter()
    stage = f"train {kind} on {'the documents' if on_docs else f'{words / 1e6:.1f}M enwiki words'}"
    if progress is not None:
        progress(stage, 0, 1)
    texts = data.retrieval.doc_texts() if on_docs else "enwiki"
    corpus = IdCorpus.build(_slice_texts(texts, words), analyzer=trainer.analyzer, min_count=trainer.min_count,
                            max_vocab=trainer.max_vocab, max_sentence_length=trainer.max_sentence_length)

    def on_train(p: dict[str, Any]) -> None:
        if progress is not None and p.get("total"):
            progress(stage, int(p["done"]), int(p["total"]))

    trainer.fit(corpus, progress=on_train)
    secs = time.perf_counter() - t0
    trainer.wv_.meta["ladder_seconds"] = round(secs, 2)
    trainer.wv_.meta["ladder_slice"] = {"source": source, "words": words, "raw_words": corpus.raw_words}
    trainer.save(folder, force=folder.exists())
    extra = "".join(f", {k} {v:,}" for k, v in _SLICE_OPTIONS[kind].items() if k != "epochs")
    return row_spec, (f"{kind} vectors trained here in {secs:.0f} s on {what} ({corpus.raw_words:,} tokens, "
                      f"{len(corpus.vocab):,} words, dim {trainer.dim}, {trainer.epochs} epochs{extra}); kept in {folder}")


def add_row(row: LadderRow) -> None:
    """Append ``row`` to :data:`LADDER_ROWS` (replacing a row with the same label)."""
    for i, r in enumerate(LADDER_ROWS):
        if r.label == row.label:
            LADDER_ROWS[i] = row
            return
    LADDER_ROWS.append(row)


# --------------------------------------------------------------------------- data


@contextlib.contextmanager
def _offline(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    old = os.environ.get("EMBEDSTACK_OFFLINE")
    os.environ["EMBEDSTACK_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("EMBEDSTACK_OFFLINE", None)
        else:
            os.environ["EMBEDSTACK_OFFLINE"] = old


def load_ladder_data(*, quick: bool = False, sample: bool = False, download: bool = False,
                     max_queries: int | None = None, max_pairs: int | None = None,
                     retrieval: str = "scifact", retrieval_split: str = "train",
                     sts: str = "stsb", sts_split: str = "test") -> LadderData:
    """Find the ladder's datasets, falling back to the bundled sample when they cannot be reached.

    Args:
        quick: keep :data:`QUICK_QUERIES` queries / :data:`QUICK_PAIRS` pairs spread evenly over the files.
        sample: use the bundled sample without looking for the real data.
        download: allow downloads (otherwise only local copies and the cache are used).
        max_queries / max_pairs: explicit limits (override ``quick``).
        retrieval / retrieval_split / sts / sts_split: dataset names (or paths) and splits.
    """
    from embedstack import data as D

    notes: list[str] = []
    is_sample = False
    if sample:
        ds, rname = D.sample_retrieval(), "bundled sample corpus (embedstack.data.sample_retrieval)"
        sts_ds, sname = D.sample_sts(), "bundled sample pairs (embedstack.data.sample_sts)"
        is_sample = True
        notes.append("Ran on the small sample bundled with embedstack (--sample); numbers are a smoke test, "
                     "not comparable with published results.")
    else:
        with _offline(not download):
            try:
                ds = D.load_beir(retrieval, split=retrieval_split)
                rname = f"{retrieval} ({retrieval_split} queries)"
            except DatasetError as exc:
                ds, rname = D.sample_retrieval(), "bundled sample corpus (embedstack.data.sample_retrieval)"
                is_sample = True
                notes.append(f"{retrieval} was not reachable ({_first_line(exc)}); retrieval ran on the small "
                             "sample bundled with embedstack — set EMBEDSTACK_DATA_DIR for real numbers.")
            try:
                sts_ds = D.load_sts(sts, split=sts_split)
                sname = f"{sts} ({sts_split})"
            except DatasetError as exc:
                sts_ds, sname = D.sample_sts(), "bundled sample pairs (embedstack.data.sample_sts)"
                is_sample = True
                notes.append(f"{sts} was not reachable ({_first_line(exc)}); STS ran on the bundled sample "
                             "pairs — set EMBEDSTACK_DATA_DIR for real numbers.")
    nq_all = len(ds.query_ids())
    limit_q = max_queries if max_queries is not None else (QUICK_QUERIES if quick else None)
    if limit_q is not None and limit_q < nq_all:
        qids = ds.query_ids()
        ds = ds.subset_queries([qids[i] for i in spread_indices(nq_all, limit_q)])
        rname += f", {limit_q} of {nq_all} judged queries (evenly spaced)"
    n_pairs = len(sts_ds.s1)
    limit_p = max_pairs if max_pairs is not None else (QUICK_PAIRS if quick else None)
    if limit_p is not None and limit_p < n_pairs:
        from embedstack.data import STSDataset

        keep = spread_indices(n_pairs, limit_p)
        sts_ds = STSDataset([sts_ds.s1[i] for i in keep], [sts_ds.s2[i] for i in keep],
                            sts_ds.scores[keep])
        sname += f", {limit_p} of {n_pairs} pairs (evenly spaced)"
    return LadderData(ds, rname + f", {len(ds.doc_ids())} documents", sts_ds, sname, is_sample, notes)


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (first and last included), in order.

    Quick runs take these rather than the first ``k``: files such as STS-B test are ordered by genre,
    and their first 500 pairs (captions) are much easier than the whole set.

    Example:
        >>> spread_indices(10, 4)
        [0, 3, 6, 9]
    """
    if k >= n:
        return list(range(n))
    if k <= 1:
        return [0][:k]
    return [(i * (n - 1)) // (k - 1) for i in range(k)]


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip().splitlines()
    if not s:
        return type(exc).__name__
    return s[0] if len(s[0]) <= 220 else s[0][:219] + "…"


# --------------------------------------------------------------------------- running


#: Table order of the eras (the history's order); rows of other eras follow, each group in list order.
ERA_ORDER = ("counting", "static", "contextual", "transformer", "hybrid")


def _era_key(row: LadderRow) -> int:
    return ERA_ORDER.index(row.era) if row.era in ERA_ORDER else len(ERA_ORDER)


def _select(rows: Sequence[LadderRow], only: Sequence[str] | None) -> list[LadderRow]:
    rows = sorted(rows, key=_era_key)  # stable: list order within an era
    if not only:
        return list(rows)
    names = {r.label.lower() for r in rows} | {r.spec.lower() for r in rows}
    wanted: list[str] = []
    for item in only:  # an item is a whole label/spec (which may hold commas) or a comma-separated list
        key = item.strip().lower()
        wanted += [key] if key in names else [p.strip() for p in key.split(",") if p.strip()]
    picked = [r for r in rows if r.label.lower() in wanted or r.spec.lower() in wanted]
    if not picked:
        listing = ", ".join(f"{r.label!r} ({r.spec})" for r in rows)
        raise ConfigError(f"--only {list(only)} matches no ladder row; rows are: {listing}.")
    return picked


@dataclass
class _RunContext:
    """How one ladder run resolves SPECs: quick transformer options and the embedding cache."""

    quick: bool = False
    cache: Any | None = None  # an EmbeddingCache, or None for no caching
    transformer_options: dict[str, Any] = field(default_factory=dict)
    wrapped: list[Any] = field(default_factory=list)

    def resolve(self, spec: str, *, transformer: bool = False) -> Any:
        from embedstack.models import resolve

        enc = resolve(spec)
        if callable(getattr(enc, "encode_poolings", None)):  # a transformer sentence encoder
            if self.transformer_options:
                from embedstack.neural.specs import parse_options

                explicit = set(parse_options(spec)[1]) if "@" in spec else set()
                opts = {k: v for k, v in self.transformer_options.items() if k not in explicit}
                if "max_seq_length" in opts:
                    opts["max_seq_length"] = min(int(opts["max_seq_length"]), int(enc.max_seq_length))
                if getattr(enc, "backend", "torch") != "torch":
                    opts.pop("precision", None)
                if getattr(enc, "backend", "torch") != "torch":
                    opts.pop("workers", None)  # onnxruntime threads itself
                precision = str(opts.get("precision", ""))
                if getattr(enc, "compile", False) and precision.startswith("int8") and precision != "int8-token":
                    opts["compile"] = False  # torch's dynamic int8 modules do not compile
                if opts:
                    enc = enc.with_options(**opts)
            if self.cache is not None:
                from embedstack.evaluation.cache import CachedEncoder

                enc = CachedEncoder(enc, self.cache, poolings=POOLINGS)
                self.wrapped.append(enc)
        return enc


def _run_row(row: LadderRow, data: LadderData, *, progress: LadderProgress | None,
             ctx: _RunContext | None = None) -> LadderResult:
    from embedstack.evaluation.runners import evaluate_retrieval, evaluate_sts

    ctx = ctx or _RunContext()
    res = LadderResult(row.label, row.spec, row.era, note=row.note)
    start = len(ctx.wrapped)

    def cb(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(row.label, stage, done, total)

    spec = row.spec
    if ctx.quick and row.quick_spec is not None:
        spec, how = row.quick_spec(data, cb)
        res.note = f"{res.note}; {how}" if res.note else how
    transformer = row.era == "transformer"
    encoder = None
    if row.retrieval:
        if row.retrieve is not None:
            if "resolve" in inspect.signature(row.retrieve).parameters:
                r = row.retrieve(data.retrieval, cb, resolve=ctx.resolve)
            else:
                r = row.retrieve(data.retrieval, cb)
        else:
            encoder = ctx.resolve(spec, transformer=transformer)
            r = evaluate_retrieval(encoder, data.retrieval, index_spec=row.index, progress=cb)
        res.retrieval = r
        res.ndcg10, res.recall100, res.mrr10 = r.get("ndcg@10"), r.get("recall@100"), r.get("mrr@10")
        res.build_seconds, res.latency_ms = r.get("index_seconds"), r.get("latency_ms")
        res.single_query_ms = r.get("single_query_ms")
        res.bytes_per_doc = r.get("bytes_per_doc")
        # build s is honest only when the corpus was encoded here: flag corpus vectors read from the cache
        res.cached = any(w.from_cache_by_role.get("document", 0) > 0 for w in ctx.wrapped[start:])
        # a batched ms/query whose query vectors were read from the cache measures the cache, not the model
        if res.single_query_ms is None and any(w.from_cache_by_role.get("query", 0) > 0 for w in ctx.wrapped[start:]):
            res.latency_ms = None
    if row.sts and data.sts is not None:
        if encoder is None or getattr(encoder, "requires_fit", False):
            encoder = ctx.resolve(spec, transformer=transformer)  # counting models: fitted afresh on the sentences
        s = evaluate_sts(encoder, data.sts, progress=cb)
        res.sts = s
        res.sts_spearman = s.get("spearman")
    return res


def describe_rows(rows: Sequence[LadderRow] | None = None) -> list[dict[str, Any]]:
    """Each row's label, spec, era, tasks, ``quick`` flag and availability (None or the reason), in table order.

    Example:
        >>> describe_rows([LadderRow("BM25", "bm25", era="counting")])[0]["tasks"]
        ['retrieval']
    """
    out = []
    for row in _select(LADDER_ROWS if rows is None else rows, None):
        reason = None
        if row.available is not None:
            try:
                reason = row.available()
            except Exception as exc:  # an availability check must never break the listing
                reason = f"availability check failed: {type(exc).__name__}: {exc}"
        tasks = [t for t, on in (("retrieval", row.retrieval), ("sts", row.sts)) if on]
        out.append({"label": row.label, "spec": row.spec, "era": row.era, "tasks": tasks, "quick": row.quick,
                    "unavailable": reason, "note": row.note,
                    "quick_prepares": row.quick_spec is not None})  # --quick makes what it needs (vectors)
    return out


def run_ladder(rows: Sequence[LadderRow] | None = None, *, quick: bool = False, sample: bool = False,
               download: bool = False, only: Sequence[str] | None = None, max_queries: int | None = None,
               max_pairs: int | None = None, data: LadderData | None = None,
               progress: LadderProgress | None = None,
               on_result: Callable[[LadderResult], None] | None = None, cache: Any = True) -> LadderReport:
    """Run every ladder row and collect a :class:`LadderReport`.

    Args:
        rows: rows to run (default: :data:`LADDER_ROWS`).
        quick: bounded run — :data:`QUICK_QUERIES` queries and :data:`QUICK_PAIRS` STS pairs (evenly spaced), rows'
            ``quick_spec`` used (static vectors trained on a slice), transformer texts cut at
            :data:`QUICK_MAX_TOKENS` tokens in ``bf16-pure`` where the CPU has bf16; rows with ``quick=False``
            are left out and listed in ``full_only`` (on the bundled sample every row runs: all are cheap).
        sample: use the bundled sample data.
        download: allow dataset downloads.
        only: keep rows whose label or spec is listed.
        max_queries / max_pairs: explicit data limits.
        data: pre-loaded :class:`LadderData` (skips :func:`load_ladder_data`).
        progress: ``progress(row_label, stage, done, total)``.
        on_result: called with each row's result as soon as it is ready.
        cache: the embedding cache for transformer vectors: True (``<cache>/embeddings``), False (none:
            every vector is computed, e.g. for build timings) or an
            :class:`~embedstack.evaluation.cache.EmbeddingCache`.

    A row whose ``available`` check returns a reason is "skipped"; a row that raises is "failed"
    with the error in ``reason`` — the ladder itself carries on.
    """
    t0 = time.perf_counter()
    all_rows = LADDER_ROWS if rows is None else rows
    selected = _select(all_rows, only)
    not_selected = [r.label for r in _select(all_rows, None) if r not in selected]
    if data is None:
        data = load_ladder_data(quick=quick, sample=sample, download=download, max_queries=max_queries,
                                max_pairs=max_pairs)
    full_only = [r.label for r in selected if quick and not r.quick and not data.sample]
    selected = [r for r in selected if r.label not in full_only]
    ctx = _RunContext(quick=quick, cache=_make_cache(cache))
    if quick and any(r.era == "transformer" or r.era == "hybrid" for r in selected):
        ctx.transformer_options = _quick_transformer_options()
        if ctx.transformer_options:
            desc = f"texts cut at {ctx.transformer_options['max_seq_length']} tokens"
            if "precision" in ctx.transformer_options:
                desc += f", {ctx.transformer_options['precision']} (this CPU has bf16 matmuls)"
            if "workers" in ctx.transformer_options:
                desc += f", {ctx.transformer_options['workers']} batches at a time"
            note = f"Quick run: transformer rows (and the hybrid's MiniLM) with {desc}."
            data = dataclasses.replace(data, notes=[*data.notes, note])  # the caller's data stays as it was
    results: list[LadderResult] = []
    for row in selected:
        reason = None
        if quick and row.quick_spec is not None:
            reason = None  # the quick hook makes what the row needs (e.g. trains vectors on a slice)
        elif row.available is not None:
            try:
                reason = row.available()
            except Exception as exc:  # an availability check must never break the ladder
                reason = f"availability check failed: {type(exc).__name__}: {exc}"
        if reason:
            res = LadderResult(row.label, row.spec, row.era, status="skipped", reason=reason, note=row.note)
        else:
            try:
                with warnings.catch_warnings():
                    if "max_seq_length" in ctx.transformer_options:  # the cut is stated in the notes
                        warnings.filterwarnings("ignore", message=r".*longer than max_seq_length", category=UserWarning)
                    res = _run_row(row, data, progress=progress, ctx=ctx)
            except EmbedstackError as exc:
                # a missing extra/dataset, or (on the tiny bundled sample) data too small for the model,
                # means the row cannot run here; anything else is a failure
                skip = _is_missing(exc) or (data.sample and isinstance(exc, InputError))
                res = LadderResult(row.label, row.spec, row.era, status="skipped" if skip else "failed",
                                   reason=f"{type(exc).__name__}: {_first_line(exc)}", note=row.note)
            except Exception as exc:  # report and carry on: one broken rung must not hide the others
                res = LadderResult(row.label, row.spec, row.era, status="failed",
                                   reason=f"{type(exc).__name__}: {_first_line(exc)}", note=row.note)
        if ctx.cache is not None:
            ctx.cache.flush()
        results.append(res)
        if on_result is not None:
            on_result(res)
    return LadderReport(results, data, quick, time.perf_counter() - t0, not_selected, full_only)


def _make_cache(cache: Any) -> Any:
    if cache is True:
        from embedstack.evaluation.cache import EmbeddingCache

        return EmbeddingCache()
    return cache or None


def _quick_transformer_options() -> dict[str, Any]:
    """``--quick`` options for transformer rows: a token cap, two batches at a time on 2+ CPUs (same vectors;
    measured 1.9x on SciFact abstracts with the 2 shared cores here), bf16-pure where the CPU has bf16 matmuls."""
    opts: dict[str, Any] = {"max_seq_length": QUICK_MAX_TOKENS}
    cpus = available_cores()
    if cpus >= 2:
        opts["workers"] = 2
    try:
        from embedstack.neural.sentence import cpu_has_bf16
    except (ImportError, EmbedstackError):  # no torch: the transformer rows are skipped anyway
        return opts
    if cpu_has_bf16():
        opts["precision"] = "bf16-pure"
    return opts


_ERA_COLORS = {"counting": "#1f77b4", "static": "#2ca02c", "transformer": "#9467bd", "hybrid": "#d62728"}


def write_plot(report: LadderReport, path: str | os.PathLike[str]) -> Any:
    """A PNG of quality against cost, one point per row that ran: nDCG@10 against ms/query and build s.

    Written atomically through :func:`embedstack.io.atomic_write_bytes`. Returns the path, or None when
    matplotlib is not installed (``pip install 'embedstack[demo]'``) or no row has numbers.
    """
    import io
    from pathlib import Path

    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from embedstack.io import atomic_write_bytes

    ok = [r for r in report.results if r.status == "ok" and r.ndcg10 is not None]
    if not ok:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True)
    # a build time read from the embedding cache is not a cost: those rows stay off the build panel
    panels = (("ms per query (one query alone; log scale)", lambda r: r.single_query_ms or r.latency_ms),
              ("build seconds (fit + encode corpus + index; log scale)",
               lambda r: None if r.cached else r.build_seconds))
    for ax, (xlabel, get) in zip(axes, panels, strict=True):
        for era in dict.fromkeys(r.era for r in ok):
            pts = [(get(r), r.ndcg10, r) for r in ok if r.era == era and get(r)]
            if not pts:
                continue
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=era, s=36,
                       color=_ERA_COLORS.get(era, "#7f7f7f"), edgecolors="black", linewidths=0.4, zorder=3)
            for x, y, r in pts:
                ax.annotate(r.label, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    left_out = [r.label for r in ok if r.cached]
    if left_out:
        axes[1].text(0.01, 0.01, "not shown (corpus vectors read from the cache): " + "; ".join(left_out),
                     transform=axes[1].transAxes, fontsize=6, wrap=True, va="bottom")
    axes[0].set_ylabel("nDCG@10")
    axes[0].legend(loc="lower right", fontsize=8)
    mode = "quick run" if report.quick else "full run"
    fig.suptitle(f"embedstack ladder ({mode}): {report.data.retrieval_name}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _is_missing(exc: BaseException) -> bool:
    from embedstack.errors import MissingExtra

    return isinstance(exc, MissingExtra | DatasetError)
