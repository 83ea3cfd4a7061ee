"""GloVe quality sweep: settings -> Google analogies / WordSim-353 on the enwiki extract.

Reads the corpus once (same tokens as benchmarks/static_vectors.py: ``Analyzer()``, min_count 5,
documents cut at 10k tokens), counts the co-occurrence matrix once per window and caches it (with
the id corpus) under ``--cache``, so a sweep does not recount. Each setting trains dim-100 GloVe on
``--workers`` threads (1 = deterministic) and is evaluated after the epochs listed in ``--eval-at``
(one training run gives every row up to its last epoch). Quality is the same as static_vectors.py:
3CosAdd analogies restricted to the 30k most frequent words, WS-353 Spearman, queen rank.

A setting is ``key=value`` pairs joined by ``,`` (keys: window, x_max, alpha, learning_rate, epochs,
dim, seed); settings are joined by ``;``. One JSON object per run is appended to
benchmarks/results/glove_quality.jsonl; BENCHMARKS.md is not touched.

Usage:
    python benchmarks/glove_quality.py                      # the default sweep (about 50 min on 1 core)
    python benchmarks/glove_quality.py --settings "x_max=10,epochs=25" --eval-at 5,10,25
    python benchmarks/glove_quality.py --max-words 3000000  # a subset, to iterate quickly
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import RESULTS, data_dir, machine, write_section  # noqa: E402
from static_vectors import limited_texts, quality  # noqa: E402

BASE = {"dim": 100, "window": 10, "x_max": 100.0, "alpha": 0.75, "learning_rate": 0.05, "epochs": 25, "seed": 1}
DEFAULT_SWEEP = "epochs=25;x_max=10,epochs=25;window=15,x_max=10,epochs=25"
INT_KEYS = ("dim", "window", "epochs", "seed")


def parse_settings(text: str) -> list[dict[str, Any]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        s = dict(BASE)
        for kv in part.split(","):
            k, _, v = kv.partition("=")
            k = k.strip()
            if k not in BASE:
                raise SystemExit(f"unknown setting {k!r}; one of {sorted(BASE)}")
            s[k] = int(v) if k in INT_KEYS else float(v)
        out.append(s)
    return out


def load_corpus(cache: Path, source: Path, max_words: int | None):
    """The id corpus (rebuilt each time, ~30 s: deterministic, so the cached counts below still match it)."""
    from embedstack.static import IdCorpus

    tag = f"w{max_words or 'all'}"
    cache.mkdir(parents=True, exist_ok=True)
    return IdCorpus.build(limited_texts(source, max_words), min_count=5), tag


def load_cooc(cache: Path, corpus, tag: str, window: int) -> tuple[tuple[np.ndarray, ...], float | None]:
    from embedstack.static.glove import cooccurrence_matrix

    f = cache / f"cooc_{tag}_win{window}.npz"
    if f.exists():
        z = np.load(f)
        return (z["rows"], z["cols"], z["vals"]), None
    t0 = time.perf_counter()
    r, c, v = cooccurrence_matrix(corpus, window=window)
    secs = time.perf_counter() - t0
    from embedstack.io import AtomicFile

    with AtomicFile(f, force=True) as out, open(out.tmp, "wb") as fh:  # a stopped run leaves no half file
        np.savez(fh, rows=r, cols=c, vals=v)
    return (r, c, v), secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default=DEFAULT_SWEEP)
    ap.add_argument("--eval-at", default="5,10,15,25,50", help="epochs after which to evaluate (and the last)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-words", type=int, default=None)
    ap.add_argument("--cache", default=os.environ.get("GLOVE_CACHE", "/tmp/embedstack_glove_cache"))
    ap.add_argument("--no-save", action="store_true", help="do not append to benchmarks/results/")
    ap.add_argument("--report", action="store_true",
                    help="only render the BENCHMARKS.md section from every full-corpus record in results/")
    args = ap.parse_args()
    if args.report:
        report()
        return

    from embedstack.data import load_analogies, load_word_similarity
    from embedstack.static import GloVe

    root = data_dir()
    analogies, wordsim = load_analogies(), load_word_similarity()
    cache = Path(args.cache)
    t0 = time.perf_counter()
    corpus, tag = load_corpus(cache, root / "enwiki-extract", args.max_words)
    print(f"corpus: {corpus.raw_words:,} tokens, vocabulary {len(corpus.vocab):,} ({time.perf_counter() - t0:.1f} s)",
          file=sys.stderr, flush=True)
    eval_at = {int(x) for x in args.eval_at.split(",") if x}
    print("| window | x_max | alpha | lr | epochs | analogy % | sem % | syn % | WS-353 | queen rank | s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in parse_settings(args.settings):
        cooc, count_s = load_cooc(cache, corpus, tag, s["window"])
        rows: list[dict[str, Any]] = []
        clock = {"t": time.perf_counter(), "train": 0.0}

        def on_epoch(epoch: int, vectors: np.ndarray, s: dict[str, Any] = s, rows: list = rows,
                     clock: dict = clock) -> None:
            clock["train"] += time.perf_counter() - clock["t"]
            if epoch in eval_at or epoch == s["epochs"]:
                q = quality(list(corpus.vocab.words_), vectors, analogies, wordsim)
                row = {**s, "epochs": epoch, **q, "seconds_per_epoch": clock["train"] / epoch}
                rows.append(row)
                pct = lambda x: "—" if x is None else f"{100 * x:.1f}"  # noqa: E731
                print(f"| {s['window']} | {s['x_max']:g} | {s['alpha']:g} | {s['learning_rate']:g} | {epoch} | "
                      f"{pct(q['analogy'])} | {pct(q['analogy_semantic'])} | {pct(q['analogy_syntactic'])} | "
                      f"{q['wordsim353']:.3f} | {q['queen_rank']} | {row['seconds_per_epoch']:.1f} |", flush=True)
            clock["t"] = time.perf_counter()

        g = GloVe(dim=s["dim"], window=s["window"], x_max=s["x_max"], alpha=s["alpha"],
                  learning_rate=s["learning_rate"], epochs=s["epochs"], min_count=5, seed=s["seed"],
                  workers=args.workers)
        g.fit_cooccurrence(cooc, corpus.vocab, raw_words=corpus.raw_words, on_epoch=on_epoch)
        # the word vectors alone (the paper sums W + W~; a common alternative keeps W)
        qw = quality(list(corpus.vocab.words_), np.asarray(g.W_), analogies, wordsim)
        rows.append({**s, **qw, "vectors": "W", "seconds_per_epoch": rows[-1]["seconds_per_epoch"] if rows else None})
        print(f"| {s['window']} | {s['x_max']:g} | {s['alpha']:g} | {s['learning_rate']:g} | {s['epochs']} (W only) | "
              f"{100 * qw['analogy']:.1f} | {100 * qw['analogy_semantic']:.1f} | {100 * qw['analogy_syntactic']:.1f} | "
              f"{qw['wordsim353']:.3f} | {qw['queen_rank']} | – |", flush=True)
        if not args.no_save:
            RESULTS.mkdir(parents=True, exist_ok=True)
            record = {"benchmark": "glove_quality", "machine": machine(), "corpus": tag,
                      "raw_words": corpus.raw_words, "vocab": len(corpus.vocab), "nonzeros": len(cooc[2]),
                      "count_seconds": count_s, "workers": args.workers, "setting": s,
                      "epoch_loss": g.stats_.epoch_loss, "rows": rows}
            with open(RESULTS / "glove_quality.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=float) + "\n")
        del g, cooc


def report() -> None:
    """BENCHMARKS.md section ``glove_quality``: every full-corpus setting measured, beside our skip-gram."""
    recs = [json.loads(line) for line in (RESULTS / "glove_quality.jsonl").read_text(encoding="utf-8").splitlines()]
    recs = [r for r in recs if r["corpus"] == "wall"]
    rows: dict[tuple, dict[str, Any]] = {}
    for r in recs:  # a later measurement of the same setting and epoch replaces an earlier one
        for row in r["rows"]:
            key = (row["window"], row["x_max"], row["alpha"], row["learning_rate"], row["epochs"], row.get("vectors", "W+W~"))
            rows[key] = {**row, "date": r["machine"]["date"], "workers": r["workers"]}
    sg = None
    sv = RESULTS / "static_vectors.jsonl"
    if sv.is_file():
        for line in sv.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if "skipgram" in rec:
                sg = rec["skipgram"]["ours"]
    last = recs[-1]
    lines = ["## GloVe quality: settings against our skip-gram (`benchmarks/glove_quality.py`)", "",
             f"Reproduce: `python benchmarks/glove_quality.py --eval-at 5,10,15,25` (then `--report`) — enwiki extract, "
             f"{last['raw_words']:,} tokens, vocabulary {last['vocab']:,} (min_count 5), dim 100; "
             f"s/epoch on the row's workers (1 is deterministic, 2 lock-free threads); analogies: 3CosAdd over the 30k most frequent words, as for word2vec.", ""]
    if sg:
        lines += [f"Our skip-gram on the same corpus (dim 100, window 5, 1 epoch; `benchmarks/static_vectors.py`): "
                  f"analogy {100 * sg['analogy']:.1f}%, WS-353 {sg['wordsim353']:.3f}.", ""]
    lines += ["| window | x_max | alpha | lr | epochs | vectors | analogy % | semantic % | syntactic % | WS-353 | queen rank | workers | s/epoch |",
              "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(rows):
        r = rows[key]
        lines.append(f"| {r['window']} | {r['x_max']:g} | {r['alpha']:g} | {r['learning_rate']:g} | {r['epochs']} | "
                     f"{key[-1]} | {100 * r['analogy']:.1f} | {100 * r['analogy_semantic']:.1f} | "
                     f"{100 * r['analogy_syntactic']:.1f} | {r['wordsim353']:.3f} | {r['queen_rank']} | {r['workers']} | "
                     + ("–" if r.get("seconds_per_epoch") is None else f"{r['seconds_per_epoch']:.1f}") + " |")
    if sg and rows:
        default = rows.get((BASE["window"], BASE["x_max"], BASE["alpha"], BASE["learning_rate"], BASE["epochs"], "W+W~"))
        best_a = max(r["analogy"] for r in rows.values())
        best_w = max(r["wordsim353"] for r in rows.values())
        lines += ["", "Target (issue 16): GloVe within 3 points of skip-gram on analogies and WS-353. The verdicts use "
                  "the reference defaults (window 10, x_max 100, alpha 0.75, 25 epochs, W + W~), chosen before any "
                  "measurement; the best row of the sweep is picked on the very test sets it is scored on, so it is "
                  "an upper bound, not a result.", ""]
        if default:
            da, dw = 100 * (default["analogy"] - sg["analogy"]), 100 * (default["wordsim353"] - sg["wordsim353"])
            lines.append(f"Analogies: {'**met**' if da >= -3 else '**not met**'} ({100 * default['analogy']:.1f}% against "
                         f"{100 * sg['analogy']:.1f}%, {da:+.1f} points; best of the sweep {100 * best_a:.1f}%). WS-353: "
                         f"{'**met**' if dw >= -3 else '**not met**'} ({default['wordsim353']:.3f} against "
                         f"{sg['wordsim353']:.3f}, {dw:+.1f} points; even the best of the sweep, {best_w:.3f}, stays "
                         f"{100 * (sg['wordsim353'] - best_w):.1f} points behind, and more epochs lower it while analogies rise).")
        lines += ["", "Both verdicts compare 25 GloVe epochs with 1 skip-gram epoch. At 5 epochs skip-gram reaches 49.8% "
                  "analogies and WS-353 0.698 on the same tokens (`word2vec_cli`), ahead of every row above on both. "
                  "Stanford's reference GloVe, run on the same file with the same settings (`glove_reference`), scores "
                  "what ours scores: the WS-353 gap is GloVe's at 33M words, not this implementation's."]
    write_section("glove_quality", "\n".join(lines), last["machine"])


if __name__ == "__main__":
    main()
