"""`make demo` timing: the quick ladder from a fresh state, then again with its caches warm.

Run from the repository root (after `make demo` or `make test` has created .venv)::

    EMBEDSTACK_DATA_DIR=../shared/data .venv/bin/python benchmarks/demo_timing.py

"Fresh" means what a new clone has: an empty embedstack cache (``EMBEDSTACK_CACHE_DIR`` points at a new
temporary folder, so no trained vectors and no cached embeddings; the user's own cache is not touched)
and no numba compilation cache (``NUMBA_CACHE_DIR`` likewise), so the first run pays the JIT compiles,
the static-vector training and every transformer encode. The second run uses the same two folders.
Installation is not timed. Each run is the real command, ``embedstack ladder --quick --json``, in a
subprocess; its wall time, the rows and their status go to ``benchmarks/results/demo.jsonl`` (one JSON
object per invocation) and a Markdown summary is printed on stdout.

Options: ``--keep`` keeps the temporary folders (their paths are printed); ``--runs N`` (default 2);
``--precision-check`` instead runs the quick MiniLM rows (CLS/mean/max, 128 tokens) in bf16-pure and in
fp32 on the quick data and reports both rows' numbers and the cosine between the two precisions' document
vectors (``{"benchmark": "demo-precision", ...}`` in the same file): is the demo's bf16 within noise of fp32?
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS, ROOT, machine  # noqa: E402

BUDGET_FIRST_S, BUDGET_AGAIN_S = 300.0, 60.0


def _embedstack() -> str:
    here = Path(sys.executable).with_name("embedstack")
    return str(here) if here.exists() else "embedstack"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on Linux
        return None


def run_once(env: dict[str, str]) -> dict[str, Any]:
    cmd = [_embedstack(), "ladder", "--quick", "--json"]
    load = _load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = {}
    rows = [{k: r.get(k) for k in ("label", "era", "status", "reason", "ndcg10", "sts_spearman", "build_seconds",
                                    "single_query_ms", "cached")} for r in report.get("rows", [])]
    return {"command": " ".join(["embedstack", *cmd[1:]]), "exit_code": proc.returncode, "wall_seconds": round(wall, 1),
            "ladder_seconds": report.get("seconds"), "load_average_before": load,
            "rows_ok": sum(r["status"] == "ok" for r in rows), "rows": rows,
            "eras_ok": sorted({r["era"] for r in rows if r["status"] == "ok"}),
            "retrieval_dataset": report.get("retrieval_dataset"), "sts_dataset": report.get("sts_dataset"),
            "notes": report.get("notes"), "full_run_only": report.get("full_run_only"),
            "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}


def precision_check() -> dict[str, Any]:
    """Quick MiniLM rows in bf16-pure and in fp32 (same cut and workers), and their document-vector cosines."""
    import numpy as np

    from embedstack.evaluation import ladder as L
    from embedstack.evaluation.cache import EmbeddingCache, encoder_settings, text_keys
    from embedstack.neural.specs import load

    rows = [f"MiniLM-L6, {p} pooling" for p in L.POOLINGS]
    data = L.load_ladder_data(quick=True)
    out: dict[str, Any] = {"retrieval_dataset": data.retrieval_name, "sts_dataset": data.sts_name}
    with tempfile.TemporaryDirectory(prefix="embedstack-precision-") as tmp:
        cache = EmbeddingCache(tmp)
        base = {k: v for k, v in L._quick_transformer_options().items() if k != "precision"}
        for prec in ("bf16-pure", "fp32"):
            opts = dict(base, precision=prec)
            L._quick_transformer_options = lambda o=opts: dict(o)  # type: ignore[assignment]
            t0 = time.perf_counter()
            rep = L.run_ladder(quick=True, only=rows, data=data, cache=cache)
            out[prec] = {"seconds": round(time.perf_counter() - t0, 1), "options": opts,
                         "rows": {r.label: {"ndcg10": r.ndcg10, "recall100": r.recall100, "sts": r.sts_spearman}
                                  for r in rep.results}}
            print(f"  {prec}: {out[prec]['seconds']} s", file=sys.stderr, flush=True)
        keys = text_keys(list(data.retrieval.doc_texts()))
        for pool in L.POOLINGS:
            vecs = []
            for prec in ("bf16-pure", "fp32"):
                enc = load("all-MiniLM-L6-v2", pooling=pool, max_seq_length=base["max_seq_length"], precision=prec)
                got, missing = cache.get(cache.namespace(encoder_settings(enc) or {}), keys)
                assert not missing
                vecs.append(np.stack(got))  # type: ignore[arg-type]
            a, b = vecs
            cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            out[f"doc_cosine_{pool}"] = {"min": float(cos.min()), "mean": float(cos.mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2, help="runs in a row (the first is fresh)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache folders")
    ap.add_argument("--precision-check", action="store_true", help="bf16-pure against fp32 on the quick rows")
    args = ap.parse_args(argv)
    if args.precision_check:
        res = {"benchmark": "demo-precision", "machine": machine(), "git": _git(), **precision_check()}
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / "demo.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(res, default=float) + "\n")
        print("| row | nDCG@10 bf16-pure | nDCG@10 fp32 | STS bf16-pure | STS fp32 |\n|---|---|---|---|---|")
        for label, b in res["bf16-pure"]["rows"].items():
            f = res["fp32"]["rows"][label]
            print(f"| {label} | {b['ndcg10']:.4f} | {f['ndcg10']:.4f} | {b['sts']:.2f} | {f['sts']:.2f} |")
        print(json.dumps({k: v for k, v in res.items() if k.startswith("doc_cosine")}))
        return 0
    if not os.environ.get("EMBEDSTACK_DATA_DIR"):
        print("note: EMBEDSTACK_DATA_DIR is not set; the ladder will fall back to the bundled sample.", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="embedstack-demo-timing-"))
    env = dict(os.environ, EMBEDSTACK_CACHE_DIR=str(tmp / "cache"), NUMBA_CACHE_DIR=str(tmp / "numba"),
               COLUMNS="100")
    results = []
    try:
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs} ({'fresh' if i == 0 else 'caches warm'}) ...", file=sys.stderr, flush=True)
            res = run_once(env)
            res["run"] = "first (fresh caches)" if i == 0 else f"again #{i}"
            results.append(res)
            print(f"  {res['wall_seconds']:.1f} s wall, exit {res['exit_code']}, {res['rows_ok']} rows ok "
                  f"({', '.join(res['eras_ok'])})", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    record = {"benchmark": "demo", "machine": machine(), "git": _git(), "runs": results,
              "budget_seconds": {"first": BUDGET_FIRST_S, "again": BUDGET_AGAIN_S}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "demo.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=float) + "\n")
    print(f"appended to {RESULTS / 'demo.jsonl'}", file=sys.stderr)
    print("| run | wall s | budget s | rows ok | eras | load avg before |\n|---|---|---|---|---|---|")
    for i, r in enumerate(results):
        budget = BUDGET_FIRST_S if i == 0 else BUDGET_AGAIN_S
        print(f"| {r['run']} | {r['wall_seconds']:.1f} | {budget:.0f} | {r['rows_ok']}/{len(r['rows'])} | "
              f"{', '.join(r['eras_ok'])} | {r['load_average_before']} |")
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


def _git() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
