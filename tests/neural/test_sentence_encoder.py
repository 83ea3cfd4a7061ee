"""SentenceEncoder on the tiny random model: pooling, batching, bad input, persistence, streaming."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from embedstack.base import DenseEncoder
from embedstack.errors import ConfigError, FormatError, InputError
from embedstack.neural.pooling import Pooling
from embedstack.neural.sentence import SentenceEncoder

TEXTS = ["the cat sat on the mat", "a dog", "", "the quick brown fox jumps over the lazy dog", "red house"]


def test_is_a_dense_encoder_and_shapes(tiny_encoder):
    assert isinstance(tiny_encoder, DenseEncoder)
    assert tiny_encoder.encode([]).shape == (0, 16)
    out = tiny_encoder.encode(TEXTS)
    assert out.shape == (5, 16) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    with pytest.raises(InputError, match="bytes"):
        tiny_encoder.encode(b"the cat")


def test_one_string_gives_one_vector(tiny_encoder):
    # as in sentence-transformers: encode("text") is 1-D, encode(["text"]) is (1, dim)
    one = tiny_encoder.encode("the cat")
    assert one.shape == (16,) and one.dtype == np.float32
    assert np.allclose(one, tiny_encoder.encode(["the cat"])[0], atol=1e-6)


def test_progress_moves_per_batch_from_the_first_batch(tiny_encoder):
    texts = [f"the cat sat {i}" for i in range(10)]
    seen: list[int] = []
    tiny_encoder.encode(texts, batch_size=3, progress=seen.append)  # one chunk (chunk_size 8192)
    assert seen == [3, 6, 9, 10]
    seen.clear()
    tiny_encoder.with_options(workers=2).encode(texts, batch_size=4, chunk_size=5, progress=seen.append)
    assert seen == [4, 5, 9, 10]


def test_length_sorted_batches_give_the_same_vectors(tiny_encoder):
    one_by_one = np.stack([tiny_encoder.encode([t])[0] for t in TEXTS])
    batched = tiny_encoder.encode(TEXTS, batch_size=2, chunk_size=3)
    assert np.allclose(one_by_one, batched, atol=1e-5)


def test_pooling_modes_by_hand():
    tokens = torch.tensor([[[1.0, -2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert Pooling("cls")(tokens, mask).tolist() == [[1.0, -2.0]]
    assert Pooling("mean")(tokens, mask).tolist() == [[2.0, 1.0]]
    assert Pooling("max")(tokens, mask).tolist() == [[3.0, 4.0]]
    assert Pooling("mean_sqrt_len")(tokens, mask)[0].tolist() == pytest.approx([4 / 2**0.5, 2 / 2**0.5])
    with pytest.raises(ConfigError, match="pooling"):
        Pooling("median")


def test_cls_pooling_is_the_first_token(tiny_encoder):
    enc = tiny_encoder.with_options(pooling="cls", normalize=False)
    tok = enc.token_embeddings(["the cat sat"])[0]
    assert np.allclose(enc.encode(["the cat sat"])[0], tok[0], atol=1e-6)
    with pytest.raises(ConfigError, match="pooling"):
        tiny_encoder.with_options(pooling="median")


def test_truncate_dim_and_prompts(tiny_encoder):
    enc = tiny_encoder.with_options(truncate_dim=8, prompts={"query": "the ", "document": ""})
    assert enc.dim == 8 and enc.encode(["cat"]).shape == (1, 8)
    assert np.allclose(enc.encode(["cat"], role="query"), enc.encode(["the cat"]), atol=1e-6)
    with pytest.raises(ConfigError):
        enc.encode(["cat"], role="passage")
    with pytest.raises(ConfigError):
        tiny_encoder.with_options(truncate_dim=99)


def test_over_long_texts_truncated_with_one_warning(tiny_encoder):
    long = " ".join(["cat"] * 100)
    enc = tiny_encoder.with_options(max_seq_length=8)
    with pytest.warns(UserWarning, match="truncated"):
        a = enc.encode([long, "dog"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = enc.encode([" ".join(["cat"] * 6)])  # exactly 8 tokens with [CLS]/[SEP]: no warning
        enc.encode([long])  # warned already
    assert np.allclose(a[0], b[0], atol=1e-6)


def test_save_load_roundtrip_with_dense(tmp_path, tiny_encoder):
    from embedstack.neural.pooling import Dense

    torch.manual_seed(0)
    enc = tiny_encoder.with_options(dense=Dense(16, 6), pooling="max", prompts={"query": "a "},
                                    truncate_dim=4)
    enc.save(tmp_path / "m")
    back = SentenceEncoder.from_folder(tmp_path / "m")
    assert (back.pooling, back.dim, back.prompts, back.normalize) == ("max", 4, {"query": "a "}, True)
    assert np.allclose(enc.encode(TEXTS, role="query"), back.encode(TEXTS, role="query"), atol=1e-6)


def test_folder_errors(tmp_path, tiny_encoder):
    tiny_encoder.save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FormatError, match="model.safetensors"):
        SentenceEncoder.from_folder(tmp_path / "m")
    with pytest.raises(FormatError, match="does not exist"):
        SentenceEncoder.from_folder(tmp_path / "nope")


def test_out_memmap_and_streamed_iterables(tmp_path, tiny_encoder):
    ref = tiny_encoder.encode(TEXTS)
    mm = tiny_encoder.encode(TEXTS, out=tmp_path / "a.npy", chunk_size=2)
    assert np.allclose(np.load(tmp_path / "a.npy"), ref, atol=1e-6) and np.allclose(mm, ref, atol=1e-6)
    streamed = tiny_encoder.encode(iter(TEXTS), out=tmp_path / "b.npy", chunk_size=2)
    assert np.load(tmp_path / "b.npy").shape == (5, 16) and np.allclose(streamed, ref, atol=1e-6)
    assert np.allclose(tiny_encoder.encode(iter(TEXTS), chunk_size=2), ref, atol=1e-6)
    assert tiny_encoder.encode(iter([]), out=tmp_path / "c.npy").shape == (0, 16)


def test_options_are_validated(tiny_encoder):
    with pytest.raises(ConfigError, match="backend"):
        tiny_encoder.with_options(backend="tensorrt")
    with pytest.raises(ConfigError, match="precision"):
        tiny_encoder.with_options(precision="fp8")
    with pytest.raises(ConfigError, match="Unknown SentenceEncoder option"):
        tiny_encoder.with_options(colour="red")
    with pytest.raises(ConfigError):
        tiny_encoder.encode(["a"], batch_size=0)


def test_bf16_counts_only_where_the_cpu_multiplies_it_natively(monkeypatch):
    """oneDNN says "bf16 supported" on any AVX-512 CPU and emulates it at a fifth of fp32's rate there:
    precision="auto" must look at the CPU's own flags."""
    from embedstack import _threads
    from embedstack.neural import runtime

    avx512 = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"})
    monkeypatch.setattr(_threads, "cpu_features", lambda: avx512)
    assert runtime.cpu_has_bf16() is False
    monkeypatch.setattr(_threads, "cpu_features", lambda: avx512 | {"avx512_bf16"})
    assert runtime.cpu_has_bf16() is True
    monkeypatch.setattr(_threads, "cpu_features", lambda: avx512 | {"amx_bf16"})
    assert runtime.cpu_has_bf16() is True
    # flags unreadable (not Linux): torch's CPUID probes decide, not oneDNN's "supported" (yes on any AVX-512 CPU)
    monkeypatch.setattr(_threads, "cpu_features", lambda: frozenset())
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for bf16, tiles in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda b=bf16: b)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda t=tiles: t)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
        assert runtime.cpu_has_bf16() is (bf16 or tiles)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")  # ARM Linux has no "flags" line: oneDNN answers
    assert runtime.cpu_has_bf16() is True


