"""Word vectors end to end, as users run them: ``embedstack train`` against gensim's ``corpus_file`` mode.

Both sides read the same file: the full enwiki extract (``$EMBEDSTACK_DATA_DIR/enwiki-extract``,
33.2M tokens), tokenized once with embedstack's default ``Analyzer`` (NFKC, lowercase, ``\\w+``) and
written one document per line, tokens separated by spaces (the input gensim's ``corpus_file``
mode expects; it is gensim's fastest mode). Each run is a fresh process, timed from start to the
saved vectors (wall clock, interpreter start and imports included):

* ours: ``embedstack train {word2vec,fasttext} FILE --workers 2 -o DIR --force --quiet`` (our corpus
  pass, training, the atomic checksummed save);
* gensim 4.4: ``Word2Vec(corpus_file=FILE, workers=2, ...)`` / ``FastText(corpus_file=...)``
  (``build_vocab`` + training), then ``model.wv.save(DIR/...)``.

Same options on both sides: dim 100, window 5, negative 5, min_count 5, sample 1e-3, FastText
n-grams 3-6 in 2M buckets. The initial learning rate is each side's default: gensim's 0.025
(``--gensim-alpha`` gives gensim another), ours 0.025 for skip-gram and 0.05 for CBOW (word2vec.c's).
Records without an ``alphas`` key (written before 2026-12-07) passed 0.025 to both sides. Quality of
every run's vectors (not timed): Google analogies (3CosAdd, 30k most frequent words,
case-insensitive) and WordSim-353 Spearman, through the same evaluation code for both.

Runs of ours and gensim are interleaved, the order rotated between repeats; each cell reports the
median wall time, the min-max spread, and the load average before and after. A roofline puts the
training rate next to this machine's peaks (fp32 GEMM, memory read bandwidth, from
``benchmarks/exact_search.py``): the work is ``6·dim`` flops per (input, output) row pair
(a dot product and two row updates) and ``3·dim·4`` bytes moved per pair.

Usage::

    python benchmarks/word2vec_cli.py                                  # all models, 1 epoch x 3 and 5 epochs x 1
    python benchmarks/word2vec_cli.py --models cbow --epochs 1 --repeats 1 --no-report   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, data_dir, last_results, log, rotated, save_arm, write_results, write_section  # noqa: E402

WORKERS = 2
OPTS = {"dim": 100, "window": 5, "negative": 5, "min_count": 5, "sample": 1e-3}
GENSIM_ALPHA = 0.025  # gensim's default initial learning rate (Word2Vec and FastText)
CACHE = Path(tempfile.gettempdir()) / "embedstack_w2v_bench"

GENSIM = """
import sys, time
from gensim.models import FastText, Word2Vec
kind, path, epochs, out, alpha = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
kw = dict(corpus_file=path, vector_size={dim}, window={window}, negative={negative}, min_count={min_count},
          sample={sample}, alpha=alpha, workers={workers}, epochs=epochs)
t = time.perf_counter()
if kind == "fasttext":
    m = FastText(sg=1, min_n=3, max_n=6, bucket=2_000_000, **kw)
else:
    m = Word2Vec(sg=int(kind == "skipgram"), **kw)
