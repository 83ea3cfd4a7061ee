"""SPLADE: sparse term weights from BERT's MLM head, pruning, inference-free queries, explain, folders both
ways with sentence-transformers' SparseEncoder, training (ranking + FLOPS), and the MLM head for headless encoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedstack.errors import ConfigError, InputError, NotFittedError

torch = pytest.importorskip("torch")

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "red", "house", "tree", "ran", "fox", "quick",
         "brown", "lazy", "man", "over"]


@pytest.fixture(scope="module")
def sp_tokenizer():
    from embedstack.neural.tokenizer import WordPiece

    return WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])


@pytest.fixture
def tiny_splade(sp_tokenizer):
    from embedstack.neural.config import BertConfig
    from embedstack.neural.splade import SpladeEncoder
    from embedstack.neural.transformer import BertModel

    cfg = BertConfig(vocab_size=sp_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64)
    return SpladeEncoder(BertModel(cfg).init_weights(seed=0), sp_tokenizer, max_seq_length=32)


def test_vectors_are_max_pooled_log1p_relu_of_the_mlm_logits(tiny_splade, sp_tokenizer) -> None:
    texts = ["the cat sat on the mat", "a dog", ""]
    x = tiny_splade.encode_sparse(texts)
    assert x.shape == (3, sp_tokenizer.vocab_size) and x.dtype == np.float32 and (x.data > 0).all()
    ids, _ = sp_tokenizer.encode_batch(texts, max_length=32)
    with torch.no_grad():
        for i, row in enumerate(ids):
            states = tiny_splade.model(torch.from_numpy(row[None]), None)
            ref = torch.log1p(torch.relu(tiny_splade.head(states)))[0].amax(dim=0).numpy()
            assert np.allclose(x[[i]].toarray()[0], ref, atol=1e-5)
    pruned = tiny_splade.with_options(doc_top_k=3).encode_sparse(texts)
    assert (np.diff(pruned.indptr) <= 3).all()
    assert tiny_splade.encode_sparse([]).shape == (0, sp_tokenizer.vocab_size)
    with pytest.raises(InputError, match="list"):
        tiny_splade.encode_sparse("the cat")
    with pytest.raises(ConfigError, match="role"):
        tiny_splade.encode_sparse(["a"], role="passage")
    with pytest.raises(ConfigError, match="query_mode"):
        tiny_splade.with_options(query_mode="bm25")


def test_int8_max_logits_take_the_max_on_integer_sums_with_one_scale_per_text() -> None:
    from embedstack.neural.quantize import quantize_weight
    from embedstack.neural.splade import _max_logits, _max_logits_int8

    torch.manual_seed(0)
    x = torch.randn(3, 5, 16)
    x[2, 3:] = 1e4  # padding with huge values: masked, it must not set the text's scale
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2, 3:] = False
    weight, bias = torch.randn(40, 16), torch.randn(40)
    qweight, wscale = quantize_weight(weight)
    got = _max_logits_int8(x, mask, qweight, wscale, bias)
    ref, _ = _max_logits(x, mask, weight, bias)
    assert got.shape == (3, 40) and got.dtype == torch.float32
    assert float((got - ref).abs().max()) < 0.05 * float(ref.abs().max())
    # the same by hand: a scale per text over its attended tokens, int32 sums, max, then the scales and bias
    for b in range(3):
        xb = x[b, mask[b]]
        s = xb.abs().max() / 127
        sums = (xb / s).round() @ qweight.float().T
        torch.testing.assert_close(got[b], sums.max(0).values * s * wscale + bias, rtol=1e-5, atol=1e-4)


def test_float_max_logits_in_blocks_of_texts_and_vocabulary_equal_the_dense_max(monkeypatch) -> None:
    """Blocks that cut the texts and the vocabulary unevenly (the last of each shorter) give the dense result:
    the max over attended tokens, its position, and, without positions, the same values."""
    from embedstack.neural import splade

    torch.manual_seed(0)
    x = torch.randn(5, 7, 16)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[4, 1:] = False
    x[1, 4:] = 1e4  # padding with huge values must not win the max
    weight, bias = torch.randn(1000, 16), torch.randn(1000)
    logits = (x @ weight.T).masked_fill(~mask[:, :, None], float("-inf"))
    ref = logits.max(dim=1)
    monkeypatch.setattr(splade, "_DECODER_TOKENS", 14)  # 2 texts per product: 3 products, the last of 1 text
    monkeypatch.setattr(splade, "_DECODER_VOCAB_BLOCK", 256)  # 4 blocks of the vocabulary, the last 232 rows
    assert splade._decoder_blocks(7) == (2, 256)
    values, where = splade._max_logits(x, mask, weight, bias)
    torch.testing.assert_close(values, ref.values + bias)
    assert torch.equal(where, ref.indices)
    alone, none = splade._max_logits(x, mask, weight, bias, where=False)
    assert none is None and torch.equal(alone, values)


def test_inference_pooling_equals_the_training_path(tiny_splade, sp_tokenizer) -> None:
    from embedstack.neural.splade import splade_pool
    from embedstack.neural.tokenizer import pad_batch

    ids, _ = sp_tokenizer.encode_batch(["the cat sat on the mat", "a dog"], max_length=32)
    x, m = pad_batch(ids, sp_tokenizer.pad_id)
    mask = torch.from_numpy(m)
    states = tiny_splade.model(torch.from_numpy(x), mask).detach()
    trained = splade_pool(tiny_splade.head, states.clone().requires_grad_(), mask)
    assert trained.requires_grad
    with torch.no_grad():
        inferred = splade_pool(tiny_splade.head, states, mask)
    torch.testing.assert_close(inferred, trained.detach())


_PRODUCTS = ["int_mm", pytest.param("fbgemm", marks=pytest.mark.skipif(
    "fbgemm" not in torch.backends.quantized.supported_engines, reason="this torch build has no fbgemm engine"))]


@pytest.mark.parametrize("product", _PRODUCTS)
def test_int8_token_encodes_close_to_fp32_on_either_product(tiny_splade, monkeypatch, product) -> None:
    """The decoder's int8 products follow the transformer's (``int8_product``): torch._int_mm where the CPU has int8
    units, fbgemm elsewhere (forced here either way); the decoder copy is made again when the weights change."""
    monkeypatch.setenv("EMBEDSTACK_INT8_PRODUCT", product)
    texts = ["the cat sat on the mat", "a dog ran over the big red house", "fox"]
    ref = tiny_splade.encode_sparse(texts).toarray()
    q8 = tiny_splade.with_options(precision="int8-token")
    got = q8.encode_sparse(texts).toarray()
    assert q8.int8_product == product
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.95, cos
    assert q8._int8_decoder is not None
    key, made = q8._int8_decoder
    if product == "int_mm":
        assert isinstance(made, tuple) and made[0].dtype == torch.int8
    else:  # blocks of terms, every term once
        assert [(v, n) for v, n, _ in made] == [(0, q8.head.bias.shape[0])]
    with torch.no_grad():  # new weights (in place): the quantized decoder is made again
        q8.head.decoder.weight.mul_(2.0)
    again = q8.encode_sparse(texts).toarray()
    assert q8._int8_decoder[0] != key
    if product == "int_mm":
        torch.testing.assert_close(q8._int8_decoder[1][1], 2 * made[1])
    assert np.abs(again - got).max() > 0  # the doubled weights are in use
    q8.reset_runner()
    assert q8._int8_decoder is None


@pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines, reason="no fbgemm engine")
def test_fbgemm_decoder_max_logits_are_the_float_ones_within_int8_rounding(monkeypatch) -> None:
    """_max_logits_fbgemm against the float _max_logits: blocks of terms (the last one short), texts of different
    lengths, a mask with a hole, a text with no token at all (-inf, as the float path gives)."""
    from embedstack.neural import splade

    monkeypatch.setattr(splade, "_FBGEMM_VOCAB_BLOCK", 64)
    torch.manual_seed(0)
    x, weight, bias = torch.randn(4, 9, 32), torch.randn(150, 32), torch.randn(150)
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 3] = False
    mask[3] = False
    blocks = splade._fbgemm_decoder(weight)
    assert [(v, n) for v, n, _ in blocks] == [(0, 64), (64, 64), (128, 22)]
    got = splade._max_logits_fbgemm(x, mask, blocks, bias)
    ref = splade._max_logits(x, mask, weight, bias, where=False)[0]
    assert (got[3] == float("-inf")).all() and (ref[3] == float("-inf")).all()
    span = (ref[:3].amax(1) - ref[:3].amin(1)).min()
    assert (got[:3] - ref[:3]).abs().max() < 0.03 * span, ((got[:3] - ref[:3]).abs().max(), span)


@pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines, reason="no fbgemm engine")
def test_fbgemm_pack_refuses_weights_whose_pair_sums_could_saturate() -> None:
    from embedstack.neural.quantize import FBGEMM_WEIGHT_LEVELS, fbgemm_pack

    fbgemm_pack(torch.full((2, 4), FBGEMM_WEIGHT_LEVELS, dtype=torch.int8), torch.ones(2))
    with pytest.raises(ValueError, match="quantize_weight"):
        fbgemm_pack(torch.full((2, 4), -100, dtype=torch.int8), torch.ones(2))


def test_sparse_backward_equals_autograd_through_the_dense_logits(tiny_splade, sp_tokenizer) -> None:
    """The pooled weights and the gradients of the token states, the tied word embeddings and the bias equal
    autograd's through the full (B, T, |V|) logits; padded tokens get none."""
    from embedstack.neural.splade import splade_pool
    from embedstack.neural.tokenizer import pad_batch

    head = tiny_splade.head
    head.bias.data.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))  # some terms negative: ReLU acts
    ids, _ = sp_tokenizer.encode_batch(["the cat sat on the mat", "a dog", "quick brown fox over the lazy man"],
                                       max_length=32)
    x, m = pad_batch(ids, sp_tokenizer.pad_id)
    mask = torch.from_numpy(m)
    states = tiny_splade.model(torch.from_numpy(x), mask).detach()
    weights = torch.randn(3, sp_tokenizer.vocab_size, generator=torch.Generator().manual_seed(2))
    params = [head.decoder.weight, head.bias, *head.transform.parameters()]

    def grads(pool):
        s = states.clone().requires_grad_()
        for p in params:
            p.grad = None
        out = pool(s)
        (out * weights).sum().backward()
        return out.detach(), s.grad, [p.grad.clone() for p in params]

    def dense(s):
        logits = head(s).masked_fill(~mask.bool()[:, :, None], float("-inf"))
        return torch.log1p(torch.relu(logits)).amax(dim=1)

    ours, ref = grads(lambda s: splade_pool(head, s, mask)), grads(dense)
    assert (ours[0] > 0).any() and (ours[0] == 0).any()
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-4, atol=1e-6)
    assert not ours[1][~mask.bool()].any()
    for a, b in zip(ours[2], ref[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_inference_free_queries_are_idf_weighted_tokens(tiny_splade, monkeypatch: pytest.MonkeyPatch) -> None:
    idf_mode = tiny_splade.with_options(query_mode="idf")
    with pytest.raises(NotFittedError, match="fit_idf"):
        idf_mode.encode_sparse(["the cat"], role="query")
    idf_mode.fit_idf(["the cat sat", "the dog ran", "a red house"])
    monkeypatch.setattr(idf_mode, "_get_runner", lambda: pytest.fail("the transformer ran for an idf query"))
    q = idf_mode.encode_sparse(["the cat cat"], role="query")
    vocab = idf_mode.tokenizer.tokenizer.get_vocab()
    assert sorted(q.indices.tolist()) == sorted([vocab["the"], vocab["cat"]])
    assert q[[0]].toarray()[0, vocab["cat"]] > q[[0]].toarray()[0, vocab["the"]] > 0  # rarer is heavier


def test_explain_lists_terms_heaviest_first_with_expansion_flags(tiny_splade) -> None:
    terms = tiny_splade.explain("the cat sat", top=6)
    weights = [t["weight"] for t in terms]
    assert weights == sorted(weights, reverse=True) and len(terms) == 6
    assert {t["term"] for t in terms if t["in_text"]} <= {"the", "cat", "sat", "[CLS]", "[SEP]"}


def test_save_load_round_trip_and_sentence_transformers_both_ways(tiny_splade, tmp_path: Path) -> None:
    from embedstack.models import resolve
    from embedstack.neural.splade import SpladeEncoder, is_splade

    tiny_splade.fit_idf(["the cat sat", "a dog"])
    folder = tiny_splade.save(tmp_path / "sp")
    assert is_splade(folder)
    again = resolve(str(folder))
    assert isinstance(again, SpladeEncoder) and again.idf is not None
    texts = ["the cat sat on the mat", "quick brown fox"]
    ref = tiny_splade.encode_sparse(texts).toarray()
    assert np.allclose(again.encode_sparse(texts).toarray(), ref, atol=1e-6)
    st = pytest.importorskip("sentence_transformers")
    if not hasattr(st, "SparseEncoder"):
        pytest.skip("sentence-transformers < 5 has no SparseEncoder")
    theirs = st.SparseEncoder(str(folder), device="cpu")
    got = theirs.encode(texts, convert_to_tensor=True).to_dense().numpy()
    assert np.allclose(got, ref, atol=1e-4)
    theirs.save(str(tmp_path / "st"))
    back = SpladeEncoder.from_folder(tmp_path / "st")
    assert np.allclose(back.encode_sparse(texts).toarray(), ref, atol=1e-4)
    cfg = json.loads((folder / "1_SpladePooling" / "config.json").read_text())
    assert cfg["pooling_strategy"] == "max"


def _rows():
    from embedstack.training.data import TrainingData

    return TrainingData.from_columns({
        "anchor": ["the cat", "a dog", "red house", "quick fox", "big tree", "lazy man"],
        "positive": ["the cat sat on the mat", "a dog ran", "the red house", "the quick brown fox", "a big tree",
                     "the lazy man"],
        "negative_1": ["a dog ran", "the cat sat on the mat", "a big tree", "the lazy man", "the red house",
                       "the quick brown fox"]})


def test_training_ranks_and_flops_sparsifies(tiny_splade, sp_tokenizer, tmp_path: Path) -> None:
    from embedstack.neural.config import BertConfig
    from embedstack.neural.splade import SpladeEncoder
    from embedstack.neural.transformer import BertModel
    from embedstack.training.splade import SpladeLoss, SpladeTrainer
    from embedstack.training.trainer import TrainingArgs

    args = TrainingArgs(batch_size=3, epochs=8, lr=5e-3, warmup_ratio=0.0, precision="fp32", seed=0, log_steps=1)
    res = SpladeTrainer(tiny_splade, SpladeLoss(lambda_query=0.0, lambda_document=0.0), _rows(), args=args).train(
        out=tmp_path / "m")
    losses = [e["loss"] for e in res.log if "loss" in e]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert SpladeEncoder.from_folder(tmp_path / "m").encode_sparse(["the cat"]).nnz > 0
    cfg = BertConfig(vocab_size=sp_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64)
    dense_before = SpladeEncoder(BertModel(cfg).init_weights(seed=0), sp_tokenizer).encode_sparse(_rows().column("positive")).nnz
    strict = SpladeEncoder(BertModel(cfg).init_weights(seed=0), sp_tokenizer)
    SpladeTrainer(strict, SpladeLoss(lambda_query=1.0, lambda_document=1.0, lambda_warmup_steps=0), _rows(),
                  args=args).train()
    assert strict.encode_sparse(_rows().column("positive")).nnz < dense_before  # FLOPS prunes terms
    with pytest.raises(ConfigError, match="SpladeEncoder"):
        SpladeTrainer(object(), "splade", _rows())


def test_mlm_head_training_keeps_the_encoder_frozen_first(tmp_path: Path, sp_tokenizer) -> None:
    from embedstack.neural.config import BertConfig
    from embedstack.neural.mlm import train_mlm_head
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.neural.splade import SpladeEncoder
    from embedstack.neural.transformer import BertModel

    cfg = BertConfig(vocab_size=sp_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    enc = SentenceEncoder(BertModel(cfg).init_weights(seed=0), sp_tokenizer, max_seq_length=32)
    enc.save(tmp_path / "enc")
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    texts = [" ".join(np.random.default_rng(i).choice(WORDS, 20)) for i in range(64)]
    frozen = train_mlm_head(tmp_path / "enc", texts, frozen_steps=6, unfrozen_steps=0, batch_size=8, max_len=24,
                            lr=1e-2, precision="fp32")
    after = frozen.model.bert.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # only the head moved
    assert frozen.losses[-1][1] < frozen.losses[0][1] + 1.0
    both = train_mlm_head(tmp_path / "enc", texts, frozen_steps=2, unfrozen_steps=4, batch_size=8, max_len=24,
                          lr=1e-2, precision="fp32")
    assert not torch.equal(both.model.bert.embeddings.word_embeddings.weight, before["embeddings.word_embeddings.weight"])
    sp = SpladeEncoder(both.model.bert, sp_tokenizer, head=both.model.cls.predictions)
    sp.save(tmp_path / "sp")
    assert SpladeEncoder.from_folder(tmp_path / "sp").encode_sparse(["the cat"]).nnz > 0


def test_explain_cli(tiny_splade, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from embedstack.cli.app import app

    folder = tiny_splade.save(tmp_path / "sp")
    res = CliRunner().invoke(app, ["explain", "the cat sat", "--model", str(folder), "--json", "--top", "5"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["terms"]) == 5 and out["expansion_terms"] == sum(not t["in_text"] for t in out["terms"])
    res = CliRunner().invoke(app, ["explain", "the cat", "--model", "bm25"])
    assert res.exit_code == 2 and "SPLADE" in res.output


def test_an_empty_sparse_query_gives_an_empty_hit_list(tiny_splade, tmp_path: Path) -> None:
    from embedstack.retrieval.build import build_index, open_pipeline

    docs = ["the cat sat on the mat", "a dog ran over the tree", "the red house"]
    model = tiny_splade.with_options(query_mode="idf").fit_idf(docs)
    folder = model.save(tmp_path / "sp")
    build_index(docs, ["a", "b", "c"], model, spec=str(folder), out=tmp_path / "idx")
    q = model.encode_sparse([""], role="query")
    assert q.nnz == 0  # no token at all: an empty vector
    pipe = open_pipeline([tmp_path / "idx"])
    assert pipe.search("", k=3).hits == []
    assert len(pipe.search("cat", k=3).hits) >= 1  # an untrained model: some hits, in no particular order


def test_calibration_shifts_the_bias_without_changing_predictions(tiny_splade) -> None:
    texts = ["the cat sat on the mat", "a quick brown fox ran over the lazy dog", "the red house"]
    ids, _ = tiny_splade.tokenizer.encode_batch(texts, max_length=32)
    with torch.no_grad():
        tiny_splade.head.bias += 5.0  # a head whose logits are all positive: dense vectors
        states = tiny_splade.model(torch.from_numpy(ids[1][None]), None)[0]
        before = tiny_splade.head(states).argmax(dim=1)
    dense = np.diff(tiny_splade.encode_sparse(texts).indptr)
    tiny_splade.calibrate(texts, terms_per_token=3)
    with torch.no_grad():
        logits = tiny_splade.head(tiny_splade.model(torch.from_numpy(ids[1][None]), None)[0])
    assert torch.equal(logits.argmax(dim=1), before)  # the same masked-LM predictions
    assert 1 <= float((logits > 0).sum(dim=1).float().median()) <= 5
    assert (np.diff(tiny_splade.encode_sparse(texts).indptr) < dense).all()


def _fused_kernel() -> bool:
    from embedstack.neural import _attention

    return _attention.splade_supported(32)


@pytest.mark.skipif(not _fused_kernel(), reason="the SPLADE kernel needs a CPU with AMX or AVX-512 BF16 (and the kernel built)")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("tiles", [True, False])
@pytest.mark.parametrize("T", [45, 64])  # padded to 64 rows; already 64 (read in place)
def test_fused_kernel_max_equals_the_bf16_products_summed_in_float32(threads, tiles, T) -> None:
    """Texts of every length around the 32-row edge, a text with holes in its mask, one with no token at all,
    terms not a multiple of 32 (the padded last block), groups of texts past the fourth; on the AMX tiles and in
    AVX-512 BF16 registers."""
    from embedstack.neural import _attention

    if tiles and _attention.splade_kind() != "amx":
        pytest.skip("no AMX here")
    torch.manual_seed(threads)
    B, C, V = 6, 96, 1110  # 70 term blocks: a last work item of 6 blocks, the last 32 terms half padding
    x = torch.randn(B, T, C).to(torch.bfloat16)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 31:] = False
    mask[2] = False
    mask[3, ::3] = False
    mask[4, 33:] = False
    weight, bias = torch.randn(V, C) * 0.1, torch.randn(V)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _attention.splade_max(x, mask, _attention.pack_decoder(weight), bias, tiles=tiles)
    finally:
        torch.set_num_threads(old)
    ref = (x.double() @ weight.to(torch.bfloat16).double().T).masked_fill(~mask[:, :, None], -np.inf).amax(1)
    ref = ref + bias.double()
    assert got.shape == (B, V) and got.dtype == torch.float32
    assert torch.isneginf(got[2]).all()
    keep = [0, 1, 3, 4, 5]
    torch.testing.assert_close(got[keep].double(), ref[keep], rtol=0, atol=1e-4)


@pytest.mark.skipif(not _fused_kernel(), reason="the SPLADE kernel needs a CPU with AMX or AVX-512 BF16 (and the kernel built)")
def test_bf16_encoding_takes_the_fused_kernel_and_stays_close_to_fp32(sp_tokenizer) -> None:
    from embedstack.neural.config import BertConfig
    from embedstack.neural.splade import SpladeEncoder
    from embedstack.neural.transformer import BertModel

    cfg = BertConfig(vocab_size=sp_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    fp32 = SpladeEncoder(BertModel(cfg).init_weights(seed=0), sp_tokenizer, max_seq_length=48)
    texts = ["the cat sat on the mat", "a dog ran over the big red house " * 4, "fox", ""]
    ref = fp32.encode_sparse(texts).toarray()
    from embedstack.neural.quantize import ffn_onednn_available

    int8 = ("bf16-int8-ffn", "bf16-int8-all") if ffn_onednn_available(fp32.model, attention=True) is None else ()
    for precision in ("bf16", "bf16-pure", *int8):  # the bf16-int8 ones: bf16 states, their decoder fused too
        enc = fp32.with_options(precision=precision)
        assert enc._fused()
        got = enc.encode_sparse(texts).toarray()
        assert enc._packed_decoder is not None
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.99, (precision, cos)
        # the same states through the fused kernel and through torch's products in float32 on bf16 inputs
        from embedstack.neural.tokenizer import pad_batch

        ids, _ = sp_tokenizer.encode_batch(texts[:3], max_length=48)
        x, m = pad_batch(ids, sp_tokenizer.pad_id)
        with torch.inference_mode():
            states = enc._get_runner()(x, m)
            mask = torch.from_numpy(m).bool()
            fused = enc._pool_fused(states, mask)
            with enc._autocast():
                h = enc.head.transform(states)
            logits = h.to(torch.bfloat16).double() @ enc.head.decoder.weight.to(torch.bfloat16).double().T
            top = logits.masked_fill(~mask[:, :, None], -np.inf).amax(1) + enc.head.bias.double()
        torch.testing.assert_close(fused.double(), torch.log1p(torch.relu(top)), rtol=0, atol=1e-4)
        # two workers share the packed copy; a weight change (an optimiser step, calibrate) makes it again
        two = enc.with_options(workers=2).encode_sparse(texts * 4).toarray()
        np.testing.assert_allclose(two[:4], got, atol=1e-4)
        first = enc._packed_decoder[1]
        with torch.no_grad():
            enc.head.decoder.weight.mul_(-1.0)
        flipped = enc.encode_sparse(texts).toarray()
        assert enc._packed_decoder[1] is not first and not np.allclose(flipped, got)
        with torch.no_grad():
            enc.head.decoder.weight.mul_(-1.0)
        enc.reset_runner()
        assert enc._packed_decoder is None
    assert not fp32._fused() and not fp32.with_options(precision="int8-token")._fused()


def test_without_the_fused_kernel_bf16_takes_torch(tiny_splade, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedstack.neural import _attention

    monkeypatch.setattr(_attention, "splade_supported", lambda width: False)
    enc = tiny_splade.with_options(precision="bf16")
    assert not enc._fused()
    got = enc.encode_sparse(["the cat sat on the mat", "a dog"]).toarray()
    ref = tiny_splade.encode_sparse(["the cat sat on the mat", "a dog"]).toarray()
    assert enc._packed_decoder is None and got.shape == ref.shape
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.95, cos
