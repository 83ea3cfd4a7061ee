"""The sentence trainer: it learns, resumes bit-exactly after SIGKILL, and refuses bad runs clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from embedstack.errors import ConfigError, InputError, ModelMismatch, OutputExistsError  # noqa: E402

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "small", "red", "house", "tree", "ran", "over",
         "quick", "brown", "fox", "jumps", "lazy", "man", "guitar", "playing", "is", "."]


def _encoder(seed: int = 0, dropout: float = 0.1):  # type: ignore[no-untyped-def]
    from embedstack.neural.config import BertConfig
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.neural.tokenizer import WordPiece
    from embedstack.neural.transformer import BertModel

    tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    return SentenceEncoder(BertModel(cfg).init_weights(seed=seed), tok, max_seq_length=32, name="tiny")


def _pairs(n: int = 48, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    anchors, positives, scores = [], [], []
    for i in range(n):
        words = list(rng.choice(WORDS[:-1], size=int(rng.integers(2, 9))))
        anchors.append(" ".join(words) + f" {WORDS[i % 23]}")
        rng.shuffle(words)
        positives.append(" ".join(words[: max(1, len(words) - 1)]))
        scores.append(float(rng.uniform(0, 5)))
    return {"anchor": anchors, "positive": positives, "score": scores}


def _data(n: int = 48, columns: tuple[str, ...] = ("anchor", "positive", "score")):  # type: ignore[no-untyped-def]
    from embedstack.training import TrainingData

    return TrainingData.from_columns({k: v for k, v in _pairs(n).items() if k in columns})


def _flat(enc) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.cat([p.detach().flatten() for p in enc.model.parameters()])


def test_training_lowers_the_loss_and_saves_a_folder_that_loads(tmp_path: Path) -> None:
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.training import SentenceTrainer, TrainingArgs

    enc = _encoder(dropout=0.0)
    before = _flat(enc).clone()
    args = TrainingArgs(batch_size=16, epochs=6, lr=1e-3, precision="fp32", log_steps=1, warmup_ratio=0.0)
    result = SentenceTrainer(enc, "mnrl", _data(columns=("anchor", "positive")), args=args).train(out=tmp_path / "m")
    losses = [e["loss"] for e in result.log if "loss" in e]
    assert result.steps == 18 and len(losses) == 18
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert not torch.equal(before, _flat(enc))
    again = SentenceEncoder.from_folder(tmp_path / "m")
    assert torch.equal(_flat(again), _flat(enc))
    assert (tmp_path / "m" / "training" / "log.jsonl").is_file()
    summary = json.loads((tmp_path / "m" / "training" / "result.json").read_text())
    assert summary["steps"] == 18 and summary["loss"] == "MultipleNegativesRankingLoss"
    assert not (tmp_path / "m.ckpt").exists()  # removed after a successful run


@pytest.mark.parametrize("precision", ["bf16", "bf16-pure"])
def test_bf16_precisions_train_and_keep_fp32_master_weights(precision: str) -> None:
    from embedstack.training import SentenceTrainer, TrainingArgs

    enc = _encoder(dropout=0.0)
    args = TrainingArgs(batch_size=16, epochs=4, lr=1e-3, precision=precision, log_steps=1, warmup_ratio=0.0)
    result = SentenceTrainer(enc, "cosent", _data(), args=args).train()
    losses = [e["loss"] for e in result.log]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert all(p.dtype == torch.float32 for p in enc.model.parameters())


def test_gradient_accumulation_equals_the_large_batch() -> None:
    """2 x 16 accumulated = 1 x 32 for a per-row mean loss (same rows: plain shuffling, no dropout)."""
    from embedstack.training import SentenceTrainer, TrainingArgs, make_loss

    runs = []
    for batch, accum in ((32, 1), (16, 2)):
        enc = _encoder(dropout=0.0)
        args = TrainingArgs(batch_size=batch, grad_accum=accum, max_steps=3, lr=1e-3, precision="fp32",
                            warmup_ratio=0.0, min_piece_rows=64)
        SentenceTrainer(enc, make_loss("cosine", enc, score_range=(0.0, 5.0)), _data(96), args=args).train()
        runs.append(_flat(enc))
    assert torch.allclose(runs[0], runs[1], atol=1e-6)


def test_forward_ids_pieces_give_the_same_vectors_as_encode() -> None:
    enc = _encoder(dropout=0.0)
    texts = ["the cat", "a big red house over the tree " * 3, "dog", "quick brown fox jumps over the lazy dog"] * 5
    ids = enc._tokenize(texts, "")
    enc.model.eval()
    with torch.no_grad():
        got = enc.forward_ids(ids, min_rows=2).numpy()
    assert np.allclose(got, enc.encode(texts), atol=1e-5)


_CHILD = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.training import SentenceTrainer, TrainingArgs, load_training_data
    model, data, out, kill_at, resume = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
    enc = SentenceEncoder.from_folder(model)
    def progress(info):
        if info["step"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    args = TrainingArgs(batch_size=8, max_steps=9, lr=5e-4, precision="fp32", save_steps=2, seed=3)
    SentenceTrainer(enc, "mnrl", load_training_data(data), args=args, progress=progress).train(
        out=out, resume=resume, keep_checkpoints=True)
""")


