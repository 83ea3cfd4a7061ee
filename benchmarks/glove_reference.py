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

Speed: wall seconds from start to saved vectors, each side a fresh process; ``--repeats`` runs per
side, interleaved with the order alternating, and each run paired with the other side's run of the
same round. ``--iterations`` overrides the settings' iteration counts, so that several full runs fit
in an hour (the reference at 25 iterations takes 30-40 minutes on 2 threads). A roofline puts the
training step (the reference's ``glove`` program from start to exit; our training loop, ``seconds``) next to this machine's fp32 GEMM
and memory-read peaks, measured in the same run: each co-occurrence record is one update of two
random vector rows and their AdaGrad sums.

Usage::

    python benchmarks/glove_reference.py --reference /path/to/GloVe/build
    python benchmarks/glove_reference.py --reference build --settings paper --iterations 5 --repeats 5 \
        --name glove_reference_zen4
    python benchmarks/glove_reference.py --reference build --settings demo --repeats 1 --no-report
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    RESULTS,
    command_line,
    data_dir,
    l3_bytes,
    load_average,
    log,
    render_last,
    result_name,
    write_results,
)
from word2vec_cli import CACHE, corpus_file, timed  # noqa: E402

SETTINGS = {
    "paper": {"window": 10, "x_max": 100.0, "epochs": 25},
    "demo": {"window": 15, "x_max": 10.0, "epochs": 15},
}
COMMON = {"dim": 100, "alpha": 0.75, "eta": 0.05, "min_count": 5}
REC_BYTES = 16  # the reference's co-occurrence record on disk: two int32 word ids and a double (common.h, CREC)


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
        if name == "glove":  # the records glove trains on, one update each per iteration
            res["records"] = shuf.stat().st_size // REC_BYTES
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


def updates_per_iteration(system: str, run: dict[str, Any]) -> int | None:
    """Row-pair updates per iteration: the reference's records (its full symmetric matrix); ours trains each
    upper-triangle entry in both directions (a word paired with itself once, a few in 10^5: counted twice here)."""
    if system == "reference":
        return run.get("records")
    return 2 * run["nonzeros"] if run.get("nonzeros") else None


def roofline_rates(cell: dict[str, Any], peaks: dict[str, float]) -> dict[str, Any]:
    """The training step's rate per side against the machine's peaks. One update reads and writes four rows of
    ``dim`` numbers (w_i, w~_j and their AdaGrad sums; float32 ours, float64 the reference's) and does about
    14 x dim floating-point operations (a dot product; per row a gradient, a square root, a division, the sum
    and the step)."""
    d = COMMON["dim"]
    if not peaks.get("fp32_gflops") or not peaks.get("read_gbs"):
        return {}  # no peaks measured (torch missing): no roofline
    out: dict[str, Any] = {"fp32_peak_gflops": peaks.get("fp32_gflops_peak", peaks.get("fp32_gflops")),
                           "read_gbs_peak": peaks.get("read_gbs")}
    for system, width in (("ours", 4), ("reference", 8)):
        rs = cell["runs"][system]
        ups = [updates_per_iteration(system, x) for x in rs]
        secs = [x.get("train_s") if system == "ours" else x.get("steps", {}).get("glove", {}).get("wall_s") for x in rs]
        if not all(ups) or not all(secs):
            return {}
        rate = statistics.median(u * cell["epochs"] / t for u, t in zip(ups, secs, strict=True))  # type: ignore[operator]
        out[system] = {"updates_per_iter": int(statistics.median(ups)),  # type: ignore[arg-type]
                       "train_s": statistics.median(secs), "mups": rate / 1e6, "gflops": rate * 14 * d / 1e9,
                       "gbs": rate * 8 * d * width / 1e9,
                       "state_mb": 4 * cell["ours"]["vocab"] * d * width / 1e6}
    return out


