"""BM25 on SciFact (train queries): embedstack vs bm25s in the same process, on one thread.

Measures nDCG@10, index build time (tokenization included) and queries per second, as ratios
ours/theirs, for:

* each library with its own English pipeline (ours: ``bm25`` spec = Snowball stemmer + stopwords;
  bm25s: ``bm25s.tokenize(stopwords="en", stemmer=Stemmer("english"))``), both k1=1.2, b=0.75,
  Lucene idf;
* identical token lists (our analyzer's tokens handed to bm25s), which isolates the scoring;
* no stemming on either side;

and the nDCG@10 of TF-IDF, bag of words and LSA on the same split. Timings are medians of
``--repeats`` runs, interleaved (ours, theirs, ours, theirs ...) to share the machine's noise.

Run:  EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/bm25.py [--quick] [--quiet]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread for both libraries (the comparison is per core)

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import name_flag, ratio, result_name, write_results  # noqa: E402
from embedstack.count import BM25, LSA, BagOfWords, TfIdf  # noqa: E402
from embedstack.count.bm25 import topk_sparse_rows  # noqa: E402
from embedstack.count.specs import ENGLISH_ANALYZER  # noqa: E402
from embedstack.data import load_beir  # noqa: E402
from embedstack.evaluation.metrics import ndcg_at_k  # noqa: E402
from embedstack.text import Analyzer  # noqa: E402

K1, B, K = 1.2, 0.75, 10


def log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_from_arrays(qids: list[str], doc_ids: list[str], idx: np.ndarray, scores: np.ndarray) -> dict:
    run: dict[str, dict[str, float]] = {}
    for q, irow, srow in zip(qids, idx.tolist(), scores.tolist(), strict=True):
        run[q] = {doc_ids[i]: float(s) for i, s in zip(irow, srow, strict=True) if i >= 0}
    return run


def run_from_hits(qids: list[str], hits: list) -> dict:
    return {q: {h.id: h.score for h in hs} for q, hs in zip(qids, hits, strict=True)}


# ---------------------------------------------------------------------------- the two BM25s
def ours_build(texts: list[str], ids: list[str], analyzer: Analyzer) -> BM25:
    m = BM25(analyzer=analyzer, k1=K1, b=B, idf="lucene")
    m.index(texts, ids)
    return m


def theirs_build(texts: list[str], stem: bool) -> tuple[Any, Any]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english") if stem else None
    tokens = bm25s.tokenize(texts, stopwords="en" if stem else None, stemmer=stemmer, show_progress=False)
    r = bm25s.BM25(k1=K1, b=B, method="lucene")
    r.index(tokens, show_progress=False)
    return r, stemmer


def theirs_query(r: Any, stemmer: Any, queries: list[str], stem: bool) -> tuple[np.ndarray, np.ndarray]:
    import bm25s

    qt = bm25s.tokenize(queries, stopwords="en" if stem else None, stemmer=stemmer, show_progress=False)
    docs, scores = r.retrieve(qt, k=K, n_threads=1, show_progress=False)
    return np.asarray(docs), np.asarray(scores)


def compare(label: str, ds: Any, analyzer: Analyzer, stem: bool, repeats: int, quiet: bool) -> dict[str, Any]:
    """Build both indexes and query them with each library's two search backends, interleaved."""
    doc_ids, texts = ds.doc_ids(), ds.doc_texts()
    qids, queries = ds.query_ids(), ds.query_texts()
    variants = ("ours_numba", "ours_numpy", "bm25s_numpy", "bm25s_numba", "ours_hits")
    tb_o, tb_t = [], []
    tq: dict[str, list[float]] = {v: [] for v in variants}
    runs: dict[str, dict] = {}
    for rep in range(repeats):
        t, ours = timed(lambda: ours_build(texts, doc_ids, analyzer))
        tb_o.append(t)
        t, (theirs, stemmer) = timed(lambda: theirs_build(texts, stem))
        tb_t.append(t)
        ours.backend = "numpy"
        ours._impacts()  # the numpy scoring layout, part of a numpy-backend build (~1% of it)
        # one untimed pass over the queries for each library: our analyzer remembers surface tokens
        # between calls, bm25s' PyStemmer caches stems; timings below are for a warm query stream
        ours.retrieve(queries, k=K)
        theirs_query(theirs, stemmer, queries, stem)
        for v in variants:
            lib, backend = v.split("_")
            if v == "ours_hits":  # the user-facing API: Hit lists with string ids, default backend
                ours.backend = "auto"
                t, hits = timed(lambda m=ours: m.search(queries, k=K))
                runs[v] = run_from_hits(qids, hits)
            elif lib == "ours":  # arrays of positions and scores, like bm25s.retrieve
                ours.backend = backend
                t, (idx, sc) = timed(lambda m=ours: m.retrieve(queries, k=K))
                runs[v] = run_from_arrays(qids, doc_ids, idx, sc)
            else:
                theirs.backend = backend
                t, (tdocs, tscores) = timed(lambda r=theirs, st=stemmer: theirs_query(r, st, queries, stem))
                runs[v] = run_from_arrays(qids, doc_ids, tdocs, tscores)
            tq[v].append(t)
        log(f"  [{label}] rep {rep + 1}/{repeats}: build {tb_o[-1]:.3f}s vs {tb_t[-1]:.3f}s; queries "
            + ", ".join(f"{v} {tq[v][-1]:.3f}s" for v in variants), quiet)
    ndcg = {v: ndcg_at_k(runs[v], ds.qrels, K) for v in variants}
    b_o, b_t = statistics.median(tb_o), statistics.median(tb_t)
    qps = {v: len(queries) / statistics.median(tq[v]) for v in variants}
    qps_spread = {v: [len(queries) / max(tq[v]), len(queries) / min(tq[v])] for v in variants}
    # roofline: the posting entries (doc id int32 + impact float32 = 8 bytes) each query's terms touch
    Q = ours.encode_sparse(queries, role="query")
    rowlen = np.diff(ours.index_.indptr)
    postings = int(rowlen[Q.indices].sum())
    return {
        "qps_spread": qps_spread, "postings_per_query": postings / max(len(queries), 1),
        "build_spread_ours": [min(tb_o), max(tb_o)], "build_spread_bm25s": [min(tb_t), max(tb_t)],
        "ndcg@10_ours": ndcg["ours_hits"], "ndcg@10_bm25s": ndcg["bm25s_numpy"],
        "ndcg@10_diff": ndcg["ours_hits"] - ndcg["bm25s_numpy"], "ndcg@10_by_variant": ndcg,
        "build_s_ours": b_o, "build_s_bm25s": b_t, "build_speed_ratio": ratio(b_t, b_o),
        "qps": qps,
        "qps_ratio_vs_default": ratio(qps["ours_numba"], qps["bm25s_numpy"]),
        "qps_ratio_numpy_vs_numpy": ratio(qps["ours_numpy"], qps["bm25s_numpy"]),
        "qps_ratio_numba_vs_numba": ratio(qps["ours_numba"], qps["bm25s_numba"]),
        "build_s_all_ours": tb_o, "build_s_all_bm25s": tb_t, "query_s_all": tq,
        "n_queries": len(queries), "n_docs": len(texts),
    }


