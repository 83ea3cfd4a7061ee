"""Benchmark reporting: machine-readable JSON in benchmarks/results/ and a section in BENCHMARKS.md.

Each benchmark owns one section of BENCHMARKS.md between ``<!-- bench:NAME -->`` markers and
replaces it on every run; its JSON results are appended (one object per run) to
``benchmarks/results/NAME.jsonl``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
T = TypeVar("T")


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": cpu_line(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (``unknown CPU`` where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "unknown CPU")
    except OSError:
        return "unknown CPU"


def l3_bytes() -> int | None:
    """This CPU's level-3 cache size in bytes, from sysfs (inside a VM: the host socket's shared L3); None where it
    cannot be read or parsed."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text(encoding="ascii").strip() != "3":
                continue
            text = (index / "size").read_text(encoding="ascii").strip()
        except OSError:
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        try:
            return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)
        except ValueError:
            return None
    return None


def cpu_line() -> str:
    """The CPU's model name and the SIMD features our kernels use, e.g. ``AMD EPYC 9R14 (avx512_bf16, ...)``."""
    from embedstack._threads import cpu_features

    return f"{cpu_name()} ({', '.join(sorted(cpu_features())) or 'flags unknown'})"


def write_results(name: str, results: dict[str, Any], markdown: str) -> None:
    """Append ``results`` to results/NAME.jsonl and replace the NAME section of BENCHMARKS.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "machine": machine(), **results}
    with open(RESULTS / f"{name}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")
    write_section(name, markdown, record["machine"])


def last_results(name: str) -> dict[str, Any]:
    """The latest record of results/NAME.jsonl (to re-render a section without measuring again); a name with no
    record ends the script with a message naming the file, not a traceback."""
    path = RESULTS / f"{name}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    if not lines:
        raise SystemExit(f"no {name} record in benchmarks/results/{name}.jsonl (missing or empty): run the benchmark "
                         "first, or check the name (--name / --section)")
    return json.loads(lines[-1])


def data_dir() -> Path:
    """``$EMBEDSTACK_DATA_DIR``, else the ``shared/data`` folder beside the repository (where the datasets live)."""
    return Path(os.environ.get("EMBEDSTACK_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def render_last(name: str, markdown: Callable[[dict[str, Any]], str]) -> None:
    """Re-render the NAME section from results/NAME.jsonl's last record with ``markdown`` (no measuring)."""
    record = last_results(name)
    write_section(name, markdown(record), record["machine"])


def write_section(name: str, markdown: str, measured: dict[str, Any]) -> None:
    """Replace the NAME section of BENCHMARKS.md (``measured``: the record's ``machine``: date, cpus)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = f"{start}\n{markdown.strip()}\n\n{measured_line(measured)}\n{end}"
    text = BENCHMARKS_MD.read_text(encoding="utf-8") if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    tmp = BENCHMARKS_MD.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, BENCHMARKS_MD)


def measured_line(measured: dict[str, Any]) -> str:
    """A section's last line: when, on which CPU model (where the record names it) with its widest vector units
    (two CPUs share the name "AMD EPYC": one with AVX-512, one with AVX2 only), and how many cores."""
    line = str(measured.get("cpu", ""))
    cpu = line.split(" (")[0]
    if " (" in line:
        flags = set(line.split(" (", 1)[1].rstrip(")").split(", "))
        cpu += " with " + ("AMX" if any(f.startswith("amx") for f in flags) else
                           "AVX-512" if any(f.startswith("avx512") for f in flags) else
                           "AVX2 (no AVX-512)" if "avx2" in flags else "neither AVX2 nor AVX-512")
    return f"_Measured {measured['date']}{f' on {cpu}' if cpu else ''}, {measured['cpus']} CPUs._"


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded (every comparison records them before and after)."""
    return [round(x, 2) for x in os.getloadavg()]


def command_line(script: str) -> str:
    """The command that reproduces this run, quoted for a shell (an empty argument stays ``''``)."""
    return shlex.join(["python", f"benchmarks/{script}", *sys.argv[1:]])


def rotated(names: Sequence[T], r: int) -> list[T]:
    """Round ``r``'s order: ``names`` rotated by ``r``, so each goes first in turn (and two alternate)."""
    k = r % len(names)
    return [*names[k:], *names[:k]]


