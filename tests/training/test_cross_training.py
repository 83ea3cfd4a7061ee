"""Cross-encoder losses and training: hand-computed losses, learning, bf16-pure, resume, the reranking evaluator."""

from __future__ import annotations

import doctest
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from embedstack.errors import ConfigError, InputError  # noqa: E402

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "small", "red", "house", "tree", "ran", "over",
         "quick", "brown", "fox", "jumps", "lazy", "man", "guitar", "playing", "is", "."]


def _ce(seed: int = 0):  # type: ignore[no-untyped-def]
    from embedstack.neural.config import BertConfig
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.neural.tokenizer import WordPiece
    from embedstack.neural.transformer import BertModel

    tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64)
    return CrossEncoder(BertModel(cfg).init_weights(seed=seed), tok, max_seq_length=32, name="tiny-ce")


def _groups(n: int = 32, k: int = 2, seed: int = 0) -> dict[str, list[str]]:
    """Queries whose positive repeats the query's words; negatives are other words."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[str]] = {"anchor": [], "positive": [], **{f"negative_{j + 1}": [] for j in range(k)}}
    for _ in range(n):
        q = rng.choice(WORDS[:12], size=2, replace=False).tolist()
        others = [w for w in WORDS[12:]]
        cols["anchor"].append(" ".join(q))
        cols["positive"].append(" ".join(q + rng.choice(others, size=2).tolist()))
        for j in range(k):
            cols[f"negative_{j + 1}"].append(" ".join(rng.choice(others, size=4).tolist()))
    return cols


def test_losses_match_hand_computed_values() -> None:
    from embedstack.training import ce_losses
    from embedstack.training.ce_losses import BinaryCrossEntropyLoss, ListwiseSoftmaxLoss, ScoreRegressionLoss

    assert doctest.testmod(ce_losses).failed == 0
    z = torch.tensor([2.0, -1.0, 0.5])
    y = torch.tensor([1, 0, 1])
    sig = [1 / (1 + math.exp(-v)) for v in (2.0, -1.0, 0.5)]
    want = -(math.log(sig[0]) + math.log(1 - sig[1]) + math.log(sig[2])) / 3
    assert float(BinaryCrossEntropyLoss()(z, y)) == pytest.approx(want, abs=1e-6)
    want_w = -(3 * math.log(sig[0]) + math.log(1 - sig[1]) + 3 * math.log(sig[2])) / 3
    assert float(BinaryCrossEntropyLoss(pos_weight=3.0)(z, y)) == pytest.approx(want_w, abs=1e-6)
    g = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    want_l = (-math.log(math.e / (math.e + 1 + math.exp(-1))) - math.log(1 / (2 + math.exp(2)))) / 2
    assert float(ListwiseSoftmaxLoss()(g)) == pytest.approx(want_l, abs=1e-6)
    assert float(ListwiseSoftmaxLoss(temperature=2.0)(g * 2)) == pytest.approx(want_l, abs=1e-6)
    s = torch.tensor([1.0, 0.0, 0.5])
    assert float(ScoreRegressionLoss()(z, s)) == pytest.approx(
        ((sig[0] - 1) ** 2 + sig[1] ** 2 + (sig[2] - 0.5) ** 2) / 3, abs=1e-6)
    with pytest.raises(InputError, match="labels must lie"):
        BinaryCrossEntropyLoss()(z, torch.tensor([2, 0, 1]))
    with pytest.raises(InputError, match="divide STS-B"):
        ScoreRegressionLoss()(z, torch.tensor([5.0, 0.0, 1.0]))
    with pytest.raises(InputError, match="at least one negative"):
        ListwiseSoftmaxLoss()(torch.zeros(2, 1))


@pytest.mark.parametrize("loss", ["listwise", "bce"])
def test_training_learns_to_rank_and_saves_a_cross_encoder_folder(tmp_path: Path, loss: str) -> None:
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.training import TrainingArgs, TrainingData
    from embedstack.training.cross import CrossEncoderTrainer, groups_to_labelled_pairs

    torch.manual_seed(0)
    train, test = _groups(48, seed=0), _groups(24, seed=1)
    data = TrainingData.from_columns(train)
    if loss == "bce":
        data = groups_to_labelled_pairs(data)
        assert len(data) == 3 * 48 and data.column("label")[:3] == [1, 0, 0]

    def accuracy(model: CrossEncoder) -> float:
        pos = model.predict(list(zip(test["anchor"], test["positive"], strict=True)))
        neg = model.predict(list(zip(test["anchor"], test["negative_1"], strict=True)))
        return float(np.mean(pos > neg))

    model = _ce()
    before = accuracy(model)
    # enough steps to learn the task, not just the class prior (6 epochs at 1e-3 left BCE at the prior, every
    # score within 1e-5 of the others, and accuracy a coin toss on float noise)
    args = TrainingArgs(epochs=15, batch_size=16, lr=3e-3, warmup_ratio=0.1, precision="fp32", seed=0)
    result = CrossEncoderTrainer(model, loss, data, args=args).train(out=tmp_path / "ce")
    assert result.final_loss < 0.8 * result.log[0]["loss"]
    assert accuracy(model) > max(before, 0.8)
    pos = model.predict(list(zip(test["anchor"], test["positive"], strict=True)))
    neg = model.predict(list(zip(test["anchor"], test["negative_1"], strict=True)))
    assert float(np.mean(pos) - np.mean(neg)) > 0.2  # a real margin, not float noise
    back = CrossEncoder.from_folder(tmp_path / "ce")
    np.testing.assert_allclose(back.predict([("the cat", "the cat sat")]), model.predict([("the cat", "the cat sat")]),
                               atol=1e-6)
    assert (tmp_path / "ce" / "training" / "log.jsonl").is_file()


class _OverlapTeacher:
    """Scores a pair by the words its query and document share (3 per word): a teacher that agrees with the task."""

    name = "overlap"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, pairs: Any, activation: bool = False) -> np.ndarray:
        self.calls += 1
        return np.array([3.0 * len(set(q.split()) & set(d.split())) for q, d in pairs])


def test_distillation_adds_a_kl_term_to_the_teacher_scores_and_learns() -> None:
    """With a teacher, the listwise loss gains distill_weight · KL(softmax(teacher / T) ‖ softmax(logits)) over each
    group, the teacher scored once before training; training with it still learns the task."""
    from embedstack.training import TrainingArgs, TrainingData
    from embedstack.training.ce_losses import ListwiseSoftmaxLoss
    from embedstack.training.cross import CrossEncoderTrainer

    cols = _groups(24, seed=0)
    data = TrainingData.from_columns(cols)
    teacher = _OverlapTeacher()
    args = TrainingArgs(epochs=1, batch_size=8, lr=1e-3, precision="fp32", seed=0)
    trainer = CrossEncoderTrainer(_ce(), ListwiseSoftmaxLoss(distill_weight=0.5, teacher_temperature=2.0), data,
                                  args=args, teacher=teacher)
    trainer._tokenize()
    trainer._work = trainer.model.model.eval()  # what train() runs (fp32: the model itself), without dropout
    assert teacher.calls == 1 and tuple(trainer._teacher_scores.shape) == (24, 3)
    rows = np.array([0, 5, 7])
    with torch.no_grad():
        got = float(trainer._batch_loss(rows))
        pairs = [(cols["anchor"][r], cols[c][r]) for r in rows for c in ("positive", "negative_1", "negative_2")]
        z = torch.as_tensor(trainer.model.predict(pairs, activation=False), dtype=torch.float32).reshape(3, 3)
        t = torch.as_tensor(teacher.predict(pairs), dtype=torch.float32).reshape(3, 3)
        p = torch.softmax(t / 2.0, dim=-1)
        kl = float((p * (torch.log(p) - torch.log_softmax(z, dim=-1))).sum(dim=-1).mean())
    assert got == pytest.approx(float(ListwiseSoftmaxLoss()(z)) + 0.5 * kl, abs=1e-4)
    torch.manual_seed(0)
    model = _ce()
    CrossEncoderTrainer(model, "listwise", data, args=TrainingArgs(epochs=15, batch_size=8, lr=3e-3, precision="fp32",
                                                                   seed=0), teacher=_OverlapTeacher()).train()
    test = _groups(24, seed=1)
    pos = model.predict(list(zip(test["anchor"], test["positive"], strict=True)))
    neg = model.predict(list(zip(test["anchor"], test["negative_1"], strict=True)))
    assert float(np.mean(pos > neg)) > 0.8
    pairs_only = TrainingData.from_columns({"anchor": ["a"], "positive": ["b"], "label": [1]})
    with pytest.raises(ConfigError, match="negative_1"):
        CrossEncoderTrainer(_ce(), "bce", pairs_only, teacher=teacher)
    from embedstack.training.run import train_cross_encoder

    with pytest.raises(ConfigError, match="listwise"):  # refused before the start model or the teacher is loaded
        train_cross_encoder("no-such-model", pairs_only, loss="bce", teacher="no-such-teacher")
    with pytest.raises(ConfigError, match="negative_1"):  # no groups to distil over
        CrossEncoderTrainer(_ce(), "listwise", TrainingData.from_columns({"anchor": ["a"], "positive": ["b"]}),
                            teacher=teacher)
    with pytest.raises(ConfigError, match="no distillation"):  # a bi-encoder's own trainer takes none
        from embedstack.neural.sentence import SentenceEncoder
        from embedstack.training import SentenceTrainer

        SentenceTrainer(SentenceEncoder(_ce().model, _ce().tokenizer, max_seq_length=32), "mnrl", data, teacher=teacher)
    with pytest.raises(ConfigError, match="distill_weight"):
        ListwiseSoftmaxLoss(distill_weight=-1.0)


def test_a_bi_encoder_teaches_through_its_scaled_cosines() -> None:
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.training.ranking import BiEncoderTeacher
    from embedstack.training.run import _load_teacher

    ce = _ce()
    enc = SentenceEncoder(ce.model, ce.tokenizer, max_seq_length=32)
    pairs = [("the cat", "the cat sat"), ("the cat", "a dog ran"), ("a dog", "a dog ran")]
    got = _load_teacher(enc, lambda _: None)
    assert isinstance(got, BiEncoderTeacher) and got.scale == 20.0
    q = enc.encode(["the cat", "the cat", "a dog"], role="query")
    d = enc.encode([b for _, b in pairs], role="document")
    cos = (q * d).sum(axis=1) / np.linalg.norm(q, axis=1) / np.linalg.norm(d, axis=1)
    np.testing.assert_allclose(got.predict(pairs), 20.0 * cos, atol=1e-5)
    assert _load_teacher(ce, lambda _: None) is ce  # a cross-encoder as it is
    with pytest.raises(ConfigError, match="score"):
        _load_teacher(object(), lambda _: None)
    with pytest.raises(ConfigError, match="encodes texts"):
        BiEncoderTeacher(object())
    with pytest.raises(ConfigError, match="scale"):
        BiEncoderTeacher(enc, scale=0.0)


def test_bf16_pure_trains_the_pooler_and_keeps_fp32_masters() -> None:
    from embedstack.training import TrainingArgs, TrainingData
    from embedstack.training.cross import CrossEncoderTrainer

    model = _ce()
    pooler_before = model.model.pooler.dense.weight.detach().clone()
    head_before = model.classifier.weight.detach().clone()
    args = TrainingArgs(max_steps=3, batch_size=8, lr=1e-3, precision="bf16-pure", seed=0)
    CrossEncoderTrainer(model, "listwise", TrainingData.from_columns(_groups(24)), args=args).train()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(model.model.pooler.dense.weight, pooler_before)  # its gradient reached the master copy
    assert not torch.equal(model.classifier.weight, head_before)
    assert not model.classifier.training and not model.model.training  # back in eval mode: no dropout in predict


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    from embedstack.training import TrainingArgs, TrainingData
    from embedstack.training.cross import CrossEncoderTrainer

    data = TrainingData.from_columns(_groups(32))
    args = TrainingArgs(max_steps=6, batch_size=8, lr=1e-3, precision="fp32", seed=0, save_steps=3)
    whole = _ce()
    CrossEncoderTrainer(whole, "listwise", data, args=args).train(out=tmp_path / "whole")
    cut = _ce()
    short = TrainingArgs(**{**args.__dict__, "max_steps": 6})
    trainer = CrossEncoderTrainer(cut, "listwise", data, args=short)
    calls = {"n": 0}

    def stop(info: dict) -> None:  # "killed" after step 4: the checkpoint holds step 3
        calls["n"] += 1
        if info["step"] == 4:
            raise KeyboardInterrupt

    trainer.progress = stop
    with pytest.raises(KeyboardInterrupt):
        trainer.train(out=tmp_path / "cut")
    again = _ce()
    CrossEncoderTrainer(again, "listwise", data, args=short).train(out=tmp_path / "cut", resume=True)
    for p, q in zip(whole.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_bad_runs_are_refused_clearly() -> None:
    from embedstack.training import TrainingArgs, TrainingData
    from embedstack.training.cross import CrossEncoderTrainer

    pairs = TrainingData.from_columns({"anchor": ["a"], "positive": ["b"]})
    with pytest.raises(ConfigError, match="Unknown cross-encoder loss"):
        CrossEncoderTrainer(_ce(), "mnrl", pairs)
    with pytest.raises(ConfigError, match="label"):
        CrossEncoderTrainer(_ce(), "bce", pairs, args=TrainingArgs(max_steps=1))
    with pytest.raises(ConfigError, match="CrossEncoder"):
        from embedstack.neural.sentence import SentenceEncoder

        CrossEncoderTrainer(SentenceEncoder(_ce().model, _ce().tokenizer, max_seq_length=32), "bce", pairs)


def test_rerank_evaluator_scores_the_first_stage_and_the_reranker() -> None:
    from embedstack.data import sample_retrieval
    from embedstack.training.evaluators import RerankEvaluator, evaluator_from_spec

    ds = sample_retrieval()
    ev = RerankEvaluator(ds, depth=5)
    assert 0 <= ev.first_stage["ndcg@10"] <= 100 and all(len(h) <= 5 for h in ev.hits)

    texts = dict(zip(ds.doc_ids(), ds.doc_texts(), strict=True))
    grade = {(ds.queries[q], texts[d]): g for q in ds.query_ids() for d, g in ds.qrels[q].items() if d in texts}

    class Oracle:  # scores each candidate by its judged grade: the best order of these candidates
        def predict(self, pairs, batch_size=32):  # type: ignore[no-untyped-def]
            return np.asarray([float(grade.get(p, 0)) for p in pairs])

    assert ev(Oracle())["ndcg@10"] >= ev.first_stage["ndcg@10"]
    with pytest.raises(ConfigError, match="depth"):
        evaluator_from_spec("rerank:scifact/train@x")


def test_sts_evaluator_scores_a_cross_encoder_by_its_pair_scores() -> None:
    from embedstack.data import STSDataset
    from embedstack.training.evaluators import STSEvaluator

    sts = STSDataset(["a b", "c d", "e f", "g h"], ["a b", "c x", "y z", "g h"], np.array([5.0, 3.0, 0.0, 4.0]))

    class ByGold:  # a pair scorer with no vectors: Spearman 100 when it orders pairs as the gold scores do
        def predict(self, pairs, batch_size=32):  # type: ignore[no-untyped-def]
            return np.asarray([{"a b": 5.0, "c d": 3.0, "e f": 0.0, "g h": 4.0}[a] for a, _ in pairs])

    r = STSEvaluator(sts)(ByGold())
    assert r["spearman"] == pytest.approx(100.0) and r["pearson"] > 90
    assert STSEvaluator(sts, max_pairs=3)(ByGold())["spearman"] == pytest.approx(100.0)


def test_a_cross_recipe_trains_a_cross_encoder_and_scores_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build_recipe runs a ``cross`` recipe through train_cross_encoder and scores the saved folder."""
    from embedstack.neural.cross_encoder import CrossEncoder
    from embedstack.training import recipes
    from embedstack.training.data import TrainingData

    ce = _ce()
    start = tmp_path / "start"
    ce.save(start)
    cols = _groups(24, k=1)
    rows = TrainingData.from_columns({"anchor": cols["anchor"] + cols["anchor"],
                                      "positive": cols["positive"] + cols["negative_1"],
                                      "score": [1.0] * 24 + [0.0] * 24})
    monkeypatch.setattr("embedstack.training.run.training_data", lambda spec, seed=0: rows)
    seen: dict[str, object] = {}

    def fake_report(folder, spec, stage=None):  # type: ignore[no-untyped-def]
        seen["model"] = CrossEncoder.from_folder(folder)
        return {"spearman": 1.0}

    monkeypatch.setattr(recipes, "report", fake_report)
    recipe = recipes.Recipe("tiny-ce", "test", "cross", str(start), ("rows",), "regression",
                            {"epochs": 1, "batch_size": 8, "lr": 1e-3, "seed": 0}, report="sts:stsb/test")
    summary, folder = recipes.build_recipe(recipe, out=tmp_path / "out")
    assert summary["train"]["steps"] == 6 and summary["report"] == {"spearman": 1.0}
    assert isinstance(seen["model"], CrossEncoder) and (folder / "config.json").is_file()


