"""Evaluation code vs the reference implementations, in the same process: same numbers, and how fast.

1. Retrieval metrics: a BM25 run on SciFact (train queries, top 100) scored by
   ``embedstack.evaluation.metrics.evaluate_run`` and by pytrec_eval (trec_eval's C code, what BEIR
   uses): nDCG@10, Recall@100, MAP@10, P@10 and MRR (recip_rank == MRR@100 on a depth-100 run).
   Reported: the largest per-metric difference of the means, and the time ratio theirs/ours.
2. Word vectors: PPMI-SVD vectors (``embedstack.count.PPMI``) trained on the first articles of the
   enwiki extract, evaluated on the Google analogies (restrict_vocab=30000, 3CosAdd) and WordSim-353
   by our runners and by gensim's ``KeyedVectors.evaluate_word_analogies`` / ``evaluate_word_pairs``.
   Reported: both accuracies / correlations and OOV counts, and the time ratio theirs/ours.

Ratios are theirs / ours: > 1 means we are faster. Timings are medians of ``--repeats`` (default 5)
runs of each side, interleaved with the order rotated; the load average and a roofline are printed.

Run:  EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/evaluation.py [--quick] [--quiet]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import itertools  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_line, interleaved, load_average, name_flag, result_name, spread, write_results  # noqa: E402
from embedstack.data import iter_texts, load_analogies, load_beir, load_word_similarity, resolve_dataset  # noqa: E402
from embedstack.evaluation.metrics import evaluate_run  # noqa: E402
from embedstack.evaluation.words import evaluate_analogies, evaluate_word_similarity  # noqa: E402
from embedstack.models import resolve  # noqa: E402


def log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def bm25_run(quiet: bool) -> tuple[dict, dict]:
    from embedstack.evaluation.runners import _id_tiebreak, top_k

    ds = load_beir("scifact", split="train")
    enc = resolve("bm25").fit(ds.doc_texts())
    docs_t = enc.encode_sparse(ds.doc_texts(), role="document").T.tocsr()
    q = enc.encode_sparse(ds.query_texts(), role="query")
    scores = (q @ docs_t).toarray()
    ids = ds.doc_ids()
    tb = _id_tiebreak(ids)
    run = {}
    for qid, row, idx in zip(ds.query_ids(), scores, top_k(scores, 100, tb), strict=True):
        run[qid] = {ids[i]: float(row[i]) for i in idx if row[i] != 0}
    log(f"BM25 run: {len(run)} queries x up to 100 documents", quiet)
    return run, {q: ds.qrels[q] for q in ds.query_ids()}


def metrics_section(repeats: int, quiet: bool) -> tuple[dict, str]:
    import pytrec_eval

    run, qrels = bm25_run(quiet)
    names = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "map@10": "map_cut_10",
             "precision@10": "P_10", "mrr@100": "recip_rank"}

    def ours() -> dict:
        return evaluate_run(run, qrels, list(names))

    def theirs() -> dict:
        ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.10", "P.10", "recip_rank"})
        per = ev.evaluate(run)
        # trec_eval averages over the queries of the run; every judged query is in this run
        return {m: statistics.fmean(v[key] for v in per.values()) for m, key in names.items()}

    tm = interleaved(ours, theirs, repeats)
    t_ours, t_theirs, a, b = tm["ours"], tm["theirs"], tm["out_ours"], tm["out_theirs"]
    diffs = {m: abs(a[m] - b[m]) for m in names}
    log(f"metrics: ours {t_ours * 1e3:.1f} ms, pytrec_eval {t_theirs * 1e3:.1f} ms, max |diff| "
        f"{max(diffs.values()):.2e}", quiet)
    entries = sum(len(v) for v in run.values())
    res = {"n_queries": len(run), "ours_seconds": t_ours, "pytrec_eval_seconds": t_theirs, "runs": tm["runs"],
           "run_entries": entries,
           "speed_ratio": t_theirs / t_ours, "ours": a, "pytrec_eval": b, "abs_diff": diffs}
    rows = "\n".join(f"| {m} | {a[m]:.4f} | {b[m]:.4f} | {diffs[m]:.1e} |" for m in names)
    md = (f"**Retrieval metrics vs pytrec_eval** — BM25 run on SciFact train ({len(run)} queries, top 100).\n\n"
          f"| metric | embedstack | pytrec_eval | abs diff |\n|---|---|---|---|\n{rows}\n\n"
          f"Time for all five metrics (median of {repeats} interleaved runs, min–max): embedstack "
          f"{t_ours * 1e3:.1f} ms ({spread(tm['runs']['ours'], 1e3, '.1f')}), pytrec_eval {t_theirs * 1e3:.1f} ms "
          f"({spread(tm['runs']['theirs'], 1e3, '.1f')}): **{t_theirs / t_ours:.2f}×** (theirs/ours; pytrec_eval's "
          "time includes building its evaluator, as a user's call does). Roofline: the work is "
          f"{entries:,} (query, document) entries, a sort and a few sums per query, about "
          f"{t_ours / entries * 1e9:.0f} ns per entry for ours and {t_theirs / entries * 1e9:.0f} ns for pytrec_eval: "
          "dictionary lookups and sorting, bound by per-entry interpreter and allocation work, not by the "
          "arithmetic or memory peaks at the top of this section.\n")
    return res, md


def words_section(n_articles: int, repeats: int, quiet: bool) -> tuple[dict, str]:
    from gensim.models import KeyedVectors

    from embedstack.count import PPMI

    t = time.perf_counter()
    texts = list(itertools.islice(iter_texts("enwiki"), n_articles))
    ppmi = PPMI(300, window=2, min_count=10, max_vocab=50000).fit(texts)
    train_s = time.perf_counter() - t
    n_words = len(ppmi.index_to_key)
    log(f"PPMI-SVD: {n_articles} articles, {n_words} words, {train_s:.1f} s", quiet)
    kv = KeyedVectors(ppmi.vectors.shape[1])
    kv.add_vectors(list(ppmi.index_to_key), ppmi.vectors)
    sections = load_analogies("analogies")
    ana_path = resolve_dataset("analogies") / "questions-words.txt"
    pairs = load_word_similarity("wordsim353")
    sim_path = next(p for p in resolve_dataset("wordsim353").glob("*353*"))

    logging.getLogger("gensim").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ta = interleaved(lambda: evaluate_analogies(ppmi, sections, restrict_vocab=30000),
                         lambda: kv.evaluate_word_analogies(str(ana_path), restrict_vocab=30000,
                                                            case_insensitive=True), repeats)
        t_ours, ours, t_theirs, (g_acc, g_secs) = ta["ours"], ta["out_ours"], ta["theirs"], ta["out_theirs"]
        g_total = next(s for s in g_secs if s["section"] == "Total accuracy")
        g_answered = len(g_total["correct"]) + len(g_total["incorrect"])
        tw = interleaved(lambda: evaluate_word_similarity(ppmi, pairs),
                         lambda: kv.evaluate_word_pairs(str(sim_path), case_insensitive=True), repeats)
        t_sim_ours, sim, t_sim_theirs, (_g_pear, g_spear, g_oov) = (tw["ours"], tw["out_ours"], tw["theirs"],
                                                                     tw["out_theirs"])
    t = time.perf_counter()
    mul = evaluate_analogies(ppmi, sections, restrict_vocab=30000, method="3cosmul")
    t_mul = time.perf_counter() - t
    # roofline: 3CosAdd scores each answered question against the 30,000 candidate words (one product of
    # `dim` floats each), both sides
    dim = int(ppmi.vectors.shape[1])
    cand = min(30000, n_words)
    flops = 2.0 * dim * cand * ours["total"]
    gf_ours, gf_theirs = flops / t_ours / 1e9, flops / t_theirs / 1e9
    log(f"analogies: ours {ours['accuracy']:.4f} ({ours['total']} answered) in {t_ours:.2f} s; gensim "
        f"{g_acc:.4f} ({g_answered}) in {t_theirs:.2f} s; 3CosMul {mul['accuracy']:.4f}", quiet)
    log(f"wordsim353: ours {sim['spearman']:.4f} (oov {sim['oov']}), gensim {g_spear.statistic:.4f} "
        f"(oov {g_oov:.1f}%)", quiet)
    res = {
        "n_articles": n_articles, "n_words": n_words, "ppmi_train_seconds": train_s,
        "analogy_ours": {k: ours[k] for k in ("accuracy", "correct", "total", "oov")},
        "analogy_ours_semantic": ours["semantic"], "analogy_ours_syntactic": ours["syntactic"],
        "analogy_gensim": {"accuracy": g_acc, "correct": len(g_total["correct"]), "total": g_answered},
        "analogy_seconds_ours": t_ours, "analogy_seconds_gensim": t_theirs, "analogy_speed_ratio": t_theirs / t_ours,
        "analogy_runs": ta["runs"], "wordsim_runs": tw["runs"], "analogy_gflop": flops / 1e9,
        "analogy_gflops_ours": gf_ours, "analogy_gflops_gensim": gf_theirs,
        "analogy_3cosmul_ours": {"accuracy": mul["accuracy"], "seconds": t_mul},
        "wordsim_ours": {"spearman": sim["spearman"], "oov": sim["oov"], "total": sim["total"]},
        "wordsim_gensim": {"spearman": float(g_spear.statistic), "oov_percent": float(g_oov)},
        "wordsim_seconds_ours": t_sim_ours, "wordsim_seconds_gensim": t_sim_theirs,
    }
    md = (f"**Word-vector evaluation vs gensim** — PPMI-SVD vectors (300-d, window 2, {n_words:,} words) "
          f"trained by `embedstack.count.PPMI` on the first {n_articles:,} enwiki articles ({train_s:.0f} s).\n\n"
          "| task | embedstack | gensim | time ours | time gensim | ratio |\n|---|---|---|---|---|---|\n"
          f"| analogies 3CosAdd, restrict 30k | {ours['accuracy']:.4f} ({ours['correct']}/{ours['total']}, "
          f"{ours['oov']} OOV) | {g_acc:.4f} ({len(g_total['correct'])}/{g_answered}) | {t_ours:.2f} s "
          f"({spread(ta['runs']['ours'])}) | {t_theirs:.2f} s ({spread(ta['runs']['theirs'])}) | "
          f"**{t_theirs / t_ours:.1f}×** |\n"
          f"| analogies 3CosMul | {mul['accuracy']:.4f} | — | {t_mul:.2f} s | — | — |\n"
          f"| WordSim-353 Spearman | {sim['spearman']:.4f} ({sim['oov']} OOV pairs) | {g_spear.statistic:.4f} "
          f"({g_oov:.1f}% OOV) | {t_sim_ours * 1e3:.1f} ms ({spread(tw['runs']['ours'], 1e3, '.1f')}) | "
          f"{t_sim_theirs * 1e3:.1f} ms ({spread(tw['runs']['theirs'], 1e3, '.1f')}) | "
          f"**{t_sim_theirs / t_sim_ours:.1f}×** |\n\n"
          f"Medians of {repeats} interleaved runs per side (order rotated) after one untimed run of each, min–max in brackets; 3CosMul one run.\n\n"
          f"Roofline (analogies): 3CosAdd scores each of the {ours['total']:,} answered questions against "
          f"{cand:,} candidate words, {flops / 1e9:.0f} GFLOP in all. Ours runs them as blocked matrix "
          f"products: {gf_ours:.1f} GFLOP/s; gensim one question at a time: {gf_theirs:.2f} GFLOP/s; "
          "the fp32 GEMM peak is at the top of this section. Ours also excludes the three question words and takes a top-1 per block, "
          "so its share of the peak is not all GEMM.\n\n"
          f"Semantic / syntactic accuracy (ours): {ours['semantic']['accuracy']:.4f} / "
          f"{ours['syntactic']['accuracy']:.4f}.\n")
    return res, md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer articles and repeats")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--articles", type=int, default=None, help="enwiki articles for the PPMI vectors")
    ap.add_argument("--name", type=result_name, default="evaluation",
                    help="results file and BENCHMARKS.md section (default evaluation; e.g. evaluation_zen4 for another CPU)")
    args = ap.parse_args()
    repeats = 1 if args.quick else max(5, args.repeats or 5)  # issue 16: at least 5 runs per side
    n_articles = args.articles or (500 if args.quick else 2000)
    load_before = load_average()
    m_res, m_md = metrics_section(repeats, args.quiet)
    w_res, w_md = words_section(n_articles, repeats, args.quiet)
    load_after = load_average()
    from exact_search import roofline  # after the timed runs: its threads cannot disturb them

    peaks = roofline(3)
    w_res["analogy_share_of_fp32_peak"] = {"ours": w_res["analogy_gflops_ours"] / peaks["fp32_gflops_peak"],
                                           "gensim": w_res["analogy_gflops_gensim"] / peaks["fp32_gflops_peak"]}
    machine_md = (f"{cpu_line()}. Load average (1, 5, 15 min) {load_before} before, {load_after} after. Peaks "
                  f"measured in the same run (2 threads): fp32 GEMM {peaks['fp32_gflops_peak']:.0f} GFLOP/s "
                  f"(analogies: ours at {100 * w_res['analogy_share_of_fp32_peak']['ours']:.1f}%, gensim at "
                  f"{100 * w_res['analogy_share_of_fp32_peak']['gensim']:.2f}%), memory read "
                  f"{peaks['read_gbs']:.1f} GB/s.\n")
    cmd = "EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/evaluation.py" + (" --quick" if args.quick else "") + name_flag(args.name, "evaluation")
    md = f"## Evaluation code vs pytrec_eval and gensim\n\n`{cmd}`\n\n{machine_md}\n{m_md}\n{w_md}"
    write_results(args.name, {"quick": args.quick, "metrics": m_res, "words": w_res, "peaks": peaks,
                                 "load_before": load_before, "load_after": load_after, "repeats": repeats}, md)
    log(md, args.quiet)


if __name__ == "__main__":
    main()