def test_torch_bf16_agrees_with_fp32(tiny_encoder):
    ref = tiny_encoder.encode(TEXTS)
    enc = tiny_encoder.with_options(precision="bf16")
    assert enc.precision == "bf16"
    out = enc.encode(TEXTS)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert float(np.min(np.sum(out * ref, axis=1))) > 0.999
    tokens = enc.token_embeddings(TEXTS[:2])
    assert all(t.dtype == np.float32 for t in tokens)


def test_torch_bf16_pure_agrees_with_fp32_and_leaves_the_shared_weights_fp32(tiny_encoder):
    ref = tiny_encoder.encode(TEXTS)
    enc = tiny_encoder.with_options(precision="bf16-pure")
    out = enc.encode(TEXTS, batch_size=2)  # padded and unpadded batches
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert float(np.min(np.sum(out * ref, axis=1))) > 0.999
    assert all(p.dtype == torch.float32 for p in tiny_encoder.model.parameters())  # the copy is bf16, not ours
    assert np.abs(tiny_encoder.encode(TEXTS) - ref).max() == 0.0
    tokens = enc.token_embeddings(TEXTS[:2])
    assert all(t.dtype == np.float32 for t in tokens)


def test_long_batches_run_in_row_slices_with_the_same_vectors(tiny_encoder, monkeypatch):
    import embedstack.neural.runtime as runtime

    ref = tiny_encoder.with_options().encode(TEXTS, batch_size=8)
    calls: list[int] = []
    monkeypatch.setattr(runtime, "_MAX_ACTIVATION_BYTES", 1)  # one row per forward call
    enc = tiny_encoder.with_options()
    real = enc.model.forward
    monkeypatch.setattr(enc.model, "forward", lambda ids, mask=None, types=None, pack=True: (calls.append(ids.shape[0]), real(ids, mask, types, pack=pack))[1])
    out = enc.encode(TEXTS, batch_size=8)
    assert calls and max(calls) == 1 and len(calls) == len(TEXTS)
    assert np.abs(out - ref).max() < 1e-6