def same_tokens(ds: Any) -> dict[str, Any]:
    """Our analyzer's token lists handed to bm25s: any nDCG gap is scoring, not tokenization."""
    import bm25s

    doc_ids, texts = ds.doc_ids(), ds.doc_texts()
    qids, queries = ds.query_ids(), ds.query_texts()
    an = ENGLISH_ANALYZER
    r = bm25s.BM25(k1=K1, b=B, method="lucene")
    r.index([an.tokenize(t) for t in texts], show_progress=False)
    # bm25s rejects queries whose tokens are all unknown; give those an empty result like ours.
    vocab = r.vocab_dict
    qtoks = [[t for t in an.tokenize(q) if t in vocab] for q in queries]
    keep = [i for i, q in enumerate(qtoks) if q]
    docs, scores = r.retrieve([qtoks[i] for i in keep], k=K, n_threads=1, show_progress=False)
    run_t = run_from_arrays([qids[i] for i in keep], doc_ids, np.asarray(docs), np.asarray(scores))
    ours = ours_build(texts, doc_ids, an)
    n_ours = ndcg_at_k(run_from_hits(qids, ours.search(queries, k=K)), ds.qrels, K)
    n_theirs = ndcg_at_k(run_t, ds.qrels, K)
    # and the scores themselves: top-1 score of each query, ours vs theirs
    idx_o, sc_o = ours.retrieve([queries[i] for i in keep], k=1)
    top_diff = float(np.max(np.abs(sc_o[:, 0] * 1.0 / (K1 + 1) - np.asarray(scores)[:, 0])))
    return {"ndcg@10_ours": n_ours, "ndcg@10_bm25s": n_theirs, "ndcg@10_diff": n_ours - n_theirs,
            "max_abs_top1_score_diff": top_diff}