def roofline_text(cell: dict[str, Any], l3: int | None) -> str:
    rl = cell.get("roofline")
    if not rl:
        return ""
    fp32, read = rl["fp32_peak_gflops"], rl["read_gbs_peak"]
    parts = []
    for system in ("ours", "reference"):
        r = rl[system]
        parts.append(f"{system} {r['updates_per_iter'] / 1e6:,.1f} M updates per iteration in {r['train_s']:.1f} s "
                     f"({r['mups']:.1f} M updates/s: {r['gflops']:.1f} GFLOP/s, {100 * r['gflops'] / fp32:.0f}% of "
                     f"the fp32 GEMM peak; {r['gbs']:.1f} GB/s of rows read and written, {100 * r['gbs'] / read:.0f}% "
                     f"of the read bandwidth; rows and sums {r['state_mb']:,.0f} MB)")
    cache = f" against this CPU's {l3 / 2**20:.0f} MiB L3 cache" if l3 else ""
    return (f"Roofline ({cell['setting']}, {cell['epochs']} iterations; training step only: the reference's `glove` "
            f"program from start to exit, our training loop; peaks measured in the same run, 2 threads: fp32 GEMM {fp32:.0f} GFLOP/s, memory "
            f"read {read:.1f} GB/s): " + "; ".join(parts) + f". Each update reads and writes four random rows of "
            f"{COMMON['dim']} numbers (float32 ours, float64 the reference's){cache}, so neither peak bounds it: "
            "frequent words' rows stay cached, rare words' rows are a wait on memory. The reference's step also "
            "reads its shuffled records from the file once per iteration.")


