"""What each torch precision costs or gains against fp32 on this CPU: our encoder on itself, no peer.

On a CPU without bf16 or int8 dot-product units (an AMD EPYC with AVX2 only) the bf16 modes run emulated products
(the runtime's warnings quote these figures) and ``int8-token`` multiplies on fbgemm (before stop 57 on torch's integer
GEMM, a scalar loop there: 0.05×; ``EMBEDSTACK_INT8_PRODUCT=int_mm`` still forces it). Model:
all-MiniLM-L6-v2; texts: the first 256 unique first sentences of STS-B test; 2 threads, batch 32. Each mode and fp32
run back to back ``--repeats`` times (after one untimed run each), order rotated; the ratio is the median of the
per-run ratios (fp32's seconds over the mode's), with their range; the quality column is the mean cosine to fp32's
vectors.

Usage: python benchmarks/precision_speed.py [--repeats 5] [--modes bf16,bf16-pure,int8-smooth,int8-token]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from typing import Any

import numpy as np

from _report import interleaved, load_average, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", default="bf16,bf16-pure,int8-smooth,int8-token")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    if args.repeats < 5 and not args.no_report:
        raise SystemExit("--repeats must be at least 5 for a reported run (issue 16's protocol)")
    import torch

    from embedstack.data import load_sts
    from embedstack.index._scan import int_gemm_units
    from embedstack.neural import load
    from embedstack.neural.runtime import cpu_has_bf16

    torch.set_num_threads(2)
    logging.getLogger("embedstack").setLevel(logging.ERROR)  # the warnings this script measures
    warnings.simplefilter("ignore", UserWarning)
    texts = list(dict.fromkeys(load_sts("stsb", "test").s1))[:256]
    base = load("all-MiniLM-L6-v2")
    fp32 = base.with_options(precision="fp32")
    ref = fp32.encode(texts)
    before = load_average()
    rows: list[dict[str, Any]] = []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        enc = base.with_options(precision=mode)
        # the shared timer: one untimed run each (builds the runner: quantization, calibration), then rotated runs
        t = interleaved(lambda e=enc: e.encode(texts), lambda: fp32.encode(texts), args.repeats)
        ratios = [b / a for a, b in zip(t["runs"]["ours"], t["runs"]["theirs"], strict=True)]
        rows.append({"mode": mode, "texts_per_s": len(texts) / t["ours"], "fp32_texts_per_s": len(texts) / t["theirs"],
                     "ratio": float(np.median(ratios)), "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "cos_mean": float(np.mean(np.sum(t["out_ours"] * ref, axis=1)))})
        print(f"{mode}: {rows[-1]['ratio']:.2f}x fp32 ({min(ratios):.2f}-{max(ratios):.2f}), "
              f"cos {rows[-1]['cos_mean']:.4f}", flush=True)
    res = {"command": "python benchmarks/precision_speed.py", "texts": len(texts), "repeats": args.repeats,
           "bf16_units": cpu_has_bf16(), "int8_units": int_gemm_units(), "rows": rows,
           "load_before": before, "load_after": load_average()}
    md = markdown(res)
    print(md)
    if not args.no_report:
        write_results("precision_speed", res, md)


def markdown(res: dict[str, Any]) -> str:
    lines = ["## Each torch precision against fp32 on this CPU (`benchmarks/precision_speed.py`)", "",
             f"Reproduce: `{res['command']}` — all-MiniLM-L6-v2, {res['texts']} STS-B test sentences, 2 threads, "
             f"batch 32; median of {res['repeats']} interleaved runs per mode beside fp32 (order rotated), ratio = "
             f"the median of the per-run ratios (> 1: faster than fp32), range beside it; load average "
             f"{res['load_before']} before, {res['load_after']} after. Native bf16 units here: "
             f"{'yes' if res['bf16_units'] else 'no'}; int8 dot-product units (AVX-512 VNNI / AMX): "
             f"{'yes' if res['int8_units'] else 'no'}.", "",
             "| precision | texts/s | fp32 texts/s | × fp32 (range) | mean cosine to fp32 |", "|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['mode']} | {r['texts_per_s']:.0f} | {r['fp32_texts_per_s']:.0f} | {r['ratio']:.2f}× "
                     f"({r['ratio_min']:.2f}–{r['ratio_max']:.2f}) | {r['cos_mean']:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
