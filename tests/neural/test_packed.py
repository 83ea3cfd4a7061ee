"""Packed oneDNN linears (``neural/packed.py``): the same values as ``nn.Linear`` (+ GELU, + residual) on every
inference path of the model, never in training or export, and off where oneDNN's operator is missing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedstack.neural import packed
from embedstack.neural.config import BertConfig
from embedstack.neural.packed import PackedLinear, pack_linears
from embedstack.neural.transformer import BertModel

needs_onednn = pytest.mark.skipif(not packed.available(), reason="this torch has no oneDNN fused linear")
needs_bf16 = pytest.mark.skipif(not packed.available(torch.bfloat16),
                                reason="oneDNN's bfloat16 product does not run on this CPU (it needs AVX-512)")
BF16 = pytest.param(torch.bfloat16, marks=needs_bf16)


def _linear(k: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n).to(dtype).eval()


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("rows", [1, 13, 300])
def test_a_packed_linear_equals_the_plain_one(dtype, rows):
    lin = _linear(48, 80, dtype)
    gelu = PackedLinear.of(lin, activation="gelu")
    tanh = PackedLinear.of(lin, activation="gelu_tanh")
    relu = PackedLinear.of(lin, activation="relu")
    plain = PackedLinear.of(lin)
    x = torch.randn(rows, 48).to(dtype)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 4e-2, "rtol": 2e-2}
    with torch.inference_mode():
        y = lin(x)
        torch.testing.assert_close(plain(x), y, **tol)
        torch.testing.assert_close(gelu(x), F.gelu(y), **tol)
        torch.testing.assert_close(tanh(x), F.gelu(y, approximate="tanh"), **tol)
        torch.testing.assert_close(relu(x), F.relu(y), **tol)
        r = torch.randn(rows, 80).to(dtype)
        torch.testing.assert_close(plain.add(x, r), y + r, **tol)
        # batched (B, T, K) inputs, a strided view (rows further apart than K), and no rows at all
        x3 = torch.randn(3, rows, 48).to(dtype)
        torch.testing.assert_close(plain(x3), lin(x3), **tol)
        wide = torch.randn(rows, 96).to(dtype)
        torch.testing.assert_close(plain(wide[:, 16:64]), lin(wide[:, 16:64]), **tol)
        assert plain(x[:0]).shape == (0, 80)
        assert plain.add(x[:0], r[:0]).shape == (0, 80)


@needs_onednn
def test_qkv_side_by_side_is_the_three_products():
    q, k, v = (_linear(32, 32, torch.float32, seed=s) for s in range(3))
    fused = PackedLinear.of(q, k, v)
    x = torch.randn(7, 32)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), torch.cat([q(x), k(x), v(x)], dim=-1), atol=1e-5, rtol=1e-5)


def test_an_activation_without_a_fused_form_is_refused():
    with pytest.raises(ValueError, match="silu"):
        PackedLinear.of(_linear(8, 8, torch.float32), activation="silu")
    if packed.available():
        with pytest.raises(ValueError, match="residual"):
            PackedLinear.of(_linear(8, 8, torch.float32), activation="gelu").add(torch.ones(1, 8), torch.ones(1, 8))


def _model(act: str = "gelu") -> BertModel:
    cfg = BertConfig(vocab_size=60, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                     max_position_embeddings=320, hidden_act=act)
    return BertModel(cfg).init_weights(seed=1).eval()


@needs_onednn
@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
@pytest.mark.parametrize("T", [9, 300])  # packed rows attend padded below VARLEN_MIN_TOKENS, row by row above
@pytest.mark.parametrize("attention", ["auto", "sdpa"])
def test_a_packed_model_gives_the_same_states_on_every_path(act, T, attention):
    """Padded, packed and [CLS]-only paths, with either attention kernel: packed equals plain (float32)."""
    torch.manual_seed(3)
    model = _model(act).set_attention(attention)
    fast = pack_linears(copy.deepcopy(model))
    layer = fast.encoder.layer[0]
    assert isinstance(layer.attention.self.qkv, PackedLinear)
    assert isinstance(layer.intermediate.dense, PackedLinear)
    assert isinstance(layer.intermediate.act, torch.nn.Identity)  # fused into the product
    assert isinstance(layer.output.dense, PackedLinear)
    ids = torch.randint(5, 60, (4, T))
    lengths = torch.tensor([T, 2, T // 2, T - 1])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    with torch.inference_mode():
        for m in (mask, torch.ones_like(mask)):
            for pack in (True, False):
                for first in (False, True):
                    got = fast(ids, m, pack=pack, first_only=first)
                    want = model(ids, m, pack=pack, first_only=first)
                    real = m.bool()[:, :1] if first else m.bool()
                    torch.testing.assert_close(got[real], want[real], atol=2e-5, rtol=1e-5)


@needs_bf16
def test_a_bf16_packed_model_stays_within_bf16_rounding():
    model = _model().to(torch.bfloat16)
    fast = pack_linears(copy.deepcopy(model))
    ids = torch.randint(5, 60, (3, 40))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        got, want = fast(ids, mask).float(), model(ids, mask).float()
    cos = F.cosine_similarity(got.reshape(-1, 64), want.reshape(-1, 64), dim=-1)
    assert cos.min() > 0.999


def test_training_models_are_never_packed():
    model = _model().train()
    assert pack_linears(model) is model
    assert all(type(m) is not PackedLinear for m in model.modules())


def test_switched_off_or_missing_leaves_the_model_alone(monkeypatch):
    monkeypatch.setenv("EMBEDSTACK_PACKED", "0")
    assert not packed.available()
    model = _model()
    pack_linears(model)
    assert all(type(m) is not PackedLinear for m in model.modules())
    monkeypatch.delenv("EMBEDSTACK_PACKED")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not packed.available()


def test_a_dtype_onednn_refuses_here_is_left_plain(tiny_encoder, monkeypatch):
    """Where oneDNN's product does not run in a dtype (bfloat16 on a CPU without AVX-512: "could not create a
    primitive descriptor"), the probe says so, pack_linears leaves such blocks alone and bf16-pure runs plain."""
    def refuse(self, x):
        raise RuntimeError("could not create a primitive descriptor for the inner product forward propagation")

    with monkeypatch.context() as m:
        m.setattr(PackedLinear, "forward", refuse)
        assert packed._probe(torch.bfloat16) is False
    monkeypatch.setitem(packed._RUNS, torch.bfloat16, False)
    assert not packed.available(torch.bfloat16)
    model = _model().to(torch.bfloat16)
    pack_linears(model)
    assert all(type(m) is not PackedLinear for m in model.modules())
    enc = tiny_encoder.with_options(precision="bf16-pure")
    vecs = enc.encode(["a b c", "d e"])
    assert not any(type(m) is PackedLinear for m in _runner_modules(enc))
    want = tiny_encoder.with_options(precision="fp32").encode(["a b c", "d e"])
    np.testing.assert_allclose(vecs, want, atol=2e-2)