def markdown(res: dict[str, Any]) -> str:
    iters = res.get("iterations")
    default = ", ".join(f"{c['setting']}'s {SETTINGS[c['setting']]['epochs']}" for c in res["cells"])
    override = f", {iters} iteration(s) (instead of {default})" if iters else ""
    lines = ["## GloVe: ours against the reference C implementation (`benchmarks/glove_reference.py`)", "",
             f"Reproduce: `{res['command'] if 'iterations' in res else 'python benchmarks/glove_reference.py --reference GloVe/build'}` "
             f"(the reference built from https://github.com/stanfordnlp/GloVe at {res['reference_commit']} with its own "
             f"`make`, `-O3 -march=native -funroll-loops`). Same token file "
             f"as `word2vec_cli` ({res['file_mb']:.0f} MB, one document per line), dim {COMMON['dim']}, min_count "
             f"{COMMON['min_count']}, alpha {COMMON['alpha']}, eta {COMMON['eta']}, W + W~ on both sides, "
             f"{res['workers']} threads{override}. "
             f"Wall seconds from start to saved vectors (the reference: its four programs, "
             f"`-memory {res['memory']}`); {res['repeats']} run(s) per side, interleaved (order alternating); "
             f"load average before/after {res['load_before'][0]:.2f} / {res['load_after'][0]:.2f}. Quality: mean of "
             "the runs (min–max where more than one).", "",
             "| setting | window | x_max | iterations | system | wall s (median, min–max) | speed ours/ref | vocab | "
             "analogy % | WS-353 |", "|---|---:|---:|---:|---|---|---:|---:|---:|---:|"]

    def quality(rs: list[dict[str, Any]], key: str, fmt: str) -> str:
        xs = [x[key] for x in rs]
        mean = f"{statistics.mean(xs):{fmt}}"
        return mean if len(xs) < 2 else f"{mean} ({min(xs):{fmt}}–{max(xs):{fmt}})"

    for c in res["cells"]:
        for system in ("ours", "reference"):
            a = c[system]
            speed = f"**{c['speedup']:.2f}×**" if system == "ours" else ""
            lines.append(f"| {c['setting']} | {c['window']} | {c['x_max']:g} | {c['epochs']} | {system} | "
                         f"{a['wall_median']:.1f} ({a['wall_min']:.1f}–{a['wall_max']:.1f}) | {speed} | {a['vocab']:,} | "
                         f"{quality(c['runs'][system], 'analogy', '.1f')} | "
                         f"{quality(c['runs'][system], 'wordsim353', '.3f')} |")
    for c in res["cells"]:
        paired = c.get("paired")
        if paired and len(paired) > 1:
            lines += ["", f"{c['setting']}: speed ours/ref paired per round: "
                      + ", ".join(f"{x:.2f}" for x in paired) + f" (median {statistics.median(paired):.2f})."]
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
        ours = res["cells"][0]["ours"]
        ours_steps = ""
        if ours.get("count_median") is not None:
            prep = sum(v for k, v in steps.items() if k != "glove")
            if ours.get("corpus_median") is not None:
                ours_steps = (f" Ours (median s): reading and tokenizing the file {ours['corpus_median']:.1f}, counting "
                              f"co-occurrences {ours['count_median']:.1f}, training {ours['train_median']:.1f}. Reading "
                              f"and counting against the reference's first three programs (which also shuffle the records "
                              f"on disk): {prep / (ours['corpus_median'] + ours['count_median']):.2f}×.")
            else:
                ours_steps = (f" Ours (median s): counting co-occurrences {ours['count_median']:.1f} (reading the file "
                              f"and shuffling not included), training {ours['train_median']:.1f}.")
            ours_steps += (f" Training: the reference's `glove` program from start to exit (loading, training, writing "
                           f"its text vectors) against our training loop: {steps['glove'] / ours['train_median']:.2f}× "
                           "(ours/ref speed, from the medians).")
        lines += ["", "Reference time by program (first setting, median s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()) + "." + ours_steps]
    for c in res["cells"]:
        text = roofline_text(c, res.get("l3_bytes"))  # records before 2026-12-07 hold no L3 size: none is guessed
        if text:
            lines += ["", text]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", help="the reference's build folder (vocab_count, cooccur, ...)")
    ap.add_argument("--settings", default="paper,demo")
    ap.add_argument("--iterations", type=int, default=None,
                    help="iterations for every setting (default: the setting's, 25 paper / 15 demo)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory", type=float, default=4.0, help="the reference's -memory (GB)")
    ap.add_argument("--reference-commit", default=None, help="the reference's commit (default: git in its folder)")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--name", type=result_name, default="glove_reference",
                    help="results file and BENCHMARKS.md section (default glove_reference)")
    ap.add_argument("--render-last", action="store_true", help="re-render the section from the last record")
    args = ap.parse_args()
    if args.render_last:
        render_last(args.name, markdown)
        return
    if not args.reference:
        raise SystemExit("--reference is required: the reference's build folder (vocab_count, cooccur, ...)")
    if args.iterations is not None and args.iterations < 1:
        raise SystemExit("--iterations must be at least 1")
    unknown = [n for n in args.settings.split(",") if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {unknown}; choose from {sorted(SETTINGS)}")

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
    load_before = load_average()  # before the peaks, which load both cores
    try:  # the peaks need torch; exact_search also sets OMP/BLAS/numba threads to 2 for the children
        from exact_search import roofline

        peaks = roofline(3)
    except ImportError as e:
        log(f"no roofline ({e})")
        peaks = {}
    log(f"peaks: {peaks}")
    cells = []
    for name in args.settings.split(","):
        s = dict(SETTINGS[name])
        if args.iterations is not None:
            s["epochs"] = args.iterations
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "reference": []}
        for r in range(args.repeats):
            order = ["ours", "reference"] if (r + len(cells)) % 2 == 0 else ["reference", "ours"]
            for system in order:
                out = work / f"{system}-{name}"
                if system == "ours":
                    wall, cpu, stdout = timed(ours_cmd(path, s, out, args.workers))
                    info = json.loads(stdout)
                    run = {"wall_s": wall, "cpu_s": cpu, "train_s": info.get("seconds"),
                           "count_s": info.get("count_seconds"), "nonzeros": info.get("nonzeros"),
                           "corpus_s": info.get("corpus_seconds")}
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
        if all(x.get("count_s") is not None for x in runs["ours"]):
            cell["ours"]["count_median"] = statistics.median(x["count_s"] for x in runs["ours"])
            cell["ours"]["train_median"] = statistics.median(x["train_s"] for x in runs["ours"])
            if all(x.get("corpus_s") is not None for x in runs["ours"]):
                cell["ours"]["corpus_median"] = statistics.median(x["corpus_s"] for x in runs["ours"])
        if runs["reference"] and "steps" in runs["reference"][0]:
            cell["reference"]["steps_median"] = {
                k: statistics.median(x["steps"][k]["wall_s"] for x in runs["reference"])
                for k in runs["reference"][0]["steps"]}
        cell["speedup"] = cell["reference"]["wall_median"] / cell["ours"]["wall_median"]
        cell["paired"] = [b["wall_s"] / a["wall_s"] for a, b in zip(runs["ours"], runs["reference"], strict=True)]
        cell["roofline"] = roofline_rates(cell, peaks)
        cells.append(cell)
        log(f"glove {name}: ours {cell['ours']['wall_median']:.1f} s, reference {cell['reference']['wall_median']:.1f} s "
            f"-> {cell['speedup']:.2f}x; WS-353 {cell['ours']['wordsim353']:.3f} vs {cell['reference']['wordsim353']:.3f}")
    res = {"name": args.name, "command": command_line("glove_reference.py"), "iterations": args.iterations,
           "peaks": peaks, "l3_bytes": l3_bytes(),
           "reference_commit": commit, "file_mb": path.stat().st_size / 1e6, "workers": args.workers,
           "memory": args.memory, "repeats": args.repeats, "options": COMMON, "cells": cells,
           "skipgram": skipgram_rows(), "load_before": load_before,
           "load_after": load_average()}
    md = markdown(res)
    print(md)
    if not args.no_report:
        write_results(args.name, res, md)


if __name__ == "__main__":
    main()