def _child(*argv: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", EMBEDSTACK_VERIFY="1")
    return subprocess.run([sys.executable, "-c", _CHILD, *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def test_a_run_killed_with_sigkill_and_resumed_ends_with_the_same_weights(tmp_path: Path) -> None:
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.training import TrainingData

    model = _encoder(seed=1, dropout=0.1).save(tmp_path / "base")
    data = TrainingData.from_columns({k: v for k, v in _pairs(40).items() if k != "score"}).to_jsonl(tmp_path / "d.jsonl")
    whole = _child(model, data, tmp_path / "whole", 0, 0)
    assert whole.returncode == 0, whole.stderr
    killed = _child(model, data, tmp_path / "cut", 5, 0)  # after step 5; the checkpoint holds step 4
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut").exists()
    state = json.loads((tmp_path / "cut.ckpt" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 4
    resumed = _child(model, data, tmp_path / "cut", 0, 1)
    assert resumed.returncode == 0, resumed.stderr
    a = SentenceEncoder.from_folder(tmp_path / "whole")
    b = SentenceEncoder.from_folder(tmp_path / "cut")
    assert torch.equal(_flat(a), _flat(b))
    assert not torch.equal(_flat(a), _flat(SentenceEncoder.from_folder(model)))


def test_nan_loss_stops_naming_step_and_batch_and_saves_nothing(tmp_path: Path) -> None:
    from embedstack.training import SentenceTrainer, TrainingArgs, TrainingData, TrainingError

    cols = _pairs(32)
    for i in range(32):
        cols["anchor"][i] = cols["anchor"][i].replace("guitar", "man")
    cols["anchor"][21] = "guitar"  # the only row reaching the poisoned embedding row
    data = TrainingData.from_columns(cols)
    enc = _encoder()
    with torch.no_grad():
        enc.model.embeddings.word_embeddings.weight[enc.tokenizer.tokenizer.token_to_id("guitar")] = float("nan")
    args = TrainingArgs(batch_size=8, epochs=1, precision="fp32", save_steps=1, seed=0)
    with pytest.raises(TrainingError) as err:
        SentenceTrainer(enc, "cosent", data, args=args).train(out=tmp_path / "m")
    msg = str(err.value)
    assert "loss became nan at step" in msg and "21" in msg.split("rows [")[1].split("]")[0] and "--lr" in msg
    assert not (tmp_path / "m").exists()
    assert not (tmp_path / "m.ckpt" / "last").exists()  # a checkpoint with NaN weights is never written


def test_resume_from_a_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    from embedstack.training import SentenceTrainer, TrainingArgs

    args = TrainingArgs(batch_size=8, max_steps=2, precision="fp32", save_steps=1)
    SentenceTrainer(_encoder(), "cosent", _data(16), args=args).train(out=tmp_path / "m", keep_checkpoints=True)
    with pytest.raises(ModelMismatch, match="another run"):
        SentenceTrainer(_encoder(), "cosent", _data(24), args=args).train(out=tmp_path / "m", resume=True, force=True)
    with pytest.raises(ConfigError, match="--resume|resume"):  # a fresh run never silently overwrites a checkpoint
        SentenceTrainer(_encoder(), "cosent", _data(16), args=args).train(out=tmp_path / "m", force=True)


def test_disk_full_mid_checkpoint_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import embedstack.training.checkpoint as ck
    from embedstack.training import SentenceTrainer, TrainingArgs, TrainingError

    args = TrainingArgs(batch_size=8, max_steps=4, precision="fp32", save_steps=1)
    real = ck.save_checkpoint
    calls = {"n": 0}

    def flaky(path, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            def full(tmp: Path) -> None:
                (tmp / "partial.bin").write_bytes(b"x" * 10)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, extra=full, **kw)
        return real(path, **kw)

    monkeypatch.setattr("embedstack.training.trainer.save_checkpoint", flaky)
    with pytest.raises(TrainingError, match="previous checkpoint there is intact"):
        SentenceTrainer(_encoder(), "cosent", _data(40), args=args).train(out=tmp_path / "m")
    last = tmp_path / "m.ckpt" / "last"
    assert json.loads((last / "trainer_state.json").read_text())["step"] == 2
    assert not (last / "partial.bin").exists()
    monkeypatch.setattr("embedstack.training.trainer.save_checkpoint", real)
    result = SentenceTrainer(_encoder(), "cosent", _data(40), args=args).train(out=tmp_path / "m", resume=True)
    assert result.resumed_from == 2 and result.steps == 4


def test_a_loss_that_does_not_fit_the_columns_names_both() -> None:
    from embedstack.training import SentenceTrainer

    with pytest.raises(ConfigError) as err:
        SentenceTrainer(_encoder(), "cosent", _data(columns=("anchor", "positive")))
    assert "CoSENTLoss" in str(err.value) and "score" in str(err.value) and "'anchor', 'positive'" in str(err.value)
    with pytest.raises(ConfigError, match="Unknown loss 'mnlr'"):
        SentenceTrainer(_encoder(), "mnlr", _data())


def test_empty_data_and_an_occupied_output_are_refused_before_training(tmp_path: Path) -> None:
    from embedstack.training import SentenceTrainer, TrainingArgs, TrainingData

    with pytest.raises(InputError):
        SentenceTrainer(_encoder(), "mnrl", TrainingData.from_columns({"anchor": [], "positive": []}))
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        SentenceTrainer(_encoder(), "cosent", _data(), args=TrainingArgs(max_steps=1)).train(out=tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_evaluation_selects_the_best_checkpoint(tmp_path: Path) -> None:
    from embedstack.training import SentenceTrainer, TrainingArgs

    seen: list[int] = []

    class Evaluator:
        primary = "score"
        name = "fake"

        def __call__(self, encoder) -> dict[str, float]:  # type: ignore[no-untyped-def]
            seen.append(len(seen))
            return {"score": [1.0, 5.0, 2.0][len(seen) - 1]}  # the second evaluation (step 2) is the best

    enc = _encoder(dropout=0.0)
    args = TrainingArgs(batch_size=8, max_steps=3, eval_steps=1, lr=1e-3, precision="fp32", warmup_ratio=0.0)
    snapshot: dict[int, torch.Tensor] = {}

    def progress(info: dict) -> None:  # type: ignore[type-arg]
        snapshot[info["step"]] = _flat(enc).clone()

    result = SentenceTrainer(enc, "cosent", _data(24), args=args, evaluator=Evaluator(), progress=progress).train(
        out=tmp_path / "m")
    assert result.best_step == 2 and result.best_metric == 5.0
    from embedstack.neural.sentence import SentenceEncoder

    assert torch.allclose(_flat(SentenceEncoder.from_folder(tmp_path / "m")), snapshot[2])


def test_sentence_transformers_loads_the_result_and_its_folders_train_here(tmp_path: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.training import SentenceTrainer, TrainingArgs

    enc = _encoder(dropout=0.0)
    SentenceTrainer(enc, "cosent", _data(16), args=TrainingArgs(max_steps=2, precision="fp32")).train(
        out=tmp_path / "ours")
    theirs = st.SentenceTransformer(str(tmp_path / "ours"), device="cpu")
    texts = ["the cat sat on the mat", "a quick brown fox"]
    assert np.allclose(theirs.encode(texts), SentenceEncoder.from_folder(tmp_path / "ours").encode(texts), atol=1e-5)
    theirs.save(str(tmp_path / "st-saved"))  # a folder written by sentence-transformers trains here too
    again = SentenceEncoder.from_folder(tmp_path / "st-saved")
    r = SentenceTrainer(again, "cosent", _data(16), args=TrainingArgs(max_steps=1, precision="fp32")).train()
    assert r.steps == 1


def test_cached_mnrl_in_the_trainer_matches_plain_mnrl() -> None:
    """GradCache through the trainer: chunks of 4 rows give the weights of one full-batch MNRL step."""
    from embedstack.training import SentenceTrainer, TrainingArgs

    runs = []
    for loss in ("mnrl", "cached-mnrl"):
        enc = _encoder(dropout=0.0)
        args = TrainingArgs(batch_size=16, max_steps=2, lr=1e-3, precision="fp32", warmup_ratio=0.0, mini_batch_size=4,
                            min_piece_rows=64)
        SentenceTrainer(enc, loss, _data(32, columns=("anchor", "positive")), args=args).train()
        runs.append(_flat(enc))
    assert torch.allclose(runs[0], runs[1], atol=1e-5)


def test_without_a_folder_the_best_evaluation_is_still_what_comes_back() -> None:
    from embedstack.training import SentenceTrainer, TrainingArgs

    class Evaluator:
        primary = "score"
        calls = 0

        def __call__(self, encoder) -> dict[str, float]:  # type: ignore[no-untyped-def]
            Evaluator.calls += 1
            return {"score": [1.0, 5.0, 2.0][Evaluator.calls - 1]}

    enc = _encoder(dropout=0.0)
    snapshot: dict[int, torch.Tensor] = {}
    args = TrainingArgs(batch_size=8, max_steps=3, eval_steps=1, lr=1e-3, precision="fp32", warmup_ratio=0.0)
    result = SentenceTrainer(enc, "cosent", _data(24), args=args, evaluator=Evaluator(),
                             progress=lambda i: snapshot.__setitem__(i["step"], _flat(enc).clone())).train()
    assert result.best_step == 2 and torch.allclose(_flat(enc), snapshot[2])


def test_a_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    from embedstack.training import SentenceTrainer, TrainingArgs

    args = TrainingArgs(batch_size=8, max_steps=2, precision="fp32", save_steps=1)
    SentenceTrainer(_encoder(), "cosent", _data(16), args=args).train(out=tmp_path / "m", keep_checkpoints=True)
    other = TrainingArgs(batch_size=8, max_steps=2, precision="fp32", save_steps=1, lr=1e-3)
    with pytest.raises(ModelMismatch, match="settings"):
        SentenceTrainer(_encoder(), "cosent", _data(16), args=other).train(out=tmp_path / "m", resume=True, force=True)