@needs_bf16
def test_the_runner_packs_a_copy_and_keeps_the_encoder_weights_plain(tiny_encoder, monkeypatch):
    """bf16-pure runners (fp32 too with EMBEDSTACK_PACKED=all) pack their own copy; the encoder's model (trained,
    exported, saved) stays plain; vectors agree with the plain runner's; fp32 by default, int8 and compiled runners
    are not packed."""
    texts = ["a b c", "d e", "f g h i j k"]
    fp32 = tiny_encoder.with_options(precision="fp32")
    fp32.encode(texts)
    assert not any(type(m) is PackedLinear for m in _runner_modules(fp32))  # MKL: no per-shape oneDNN state
    monkeypatch.setenv("EMBEDSTACK_PACKED", "all")
    for precision in ("fp32", "bf16-pure"):
        enc = tiny_encoder.with_options(precision=precision)
        vecs = enc.encode(texts)
        assert all(type(m) is not PackedLinear for m in enc.model.modules())
        assert any(type(m) is PackedLinear for m in _runner_modules(enc))
        plain = tiny_encoder.with_options(precision=precision)
        with monkeypatch.context() as m:
            m.setenv("EMBEDSTACK_PACKED", "0")
            want = plain.encode(texts)
        assert not any(type(m) is PackedLinear for m in _runner_modules(plain))
        np.testing.assert_allclose(vecs, want, atol=1e-5 if precision == "fp32" else 2e-2)
    int8 = tiny_encoder.with_options(precision="int8")
    int8.encode(texts)
    assert not any(type(m) is PackedLinear for m in _runner_modules(int8))


