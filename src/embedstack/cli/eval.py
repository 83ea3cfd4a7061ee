"""``embedstack eval retrieval|sts|words|classification|clustering``: score a model on a benchmark.

Result tables go to stdout, progress and notes to stderr; ``--json`` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import typer

from embedstack.cli._common import (
    ENCODING_OPTION,
    ERRORS_OPTION,
    TextErrors,
    TextOptions,
    err_console,
    print_json,
    print_table,
    progress,
    text_options,
)

__all__ = ["register", "progress_callback", "emit_json"]


eval_app = typer.Typer(help="Evaluate a model on a benchmark (retrieval, STS, word vectors, probes).",
                       no_args_is_help=True)

_JSON = typer.Option(False, "--json", help="Print one JSON object on stdout (and nothing else there).")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")




def _finite(obj: Any) -> Any:
    """NaN/inf → None, recursively, so the printed JSON is strict (RFC 8259) JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def emit_json(obj: dict[str, Any]) -> None:
    """Print ``obj`` as exactly one strict JSON object on stdout."""
    print_json(_finite(obj))


@contextlib.contextmanager
def progress_callback(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(stage, done, total)`` callback drawing one rich bar per stage on stderr."""
    with progress(quiet=quiet) as prog:
        tasks: dict[str, Any] = {}

        def cb(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=max(total, 1), info="")
            prog.update(tasks[stage], completed=done, total=max(total, 1))

        yield cb


def _short(name: str) -> str:
    """A dataset given as a path is shown by its last component."""
    from pathlib import Path

    return Path(name).name if ("/" in name or "\\" in name) else name


def _metrics_table(title: str, rows: list[tuple[str, str]]) -> None:
    print_table(title, ["metric", "value"], [list(r) for r in rows], right=("value",))


def _stratified(texts: list[str], labels: list[Any], n: int | None, seed: int) -> tuple[list[str], list[Any]]:
    """At most ``n`` texts, keeping label proportions (scikit-learn's stratified split)."""
    from embedstack.errors import ConfigError

    if n is None or n >= len(texts):
        return texts, labels
    if n <= 0:
        raise ConfigError(f"sample sizes must be positive ints, got {n}.")
    from sklearn.model_selection import train_test_split

    try:
        keep, _, ykeep, _ = train_test_split(texts, labels, train_size=n, stratify=labels, random_state=seed)
    except ValueError:  # too few per class to stratify: plain random subset
        keep, _, ykeep, _ = train_test_split(texts, labels, train_size=n, random_state=seed)
    return list(keep), list(ykeep)


def _probe_data(dataset: str, max_train: int | None, max_test: int | None, seed: int,
                need_train: bool = True, text: TextOptions | None = None) -> dict[str, Any]:
    """Train/test texts of a labelled dataset; a set with only a test split is split 50/50 (stratified)."""
    from embedstack._extras import require
    from embedstack.data import load_classification
    from embedstack.errors import DatasetError

    require("sklearn", "ml", "classification and clustering probes")
    kw: Mapping[str, Any] = text or {}
    test = load_classification(dataset, split="test", **kw)
    texts, labels = list(test.texts), list(test.labels)
    note = ""
    if need_train:
        try:
            train = load_classification(dataset, split="train", **kw)
            tr_x, tr_y = list(train.texts), list(train.labels)
        except DatasetError:
            from sklearn.model_selection import train_test_split

            tr_x, texts, tr_y, labels = train_test_split(texts, labels, test_size=0.5, stratify=labels,
                                                         random_state=seed)
            note = "no train split: the test split was halved (stratified) into train and test"
        tr_x, tr_y = _stratified(list(tr_x), list(tr_y), max_train, seed)
    else:
        tr_x, tr_y = [], []
    texts, labels = _stratified(list(texts), list(labels), max_test, seed)
    return {"train_texts": tr_x, "train_labels": tr_y, "test_texts": texts, "test_labels": labels, "note": note}


@eval_app.command("retrieval")
def retrieval(
    model: str = typer.Option(..., "--model", "-m", help="Model SPEC: bow, tfidf, bm25, lsa:256, a folder or model name."),
    dataset: str = typer.Option("scifact", "--dataset", "-d", help="BEIR dataset name or folder."),
    split: str | None = typer.Option(None, "--split", "-s", help="qrels split (default: test when the dataset has it, else the split it has)."),
    index: str | None = typer.Option(None, "--index", help="Index spec: flat, fp16, int8, binary, hnsw ... (dense models); multivector, plaid:nbits=2 (ColBERT)"),
    k: int = typer.Option(100, "--k", "-k", help="Retrieval depth."),
    max_queries: int | None = typer.Option(None, "--max-queries", help="Evaluate only the first N judged queries."),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoder batch size."),
    with_: list[str] = typer.Option(None, "--with", help="More model SPECs whose results are fused with MODEL's "
                                    "(hybrid: --model bm25 --with all-MiniLM-L6-v2)."),
    fusion: str = typer.Option("rrf", "--fusion", help="rrf[:K] | convex[:ALPHA] | convex-z[:ALPHA] (with --with)."),
    rerank: str | None = typer.Option(None, "--rerank", help="Cross-encoder SPEC that rescores the top --rerank-k hits."),
    rerank_k: int | None = typer.Option(None, "--rerank-k", help="Hits passed to --rerank (default: --k)."),
    rerank_fusion: str | None = typer.Option(None, "--rerank-fusion", help="convex-z:ALPHA combines the reranker's "
                                             "score (weight ALPHA) with the first stage's instead of replacing it."),
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    json_out: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """nDCG@10, Recall@100, MRR@10, index and query time of MODEL (or a hybrid / reranked pipeline) on a BEIR dataset."""
    from embedstack.data import default_split, load_beir, qrels_splits
    from embedstack.errors import ConfigError
    from embedstack.evaluation.runners import evaluate_retrieval
    from embedstack.models import resolve

    pipeline = bool(with_) or rerank is not None
    for flag, value in (("--rerank-k", rerank_k), ("--rerank-fusion", rerank_fusion)):
        if value is not None and rerank is None:
            raise ConfigError(f"{flag} needs --rerank SPEC (the cross-encoder that rescores the hits).",
                              param=(flag, flag))
    if rerank_fusion is not None:
        from embedstack.retrieval.evaluate import parse_rerank_fusion

        parse_rerank_fusion(rerank_fusion)  # a malformed value fails before any work
    reranker = None
    if rerank is not None:  # fail on a bad reranker before any indexing work
        from embedstack.retrieval.evaluate import load_reranker

        reranker = load_reranker(rerank)
    encoder = None if pipeline else resolve(model)
    if split is None:
        split = default_split(dataset)
        if not (quiet or json_out):
            err_console.print(f"split: {split} (qrels splits of {_short(dataset)}: "
                              f"{', '.join(qrels_splits(dataset)) or 'none'}; choose with --split)", highlight=False)
    ds = load_beir(dataset, split=split, **text_options(encoding, errors))
    with progress_callback(quiet or json_out) as cb:
        if pipeline:
            from embedstack.retrieval.evaluate import evaluate_pipeline

            res = evaluate_pipeline([model, *(with_ or [])], ds, fusion=fusion, index=index or "flat", k=k,
                                    reranker=reranker, rerank_k=rerank_k, max_queries=max_queries,
                                    rerank_fusion=rerank_fusion,
                                    progress=lambda stage, done, total: cb(stage, done, total))
        else:
            res = evaluate_retrieval(encoder, ds, k=k, index_spec=index, batch_size=batch_size, progress=cb,
                                     max_queries=max_queries)
    res = {"task": "retrieval", "model": model, "dataset": dataset, "split": split, **res}
    if json_out:
        emit_json(res)
        return
    _metrics_table(f"{model} on {_short(dataset)} ({split}, {res['n_queries']} queries, {res['n_docs']} docs)", [
        ("nDCG@10", f"{res['ndcg@10']:.4f}"),
        ("Recall@100", f"{res['recall@100']:.4f}"),
        ("MRR@10", f"{res['mrr@10']:.4f}"),
        ("MAP@10", f"{res['map@10']:.4f}"),
        ("index time", f"{res['index_seconds']:.2f} s"),
        ("query time", f"{res['query_seconds']:.2f} s ({res['latency_ms']:.2f} ms/query)"),
        ("bytes/doc", f"{res['bytes_per_doc']:.0f}"),
        *[(f"{stage} ms/query", f"{ms:.2f}") for stage, ms in res.get("stage_ms", {}).items()],
    ])


@eval_app.command("sts")
def sts(
    model: str = typer.Option(..., "--model", "-m", help="Model SPEC."),
    dataset: str = typer.Option("stsb", "--dataset", "-d", help="STS dataset name or file/folder."),
    split: str = typer.Option("test", "--split", "-s", help="train, dev or test."),
    max_pairs: int | None = typer.Option(None, "--max-pairs", help="Evaluate only the first N pairs."),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoder batch size."),
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    json_out: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """Spearman (x100) of cosine similarity against the gold STS scores."""
    from embedstack.data import load_sts
    from embedstack.evaluation.runners import evaluate_sts
    from embedstack.models import resolve

    encoder = resolve(model)
    data = load_sts(dataset, split=split, **text_options(encoding, errors))
    with progress_callback(quiet or json_out) as cb:
        res = evaluate_sts(encoder, data, batch_size=batch_size, max_pairs=max_pairs, progress=cb)
    res = {"task": "sts", "model": model, "dataset": dataset, "split": split, **res}
    if json_out:
        emit_json(res)
        return
    _metrics_table(f"{model} on {_short(dataset)} ({split}, {res['n']} pairs)", [
        ("Spearman x100", f"{res['spearman']:.2f}"),
        ("Pearson x100", f"{res['pearson']:.2f}"),
        ("time", f"{res['seconds']:.2f} s"),
    ])


def _load_vectors(path: str, text: TextOptions) -> Any:
    from embedstack.errors import ConfigError

    try:
        from embedstack.static import load_vectors
    except ImportError as exc:
        raise ConfigError(
            f"word-vector loading is not available in this build ({exc}); embedstack.static.load_vectors "
            "is required for `eval words`."
        ) from None
    return load_vectors(path, **text)


def _is_none(value: str | None) -> bool:
    return value is None or value.strip().lower() in ("", "none", "-")


@eval_app.command("words")
def words(
    vectors: str = typer.Option(..., "--vectors", "-v", help="Word vectors: a saved folder, word2vec text/binary, GloVe or .vec."),
    analogies: str = typer.Option("analogies", "--analogies", help="Analogy questions (name or file); 'none' to skip."),
    similarity: str = typer.Option("wordsim353", "--similarity", help="Word-similarity pairs (name or file); 'none' to skip."),
    restrict_vocab: int = typer.Option(30000, "--restrict-vocab", help="Only the first N words answer analogies."),
    method: str = typer.Option("3cosadd", "--method", help="3cosadd or 3cosmul."),
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    json_out: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """Word similarity (Spearman + OOV) and analogy accuracy (per section, semantic/syntactic)."""
    from embedstack.data import load_analogies, load_word_similarity
    from embedstack.errors import ConfigError
    from embedstack.evaluation.words import evaluate_analogies, evaluate_word_similarity

    if _is_none(analogies) and _is_none(similarity):
        raise ConfigError("both --analogies and --similarity are 'none'; nothing to evaluate.")
    if method.lower() not in ("3cosadd", "3cosmul"):
        raise ConfigError(f"--method must be 3cosadd or 3cosmul, got {method!r}.")
    text = text_options(encoding, errors)
    kv = _load_vectors(vectors, text)
    out: dict[str, Any] = {"task": "words", "vectors": vectors, "n_words": len(kv.index_to_key)}
    rows: list[tuple[str, str]] = []
    with progress_callback(quiet or json_out) as cb:
        if not _is_none(similarity):
            cb("word similarity", 0, 1)
            sim = evaluate_word_similarity(kv, load_word_similarity(similarity, **text))
            cb("word similarity", 1, 1)
            out["similarity"] = {"dataset": similarity, **sim}
            rows += [(f"{similarity} Spearman", f"{sim['spearman']:.4f}"),
                     (f"{similarity} OOV pairs", f"{sim['oov']} / {sim['total']}")]
        if not _is_none(analogies):
            cb("analogies", 0, 1)
            ana = evaluate_analogies(kv, load_analogies(analogies, **text), restrict_vocab=restrict_vocab, method=method)
            cb("analogies", 1, 1)
            out["analogies"] = {"dataset": analogies, **ana}
            rows += [(f"analogies ({ana['method']}) accuracy", f"{ana['accuracy']:.4f}"),
                     ("  semantic", f"{ana['semantic']['accuracy']:.4f} ({ana['semantic']['total']})"),
                     ("  syntactic", f"{ana['syntactic']['accuracy']:.4f} ({ana['syntactic']['total']})"),
                     ("  OOV questions", f"{ana['oov']} / {ana['oov'] + ana['total']}")]
    out["primary_metric"] = "analogies.accuracy" if "analogies" in out else "similarity.spearman"
    if json_out:
        emit_json(out)
        return
    _metrics_table(f"{vectors} ({out['n_words']} words)", rows)
    if "analogies" in out:
        from rich.markup import escape

        print_table("analogy sections", ["section", "accuracy", "answered", "OOV"],
                    [[escape(name), f"{s['accuracy']:.4f}", str(s["total"]), str(s["oov"])]
                     for name, s in out["analogies"]["sections"].items()],
                    right=("accuracy", "answered", "OOV"))


@eval_app.command("classification")
def classification(
    model: str = typer.Option(..., "--model", "-m", help="Model SPEC."),
    dataset: str = typer.Option("banking77", "--dataset", "-d", help="banking77, agnews, 20newsgroups, or a folder."),
    max_train: int | None = typer.Option(None, "--max-train", help="Use at most N training texts (stratified)."),
    max_test: int | None = typer.Option(None, "--max-test", help="Use at most N test texts (stratified)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (subsampling, classifier)."),
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    json_out: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """Logistic-regression probe on MODEL's features: accuracy and macro-F1."""
    from embedstack.evaluation.probes import evaluate_classification
    from embedstack.models import resolve

    encoder = resolve(model)
    data = _probe_data(dataset, max_train, max_test, seed, text=text_options(encoding, errors))
    with progress_callback(quiet or json_out) as cb:
        cb("classification", 0, 1)
        res = evaluate_classification(encoder, data["train_texts"], data["train_labels"], data["test_texts"],
                                      data["test_labels"], seed=seed)
        cb("classification", 1, 1)
    res = {"task": "classification", "model": model, "dataset": dataset, "note": data["note"], **res}
    if json_out:
        emit_json(res)
        return
    _metrics_table(f"{model} on {_short(dataset)} ({res['n_train']} train / {res['n_test']} test, "
                   f"{res['n_classes']} classes)", [
        ("accuracy", f"{res['accuracy']:.4f}"), ("macro-F1", f"{res['macro_f1']:.4f}"),
        ("time", f"{res['seconds']:.2f} s")])


@eval_app.command("clustering")
def clustering(
    model: str = typer.Option(..., "--model", "-m", help="Model SPEC."),
    dataset: str = typer.Option("banking77", "--dataset", "-d", help="banking77, agnews, 20newsgroups, or a folder."),
    max_texts: int | None = typer.Option(2000, "--max-texts", help="Cluster at most N test texts (stratified)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    encoding: str = ENCODING_OPTION,
    errors: TextErrors = ERRORS_OPTION,
    json_out: bool = _JSON,
    quiet: bool = _QUIET,
) -> None:
    """k-means on MODEL's features (as many clusters as labels): V-measure."""
    from embedstack.evaluation.probes import evaluate_clustering
    from embedstack.models import resolve

    encoder = resolve(model)
    data = _probe_data(dataset, None, max_texts, seed, need_train=False, text=text_options(encoding, errors))
    with progress_callback(quiet or json_out) as cb:
        cb("clustering", 0, 1)
        res = evaluate_clustering(encoder, data["test_texts"], data["test_labels"], seed=seed)
        cb("clustering", 1, 1)
    res = {"task": "clustering", "model": model, "dataset": dataset, **res}
    if json_out:
        emit_json(res)
        return
    _metrics_table(f"{model} on {_short(dataset)} ({res['n']} texts, {res['n_clusters']} clusters)", [
        ("V-measure", f"{res['v_measure']:.4f}"), ("time", f"{res['seconds']:.2f} s")])


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command group to ``app``."""
    app.add_typer(eval_app, name="eval")