def test_compiled_encoder_gives_the_eager_vectors(tiny_encoder):
    ref = tiny_encoder.encode(TEXTS)
    enc = tiny_encoder.with_options(compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would fail the test
        out = enc.encode(TEXTS, batch_size=2)  # padded and unpadded batches, batch of 1 at the end
        again = enc.encode(TEXTS[:3])
    assert np.abs(out - ref).max() < 1e-5 and np.abs(again - ref[:3]).max() < 1e-5
    with pytest.raises(ConfigError, match="compile"):
        tiny_encoder.with_options(backend="onnx", compile=True)
    with pytest.raises(ConfigError, match="int8-token"):  # torch's dynamic int8 modules do not compile
        tiny_encoder.with_options(precision="int8-smooth", compile=True)


def test_compiled_int8_token_with_workers_gives_the_eager_int8_vectors(tiny_encoder):
    texts = TEXTS * 4
    eager = tiny_encoder.with_options(precision="int8-token")
    ref = eager.encode(texts, batch_size=2)
    enc = tiny_encoder.with_options(precision="int8-token", compile=True, workers=2, num_threads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would fail the test
        out = enc.encode(texts, batch_size=2)  # two workers with one thread each, a batch of 1 at the end
        one = enc.encode(TEXTS[:1])  # a single batch: the calling thread with both threads
    # the compiled graph rounds the same quantization (its fused passes may differ in the last bit before rounding)
    assert (out * ref).sum(1).min() > 0.999 and (one * ref[:1]).sum(1).min() > 0.999
    assert eager.encode(texts, batch_size=2).tobytes() == ref.tobytes()  # the eager copy kept its Q/K/V cache


def test_compiled_batch_as_wide_as_it_is_long_needs_no_graph_of_its_own(tiny_encoder):
    from torch._dynamo.utils import counters

    enc = tiny_encoder.with_options(compile=True, num_threads=1)  # one thread count: the same graph for both calls
    square = ["a b"] * 4  # 4 texts of 4 tokens ([CLS] a b [SEP])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        enc.encode(square, batch_size=4)
        before = counters["stats"]["unique_graphs"]
        enc.encode(["a b"] * 3 + ["a b c d e"] * 2, batch_size=8)  # 5 x 7: without "duck" sizing the same graph
    assert counters["stats"]["unique_graphs"] == before


def test_warm_up_compiles_every_graph_a_run_needs(tiny_encoder):
    """After warm_up no call of a run compiles for a guard that fails. One kind of recompilation is torch's own and
    is told apart: with graphs running on two threads at once, dynamo now and then finds a runtime guard failed
    that passes when it analyses why ("Unexpected recompilation: runtime guards failed even though they passed
    during recompilation-reason analysis", about one run in five under load): no graph warm_up could have made.
    A thread count warm_up did not see is the control: its recompilation is logged and counted."""
    import logging

    from torch._dynamo.utils import counters

    reasons: list[str] = []

    class Reasons(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Recompiling function" in record.getMessage():
                reasons.append(record.getMessage())

    tiny_encoder.warm_up()  # not compiled: nothing to do
    enc = tiny_encoder.with_options(compile=True, workers=2, num_threads=2)
    handler, logger = Reasons(), logging.getLogger("torch._dynamo.guards.__recompiles")
    torch._logging.set_logs(recompiles=True)
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            enc.warm_up()
            before = counters["stats"]["unique_graphs"]
            reasons.clear()
            enc.encode(TEXTS * 4 + TEXTS[:1], batch_size=2)  # two workers, one thread each; a batch of 1 at the end
            enc.encode(TEXTS[:3])  # one batch on the calling thread with both threads
            enc.encode(TEXTS[0])
            real = [m for m in reasons if "Unexpected recompilation" not in m]
            assert not real, real
            assert counters["stats"]["unique_graphs"] - before == len(reasons)
            n = len(reasons)
            threads = torch.get_num_threads()
            try:  # the control (the runner itself: encode would set the encoder's own 2 threads)
                torch.set_num_threads(3)
                with torch.inference_mode():
                    enc._torch_run(np.full((2, 8), 2), np.ones((2, 8), dtype=np.int64), None)
            finally:
                torch.set_num_threads(threads)
            assert len(reasons) == n + 1 and "num_threads" in reasons[-1]
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()
    # compiled runners pool after the join: pooling in the workers made dynamo recompile now and then
    assert not enc._get_runner().takes_head and tiny_encoder._get_runner().takes_head


def test_compiled_calls_with_a_new_signature_run_one_at_a_time(monkeypatch):
    import threading
    import time

    from embedstack.neural import runtime

    active, peak = [0], [0]
    guard = threading.Lock()
    options: list[dict] = []

    def fake_compile(model, **kwargs):
        options.append(kwargs.get("options", {}))

        def run(ids, mask, types, **first):
            with guard:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.05)
            with guard:
                active[0] -= 1
            return ids
        return run

    monkeypatch.setattr(runtime.torch, "compile", fake_compile)
    forward = runtime._compiled(object())
    ids = torch.zeros(4, 8, dtype=torch.long)
    threads = [threading.Thread(target=forward, args=(ids, None)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1  # the first calls of a signature (which compile) never overlap
    active[0] = peak[0] = 0
    threads = [threading.Thread(target=forward, args=(ids, None)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] > 1  # a known signature runs the compiled graph concurrently
    # the graph runs as one C++ function that releases the GIL (Python's wrapper holds it in every fused kernel)
    assert options == [{"freezing": True, "cpp_wrapper": True}]


def test_workers_never_exceed_the_callers_threads(tiny_encoder, monkeypatch):
    from embedstack.neural import runtime

    pools: list[int] = []
    real = runtime.ThreadPoolExecutor
    monkeypatch.setattr(runtime, "ThreadPoolExecutor", lambda n, **kw: (pools.append(n), real(n, **kw))[1])
    ref = tiny_encoder.encode(TEXTS * 3, batch_size=2)
    # a server's batch on one thread: two workers would put two compute threads where the caller allowed one
    out = tiny_encoder.with_options(workers=2, num_threads=1).encode(TEXTS * 3, batch_size=2)
    assert pools == [] and np.abs(out - ref).max() < 1e-6
    tiny_encoder.with_options(workers=2, num_threads=2).encode(TEXTS * 3, batch_size=2)
    assert pools == [2]


def test_one_big_batch_runs_as_slices_on_the_workers(tiny_encoder, monkeypatch):
    """A single batch of at least _SPLIT_TOKENS padded tokens with workers=2 on 2 threads: even slices, one on
    each worker thread (one thread each), the same vectors in the same order as the whole batch."""
    from embedstack.neural import runtime

    texts = [" ".join(TEXTS[i % len(TEXTS)] for i in range(k, k + 2 + k % 9)) for k in range(80)]  # 80 rows, 8-50 tokens
    ref = tiny_encoder.with_options(num_threads=2).encode(texts, batch_size=80)
    monkeypatch.setattr(runtime.TransformerRuntime, "split_tokens", 256)
    seen: list[tuple[int, int]] = []
    inner: list[int] = []
    shares: list[tuple[int, int]] = []
    real = runtime.TransformerRuntime._on_workers

    def spy(self, fn, items, workers, per_worker):
        seen.append((len(items), workers))

        def counted(item):
            inner.append(torch.get_num_threads())
            shares.append(item)
            return fn(item)

        return real(self, counted, items, workers, per_worker)

    monkeypatch.setattr(runtime.TransformerRuntime, "_on_workers", spy)
    out = tiny_encoder.with_options(workers=2, num_threads=2).encode(texts, batch_size=80)
    assert seen and seen[0][1] == 2 and seen[0][0] % 2 == 0  # an even number of slices over 2 workers
    assert set(inner) == {1}  # each slice on one thread
    # contiguous runs of rows covering the batch, cut at equal real tokens (the rows come longest first)
    spans = sorted(shares)
    assert spans[0][0] == 0 and spans[-1][1] == len(texts) and all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert spans[0][1] - spans[0][0] < spans[-1][1] - spans[-1][0]  # longest rows: fewer
    assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-6
    seen.clear()
    tiny_encoder.with_options(workers=2, num_threads=1).encode(texts, batch_size=80)  # one thread: never split
    assert seen == []
    whole = tiny_encoder.with_options(workers=2, num_threads=2)
    whole.split_tokens = 10**9
    whole.encode(texts, batch_size=80)  # under the bar: whole
    assert seen == []


def test_workers_give_the_same_vectors_in_order(tiny_encoder):
    ref = tiny_encoder.encode(TEXTS * 3, batch_size=2)
    for enc in (tiny_encoder.with_options(workers=2, num_threads=2),
                tiny_encoder.with_options(workers=3, precision="bf16")):
        out = enc.encode(TEXTS * 3, batch_size=2)
        tol = 1e-6 if enc.precision == "fp32" else 1e-2
        assert out.shape == ref.shape and np.abs(out - ref).max() < tol
    calls: list[int] = []
    real = torch.set_num_threads
    enc = tiny_encoder.with_options(workers=2, num_threads=2)
    before = torch.get_num_threads()
    real(2)  # other tests may leave the process at 1 thread; then restoring it would be a call with 1
    try:
        torch.set_num_threads = lambda n: (calls.append(n), real(n))[1]
        enc.encode(TEXTS[:2], batch_size=8)  # a single batch keeps both threads
    finally:
        torch.set_num_threads = real
        real(before)
    assert 1 not in calls
    with pytest.raises(ConfigError, match="workers"):
        tiny_encoder.with_options(workers=0)
    with pytest.raises(ConfigError, match="workers"):  # a typed error, not a TypeError from a comparison
        tiny_encoder.with_options(workers="two")
    with pytest.raises(ConfigError, match="num_threads"):
        tiny_encoder.with_options(num_threads=0)
    with pytest.raises(ConfigError, match="workers"):
        tiny_encoder.with_options(backend="onnx", workers=2)


@pytest.mark.parametrize("recipe", ["int8", "int8-fast", "int8-smooth", "int8-bf16", "int8-token", "int8-dynamic"])
def test_torch_int8_runs(tiny_encoder, recipe):
    ref = tiny_encoder.encode(TEXTS)
    q = tiny_encoder.with_options(precision=recipe).encode(TEXTS)
    assert q.shape == ref.shape and float(np.mean(np.sum(q * ref, axis=1))) > 0.9


def test_torch_int8_recipes_pick_their_layers(tiny_encoder):
    import torch

    from embedstack.neural.quantize import quantize_torch_dynamic

    def int8_layers(recipe):
        model = quantize_torch_dynamic(tiny_encoder.model, recipe)
        return {n for n, m in model.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)}

    linear = {n for n, m in tiny_encoder.model.named_modules() if isinstance(m, torch.nn.Linear)}
    attention = int8_layers("int8")
    assert attention and all("attention" in n for n in attention)
    assert int8_layers("int8-dynamic") == linear
    fast = int8_layers("int8-fast")
    assert attention < fast < linear and all(n.endswith("output.dense") and "attention" not in n for n in linear - fast)
    with pytest.raises(ConfigError, match="recipe"):
        quantize_torch_dynamic(tiny_encoder.model, "int4")


def test_smoothed_linear_is_the_same_function():
    import torch

    from embedstack.neural.quantize import SmoothedLinear

    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 8)
    scale = torch.rand(16) * 10 + 0.1
    x = torch.randn(5, 16)
    torch.testing.assert_close(SmoothedLinear(lin, scale)(x), lin(x), rtol=1e-5, atol=1e-5)


def test_int8_smooth_calibrates_on_the_vocabulary_and_quantizes_int8_fast_layers(tiny_encoder):
    import torch

    from embedstack.neural.quantize import SmoothedLinear, calibration_batches, quantize_torch_dynamic

    tok = tiny_encoder.tokenizer
    cap = tiny_encoder.model.config.max_position_embeddings
    a, b = calibration_batches(tok, max_length=cap), calibration_batches(tok, max_length=cap)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # deterministic
    words = {i for w, i in tok.tokenizer.get_vocab().items() if w.isalpha() and not w.startswith("##") and len(w) > 1}
    for ids in a:
        assert (ids[:, 0] == tok.cls_id).all() and (ids[:, -1] == tok.sep_id).all()
        assert set(ids[:, 1:-1].flatten().tolist()) <= words
    q = quantize_torch_dynamic(tiny_encoder.model, "int8-smooth", calibration=a)
    smoothed = {n for n, m in q.named_modules() if isinstance(m, SmoothedLinear)}
    fast = {n for n, m in quantize_torch_dynamic(tiny_encoder.model, "int8-fast").named_modules()
            if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)}
    int8 = {n for n, m in q.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)}
    assert smoothed and int8 == {f"{n}.linear" for n in smoothed} | (fast - smoothed)
    assert fast - smoothed <= {"pooler.dense"}  # never run by the forward pass: nothing to calibrate
    assert isinstance(tiny_encoder.model.encoder.layer[0].attention.self.query, torch.nn.Linear)  # not modified
    with pytest.raises(ConfigError, match="calibration"):
        quantize_torch_dynamic(tiny_encoder.model, "int8-smooth")


def test_int8_bf16_is_int8_smooth_with_its_float_layers_in_bf16(tiny_encoder):
    import torch

    from embedstack.neural.quantize import (
        Bf16Linear,
        SmoothedLinear,
        calibration_batches,
        quantize_torch_dynamic,
    )

    cal = calibration_batches(tiny_encoder.tokenizer, max_length=tiny_encoder.model.config.max_position_embeddings)

    def kinds(recipe):
        model = quantize_torch_dynamic(tiny_encoder.model, recipe, calibration=cal)
        labels = {torch.nn.Linear: "float", torch.ao.nn.quantized.dynamic.Linear: "int8", SmoothedLinear: "smoothed",
                  Bf16Linear: "Bf16Linear"}
        return {n: labels[type(m)] for n, m in model.named_modules() if type(m) in labels}

    smooth, mixed = kinds("int8-smooth"), kinds("int8-bf16")
    float_layers = {n for n, k in smooth.items() if k == "float"}
    ffn_out = {n for n in float_layers if n.endswith("output.dense") and "attention" not in n}
    assert ffn_out and float_layers == ffn_out  # int8-smooth keeps exactly the feed-forward outputs in float
    assert {n for n, k in mixed.items() if k == "Bf16Linear"} == float_layers
    assert {n: k for n, k in mixed.items() if n not in float_layers} == {n: k for n, k in smooth.items() if n not in float_layers}
    assert isinstance(tiny_encoder.model.encoder.layer[0].output.dense, torch.nn.Linear)  # the original is untouched

    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 8)
    x = torch.randn(4, 32)
    layer = Bf16Linear(lin)
    assert layer.weight.dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
    y = layer(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, lin(x), rtol=2e-2, atol=2e-2)  # bf16 rounding of inputs and weights