def _runner_modules(enc):
    """The modules of the model an encoder's torch runner calls."""
    enc._get_runner()
    return list(enc._torch_model.modules())


@needs_bf16
def test_the_encode_benchmark_variants_combine_in_any_order(tiny_encoder, monkeypatch):
    """benchmarks/encode.py: -unpacked builds a plain runner, -whole never splits a batch; both, in either order."""
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    monkeypatch.delitem(sys.modules, "encode", raising=False)
    bench = importlib.import_module("encode")
    packed_enc = bench.make_encoder(tiny_encoder, "torch-bf16-pure-w2")
    assert any(type(m) is PackedLinear for m in _runner_modules(packed_enc)) and packed_enc.split_tokens is None
    for mode in ("torch-bf16-pure-w2-unpacked-whole", "torch-bf16-pure-w2-whole-unpacked"):
        enc = bench.make_encoder(tiny_encoder, mode)
        assert not any(type(m) is PackedLinear for m in _runner_modules(enc)), mode
        assert enc.split_tokens is not None and enc.split_tokens > 10**9, mode
    with pytest.raises(SystemExit, match="unknown mode"):
        bench.make_encoder(tiny_encoder, "torch-bf16-pure-w2-whole-whole")


@needs_bf16
@pytest.mark.skipif(not packed._row_norms(torch.nn.LayerNorm(64).to(torch.bfloat16)),
                    reason="embedstack's row kernels do not run here")
def test_bf16_layer_norms_run_on_the_row_kernel_with_torchs_values():
    norm = torch.nn.LayerNorm(64).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    fast = packed.RowLayerNorm(norm)
    x = (torch.randn(3, 70, 64) * 4 + 1).to(torch.bfloat16)
    want = F.layer_norm(x.float(), (64,), norm.weight.float(), norm.bias.float(), norm.eps).to(torch.bfloat16)
    got = fast(x)
    assert got.dtype == torch.bfloat16 and got.shape == x.shape
    torch.testing.assert_close(got.float(), want.float(), rtol=2 ** -7, atol=1e-6)  # one bf16 rounding apart
    assert fast(x[:, :0]).shape == (3, 0, 64)
    model = pack_linears(_model().to(torch.bfloat16))
    kinds = [type(m) for n, m in model.named_modules() if n.endswith("LayerNorm")]
    assert kinds.count(packed.RowLayerNorm) == 2 * len(model.encoder.layer)  # both residual norms of every block
    assert type(model.embeddings.LayerNorm) is torch.nn.LayerNorm  # before packing: left to torch


