"""Static word vectors against gensim 4.4, in one run: speed (words/s) beside quality.

Corpus: ``$EMBEDSTACK_DATA_DIR/enwiki-extract`` (32.5M words; ``--quick``: the first ~3M words).
The corpus is read ONCE by embedstack into an id stream (tokenizer: ``Analyzer()`` — NFKC,
lowercase, word regex; words under min_count dropped; sentences = documents cut at 10k tokens).
gensim gets the same tokens and the same sentence boundaries as in-memory token lists (its
standard iterable mode), so both sides train on identical input.

For each model (skip-gram, CBOW, FastText skip-gram) ours and gensim run back to back with the same
options (dim 100, window 5, negative 5, min_count 5, sample 1e-3, workers 2, same epochs); the
initial learning rate is each side's default (gensim 0.025; ours 0.025 for skip-gram and, since
2026-12-07, 0.05 for CBOW, word2vec.c's; runs before that used 0.025 for CBOW too).
Speed is words/s on raw corpus tokens (the same numerator for both sides), training time only;
the corpus/vocabulary pass is timed separately (ours: tokenize + count + id stream; gensim:
``build_vocab`` on already tokenized lists) and reported on its own and added to training.
Quality: Google analogies (3CosAdd, restrict 30k, case-insensitive), WordSim-353 Spearman, and the
rank of "queen" for king - man + woman. GloVe (ours only) and the NPLM per-example cost curve
(full softmax vs negative sampling as the vocabulary grows) complete the table.

Usage: python benchmarks/static_vectors.py [--quick] [--epochs 1] [--workers 2] [--quiet]
       [--glove-epochs N] [--glove-workers N]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import RESULTS, data_dir, load_average, name_flag, ratio, result_name, rotated, write_results  # noqa: E402


def log(quiet: bool, *msg: Any) -> None:
    if not quiet:
        print(*msg, file=sys.stderr, flush=True)


def limited_texts(source: Path, max_words: int | None):
    from embedstack.data import iter_texts

    n = 0
    for text in iter_texts(source):
        yield text
        n += text.count(" ") + 1
        if max_words is not None and n >= max_words:
            return


def quality(keys: list[str], vectors: np.ndarray, analogies, wordsim) -> dict[str, Any]:
    from embedstack.evaluation.runners import evaluate_analogies, evaluate_word_similarity
    from embedstack.static import KeyedVectors

    kv = KeyedVectors(list(keys), np.asarray(vectors, dtype=np.float32))
    an = evaluate_analogies(kv, analogies, restrict_vocab=30000)
    ws = evaluate_word_similarity(kv, wordsim)
    try:
        rank = kv.rank(["king", "woman"], ["man"], "queen", restrict_vocab=30000)
    except (KeyError, ValueError):
        rank = None
    def acc(part: Any) -> float | None:
        return part.get("accuracy") if isinstance(part, dict) else None

    return {"analogy": an["accuracy"], "analogy_total": an["total"], "analogy_oov": an["oov"],
            "analogy_semantic": acc(an.get("semantic")), "analogy_syntactic": acc(an.get("syntactic")),
            "wordsim353": ws["spearman"], "wordsim_oov": ws["oov"], "queen_rank": rank}


def run_ours(kind: str, corpus, opts: dict[str, Any]) -> tuple[dict[str, Any], list[str], np.ndarray]:
    from embedstack.static import FastText, Word2Vec

    model = FastText(sg=True, **opts) if kind == "fasttext" else Word2Vec(sg=kind == "skipgram", **opts)
    cpu = time.process_time()
    model.fit(corpus)
    cpu = time.process_time() - cpu
    st = model.stats_
    extra = {"ngram_rows": int(model.vectors_ngrams_.shape[0])} if kind == "fasttext" else {}
    return ({"seconds": st.seconds, "cpu_seconds": cpu, "loss": st.epoch_loss[-1],
             "effective_words": st.effective_words, **extra}, list(model.wv_.index_to_key),
            np.array(model.wv_.vectors))


def run_gensim(kind: str, sentences: list[list[str]], opts: dict[str, Any]) -> tuple[dict[str, Any], list[str],
                                                                                     np.ndarray]:
    from gensim.models import FastText as GFastText
    from gensim.models import Word2Vec as GWord2Vec

    kw = dict(vector_size=opts["dim"], window=opts["window"], negative=opts["negative"],
              min_count=opts["min_count"], sample=opts["sample"], workers=opts["workers"], epochs=opts["epochs"],
              seed=opts["seed"])
    if kind == "fasttext":
        model = GFastText(sg=1, min_n=3, max_n=6, bucket=2_000_000, **kw)
    else:
        model = GWord2Vec(sg=int(kind == "skipgram"), **kw)
    t0 = time.perf_counter()
    model.build_vocab(sentences)
    vocab_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu = time.process_time()
    model.train(sentences, total_examples=model.corpus_count, epochs=opts["epochs"])
    cpu = time.process_time() - cpu
    train_s = time.perf_counter() - t0
    return ({"seconds": train_s, "cpu_seconds": cpu, "vocab_seconds": vocab_s}, list(model.wv.index_to_key),
            np.array(model.wv.vectors))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="first ~3M words only")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--glove-epochs", type=int, default=None, help="GloVe epochs (default: GloVe's own default)")
    ap.add_argument("--glove-workers", type=int, default=None,
                    help="GloVe threads (default: --workers; 1 gives a seeded, reproducible run)")
    ap.add_argument("--models", default="skipgram,cbow,fasttext,glove,nplm")
    ap.add_argument("--max-words", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5,
                    help="runs per side and model, interleaved with the order rotated (issue 16: at least 5)")
    ap.add_argument("--reuse-previous", action="store_true",
                    help="fill models not in --models from the last recorded run (same corpus size), marked as such")
    ap.add_argument("--name", type=result_name, default="static_vectors",
                    help="results file, BENCHMARKS.md section and plot name (default static_vectors; e.g. "
                         "static_vectors_zen4 for another CPU)")
    args = ap.parse_args()
    q = args.quiet
    os.environ.setdefault("OMP_NUM_THREADS", str(args.workers))

    from embedstack.data import load_analogies, load_word_similarity
    from embedstack.static import IdCorpus

    root = data_dir()
    source = root / "enwiki-extract"
    max_words = args.max_words or (3_000_000 if args.quick else None)
    analogies = load_analogies()
    wordsim = load_word_similarity()
    models = args.models.split(",")

    log(q, f"reading {source} (max words: {max_words or 'all'}) ...")
    load_before = load_average()
    t0 = time.perf_counter()
    corpus = IdCorpus.build(limited_texts(source, max_words), min_count=5)
    corpus_s = time.perf_counter() - t0
    raw = corpus.raw_words
    log(q, f"corpus: {raw:,} tokens, {len(corpus.vocab):,} words >= 5, {corpus.n_sentences:,} sentences, "
           f"{corpus_s:.1f}s ({raw / corpus_s:,.0f} tokens/s)")
    opts = dict(dim=100, window=5, negative=5, min_count=5, sample=1e-3, workers=args.workers, epochs=args.epochs,
                seed=1)
    results: dict[str, Any] = {"corpus": {"raw_words": raw, "kept_words": corpus.n_words,
                                          "vocab": len(corpus.vocab), "sentences": corpus.n_sentences,
                                          "seconds": corpus_s},
                               "options": opts, "quick": args.quick, "gensim_input": "in-memory token lists"}
    sentences: list[list[str]] | None = None
    rows = []
    for kind in [m for m in models if m in ("skipgram", "cbow", "fasttext")]:
        if sentences is None:
            sentences = list(corpus.sentences())
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "gensim": []}
        for rep in range(max(5, args.repeats) if not args.quick else args.repeats):  # interleaved, order rotated
            for side in rotated(("ours", "gensim"), rep):
                log(q, f"[{kind}] run {rep + 1}/{args.repeats}: {side} ...")
                one, keys, vecs = (run_ours(kind, corpus, opts) if side == "ours"
                                   else run_gensim(kind, sentences, opts))
                one.update(quality(keys, vecs, analogies, wordsim))
                del keys, vecs
                gc.collect()
                log(q, f"[{kind}] {side}: {one['seconds']:.1f}s, analogy {one['analogy']:.3f}")
                runs[side].append(one)
        ours, theirs = _summary(runs["ours"]), _summary(runs["gensim"])
        if kind == "fasttext":
            ours["ngram_rows"] = runs["ours"][-1].get("ngram_rows")
        total_words = raw * args.epochs
        ours["words_per_second"] = total_words / ours["seconds"]
        theirs["words_per_second"] = total_words / theirs["seconds"]
        ours["with_corpus_seconds"] = ours["seconds"] + corpus_s
        theirs["with_corpus_seconds"] = theirs["seconds"] + theirs["vocab_seconds"]
        r = ratio(ours["words_per_second"], theirs["words_per_second"])
        cell = {"model": kind, "runs": {"ours": [{"effective_words": x["effective_words"], "train_s": x["seconds"]}
                                                 for x in runs["ours"]],
                                        "gensim": [{"train_s": x["seconds"]} for x in runs["gensim"]]}}
        results[kind] = {"ours": ours, "gensim": theirs, "speed_ratio": r, "runs": runs, "roofline_cell": cell,
                         "cpu_ratio": ratio(theirs["cpu_seconds"], ours["cpu_seconds"]),
                         "speed_ratio_with_corpus": ratio(theirs["with_corpus_seconds"], ours["with_corpus_seconds"])}
        log(q, f"[{kind}] gensim: {theirs['seconds']:.1f}s, analogy {theirs['analogy']:.3f}; ratio {r:.2f}x")
        rows.append((kind, ours, theirs, results[kind]))
    if "glove" in models:
        from embedstack.static import GloVe

        # GloVe's own defaults (those of the reference glove.c, see GloVe's docstring) at dim 100, min_count 5
        gkw: dict[str, Any] = {"dim": 100, "min_count": 5, "seed": 1,
                               "workers": args.glove_workers or args.workers}
        if args.glove_epochs is not None:
            gkw["epochs"] = args.glove_epochs
        g = GloVe(**gkw)
        settings = {k: getattr(g, k) for k in ("window", "x_max", "alpha", "learning_rate", "epochs", "workers")}
        log(q, f"[glove] ours {settings} ...")
        g.fit(corpus)
        meta = g.wv_.meta
        gq = quality(list(g.wv_.index_to_key), g.wv_.vectors, analogies, wordsim)
        results["glove"] = {"count_seconds": meta["count_seconds"], "train_seconds": g.stats_.seconds,
                            "seconds_per_epoch": g.stats_.seconds / settings["epochs"],
                            "nonzeros": meta["nonzeros"], **settings, **gq}
        log(q, f"[glove] {g.stats_.seconds:.1f}s training, analogy {gq['analogy']:.3f}, WS-353 {gq['wordsim353']:.3f}")
        del g
        gc.collect()
    if "nplm" in models:
        try:
            import torch

            from embedstack.static.nplm import step_cost

            torch.set_num_threads(1)  # per-example cost on one thread: no spin-waiting on a shared machine
            sizes = [1000, 5000, 20000, 50000] + ([] if args.quick else [100000])
            curve = {"vocab": sizes, "softmax": [], "negative": []}
            for v in sizes:
                for loss in ("softmax", "negative"):
                    curve[loss].append(min(step_cost(v, loss=loss, steps=3, seed=r) for r in range(3)))
                log(q, f"[nplm] V={v}: softmax {curve['softmax'][-1] * 1e6:.1f} us/example, "
                       f"NS {curve['negative'][-1] * 1e6:.1f} us/example")
            results["nplm"] = {**curve, "plot": f"benchmarks/results/{args.name}_nplm.png"}
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            ax.plot(sizes, np.array(curve["softmax"]) * 1e6, "o-", label="full softmax")
            ax.plot(sizes, np.array(curve["negative"]) * 1e6, "s-", label="negative sampling (k=5)")
            ax.set_xscale("log")
            ax.set_xlabel("vocabulary size")
            ax.set_ylabel("µs per training example")
            ax.set_title("NPLM (Bengio 2003): cost per example")
            ax.legend()
            fig.tight_layout()
            RESULTS.mkdir(parents=True, exist_ok=True)
            fig.savefig(RESULTS / f"{args.name}_nplm.png", dpi=120)
        except ImportError as exc:
            results["nplm"] = {"skipped": str(exc)}
    results["load"] = {"before": load_before, "after": load_average()}
    if rows:
        from exact_search import roofline  # after the timed runs: its threads cannot disturb them
        from word2vec_cli import roofline_rates

        results["peaks"] = peaks = roofline(3)
        for kind, *_ in rows:
            results[kind]["roofline"] = roofline_rates(results[kind].pop("roofline_cell"), raw, peaks)
    if args.reuse_previous:
        reuse_previous(results, rows, models, args.name)
    write_results(args.name, results, markdown(results, args, rows))
    log(q, "done: BENCHMARKS.md updated")


def reuse_previous(results: dict[str, Any], rows: list, models: list[str], name: str) -> None:
    """Copy results of models not run now from the last jsonl record on the same corpus, tagged with its date."""
    import json

    path = RESULTS / f"{name}.jsonl"
    if not path.exists():
        return
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [r for r in records if r.get("corpus", {}).get("raw_words") == results["corpus"]["raw_words"]
               and r.get("options", {}).get("epochs") == results["options"]["epochs"]]
    if not records:
        return
    prev = records[-1]
    when = prev.get("machine", {}).get("date", "an earlier run")
    for key in ("skipgram", "cbow", "fasttext", "glove", "nplm"):
        if key not in models and key in prev:
            origin = prev[key].get("from_run", when)  # keep the date the figures were really measured
            results[key] = {**prev[key], "from_run": origin}
            if key in ("skipgram", "cbow", "fasttext"):
                rows.append((key + f" (run of {origin})", prev[key]["ours"], prev[key]["gensim"], prev[key]))
    order = {"skipgram": 0, "cbow": 1, "fasttext": 2}
    rows.sort(key=lambda r: order.get(r[0].split(" ")[0], 9))


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median seconds (with min-max) and mean quality of one side's runs."""
    out: dict[str, Any] = {}
    for key in ("seconds", "cpu_seconds", "vocab_seconds"):
        xs = [x[key] for x in runs if key in x]
        if xs:
            out[key] = statistics.median(xs)
            out[key + "_min"], out[key + "_max"] = min(xs), max(xs)
    for key in ("analogy", "wordsim353"):
        xs = [x[key] for x in runs if x.get(key) is not None]
        out[key] = statistics.fmean(xs) if xs else None
    out["queen_rank"] = runs[0].get("queen_rank")
    out["repeats"] = len(runs)
    return out


