"""Masked-LM: the 80/10/10 collator, the tied head, a pretraining run whose loss falls, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embedstack.errors import ConfigError
from embedstack.neural.mlm import (
    IGNORE,
    BertForMaskedLM,
    MLMCollator,
    pack_sequences,
    pretrain_mlm,
    save_pretrained,
)

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the mat",
    "a big red house",
    "a small red house",
    "the quick brown fox jumps over the lazy dog",
    "the man is playing a guitar",
] * 20


def test_collator_rates_and_special_tokens():
    special = [0, 1, 2, 3, 4]
    col = MLMCollator(vocab_size=1000, mask_id=4, special_ids=special, pad_id=0, seed=0)
    rng = np.random.default_rng(1)
    seqs = [np.concatenate([[2], rng.integers(5, 1000, size=200), [3]]) for _ in range(100)]
    seqs.append(np.array([2, 9, 3]))  # a short one: padding in the batch
    batch = col(seqs)
    ids, labels, attn = batch["input_ids"].numpy(), batch["labels"].numpy(), batch["attention_mask"].numpy()
    original = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        original[i, : len(s)] = s
    selected = labels != IGNORE
    candidates = (original >= 5) & (attn == 1)
    assert not (selected & ~candidates).any()  # never a special token or padding
    assert np.array_equal(labels[selected], original[selected])
    rate = selected.sum() / candidates.sum()
    assert 0.14 < rate < 0.16
    masked = (ids == 4) & selected
    unchanged = (ids == original) & selected
    randomised = selected & ~masked & ~unchanged
    n = selected.sum()
    assert 0.78 < masked.sum() / n < 0.82
    assert 0.08 < unchanged.sum() / n < 0.12  # (a random draw can equal the original: 1 in 995)
    assert 0.08 < randomised.sum() / n < 0.12
    assert (ids[randomised] >= 5).all()  # random replacements are never special tokens
    assert np.array_equal(ids[~selected], original[~selected])


def test_collator_is_deterministic_and_never_empty():
    seqs = [np.array([2, 7, 3])]
    a = MLMCollator(vocab_size=10, mask_id=4, special_ids=[0, 1, 2, 3], seed=5)(seqs)
    b = MLMCollator(vocab_size=10, mask_id=4, special_ids=[0, 1, 2, 3], seed=5)(seqs)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert (a["labels"] != IGNORE).sum() == 1  # one token to predict even when 15% rounds to none
    with pytest.raises(ConfigError):
        MLMCollator(vocab_size=10, mask_id=4, special_ids=[], mlm_probability=1.5)


def test_decoder_is_tied_to_word_embeddings(tiny_config):
    m = BertForMaskedLM(tiny_config, seed=0)
    assert m.cls.predictions.decoder.weight is m.bert.embeddings.word_embeddings.weight
    names = {k for k, _ in m.named_parameters()}
    assert "cls.predictions.bias" in names and "bert.encoder.layer.0.attention.self.query.weight" in names


def test_pack_sequences(tiny_tokenizer):
    seqs = list(pack_sequences(["the cat sat on the mat " * 5], tiny_tokenizer, max_len=10, min_len=4))
    assert all(s[0] == tiny_tokenizer.cls_id and s[-1] == tiny_tokenizer.sep_id for s in seqs)
    assert [len(s) for s in seqs] == [10, 10, 10, 8]  # 30 tokens: 8 + 8 + 8 + 6
    assert len(list(pack_sequences(["the cat sat on the mat " * 5], tiny_tokenizer, max_len=10))) == 3


def test_pretraining_loss_falls_and_is_deterministic(tmp_path, tiny_tokenizer, tiny_config):
    kwargs = dict(minutes=None, max_steps=40, batch_size=16, max_len=16, lr=3e-3, warmup_steps=5, log_every=5)
    torch.set_num_threads(1)
    r1 = pretrain_mlm(CORPUS, tiny_tokenizer, tiny_config, seed=3, **kwargs)
    r2 = pretrain_mlm(CORPUS, tiny_tokenizer, tiny_config, seed=3, **kwargs)
    assert r1.steps == 40 and r1.losses == r2.losses
    first, last = r1.losses[0][1], r1.losses[-1][1]
    assert last < first - 0.5, r1.losses
    folder = save_pretrained(r1, tmp_path / "bert", max_seq_length=16)
    from embedstack.neural.sentence import SentenceEncoder

    enc = SentenceEncoder.from_folder(folder)
    assert enc.encode(["the cat"]).shape == (1, 16) and enc.max_seq_length == 16
    assert json.loads((folder / "training.json").read_text())["steps"] == 40
    with pytest.raises(ConfigError):
        pretrain_mlm(CORPUS, tiny_tokenizer, tiny_config, minutes=None, max_steps=None)


def test_bf16_mixed_precision_pretraining_loss_falls(tiny_tokenizer, tiny_config):
    kwargs = dict(minutes=None, max_steps=30, batch_size=16, max_len=16, lr=3e-3, warmup_steps=5, log_every=5)
    r = pretrain_mlm(CORPUS, tiny_tokenizer, tiny_config, seed=3, precision="bf16", **kwargs)
    assert r.losses[-1][1] < r.losses[0][1] - 0.5, r.losses
    assert all(p.dtype == torch.float32 for p in r.model.parameters())  # master weights stay fp32
    with pytest.raises(ConfigError, match="precision"):
        pretrain_mlm(CORPUS, tiny_tokenizer, tiny_config, minutes=None, max_steps=1, max_len=16, precision="fp16")


def test_cli_train_mlm(tmp_path):
    from typer.testing import CliRunner

    from embedstack.cli.app import app

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    res = CliRunner().invoke(app, ["train", "mlm", str(corpus), "--out", str(tmp_path / "m"), "--max-steps", "6",
                                   "--layers", "1", "--hidden", "16", "--heads", "2", "--max-len", "16",
                                   "--batch-size", "8", "--vocab-size", "120", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["steps"] == 6 and (tmp_path / "m" / "model.safetensors").is_file()
    bad = CliRunner().invoke(app, ["train", "mlm", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