def test_bucket_rows_pads_at_most_a_sixteenth():
    from embedstack.neural.transformer import bucket_rows

    sizes = {bucket_rows(n) for n in range(1, 8193)}
    assert len(sizes) < 140  # about 16 per doubling from 16 to 8,192, where every row count gave its own shape
    for n in range(1, 8193):
        b = bucket_rows(n)
        assert b >= n and b % 16 == 0 and (b - n <= 15 or b - n < n / 16), n
    assert bucket_rows(1) == 16 and bucket_rows(2000) == 2048 and bucket_rows(2049) == 2176


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_row_buckets_give_the_same_states_and_few_product_shapes(monkeypatch, dtype):
    """Packed rows padded to bucket_rows (zero rows, attending among themselves) change no real token's states."""
    from embedstack.neural import _attention
    from embedstack.neural.transformer import bucket_rows

    model = _model().to(dtype)
    if not _attention.supports(torch.zeros(1, dtype=dtype), 32):
        pytest.skip(f"embedstack's attention kernel does not take {dtype} heads of 32 here: {_attention.status()}")
    torch.manual_seed(5)
    plain = pack_linears(copy.deepcopy(model))
    bucketed = pack_linears(copy.deepcopy(model))
    bucketed.row_buckets = True
    with torch.inference_mode():
        assert bucketed._bucketed(torch.zeros(1, 1, 64, dtype=dtype))
    seen = []
    real_forward = PackedLinear.forward

    def forward(self, x):
        seen.append(x.reshape(-1, x.shape[-1]).shape[0])
        return real_forward(self, x)

    monkeypatch.setattr(PackedLinear, "forward", forward)
    T = 50
    ids = torch.randint(5, 60, (4, T))
    lengths = torch.tensor([T, 3, 17, 40])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    with torch.inference_mode():
        for m in (mask, torch.ones_like(mask)):
            for first in (False, True):
                seen.clear()
                got = bucketed(ids, m, first_only=first)
                assert seen and all(n == bucket_rows(n) or n == 4 for n in seen), seen  # 4: the [CLS] rows alone
                want = plain(ids, m, first_only=first)
                real = m.bool()[:, :1] if first else m.bool()
                if dtype == torch.float32:
                    torch.testing.assert_close(got[real], want[real], atol=2e-5, rtol=1e-5)
                else:  # bf16: another attention path (packed rows against padded), the same values to bf16 rounding
                    cos = F.cosine_similarity(got[real].float(), want[real].float(), dim=-1)
                    assert cos.min() > 0.999, cos.min()
                assert got[~real].eq(0).all() if not first else True


needs_x3 = pytest.mark.skipif(not __import__("embedstack.neural._attention", fromlist=["x"]).x3_supported(32, 32),
                              reason="no AMX build of embedstack's kernels here (the x3 product needs the tile unit)")


@needs_x3
@pytest.mark.parametrize("rows", [1, 13, 32, 77, 300])
@pytest.mark.parametrize("shape", [(64, 96), (384, 1152), (1536, 384)])
@pytest.mark.parametrize("bias", [True, False])
def test_the_x3_product_keeps_16_bits_against_float64(rows, shape, bias):
    """Three bf16 products keep about 16 of float32's 24 bits: the error against the float64 product is under
    2^-16 of the output's scale (float32's own: 2^-24 to 2^-21) and under a fiftieth of one bf16 product's; every row
    is written, odd counts included."""
    from embedstack.neural import _attention

    k, n = shape
    torch.manual_seed(rows + k)
    x = torch.randn(rows, k) * torch.rand(rows, 1) * 4  # rows of different scales
    lin = torch.nn.Linear(k, n, bias=bias)
    want = x.double() @ lin.weight.double().T + (lin.bias.double() if bias else 0)
    got = _attention.linear_x3(x, _attention.pack_x3(lin.weight), lin.bias.detach() if bias else None)
    scale = want.abs().max()
    bf16 = (F.linear(x.bfloat16(), lin.weight.bfloat16()).double() - want).abs().max() / scale
    err = (got.double() - want).abs().max() / scale
    assert got.shape == (rows, n) and got.dtype == torch.float32
    assert err < 2**-16, err
    assert err < bf16 / 50, (err, bf16)
    # GELU in the kernel: within the cubic's 2.5e-6 (plus the product's error) of torch's exact GELU
    gelu = _attention.linear_x3(x, _attention.pack_x3(lin.weight), lin.bias.detach() if bias else None, gelu=True)
    assert (gelu.double() - F.gelu(want)).abs().max() <= 3e-6 + 2**-16 * scale
    # strided rows (a slice of a wider tensor) read through their row stride
    wide = torch.randn(rows, k + 32)
    np.testing.assert_allclose(_attention.linear_x3(wide[:, :k], _attention.pack_x3(lin.weight), None).numpy(),
                               _attention.linear_x3(wide[:, :k].contiguous(), _attention.pack_x3(lin.weight),
                                                    None).numpy())


@needs_x3
def test_the_x3_product_refuses_shapes_it_cannot_run():
    from embedstack.neural import _attention

    assert not _attention.x3_supported(48, 64) and not _attention.x3_supported(64, 40)
    packed_w = _attention.pack_x3(torch.randn(32, 64))
    with pytest.raises(ValueError, match="must be a contiguous"):
        _attention.linear_x3(torch.randn(3, 64, dtype=torch.float64), packed_w, None)
    assert _attention.linear_x3(torch.randn(0, 64), packed_w, None).shape == (0, 32)


