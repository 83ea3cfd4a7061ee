"""Production monitoring: retrieval quality on a golden set, and drift of embeddings, with a JSONL history.

Both checks are made for cron jobs and CI: each run is appended to a history file (one JSON object per
line, rewritten atomically) and compared with the history; ``alarm`` says whether to page someone.

* :func:`check_golden` — search a saved index (folder or alias) with the golden queries, score the run
  against the golden judgements (Recall@K, MRR@K, nDCG@K), and alarm when the chosen metric fell by more
  than ``margin`` below the best (or the last) run in the history.
* :func:`check_drift` — :func:`embedstack.geometry.detect_drift` between a reference and a new batch of
  vectors, appended to the history the same way.

``embedstack monitor golden`` / ``embedstack monitor drift`` wrap them and exit with status 1 on alarm.

Example:
    >>> import tempfile, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     r = check_drift(rng.standard_normal((100, 8)), rng.standard_normal((100, 8)) + 1.0,
    ...                     history=f"{d}/drift.jsonl", permutations=99)
    ...     r["alarm"], len(read_history(f"{d}/drift.jsonl"))
    (True, 1)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from embedstack.errors import ConfigError, FormatError, InputError

__all__ = ["check_golden", "check_drift", "read_history", "append_history", "GOLDEN_METRICS"]

GOLDEN_METRICS = ("recall", "mrr", "ndcg")


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSONL history file (an absent file is an empty history)."""
    from embedstack.data._io import iter_json_lines

    p = Path(path)
    if not p.exists():
        return []
    records = []
    for lineno, obj in iter_json_lines(p, hint="the history file is damaged (fix or remove that line, or point "
                                             "--history at a new file)"):
        if not isinstance(obj, dict):
            raise FormatError(f"{p}:{lineno}: a history line must be a JSON object.")
        records.append(obj)
    return records


