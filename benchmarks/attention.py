"""Attention alone: embedstack's kernel (``neural/_attention.c``) against torch's ``scaled_dot_product_attention``.

torch's kernel is the one sentence-transformers, infinity and our own ``sdpa`` path run on CPU (Hugging Face BERT's
default attention). Both get the same tensors in one process: float32 and bfloat16 states of MiniLM's shape (12 heads
of 32 dims) and of BERT-base's (12 heads of 64), batches of short sentences (24 tokens) and of abstracts (240 and 512
tokens), with a key-padding mask (three keys masked per text), on 1 and 2 threads. Each cell runs both kernels back
to back ``--reps`` times in alternating order; reported: the medians with the spread (min-max), the ratio of medians,
the work rate (4 · B · H · T² · D FLOPs a call) and each kernel's error against the float64 formula on the same inputs
(max |difference| over the real query rows).

Which of our kernels runs: float32 states on the AVX-512 register-tiled kernel; bfloat16 states on the AMX tile kernel
where the CPU has AMX, on the AVX-512 BF16 dot-product kernel where it has AVX-512 BF16 and VBMI but no AMX (Zen 4),
else on the float32 kernel, widened. Where the dot-product kernel runs, the widened kernel runs beside it on the same
bf16 cells ("widened" columns: what the dot products are worth).

Usage: python benchmarks/attention.py [--reps 7] [--threads 1,2] [--quick] [--section attention]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import cpu_line, write_results  # noqa: E402

SHAPES = [  # (texts, tokens, heads, head dim)
    (64, 24, 12, 32),
    (64, 28, 12, 32),  # 28 = 2 x 12 + 4: a last block of 4 query rows (the 4-row tiles of the bf16 dot kernel)
    (32, 240, 12, 32),
    (16, 512, 12, 32),
    (32, 240, 12, 64),
]


def reference(q: Any, k: Any, v: Any, mask: Any, heads: int) -> Any:

    B, T, C = q.shape
    D = C // heads

    def split(t: Any) -> Any:
        return t.double().view(B, T, heads, D).transpose(1, 2)

    s = split(q) @ split(k).transpose(-2, -1) / math.sqrt(D)
    s = s.masked_fill(~mask[:, None, None, :], -math.inf)
    return (s.softmax(-1) @ split(v)).transpose(1, 2).reshape(B, T, C)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true", help="2 reps, first two shapes, no report")
    ap.add_argument("--section", default="attention")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F

    from embedstack.neural import _attention

    if not _attention.available():
        raise SystemExit(f"embedstack's attention kernel does not run here: {_attention.status()}")
    reps = 2 if args.quick else args.reps
    shapes = SHAPES[:2] if args.quick else SHAPES
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for B, T, H, D in shapes:
            for dtype in (torch.float32, torch.bfloat16):
                g = torch.Generator().manual_seed(T + D)
                q, k, v = (torch.randn(B, T, H * D, generator=g).to(dtype) for _ in range(3))
                mask = torch.ones(B, T, dtype=torch.bool)
                mask[:, -3:] = False
                m4 = mask[:, None, None, :]

                def split(t: Any, B: int = B, T: int = T, H: int = H, D: int = D) -> Any:
                    return t.view(B, T, H, D).transpose(1, 2)

                def theirs(q: Any = q, k: Any = k, v: Any = v, m4: Any = m4, B: int = B, T: int = T) -> Any:
                    y = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=m4)
                    return y.transpose(1, 2).reshape(B, T, -1)  # the (B, T, C) layout the model needs

                def ours(q: Any = q, k: Any = k, v: Any = v, mask: Any = mask, H: int = H) -> Any:
                    return _attention.attention(q, k, v, mask, H)

                def widened(q: Any = q, k: Any = k, v: Any = v, mask: Any = mask, H: int = H) -> Any:
                    _attention._state["bf16_dot"] = False  # the float32 kernel on bf16 states, this call only
                    try:
                        return _attention.attention(q, k, v, mask, H)
                    finally:
                        _attention._state["bf16_dot"] = True

                own = _attention.supports(q, D)
                systems = {"torch": theirs, "ours": ours if own else theirs}
                dot = own and dtype == torch.bfloat16 and _attention._state["bf16_dot"] and D in (32, 64)
                if dot:
                    systems["widened"] = widened
                times: dict[str, list[float]] = {s: [] for s in systems}
                with torch.inference_mode():
                    outs = {s: f() for s, f in systems.items()}  # warm-up, and the outputs for the error
                    for r in range(reps):
                        for s in (list(systems) if r % 2 == 0 else list(systems)[::-1]):
                            t0 = time.perf_counter()
                            systems[s]()
                            times[s].append(time.perf_counter() - t0)
                    ref = reference(q, k, v, mask, H)
                real = mask[:, :, None].expand_as(ref)
                err = {s: float((o.double() - ref)[real].abs().max()) for s, o in outs.items()}
                med = {s: sorted(t)[len(t) // 2] for s, t in times.items()}
                flops = 4 * B * H * T * T * D
                row = {"threads": threads, "texts": B, "tokens": T, "heads": H, "head_dim": D,
                       "dtype": str(dtype).removeprefix("torch."), "ours_kernel": _kernel(dtype, own),
                       "torch_ms": med["torch"] * 1e3, "ours_ms": med["ours"] * 1e3,
                       "torch_spread_ms": [min(times["torch"]) * 1e3, max(times["torch"]) * 1e3],
                       "ours_spread_ms": [min(times["ours"]) * 1e3, max(times["ours"]) * 1e3],
                       "speedup": med["torch"] / med["ours"], "ours_gflops": flops / med["ours"] / 1e9,
                       "torch_gflops": flops / med["torch"] / 1e9, "torch_max_err": err["torch"],
                       "ours_max_err": err["ours"]}
                if dot:
                    row.update(widened_ms=med["widened"] * 1e3, widened_max_err=err["widened"],
                               widened_spread_ms=[min(times["widened"]) * 1e3, max(times["widened"]) * 1e3],
                               dot_speedup=med["widened"] / med["ours"])
                rows.append(row)
                print(f"{threads} thr  {B:3d} x {T:3d} tok  H{H} D{D}  {row['dtype']:8s}  torch {row['torch_ms']:7.2f} ms"
                      f"  ours ({row['ours_kernel']}) {row['ours_ms']:7.2f} ms  x{row['speedup']:.2f}  "
                      f"err {err['torch']:.1e} / {err['ours']:.1e}"
                      + (f"  widened {row['widened_ms']:7.2f} ms (dot x{row['dot_speedup']:.2f})" if dot else ""),
                      file=sys.stderr)
    res = {"cpu": cpu_line(), "kernel": _attention.status(), "reps": reps, "rows": rows,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "torch": torch.__version__}
    md = markdown(res, args.section)
    print(md)
    if not args.quick:
        write_results(args.section, res, md)


def _kernel(dtype: Any, own: bool) -> str:
    import torch

    from embedstack.neural import _attention

    if not own:
        return "torch's (ours does not pay here)"
    if dtype == torch.float32:
        return "AVX-512 fp32"
    if _attention._amx(_attention._load()):
        return "AMX bf16"
    return "AVX-512 BF16 dot" if _attention._state["bf16_dot"] else "AVX-512 fp32 (widened)"


def markdown(res: dict[str, Any], section: str) -> str:
    cmd = "python benchmarks/attention.py" + (f" --reps {res['reps']}" if res["reps"] != 7 else "")
    cmd += f" --section {section}" if section != "attention" else ""
    wide = any("widened_ms" in r for r in res["rows"])  # the dot-product kernel ran: its widened twin beside it
    lines = [f"## Attention kernel: ours vs torch's scaled_dot_product_attention — {res['cpu']}", "",
             f"Reproduce: `{cmd}` — one process, torch {res['torch']}, the same tensors for both: q, k, v as "
             "(texts, tokens, heads × dim) states with 3 padded keys per text, output in the (texts, tokens, C) "
             "layout the model needs (torch's includes its transpose back). "
             f"{res['reps']} alternating runs per cell, median (min-max). Error: max |difference| from the float64 "
             f"formula on the same inputs, real query rows. Load average {res['loadavg_before'][0]:.2f} before, "
             f"{res['loadavg_after'][0]:.2f} after. Our kernel here: {res['kernel']}.", "",
             "| threads | texts × tokens | heads × dim | dtype | ours runs | torch ms | ours ms | ours / torch speed "
             "| ours GFLOP/s | max error torch / ours |" + (" widened ms | dot / widened speed | widened max error |"
                                                           if wide else ""),
             "|---:|---|---|---|---|---:|---:|---:|---:|---|" + ("---:|---:|---|" if wide else "")]
    for r in res["rows"]:
        lines.append(
            f"| {r['threads']} | {r['texts']} × {r['tokens']} | {r['heads']} × {r['head_dim']} | {r['dtype']} "
            f"| {r['ours_kernel']} | {r['torch_ms']:.2f} ({r['torch_spread_ms'][0]:.2f}–{r['torch_spread_ms'][1]:.2f}) "
            f"| {r['ours_ms']:.2f} ({r['ours_spread_ms'][0]:.2f}–{r['ours_spread_ms'][1]:.2f}) | {r['speedup']:.2f}× "
            f"| {r['ours_gflops']:.0f} | {r['torch_max_err']:.1e} / {r['ours_max_err']:.1e} |"
            + ((f" {r['widened_ms']:.2f} ({r['widened_spread_ms'][0]:.2f}–{r['widened_spread_ms'][1]:.2f}) "
                f"| {r['dot_speedup']:.2f}× | {r['widened_max_err']:.1e} |" if "widened_ms" in r else " – | – | – |")
               if wide else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