def _fbgemm() -> bool:
    import torch

    return "fbgemm" in torch.backends.quantized.supported_engines


needs_fbgemm = pytest.mark.skipif(not _fbgemm(), reason="this torch build has no fbgemm engine (x86 only)")
PRODUCTS = ["int_mm", pytest.param("fbgemm", marks=needs_fbgemm)]


@pytest.mark.parametrize("product", PRODUCTS)
def test_row_int8_linear_quantizes_each_row_with_its_own_scale(product):
    import torch

    from embedstack.neural.quantize import FBGEMM_LEVELS, FBGEMM_WEIGHT_LEVELS, RowInt8Linear, _RowQuantizer

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 24)
    x = torch.randn(6, 64)
    x[0] *= 1000.0  # one row of huge activations: a scale per batch would leave the others a level or two
    smooth = torch.rand(64) * 4 + 0.25
    layer = RowInt8Linear(lin, _RowQuantizer(1.0 / smooth, product=product), smooth)
    assert layer.qweight.dtype == torch.int8
    assert (layer.packed is not None) == (product == "fbgemm")
    # fbgemm: 7-bit weights, so that AVX2's 16-bit pair sums of u8 x s8 products cannot saturate
    w_levels = 127 if product == "int_mm" else FBGEMM_WEIGHT_LEVELS
    levels = 127 if product == "int_mm" else FBGEMM_LEVELS
    assert layer.qweight.abs().max() == w_levels
    if product == "fbgemm":  # u8 activations 0..255 (zero point 128), pairs of products summed in 16 bits
        assert 2 * (2 * levels + 1) * w_levels <= 32767
    with torch.no_grad():
        y, ref = layer(x), lin(x)
    assert y.dtype == torch.float32 and y.shape == (6, 24)
    # every row, the small ones included, within a few % of its own size; one scale for the batch would
    # round the small rows to next to nothing
    err = (y - ref).norm(dim=1) / ref.norm(dim=1)
    assert float(err.max()) < (0.08 if product == "int_mm" else 0.12), err
    s_batch = (x / smooth).abs().max() / 127
    w = lin.weight.detach() * smooth
    ws = w.abs().amax(1) / w_levels
    per_batch = ((x / smooth / s_batch).round() @ (w / ws[:, None]).round().T) * s_batch * ws + lin.bias.detach()
    assert float(((per_batch - ref).norm(dim=1) / ref.norm(dim=1))[1:].min()) > 0.5
    # the same by hand: per-row scales of the smoothed input, per-channel weight scales, int32 sums
    xs = x / smooth
    s = xs.abs().amax(1, keepdim=True) / levels
    q = (xs / s).round()
    assert q.abs().max() == levels
    by_hand = (q @ (w / ws[:, None]).round().T) * s * ws + lin.bias.detach()
    torch.testing.assert_close(y, by_hand, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        y3 = layer(x.view(2, 3, 64))  # any leading shape
    torch.testing.assert_close(y3, y.view(2, 3, 24))

    from embedstack.neural.quantize import quantize_rows

    before = x.clone()
    q, s = quantize_rows(x)  # no smoothing: the input is still left as it was
    assert torch.equal(x, before) and q.dtype == torch.int8 and s.shape == (6, 1)
    torch.testing.assert_close(q.float() * s, x, rtol=0, atol=float(s.max()) / 2 + 1e-6)


@needs_fbgemm
def test_fbgemm_outlier_channels_stay_float_and_set_no_scale():
    import copy

    import torch

    from embedstack.neural.quantize import RowInt8Linear, _RowQuantizer, scale_rows

    torch.manual_seed(1)
    lin = torch.nn.Linear(48, 16)
    x = torch.randn(5, 48)
    out = torch.tensor([3, 40])
    x[:, out] *= 200.0  # two channels far above the rest, as GELU's outliers are
    plain = RowInt8Linear(lin, _RowQuantizer(None, product="fbgemm"))
    split = RowInt8Linear(lin, _RowQuantizer(None, product="fbgemm", outliers=out))
    assert split.wout.shape == (2, 16) and torch.equal(split.qweight[:, out], torch.zeros(16, 2, dtype=torch.int8))
    with torch.no_grad():
        ref, y_plain, y_split = lin(x), plain(x), split(x)
    err = lambda y: float(((y - ref).norm(dim=1) / ref.norm(dim=1)).max())  # noqa: E731
    assert err(y_split) < err(y_plain) / 5, (err(y_split), err(y_plain))
    rows, scale, kept = scale_rows(x, None, 127, out)
    torch.testing.assert_close(kept, x[:, out])
    assert torch.all(rows[:, out] == 0) and rows.abs().amax(1).allclose(torch.full((5,), 127.0))
    torch.testing.assert_close(scale[:, 0], x[:, [i for i in range(48) if i not in (3, 40)]].abs().amax(1) / 127)
    twin = copy.deepcopy(split)  # the runtime copies models: packed weights shared, buffers and quantizer copied
    assert twin.packed is split.packed and twin.quantizer is not split.quantizer
    assert twin.wout is not split.wout and twin.qweight.data_ptr() != split.qweight.data_ptr()
    assert torch.equal(twin.quantizer.outliers, out) and torch.equal(twin(x), y_split)
    fired = []
    twin.register_forward_hook(lambda *a: fired.append(1))  # the copy's hooks are its own
    split(x)
    assert not fired
    with pytest.raises(ConfigError, match="fbgemm"):  # float outlier channels exist only on the fbgemm product
        RowInt8Linear(lin, _RowQuantizer(None, product="int_mm", outliers=out))


@needs_fbgemm
def test_fbgemm_product_does_not_saturate_at_the_largest_codes():
    import torch

    from embedstack.neural.quantize import RowInt8Linear, _RowQuantizer

    # every activation and weight at its largest code, same sign: AVX2's u8 x s8 pairs would reach 2 x 255 x 127 =
    # 64,770 with 8-bit weights and clip at 32,767 in 16 bits; with 63 weight levels they reach 32,130
    lin = torch.nn.Linear(256, 4, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.5)
        lin.weight[1].fill_(-0.5)
    x = torch.full((3, 256), 2.0)
    x[1] = -2.0
    layer = RowInt8Linear(lin, _RowQuantizer(None, product="fbgemm"))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), lin(x), rtol=1e-5, atol=1e-3)


