"""Vector database benchmark: Qdrant Edge (the Qdrant engine, in-process) beside our FlatIndex and HNSWIndex.

Data: random unit vectors × 384 (benchmarks/search.py's power-law generator; 100k and 1M by default) and
the SciFact all-MiniLM-L6-v2 vectors (5,183 abstracts, 809 judged queries). Per system: build time
(ready to search: Qdrant's ``optimize`` builds its graphs), queries/s in one batch and one query at a
time over an ``ef`` sweep with recall@10 against exact search, the first ``ef`` reaching recall@10 ≥
0.95, RSS growth of the process while building, and stored bytes (Qdrant: the shard folder on disk;
ours: the arrays/graph ``save`` writes).

Systems, all with inner product on unit vectors, ``threads`` threads, HNSW M=16 / ef_construction=128:

* ``flat``: embedstack FlatIndex (exact; the reference of every recall);
* ``hnsw``: embedstack HNSWIndex (usearch);
* ``qdrant-hnsw``: QdrantIndex on Qdrant Edge, HNSW (``full_scan_threshold`` and ``indexing_threshold``
  lowered to 10 KB so graphs are built and used at every size; ``segments`` segments, one graph each);
* ``qdrant-exact``: QdrantIndex on Qdrant Edge, full scan (``exact=True``, no graph).

Each (system, repeat) runs in a fresh Python process (clean RSS, no allocator carry-over), systems
interleaved and rotated between repeats; tables give the median over repeats and the min–max spread.

Usage::

    python benchmarks/vector_db.py                     # 100k, 1M and SciFact, 3 repeats (hours at 1M on 2 cores)
    python benchmarks/vector_db.py --n 20000 --queries 100 --repeats 1 --no-scifact   # smoke run, prints only
"""

from __future__ import annotations

import os

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, command_line, l3_bytes, log, write_results  # noqa: E402

SYSTEMS = ("flat", "hnsw", "qdrant-hnsw", "qdrant-exact")
EFS = (16, 32, 64, 128, 256, 512)
M, EF_CONSTRUCTION = 16, 128
TARGET = 0.95


# --------------------------------------------------------------------------- one run (a child process)

def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _folder_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            total += min(st.st_size, st.st_blocks * 512)
    return total


