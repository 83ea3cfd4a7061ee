"""precisions ``bf16-int8-ffn`` and ``bf16-int8-all``: the feed-forward block (all: every product) as oneDNN int8
products with one scale per token, and the row kernels around them (``_attention.c``: quantize rows, bias + GELU +
quantize, scale + bias + residual + LayerNorm)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedstack._threads import cpu_features
from embedstack.errors import ConfigError
from embedstack.neural import _attention
from embedstack.neural.quantize import ffn_onednn_available, quantize_rows

needs_rows = pytest.mark.skipif(not _attention.rows_supported(16),
                                reason=f"embedstack's row kernels do not run here: {_attention.status()}")
TEXTS = ["the cat sat on the mat", "a dog ran over the house", "the quick brown fox jumps over the lazy dog",
         "a man is playing a guitar", "small red tree", "the big house"]


def _bf16(*shape, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(torch.bfloat16)


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@needs_rows
@pytest.mark.parametrize("threads", [1, 2])
def test_quant_rows_matches_the_torch_reference(threads, threads_restored):
    torch.set_num_threads(threads)
    x = _bf16(300, 384, scale=3.0)  # 115,200 values: the kernel splits the rows over the threads
    x[7] = 0  # an all-zero row: scale 1, zeros
    smooth = torch.rand(384) + 0.5
    q, scale = _attention.quant_rows(x, 1.0 / smooth)
    ref_q, ref_scale = quantize_rows(x.float(), (1.0 / smooth).float())
    assert q.dtype == torch.int8 and q.shape == (300, 384) and scale.shape == (300,)
    nz = torch.arange(300) != 7
    torch.testing.assert_close(scale[nz], ref_scale[nz, 0], rtol=1e-6, atol=0)
    assert (q.int() - ref_q.int()).abs().max() <= 1  # x/scale rounded on either side of a .5
    assert (q.int() - ref_q.int()).ne(0).float().mean() < 1e-3
    assert scale[7] == 1.0 and q[7].eq(0).all()
    # strided rows (a column slice of a wider matrix) read in place
    wide = _bf16(40, 400, seed=1)
    q2, s2 = _attention.quant_rows(wide[:, :384], None)
    r2, rs2 = quantize_rows(wide[:, :384].float())
    torch.testing.assert_close(s2, rs2[:, 0], rtol=1e-6, atol=0)
    assert (q2.int() - r2.int()).abs().max() <= 1


@needs_rows
def test_row_kernels_write_unsigned_codes_in_the_same_pass():
    """unsigned=True: the same codes as uint8 plus 128 (what oneDNN takes without AMX int8), zero and non-finite rows
    included, from quant_rows and from ffn_mid; the scales unchanged."""
    x = _bf16(50, 384, scale=3.0, seed=4)
    x[3] = 0
    x[5, 10] = float("nan")
    y = _bf16(40, 1536, scale=2.0, seed=5)
    y[2, 7] = float("inf")
    row_scale, bias, inv = torch.rand(40) + 0.1, torch.randn(1536), 1.0 / (torch.rand(1536) + 0.5)
    for signed, unsigned in ((_attention.quant_rows(x, None), _attention.quant_rows(x, None, unsigned=True)),
                             (_attention.ffn_mid(y, row_scale, bias, inv),
                              _attention.ffn_mid(y, row_scale, bias, inv, unsigned=True))):
        (q, scale), (u, uscale) = signed, unsigned
        assert q.dtype == torch.int8 and u.dtype == torch.uint8 and u.shape == q.shape
        assert torch.equal(u.int(), q.int() + 128)
        torch.testing.assert_close(uscale, scale, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(scale[2]) and u[2].eq(128).all()


@needs_rows
def test_gelu_table_is_exact_gelu_to_a_few_1e_6():
    coef = _attention.gelu_table().view(4, 32).double()
    x = torch.linspace(-20, 20, 40001, dtype=torch.float64)
    s = (x * 32 / 11 + 16).clamp(0, 31.999998)
    i = s.floor().long()
    u = s - i
    phi = coef[0, i] + u * (coef[1, i] + u * (coef[2, i] + u * coef[3, i]))
    exact = x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    assert (x * phi - exact).abs().max() < 5e-6


@needs_rows
def test_ffn_mid_is_bias_gelu_smoothing_then_row_quantization():
    y = _bf16(64, 1536, scale=2.0, seed=2)
    row_scale = torch.rand(64) * 2 + 0.1
    bias = torch.randn(1536) * 0.5
    inv = 1.0 / (torch.rand(1536) + 0.5)
    q, scale = _attention.ffn_mid(y, row_scale, bias, inv)
    h = F.gelu(y.float() * row_scale[:, None] + bias) * inv
    ref_q, ref_scale = quantize_rows(h)
    torch.testing.assert_close(scale, ref_scale[:, 0], rtol=1e-4, atol=1e-7)
    assert (q.int() - ref_q.int()).abs().max() <= 1
    # and without bias or smoothing
    q0, s0 = _attention.ffn_mid(y, row_scale, None, None)
    r0, rs0 = quantize_rows(F.gelu(y.float() * row_scale[:, None]))
    torch.testing.assert_close(s0, rs0[:, 0], rtol=1e-4, atol=1e-7)
    assert (q0.int() - r0.int()).abs().max() <= 1


@needs_rows
@pytest.mark.parametrize("norm", [False, True])
def test_rows_out_scales_adds_and_normalizes(norm):
    y = torch.randn(200, 384) * 3
    row_scale = torch.rand(200) + 0.1
    bias, residual = torch.randn(384), _bf16(200, 384, seed=3)
    gamma, beta = torch.rand(384) + 0.5, torch.randn(384) * 0.1
    out = _attention.rows_out(y, row_scale, bias, residual, (gamma, beta, 1e-12) if norm else None)
    ref = y * row_scale[:, None] + bias + residual.float()
    if norm:
        ref = F.layer_norm(ref, (384,), gamma, beta, eps=1e-12)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.to(torch.bfloat16).float(), rtol=2 ** -7, atol=1e-5)
    plain = _attention.rows_out(y, row_scale, None)  # no bias, no residual
    torch.testing.assert_close(plain.float(), (y * row_scale[:, None]).to(torch.bfloat16).float(), rtol=2 ** -8, atol=0)


@needs_rows
def test_unsupported_widths_and_wrong_tensors_are_refused():
    assert not _attention.rows_supported(24) and not _attention.rows_supported(16 * 1024)
    with pytest.raises(ValueError, match="row width"):
        _attention.quant_rows(_bf16(4, 24), None)
    y = torch.randn(8, 32)
    with pytest.raises(ValueError, match="float32"):  # the kernel reads raw memory: a bf16 y would be read as fp32
        _attention.rows_out(y.to(torch.bfloat16), torch.ones(8), None)
    with pytest.raises(ValueError, match="residual"):
        _attention.rows_out(y, torch.ones(8), None, _bf16(7, 32))
    with pytest.raises(ValueError, match="bias"):
        _attention.ffn_mid(_bf16(8, 32), torch.ones(8), torch.zeros(16), None)


@needs_rows
def test_a_non_finite_row_stays_non_finite():
    """NaN or inf must not turn into a finite int8 row (the cross-encoder's NaN check depends on it)."""
    x = _bf16(3, 384)
    x[1, 200] = float("nan")
    x[2, 5] = float("inf")
    q, scale = _attention.quant_rows(x, None)
    assert torch.isfinite(scale[0]) and torch.isnan(scale[1:]).all() and q[1:].eq(0).all()
    y = _bf16(3, 1536)
    y[0, 1000] = float("nan")
    q2, s2 = _attention.ffn_mid(y, torch.ones(3), None, None)
    assert torch.isnan(s2[0]) and torch.isfinite(s2[1:]).all()
    tiny = torch.full((1, 384), 1e-30).to(torch.bfloat16)
    q3, s3 = _attention.quant_rows(tiny, None)
    assert torch.isfinite(s3).all() and q3.abs().max() <= 1
    tinier = torch.full((1, 384), 2e-38).to(torch.bfloat16)  # 127 / 2e-38 overflows float32: the 1e-12 floor holds
    q4, s4 = _attention.quant_rows(tinier, None)
    assert torch.isfinite(s4).all() and q4.abs().max() <= 1 and not q4.eq(-128).any()


def _ffn_runs(encoder) -> bool:
    return ffn_onednn_available(encoder.model) is None


def test_bf16_int8_ffn_encodes_close_to_fp32(tiny_encoder):
    if not _ffn_runs(tiny_encoder):
        pytest.skip(f"the int8 feed-forward does not run here: {ffn_onednn_available(tiny_encoder.model)}")
    from embedstack.neural.quantize import Int8FeedForwardIn, Int8FeedForwardOut

    ref = tiny_encoder.encode(TEXTS)
    enc = tiny_encoder.with_options(precision="bf16-int8-ffn")
    out = enc.encode(TEXTS)
    assert out.shape == ref.shape and np.isfinite(out).all()
    cos = np.sum(out * ref, axis=1)
    assert cos.min() > 0.99, cos
    kinds = {type(m) for m in enc._torch_model.modules()}
    assert {Int8FeedForwardIn, Int8FeedForwardOut} <= kinds
    assert not any(isinstance(m, torch.nn.LayerNorm) for n, m in enc._torch_model.named_modules()
                   if n.endswith("output.LayerNorm") and "attention" not in n)  # fused into the product's kernel
    # the encoder's own model stays fp32 and untouched; one text at a time, and a batch long enough to run as
    # slices on two workers side by side, give the same vectors
    assert all(p.dtype == torch.float32 for p in tiny_encoder.model.parameters())
    one = np.stack([enc.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(one, out, atol=2e-2)
    many = [f"{t} {u}" for t in TEXTS for u in TEXTS] * 3  # 108 texts of about 12-20 tokens: > _SPLIT_TOKENS padded
    w2 = tiny_encoder.with_options(precision="bf16-int8-ffn", workers=2, num_threads=2)
    w2.split_tokens = 1  # every batch of several texts runs as slices on the two workers
    np.testing.assert_allclose(w2.encode(many, batch_size=128), enc.encode(many, batch_size=128), atol=2e-2)
    assert enc.encode([]).shape == (0, out.shape[1])
    # the int8 modules themselves on no rows (an encoder never calls them so)
    empty = torch.empty(0, 384, dtype=torch.bfloat16)
    up = Int8FeedForwardIn(torch.nn.Linear(384, 1536), torch.ones(384), torch.ones(1536))
    mid = up(empty)
    assert tuple(mid.q.shape) == (0, 1536) and mid.q.dtype == (torch.uint8 if up.unsigned else torch.int8)
    down = Int8FeedForwardOut(torch.nn.Linear(1536, 384), torch.ones(1536))
    assert tuple(down.add(mid, empty).shape) == (0, 384) and tuple(down(mid).shape) == (0, 384)


def test_bf16_int8_ffn_matches_a_torch_reference_of_the_same_arithmetic(tiny_encoder):
    """The int8 modules against the same steps in float torch ops (quantize_rows, int products, GELU, LayerNorm)."""
    if not _ffn_runs(tiny_encoder):
        pytest.skip(f"the int8 feed-forward does not run here: {ffn_onednn_available(tiny_encoder.model)}")
    from embedstack.neural.quantize import Int8FeedForwardIn, Int8FeedForwardOut, quantize_weight

    block = tiny_encoder.model.encoder.layer[0]
    up, down, norm = block.intermediate.dense, block.output.dense, block.output.LayerNorm
    s_up, s_down = torch.rand(16) + 0.5, torch.rand(32) + 0.5
    fin, fout = Int8FeedForwardIn(up, s_up, s_down), Int8FeedForwardOut(down, s_down, norm)
    x, res = _bf16(3, 5, 16, seed=4), _bf16(3, 5, 16, seed=5)
    got = fout.add(fin(x), res)
    assert got.shape == (3, 5, 16) and got.dtype == torch.bfloat16

    def int8_linear(q, scale, linear, smooth):
        qw, ws = quantize_weight(linear.weight.detach() * smooth[None, :])
        return (q.float() @ qw.float().T) * ws * scale + linear.bias.detach()

    q, sc = quantize_rows(x.reshape(-1, 16).float(), 1.0 / s_up)
    h = F.gelu(int8_linear(q, sc, up, s_up).to(torch.bfloat16).float())  # the product leaves bf16
    q2, sc2 = quantize_rows(h, 1.0 / s_down)
    ref = F.layer_norm(int8_linear(q2, sc2, down, s_down) + res.reshape(-1, 16).float(), (16,),
                       norm.weight.detach(), norm.bias.detach(), norm.eps)
    # one int8 step of either quantization moves an output by a few hundredths at most on these sizes
    assert (got.reshape(-1, 16).float() - ref).abs().max() < 0.1


def test_int8_linear_matches_a_torch_reference_of_the_same_arithmetic(tiny_encoder):
    """Int8Linear (bf16-int8-all's attention products): each row quantized with its own scale after smoothing, the
    int product, the scales and bias; add() with the residual and the fused LayerNorm; no rows."""
    if not _ffn_runs(tiny_encoder):
        pytest.skip(f"the int8 products do not run here: {ffn_onednn_available(tiny_encoder.model)}")
    from embedstack.neural.quantize import Int8Linear, quantize_weight

    block = tiny_encoder.model.encoder.layer[0]
    dense, norm = block.attention.output.dense, block.attention.output.LayerNorm
    smooth = torch.rand(16) + 0.5
    x, res = _bf16(3, 5, 16, scale=2.0, seed=6), _bf16(3, 5, 16, seed=7)
    q, sc = quantize_rows(x.reshape(-1, 16).float(), 1.0 / smooth)
    qw, ws = quantize_weight(dense.weight.detach() * smooth[None, :])
    y = (q.float() @ qw.float().T) * ws * sc + dense.bias.detach()
    for unsigned in (False, True):
        plain, fused = Int8Linear(dense, smooth, None, unsigned), Int8Linear(dense, smooth, norm, unsigned)
        got = plain(x)
        assert got.shape == (3, 5, 16) and got.dtype == torch.bfloat16
        assert (got.reshape(-1, 16).float() - y).abs().max() < 0.03  # bf16 rounding of the output
        ref = F.layer_norm(y + res.reshape(-1, 16).float(), (16,), norm.weight.detach(), norm.bias.detach(), norm.eps)
        assert (fused.add(x, res).reshape(-1, 16).float() - ref).abs().max() < 0.05
        empty = torch.empty(0, 16, dtype=torch.bfloat16)
        assert tuple(plain(empty).shape) == (0, 16) and tuple(fused.add(empty, empty).shape) == (0, 16)


def test_bf16_int8_all_puts_every_product_on_int8(tiny_encoder):
    """bf16-int8-all: the Q/K/V product and the attention output too (its LayerNorm fused), weights from the fp32
    model, vectors close to fp32's; workers sharing a batch give the same vectors."""
    if not _ffn_runs(tiny_encoder):
        pytest.skip(f"the int8 products do not run here: {ffn_onednn_available(tiny_encoder.model)}")
    from embedstack.neural.quantize import Int8FeedForwardIn, Int8FeedForwardOut, Int8Linear

    ref = tiny_encoder.with_options(precision="fp32").encode(TEXTS)
    enc = tiny_encoder.with_options(precision="bf16-int8-all")
    out = enc.encode(TEXTS)
    assert np.sum(out * ref, axis=1).min() > 0.99
    model = enc._torch_model
    for block in model.encoder.layer:
        assert isinstance(block.attention.self.qkv, Int8Linear)
        assert isinstance(block.attention.output.dense, Int8Linear)
        assert isinstance(block.attention.output.LayerNorm, torch.nn.Identity)
        assert isinstance(block.intermediate.dense, Int8FeedForwardIn)
        assert isinstance(block.output.dense, Int8FeedForwardOut)
    assert all(p.dtype == torch.float32 for p in tiny_encoder.model.parameters())
    many = [f"{t} {u}" for t in TEXTS for u in TEXTS] * 3
    w2 = tiny_encoder.with_options(precision="bf16-int8-all", workers=2, num_threads=2)
    w2.split_tokens = 1
    np.testing.assert_allclose(w2.encode(many, batch_size=128), enc.encode(many, batch_size=128), atol=2e-2)


def test_bf16_int8_all_unpacked_and_its_row_widths(tiny_encoder, monkeypatch):
    """Without packing (EMBEDSTACK_PACKED=0) the int8 Q/K/V product is still one layer (``qkv``), beside the
    untouched float Q, K and V, with the same vectors up to int8 noise; the Q/K/V output rows (3 x hidden wide)
    are checked when the encoder is made."""
    if not _ffn_runs(tiny_encoder):
        pytest.skip(f"the int8 products do not run here: {ffn_onednn_available(tiny_encoder.model)}")
    from embedstack.neural import quantize
    from embedstack.neural.quantize import Int8Linear

    packed = tiny_encoder.with_options(precision="bf16-int8-all").encode(TEXTS)
    monkeypatch.setenv("EMBEDSTACK_PACKED", "0")
    enc = tiny_encoder.with_options(precision="bf16-int8-all")
    np.testing.assert_allclose(enc.encode(TEXTS), packed, atol=2e-2)
    for block in enc._torch_model.encoder.layer:
        att = block.attention.self
        assert isinstance(att.qkv, Int8Linear)
        assert not any(isinstance(m, Int8Linear) for m in (att.query, att.key, att.value))
    hidden = tiny_encoder.model.config.hidden_size
    monkeypatch.setattr(_attention, "rows_supported", lambda width: width != 3 * hidden)
    assert quantize.ffn_onednn_available(tiny_encoder.model) is None
    assert "row widths" in quantize.ffn_onednn_available(tiny_encoder.model, attention=True)
    with pytest.raises(ConfigError, match="row widths"):
        tiny_encoder.with_options(precision="bf16-int8-all")


@pytest.mark.parametrize("attention", [False, True])
def test_int8_feed_forward_with_row_buckets_on_the_bf16_attention_kernel(attention):
    """A model whose heads the bf16 attention kernel takes (head dim 32): packed, bucketed, int8 feed-forward (and
    with ``attention``, int8 Q/K/V and output projections; the [CLS]-only rows keep bf16 Q, K and V)."""
    from embedstack.neural.config import BertConfig
    from embedstack.neural.packed import pack_linears
    from embedstack.neural.quantize import calibration_batches, quantize_ffn_onednn
    from embedstack.neural.transformer import BertModel

    cfg = BertConfig(vocab_size=60, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                     max_position_embeddings=320)
    ref = BertModel(cfg).init_weights(seed=2).eval()
    if ffn_onednn_available(ref) is not None:
        pytest.skip(f"the int8 feed-forward does not run here: {ffn_onednn_available(ref)}")

    class Tok:  # what calibration_batches reads
        cls_id, sep_id = 2, 3

        class tokenizer:  # noqa: N801
            @staticmethod
            def get_vocab():
                return {f"{chr(97 + i // 26)}{chr(97 + i % 26)}w": i for i in range(5, 60)}  # whole words

    fast = pack_linears(copy.deepcopy(ref).to(torch.bfloat16))
    fast.row_buckets = True
    quantize_ffn_onednn(fast, ref, calibration_batches(Tok, max_length=64), attention=attention)
    from embedstack.neural.quantize import Int8Linear

    assert any(isinstance(m, Int8Linear) for m in fast.modules()) is attention
    T = 70
    ids = torch.randint(5, 60, (5, T))
    lengths = torch.tensor([T, 3, 40, 69, 12])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    with torch.inference_mode():
        for first in (False, True):
            got = fast(ids, mask, first_only=first).float()
            want = ref(ids, mask, first_only=first)
            real = mask.bool()[:, :1] if first else mask.bool()
            cos = F.cosine_similarity(got[real], want[real], dim=-1)
            assert cos.min() > 0.99, cos.min()


@pytest.mark.parametrize("precision", ["bf16-int8-ffn", "bf16-int8-all"])
def test_bf16_int8_ffn_refuses_compile(tiny_encoder, precision):
    with pytest.raises(ConfigError, match=precision):
        tiny_encoder.with_options(precision=precision, compile=True)


@pytest.mark.parametrize("precision", ["bf16-int8-ffn", "bf16-int8-all"])
def test_bf16_int8_ffn_says_why_it_cannot_run(tiny_encoder, monkeypatch, precision):
    from embedstack.neural import quantize

    monkeypatch.setattr(_attention, "row_kernels", lambda: True)  # the row kernels' own check, on any CPU
    monkeypatch.setattr(_attention, "rows_supported", lambda width: False)
    assert "row widths" in quantize.ffn_onednn_available(tiny_encoder.model)
    with pytest.raises(ConfigError, match="bf16-pure"):  # when the encoder is made, not at its first encode
        tiny_encoder.with_options(precision=precision)
    # AVX-512 without VNNI or AMX int8 (a Skylake-SP): oneDNN's int8 linear has no fast kernel for its rows there
    from embedstack.index import _scan

    monkeypatch.setattr(_attention, "rows_supported", lambda width: True)
    monkeypatch.setattr(_scan, "int_gemm_units", lambda: False)
    with pytest.raises(ConfigError, match="no AVX-512 VNNI or AMX int8 units.*bf16-pure"):
        tiny_encoder.with_options(precision=precision)
    # a CPU without AVX-512 (an AMD EPYC with AVX2: the AVX2 build, attention alone), or no build at all
    monkeypatch.setattr(_attention, "row_kernels", lambda: False)
    with pytest.raises(ConfigError, match="row kernels do not run here"):
        tiny_encoder.with_options(precision=precision)


@pytest.mark.parametrize("precision", ["bf16-int8-ffn", "bf16-int8-all"])
def test_bf16_int8_ffn_keeps_minilm_close_to_fp32(minilm, precision):
    if not _ffn_runs(minilm):
        pytest.skip(f"the int8 feed-forward does not run here: {ffn_onednn_available(minilm.model)}")
    texts = [f"{a} {b} the {c}" for a in ("A man", "The woman", "Two dogs", "A child") for b in
             ("is playing", "rides", "cooks", "reads") for c in ("guitar", "bicycle", "dinner", "newspaper")]
    ref = minilm.with_options(precision="fp32").encode(texts)
    cos = np.sum(minilm.with_options(precision=precision).encode(texts) * ref, axis=1)
    assert cos.mean() > 0.997 and cos.min() > 0.99, cos


@pytest.mark.skipif(not hasattr(torch.ops.onednn, "qlinear_pointwise"), reason="this torch has no oneDNN int8 linear")
@pytest.mark.skipif(not cpu_features() & {"avx512_vnni", "amx_int8"},
                    reason="no int8 dot-product units: unsigned rows are used only where VNNI sums them in 32 bits")
def test_unsigned_and_signed_rows_give_the_same_onednn_product(monkeypatch):
    """Without AMX int8 oneDNN's signed-source product is a reference kernel (seconds a product on a Zen 4 EPYC), so
    the rows go in as uint8 with zero point 128 there: both sources must give the exact integer product, scaled
    by the weight's scales, at the extreme codes too."""
    from embedstack.neural.quantize import Int8FeedForwardOut, onednn_unsigned_source, quantize_weight

    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    q = torch.randint(-127, 128, (24, 64), dtype=torch.int8, generator=g)
    q[0], q[1] = 127, -127
    out = {}
    for source in ("s8", "u8"):
        monkeypatch.setenv("EMBEDSTACK_ONEDNN_SOURCE", source)
        assert onednn_unsigned_source() == (source == "u8")
        mod = Int8FeedForwardOut(lin, torch.ones(64))
        assert mod.unsigned == (source == "u8")
        rows, zero = mod._source(q)  # what oneDNN is handed: the rows themselves, or q + 128 with zero point 128
        assert (rows.dtype, zero) == ((torch.uint8, 128) if source == "u8" else (torch.int8, 0))
        assert torch.equal(rows.long() - zero, q.long())
        out[source] = mod._product(q, torch.float32)
        out[source + "-bf16"] = mod._product(q, torch.bfloat16)  # what Int8FeedForwardIn asks for
    torch.testing.assert_close(out["u8"], out["s8"], rtol=0, atol=0)
    assert out["u8-bf16"].dtype == torch.bfloat16
    torch.testing.assert_close(out["u8-bf16"], out["s8-bf16"], rtol=0, atol=0)
    qw, scale = quantize_weight(lin.weight.detach().float())  # the reference: exact integer sums, scaled
    want = (q.long() @ qw.long().t()).double() * scale.double()[None, :]
    torch.testing.assert_close(out["u8"].double(), want, rtol=1e-6, atol=1e-3)


def test_onednn_source_env_values(monkeypatch, tiny_encoder):
    from embedstack.neural.quantize import onednn_unsigned_source

    monkeypatch.setenv("EMBEDSTACK_ONEDNN_SOURCE", "")
    feats = cpu_features()
    assert onednn_unsigned_source() == ("amx_int8" not in feats and "avx512_vnni" in feats)
    for value, unsigned in (("U8", True), (" s8 ", False)):
        monkeypatch.setenv("EMBEDSTACK_ONEDNN_SOURCE", value)
        assert onednn_unsigned_source() is unsigned
    monkeypatch.setenv("EMBEDSTACK_ONEDNN_SOURCE", "int8")
    with pytest.raises(ConfigError, match="EMBEDSTACK_ONEDNN_SOURCE='int8'"):
        onednn_unsigned_source()
    if ffn_onednn_available(tiny_encoder.model) is None:
        with pytest.raises(ConfigError, match="EMBEDSTACK_ONEDNN_SOURCE"):  # refused when the encoder is made
            tiny_encoder.with_options(precision="bf16-int8-ffn")
        # decided when the encoder is made: its modules, built at the first encode, keep that choice
        from embedstack.neural.quantize import Int8FeedForwardIn

        for made, later in (("s8", "u8"), ("u8", "s8")):
            monkeypatch.setenv("EMBEDSTACK_ONEDNN_SOURCE", made)
            enc = tiny_encoder.with_options(precision="bf16-int8-ffn")
            monkeypatch.setenv("EMBEDSTACK_ONEDNN_SOURCE", later)
            assert np.isfinite(enc.encode(TEXTS[:2])).all()
            ffn = [m for m in enc._torch_model.modules() if isinstance(m, Int8FeedForwardIn)]
            assert ffn and all(m.unsigned == (made == "u8") for m in ffn)
