"""The BERT encoder itself: config, attention paths, positions, weight loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embedstack.errors import ConfigError, FormatError
from embedstack.neural.config import BertConfig
from embedstack.neural.transformer import BertModel, load_weights, save_weights, sinusoidal_table


def test_config_roundtrip_and_validation(tiny_config):
    assert BertConfig.from_dict(tiny_config.to_dict()) == tiny_config
    assert tiny_config.head_dim == 4
    with pytest.raises(ConfigError, match="divisible"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ConfigError, match="position_embedding_type"):
        BertConfig(position_embedding_type="rotary")
    with pytest.raises(ConfigError, match="only BERT"):
        BertConfig.from_dict({"model_type": "gpt2"})


def test_sdpa_and_reference_attention_agree(tiny_config):
    torch.manual_seed(0)
    model = BertModel(tiny_config).init_weights(seed=1).eval()
    ids = torch.randint(5, tiny_config.vocab_size, (3, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    with torch.no_grad():
        fast = model.set_attention("sdpa")(ids, mask)
        ref = model.set_attention("eager")(ids, mask)
    assert fast.shape == (3, 7, 16)
    real = mask.bool()
    assert torch.allclose(fast[real], ref[real], atol=1e-5)
    with pytest.raises(ConfigError):
        model.set_attention("flash")


def test_training_attention_equals_the_formula_and_ignores_padding():
    """With dropout (training), scores are computed from a scaled Q and the padding mask is added in place: the
    same values as softmax(Q Kᵀ / sqrt(D), padding filled) with the same dropout mask, no gradient to padded keys."""
    from embedstack.neural.transformer import BertSelfAttention, dropout

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g, requires_grad=True) for _ in range(3))
    keep = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]
    torch.manual_seed(4)
    y = BertSelfAttention.reference(q, k, v, keep, 0.2)
    torch.manual_seed(4)
    scores = (q @ k.transpose(-2, -1) / 8**0.5).masked_fill(~keep, torch.finfo(torch.float32).min)
    ref = dropout(scores.softmax(-1), 0.2, True) @ v
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    y.sum().backward()
    assert not v.grad[1, :, 3:].any() and not k.grad[1, :, 3:].any() and v.grad[1, :, :3].abs().sum() > 0


def test_padding_does_not_change_real_tokens(tiny_config):
    model = BertModel(tiny_config).init_weights(seed=2).eval()
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    padded = torch.tensor([[2, 7, 8, 9, 3, 0, 0]])
    with torch.no_grad():
        alone = model(ids, torch.ones_like(ids))
        inside = model(padded, torch.tensor([[1, 1, 1, 1, 1, 0, 0]]))
    assert torch.allclose(alone[0], inside[0, :5], atol=1e-5)


def test_unpadded_batch_takes_the_unmasked_kernel_with_the_same_result(tiny_config, monkeypatch):
    import torch.nn.functional as F

    model = BertModel(tiny_config).init_weights(seed=4).eval()
    ids = torch.randint(5, tiny_config.vocab_size, (2, 6))
    seen = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0):
        seen.append(attn_mask)
        return real_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        full = model(ids, torch.ones_like(ids))
        assert all(m is None for m in seen)  # no padding: no mask built
        seen.clear()
        masked = model(torch.cat([ids, torch.zeros(2, 1, dtype=torch.long)], 1),
                       torch.cat([torch.ones_like(ids), torch.zeros(2, 1, dtype=torch.long)], 1))
        assert all(m is not None for m in seen) and seen
    assert torch.allclose(full, masked[:, :6], atol=1e-5)


def test_sinusoidal_positions_by_hand():
    table = sinusoidal_table(4, 6)
    assert table.shape == (4, 6)
    assert table[0].tolist() == pytest.approx([0, 1, 0, 1, 0, 1])
    # position 1, feature pair 1: frequency 10000^(-2/6)
    f = 10000 ** (-2 / 6)
    assert float(table[1, 2]) == pytest.approx(math.sin(f), abs=1e-6)
    assert float(table[1, 3]) == pytest.approx(math.cos(f), abs=1e-6)
    cfg = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, position_embedding_type="sinusoidal")
    model = BertModel(cfg)
    assert not any("position" in k for k in model.state_dict())  # nothing learned, nothing saved
    assert model(torch.tensor([[2, 5, 3]])).shape == (1, 3, 8)


def test_save_and_load_weights_roundtrip(tmp_path, tiny_config):
    model = BertModel(tiny_config).init_weights(seed=3)
    save_weights(model, tmp_path / "model.safetensors")
    other = load_weights(BertModel(tiny_config), tmp_path / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])


def test_load_weights_errors_name_the_file(tmp_path, tiny_config):
    with pytest.raises(FormatError, match="model.safetensors"):
        load_weights(BertModel(tiny_config), tmp_path / "model.safetensors")
    from safetensors.numpy import save_file

    save_file({"embeddings.word_embeddings.weight": np.zeros((3, 3), np.float32)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(FormatError, match="shape"):
        load_weights(BertModel(tiny_config), tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(FormatError, match="junk.safetensors"):
        load_weights(BertModel(tiny_config), tmp_path / "junk.safetensors")


def test_hf_prefixed_and_tf_era_keys_are_mapped(tmp_path, tiny_config):
    from safetensors.torch import save_file

    model = BertModel(tiny_config).init_weights(seed=4)
    renamed = {}
    for k, v in model.state_dict().items():
        k = "bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed[k] = v.contiguous()
    renamed["cls.predictions.bias"] = torch.zeros(tiny_config.vocab_size)
    save_file(renamed, str(tmp_path / "m.safetensors"))
    other = load_weights(BertModel(tiny_config), tmp_path / "m.safetensors")
    assert torch.equal(other.embeddings.LayerNorm.weight, model.embeddings.LayerNorm.weight)


def test_too_long_input_raises(tiny_config):
    model = BertModel(tiny_config)
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        model(torch.zeros((1, 65), dtype=torch.long))


def _ragged_batch(tiny_config):  # type: ignore[no-untyped-def]
    """A tiny model in eval mode and a batch of 4 rows of 3, 12, 5 and 2 real tokens (padded to 12)."""
    model = BertModel(tiny_config).init_weights(seed=0).eval()
    lengths = [3, 12, 5, 2]
    ids = torch.randint(5, tiny_config.vocab_size, (4, 12))
    mask = torch.zeros(4, 12, dtype=torch.int64)
    for r, n in enumerate(lengths):
        mask[r, :n] = 1
    return model, lengths, ids, mask


def _count_linear_rows(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """The number of rows (tokens) of every F.linear input from now on."""
    import embedstack.neural.transformer as tr

    rows: list[int] = []
    real_linear = torch.nn.functional.linear
    monkeypatch.setattr(tr.F, "linear", lambda x, *a, **k: (rows.append(x.numel() // x.shape[-1]),
                                                         real_linear(x, *a, **k))[1], raising=False)
    return rows


@pytest.mark.parametrize("row_by_row", [False, True])
def test_packed_inference_computes_real_tokens_only_with_the_same_outputs(tiny_config, monkeypatch, row_by_row):
    """A mostly padded batch runs its projections and MLP on real tokens only: same outputs at real
    positions, zeros at padding; pack=False (ColBERT queries read masked positions) and training do not pack.
    Long rows (here: any row) attend one at a time, unpadded, with the same outputs."""
    import embedstack.neural.transformer as tr

    if row_by_row:
        monkeypatch.setattr(tr, "VARLEN_MIN_TOKENS", 1)

    model, lengths, ids, mask = _ragged_batch(tiny_config)
    rows = _count_linear_rows(monkeypatch)
    with torch.inference_mode():
        full = model(ids, mask, pack=False)
        rows.clear()
        packed = model(ids, mask)
    assert rows and set(rows) == {sum(lengths)}  # every projection saw the 22 real tokens, not 4 x 12
    real = mask.bool()
    torch.testing.assert_close(packed[real], full[real], atol=1e-5, rtol=1e-5)
    assert float(packed[~real].abs().max()) == 0.0
    assert float(full[~real].abs().max()) > 0.0  # unpacked: masked positions have outputs (ColBERT reads them)
    monkeypatch.setattr(tr, "PACK_BELOW", 0.0)  # never worth it: the padded path
    with torch.inference_mode():
        torch.testing.assert_close(model(ids, mask), full)
    model.train()
    with torch.no_grad():
        assert float(model(ids, mask)[~real].abs().max()) > 0.0  # training mode never packs


@pytest.mark.parametrize("pack", [True, False])
def test_first_only_gives_row_0_and_runs_the_last_block_on_it_alone(tiny_config, monkeypatch, pack):
    """A [CLS] head (cross-encoders) needs row 0 of the last block: its queries, output projection and
    MLP then run on B rows instead of every token; the values and the gradients are the full model's."""
    import embedstack.neural.transformer as tr

    model, lengths, ids, mask = _ragged_batch(tiny_config)
    real_linear = torch.nn.functional.linear
    rows = _count_linear_rows(monkeypatch)
    with torch.inference_mode():
        full = model(ids, mask, pack=pack)
        rows.clear()
        first = model(ids, mask, pack=pack, first_only=True)
        unmasked = model(ids, None, first_only=True)
        unmasked_full = model(ids, None)
    assert first.shape == (4, 1, tiny_config.hidden_size)
    torch.testing.assert_close(first[:, 0], full[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unmasked[:, 0], unmasked_full[:, 0], atol=1e-5, rtol=1e-5)
    per_block = 6  # query, key, value, attention output, MLP in, MLP out
    tokens = sum(lengths) if pack else 4 * 12
    last = rows[(tiny_config.num_hidden_layers - 1) * per_block: tiny_config.num_hidden_layers * per_block]
    assert sorted(last) == sorted([4, tokens, tokens, 4, 4, 4])  # keys and values still see every token
    monkeypatch.setattr(tr.F, "linear", real_linear)
    grads = []
    for first_only in (False, True):
        model.zero_grad()
        model(ids, mask, first_only=first_only)[:, 0].pow(2).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("parallel", [True, False])
def test_dropout_keeps_1_minus_p_scales_and_is_reproducible(monkeypatch, parallel):
    """Both mask sources (the parallel hash kernel, torch's generator): the drop rate is p, the kept
    elements are scaled by 1/(1-p), the gradient goes through the same mask, torch.manual_seed repeats it."""
    import embedstack.neural.transformer as tr

    if not parallel:
        monkeypatch.setattr(tr, "_parallel_mask", lambda: None)
    elif tr._parallel_mask() is None:
        pytest.skip("numba (the fast extra) is not installed")
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(7)
    y = tr.dropout(x, 0.1, True)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - 0.1) < 0.002  # 1e6 draws: binomial sd 3e-4
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(sum)/dx = mask / (1 - p), the forward's own mask
    torch.manual_seed(7)
    assert torch.equal(tr.dropout(x, 0.1, True), y)
    assert not torch.equal(tr.dropout(x, 0.1, True), y)  # the next call draws a new mask
    assert tr.dropout(x, 0.1, False) is x and tr.dropout(x, 0.0, True) is x


