"""The fp32-bf16x3 kernels alone: float32 products as three bf16 products on the AMX tiles, against float32's own.

``_attention.linear_x3`` (x Wᵀ + b) against torch's float32 ``F.linear`` on MiniLM's four linear shapes, and
``_attention.attention(..., x3=True)`` against embedstack's float32 attention kernel and torch's float32
``scaled_dot_product_attention`` on MiniLM's attention shape (12 heads of 32, abstracts of 240 tokens, 3 padded keys a
text). One process, the same tensors for every system; each cell runs the systems back to back ``--reps`` times in
rotating order; reported: medians with the spread (min-max), the work rate (2 · M · K · N or 4 · B · H · T² · D FLOPs
a call) and each system's largest error against the float64 formula, relative to the largest output.

Usage: python benchmarks/x3_kernels.py [--reps 15] [--threads 2] [--section x3_kernels]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_line, rotated, write_results  # noqa: E402
from attention import reference  # noqa: E402

LINEARS = [  # (rows, in, out): Q/K/V side by side, the attention output, the feed-forward in and out
    (2048, 384, 1152),
    (2048, 384, 384),
    (2048, 384, 1536),
    (2048, 1536, 384),
]
ATTENTION = (32, 240, 12, 32)  # texts, tokens, heads, head dim


def timed(systems: dict[str, Any], reps: int) -> dict[str, list[float]]:
    """Seconds of each system's calls, ``reps`` rounds in rotating order (after one warm-up call each)."""
    for f in systems.values():
        f()
    times: dict[str, list[float]] = {s: [] for s in systems}
    names = list(systems)
    for r in range(reps):
        for s in rotated(names, r):
            t0 = time.perf_counter()
            systems[s]()
            times[s].append(time.perf_counter() - t0)
    return times


def cells(times: dict[str, list[float]], flops: float, errors: dict[str, float]) -> list[dict[str, Any]]:
    return [{"system": s, "ms": sorted(t)[len(t) // 2] * 1e3, "spread_ms": [min(t) * 1e3, max(t) * 1e3],
             "gflops": flops / sorted(t)[len(t) // 2] / 1e9, "rel_err": errors[s]} for s, t in times.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--section", default="x3_kernels")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F

    from embedstack.neural import _attention

    if not _attention.x3_supported(32, 32):
        raise SystemExit(f"the x3 kernels need the AMX build of embedstack's kernels: {_attention.status()}")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for m, k, n in LINEARS:
            g = torch.Generator().manual_seed(m + k + n)
            x, w, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * k ** -0.5, torch.randn(n, generator=g)
            packed = _attention.pack_x3(w)
            systems = {"torch fp32": lambda x=x, w=w, b=b: F.linear(x, w, b),
                       "ours bf16x3": lambda x=x, packed=packed, b=b: _attention.linear_x3(x, packed, b)}
            want = x.double() @ w.double().T + b.double()
            scale = float(want.abs().max())
            err = {s: float((f().double() - want).abs().max()) / scale for s, f in systems.items()}
            for c in cells(timed(systems, args.reps), 2 * m * k * n, err):
                rows.append({"kind": "linear", "shape": f"{m} × {k} → {n}", **c})
        B, T, H, D = ATTENTION
        g = torch.Generator().manual_seed(T)
        q, k_, v = (torch.randn(B, T, H * D, generator=g) for _ in range(3))
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[:, -3:] = False

        def sdpa() -> Any:
            def split(t: Any) -> Any:
                return t.view(B, T, H, D).transpose(1, 2)
            y = F.scaled_dot_product_attention(split(q), split(k_), split(v), attn_mask=mask[:, None, None, :])
            return y.transpose(1, 2).reshape(B, T, -1)

        systems = {"torch fp32 (sdpa)": sdpa, "ours fp32": lambda: _attention.attention(q, k_, v, mask, H),
                   "ours bf16x3": lambda: _attention.attention(q, k_, v, mask, H, x3=True)}
        want = reference(q, k_, v, mask, H)
        real = mask[:, :, None].expand_as(want)
        scale = float(want[real].abs().max())
        err = {s: float((f().double() - want)[real].abs().max()) / scale for s, f in systems.items()}
        for c in cells(timed(systems, args.reps), 4 * B * H * T * T * D, err):
            rows.append({"kind": "attention", "shape": f"{B} × {T} tokens, {H} × {D}", **c})
    res = {"cpu": cpu_line(), "threads": args.threads, "reps": args.reps, "rows": rows, "torch": torch.__version__,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    md = markdown(res, args.section)
    print(md)
    write_results(args.section, res, md)


def markdown(res: dict[str, Any], section: str) -> str:
    cmd = "python benchmarks/x3_kernels.py" + (f" --reps {res['reps']}" if res["reps"] != 15 else "")
    cmd += f" --threads {res['threads']}" if res["threads"] != 2 else ""
    cmd += f" --section {section}" if section != "x3_kernels" else ""
    lines = [f"## The fp32-bf16x3 kernels alone: three bf16 products against one float32 product — {res['cpu']}", "",
             f"Reproduce: `{cmd}` — one process, torch {res['torch']}, {res['threads']} threads, the same tensors for "
             f"every system, {res['reps']} rounds in rotating order, median (min-max). Error: the largest |difference| "
             "from the float64 formula over the largest output (real query rows for attention). Load average "
             f"{res['loadavg_before'][0]:.2f} before, {res['loadavg_after'][0]:.2f} after.", "",
             "| kernel | shape | system | ms | GFLOP/s (float32 work) | relative error |", "|---|---|---|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['kind']} | {r['shape']} | {r['system']} | {r['ms']:.3f} ({r['spread_ms'][0]:.3f}–"
                     f"{r['spread_ms'][1]:.3f}) | {r['gflops']:.0f} | {r['rel_err']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