@needs_fbgemm
def test_int8_product_follows_the_cpu_unless_forced(monkeypatch, tiny_encoder):
    from embedstack.index import _scan
    from embedstack.neural import quantize

    monkeypatch.delenv("EMBEDSTACK_INT8_PRODUCT", raising=False)
    for units, product in ((True, "int_mm"), (False, "fbgemm")):
        monkeypatch.setattr(_scan, "int_gemm_units", lambda u=units: u)
        assert quantize.int8_product() == product
    monkeypatch.setenv("EMBEDSTACK_INT8_PRODUCT", "int_mm")
    assert quantize.int8_product() == "int_mm"
    monkeypatch.setenv("EMBEDSTACK_INT8_PRODUCT", "vnni")
    with pytest.raises(ConfigError, match="EMBEDSTACK_INT8_PRODUCT"):
        quantize.int8_product()
    with pytest.raises(ConfigError, match="EMBEDSTACK_INT8_PRODUCT"):  # refused when the encoder is made
        tiny_encoder.with_options(precision="int8-token")
    monkeypatch.setenv("EMBEDSTACK_INT8_PRODUCT", "fbgemm")
    assert tiny_encoder.with_options(precision="int8-token").int8_product == "fbgemm"
    assert tiny_encoder.with_options(precision="int8-smooth").int8_product is None


