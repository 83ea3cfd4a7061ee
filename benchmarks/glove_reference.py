"""GloVe against the reference implementation (Stanford's C GloVe) on the same token file.

Why: our GloVe trails our skip-gram on WordSim-353 at 33M words (``glove_quality``). This benchmark
asks whether that is our implementation or GloVe itself at this corpus size: the reference C code
(https://github.com/stanfordnlp/GloVe, built with its own ``make``; pass the ``build`` folder as
``--reference``) and ``embedstack train glove`` read the same file and train with the same
settings, and both vectors go through the same evaluation. Each run is a fresh process (the
reference is its four programs: vocab_count, cooccur, shuffle, glove), timed from start to saved
vectors on the same threads.

The file is the enwiki extract tokenized once with our default ``Analyzer`` (the one
``benchmarks/word2vec_cli.py`` builds and caches; both sides then split it on whitespace, so both
see the same tokens and, with min_count 5, the same vocabulary). Both output W + W~ (the
reference's ``-model 2``, our default). Settings: ``paper`` = window 10, x_max 100, alpha 0.75,
eta 0.05, 25 iterations (Pennington et al. 2014); ``demo`` = the reference's demo.sh (window 15,
x_max 10, 15 iterations). Dimension 100, min_count 5.

Quality: Google analogies (3CosAdd over the 30k most frequent words) and WS-353 Spearman, as in
``static_vectors.py``; beside them our skip-gram and gensim's on the same file (1 and 5 epochs) from
``benchmarks/results/word2vec_cli.jsonl``.

Usage::

    python benchmarks/glove_reference.py --reference /path/to/GloVe/build
    python benchmarks/glove_reference.py --reference build --settings demo --repeats 1 --no-report
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import RESULTS, command_line, data_dir, log, write_results  # noqa: E402
from word2vec_cli import CACHE, corpus_file, timed  # noqa: E402

SETTINGS = {
    "paper": {"window": 10, "x_max": 100.0, "epochs": 25},
    "demo": {"window": 15, "x_max": 10.0, "epochs": 15},
}
COMMON = {"dim": 100, "alpha": 0.75, "eta": 0.05, "min_count": 5}


def ours_cmd(path: Path, s: dict[str, Any], out: Path, workers: int) -> list[str]:
    exe = str(Path(sys.executable).parent / "embedstack")
    return [exe, "train", "glove", str(path), "-o", str(out), "--dim", str(COMMON["dim"]),
            "--window", str(s["window"]), "--x-max", str(s["x_max"]), "--epochs", str(s["epochs"]),
            "--learning-rate", str(COMMON["eta"]), "--min-count", str(COMMON["min_count"]),
            "--workers", str(workers), "--force", "--quiet", "--json"]


def run_reference(build: Path, path: Path, s: dict[str, Any], out: Path, workers: int,
                  memory: float) -> dict[str, Any]:
    """The reference pipeline as demo.sh runs it; returns wall/CPU seconds per program and in total."""
    out.mkdir(parents=True, exist_ok=True)
    vocab, cooc, shuf = out / "vocab.txt", out / "cooc.bin", out / "cooc.shuf.bin"
    steps = [
        ("vocab_count", [str(build / "vocab_count"), "-min-count", str(COMMON["min_count"]), "-verbose", "0"],
         path, vocab),
        ("cooccur", [str(build / "cooccur"), "-memory", str(memory), "-vocab-file", str(vocab), "-verbose", "0",
                     "-window-size", str(s["window"])], path, cooc),
        ("shuffle", [str(build / "shuffle"), "-memory", str(memory), "-verbose", "0",
                     "-temp-file", str(out / "temp_shuffle")], cooc, shuf),
        ("glove", [str(build / "glove"), "-save-file", str(out / "vectors"), "-threads", str(workers),
                   "-input-file", str(shuf), "-x-max", str(s["x_max"]), "-iter", str(s["epochs"]),
                   "-vector-size", str(COMMON["dim"]), "-binary", "0", "-vocab-file", str(vocab), "-verbose", "0",
                   "-alpha", str(COMMON["alpha"]), "-eta", str(COMMON["eta"]), "-model", "2"], None, None),
    ]
    res: dict[str, Any] = {"wall_s": 0.0, "cpu_s": 0.0, "steps": {}}
    for name, cmd, stdin, stdout in steps:
        if stdin is None:
            wall, cpu, _ = timed(cmd)
        else:
            # the programs read stdin and write stdout: run them through a shell redirect, timed the same way
            wall, cpu, _ = timed(["/bin/sh", "-c", f'exec "$0" "$@" < "{stdin}" > "{stdout}"', *cmd])
        res["steps"][name] = {"wall_s": wall, "cpu_s": cpu}
        res["wall_s"] += wall
        res["cpu_s"] += cpu
    for f in (cooc, shuf):
        f.unlink(missing_ok=True)  # GBs: only the vectors are kept
    return res


def reference_vectors(out: Path) -> tuple[list[str], np.ndarray]:
    """Read the reference's text output (``-binary 0``): word then its numbers; its ``<unk>`` row dropped."""
    keys, rows = [], []
    with open(out / "vectors.txt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.rstrip("\n").split(" ")
            if parts[0] == "<unk>":
                continue
            keys.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    return keys, np.vstack(rows)


def quality_of(system: str, out: Path, analogies: Any, wordsim: Any) -> dict[str, Any]:
    from static_vectors import quality

    if system == "ours":
        from embedstack.static import load_vectors

        kv = load_vectors(out)
        keys, vectors = list(kv.index_to_key), np.asarray(kv.vectors)
    else:
        keys, vectors = reference_vectors(out)
    q = quality(keys, vectors, analogies, wordsim)
    return {"analogy": 100.0 * q["analogy"], "wordsim353": q["wordsim353"], "queen_rank": q["queen_rank"],
            "vocab": len(keys)}


def skipgram_rows() -> list[dict[str, Any]]:
    """Skip-gram (ours and gensim) on the same file, from the latest word2vec_cli records."""
    f = RESULTS / "word2vec_cli.jsonl"
    if not f.is_file():
        return []
    cells: dict[int, dict[str, Any]] = {}
    for line in f.read_text(encoding="utf-8").splitlines():
        for c in json.loads(line).get("cells", []):
            if c["model"] == "skipgram":
                cells[c["epochs"]] = c
    return [{"epochs": e, "ours": cells[e]["ours"], "gensim": cells[e]["gensim"]} for e in sorted(cells)]


def markdown(res: dict[str, Any]) -> str:
    lines = ["## GloVe: ours against the reference C implementation (`benchmarks/glove_reference.py`)", "",
             f"Reproduce: `python benchmarks/glove_reference.py --reference GloVe/build` (the reference built from "
             f"https://github.com/stanfordnlp/GloVe at {res['reference_commit']} with its own `make`). Same token file "
             f"as `word2vec_cli` ({res['file_mb']:.0f} MB, one document per line), dim {COMMON['dim']}, min_count "
             f"{COMMON['min_count']}, alpha {COMMON['alpha']}, eta {COMMON['eta']}, W + W~ on both sides, "
             f"{res['workers']} threads. Wall seconds from start to saved vectors (the reference: its four programs, "
             f"`-memory {res['memory']}`); {res['repeats']} run(s) per side, interleaved; load average before/after "
             f"{res['load_before'][0]:.2f} / {res['load_after'][0]:.2f}.", "",
             "| setting | window | x_max | iterations | system | wall s (median, min–max) | speed ours/ref | vocab | "
             "analogy % | WS-353 |", "|---|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for c in res["cells"]:
        for system in ("ours", "reference"):
            a = c[system]
            speed = f"**{c['speedup']:.2f}×**" if system == "ours" else ""
            lines.append(f"| {c['setting']} | {c['window']} | {c['x_max']:g} | {c['epochs']} | {system} | "
                         f"{a['wall_median']:.1f} ({a['wall_min']:.1f}–{a['wall_max']:.1f}) | {speed} | {a['vocab']:,} | "
                         f"{a['analogy']:.1f} | {a['wordsim353']:.3f} |")
    sg = res.get("skipgram", [])
    if sg:
        lines += ["", "Skip-gram on the same file (window 5, negative 5; `word2vec_cli`, mean of its runs):", "",
                  "| epochs | system | analogy % | WS-353 |", "|---:|---|---:|---:|"]
        for r in sg:
            for system in ("ours", "gensim"):
                lines.append(f"| {r['epochs']} | {system} skip-gram | {r[system]['analogy']:.1f} | "
                             f"{r[system]['wordsim353']:.3f} |")
    steps = res["cells"][0]["reference"].get("steps_median", {}) if res["cells"] else {}
    if steps:
        lines += ["", "Reference time by program (first setting, median s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()) + "."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, help="the reference's build folder (vocab_count, cooccur, ...)")
    ap.add_argument("--settings", default="paper,demo")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory", type=float, default=4.0, help="the reference's -memory (GB)")
    ap.add_argument("--reference-commit", default=None, help="the reference's commit (default: git in its folder)")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()

    from embedstack.data import load_analogies, load_word_similarity

    build = Path(args.reference).resolve()
    for prog in ("vocab_count", "cooccur", "shuffle", "glove"):
        if not (build / prog).is_file():
            raise SystemExit(f"{build / prog} not found: pass the reference's build folder with --reference")
    root = data_dir()
    path = corpus_file(root / "enwiki-extract")
    analogies, wordsim = load_analogies(), load_word_similarity()
    commit = args.reference_commit or subprocess.run(["git", "-C", str(build.parent), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "(commit unknown)"
    work = CACHE / "glove_reference"
    load_before = [round(x, 2) for x in os.getloadavg()]
    cells = []
    for name in args.settings.split(","):
        s = SETTINGS[name]
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "reference": []}
        for r in range(args.repeats):
            order = ["ours", "reference"] if (r + len(cells)) % 2 == 0 else ["reference", "ours"]
            for system in order:
                out = work / f"{system}-{name}"
                if system == "ours":
                    wall, cpu, stdout = timed(ours_cmd(path, s, out, args.workers))
                    info = json.loads(stdout)
                    run = {"wall_s": wall, "cpu_s": cpu, "train_s": info.get("seconds")}
                else:
                    run = run_reference(build, path, s, out, args.workers, args.memory)
                q = quality_of(system, out, analogies, wordsim)
                runs[system].append({**run, **q})
                log(f"glove {name} run {r + 1}/{args.repeats} {system}: {run['wall_s']:.1f} s wall, "
                    f"{run['cpu_s']:.1f} s CPU, vocab {q['vocab']:,}, analogy {q['analogy']:.2f}, "
                    f"WS-353 {q['wordsim353']:.3f}")
        cell: dict[str, Any] = {"setting": name, **s, "runs": runs}
        for system, rs in runs.items():
            walls = [x["wall_s"] for x in rs]
            cell[system] = {"wall_median": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
                            "analogy": statistics.mean(x["analogy"] for x in rs),
                            "wordsim353": statistics.mean(x["wordsim353"] for x in rs), "vocab": rs[0]["vocab"]}
        if runs["reference"] and "steps" in runs["reference"][0]:
            cell["reference"]["steps_median"] = {
                k: statistics.median(x["steps"][k]["wall_s"] for x in runs["reference"])
                for k in runs["reference"][0]["steps"]}
        cell["speedup"] = cell["reference"]["wall_median"] / cell["ours"]["wall_median"]
        cells.append(cell)
        log(f"glove {name}: ours {cell['ours']['wall_median']:.1f} s, reference {cell['reference']['wall_median']:.1f} s "
            f"-> {cell['speedup']:.2f}x; WS-353 {cell['ours']['wordsim353']:.3f} vs {cell['reference']['wordsim353']:.3f}")
    res = {"name": "glove_reference", "command": command_line("glove_reference.py"),
           "reference_commit": commit, "file_mb": path.stat().st_size / 1e6, "workers": args.workers,
           "memory": args.memory, "repeats": args.repeats, "options": COMMON, "cells": cells,
           "skipgram": skipgram_rows(), "load_before": load_before,
           "load_after": [round(x, 2) for x in os.getloadavg()]}
    md = markdown(res)
    print(md)
    if not args.no_report:
        write_results("glove_reference", res, md)


if __name__ == "__main__":
    main()