# ---------------------------------------------------------------------------- the other counting models
def sparse_ndcg(model: Any, ds: Any) -> tuple[float, float]:
    doc_ids, texts = ds.doc_ids(), ds.doc_texts()
    t, D = timed(lambda: model.fit_transform(texts))
    Q = model.encode_sparse(ds.query_texts(), role="query")
    S = (Q @ D.T).tocsr()
    idx, sc = topk_sparse_rows(S, K)
    return ndcg_at_k(run_from_arrays(ds.query_ids(), doc_ids, idx, sc), ds.qrels, K), t


def lsa_ndcg(dims: int, ds: Any) -> tuple[float, float]:
    doc_ids, texts = ds.doc_ids(), ds.doc_texts()
    lsa = LSA(n_components=dims)
    t, D = timed(lambda: lsa.fit_transform(texts))
    Q = lsa.encode(ds.query_texts(), role="query")
    S = Q @ D.T
    top = np.argsort(-S, axis=1, kind="stable")[:, :K]
    return ndcg_at_k(run_from_arrays(ds.query_ids(), doc_ids, top, np.take_along_axis(S, top, 1)), ds.qrels, K), t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, LSA with 64 dims")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lsa-dims", type=int, default=256)
    ap.add_argument("--no-write", action="store_true", help="print results, do not touch BENCHMARKS.md")
    ap.add_argument("--name", type=result_name, default="bm25",
                    help="results file and BENCHMARKS.md section (default bm25; e.g. bm25_zen4 for another CPU)")
    args = ap.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    lsa_dims = 64 if args.quick else args.lsa_dims

    ds = load_beir("scifact", split="train")
    log(f"SciFact train: {len(ds.doc_ids())} docs, {len(ds.query_ids())} queries", args.quiet)
    # warm-up (imports, regex compilation, PyStemmer load) outside the timings, for both libraries
    # and the numba kernels' compilation (or cache load)
    for backend in ("numba", "numpy"):
        m = ours_build(ds.doc_texts()[:50], ds.doc_ids()[:50], ENGLISH_ANALYZER)
        m.backend = backend
        m.search(ds.query_texts()[:5])
        r, st = theirs_build(ds.doc_texts()[:50], True)
        r.backend = backend
        theirs_query(r, st, ds.query_texts()[:5], True)

    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {"dataset": "scifact", "split": "train", "k1": K1, "b": B, "threads": 1,
                               "repeats": repeats}
    log("own pipelines (stemmer + stopwords)", args.quiet)
    results["stemmed"] = compare("stem", ds, ENGLISH_ANALYZER, True, repeats, args.quiet)
    log("no stemming, no stopwords", args.quiet)
    results["nostem"] = compare("nostem", ds, Analyzer(), False, repeats, args.quiet)
    log("identical token lists", args.quiet)
    results["same_tokens"] = same_tokens(ds)
    others = {}
    for name, model in (("tfidf", TfIdf(sublinear_tf=True)), ("bow", BagOfWords()),
                        ("binary-bow", BagOfWords(binary=True))):
        n, t = sparse_ndcg(model, ds)
        others[name] = {"ndcg@10": n, "fit_s": t}
    n, t = lsa_ndcg(lsa_dims, ds)
    others[f"lsa:{lsa_dims}"] = {"ndcg@10": n, "fit_s": t}
    results["other_models"] = others

    results["load_average_1min"] = [load_before, os.getloadavg()[0]]
    from exact_search import roofline  # after the timed runs: its threads cannot disturb them

    results["peaks"] = peaks = roofline(3)
    s, ns, same = results["stemmed"], results["nostem"], results["same_tokens"]
    import bm25s

    lines = [
        "## BM25 vs bm25s (SciFact train, 809 queries, 5,183 docs, one thread)",
        "",
        f"embedstack BM25 against bm25s {bm25s.__version__} in the same process; k1={K1}, b={B}, Lucene idf, "
        f"top-{K}. Times are medians of {repeats} interleaved runs; build includes tokenization, "
        "queries/s includes query tokenization and is measured after one untimed pass over the queries "
        "(our analyzer remembers surface tokens between calls; bm25s' PyStemmer caches stems). Both sides return arrays of document positions and "
        "scores (`BM25.retrieve` / `bm25s.BM25.retrieve`); the last q/s column is our `search`, which "
        "also builds `Hit` lists with string ids. Speed ratios are ours/theirs (> 1 = embedstack faster). "
        "Each library has two search backends: numpy (bm25s' default) and numba (ours is the default "
        "when numba is installed). Machine load average (1 min) before/after the run: "
        f"{results['load_average_1min'][0]:.2f} / {results['load_average_1min'][1]:.2f}. Spread: min–max over "
        "the runs (second table).",

        "",
        "| pipeline | nDCG@10 ours | nDCG@10 bm25s | Δ | build s ours | build s bm25s | build speed ratio "
        "| q/s ours (numba) | q/s ours (numpy) | q/s bm25s (numpy, default) | q/s bm25s (numba) "
        "| query ratio vs default | numpy/numpy | numba/numba | q/s ours `search` (Hits) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lab, r_ in (("stemmer + stopwords (each its own)", s), ("no stemming", ns)):
        q = r_["qps"]
        lines.append(
            f"| {lab} | {r_['ndcg@10_ours']:.4f} | {r_['ndcg@10_bm25s']:.4f} | {r_['ndcg@10_diff']:+.4f} | "
            f"{r_['build_s_ours']:.3f} | {r_['build_s_bm25s']:.3f} | {r_['build_speed_ratio']:.2f}× | "
            f"{q['ours_numba']:,.0f} | {q['ours_numpy']:,.0f} | {q['bm25s_numpy']:,.0f} | {q['bm25s_numba']:,.0f} | "
            f"{r_['qps_ratio_vs_default']:.2f}× | {r_['qps_ratio_numpy_vs_numpy']:.2f}× | "
            f"{r_['qps_ratio_numba_vs_numba']:.2f}× | {q['ours_hits']:,.0f} |"
        )
    lines.append(
        f"| identical token lists (ours → bm25s) | {same['ndcg@10_ours']:.4f} | {same['ndcg@10_bm25s']:.4f} | "
        f"{same['ndcg@10_diff']:+.4f} | | | | | | | | | | | |"
    )
    lines += ["", "Spread and roofline (one thread). Each query reads the posting lists of its terms: "
              "8 bytes per entry (document id and impact). The ceiling is this core's memory read rate, "
              f"{peaks['read_gbs_1thread']:.1f} GB/s measured in the same run; the collection's postings "
              "fit in the caches, so the true ceiling is higher still.", "",
              "| pipeline | postings/query | system | q/s median (min–max) | posting GB/s | share of read peak |",
              "|---|---:|---|---|---:|---:|"]
    for lab, r_ in (("stemmer + stopwords", s), ("no stemming", ns)):
        for v, name in (("ours_numba", "ours (numba, default)"), ("ours_numpy", "ours (numpy)"),
                        ("bm25s_numpy", "bm25s (numpy, default)"), ("bm25s_numba", "bm25s (numba)")):
            q, (lo, hi) = r_["qps"][v], r_["qps_spread"][v]
            gbs = q * r_["postings_per_query"] * 8 / 1e9
            lines.append(f"| {lab} | {r_['postings_per_query']:,.0f} | {name} | {q:,.0f} ({lo:,.0f}–{hi:,.0f}) | "
                         f"{gbs:.3f} | {100 * gbs / peaks['read_gbs_1thread']:.2f}% |")
        bo, bt = r_["build_spread_ours"], r_["build_spread_bm25s"]
        lines.append(f"| {lab}: build s | | ours / bm25s | {r_['build_s_ours']:.3f} ({bo[0]:.3f}–{bo[1]:.3f}) / "
                     f"{r_['build_s_bm25s']:.3f} ({bt[0]:.3f}–{bt[1]:.3f}) | | |")
    lines += [
        "",
        "Query time is per-query work, not bandwidth: tokenizing and stemming the query, gathering a few "
        "thousand postings and a top-10 selection; both libraries sit far below the read ceiling.",
        "",
        f"With identical tokens the top-1 scores agree to {same['max_abs_top1_score_diff']:.1e} (bm25s omits "
        "the constant factor k1+1). Lucene reports nDCG@10 0.665–0.679 on the SciFact *test* split.",
        "",
        "Other counting models, same split (fitted on the corpus; exact sparse/dense scoring):",
        "",
        "| model | nDCG@10 | fit s |",
        "|---|---|---|",
    ]
    for name, r_ in others.items():
        lines.append(f"| {name} | {r_['ndcg@10']:.4f} | {r_['fit_s']:.2f} |")
    cmd = "EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/bm25.py" + (" --quick" if args.quick else "") + name_flag(args.name, "bm25")
    lines += ["", f"Reproduce: `{cmd}`"]
    md = "\n".join(lines)
    if not args.quiet or args.no_write:
        print(md)
    if not args.no_write:
        write_results(args.name, results, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
