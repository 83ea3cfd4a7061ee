"""ELMo trained here (issue 15): build ``recipe:elmo-enwiki`` and report what it learned.

Reports the held-out perplexity of both directions (every 100th enwiki document, never trained on), the
tokens seen and the training throughput, and a context check: the cosine between the vectors of the same
word in two senses, per layer (the character layer cannot tell them apart; the biLSTM layers should).

Usage:
    EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_elmo.py [--reuse]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import log, write_results  # noqa: E402

#: (sentence, index of the word) pairs: the same word in two senses
SENSES = [
    (("He sat on the river bank and fished .", 5), ("She took a loan from the bank last year .", 6)),
    (("The plant needs water and light .", 1), ("The power plant closed in 1990 .", 2)),
    (("He will play the guitar tonight .", 2), ("The play opened on Broadway .", 1)),
    (("A bat flew out of the cave .", 1), ("He swung the bat at the ball .", 3)),
]


def sense_cosines(elmo: Any) -> list[dict[str, Any]]:
    out = []
    for (s1, i1), (s2, i2) in SENSES:
        a, b = elmo.word_layers([s1.split(), s2.split()])
        u, v = a[:, i1], b[:, i2]  # (L, D)
        cos = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
        out.append({"word": s1.split()[i1], "cosine_per_layer": [float(c) for c in cos]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reuse", action="store_true", help="report on the recipe folder already built")
    args = ap.parse_args()
    from embedstack.registry import load_component
    from embedstack.training.recipes import build_recipe, get_recipe, recipe_dir

    recipe = get_recipe("elmo-enwiki")
    folder = recipe_dir("elmo-enwiki")
    t0 = time.perf_counter()
    if not args.reuse:
        def progress(p: dict[str, Any]) -> None:
            if p.get("step", 0) % 50 == 0:
                log(f"  step {p.get('step')} loss {p.get('loss', float('nan')):.3f} "
                    f"{p.get('tokens_per_second', 0):.0f} tok/s")

        build_recipe(recipe, out=folder, force=True, progress=progress, stage=log)
    elmo = load_component(folder)
    training = dict(getattr(elmo, "meta", {}).get("training", {}))
    res = {"recipe": recipe.describe(), "training": training, "senses": sense_cosines(elmo),
           "wall_seconds": time.perf_counter() - t0}
    log(f"  {training}")
    from embedstack.evaluation.ladder import LADDER_ROWS, run_ladder

    res["ladder_markdown"] = run_ladder([r for r in LADDER_ROWS if r.spec == "recipe:elmo-enwiki"]).to_markdown()
    lines = [f"`recipe:elmo-enwiki` — {recipe.summary}.", "",
             "| held-out perplexity forward | backward | average | tokens seen | tokens/s | minutes | parameters |",
             "|---:|---:|---:|---:|---:|---:|---:|",
             f"| {training.get('perplexity_forward', float('nan')):.1f} | {training.get('perplexity_backward', float('nan')):.1f} | "
             f"{training.get('perplexity_average', float('nan')):.1f} | {training.get('tokens', 0):,} | "
             f"{training.get('tokens_per_second', 0):.0f} | {training.get('seconds', 0) / 60:.1f} | "
             f"{training.get('params', 0):,} |", "",
             "The same word in two senses (cosine of its two vectors per layer; layer 0 = character CNN, which "
             "sees only the word):", "", "| word | layer 0 | layer 1 | layer 2 |", "|---|---:|---:|---:|"]
    for s in res["senses"]:
        lines.append(f"| {s['word']} | " + " | ".join(f"{c:.3f}" for c in s["cosine_per_layer"]) + " |")
    lines += ["", "Its ladder row (STS-B test, SciFact train queries):", "", res["ladder_markdown"]]
    lines += ["", "For scale: Peters et al.'s ELMo saw about a billion words for 10 epochs (perplexity 39.7 on the "
              "1B Word Benchmark); this one sees a million or so in its budget on 2 CPU cores, so its perplexity is "
              "an order of magnitude higher. The layer probes (layer_probes) use this model.", "",
              "Reproduce: `EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_elmo.py` "
              "(= `embedstack recipe elmo-enwiki`, then the report)."]
    write_results("train_elmo", res, "\n".join(lines))


if __name__ == "__main__":
    main()