def run_one(system: str, data: Path, efs: list[int], single: int, segments: int, timing_repeats: int = 1) -> dict[str, Any]:
    """Build ``system`` over data/x.npy, sweep ``efs``; return build/memory/curve numbers."""
    import gc

    from embedstack.index import FlatIndex, HNSWIndex
    from embedstack.index import _kernels as K

    K.set_threads(THREADS)
    x, q, truth = np.load(data / "x.npy"), np.load(data / "q.npy"), np.load(data / "truth.npy", allow_pickle=True)
    ids = [str(i) for i in range(len(x))]
    work = Path(tempfile.mkdtemp(prefix="vdb-", dir=data))
    idx: Any
    if system.startswith("qdrant"):
        from embedstack.scale.qdrant import QdrantIndex

        exact = system == "qdrant-exact"
        idx = QdrantIndex(x.shape[1], metric="ip", path=work / "shard", m=0 if exact else M,
                          ef_construct=EF_CONSTRUCTION, exact=exact, threads=THREADS, segments=segments,
                          full_scan_threshold=10, indexing_threshold=10)
    elif system == "hnsw":
        idx = HNSWIndex(x.shape[1], metric="ip", M=M, ef_construction=EF_CONSTRUCTION, threads=THREADS,
                        dtype=os.environ.get("BENCH_HNSW_DTYPE", "f32"))
    else:
        idx = FlatIndex(x.shape[1], metric="ip")
    gc.collect()
    rss0 = _rss()
    t0 = time.perf_counter()
    idx.add(x, ids)
    if system.startswith("qdrant"):
        idx.optimize()  # Edge builds graphs (and vacuums) here, not in the background
    idx.search_ids(q[:1], 10)  # ready to answer (FlatIndex folds its buffer on the first search)
    build_s = time.perf_counter() - t0
    gc.collect()
    out: dict[str, Any] = {"system": system, "build_s": build_s, "rss_growth": _rss() - rss0}
    if system.startswith("qdrant"):
        idx.save()
        out["stored_bytes"] = idx.disk_bytes()
        out["search_bytes"] = idx.memory_bytes()
    else:
        idx.save(work / "saved")
        out["stored_bytes"] = _folder_bytes(work / "saved")
        out["search_bytes"] = idx.nbytes()
    truth_sets = [set(r) for r in truth]

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(f) & t) / 10 for f, t in zip(found, truth_sets, strict=True)]))

    sweep: list[int | None] = [None] if system in ("flat", "qdrant-exact") else list(efs)
    points: dict[Any, dict[str, Any]] = {}
    for _ in range(timing_repeats):  # the sweep again: each ef timed once per pass, passes interleaved
        for ef in sweep:
            kw = {} if ef is None else {"ef": ef}
            if system == "hnsw" and ef is not None:
                idx.set_ef(ef)
                kw = {}
            idx.search_ids(q[:8], 10, **kw)  # warm-up
            t0 = time.perf_counter()
            _, found = idx.search_ids(q, 10, **kw)
            batch = time.perf_counter() - t0
            n1 = min(single, len(q))
            t0 = time.perf_counter()
            for i in range(n1):
                idx.search_ids(q[i:i + 1], 10, **kw)
            one = time.perf_counter() - t0
            p = points.setdefault(ef, {"ef": ef, "recall@10": recall(found), "qps_batch_all": [], "qps_single_all": []})
            p["qps_batch_all"].append(len(q) / batch)
            p["qps_single_all"].append(n1 / one)
    curve = []
    for p in points.values():
        curve.append({**p, "qps_batch": statistics.median(p["qps_batch_all"]),
                      "qps_single": statistics.median(p["qps_single_all"])})
    out["curve"] = curve
    if system.startswith("qdrant"):
        idx.close()
    shutil.rmtree(work, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- the parent: data, interleaving, summary

def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and min–max per metric over repeats; the first ef whose median recall@10 reaches TARGET."""
    out: dict[str, Any] = {key: spread([float(r[key]) for r in runs])
                           for key in ("build_s", "rss_growth", "stored_bytes", "search_bytes")}
    curve = []
    for j, point in enumerate(runs[0]["curve"]):
        rows = [r["curve"][j] for r in runs]
        curve.append({"ef": point["ef"], "recall@10": statistics.median(p["recall@10"] for p in rows),
                      "qps_batch": spread([v for p in rows for v in p.get("qps_batch_all", [p["qps_batch"]])]),
                      "qps_single": spread([v for p in rows for v in p.get("qps_single_all", [p["qps_single"]])])})
    out["curve"] = curve
    ok = [c for c in curve if c["recall@10"] >= TARGET]
    out["at_target"] = ok[0] if ok else None
    return out


def run_dataset(name: str, x: np.ndarray, q: np.ndarray, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from embedstack.index import FlatIndex

    data = tmp / name
    data.mkdir(parents=True, exist_ok=True)
    log(f"[{name}] {len(x)} x {x.shape[1]}, {len(q)} queries: exact truth")
    truth = FlatIndex(x.shape[1], metric="ip").add(x, [str(i) for i in range(len(x))]).search_ids(q, 10)[1]
    np.save(data / "x.npy", x)
    np.save(data / "q.npy", q)
    np.save(data / "truth.npy", truth.astype(str))
    systems = list(args.systems)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for rep in range(args.repeats):
        order = systems[rep % len(systems):] + systems[:rep % len(systems)]  # rotate: no system always first
        for system in order:
            cmd = [sys.executable, __file__, "--child", system, "--data", str(data), "--single", str(args.single),
                   "--segments", str(args.segments), "--efs", ",".join(map(str, args.efs)),
                   "--timing-repeats", str(args.timing_repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise SystemExit(f"{system} failed on {name}:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[system].append(res)
            best = next((c for c in res["curve"] if c["recall@10"] >= TARGET), res["curve"][-1])
            log(f"  [{rep + 1}/{args.repeats}] {system:13s} build {res['build_s']:7.1f}s  rss +{res['rss_growth'] / 2**20:7.0f} MB"
                f"  stored {res['stored_bytes'] / 2**20:7.0f} MB  ef={best['ef']}: recall {best['recall@10']:.3f}"
                f"  {best['qps_batch']:8.0f} q/s batch  {best['qps_single']:7.0f} q/s single")
    return {"name": name, "n": len(x), "dim": int(x.shape[1]), "queries": len(q),
            "systems": {s: {"runs": runs[s], "summary": summarize(runs[s])} for s in systems}}


def scifact_vectors() -> tuple[np.ndarray, np.ndarray] | None:
    """SciFact MiniLM vectors: the tests' cache (embedstack's MiniLM), else benchmarks/search.py's, else encode."""
    caches = sorted(Path(os.environ.get("EMBEDSTACK_TEST_CACHE", "/tmp/embedstack-test-cache")).glob(
        "scifact_minilm_*_full.npz")) + [ROOT / "benchmarks" / "out" / "scifact_minilm.npz"]
    for path in caches:
        if path.is_file():
            z = np.load(path, allow_pickle=False)
            log(f"[scifact] vectors from {path}")
            return np.asarray(z["docs"], dtype=np.float32), np.asarray(z["queries"], dtype=np.float32)
    try:
        from embedstack.data import load_beir
        from embedstack.models import resolve

        ds = load_beir("scifact", split="train")
    except Exception as exc:  # no EMBEDSTACK_DATA_DIR / no copy: the synthetic parts still run
        log(f"[scifact] skipped: {exc}")
        return None
    log("[scifact] encoding 5,183 abstracts with all-MiniLM-L6-v2 (minutes on 2 cores)")
    model = resolve("all-MiniLM-L6-v2")
    docs = np.asarray(model.encode(ds.doc_texts(), batch_size=64), dtype=np.float32)
    queries = np.asarray(model.encode(ds.query_texts(), role="query", batch_size=64), dtype=np.float32)
    return docs, queries