@pytest.mark.parametrize("product", PRODUCTS)
def test_query_key_value_share_one_quantization_per_input(tiny_encoder, monkeypatch, product):
    import copy
    import threading

    import torch

    from embedstack.neural.quantize import (
        RowInt8Linear,
        _RowQuantizer,
        calibration_batches,
        quantize_torch_dynamic,
    )

    monkeypatch.setenv("EMBEDSTACK_INT8_PRODUCT", product)

    cal = calibration_batches(tiny_encoder.tokenizer, max_length=tiny_encoder.model.config.max_position_embeddings)
    model = quantize_torch_dynamic(tiny_encoder.model, "int8-token", calibration=cal)
    rows = {n: m for n, m in model.named_modules() if isinstance(m, RowInt8Linear)}
    linear = {n for n, m in tiny_encoder.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(rows) == linear - {"pooler.dense"}  # every Linear the forward pass reaches, the FFN output included
    att = model.encoder.layer[0].attention.self
    assert att.query.quantizer is att.key.quantizer is att.value.quantizer
    assert att.query.quantizer.product == product and (att.query.packed is not None) == (product == "fbgemm")
    ffn_out = model.encoder.layer[0].output.dense.quantizer.outliers  # fbgemm: the feed-forward output's outliers
    assert (ffn_out is None) == (product == "int_mm") and att.query.quantizer.outliers is None
    assert model.encoder.layer[0].output.dense.quantizer is not att.query.quantizer
    assert isinstance(tiny_encoder.model.encoder.layer[0].attention.self.query, torch.nn.Linear)  # not modified

    calls = []
    real = _RowQuantizer._quantize
    x = torch.randn(5, tiny_encoder.model.config.hidden_size)
    with torch.inference_mode():
        x_inf = x.clone()
    try:
        _RowQuantizer._quantize = lambda self, x: calls.append(1) or real(self, x)
        for inp in (x, x_inf):
            calls.clear()
            outs = [att.query(inp), att.key(inp), att.value(inp)]
            assert len(calls) == 1 and all(o.shape == inp.shape for o in outs)  # quantized once for the three
            assert att.query.quantizer._last.item is None  # let go after the third reader: no input kept alive
        calls.clear()
        att.query(x.clone())  # a new tensor (the same values) is quantized again
        assert len(calls) == 1
        att.query(x)
        x.add_(1.0)  # changed in place: not served from the cache
        calls.clear()
        att.key(x)
        assert len(calls) == 1
        calls.clear()
        layer = model.encoder.layer[0].output.dense  # a quantizer with one reader caches nothing
        layer(torch.randn(3, layer.in_features))
        layer(torch.randn(3, layer.in_features))
        assert len(calls) == 2 and getattr(layer.quantizer._last, "item", None) is None
    finally:
        _RowQuantizer._quantize = real

    # two threads on one model (workers=2) keep their own last input
    out = {}

    def run(i, t):
        out[i] = [att.query(t), att.key(t)]

    ts = [torch.randn(7, x.shape[1]) for _ in range(2)]
    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(ts)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i, t in enumerate(ts):
        torch.testing.assert_close(out[i][0], att.query(t.clone()))
        torch.testing.assert_close(out[i][1], att.key(t.clone()))
    copied = copy.deepcopy(model)  # the runtime copies models; the shared quantizer stays shared in the copy
    catt = copied.encoder.layer[0].attention.self
    assert catt.query.quantizer is catt.key.quantizer and catt.query.quantizer is not att.query.quantizer

    from embedstack.neural.quantize import share_quantization_in_graph

    y = att.value(x)
    assert share_quantization_in_graph(copied) is copied  # for torch.compile: each layer quantizes its input itself
    assert all(m.quantizer.readers == 1 for m in copied.modules() if isinstance(m, RowInt8Linear))
    assert att.query.quantizer.readers == 3  # the model it was copied from keeps its shared cache
    calls.clear()
    try:
        _RowQuantizer._quantize = lambda self, x: calls.append(1) or real(self, x)
        torch.testing.assert_close(catt.value(x), y)  # same values, no cache
        catt.value(x)
        assert len(calls) == 2 and getattr(catt.value.quantizer._last, "item", None) is None
    finally:
        _RowQuantizer._quantize = real


def test_bf16_precisions_warn_on_a_cpu_without_bf16(tiny_encoder, monkeypatch, caplog):
    from embedstack.neural import runtime

    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    for precision, slower in (("bf16-pure", "slower than fp32"), ("int8-bf16", "slower than int8-smooth")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="embedstack.neural.runtime"):
            tiny_encoder.with_options(precision=precision)
        assert any(precision in r.getMessage() and slower in r.getMessage() for r in caplog.records), caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="embedstack.neural.runtime"):
        tiny_encoder.with_options(precision="int8-smooth")
    assert not caplog.records


