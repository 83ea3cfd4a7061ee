"""Which initial learning rate for CBOW: gensim's 0.025 or word2vec.c's 0.05, chosen on half the analogy sections.

The candidates are the two rates with an outside source (gensim starts every model at 0.025; word2vec.c
starts CBOW at 0.05). Each is trained once with our CLI on the enwiki extract (the token file of
``word2vec_cli.py``; dim 100, window 5, negative 5, min_count 5, sample 1e-3, 2 workers), for CBOW
word2vec at 1 and 5 epochs and CBOW fastText at 1 epoch. The Google analogy file is split by section:
the 1st, 3rd, ..., 13th sections choose, the other 7 report and were not looked at while choosing.
WordSim-353 is reported beside them. Quality only: the runs are not interleaved for timing (that is
``word2vec_cli.py``'s job).

Usage::

    python benchmarks/rate_split.py            # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, data_dir, last_results, log, write_results, write_section  # noqa: E402

RATES = (0.025, 0.05)
CELLS = (("cbow", 1), ("cbow", 5), ("fasttext-cbow", 1))


def halves(analogies: list[Any]) -> tuple[list[Any], list[Any]]:
    """The sections that choose (1st, 3rd, ...) and the sections that report (2nd, 4th, ...)."""
    return analogies[0::2], analogies[1::2]


def command(model: str, path: Path, epochs: int, out: Path, rate: float) -> list[str]:
    from word2vec_cli import ours_cmd

    if model == "fasttext-cbow":
        return [*ours_cmd("fasttext", path, epochs, out, rate), "--cbow"]
    return ours_cmd(model, path, epochs, out, rate)


def markdown(res: dict[str, Any]) -> str:
    rows = [f"| {r['model']} | {r['epochs']} | {r['alpha']:g} | {r['choose']:.1f} | {r['report']:.1f} "
            f"| {r['wordsim353']:.3f} | {r['wall_s']:.0f} |" for r in res["rows"]]
    return "\n".join([
        "## CBOW's initial learning rate, chosen on half the analogy sections (`benchmarks/rate_split.py`)",
        "",
        f"`{res['command']}` — {res['corpus']}; our CLI, dim 100, window 5, negative 5, min_count 5, sample 1e-3, "
        "2 workers, one run per row. Analogy accuracy (3CosAdd, 30k most frequent words) on the sections that "
        "choose (1st, 3rd, …, 13th) and on the other 7, which report; WordSim-353 Spearman.",
        "",
        "| model | epochs | alpha | analogy %, choosing half | analogy %, reporting half | WS-353 | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default="rate_split")
    ap.add_argument("--render-last", action="store_true", help="re-render the section from the last record")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    if args.render_last:
        res = last_results(args.name)
        write_section(args.name, markdown(res), res["machine"])
        return

    from embedstack.data import load_analogies, load_word_similarity
    from embedstack.static import load_vectors
    from static_vectors import quality
    from word2vec_cli import CACHE, corpus_file, timed

    path = corpus_file(data_dir() / "enwiki-extract")
    choose, report = halves(load_analogies())
    wordsim = load_word_similarity()
    rows = []
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rate-split-", dir=CACHE) as tmp:
        for model, epochs in CELLS:
            for rate in RATES:
                out = Path(tmp) / f"{model}-{epochs}-{rate}"
                wall, _, stdout = timed(command(model, path, epochs, out, rate))
                if json.loads(stdout)["alpha"] != rate:  # the CLI says which rate it trained at
                    raise RuntimeError(f"{model}: asked for alpha {rate}, the CLI trained at {stdout}")
                kv = load_vectors(out)
                keys = list(kv.index_to_key)
                a, b = quality(keys, kv.vectors, choose, wordsim), quality(keys, kv.vectors, report, wordsim)
                rows.append({"model": model, "epochs": epochs, "alpha": rate, "wall_s": wall,
                             "choose": 100 * a["analogy"], "report": 100 * b["analogy"],
                             "wordsim353": a["wordsim353"]})
                log(f"{model} x{epochs} alpha {rate}: choose {rows[-1]['choose']:.2f}, report "
                    f"{rows[-1]['report']:.2f}, WS-353 {a['wordsim353']:.3f}, {wall:.0f} s")
    res = {"name": args.name, "command": command_line("rate_split.py"), "rows": rows,
           "corpus": f"enwiki extract, {path.stat().st_size / 1e6:.0f} MB of tokens, one document per line"}
    md = markdown(res)
    print(md)
    if not args.no_report:
        write_results(args.name, res, md)


if __name__ == "__main__":
    main()