def test_recipe_precision_override_reaches_the_trainer_and_its_start(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``build_recipe(precision=)`` (``embedstack recipe --precision``) replaces the recipe's training precision,
    also for a ``recipe:NAME`` start built on the way; bad values and recipes without one are refused."""
    from types import SimpleNamespace

    from embedstack.errors import ConfigError
    from embedstack.training import recipes
    from embedstack.training.data import TrainingData

    seen: list[tuple[str, str]] = []

    def fake_train(start: str, data: Any, *, args: Any, out: Any, **_: Any) -> Any:
        seen.append((str(start), args.precision))
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "embedstack.json").write_text("{}")
        return SimpleNamespace(steps=1, seconds=0.1, pairs_per_second=1.0, best_metric=None)

    monkeypatch.setattr("embedstack.training.run.training_data", lambda spec, seed=0: TrainingData.from_columns(_groups(4, k=1)))
    monkeypatch.setattr("embedstack.training.run.train_sentence", fake_train)
    monkeypatch.setattr(recipes, "recipe_dir", lambda name: tmp_path / name)
    base = recipes.Recipe("base-bf16", "test", "sentence", "all-MiniLM-L6-v2", ("rows",), "mnrl",
                          {"epochs": 1, "batch_size": 4, "lr": 1e-3, "precision": "bf16", "seed": 0})
    top = recipes.Recipe("top-bf16", "test", "sentence", "recipe:base-bf16", ("rows",), "mnrl", dict(base.args))
    monkeypatch.setitem(recipes.RECIPES, "base-bf16", base)
    recipes.build_recipe(top, out=tmp_path / "top", precision="fp32", score=False)
    assert seen == [("all-MiniLM-L6-v2", "fp32"), (str(tmp_path / "base-bf16"), "fp32")]
    with pytest.raises(ConfigError, match="--precision"):
        recipes.build_recipe(top, out=tmp_path / "x", precision="fp16", score=False)
    bare = recipes.Recipe("no-precision", "test", "sentence", "all-MiniLM-L6-v2", ("rows",), "mnrl",
                          {"epochs": 1, "batch_size": 4, "lr": 1e-3, "seed": 0})
    with pytest.raises(ConfigError, match="no training precision"):
        recipes.build_recipe(bare, out=tmp_path / "y", precision="fp32", score=False)
