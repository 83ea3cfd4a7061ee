"""GloVe against skip-gram as the corpus grows: is GloVe's WordSim-353 gap one of corpus size? (issue 16)

Issue 16 asks for GloVe within 3 points of skip-gram on analogies and WS-353 at 33M words, or measurements
showing why it cannot be. ``glove_quality.py`` and ``glove_reference.py`` show that our GloVe and Stanford's
score the same and trail skip-gram on WS-353 by about 12 points at 33M words. This script trains both on the
first N words of the same enwiki extract, for several N, so the gap can be read as a function of corpus size:
if it narrows as N grows, the 33M-word verdict is one of scale.

Each size: the corpus read once (``Analyzer()``, min_count 5, as static_vectors.py), our skip-gram (dim 100,
window 5, negative 5, sample 1e-3) at 1 and 5 epochs, and our GloVe at the reference's defaults (window 10,
x_max 100, alpha 0.75, 25 iterations, W + W~), all on 2 threads. Quality as static_vectors.py: 3CosAdd over
the 30k most frequent words, WS-353 Spearman (pairs with both words in the vocabulary).

Usage:
    EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/glove_scale.py [--sizes 4000000,8000000,16000000,0]
    (--sizes 0: the whole extract)
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import log, write_results  # noqa: E402
from static_vectors import limited_texts, quality  # noqa: E402

SG = {"dim": 100, "window": 5, "negative": 5, "min_count": 5, "sample": 1e-3, "workers": 2, "seed": 1}


def one_size(source: Path, max_words: int | None, analogies: Any, wordsim: Any) -> dict[str, Any]:
    from embedstack.static import GloVe, IdCorpus, Word2Vec

    corpus = IdCorpus.build(limited_texts(source, max_words), min_count=5)
    out: dict[str, Any] = {"tokens": corpus.raw_words, "vocab": len(corpus.vocab)}
    log(f"{corpus.raw_words:,} tokens, vocabulary {len(corpus.vocab):,}")
    for epochs in (1, 5):
        model = Word2Vec(sg=True, epochs=epochs, **SG).fit(corpus)
        out[f"skipgram_{epochs}"] = quality(list(model.wv_.index_to_key), model.wv_.vectors, analogies, wordsim)
        log(f"  skip-gram {epochs} epoch(s): {out[f'skipgram_{epochs}']}")
        del model
        gc.collect()
    glove = GloVe(dim=100, min_count=5, seed=1, workers=2).fit(corpus)  # the reference's defaults otherwise
    out["glove"] = quality(list(glove.wv_.index_to_key), glove.wv_.vectors, analogies, wordsim)
    out["glove_settings"] = {k: getattr(glove, k) for k in ("window", "x_max", "alpha", "learning_rate", "epochs")}
    log(f"  GloVe: {out['glove']}")
    return out


def markdown(res: dict[str, Any]) -> str:
    g = next(iter(res["sizes"].values()))["glove_settings"]
    lines = ["## GloVe against skip-gram as the corpus grows (`benchmarks/glove_scale.py`)", "",
             "Reproduce: `EMBEDSTACK_DATA_DIR=../shared/data python benchmarks/glove_scale.py` — the first N words of the enwiki extract; our skip-gram "
             "(dim 100, window 5, negative 5, sample 1e-3) at 1 and 5 epochs and our GloVe at the reference's defaults "
             f"(window {g['window']}, x_max {g['x_max']:g}, alpha {g['alpha']}, {g['epochs']} iterations, W + W~), "
             "2 threads each; analogies: 3CosAdd over the 30k most frequent words; WS-353: Spearman over the pairs in the "
             "vocabulary (a smaller corpus has a smaller vocabulary, so the rows are scored on slightly different "
             "question sets).", "",
             "| tokens | vocabulary | analogy SG 1 ep | SG 5 ep | GloVe | WS-353 SG 1 ep | SG 5 ep | GloVe "
             "| GloVe − SG 1 ep (WS-353, points) | GloVe − SG 5 ep |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["sizes"].values():
        s1, s5, gl = r["skipgram_1"], r["skipgram_5"], r["glove"]
        lines.append(f"| {r['tokens']:,} | {r['vocab']:,} | {100 * s1['analogy']:.1f} | {100 * s5['analogy']:.1f} | "
                     f"{100 * gl['analogy']:.1f} | {s1['wordsim353']:.3f} | {s5['wordsim353']:.3f} | "
                     f"{gl['wordsim353']:.3f} | {100 * (gl['wordsim353'] - s1['wordsim353']):+.1f} | "
                     f"{100 * (gl['wordsim353'] - s5['wordsim353']):+.1f} |")
    return "\n".join(lines)


def main() -> None:
    from embedstack.data import load_analogies, load_word_similarity
    from embedstack.data._registry import data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="4000000,8000000,16000000,0", help="words per run; 0 = the whole extract")
    args = ap.parse_args()
    root = data_dir()
    if root is None:
        raise SystemExit("set EMBEDSTACK_DATA_DIR (e.g. ../shared/data): the enwiki extract is read from there")
    analogies, wordsim = load_analogies(), load_word_similarity()
    res: dict[str, Any] = {"sizes": {}}
    for n in (int(x) for x in args.sizes.split(",")):
        log(f"size {n or 'all'}")
        res["sizes"][str(n)] = one_size(root / "enwiki-extract", n or None, analogies, wordsim)
    write_results("glove_scale", res, markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