def test_int8_token_warns_on_a_cpu_without_int8_units(tiny_encoder, monkeypatch, caplog):
    from embedstack.index import _scan

    # without the units int8-token multiplies on fbgemm (no warning) unless EMBEDSTACK_INT8_PRODUCT forces _int_mm;
    # bf16-int8-ffn is refused there instead (test_int8_ffn.py)
    precision = "int8-token"
    for units, forced, warned in ((False, "", False), (False, "int_mm", True), (True, "", False)):
        monkeypatch.setattr(_scan, "int_gemm_units", lambda u=units: u)
        monkeypatch.setenv("EMBEDSTACK_INT8_PRODUCT", forced)
        caplog.clear()
        with caplog.at_level("WARNING", logger="embedstack.neural.runtime"):
            enc = tiny_encoder.with_options(precision=precision)
        assert any(precision in r.getMessage() and "VNNI" in r.getMessage() for r in caplog.records) == warned
    assert enc.encode(TEXTS).shape[0] == len(TEXTS)
    for units, warned in ((False, True), (True, False)):  # compiled on fbgemm measured slower than eager
        monkeypatch.setattr(_scan, "int_gemm_units", lambda u=units: u)
        caplog.clear()
        with caplog.at_level("WARNING", logger="embedstack.neural.runtime"):
            tiny_encoder.with_options(precision=precision, compile=True)
        assert any("drop compile" in r.getMessage() for r in caplog.records) == warned, caplog.text


