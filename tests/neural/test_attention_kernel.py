"""embedstack's own attention kernel (``neural/_attention.c``): the same values as torch's, every path that uses it,
the AVX2 build where there is no AVX-512, and torch's kernel wherever it cannot run (neither, no compiler, switched
off)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from embedstack._threads import cpu_features
from embedstack.neural import _attention
from embedstack.neural.config import BertConfig
from embedstack.neural.transformer import BertModel

needs_kernel = pytest.mark.skipif(not _attention.available(),
                                  reason=f"the attention kernel does not run here: {_attention.status()}")
needs_bf16_kernel = pytest.mark.skipif(
    not _attention.supports(torch.zeros(1, dtype=torch.bfloat16), 32),
    reason=f"the attention kernel takes no bfloat16 states here: {_attention.status()}")


@pytest.fixture(params=["native", "avx2"])
def build(request, monkeypatch, tmp_path_factory):
    """The kernel this CPU builds, and (where that is the AVX-512 one) the AVX2 build too, forced: an AVX-512 CPU
    runs AVX2 code, so both builds' tiles are checked wherever the richer one is."""
    if request.param == "avx2":
        if _attention.status() == "embedstack (avx2)":
            pytest.skip("the native build is the AVX2 one")
        if not (cpu_features() >= _attention._AVX2_NEEDS and _attention._compiler()):
            pytest.skip("no AVX2 and FMA, or no C compiler")
        monkeypatch.setattr(_attention, "_state", {"lib": None, "why": None, "checked": False})
        monkeypatch.setattr("embedstack._threads.cpu_features", lambda: frozenset({"avx", "avx2", "fma"}))
        monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "avx2-build"))
        assert _attention.status() == "embedstack (avx2)", _attention.status()
    return request.param


def _reference(q, k, v, mask, heads):
    """softmax(Q Kᵀ / sqrt(D)) V in float64, (B, T, C) layout; rows with no key to attend to are zeros."""
    B, Tq, C = q.shape
    D = C // heads

    def split(t):
        return t.double().view(B, t.shape[1], heads, D).transpose(1, 2)

    s = split(q) @ split(k).transpose(-2, -1) / math.sqrt(D)
    if mask is not None:
        s = s.masked_fill(~mask[:, None, None, :], -math.inf)
    w = torch.nan_to_num(s.softmax(-1))  # a fully masked row: nan -> 0
    return (w @ split(v)).transpose(1, 2).reshape(B, Tq, C)


