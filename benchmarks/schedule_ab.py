"""Does gensim's learning-rate schedule cost our trainer time? An A/B of our CLI with and without ``--min-alpha``.

``word2vec_cli.py`` compares ours with gensim at our default schedule (``alpha`` decays to 1e-4) and at gensim's
(``corpus_file`` mode ends at 0.01255 after one epoch: the ``matched`` arm). In its 5-run 1-epoch FastText cell
on the AVX2-only EPYC (``word2vec_cli_zen3_ft``) the matched arm was slower than the default one in all 5 pairs
(+4% to +46%, median +17%), with a gensim run before every run of ours. The update count does not depend on the
schedule, so this runs only the two arms of ours, fresh processes, no gensim run between them, the order
alternating per pair (default first, then matched first, ...). Wall, user and system seconds come from
``/usr/bin/time``; training seconds from the CLI's ``--json``.

Usage::

    python benchmarks/schedule_ab.py --corpus /tmp/embedstack_w2v_bench/enwiki_tokens.txt --pairs 4
    python benchmarks/schedule_ab.py --record /tmp --pairs 4   # record runs already made with this layout
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import load_average, write_results  # noqa: E402

ARMS = ("default", "matched")
GENSIM_MIN_ALPHA = 0.01255  # gensim's corpus_file schedule after one epoch (word2vec_cli.py)


def order(pair: int) -> tuple[str, ...]:
    """Pair 1 runs default first, pair 2 matched first, and so on."""
    return ARMS if pair % 2 == 1 else ARMS[::-1]


def run_pair(pair: int, corpus: str, model: str, out: Path) -> None:
    exe = Path(sys.executable).with_name("embedstack")
    base = [str(exe), "train", model, corpus, "--epochs", "1", "--workers", "2", "--dim", "100", "--window", "5",
            "--negative", "5", "--min-count", "5", "--sample", "0.001", "--alpha", "0.025", "--force", "--quiet",
            "--json"]
    for arm in order(pair):
        extra = ["--min-alpha", str(GENSIM_MIN_ALPHA)] if arm == "matched" else []
        stem = out / f"ab_alpha_{arm}.{pair}"
        cmd = ["/usr/bin/time", "-f", "%e %U %S", "-o", f"{stem}.time", *base, *extra, "-o", str(out / f"ab_alpha_{arm}")]
        with open(f"{stem}.json", "w") as fh, open(f"{stem}.err", "w") as err:
            subprocess.run(cmd, stdout=fh, stderr=err, check=True)
        print(f"pair {pair} {arm}: {Path(f'{stem}.time').read_text().split()}", file=sys.stderr, flush=True)


def collect(out: Path, pairs: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {a: [] for a in ARMS}
    for pair in range(1, pairs + 1):
        for arm in ARMS:
            stem = out / f"ab_alpha_{arm}.{pair}"
            wall, user, sys_s = (float(x) for x in Path(f"{stem}.time").read_text().split()[-3:])
            cli = json.loads(Path(f"{stem}.json").read_text())
            runs[arm].append({"wall_s": wall, "user_s": user, "sys_s": sys_s, "train_s": float(cli["seconds"]),
                              "first": order(pair)[0] == arm})
    ratios = {k: [m[k] / d[k] for d, m in zip(runs["default"], runs["matched"], strict=True)] for k in ("wall_s", "user_s", "train_s")}
    return {"pairs": pairs, "runs": runs, "matched_over_default": ratios,
            "median_ratio": {k: statistics.median(v) for k, v in ratios.items()}}


def markdown(res: dict[str, Any]) -> str:
    lines = ["## Our FastText at gensim's schedule against our default one (`benchmarks/schedule_ab.py`)", "",
             f"Reproduce: `python benchmarks/schedule_ab.py --corpus enwiki_tokens.txt --pairs {res['pairs']}` — "
             f"`embedstack train {res['model']}`, 1 epoch, 2 workers, dim 100, on the token file `word2vec_cli.py` "
             "writes (/tmp/embedstack_w2v_bench/enwiki_tokens.txt); "
             f"`default` ends at min_alpha 1e-4, `matched` at {GENSIM_MIN_ALPHA} (gensim `corpus_file`'s); fresh "
             "processes, no gensim run between them, the order alternating per pair. Load average "
             f"{res['load_before']} before, {res['load_after']} after."
             + (" Recorded with `--record` from runs made by a shell loop of the same commands." if res.get("recorded")
                else ""), "",
             "| pair | first | default wall s | matched wall s | matched / default wall | CPU (user) | training |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    r = res["runs"]
    for i in range(res["pairs"]):
        d, m = r["default"][i], r["matched"][i]
        lines.append(f"| {i + 1} | {'default' if d['first'] else 'matched'} | {d['wall_s']:.1f} | {m['wall_s']:.1f} | "
                     f"{res['matched_over_default']['wall_s'][i]:.3f} | {res['matched_over_default']['user_s'][i]:.3f} | "
                     f"{res['matched_over_default']['train_s'][i]:.3f} |")
    med = res["median_ratio"]
    lines += ["", f"Median of the paired ratios (matched / default): wall {med['wall_s']:.3f}, CPU {med['user_s']:.3f}, "
              f"training {med['train_s']:.3f}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="token file (one document per line), as word2vec_cli.py writes it")
    ap.add_argument("--model", default="fasttext", choices=("fasttext", "word2vec"))
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--out", default="/tmp/embedstack_schedule_ab",
                    help="a folder of this script's own for the runs' files and models (created; its ab_alpha_* are replaced)")
    ap.add_argument("--record", metavar="DIR", help="record runs already made in DIR (no training)")
    ap.add_argument("--load-before", default=None, help="with --record: the load average before the runs (JSON list)")
    ap.add_argument("--load-after", default=None, help="with --record: the load average after them (JSON list)")
    ap.add_argument("--section", default="schedule_ab_zen3")
    args = ap.parse_args()
    out = Path(args.record or args.out)
    before = json.loads(args.load_before) if args.load_before else load_average()
    if not args.record:
        if not args.corpus:
            raise SystemExit("--corpus is required unless --record is given")
        out.mkdir(parents=True, exist_ok=True)
        for pair in range(1, args.pairs + 1):
            run_pair(pair, args.corpus, args.model, out)
    after = json.loads(args.load_after) if args.load_after else load_average()
    res = {**collect(out, args.pairs), "model": args.model, "load_before": before, "load_after": after,
           "recorded": bool(args.record)}
    md = markdown(res)
    print(md)
    write_results(args.section, res, md)


if __name__ == "__main__":
    main()