@needs_x3
@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
@pytest.mark.parametrize("T", [9, 300])
def test_an_x3_model_gives_float32_states_on_every_path(act, T):
    """pack_linears(x3=True): every block's products on the tiles, the activation after them; padded, packed and
    [CLS]-only paths within 1e-4 of the float32 model (its states are of order 1)."""
    torch.manual_seed(3)
    model = _model(act)
    fast = pack_linears(copy.deepcopy(model), x3=True)
    layer = fast.encoder.layer[0]
    assert isinstance(layer.attention.self.qkv, packed.X3Linear)
    assert isinstance(layer.intermediate.dense, packed.X3Linear) and layer.intermediate.dense.activation
    assert isinstance(layer.output.dense, packed.X3Linear)
    ids = torch.randint(5, 60, (4, T))
    lengths = torch.tensor([T, 2, T // 2, T - 1])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    with torch.inference_mode():
        for pack in (True, False):
            for first in (False, True):
                got = fast(ids, mask, pack=pack, first_only=first)
                want = model(ids, mask, pack=pack, first_only=first)
                real = mask.bool()[:, :1] if first else mask.bool()
                torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=1e-4)


def test_x3_leaves_a_model_it_cannot_run_alone(monkeypatch):
    """A bf16 model, or a CPU / build without the tiles: pack_linears(x3=True) changes nothing."""
    from embedstack.neural import _attention

    model = _model().to(torch.bfloat16)
    assert pack_linears(model, x3=True).encoder.layer[0].intermediate.dense.__class__ is torch.nn.Linear
    monkeypatch.setattr(_attention, "x3_supported", lambda k, n: False)
    model = _model()
    assert pack_linears(model, x3=True).encoder.layer[0].intermediate.dense.__class__ is torch.nn.Linear


@needs_x3
def test_an_x3_runner_puts_a_32_wide_model_on_the_tiles(tiny_tokenizer, tiny_config):
    """A model whose widths are multiples of 32: the fp32-bf16x3 runner's copy has X3Linear products and "x3"
    attention, its vectors within 1e-5 of fp32's; the encoder's own model stays plain."""
    import dataclasses

    from embedstack.neural.sentence import SentenceEncoder

    cfg = dataclasses.replace(tiny_config, hidden_size=64, num_attention_heads=2, intermediate_size=128)
    enc = SentenceEncoder(BertModel(cfg).init_weights(seed=0), tiny_tokenizer, max_seq_length=32)
    texts = ["a b c", "d e", "f g h i j k"] * 3
    x3 = enc.with_options(precision="fp32-bf16x3", workers=2)
    np.testing.assert_allclose(x3.encode(texts), enc.encode(texts), atol=1e-5)
    assert any(type(m) is packed.X3Linear for m in _runner_modules(x3))
    assert {m.implementation for m in x3._torch_model.attention_modules()} == {"x3"}
    assert {m.implementation for m in enc.model.attention_modules()} == {"auto"}


def test_the_fp32_bf16x3_runner_matches_fp32_and_refuses_compile(tiny_encoder):
    """precision='fp32-bf16x3' gives the fp32 vectors (to 1e-5) on its own copy of the weights, with the tiles where
    the CPU has them and plain fp32 where not; compile=True is refused with the fix named."""
    from embedstack.errors import ConfigError

    texts = ["a b c", "d e", "f g h i j k"]
    enc = tiny_encoder.with_options(precision="fp32-bf16x3")
    np.testing.assert_allclose(enc.encode(texts), tiny_encoder.with_options(precision="fp32").encode(texts),
                               atol=1e-5)
    assert all(type(m) is not packed.X3Linear for m in enc.model.modules())
    tiles = packed.x3_available(tiny_encoder.model)  # False for this 16-wide model: plain fp32, no copy
    assert any(type(m) is packed.X3Linear for m in _runner_modules(enc)) == tiles
    with pytest.raises(ConfigError, match="drop compile"):
        tiny_encoder.with_options(precision="fp32-bf16x3", compile=True)