@needs_kernel
@pytest.mark.parametrize("dim", [16, 32, 48, 64, 128])
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_kernel_equals_the_formula(dim, threads, build):
    """Shapes around every tile edge (AVX-512: 12 query rows, 32 keys; AVX2: 6 and 16), masks with right padding and
    with holes."""
    torch.manual_seed(dim)
    heads, B = 3, 5
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for T in (1, 5, 6, 7, 12, 13, 16, 17, 31, 33, 70):
            q, k, v = (torch.randn(B, T, heads * dim) * 2 for _ in range(3))
            lengths = torch.tensor([T, 1, max(1, T // 2), T, max(1, T - 1)])
            prefix = torch.arange(T)[None, :] < lengths[:, None]
            holes = prefix.clone()
            holes[3, 1::3] = False  # keys missing in the middle (first key kept)
            for mask in (None, prefix, holes):
                got = _attention.attention(q, k, v, mask, heads)
                assert got.dtype == torch.float32 and got.shape == q.shape
                torch.testing.assert_close(got.double(), _reference(q, k, v, mask, heads), atol=2e-5, rtol=1e-5)
    finally:
        torch.set_num_threads(before)


@needs_kernel
def test_a_row_with_nothing_to_attend_to_gets_zeros(build):
    q, k, v = (torch.randn(2, 5, 64) for _ in range(3))
    mask = torch.tensor([[True] * 5, [False] * 5])
    got = _attention.attention(q, k, v, mask, 2)
    assert torch.isfinite(got).all()
    assert got[1].abs().max() == 0
    torch.testing.assert_close(got[0].double(), _reference(q, k, v, mask, 2)[0], atol=2e-5, rtol=1e-5)


@needs_bf16_kernel
@pytest.mark.parametrize("dim", [32, 64])
def test_bfloat16_kernel_is_as_close_to_the_formula_as_torchs(dim):
    """bf16 states (the tile unit where the CPU has AMX): error against the float64 formula on the same bf16
    inputs no larger than torch's bf16 kernel's, plus a little."""
    torch.manual_seed(1)
    heads, B, T = 4, 3, 45
    q, k, v = ((torch.randn(B, T, heads * dim) * 2).bfloat16() for _ in range(3))
    mask = torch.arange(T)[None, :] < torch.tensor([T, 20, 33])[:, None]
    ref = _reference(q, k, v, mask, heads)
    got = _attention.attention(q, k, v, mask, heads)
    assert got.dtype == torch.bfloat16

    def split(t):
        return t.view(B, T, heads, dim).transpose(1, 2)

    torch_bf16 = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask[:, None, None, :])
    torch_bf16 = torch_bf16.transpose(1, 2).reshape(B, T, heads * dim)
    real = mask[:, :, None].expand_as(ref)  # padded query rows: both attend the same keys, compare anyway
    ours_err = (got.double() - ref)[real].abs().max().item()
    torch_err = (torch_bf16.double() - ref)[real].abs().max().item()
    assert ours_err <= 1.5 * torch_err + 1e-3, (ours_err, torch_err)


@needs_bf16_kernel
@pytest.mark.parametrize("dim", [32, 64])
def test_bfloat16_kernel_with_holes_in_the_mask_and_a_text_with_no_keys(dim):
    """Keys masked in the middle (the masked softmax loops), lengths across several blocks of 32 keys and none at
    all: the tile kernel's weights come from its exponent table and its sums from the tile unit, so check them
    against the float64 formula, on average and at worst, beside torch's bf16 kernel on the same inputs."""
    torch.manual_seed(2)
    heads, B, T = 2, 4, 77
    q, k, v = ((torch.randn(B, T, heads * dim) * 2).bfloat16() for _ in range(3))
    mask = torch.rand(B, T) > 0.3
    mask[1] = False  # nothing to attend to: zeros
    mask[2, 40:] = False
    ref = _reference(q, k, v, mask, heads)
    got = _attention.attention(q, k, v, mask, heads)
    assert torch.isfinite(got).all() and got[1].abs().max() == 0

    def split(t):
        return t.view(len(t), T, heads, dim).transpose(1, 2)

    keep = torch.tensor([0, 2, 3])
    torch_bf16 = F.scaled_dot_product_attention(split(q[keep]), split(k[keep]), split(v[keep]),
                                                attn_mask=mask[keep][:, None, None, :])
    torch_bf16 = torch_bf16.transpose(1, 2).reshape(len(keep), T, heads * dim).double()
    ours = (got[keep].double() - ref[keep]).abs()
    theirs = (torch_bf16 - ref[keep]).abs()
    assert ours.max().item() <= 1.5 * theirs.max().item() + 1e-3
    assert ours.mean().item() <= 1.5 * theirs.mean().item()


needs_bf16_dot = pytest.mark.skipif(not (_attention.available() and _attention._state["bf16_dot"]),
                                    reason="no AVX-512 BF16 dot-product attention kernel here (it needs AVX-512 BF16 "
                                           "and VBMI without AMX)")


@needs_bf16_dot
@pytest.mark.parametrize("dim", [32, 64])
@pytest.mark.parametrize("threads", [1, 2])
def test_bf16_dot_kernel_is_as_close_to_the_formula_as_the_widened_one(dim, threads, monkeypatch):
    """The dot-product kernel (P's weights rounded to bf16, as on the tiles) against the float32 kernel on the same
    bf16 states, widened: shapes around every block edge (12 query rows, 6 at head dim 64; 32 keys), masks with right
    padding, with holes and with nothing to attend to; its error from the float64 formula no more than a little above
    the widened kernel's, at worst and on average."""
    torch.manual_seed(dim + threads)
    heads, B = 3, 5
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    for T in (1, 5, 6, 7, 12, 13, 25, 31, 32, 33, 70):
        q, k, v = ((torch.randn(B, T, heads * dim) * 2).bfloat16() for _ in range(3))
        lengths = torch.tensor([T, 1, max(1, T // 2), T, max(1, T - 1)])
        for holes in (False, True):
            mask = torch.arange(T)[None, :] < lengths[:, None]
            if holes:
                mask[3, 1::3] = False
                mask[1] = False  # a text with nothing to attend to: zeros
            ref = _reference(q, k, v, mask, heads)
            dot = _attention.attention(q, k, v, mask, heads)
            monkeypatch.setitem(_attention._state, "bf16_dot", False)
            widened = _attention.attention(q, k, v, mask, heads)
            monkeypatch.setitem(_attention._state, "bf16_dot", True)
            assert dot.dtype == torch.bfloat16 and torch.isfinite(dot).all()
            if holes:
                assert dot[1].abs().max() == 0
            ours, theirs = (dot.double() - ref).abs(), (widened.double() - ref).abs()
            assert ours.max().item() <= 1.5 * theirs.max().item() + 2e-3, (T, ours.max(), theirs.max())
            assert ours.mean().item() <= 1.3 * theirs.mean().item() + 1e-5, (T, ours.mean(), theirs.mean())


def _raw_cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            return next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        return set()


@needs_kernel
@pytest.mark.skipif(not _raw_cpu_flags() >= _attention._AMX_NEEDS, reason="this CPU lacks what the AMX build needs")
def test_a_cpu_with_amx_loads_the_tile_kernel():
    """Every flag the AMX build needs is one that cpu_features reads: where /proc/cpuinfo lists them all, the AMX
    build is the one that loads (a flag missing from cpu_features once dropped it to the AVX-512 build silently)."""
    from embedstack._threads import cpu_features

    assert cpu_features() >= _attention._AMX_NEEDS
    if "amx" not in _attention.status():  # the flags are read: only the build or the kernel may refuse (old gcc)
        try:
            _attention._build(_attention._FLAGS + _attention._AMX_FLAGS)
        except Exception as exc:  # noqa: BLE001 - whatever the compiler says is the reason to skip
            pytest.skip(f"this compiler cannot build the AMX kernel: {exc}")
        assert "amx" in _attention.status(), _attention.status()


@needs_kernel
def test_supports_reads_only_what_loading_stored(monkeypatch):
    """Compiled graphs trace supports(): once the library is loaded it must not call cpu_features() (an lru_cache
    that dynamo warned about tracing, on every bf16 graph of a CPU without AMX) and its answer stays the same."""
    bf16, fp32 = torch.zeros(1, dtype=torch.bfloat16), torch.zeros(1)
    before = [_attention.supports(t, d) for t in (bf16, fp32) for d in (32, 64)]

    def untouchable():
        raise AssertionError("supports() read the CPU's flags again")

    monkeypatch.setattr("embedstack._threads.cpu_features", untouchable)
    assert [_attention.supports(t, d) for t in (bf16, fp32) for d in (32, 64)] == before
    assert before[2:] == [True, True]  # float32 states at head dims 32 and 64 always take the kernel


@needs_bf16_kernel
@pytest.mark.parametrize("dim", [32, 64])
def test_bfloat16_kernel_gives_nan_where_a_score_is_not_finite(dim):
    """A NaN in one text's keys: that text's outputs are NaN, as the float formula's are (the tile kernel's integer
    weights would otherwise turn a NaN score into weight 0); the other text is untouched."""
    torch.manual_seed(3)
    heads, T = 2, 40
    q, k, v = ((torch.randn(2, T, heads * dim)).bfloat16() for _ in range(3))
    k[0, 7, :] = float("nan")
    got = _attention.attention(q, k, v, None, heads)
    assert torch.isnan(got[0]).all()
    ref = _reference(q[1:], k[1:], v[1:], None, heads)
    assert torch.isfinite(got[1]).all() and (got[1].double() - ref[0]).abs().max() < 0.05


@needs_kernel
@pytest.mark.parametrize("dim", [16, 32, 64])
def test_float32_kernel_gives_nan_where_a_score_is_not_finite(dim, build):
    """A NaN in one text's keys: that text's outputs are NaN, as torch's are (the exp's clamp must not turn a NaN score
    into a weight of ~0); the other text keeps the formula's values."""
    torch.manual_seed(4)
    heads, T = 2, 40
    q, k, v = (torch.randn(2, T, heads * dim) for _ in range(3))
    k[0, 7, :] = float("nan")
    got = _attention.attention(q, k, v, None, heads)
    assert torch.isnan(got[0]).all()
    torch.testing.assert_close(got[1:].double(), _reference(q[1:], k[1:], v[1:], None, heads), atol=2e-5, rtol=1e-5)


@needs_kernel
def test_packed_rows_attend_to_their_own_keys(build):
    """attention_rows: texts of different lengths packed one after another, and the [CLS]-only form (one query
    row per text), equal to attending each text alone."""
    torch.manual_seed(2)
    heads, dim = 2, 32
    lengths = [5, 1, 40, 17]
    starts = torch.tensor([0, 5, 6, 46])
    counts = torch.tensor(lengths)
    N = sum(lengths)
    q, k, v = (torch.randn(N, heads * dim) for _ in range(3))
    got = _attention.attention_rows(q, k, v, starts, counts, starts, counts, heads)
    cls = _attention.attention_rows(q[starts], k, v, torch.arange(4), torch.ones(4, dtype=torch.int64), starts,
                                    counts, heads)
    for b, (o, n) in enumerate(zip(starts.tolist(), lengths, strict=True)):
        one = _reference(q[None, o:o + n], k[None, o:o + n], v[None, o:o + n], None, heads)[0]
        torch.testing.assert_close(got[o:o + n].double(), one, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(cls[b].double(), one[0], atol=2e-5, rtol=1e-5)


def _model(seed: int = 0) -> BertModel:
    cfg = BertConfig(vocab_size=60, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                     max_position_embeddings=320)
    return BertModel(cfg).init_weights(seed=seed).eval()


@needs_kernel
@pytest.mark.parametrize("T", [9, 300])  # packed rows: padded attention below VARLEN_MIN_TOKENS, row by row above
def test_the_model_gives_the_same_states_with_either_kernel(T):
    """Every inference path of BertModel (padded, packed, [CLS] only) with "auto" (ours) equals "sdpa" (torch's)."""
    torch.manual_seed(3)
    model = _model()
    ids = torch.randint(5, 60, (4, T))
    lengths = torch.tensor([T, 2, T // 2, T - 1])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    full = torch.ones_like(mask)
    with torch.inference_mode():
        for m in (mask, full):
            for pack in (True, False):
                for first in (False, True):
                    ours = model.set_attention("auto")(ids, m, pack=pack, first_only=first)
                    theirs = model.set_attention("sdpa")(ids, m, pack=pack, first_only=first)
                    real = m.bool()[:, :1] if first else m.bool()
                    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)


def test_training_and_export_never_take_the_kernel(monkeypatch):
    """With autograd on (training) or while tracing for ONNX, attention is torch's: the kernel has no gradient."""
    calls = []
    monkeypatch.setattr(_attention, "attention", lambda *a: calls.append(1))
    model = _model()
    ids = torch.randint(5, 60, (2, 6))
    mask = torch.ones_like(ids)
    model(ids, mask).sum().backward()  # grad enabled, eval mode
    assert calls == []
    assert model.embeddings.word_embeddings.weight.grad is not None


def test_torch_kernel_where_ours_cannot_run(monkeypatch, tmp_path):
    """Neither AVX-512 nor AVX2, no compiler, or EMBEDSTACK_ATTENTION=torch: available() is False with the reason, the model runs
    torch's kernel, and the values are the same."""
    from embedstack.neural import _attention as A

    model = _model()
    ids = torch.randint(5, 60, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    with torch.inference_mode():
        expected = model.set_attention("sdpa")(ids, mask)
    for setup, reason in [
        (lambda m: m.setenv("EMBEDSTACK_ATTENTION", "torch"), "EMBEDSTACK_ATTENTION=torch"),
        (lambda m: m.setattr("embedstack._threads.cpu_features", lambda: frozenset({"sse4_2", "avx"})),
         "lacks avx2, avx512bw"),
        (lambda m: (m.setattr("embedstack._threads.cpu_features", lambda: A._NEEDS | {"avx2", "fma"}),
                    m.setattr(A, "_compiler", lambda: None)), "no C compiler"),  # on any CPU, AVX-512 or not
    ]:
        with monkeypatch.context() as m:
            m.setattr(A, "_state", {"lib": None, "why": None, "checked": False})
            m.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / reason.replace(" ", "-")))  # empty: a build is needed
            setup(m)
            assert not A.available()
            assert reason in A.status()
            with torch.inference_mode():
                got = model.set_attention("auto")(ids, mask)
        torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not (cpu_features() >= _attention._AVX2_NEEDS and _attention._compiler()),
                    reason="this CPU has no AVX2 and FMA, or there is no C compiler")
def test_a_cpu_with_avx2_and_no_avx512_gets_the_avx2_attention_kernel(monkeypatch, tmp_path):
    """An AVX2-only CPU (Zen 3, Haswell to Comet Lake) builds the attention kernel in 8-float registers: float32
    states only (bf16 goes to torch's kernel), none of the AVX-512 build's row, SPLADE or tile kernels, and the same
    values as the formula, in a model too."""
    from embedstack.neural import _attention as A

    model = _model()
    ids = torch.randint(5, 60, (3, 40))
    mask = (torch.arange(40)[None, :] < torch.tensor([40, 3, 29])[:, None]).long()
    with torch.inference_mode():
        expected = model.set_attention("sdpa")(ids, mask)
    with monkeypatch.context() as m:
        m.setattr(A, "_state", {"lib": None, "why": None, "checked": False})
        m.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path))
        m.setattr("embedstack._threads.cpu_features", lambda: frozenset({"avx", "avx2", "fma"}))
        assert A.available() and A.status() == "embedstack (avx2)"
        q = torch.randn(2, 9, 64)
        assert A.supports(q, 32) and not A.supports(q.bfloat16(), 32)
        assert not A.rows_supported(64) and A.splade_kind() is None and not A.x3_supported(64, 64)
        with pytest.raises(ValueError, match="bfloat16"):
            A.attention(q.bfloat16(), q.bfloat16(), q.bfloat16(), None, 2)
        torch.testing.assert_close(A.attention(q, q, q, None, 2).double(), _reference(q, q, q, None, 2),
                                   atol=2e-5, rtol=1e-5)
        with torch.inference_mode():
            got = model.set_attention("auto")(ids, mask)
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-5)


def test_encode_sdpa_modes_run_torchs_attention_on_their_own_copy(monkeypatch, tiny_encoder):
    """A mode ending in -sdpa is the same mode on torch's attention kernel, on a copy of the weights: the other
    modes, which share the loaded model, keep embedstack's kernel."""
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    monkeypatch.delitem(sys.modules, "encode", raising=False)
    encode_bench = importlib.import_module("encode")
    ours = encode_bench.make_encoder(tiny_encoder, "torch-fp32")
    theirs = encode_bench.make_encoder(tiny_encoder, "torch-fp32-sdpa")
    assert theirs.model is not tiny_encoder.model and ours.model is tiny_encoder.model
    assert {m.implementation for m in theirs.model.attention_modules()} == {"sdpa"}
    assert {m.implementation for m in tiny_encoder.model.attention_modules()} == {"auto"}
    a, b = ours.encode(["a short text", "another one here"]), theirs.encode(["a short text", "another one here"])
    assert abs(a - b).max() < 1e-5
    with pytest.raises(SystemExit, match="unknown mode"):
        encode_bench.make_encoder(tiny_encoder, "torch-fp64-sdpa")


def test_a_cpu_with_avx512_bf16_and_no_amx_gets_the_register_splade_kernel(monkeypatch, tmp_path):
    """The build tiers: AMX where the CPU has it; AVX-512 BF16 without AMX (Zen 4, Cooper Lake) builds SPLADE's fused
    pooling in registers, not the tile kernels, and with VBMI too (Zen 4) the bf16 attention kernel in registers
    (EMBEDSTACK_ATTENTION=f32 turns that one off); plain AVX-512 builds neither."""
    from embedstack._threads import cpu_features
    from embedstack.neural import _attention as A

    real = cpu_features()
    if not real >= A._BF16_NEEDS | A._NEEDS:
        pytest.skip("this CPU has no AVX-512 BF16")
    avx512 = frozenset(A._NEEDS)
    tiers = [(avx512 | A._BF16_NEEDS, "avx512-bf16", False, ""), (avx512, None, False, "")]
    if real >= A._BF16_VBMI_NEEDS:
        tiers += [(avx512 | A._BF16_VBMI_NEEDS, "avx512-bf16", True, ""),
                  (avx512 | A._BF16_VBMI_NEEDS, "avx512-bf16", False, "f32")]
    bf16 = torch.zeros(1, dtype=torch.bfloat16)
    for features, kind, dot, env in tiers:
        with monkeypatch.context() as m:
            m.setattr(A, "_state", {"lib": None, "why": None, "checked": False})
            m.setattr("embedstack._threads.cpu_features", lambda f=features: f)
            m.setenv("EMBEDSTACK_ATTENTION", env)
            assert A.available() and "amx" not in A.status()
            assert A._state["bf16_dot"] is dot and A.supports(bf16, 32)  # bf16 takes the kernel either way
            assert ("bf16 dot" in A.status()) is dot
            assert hasattr(A._load(), "embedstack_attention_bf16") is (features >= A._BF16_VBMI_NEEDS)
            assert A.splade_kind() == kind and A.splade_supported(64) is (kind is not None)
            if kind:
                x, mask = torch.randn(2, 40, 64).to(torch.bfloat16), torch.ones(2, 40, dtype=torch.bool)
                weight, bias = torch.randn(50, 64), torch.randn(50)
                ref = (x.double() @ weight.to(torch.bfloat16).double().T).amax(1) + bias.double()
                got = A.splade_max(x, mask, A.pack_decoder(weight), bias)
                torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-4)


needs_x3 = pytest.mark.skipif(not (_attention.available() and hasattr(_attention._load(), "embedstack_attention_x3")),
                              reason="no AMX build of the attention kernel here (x3 needs the tile unit)")


@needs_x3
@pytest.mark.parametrize("dim", [32, 64])
@pytest.mark.parametrize("threads", [1, 2])
def test_x3_kernel_is_float32_accurate_to_a_few_bits(dim, threads):
    """x3=True: both products as three bf16 ones on the tiles, the softmax in float32. Against the float64 formula
    its error is a few 2^-16 of the output's scale (scores of several units amplify it through exp), fifty times
    below bf16's; shapes around the tile edges, masks with padding, holes and a text with no key at all."""
    torch.manual_seed(dim + threads)
    heads, B = 3, 5
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for T in (1, 13, 16, 31, 33, 70):
            q, k, v = (torch.randn(B, T, heads * dim) * 2 for _ in range(3))
            lengths = torch.tensor([T, 1, max(1, T // 2), T, 0])
            mask = torch.arange(T)[None, :] < lengths[:, None]
            mask[3, 1::3] = False
            want = _reference(q, k, v, mask, heads)
            got = _attention.attention(q, k, v, mask, heads, x3=True)
            assert got.dtype == torch.float32 and got.shape == q.shape
            assert got[4].abs().max() == 0  # nothing to attend to: zeros, as the float32 kernel
            err = (got.double() - want).abs().max()
            bf16 = (_attention.attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, heads).double()
                    - want).abs().max()
            assert err < 2**-12 * want.abs().max(), err
            assert err < bf16 / 20, (err, bf16)
            # the tile kernel ran (the float32 kernel, which passes the bounds above too, sums in another order)
            assert not torch.equal(got, _attention.attention(q, k, v, mask, heads))
    finally:
        torch.set_num_threads(before)


@needs_x3
def test_x3_models_attend_on_the_tiles_and_give_float32_states():
    """pack_linears(x3=True) also sets the attention modules to "x3"; a model on them matches float32's states."""
    from embedstack.neural import packed

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                     max_position_embeddings=320)
    model = BertModel(cfg).init_weights(seed=1).eval()
    fast = packed.pack_linears(copy.deepcopy(model), x3=True)
    assert {m.implementation for m in fast.attention_modules()} == {"x3"}
    ids = torch.randint(5, 60, (3, 90))
    mask = (torch.arange(90)[None, :] < torch.tensor([90, 40, 7])[:, None]).long()
    with torch.inference_mode():
        for pack in (True, False):
            got, want = fast(ids, mask, pack=pack), model(ids, mask, pack=pack)
            real = mask.bool()
            torch.testing.assert_close(got[real], want[real], atol=2e-4, rtol=1e-4)
