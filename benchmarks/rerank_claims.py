"""The seed's bi- vs cross-encoder claims, measured on this machine (issue 17).

Parts (``--parts``, default all; each part's result is kept in results/NAME_arms.json, NAME from ``--name``
(default rerank_claims), and reused unless ``--fresh``):

* ``sts``: accuracy on STS-B test (Spearman x100) of a bi-encoder and a cross-encoder, both started from
  all-MiniLM-L6-v2 and trained on STS-B train with model selection on STS-B dev: the recipes
  ``minilm-stsb-cosent`` (bi) and ``minilm-stsb-ce`` (cross), built into the recipe cache when missing.
* ``scifact``: nDCG@10 on the SciFact report half of the bi-encoder recipe ``minilm-scifact`` against the
  cross-encoder recipe ``minilm-scifact-ce`` reranking (read from the results of
  ``benchmarks/train_retrieval.py`` and ``benchmarks/train_reranker.py``, arm ``report-windows-128``: abstracts read
  as windows of 128 tokens, as ``recipe:minilm-scifact-ce`` reads them; the bi-encoder saw the whole tune
  half's queries, the cross-encoder only tune-train, 70% of them).
* ``allpairs``: the seed's "all pairs of 10,000 sentences" (49,995,000 cross-encoder passes against 10,000
  bi-encoder encodings and one 10,000 x 10,000 similarity product), extrapolated from throughput measured
  here: cross-encoder pairs/s on 2,000 random pairs of STS-B sentences, bi-encoder sentences/s on 10,000
  STS-B sentences, and the similarity product timed in full. Both models in bf16 autocast (the fastest
  mode whose scores track fp32), 2 threads.
* ``latency``: the per-query latency budget on SciFact (5,183 abstracts): embed the query
  (all-MiniLM-L6-v2 in bf16, one query at a time), search an HNSW index (top 100), rerank the top 50 with
  the cross-encoder (``recipe:minilm-scifact-ce`` in bf16, abstracts read as the recipe reads them: windows of 128
  tokens); medians and p95 over 60 report-half queries.

Usage:
    EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/rerank_claims.py [--parts sts,allpairs] [--fresh]
        [--name rerank_claims_zen4]   # another CPU's section and arms file (results/NAME_arms.json)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import load_arms as _load_arms  # noqa: E402
from _report import log, name_flag, result_name, write_results  # noqa: E402
from _report import save_arm as _save_arm  # noqa: E402

PARTS = ("sts", "scifact", "allpairs", "latency")
N_SENTENCES = 10_000
SEED_HOURS, SEED_SECONDS = 65.0, 5.0  # the seed's figures for all pairs of 10,000 sentences
REPEATS = 5  # interleaved timings of each throughput in ``allpairs`` (records before 2026-12-08: 3)


def _recipe_model(name: str) -> Any:
    from embedstack.neural.specs import load
    from embedstack.training.recipes import build_recipe, get_recipe, recipe_dir

    folder = recipe_dir(name)
    if not (folder / "embedstack.json").is_file():
        log(f"building recipe {name}")
        build_recipe(get_recipe(name), score=False, stage=log,
                     progress=lambda i: log(f"  step {i['step']}/{i['total']} loss {i['loss']:.3f}")
                     if i["step"] % 100 == 0 else None)
    return load(str(folder))


def part_sts() -> dict[str, Any]:
    from embedstack.training.evaluators import evaluator_from_spec

    ev = evaluator_from_spec("sts:stsb/test")
    bi = _recipe_model("minilm-stsb-cosent")
    ce = _recipe_model("minilm-stsb-ce")
    t0 = time.perf_counter()
    out = {"bi": ev(bi)["spearman"], "cross": ev(ce)["spearman"], "bi_recipe": "minilm-stsb-cosent",
           "cross_recipe": "minilm-stsb-ce", "seconds": time.perf_counter() - t0}
    import embedstack

    out["untrained_bi"] = ev(embedstack.load("all-MiniLM-L6-v2"))["spearman"]
    return out


# the report arm of train_reranker.py that reads abstracts as `recipe:minilm-scifact-ce` does (windows of 128 tokens)
REPORT_ARM = "report-windows-128"


def part_scifact() -> dict[str, Any]:
    rr = _load_arms("train_reranker").get(REPORT_ARM)
    tr = _load_arms("train_retrieval")
    if rr is None or "recipe" not in tr:
        raise SystemExit(f"run benchmarks/train_reranker.py --arms {REPORT_ARM} and train_retrieval.py --arms recipe "
                         "first")
    cells = rr["cells"]
    return {"bi": tr["recipe"]["ndcg@10"], "bi_untrained": tr.get("base", {}).get("ndcg@10"),
            "cross": {k: v["ndcg@10"] for k, v in cells.items()}, "arm": REPORT_ARM, "options": rr.get("options")}


def _sentences(n: int) -> list[str]:
    from embedstack.data import load_sts

    seen: dict[str, None] = {}
    for split in ("train", "dev", "test"):
        sts = load_sts("stsb", split)
        for s in list(sts.s1) + list(sts.s2):
            seen.setdefault(s, None)
    out = list(seen)
    if len(out) < n:
        raise SystemExit(f"STS-B has {len(out)} distinct sentences, fewer than {n}")
    rng = np.random.default_rng(0)
    return [out[i] for i in rng.permutation(len(out))[:n]]


def part_allpairs() -> dict[str, Any]:
    import embedstack
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.training.recipes import recipe_dir

    sents = _sentences(N_SENTENCES)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, N_SENTENCES, size=(2000, 2))
    pairs = [(sents[a], sents[b]) for a, b in idx]
    folder = recipe_dir("minilm-stsb-ce")
    built = (folder / "embedstack.json").is_file()
    # an untrained head on all-MiniLM-L6-v2 has the recipe's shape, so its speed where the recipe is not built
    ce = CrossEncoder.from_folder(folder, precision="bf16") if built \
        else CrossEncoder.from_pretrained_encoder(embedstack.load("all-MiniLM-L6-v2").folder, precision="bf16")
    bi = embedstack.load("all-MiniLM-L6-v2@precision=bf16")
    ce.predict(pairs[:64], batch_size=32)  # warm-up
    bi.encode(sents[:64])
    ce_s, bi_s, mm_s = [], [], []
    for _ in range(REPEATS):  # interleaved repeats
        t0 = time.perf_counter()
        ce.predict(pairs, batch_size=32)
        ce_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        vecs = bi.encode(sents, batch_size=64)
        bi_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sims = vecs @ vecs.T
        mm_s.append(time.perf_counter() - t0)
        del sims
    pps = len(pairs) / float(np.median(ce_s))
    sps = N_SENTENCES / float(np.median(bi_s))
    n_pairs = N_SENTENCES * (N_SENTENCES - 1) // 2
    return {"ce_pairs_per_s": pps, "ce_pairs_per_s_spread": [len(pairs) / max(ce_s), len(pairs) / min(ce_s)],
            "bi_sentences_per_s": sps, "bi_sentences_per_s_spread": [N_SENTENCES / max(bi_s), N_SENTENCES / min(bi_s)],
            "matmul_s": float(np.median(mm_s)), "n_pairs": n_pairs, "ce_hours": n_pairs / pps / 3600,
            "bi_seconds": N_SENTENCES / sps + float(np.median(mm_s)), "ce_model": folder.name if built else "all-MiniLM-L6-v2 with an untrained head",
            "repeats": REPEATS,
            "mean_pair_tokens": float(np.mean([len(x) for x in ce._tokenize_pairs(pairs)[0]]))}


def part_latency() -> dict[str, Any]:
    import embedstack
    from embedstack.data import load_beir
    from embedstack.retrieval.build import build_index
    from embedstack.training.evaluators import query_half
    from embedstack.training.recipes import recipe_dir

    report = query_half(load_beir("scifact", split="train"), "report")
    texts, ids = report.doc_texts(), [str(d) for d in report.doc_ids()]
    bi = embedstack.load("all-MiniLM-L6-v2@precision=bf16")
    index = build_index(texts, ids, bi, spec="all-MiniLM-L6-v2@precision=bf16", index="hnsw")
    folder = recipe_dir("minilm-scifact-ce")
    if not (folder / "embedstack.json").is_file():
        raise SystemExit("build the reranker first: embedstack recipe minilm-scifact-ce")
    ce = embedstack.load("recipe:minilm-scifact-ce@precision=bf16")  # as a user gets it (abstracts in windows)
    queries = report.query_texts()[:60]
    embed, search, rerank = [], [], []
    bi.encode(queries[:2], role="query")
    for q in queries:
        t0 = time.perf_counter()
        v = bi.encode([q], role="query")
        t1 = time.perf_counter()
        hits = index.search(v, 100)[0]
        t2 = time.perf_counter()
        ce.predict([(q, h.text or "") for h in hits[:50]], batch_size=32)
        t3 = time.perf_counter()
        embed.append(t1 - t0)
        search.append(t2 - t1)
        rerank.append(t3 - t2)
    rerank = rerank[1:]  # the first call warms the cross-encoder up

    def stats(xs: list[float]) -> dict[str, float]:
        return {"p50_ms": 1000 * float(np.median(xs)), "p95_ms": 1000 * float(np.percentile(xs, 95)), "n": len(xs)}

    return {"embed_query": stats(embed), "hnsw_search_top100": stats(search), "rerank_top50": stats(rerank),
            "n_docs": len(ids), "ce_model": folder.name, "ce_precision": "bf16",
            "ce_reading": {"max_seq_length": ce.max_seq_length, "doc_stride": ce.doc_stride}}


def verdicts(parts: dict[str, Any]) -> list[str]:
    lines = []
    s = parts.get("sts")
    if s:
        gap = 100 * (s["cross"] - s["bi"]) / s["cross"]
        lines.append(f"| bi-encoders are ~5-10% less accurate than cross-encoders (STS-B test, both trained on STS-B "
                     f"train) | bi {s['bi']:.2f}, cross {s['cross']:.2f}: bi is {abs(gap):.1f}% "
                     f"{'below' if gap >= 0 else 'above'} cross | "
                     f"{'holds' if 5 <= gap <= 10 else 'holds in direction, smaller at our scale' if 0 < gap < 5 else 'refuted at our scale' if gap <= 0 else 'holds (gap larger)'} |")
    sf = parts.get("scifact")
    if sf:
        best = max(sf["cross"].items(), key=lambda kv: kv[1] if "+ce" in kv[0] and "fused" not in kv[0] else -1)
        blended = max(sf["cross"].items(), key=lambda kv: kv[1] if "fused" in kv[0] else -1)
        gap = 100 * (best[1] - sf["bi"]) / best[1]
        lines.append("| the same on SciFact retrieval (report half; bi-encoder trained on the tune half, cross-encoder "
                     "on 70% of it"
                     + (f", abstracts read as windows of {o['max_seq_length']} tokens"
                        if (o := sf.get("options") or {}).get("doc_stride") is not None else "")
                     + f") | bi-encoder minilm-scifact {sf['bi']:.2f}; the cross-encoder reranking alone, "
                     f"best first stage and depth ({best[0]}): {best[1]:.2f}, so bi is {abs(gap):.1f}% "
                     f"{'below' if gap >= 0 else 'above'}; blended with the first stage ({blended[0]}): "
                     f"{blended[1]:.2f} | "
                     f"{'holds' if 5 <= gap <= 10 else 'holds in direction, smaller at our scale' if 0 < gap < 5 else 'refuted at our scale' if gap <= 0 else 'holds (gap larger)'} |")
    a = parts.get("allpairs")
    if a:
        lines.append(f"| all pairs of 10,000 sentences: cross-encoder ~{SEED_HOURS:.0f} hours, bi-encoder ~{SEED_SECONDS:.0f} s "
                     f"| cross {a['ce_hours']:.0f} hours ({a['ce_pairs_per_s']:.0f} pairs/s); bi {a['bi_seconds']:.1f} s "
                     f"({a['bi_sentences_per_s']:.0f} sentences/s + {a['matmul_s']:.2f} s similarity product) | "
                     f"holds in kind: {a['ce_hours'] * 3600 / a['bi_seconds']:,.0f}x apart on 2 CPU cores |")
    return lines


def markdown(parts: dict[str, Any], name: str = "rerank_claims") -> str:
    only = "" if set(parts) == set(PARTS) else f" --parts {','.join(p for p in PARTS if p in parts)}"
    lines = ["### Bi- vs cross-encoders: the seed's claims measured here", "",
             f"`EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/rerank_claims.py{only}{name_flag(name, 'rerank_claims')}`",
             ""]
    if (a := parts.get("allpairs")) and "repeats" in a:
        lines += [f"Throughputs (all pairs, both in bf16): medians of {a['repeats']} interleaved timings, cross-encoder "
                  f"({a.get('ce_model', 'minilm-stsb-ce')}) {a['ce_pairs_per_s_spread'][0]:.0f}–{a['ce_pairs_per_s_spread'][1]:.0f} pairs/s, bi-encoder "
                  f"{a['bi_sentences_per_s_spread'][0]:.0f}–{a['bi_sentences_per_s_spread'][1]:.0f} sentences/s.", ""]
    lines += ["| claim | measured | verdict |", "|---|---|---|", *verdicts(parts)]
    lat = parts.get("latency")
    if lat:
        lines += ["", f"Latency budget of one query on SciFact ({lat['n_docs']:,} abstracts, 2 cores, one query at a "
                  f"time; cross-encoder {lat['ce_model']} in {lat['ce_precision']}"
                  + (f", abstracts read as windows of {r['max_seq_length']} tokens sharing {r['doc_stride']}"
                     if (r := lat.get("ce_reading") or {}).get("doc_stride") is not None else "") + "):", "",
                  "| stage | p50 ms | p95 ms |", "|---|---:|---:|"]
        for key, label in (("embed_query", "embed the query (all-MiniLM-L6-v2, bf16)"),
                           ("hnsw_search_top100", "HNSW search, top 100"),
                           ("rerank_top50", "cross-encoder rerank of the top 50")):
            lines.append(f"| {label} | {lat[key]['p50_ms']:.1f} | {lat[key]['p95_ms']:.1f} |")
        total = sum(lat[k]["p50_ms"] for k in ("embed_query", "hnsw_search_top100", "rerank_top50"))
        lines.append(f"| total (sum of medians) | {total:.0f} | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--name", type=result_name, default="rerank_claims",
                    help="results file, arms file and BENCHMARKS.md section (another CPU's run keeps its own)")
    opts = ap.parse_args()
    wanted = [p for p in opts.parts.split(",") if p]
    if bad := sorted(set(wanted) - set(PARTS)):
        ap.error(f"--parts takes {', '.join(PARTS)}, not {', '.join(bad)}")
    done = _load_arms(opts.name)
    fns = {"sts": part_sts, "scifact": part_scifact, "allpairs": part_allpairs, "latency": part_latency}
    for name in wanted:
        if name in done and not opts.fresh:
            log(f"{name}: kept")
            continue
        log(f"part {name}")
        done[name] = fns[name]()
        log(json.dumps(done[name], default=float)[:400])
        if not opts.no_save:
            _save_arm(opts.name, name, done[name])
    if not opts.no_save:
        write_results(opts.name, {"parts": done}, markdown(done, opts.name))
    print(markdown(done, opts.name))


if __name__ == "__main__":
    main()