def _cell(s: dict[str, float], scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    med, lo, hi = s["median"] / scale, s["min"] / scale, s["max"] / scale
    return fmt.format(med) if lo == hi else f"{fmt.format(med)} ({fmt.format(lo)}–{fmt.format(hi)})"


def markdown(res: dict[str, Any], cmd: str) -> str:
    sizes = ", ".join(f"{d['n']:,}" for d in res["datasets"])
    lines = [f"## Vector database: Qdrant Edge beside FlatIndex / HNSWIndex ({sizes} vectors)", "",
             f"`{cmd}` — {res['threads']} threads, HNSW M={M}, ef_construction={EF_CONSTRUCTION}, inner product on "
             f"unit vectors, HNSWIndex storing {res.get('hnsw_dtype', 'f32')}, Qdrant float32; "
             f"{res['repeats']} build(s) per system, each in a fresh process, query timings "
             f"repeated {res.get('timing_repeats', 1)}× per build (median, min–max over all timings). "
             f"Queries/s at the first ef with recall@10 ≥ {TARGET} against exact; Qdrant Edge with "
             f"{res['segments']} segments (one graph each), graphs built by `optimize()` inside the build time.",
             ""]
    for ds in res["datasets"]:
        lines += [f"### {ds['name']} ({ds['n']:,} × {ds['dim']}, {ds['queries']} queries)", "",
                  "| system | build s | RSS growth MB | stored MB | ef | recall@10 | batch q/s | single q/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, entry in ds["systems"].items():
            s = entry["summary"]
            at = s["at_target"] or s["curve"][-1]
            lines.append(f"| {name} | {_cell(s['build_s'], fmt='{:.1f}')} | {_cell(s['rss_growth'], 2**20)} | "
                         f"{_cell(s['stored_bytes'], 2**20)} | {at['ef'] if at['ef'] is not None else 'exact'} | "
                         f"{at['recall@10']:.3f}{'' if s['at_target'] else ' (below target)'} | "
                         f"{_cell(at['qps_batch'])} | {_cell(at['qps_single'])} |")
        lines.append("")
        lines += _roofline(ds, res.get("peaks"), res.get("l3_bytes"))
    lines.append(f"Load average {res['load_before']:.1f} before, {res['load_after']:.1f} after.")
    return "\n".join(lines)


def _roofline(ds: dict[str, Any], peaks: dict[str, float] | None, l3: int | None) -> list[str]:
    """The exact rows against the machine's peaks: a batch is a GEMM (2·n·dim flops per query), one query
    streams every stored float32 row once (4·n·dim bytes)."""
    if not peaks:
        return []
    n, dim = ds["n"], ds["dim"]
    parts = []
    for name in ("flat", "qdrant-exact"):
        if name not in ds["systems"]:
            continue
        at = ds["systems"][name]["summary"]["curve"][-1]
        gflops = at["qps_batch"]["median"] * 2 * n * dim / 1e9
        gbs = at["qps_single"]["median"] * 4 * n * dim / 1e9
        parts.append(f"{name} {gflops:.0f} GFLOP/s in batches ({100 * gflops / peaks['fp32_gflops_peak']:.0f}% of the "
                     f"fp32 GEMM peak), {gbs:.1f} GB/s one query at a time ({100 * gbs / peaks['read_gbs']:.0f}% of "
                     "the read bandwidth)")
    rows_bytes = 4 * n * dim
    cached = ""
    if l3 and rows_bytes < l3:
        cached = (f" The {rows_bytes / 2**20:.0f} MiB of float32 rows fit in this CPU's {l3 / 2**20:.0f} MiB L3 cache, so "
                  "a query after the first can read them from cache (a share above 100% says it does): the read "
                  "bandwidth (measured on 2 GiB, from memory) is not their ceiling.")
    return [f"Roofline ({ds['name']}; peaks measured in the same run, 2 threads: fp32 GEMM "
            f"{peaks['fp32_gflops_peak']:.0f} GFLOP/s, memory read {peaks['read_gbs']:.1f} GB/s): " + "; ".join(parts)
            + "." + cached + " The HNSW rows walk a graph: each step waits on a random node's links and vector, so they are bound "
            "by memory latency, with no GEMM or streaming ceiling to compare; ef and recall@10 are their work "
            "measure.", ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="*", default=[100_000, 1_000_000], help="random vector counts")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="queries also timed one at a time")
    ap.add_argument("--repeats", type=int, default=5, help="builds per system, interleaved (issue 16: at least 5)")
    ap.add_argument("--efs", default=",".join(map(str, EFS)), help="comma-separated ef sweep")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--segments", type=int, default=THREADS, help="Qdrant Edge segments (one HNSW graph each)")
    ap.add_argument("--no-scifact", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print the table; leave BENCHMARKS.md and results/ alone")
    ap.add_argument("--tmp", default=None, help="work folder (default: a temporary folder, removed at the end)")
    ap.add_argument("--timing-repeats", type=int, default=1, help="query timings repeated inside each build "
                    "(for sizes whose builds take too long to repeat: spread over queries, not builds)")
    ap.add_argument("--hnsw-dtype", default="f32", help="HNSWIndex storage (bf16 at 1M: an f32 usearch graph "
                    "takes ~40 min to build on 2 cores)")
    ap.add_argument("--name", default="vector_db", help="BENCHMARKS.md section / results file name")
    ap.add_argument("--render-last", action="store_true", help="re-render the section from the last record of --name")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.efs = [int(e) for e in str(args.efs).split(",") if e]
    os.environ["BENCH_HNSW_DTYPE"] = args.hnsw_dtype  # children inherit it
    if args.child:
        print(json.dumps(run_one(args.child, Path(args.data), args.efs, args.single, args.segments,
                                 args.timing_repeats)))
        return
    if args.render_last:
        from _report import last_results, write_section

        rec = last_results(args.name)
        if "command" not in rec:  # older records: their flags cannot be rebuilt faithfully
            raise SystemExit(f"the last {args.name} record has no command; re-run the benchmark instead")
        cmd = rec["command"]
        write_section(args.name, markdown(rec, cmd), rec["machine"])
        return
    args.systems = [s for s in str(args.systems).split(",") if s]
    bad = set(args.systems) - set(SYSTEMS)
    if bad:
        raise SystemExit(f"--systems takes {list(SYSTEMS)}, not {sorted(bad)}")
    from search import random_unit

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="vector-db-"))
    res: dict[str, Any] = {"threads": THREADS, "repeats": args.repeats, "segments": args.segments,
                           "timing_repeats": args.timing_repeats, "efs": args.efs, "hnsw_dtype": args.hnsw_dtype,
                           "load_before": os.getloadavg()[0], "datasets": []}
    try:
        for n in args.n:
            x = random_unit(n, args.dim, seed=1)
            q = random_unit(args.queries, args.dim, seed=2)
            res["datasets"].append(run_dataset(f"random-{n}", x, q, args, tmp))
        sci = None if args.no_scifact else scifact_vectors()
        if sci is not None:
            res["datasets"].append(run_dataset("scifact-minilm", sci[0], sci[1], args, tmp))
    finally:
        if args.tmp is None:
            shutil.rmtree(tmp, ignore_errors=True)
    res["load_after"] = os.getloadavg()[0]
    from exact_search import roofline  # after the timed runs: its threads cannot disturb them

    res["peaks"] = roofline(3)
    res["l3_bytes"] = l3_bytes()
    cmd = command_line("vector_db.py")
    res["command"] = cmd.strip()
    md = markdown(res, cmd.strip())
    if args.no_write or args.repeats * args.timing_repeats < 3:  # a smoke run must not replace the measured section
        print(md)
        log("smoke run (--no-write or fewer than 3 repeats): BENCHMARKS.md and results/ left untouched")
        return
    write_results(args.name, res, md)
    log(f"wrote BENCHMARKS.md section {args.name!r} and benchmarks/results/{args.name}.jsonl")


if __name__ == "__main__":
    main()