def _runs_text(res: dict[str, Any]) -> str:
    reps = {res[k]["ours"].get("repeats", 1) for k in ("skipgram", "cbow", "fasttext") if k in res}
    if reps == {1}:
        return "one run per side, back to back."
    return (f"medians of {'/'.join(str(x) for x in sorted(reps))} runs per side, interleaved with the order rotated "
            "(min-max in brackets); quality is the mean over the runs (the queen rank: the first run's).")


def _secs(side: dict[str, Any]) -> str:
    if "seconds_min" not in side:
        return f"{side['seconds']:.1f}"
    return f"{side['seconds']:.1f} ({side['seconds_min']:.1f}-{side['seconds_max']:.1f})"


def _gflops(r: dict[str, Any]) -> str:
    rl = r.get("roofline") or {}
    if not rl:
        return "n/a"
    return f"{rl['gflops_ours']:.1f} / {rl['gflops_gensim']:.1f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def markdown(res: dict[str, Any], args: argparse.Namespace, rows) -> str:
    c = res["corpus"]
    cmd = "python benchmarks/static_vectors.py" + (" --quick" if args.quick else "") + f" --epochs {args.epochs}"
    if args.models != "skipgram,cbow,fasttext,glove,nplm":
        cmd += f" --models {args.models}" + (" --reuse-previous" if args.reuse_previous else "")
    cmd += name_flag(args.name, "static_vectors")
    lines = [
        "## Static word vectors vs gensim 4.4",
        "",
        f"`{cmd}` — enwiki-extract, {c['raw_words']:,} tokens ({c['kept_words']:,} kept), "
        f"vocabulary {c['vocab']:,} (min_count 5); dim 100, window 5, negative 5, sample 1e-3, "
        f"{args.workers} workers, {args.epochs} epoch(s) both sides. gensim gets our tokens as in-memory lists "
        "(same sentences; gensim's iterable mode, training only — for its faster `corpus_file` mode, end to end, "
        "see the `word2vec_cli` section). words/s = corpus tokens x epochs / median training seconds; "
        f"{_runs_text(res)} Load average (1 min) before / after the run: "
        f"{res.get('load', {}).get('before', ['?'])[0]} / {res.get('load', {}).get('after', ['?'])[0]}.",
        "",
        f"Corpus pass (ours: tokenize + count + id stream, done once for all models): {c['seconds']:.1f} s.",
        "",
        "| model | ours words/s | gensim words/s | speed ratio | ours train s | gensim train s | "
        "CPU-time ratio | ratio incl. corpus/vocab pass | analogy ours | analogy gensim | WS-353 ours | "
        "WS-353 gensim | queen rank ours / gensim | training GFLOP/s ours / gensim |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, o, t, r in rows:
        lines.append(
            f"| {kind} | {o['words_per_second']:,.0f} | {t['words_per_second']:,.0f} | **{r['speed_ratio']:.2f}x** | "
            f"{_secs(o)} | {_secs(t)} | {r['cpu_ratio']:.2f}x | {r['speed_ratio_with_corpus']:.2f}x | "
            f"{_pct(o['analogy'])} | {_pct(t['analogy'])} | {o['wordsim353']:.3f} | {t['wordsim353']:.3f} | "
            f"{o['queen_rank']} / {t['queen_rank']} | {_gflops(r)} |")
    lines.append("")
    lines.append("Speed ratio = ours words/s / gensim words/s (wall clock, training only). CPU-time ratio = gensim "
                 "process CPU seconds / ours over the same training call (less sensitive to other jobs on the machine; "
                 "ours includes weight initialisation). Ratio incl. corpus pass: (gensim build_vocab + train) / "
                 "(our corpus pass + train); our corpus pass includes tokenizing raw text, gensim's build_vocab gets "
                 "already tokenized lists.")
    if "peaks" in res:
        pk = res["peaks"]
        lines += ["", f"Roofline: this machine's fp32 GEMM peak is {pk['fp32_gflops_peak']:.0f} GFLOP/s and its memory "
                      f"read bandwidth {pk['read_gbs']:.1f} GB/s (2 threads, measured in the same run). Work counted as "
                      "6·dim flops per (input row, output row) update — a dot product and two row updates — over the "
                      "effective (subsampled) words, as in the `word2vec_cli` section; both sides do the same updates, "
                      "so the GFLOP/s column compares rates on one scale. FastText's figure leaves out its n-gram "
                      "work (summing and updating each centre word's n-gram rows), so it is a lower bound and not "
                      "comparable with the skip-gram row. All are far below the GEMM peak: each update is a "
                      f"{res['options']['dim']}-float dot product on rows picked at random from matrices of "
                      f"{res['corpus']['vocab'] * res['options']['dim'] * 4 / 1e6:.0f} MB (FastText's n-gram rows "
                      "on top), bound by cache misses, not by arithmetic or streaming bandwidth."]
    if "glove" in res:
        g = res["glove"]
        when = f" (run of {g['from_run']})" if "from_run" in g else ""
        opts = (f"window {g.get('window', 10)}, x_max {g.get('x_max', 100.0):g}, alpha {g.get('alpha', 0.75):g}, "
                f"AdaGrad lr {g.get('learning_rate', 0.05):g}, {g['epochs']} epochs, {g.get('workers', 2)} worker(s)")
        per_epoch = g.get("seconds_per_epoch", g["train_seconds"] / g["epochs"])
        lines += ["", f"GloVe{when} (ours, dim 100, {opts}): counting "
                      f"{g['count_seconds']:.1f} s ({g['nonzeros']:,} nonzeros), training {g['train_seconds']:.1f} s "
                      f"({per_epoch:.1f} s/epoch); analogy {_pct(g['analogy'])}, WS-353 {g['wordsim353']:.3f}, "
                      f"queen rank {g['queen_rank']}. Settings sweep: benchmarks/glove_quality.py."]
    if isinstance(res.get("nplm"), dict) and "vocab" in res["nplm"]:
        n = res["nplm"]
        cells = ", ".join(f"V={v:,}: {s * 1e6:.0f} vs {k * 1e6:.0f} µs" for v, s, k in
                          zip(n["vocab"], n["softmax"], n["negative"], strict=True))
        when = f" (run of {n['from_run']})" if "from_run" in n else ""
        lines += ["", f"NPLM per-example cost{when}, full softmax vs negative sampling: {cells} "
                      "(context 4, dim 64, hidden 128, batch 256, Adam with sparse embedding updates, one thread, best of 3; "
                      f"plot: {n.get('plot', 'benchmarks/results/static_vectors_nplm.png')})."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