def test_parallel_dropout_mask_is_uniform_and_uncorrelated():
    kernel = pytest.importorskip("embedstack.neural._dropout_kernel")
    m = kernel.keep_mask(2_000_000, 0.25, 123)
    drop = ~m
    assert abs(drop.mean() - 0.25) < 0.002
    assert abs((drop[:-1] & drop[1:]).mean() - 0.25**2) < 0.002  # neighbours independent
    assert abs((drop[:-64] & drop[64:]).mean() - 0.25**2) < 0.002
    assert np.array_equal(kernel.keep_mask(1000, 0.25, 123), m[:1000])  # element i depends on (seed, i) only
    assert not np.array_equal(kernel.keep_mask(1000, 0.25, 124), m[:1000])
    assert kernel.keep_mask(10_000, 0.5, 1).mean() == pytest.approx(0.5, abs=0.03)


def test_mask_free_dropout_applies_the_same_mask_forward_and_backward():
    """float32 dropout stores no mask: the kernel scales kept elements from the seed, and the gradient is
    scaled from the same seed, so it equals keep_mask's mask / (1 - p) both ways; other dtypes keep a mask."""
    kernel = pytest.importorskip("embedstack.neural._dropout_kernel")
    import embedstack.neural.transformer as tr

    x = np.random.default_rng(0).standard_normal((3, 5, 7001)).astype(np.float32)  # not a multiple of the block
    keep = kernel.keep_mask(x.size, 0.3, 99).reshape(x.shape)
    np.testing.assert_allclose(kernel.scale_kept(x, 0.3, 99), x * keep / np.float32(0.7), rtol=1e-6)
    t = torch.from_numpy(x).requires_grad_()
    torch.manual_seed(3)
    y = tr.dropout(t, 0.3, True)
    assert y.grad_fn is not None and "HashDropout" in type(y.grad_fn).__name__
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(y == 0, t.grad == 0)  # x and g are nonzero: zeros are exactly the dropped elements
    assert torch.allclose(t.grad * torch.from_numpy(x), g * y)  # same kept elements, same 1 / (1 - p)
    torch.manual_seed(3)
    half = tr.dropout(t.detach().to(torch.bfloat16), 0.3, True)  # bf16: the stored-mask path, the same draw
    assert torch.equal(half == 0, y == 0)
