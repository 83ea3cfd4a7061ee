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
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import RESULTS, machine  # noqa: E402
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
    from embedstack.static import IdCorpus

    tag = f"w{max_words or 'all'}"
    f = cache / f"corpus_{tag}.pkl"
    if f.exists():
        ids, offsets, vocab, raw = pickle.loads(f.read_bytes())
        return IdCorpus(ids, offsets, vocab, raw), tag
    corpus = IdCorpus.build(limited_texts(source, max_words), min_count=5)
    cache.mkdir(parents=True, exist_ok=True)
    f.write_bytes(pickle.dumps((np.asarray(corpus.ids), corpus.offsets, corpus.vocab, corpus.raw_words)))
    return corpus, tag


def load_cooc(cache: Path, corpus, tag: str, window: int) -> tuple[tuple[np.ndarray, ...], float | None]:
    from embedstack.static.glove import cooccurrence_matrix

    f = cache / f"cooc_{tag}_win{window}.npz"
    if f.exists():
        z = np.load(f)
        return (z["rows"], z["cols"], z["vals"]), None
    t0 = time.perf_counter()
    r, c, v = cooccurrence_matrix(corpus, window=window)
    secs = time.perf_counter() - t0
    np.savez(f, rows=r, cols=c, vals=v)
    return (r, c, v), secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default=DEFAULT_SWEEP)
    ap.add_argument("--eval-at", default="5,10,15,25,50", help="epochs after which to evaluate (and the last)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-words", type=int, default=None)
    ap.add_argument("--cache", default=os.environ.get("GLOVE_CACHE", "/tmp/embedstack_glove_cache"))
    ap.add_argument("--no-save", action="store_true", help="do not append to benchmarks/results/")
    args = ap.parse_args()

    from embedstack.data import load_analogies, load_word_similarity
    from embedstack.static import GloVe

    data_dir = Path(os.environ.get("EMBEDSTACK_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    analogies, wordsim = load_analogies(), load_word_similarity()
    cache = Path(args.cache)
    t0 = time.perf_counter()
    corpus, tag = load_corpus(cache, data_dir / "enwiki-extract", args.max_words)
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
        if not args.no_save:
            RESULTS.mkdir(parents=True, exist_ok=True)
            record = {"benchmark": "glove_quality", "machine": machine(), "corpus": tag,
                      "raw_words": corpus.raw_words, "vocab": len(corpus.vocab), "nonzeros": len(cooc[2]),
                      "count_seconds": count_s, "workers": args.workers, "setting": s,
                      "epoch_loss": g.stats_.epoch_loss, "rows": rows}
            with open(RESULTS / "glove_quality.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=float) + "\n")
        del g, cooc


if __name__ == "__main__":
    main()
