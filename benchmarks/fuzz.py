"""Fuzz every parser with generated and mutated inputs (hypothesis) and count what happens.

For each parser (word2vec text/binary, GloVe, fastText .vec, BEIR corpus/queries/qrels, STS, pair
files, classification CSVs, manifest.json, the safetensors header, model folders, the text reader)
``--cases`` inputs are drawn from ``tests/fuzz/fuzz_targets.py``: about half generated (format-shaped
lines, JSON with values of the wrong type, raw bytes), half mutated from a valid file (bits flipped,
bytes inserted/deleted/duplicated, truncation). Allowed outcomes: a result, or an ``EmbedstackError``
subclass. Anything else ("other") and any case past the per-case time limit ("hang") is a bug.

Prints a Markdown table (parser, cases, typed errors, other exceptions, hangs, seconds) and appends
one JSON object to ``benchmarks/results/fuzz.jsonl``. Exit status 1 if any other exception or hang.

    python benchmarks/fuzz.py                      # 10,000 cases per parser
    python benchmarks/fuzz.py --cases 500 --only glove,safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))

from fuzz_targets import TARGETS, Workspace, case_strategy, run_case  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from _report import RESULTS, machine  # noqa: E402


def fuzz_target(name: str, cases: int, *, limit_s: float, rng_seed: int) -> dict[str, Any]:
    """Run ``cases`` inputs through one parser; counts per outcome and the first failures."""
    target = TARGETS[name]
    ws = Workspace(target)
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    how: Counter[str] = Counter()
    failures: list[str] = []

    @seed(rng_seed)
    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case_strategy(target))
    def run(case: Any) -> None:
        outcome, detail = run_case(ws, case, limit_s=limit_s)
        counts[outcome] += 1
        how[case.how] += 1
        if outcome == "typed":
            kinds[detail] += 1
        elif outcome in ("other", "hang") and len(failures) < 5:
            failures.append(f"[{outcome}] {detail}")

    t0 = time.perf_counter()
    try:
        run()
    finally:
        ws.close()
    seconds = time.perf_counter() - t0
    return {"parser": name, "cases": sum(counts.values()), "ok": counts["ok"], "typed": counts["typed"],
            "other": counts["other"], "hangs": counts["hang"], "seconds": round(seconds, 1),
            "generated": how["generated"], "mutated": how["mutated"], "typed_kinds": dict(kinds),
            "failures": failures}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| parser | cases | parsed | typed errors | other exceptions | hangs | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['parser']} | {r['cases']:,} | {r['ok']:,} | {r['typed']:,} | {r['other']} | "
                     f"{r['hangs']} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="inputs per parser (default 10000)")
    ap.add_argument("--only", default="", help="comma-separated parser names (default: all)")
    ap.add_argument("--limit", type=float, default=5.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results/fuzz.jsonl")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown parser(s) {unknown}; choose from {list(TARGETS)}")
    rows = []
    skipped = []
    for name in names:
        if not TARGETS[name].available():
            skipped.append(f"{name} (needs {TARGETS[name].needs})")
            continue
        r = fuzz_target(name, args.cases, limit_s=args.limit, rng_seed=args.seed)
        rows.append(r)
        print(f"{name}: {r['cases']} cases, {r['typed']} typed, {r['other']} other, {r['hangs']} hangs, "
              f"{r['seconds']:.1f} s", file=sys.stderr, flush=True)
        for f in r["failures"]:
            print(f, file=sys.stderr)
    md = table(rows)
    print(md)
    if skipped:
        print(f"\nskipped: {', '.join(skipped)}")
    cmd = "python benchmarks/fuzz.py" + (f" --cases {args.cases}" if args.cases != 10_000 else "") + \
        (f" --only {args.only}" if args.only else "") + (f" --seed {args.seed}" if args.seed else "")
    print(f"\nreproduce: `{cmd}`")
    if args.no_record:
        return 1 if any(r["other"] or r["hangs"] for r in rows) else 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "fuzz", "machine": machine(), "cases_per_parser": args.cases, "seed": args.seed,
              "limit_s": args.limit, "command": cmd, "rows": rows, "skipped": skipped}
    with open(RESULTS / "fuzz.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    return 1 if any(r["other"] or r["hangs"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