def append_history(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line; the file is rewritten atomically (a crash leaves the old history)."""
    from embedstack.io.atomic import atomic_write_text

    p = Path(path)
    old = p.read_text(encoding="utf-8") if p.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write_text(p, old + json.dumps(dict(record), default=float) + "\n", force=True)


def _baseline(history: Sequence[Mapping[str, Any]], key: str, against: str) -> float | None:
    values = [float(r["metrics"][key]) for r in history
              if isinstance(r.get("metrics"), Mapping) and key in r["metrics"]]
    if not values:
        return None
    return max(values) if against == "best" else values[-1]


def check_golden(index: str | os.PathLike[str], queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                 *, k: int = 10, metric: str = "ndcg", margin: float = 0.02, against: str = "best",
                 history: str | os.PathLike[str] | None = None, label: str | None = None,
                 batch_size: int = 64) -> dict[str, Any]:
    """Score a saved index on a golden set and compare with the history.

    Args:
        index: an index folder or alias built by ``embedstack index build`` (its encoder is reloaded).
        queries: query id → text (only judged queries are run).
        qrels: query id → {document id: grade}.
        k: the cut-off of every metric.
        metric: ``recall``, ``mrr`` or ``ndcg``: the one the alarm watches.
        margin: alarm when ``metric`` falls by more than this (absolute, e.g. 0.02 = 2 points of nDCG x100).
        against: ``best`` (the best run in the history) or ``last`` (the previous run).
        history: JSONL file the run is appended to (and compared with); None = no history, no alarm.
        label: a free-form tag stored with the run (a model version, a git commit ...).

    Returns:
        ``metrics`` ({"recall@K", "mrr@K", "ndcg@K"}), ``baseline`` (or None), ``drop``, ``alarm``,
        ``message``, ``n_queries``, ``seconds``.

    Raises:
        InputError: judged queries without text, relevant documents absent from the index, an empty golden set.
    """
    from embedstack.evaluation.metrics import evaluate_run
    from embedstack.retrieval import open_pipeline

    if metric not in GOLDEN_METRICS:
        raise ConfigError(f"metric must be one of {list(GOLDEN_METRICS)}; got {metric!r} (--metric).")
    if against not in ("best", "last"):
        raise ConfigError(f"against must be 'best' or 'last'; got {against!r} (--against).")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive int; got {k!r} (--k).")
    if not (margin >= 0.0):
        raise ConfigError(f"margin must be >= 0; got {margin!r} (--margin).")
    judged = {q: {d: int(g) for d, g in rels.items()} for q, rels in qrels.items() if any(g > 0 for g in rels.values())}
    if not judged:
        raise InputError("the golden set has no query with a relevant document (grade > 0); check --qrels.")
    missing_q = sorted(q for q in judged if q not in queries)
    if missing_q:
        raise InputError(f"{len(missing_q)} judged queries have no text in --queries (e.g. {missing_q[:3]}); "
                         "give the queries file that matches --qrels.")
    t0 = time.perf_counter()
    pipe = open_pipeline([index])
    idx = pipe.retrievers[0].index
    relevant = {d for rels in judged.values() for d, g in rels.items() if g > 0}
    absent = sorted(d for d in relevant if d not in idx)
    if absent:
        raise InputError(f"{len(absent)} of the golden set's {len(relevant)} relevant documents are not in the index "
                         f"{index} (e.g. {absent[:3]}): the index lost documents or the golden set belongs to "
                         "another corpus. Rebuild the index, or fix --qrels.")
    qids = sorted(judged)
    results = []
    for s in range(0, len(qids), batch_size):
        part = qids[s:s + batch_size]
        results += pipe.search_batch([queries[q] for q in part], k=k)
    run = {q: {h.id: float(h.score) for h in res.hits} for q, res in zip(qids, results, strict=True)}
    scores = evaluate_run(run, judged, (f"recall@{k}", f"mrr@{k}", f"ndcg@{k}"))
    metrics = {name: float(v) for name, v in scores.items()}
    key = f"{metric}@{k}"
    past = read_history(history) if history is not None else []
    base = _baseline(past, key, against)
    drop = None if base is None else base - metrics[key]
    alarm = drop is not None and drop > margin
    if base is None:
        message = f"{key} = {metrics[key]:.4f} (first run{' in ' + str(history) if history else ''}: nothing to compare)"
    else:
        message = (f"{key} = {metrics[key]:.4f}, {against} before {base:.4f}: "
                   + (f"dropped {drop:.4f} > margin {margin}" if alarm else f"within margin {margin}"))
    seconds = time.perf_counter() - t0
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kind": "golden", "index": str(index),
              "label": label, "n_queries": len(qids), "k": k, "metrics": metrics, "baseline": base, "drop": drop,
              "alarm": alarm}
    if history is not None:
        append_history(history, record)
    return {**record, "message": message, "seconds": seconds}


def check_drift(reference: Any, new: Any, *, history: str | os.PathLike[str] | None = None,
                label: str | None = None, **options: Any) -> dict[str, Any]:
    """:func:`~embedstack.geometry.detect_drift` of ``new`` against ``reference``, appended to ``history``.

    ``options`` go to :func:`~embedstack.geometry.detect_drift` (``tests``, ``alpha``, ``permutations``,
    ``max_samples``, ``seed``). Returns its report as a dict plus ``alarm`` and ``message``.
    """
    from embedstack.geometry import detect_drift

    result = detect_drift(reference, new, **options)
    report = result.to_dict()
    fired = result.alarms
    message = ("drift: " + ", ".join(f"{n} p={report['tests'][n]['p_value']:.3g}" for n in fired)
               if fired else f"no drift (smallest p-value {min(t['p_value'] for t in report['tests'].values()):.3g}, "
                             f"alarm below {result.alpha / len(result.tests):.3g})")
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kind": "drift", "label": label,
              **report, "alarm": report["drift"]}
    if history is not None:
        append_history(history, record)
    return {**record, "message": message}