def test_int8_smooth_keeps_minilm_closer_to_fp32_than_int8_fast(minilm):
    texts = [f"{a} {b} the {c}" for a in ("A man", "The woman", "Two dogs", "A child") for b in
             ("is playing", "rides", "cooks", "reads") for c in ("guitar", "bicycle", "dinner", "newspaper")]
    ref = minilm.with_options(precision="fp32").encode(texts)
    cos = {r: float(np.mean(np.sum(minilm.with_options(precision=r).encode(texts) * ref, axis=1)))
           for r in ("int8-fast", "int8-smooth", "int8-bf16", "int8-token")}
    assert cos["int8-smooth"] > cos["int8-fast"] and cos["int8-smooth"] > 0.995, cos
    assert cos["int8-bf16"] > 0.995, cos  # the feed-forward output in bf16 costs next to nothing
    from embedstack.neural.quantize import int8_product

    # a scale per token, every Linear in int8 (on fbgemm: 7-bit weights, the feed-forward output's outlier channels
    # in float32)
    assert cos["int8-token"] > cos["int8-smooth"], (cos, int8_product())


def test_streaming_pulls_one_chunk_at_a_time(tmp_path, tiny_encoder):
    pulled = []

    def texts():
        for i in range(50):
            pulled.append(i)
            yield "the cat sat" if i % 2 else "a dog"

    seen_at_progress = []
    out = tiny_encoder.encode(texts(), out=tmp_path / "s.npy", chunk_size=8,
                              progress=lambda n: seen_at_progress.append((n, len(pulled))))
    assert out.shape == (50, 16)
    # when a chunk is done, at most one more chunk has been read: memory is bounded by chunk_size
    assert all(read - done <= 8 for done, read in seen_at_progress)
    assert seen_at_progress[-1][0] == 50


def test_compiled_forward_passes_our_errors_through_without_falling_back():
    from embedstack.neural.runtime import _compiled

    def too_long(ids, mask, types=None):
        raise ConfigError("Sequence of 600 tokens exceeds max_position_embeddings=512")

    forward = _compiled(too_long)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a "compile failed, encoding eagerly" warning fails
        with pytest.raises(ConfigError, match="max_position_embeddings"):
            forward(torch.zeros(1, 2, dtype=torch.long), None)


def test_a_query_runs_on_the_calling_thread(tiny_encoder, monkeypatch):
    if torch.get_num_threads() < 2:
        torch.set_num_threads(2)
    if torch.get_num_threads() < 2:
        pytest.skip("torch runs one thread here")
    default = torch.get_num_threads()
    seen: list[int] = []
    inner = SentenceEncoder._embed_ids

    def spy(self, ids, batch_size, on_batch=None):
        seen.append(torch.get_num_threads())
        return inner(self, ids, batch_size, on_batch)

    monkeypatch.setattr(SentenceEncoder, "_embed_ids", spy)
    tiny_encoder.encode("the cat", role="query")
    tiny_encoder.encode([f"the cat {i}" for i in range(20)])
    tiny_encoder.with_options(num_threads=2).encode(["the cat"])
    tiny_encoder.encode(["a long abstract about the cat " * 40])
    # one query: 1 thread; a batch: the default; an explicit setting wins; one long text is not small work
    assert seen == [1, default, 2, default]
    assert torch.get_num_threads() == default


def test_balanced_cuts_split_rows_at_equal_tokens():
    from embedstack.neural.runtime import balanced_cuts

    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 40))
        lengths = np.sort(rng.integers(1, 512, size=n))[::-1]
        parts = int(rng.integers(1, n + 1))
        cuts = balanced_cuts(lengths, parts)
        assert cuts[0] == 0 and cuts[-1] == n and len(cuts) == parts + 1
        assert all(b > a for a, b in zip(cuts, cuts[1:], strict=False))  # every run has a row
        sums = [int(lengths[a:b].sum()) for a, b in zip(cuts, cuts[1:], strict=False)]
        if parts == 2 and n >= 2:  # two runs: no other contiguous cut is closer to even
            best = min(abs(int(lengths[:c].sum()) - int(lengths[c:].sum())) for c in range(1, n))
            assert abs(sums[0] - sums[1]) == best