def interleaved(ours: Callable[[], Any], theirs: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Time both sides ``repeats`` times (after one untimed run each), interleaved with the order rotated.

    Returns the medians (``ours``, ``theirs``), every run's seconds (``runs``) and each side's last output
    (``out_ours``, ``out_theirs``).
    """
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    outs: dict[str, Any] = {"ours": ours(), "theirs": theirs()}  # untimed warm-up: caches, norms, imports
    for r in range(repeats):
        for side in rotated(("ours", "theirs"), r):
            fn = ours if side == "ours" else theirs
            t = time.perf_counter()
            outs[side] = fn()
            times[side].append(time.perf_counter() - t)
    return {"ours": statistics.median(times["ours"]), "theirs": statistics.median(times["theirs"]),
            "runs": times, "out_ours": outs["ours"], "out_theirs": outs["theirs"]}


def spread(xs: list[float], scale: float = 1.0, fmt: str = ".2f") -> str:
    """``min–max`` of ``xs`` (times ``scale``), for a table cell beside a median."""
    return f"{min(xs) * scale:{fmt}}–{max(xs) * scale:{fmt}}"


def ratio(ours: float, theirs: float) -> float:
    return float(ours) / float(theirs) if theirs else float("nan")


# ------------------------------------------------------------------------------ experiment arms
# Long experiments (training runs) keep each arm's result in results/NAME_arms.json as it finishes, so a
# script can be stopped and re-run (arms already there are kept unless the script is told otherwise).

def result_name(value: str) -> str:
    """An argparse type for ``--name``: it names a results file and a BENCHMARKS.md section."""
    import argparse
    import re

    if not re.fullmatch(r"[a-z0-9_]+", value):
        raise argparse.ArgumentTypeError(f"{value!r}: use lower-case letters, digits and '_' (it names a results file)")
    return value


def name_flag(name: str, default: str) -> str:
    """`` --name NAME`` for a section's reproduce line, or nothing where ``name`` is the script's default."""
    return "" if name == default else f" --name {name}"


def roofline_share(gflops: float, bf16: bool, peaks: dict[str, float]) -> dict[str, Any]:
    """A rate in GFLOP/s against the GEMM peak of the precision it ran in (``peaks`` from ``exact_search.roofline``:
    ``fp32_gflops_peak``, ``bf16_gflops``)."""
    peak = peaks["bf16_gflops"] if bf16 else peaks["fp32_gflops_peak"]
    return {"gflops": gflops, "peak_gflops": peak, "peak_kind": "bf16" if bf16 else "fp32", "share": gflops / peak}


def shares_text(shares: dict[str, dict[str, Any]], labels: dict[str, str] | None = None) -> str:
    """``roofline_share`` results as one clause: "NAME 106 GFLOP/s, 57% of the fp32 GEMM peak; ..." (``labels``
    renames the keys)."""
    labels = labels or {}
    return "; ".join(f"{labels.get(k, k)} {v['gflops']:.0f} GFLOP/s, {100 * v['share']:.0f}% of the {v['peak_kind']} "
                     "GEMM peak" for k, v in shares.items())


def roofline_line(shares: dict[str, dict[str, Any]], peaks: dict[str, float], work: str) -> str:
    """One sentence: the work per unit, each system's GFLOP/s and its share of the GEMM peak of its precision (the
    bf16 peak named only where a system ran in bf16)."""
    bf16 = (f", bf16 {peaks['bf16_gflops']:.0f}" if any(v["peak_kind"] == "bf16" for v in shares.values()) else "")
    return (f"Roofline ({work}; real tokens only, no padding counted; peaks measured in the same run, 2 threads: "
            f"fp32 GEMM {peaks['fp32_gflops_peak']:.0f} GFLOP/s{bf16}): {shares_text(shares)}.")


def encode_rooflines(systems: dict[str, dict[str, Any]], gflop_per_doc: float, gflop_per_query: float,
                     peaks: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each float system's ``roofline_share`` for documents and for queries, from its median texts/s (``systems``:
    ``{name: {"docs": {"median": ...}, "queries": {...}}}``; names with "bf16" against the bf16 peak; int8 systems
    left out: an int8 product is not held to a float peak)."""
    return {name: {what: roofline_share(v[what]["median"] * gflop, "bf16" in name, peaks)
                   for what, gflop in (("docs", gflop_per_doc), ("queries", gflop_per_query))}
            for name, v in systems.items() if "int8" not in name}


def encode_roofline_lines(part: dict[str, Any], doc_work: str) -> list[str]:
    """The two roofline sentences of an encoding part (``roofline``, ``peaks``, ``gflop_per_doc`` / ``_query``):
    documents (``doc_work`` added to the work's description), then queries, each followed by a blank line."""
    docs = {k: v["docs"] for k, v in part["roofline"].items()}
    queries = {k: v["queries"] for k, v in part["roofline"].items()}
    return [roofline_line(docs, part["peaks"], f"an abstract is {part['gflop_per_doc']:.2f} GFLOP forward{doc_work}"),
            "", roofline_line(queries, part["peaks"], f"a query {part['gflop_per_query']:.3f} GFLOP"), ""]


def log(msg: str) -> None:
    """A timestamped progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_arms(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}_arms.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def save_arm(name: str, arm: str, result: dict[str, Any]) -> None:
    """Keep one arm's result in results/NAME_arms.json, with the machine and date it was measured on."""
    arms = load_arms(name)
    arms[arm] = {**result, "measured": result.get("measured") or machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}_arms.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(arms, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def rrf_runs(*runs: dict[str, dict[str, float]], k: int = 100, rrf_k: int = 60) -> dict[str, dict[str, float]]:
    """Reciprocal rank fusion (embedstack.index.fusion.RRF) of runs ``{query_id: {doc_id: score}}``, per query."""
    from embedstack.base import Hit
    from embedstack.index.fusion import RRF

    out = {}
    for qid in runs[0]:
        lists = {str(n): [Hit(d, s) for d, s in sorted(r.get(qid, {}).items(), key=lambda x: -x[1])]
                 for n, r in enumerate(runs)}
        out[qid] = {h.id: h.score for h in RRF(rrf_k).fuse(lists, k=k)}
    return out