train = time.perf_counter() - t
m.wv.save(out)
print(train)
""".format(workers=WORKERS, **OPTS)


def corpus_file(source: Path) -> Path:
    """The tokenized corpus both sides read (built once, then reused)."""
    from embedstack.data import iter_texts
    from embedstack.text import Analyzer

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "enwiki_tokens.txt"
    if path.is_file():
        return path
    log(f"tokenizing {source} into {path} ...")
    from embedstack.io import AtomicFile

    analyzer = Analyzer()
    with AtomicFile(path) as out, open(out.tmp, "w", encoding="utf-8") as fh:  # no half-written corpus
        for text in iter_texts(source):
            toks = analyzer.tokenize(text)
            if toks:
                fh.write(" ".join(toks))
                fh.write("\n")
    return path


def gensim_final_alpha(epochs: int, alpha: float = GENSIM_ALPHA) -> float:
    """The learning rate a gensim ``corpus_file`` worker ends training at.

    In that mode each of the W workers reads 1/W of the file but measures its progress against the
    whole corpus (``word2vec_corpusfile.pyx``: ``total_words / expected_words``), so within an epoch its
    rate decays only 1/W of the way: with 2 workers, one epoch ends at about half the initial rate
    (word2vec.c and gensim's iterable mode end at ``min_alpha``).
    """
    end = 1e-4
    return alpha - (alpha - end) * (epochs - 1 + 1 / WORKERS) / epochs


def ours_cmd(kind: str, path: Path, epochs: int, out: Path, alpha: float | None = None,
             min_alpha: float | None = None) -> list[str]:
    """Our CLI; ``alpha=None`` leaves the initial learning rate at our default for the model."""
    exe = str(Path(sys.executable).parent / "embedstack")
    cmd = [exe, "train", "fasttext" if kind == "fasttext" else "word2vec", str(path), "-o", str(out),
           "--epochs", str(epochs), "--workers", str(WORKERS), "--dim", str(OPTS["dim"]),
           "--window", str(OPTS["window"]), "--negative", str(OPTS["negative"]),
           "--min-count", str(OPTS["min_count"]), "--sample", str(OPTS["sample"]), "--force", "--quiet", "--json"]
    if kind == "cbow":
        cmd.append("--cbow")
    if alpha is not None:
        cmd += ["--alpha", f"{alpha:.6g}"]
    if min_alpha is not None:
        cmd += ["--min-alpha", f"{min_alpha:.6g}"]
    return cmd


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system, the child and its threads) of one process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def quality_of(system: str, out: Path, analogies: Any, wordsim: Any) -> dict[str, Any]:
    from static_vectors import quality

    if system.startswith("ours"):
        from embedstack.static import load_vectors

        kv = load_vectors(out)
        keys, vectors = kv.index_to_key, kv.vectors
    else:
        from gensim.models import KeyedVectors

        gkv = KeyedVectors.load(str(out / "vectors.kv"))
        keys, vectors = gkv.index_to_key, gkv.vectors
    import numpy as np

    if not np.isfinite(vectors).all():  # a diverged run is a result too: recorded, not a crash
        return {"analogy": float("nan"), "wordsim353": float("nan"), "queen_rank": None, "diverged": True}
    q = quality(list(keys), vectors, analogies, wordsim)
    return {"analogy": 100.0 * q["analogy"], "wordsim353": q["wordsim353"], "queen_rank": q["queen_rank"]}


def run_cell(kind: str, path: Path, epochs: int, repeats: int, work: Path, analogies: Any,
             wordsim: Any, matched: bool, gensim_alpha: float = GENSIM_ALPHA) -> dict[str, Any]:
    systems = ["ours", "gensim", *(["ours_matched"] if matched else [])]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    load_before = os.getloadavg()
    for r in range(repeats):
        for system in rotated(systems, r):
            out = work / f"{system}-{kind}-{epochs}"
            out.mkdir(parents=True, exist_ok=True)
            if system.startswith("ours"):
                # the matched arm runs at gensim's rate and schedule; the plain arm at our defaults
                schedule = ((gensim_alpha, gensim_final_alpha(epochs, gensim_alpha)) if system == "ours_matched"
                            else (None, None))
                wall, cpu, stdout = timed(ours_cmd(kind, path, epochs, out, *schedule))
                info = json.loads(stdout)
                extra = {"train_s": info.get("seconds"), "corpus_s": info.get("corpus_seconds"),
                         "effective_words": info.get("effective_words"), "alpha": info.get("alpha")}
            else:
                gpath = out / "vectors.kv"
                wall, cpu, stdout = timed([sys.executable, "-c", GENSIM, kind, str(path), str(epochs), str(gpath),
                                           repr(gensim_alpha)])
                extra = {"train_s": float(stdout.strip().splitlines()[-1]), "alpha": gensim_alpha}
            q = quality_of(system, out, analogies, wordsim)
            runs[system].append({"wall_s": wall, "cpu_s": cpu, **extra, **q})
            log(f"{kind} x{epochs} run {r + 1}/{repeats} {system}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
                f"analogy {q['analogy']:.2f}, WS-353 {q['wordsim353']:.3f}")
    return summarize(kind, epochs, repeats, runs, [round(x, 2) for x in load_before],
                     [round(x, 2) for x in os.getloadavg()], matched, gensim_alpha)


def summarize(kind: str, epochs: int, repeats: int, runs: dict[str, list[dict[str, Any]]], load_before: list[float],
              load_after: list[float], matched: bool, gensim_alpha: float = GENSIM_ALPHA) -> dict[str, Any]:
    cell: dict[str, Any] = {"model": kind, "epochs": epochs, "repeats": repeats, "runs": runs,
                            "load_before": load_before, "load_after": load_after}
    for system, rs in runs.items():
        walls = [x["wall_s"] for x in rs]
        cell[system] = {"wall_median": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
                        "cpu_median": statistics.median(x["cpu_s"] for x in rs),
                        "analogy": statistics.mean(x["analogy"] for x in rs),
                        "wordsim353": statistics.mean(x["wordsim353"] for x in rs)}
    cell["speedup"] = cell["gensim"]["wall_median"] / cell["ours"]["wall_median"]
    cell["analogy_gap"] = cell["ours"]["analogy"] - cell["gensim"]["analogy"]
    if matched:
        cell["matched_min_alpha"] = gensim_final_alpha(epochs, gensim_alpha)
        cell["speedup_matched"] = cell["gensim"]["wall_median"] / cell["ours_matched"]["wall_median"]
        cell["analogy_gap_matched"] = cell["ours_matched"]["analogy"] - cell["gensim"]["analogy"]
    return cell


_LOG_RUN = re.compile(r"\[(\d\d:\d\d:\d\d)\] (\w+) x(\d+) run (\d+)/(\d+) (\w+): ([\d.]+) s wall, ([\d.]+) s CPU, "
                      r"analogy ([\d.naN]+), WS-353 ([\d.naN]+)")


def cells_from_log(path: Path, gensim_alpha: float = GENSIM_ALPHA) -> list[dict[str, Any]]:
    """Rebuild the cells of a run from its log (stderr), e.g. a run that stopped before writing its results.

    Wall and CPU seconds and quality are in the log; training seconds and effective words are not,
    so those cells have no roofline rates. Cells missing a side are left out.
    """
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _LOG_RUN.search(line)
        if not m:
            continue
        kind, epochs, repeats, system = m.group(2), int(m.group(3)), int(m.group(5)), m.group(6)
        g = groups.setdefault((kind, epochs), {"repeats": repeats, "runs": {}})
        g["runs"].setdefault(system, []).append(
            {"wall_s": float(m.group(7)), "cpu_s": float(m.group(8)), "analogy": float(m.group(9)),
             "wordsim353": float(m.group(10))})
    cells = []
    for (kind, epochs), g in groups.items():
        runs = g["runs"]
        if "ours" not in runs or "gensim" not in runs:
            continue
        cell = summarize(kind, epochs, min(len(r) for r in runs.values()), runs, [float("nan")], [float("nan")],
                         "ours_matched" in runs, gensim_alpha)
        cell["from_log"] = str(path)
        cells.append(cell)
    return cells


def log_header(text: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The peaks and the learning rates a run's log printed before its runs (logs from before 2026-12-07 print no
    rates: those runs passed 0.025 to both sides)."""
    import ast

    def value(key: str) -> Any:
        return ast.literal_eval(text.split(key, 1)[1].splitlines()[0]) if key in text else None

    return value("peaks: ") or {}, value("rates: ")


def roofline_rates(cell: dict[str, Any], raw_words: int, peaks: dict[str, float]) -> dict[str, Any]:
    """Training work per second of ours against the machine's peaks (both sides run the same updates)."""
    ours = cell["runs"]["ours"]
    if not all(x.get("effective_words") and x.get("train_s") for x in ours):
        return {}
    eff = statistics.median(x["effective_words"] for x in ours if x.get("effective_words"))
    train = statistics.median(x["train_s"] for x in ours)
    dim, neg, window = OPTS["dim"], OPTS["negative"], OPTS["window"]
    ctx = window + 1  # mean context words per centre word: the reduced window averages (window + 1) / 2 a side
    pairs = eff * ctx * (neg + 1) if cell["model"] != "cbow" else eff * (neg + 1 + 2 * ctx)
    flops = pairs * 6 * dim
    gbytes = pairs * 3 * dim * 4 / 1e9
    g_train = statistics.median(x["train_s"] for x in cell["runs"]["gensim"])
    return {"gflops_ours": flops / train / 1e9, "gflops_gensim": flops / g_train / 1e9,
            "fp32_peak_gflops": peaks.get("fp32_gflops_peak", peaks.get("fp32_gflops")), "read_gbs_peak": peaks.get("read_gbs"),
            "gbs_ours": gbytes / train, "raw_words": raw_words}


def _load(cell: dict[str, Any]) -> str:
    a, b = cell["load_before"][0], cell["load_after"][0]
    return "not in the log" if a != a else f"{a:.2f} / {b:.2f}"  # NaN: a cell rebuilt from a log


def _rates(res: dict[str, Any]) -> str:
    """The initial learning rates the runs used (records without ``alphas``, and rebuilds from logs that do not
    say, passed 0.025 to both sides)."""
    alphas = res.get("alphas")
    if not alphas:
        return "alpha 0.025 (FastText: skip-gram, n-grams 3-6, 2M buckets)"
    ours: dict[str, Any] = {}
    for c in res["cells"]:
        ours.setdefault(c["model"], c["runs"]["ours"][0].get("alpha"))  # what our CLI said it used
    g = alphas["gensim"]
    used = ", ".join(f"{m} {a:g}" for m, a in ours.items() if isinstance(a, float))  # a log rebuild has none
    return ("FastText: skip-gram, n-grams 3-6, 2M buckets. Initial learning rate: "
            + ("gensim's default, 0.025" if g == GENSIM_ALPHA else f"gensim {g:g} (`--gensim-alpha`; its default is 0.025)")
            + "; ours at its default (word2vec.c's: 0.025 for skip-gram, 0.05 for CBOW)" + (f", here {used}" if used else ""))


def markdown(res: dict[str, Any]) -> str:
    alphas = res.get("alphas")
    plain = ("the defaults" if not alphas or alphas["gensim"] == GENSIM_ALPHA
             else "our defaults with gensim at that rate")
    rows = []
    for c in res["cells"]:
        o, g = c["ours"], c["gensim"]
        rl = c.get("roofline", {})
        rows.append(
            f"| {c['model']} | {c['epochs']} | {c['repeats']} | {o['wall_median']:.1f} ({o['wall_min']:.1f}-{o['wall_max']:.1f}) "
            f"| {g['wall_median']:.1f} ({g['wall_min']:.1f}-{g['wall_max']:.1f}) | **{c['speedup']:.2f}x** "
            f"| {g['cpu_median'] / o['cpu_median']:.2f}x | {o['analogy']:.1f} | {g['analogy']:.1f} | {c['analogy_gap']:+.1f} "
            f"| {o['wordsim353']:.3f} | {g['wordsim353']:.3f} "
            f"| {rl.get('gflops_ours', float('nan')):.1f} / {rl.get('gflops_gensim', float('nan')):.1f} "
            f"| {_load(c)} |")
        if "ours_matched" in c:
            m = c["ours_matched"]
            label = (f"ours at gensim's rate and schedule (`--alpha {alphas['gensim']:.4g} --min-alpha "
                     f"{c['matched_min_alpha']:.4g}`)" if alphas else
                     f"ours at gensim's schedule (`--min-alpha {c['matched_min_alpha']:.4g}`)")
            rows.append(
                f"| {c['model']}, {label} | {c['epochs']} "
                f"| {c['repeats']} | {m['wall_median']:.1f} ({m['wall_min']:.1f}-{m['wall_max']:.1f}) "
                f"| {g['wall_median']:.1f} | **{c['speedup_matched']:.2f}x** | {g['cpu_median'] / m['cpu_median']:.2f}x "
                f"| {m['analogy']:.1f} | {g['analogy']:.1f} | {c['analogy_gap_matched']:+.1f} | {m['wordsim353']:.3f} "
                f"| {g['wordsim353']:.3f} | | |")
    peaks = res.get("peaks", {})
    return "\n".join([
        "## Word vectors end to end: `embedstack train` vs gensim `corpus_file` (`benchmarks/word2vec_cli.py`)"
        + ("" if res.get("name", "word2vec_cli") == "word2vec_cli" else f", part run `{res['name']}`"),
        "",
        f"`{res.get('command', 'python benchmarks/word2vec_cli.py')}` — {res['corpus']}. Each run is a fresh process timed from start to "
        "saved vectors: ours is the CLI (`embedstack train word2vec|fasttext FILE --workers 2`: corpus pass, "
        "training, atomic save), gensim 4.4 is `Word2Vec/FastText(corpus_file=FILE, workers=2)` then "
        "`wv.save` (its fastest mode). Same options: dim 100, window 5, negative 5, min_count 5, sample 1e-3, "
        f"{_rates(res)}. Runs interleaved, "
        + ("order rotated" if res.get("order") == "rotated" else  # records from before 2026-12-06 15:20 UTC
           "in the order the script used until 2026-12-06 (gensim ran before ours in every run, except in 2 of "
           "the 5 runs of a 5-run cell with the matched arm)")
        + "; medians with min-max. Quality (not timed) through the same evaluation code: Google analogies "
        "(3CosAdd, 30k most frequent words), WordSim-353 Spearman; means over the runs.",
        "",
        "| model | epochs | runs | ours s | gensim s | speed (gensim / ours, wall) | CPU-time ratio | analogy ours "
        "| analogy gensim | gap | WS-353 ours | WS-353 gensim | training GFLOP/s ours / gensim | load 1-min before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        # the peak is the faster BLAS (MKL through torch, OpenBLAS through numpy); sections rendered before
        # 2026-12-06 09:00 UTC quote torch's rate, and their records' cells hold it as fp32_peak_gflops
        f"Roofline: this machine's fp32 GEMM peak is {peaks.get('fp32_gflops_peak', peaks.get('fp32_gflops', float('nan'))):.0f} GFLOP/s and its memory "
        f"read bandwidth {peaks.get('read_gbs', float('nan')):.1f} GB/s (2 threads, measured in the same run). "
        "Work counted as 6·dim flops per (input row, output row) update — a dot product and two row updates — "
        "over the effective (subsampled) words; both sides do the same updates, so the GFLOP/s columns "
        "compare rates on one scale"
        + (" (n/a for cells rebuilt from a run's log, which holds no training seconds or effective words)"
           if any(not c.get("roofline") for c in res["cells"]) else "")
        + ". Training is far below the GEMM peak: each update is a 100-float dot product on rows picked at "
        "random from 42 MB matrices, so it is bound by cache misses (latency), not by arithmetic or streaming "
        "bandwidth.",
        "",
        "gensim's `corpus_file` mode has its own learning-rate schedule: each of the 2 workers reads half the "
        "file but measures progress against the whole corpus (`word2vec_corpusfile.pyx`), so an epoch ends at "
        "about half the initial rate instead of `min_alpha`, which after one epoch is worth several analogy "
        "points."
        + ((" The rows 'ours at gensim's rate and schedule' run our CLI with gensim's initial rate (`--alpha`) and "
            "`--min-alpha` set to the rate a gensim worker ends at, which compares the trainers at the same "
            f"schedule; the plain rows compare {plain}." if alphas else
            " The rows 'ours at gensim's schedule' run our CLI with `--min-alpha` set to the rate a gensim worker "
            "ends at, which compares the trainers at the same schedule; the plain rows compare the defaults.")
           if any("ours_matched" in c for c in res["cells"]) else
           f" No row here runs ours at gensim's schedule (`--matched-epochs`); the rows compare {plain}."),
        "",
        "Skip-gram draws its negatives once per centre word and shares them across that word's context "
        "words, scoring the block as one small matrix product (`Word2Vec(shared_negatives=True)`, the "
        "default; Ji et al. 2016); gensim and word2vec.c draw them per (centre, context) pair. "
        "`shared_negatives=False` (`--no-shared-negatives`) gives the per-pair updates. FastText keeps per-pair "
        "draws by default (its shared option cost analogy points). Both sample negatives from an alias table "
        "(0.8 MB, L2-resident) instead of word2vec.c's 64 MB slot table.",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="skipgram,cbow,fasttext")
    ap.add_argument("--epochs", default="1,5", help="comma-separated epoch counts")
    ap.add_argument("--repeats", type=int, default=3, help="runs per side for 1 epoch")
    ap.add_argument("--repeats-long", type=int, default=1, help="runs per side for more than 1 epoch")
    ap.add_argument("--matched-epochs", default="1",
                    help="epoch counts that also run ours at gensim corpus_file's learning-rate schedule")
    ap.add_argument("--gensim-alpha", type=float, default=GENSIM_ALPHA,
                    help="gensim's initial learning rate (default: its own default), also the matched arm's")
    ap.add_argument("--name", default="word2vec_cli",
                    help="results file and BENCHMARKS.md section (another name keeps a partial run apart)")
    ap.add_argument("--from-log", type=Path, default=None,
                    help="rebuild the section from a run's log instead of measuring (see cells_from_log)")
    ap.add_argument("--render-last", action="store_true",
                    help="re-render the NAME section from results/NAME.jsonl's last record (no measuring)")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    if args.render_last:
        res = last_results(args.name)
        write_section(args.name, markdown(res), res["machine"])
        return

    from embedstack.data import load_analogies, load_word_similarity

    root = data_dir()
    path = corpus_file(root / "enwiki-extract")
    with open(path, encoding="utf-8") as fh:
        raw_words = sum(line.count(" ") + 1 for line in fh)
    if args.from_log is not None:
        peaks, alphas = log_header(args.from_log.read_text(encoding="utf-8"))
        cells = cells_from_log(args.from_log, alphas["gensim"] if alphas else GENSIM_ALPHA)
        for cell in cells:
            cell["roofline"] = {}
        # a log does not say in which order its runs went; logs without a rates line ran 0.025 on both sides
        write_report(args, path, raw_words, peaks, cells, None, alphas)
        return
    analogies, wordsim = load_analogies(), load_word_similarity()
    from exact_search import roofline

    peaks = roofline(3)
    log(f"peaks: {peaks}")
    alphas = {"gensim": args.gensim_alpha, "ours": "default"}
    log(f"rates: {alphas}")  # read back by --from-log
    cells = []
    with tempfile.TemporaryDirectory(prefix="w2v-bench-", dir=CACHE) as tmp:
        for epochs in [int(e) for e in args.epochs.split(",")]:
            for kind in args.models.split(","):
                reps = args.repeats if epochs == 1 else args.repeats_long
                matched = str(epochs) in args.matched_epochs.split(",")
                cell = run_cell(kind, path, epochs, reps, Path(tmp), analogies, wordsim, matched, args.gensim_alpha)
                cell["roofline"] = roofline_rates(cell, raw_words, peaks)
                cells.append(cell)
                save_arm(args.name, f"{kind}-x{epochs}", cell)  # kept if a later cell fails
                log(f"{kind} x{epochs}: ours {cell['ours']['wall_median']:.1f} s, gensim "
                    f"{cell['gensim']['wall_median']:.1f} s -> {cell['speedup']:.2f}x; analogy gap "
                    f"{cell['analogy_gap']:+.2f}")
    write_report(args, path, raw_words, peaks, cells, "rotated", alphas)


def write_report(args: argparse.Namespace, path: Path, raw_words: int, peaks: dict[str, Any],
                 cells: list[dict[str, Any]], order: str | None, alphas: dict[str, Any] | None) -> None:
    res = {"name": args.name, "command": command_line("word2vec_cli.py"),
           "corpus": f"enwiki extract, {raw_words:,} tokens in {path.stat().st_size / 1e6:.0f} MB, one document per line",
           "workers": WORKERS, "options": OPTS, **({"alphas": alphas} if alphas else {}), "peaks": peaks, "cells": cells,
           **({"order": order} if order else {})}
    md = markdown(res)
    print(md)
    if not args.no_report:
        write_results(args.name, res, md)


if __name__ == "__main__":
    main()
