"""ColBERT: token vectors with markers, [MASK] query augmentation and the punctuation filter; MaxSim; folders
both ways with PyLate; training (in-batch + hard negatives, distillation); retrieval through the indexes."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from embedstack.errors import ConfigError, InputError, ModelMismatch

torch = pytest.importorskip("torch")

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "small", "red", "house", "tree", "ran", "over",
         "quick", "brown", "fox", "jumps", "lazy", "man", "guitar", "playing", "is"]
PUNCT = [".", ",", "!", "?"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cb_tokenizer():
    from embedstack.neural.tokenizer import WordPiece

    return WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", *WORDS,
                                 *PUNCT, "##s"])


@pytest.fixture
def tiny_colbert(cb_tokenizer):
    from embedstack.neural.colbert import ColBERT
    from embedstack.neural.config import BertConfig
    from embedstack.neural.transformer import BertModel

    cfg = BertConfig(vocab_size=cb_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64)
    return ColBERT(BertModel(cfg).init_weights(seed=0), cb_tokenizer, dim=8, query_length=8, document_length=16)


def test_tokens_markers_expansion_and_punctuation(tiny_colbert, cb_tokenizer) -> None:
    ids, masks = tiny_colbert.tokenize(["the cat"], "query")
    vocab = cb_tokenizer.tokenizer.get_vocab()
    assert ids[0].tolist()[:5] == [vocab["[CLS]"], vocab["[unused0]"], vocab["the"], vocab["cat"], vocab["[SEP]"]]
    assert ids[0].tolist()[5:] == [vocab["[MASK]"]] * 3 and masks[0].tolist() == [1] * 5 + [0] * 3
    q = tiny_colbert.encode_tokens(["the cat"], role="query")[0]
    assert q.shape == (8, 8) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    docs = tiny_colbert.encode_tokens(["the cat , sat !", "", "! ? ."])
    # [CLS] [D] the cat sat [SEP]: the punctuation is dropped; an empty or all-punctuation text keeps the 3 specials
    assert [d.shape[0] for d in docs] == [6, 3, 3]
    assert tiny_colbert.encode_tokens([]) == []


def test_maxsim_scores_match_the_definition(tiny_colbert) -> None:
    from embedstack.index import maxsim
    from embedstack.neural.colbert import maxsim_scores

    docs = ["the cat sat on the mat", "a quick brown fox", "the dog ran"]
    q = tiny_colbert.encode_tokens(["the cat"], role="query")[0]
    d = tiny_colbert.encode_tokens(docs)
    expect = np.array([maxsim(q, x) for x in d], dtype=np.float32)
    assert np.allclose(tiny_colbert.score("the cat", docs), expect, atol=1e-5)
    width = max(len(x) for x in d)
    padded = np.zeros((3, width, 8), np.float32)
    keep = np.zeros((3, width), bool)
    for i, x in enumerate(d):
        padded[i, : len(x)] = x
        keep[i, : len(x)] = True
    assert np.allclose(maxsim_scores(q[None], padded, keep)[0], expect, atol=1e-5)


def test_long_inputs_warn_once_and_bad_input_is_clear(tiny_colbert, cb_tokenizer) -> None:
    from embedstack.neural.colbert import ColBERT

    long = " ".join(["cat"] * 40)
    with pytest.warns(UserWarning, match="query_length=8"):
        assert tiny_colbert.encode_tokens([long], role="query")[0].shape == (8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_colbert.encode_tokens([long], role="query")  # warned once per model
    with pytest.warns(UserWarning, match="document"):
        assert tiny_colbert.encode_tokens([long])[0].shape == (16, 8)
    with pytest.raises(InputError, match="list"):
        tiny_colbert.encode_tokens("the cat")
    with pytest.raises(ConfigError, match="role"):
        tiny_colbert.encode_tokens(["a"], role="passage")
    with pytest.raises(ConfigError, match="query_prefix"):
        ColBERT(tiny_colbert.model, cb_tokenizer, query_prefix="[Q] ")
    with pytest.raises(ConfigError, match="query_length"):
        ColBERT(tiny_colbert.model, cb_tokenizer, query_length=1000)


def test_fast_paths_give_the_same_vectors(tiny_colbert) -> None:
    texts = ["the cat sat on the mat", "a quick brown fox jumps over the lazy dog", "red house"]
    ref = tiny_colbert.encode_tokens(texts, batch_size=2)
    for opts in ({"workers": 2}, {"precision": "bf16"}):
        other = tiny_colbert.with_options(**opts).encode_tokens(texts, batch_size=2)
        tol = 2e-2 if opts.get("precision") else 1e-5
        assert all(np.allclose(a, b, atol=tol) for a, b in zip(ref, other, strict=True))


def test_forward_tokens_matches_encode_and_has_gradients(tiny_colbert) -> None:
    texts = ["the cat sat on the mat", "a dog"]
    ids, masks = tiny_colbert.tokenize(texts, "document")
    vecs, keep = tiny_colbert.forward_tokens(ids, masks, "document", min_rows=1)
    ref = tiny_colbert.encode_tokens(texts)
    for i, r in enumerate(ref):
        assert np.allclose(vecs[i][keep[i]].detach().numpy(), r, atol=1e-5)
    vecs.sum().backward()
    assert tiny_colbert.projection.linear.weight.grad is not None


def test_save_load_round_trip_dispatch_and_checksums(tiny_colbert, tmp_path: Path) -> None:
    from embedstack.errors import FormatError
    from embedstack.models import resolve
    from embedstack.neural.colbert import ColBERT, is_colbert

    folder = tiny_colbert.save(tmp_path / "cb")
    assert is_colbert(folder)
    st = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert st["model_type"] == "ColBERT" and st["query_length"] == 8 and st["similarity_fn_name"] == "MaxSim"
    again = resolve(str(folder))
    assert isinstance(again, ColBERT) and again.query_length == 8 and again.document_length == 16
    a = tiny_colbert.encode_tokens(["the cat sat"])[0]
    assert np.allclose(again.encode_tokens(["the cat sat"])[0], a, atol=1e-6)
    with pytest.raises(ConfigError, match="query_length"):
        resolve(f"{folder}@pooling=cls")
    raw = bytearray((folder / "1_Dense" / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "1_Dense" / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="1_Dense"):
        ColBERT.from_folder(folder)


def _tiny_rows():
    from embedstack.training.data import TrainingData

    return TrainingData.from_columns({
        "anchor": ["the cat", "a dog", "red house", "quick fox", "big tree", "lazy man"],
        "positive": ["the cat sat on the mat", "a dog ran", "the red house is big", "the quick brown fox jumps",
                     "a big tree", "the lazy man is playing guitar"],
        "negative_1": ["a dog ran", "the cat sat on the mat", "a big tree", "the lazy man is playing guitar",
                       "the red house is big", "the quick brown fox jumps"]})


def test_training_lowers_the_loss_and_saves_a_loadable_model(tiny_colbert, tmp_path: Path) -> None:
    from embedstack.neural.colbert import ColBERT
    from embedstack.training.colbert import ColBERTTrainer
    from embedstack.training.trainer import TrainingArgs

    data = _tiny_rows()
    args = TrainingArgs(batch_size=3, epochs=8, lr=5e-3, warmup_ratio=0.0, precision="fp32", seed=0, log_steps=1)
    res = ColBERTTrainer(tiny_colbert, "contrastive", data, args=args).train(out=tmp_path / "m")
    losses = [e["loss"] for e in res.log if "loss" in e]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    loaded = ColBERT.from_folder(tmp_path / "m")
    assert (tmp_path / "m" / "training" / "result.json").is_file()
    s = loaded.score("the cat", ["the cat sat on the mat", "a dog ran"])
    assert s[0] > s[1]


def test_distillation_follows_the_teacher(tiny_colbert, tmp_path: Path) -> None:
    from embedstack.training.colbert import ColBERTLoss, ColBERTTrainer
    from embedstack.training.trainer import TrainingArgs

    class Teacher:  # prefers each row's *negative*: distillation alone must learn that order
        def predict(self, pairs, activation=True):
            return np.array([5.0 if i % 2 else 0.0 for i in range(len(pairs))], dtype=np.float32)

    data = _tiny_rows()

    def margin() -> float:  # mean MaxSim(negative) - MaxSim(positive) over the rows
        return float(np.mean([np.subtract(*tiny_colbert.score(a, [n, p])) for a, p, n in
                              zip(data.column("anchor"), data.column("positive"), data.column("negative_1"),
                                  strict=True)]))

    before = margin()
    args = TrainingArgs(batch_size=3, epochs=10, lr=5e-3, warmup_ratio=0.0, precision="fp32", seed=0)
    trainer = ColBERTTrainer(tiny_colbert, ColBERTLoss(contrastive_weight=0.0), data, args=args, teacher=Teacher())
    trainer.train()
    assert margin() > before + 0.1
    with pytest.raises(ConfigError, match="negative"):
        from embedstack.training.data import TrainingData

        pairs = TrainingData.from_columns({"anchor": ["a"], "positive": ["b"]})
        ColBERTTrainer(tiny_colbert, "distillation", pairs, teacher=Teacher())
    with pytest.raises(ConfigError, match="ColBERT"):
        ColBERTTrainer(object(), "contrastive", data)
    with pytest.raises(ConfigError, match="Unknown ColBERT loss"):
        ColBERTTrainer(tiny_colbert, "mnrl", data)


def test_retrieval_eval_index_build_and_model_mismatch(tiny_colbert, tmp_path: Path) -> None:
    from embedstack.evaluation.runners import evaluate_retrieval
    from embedstack.retrieval.build import build_index, open_pipeline

    class Data:
        corpus = {f"d{i}": t for i, t in enumerate(["the cat sat on the mat", "a dog ran over the tree",
                                                      "the red house", "a quick brown fox", "lazy man playing guitar"])}
        queries = {"q1": "cat on mat", "q2": "brown fox"}
        qrels = {"q1": {"d0": 1}, "q2": {"d3": 1}}

        def doc_ids(self):
            return list(self.corpus)

        def doc_texts(self):
            return list(self.corpus.values())

        def query_ids(self):
            return list(self.queries)

        def query_texts(self):
            return list(self.queries.values())

    exact = evaluate_retrieval(tiny_colbert, Data(), k=5, latency_queries=1)
    assert exact["mode"] == "multivector/exact" and exact["bytes_per_doc"] > 0
    packed = evaluate_retrieval(tiny_colbert, Data(), k=5, index_spec="plaid:nbits=2,n_centroids=4",
                                latency_queries=0)
    assert packed["mode"].startswith("multivector/plaid") and packed["bytes_per_doc"] < exact["bytes_per_doc"]
    with pytest.raises(ConfigError, match="one vector per token"):
        evaluate_retrieval(tiny_colbert, Data(), index_spec="hnsw")
    folder = tiny_colbert.save(tmp_path / "model")
    idx = build_index(Data().doc_texts(), Data().doc_ids(), tiny_colbert, spec=str(folder), index="plaid",
                      out=tmp_path / "idx")
    assert idx.compressed
    hits = open_pipeline([tmp_path / "idx"]).search("cat on mat", k=2).hits
    assert len(hits) == 2
    with torch.no_grad():  # another version of the model: the index refuses it
        tiny_colbert.projection.linear.weight.mul_(2)
    tiny_colbert.save(folder)
    with pytest.raises(ModelMismatch):
        open_pipeline([tmp_path / "idx"])


def _pylate_python() -> str | None:
    exe = os.environ.get("EMBEDSTACK_PYLATE_PYTHON") or str(ROOT / ".venv-pylate" / "bin" / "python")
    return exe if Path(exe).is_file() else None


_PYLATE = r"""
import sys, numpy as np
from pylate import models
mode, src, dst = sys.argv[1:4]
if mode == "save":
    m = models.ColBERT(model_name_or_path=src, device="cpu", document_length=64)
    m.save(dst)
else:
    m = models.ColBERT(model_name_or_path=src, device="cpu")
q = m.encode(["do statins reduce mortality?"], is_query=True)[0]
d = m.encode(["Statins lower LDL cholesterol, and reduce mortality."], is_query=False)[0]
np.save(dst + ".q.npy", np.asarray(q)); np.save(dst + ".d.npy", np.asarray(d))
"""


@pytest.mark.skipif(_pylate_python() is None, reason="PyLate lives in its own virtualenv (its fast-plaid pins another "
                    "torch): `make peers` builds .venv-pylate, or set EMBEDSTACK_PYLATE_PYTHON")
def test_pylate_loads_our_folder_and_we_load_theirs(minilm, tmp_path: Path) -> None:
    from embedstack.neural.colbert import ColBERT

    exe = _pylate_python()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    ours = ColBERT.from_pretrained_encoder(minilm.folder, document_length=64)
    ours.save(tmp_path / "ours")
    subprocess.run([exe, "-c", _PYLATE, "load", str(tmp_path / "ours"), str(tmp_path / "ours-pl")], check=True,
                   env=env, capture_output=True)
    subprocess.run([exe, "-c", _PYLATE, "save", str(minilm.folder), str(tmp_path / "theirs")], check=True, env=env,
                   capture_output=True)
    theirs = ColBERT.from_folder(tmp_path / "theirs")
    assert theirs.query_prefix == "[Q] " and theirs.document_length == 64
    for model, stem in ((ours, "ours-pl"), (theirs, "theirs")):
        q = model.encode_tokens(["do statins reduce mortality?"], role="query")[0]
        d = model.encode_tokens(["Statins lower LDL cholesterol, and reduce mortality."])[0]
        assert np.allclose(q, np.load(tmp_path / f"{stem}.q.npy"), atol=1e-5)
        assert np.allclose(d, np.load(tmp_path / f"{stem}.d.npy"), atol=1e-5)



def test_train_colbert_cli(tiny_colbert, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from embedstack.cli.app import app

    start = tiny_colbert.save(tmp_path / "start")
    rows = [{"anchor": a, "positive": p} for a, p in zip(_tiny_rows().column("anchor"), _tiny_rows().column("positive"),
                                                         strict=True)]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["train", "colbert", "--data", str(data), "--model", str(start), "--out",
                                   str(tmp_path / "out"), "--max-steps", "2", "--batch-size", "3", "--precision", "fp32",
                                   "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["steps"] == 2 and (tmp_path / "out" / "1_Dense" / "model.safetensors").is_file()
    res = CliRunner().invoke(app, ["train", "colbert", "--data", str(data), "--model", str(start), "--out",
                                   str(tmp_path / "bad"), "--loss", "mnrl", "--json"])
    assert res.exit_code == 2 and "Unknown ColBERT --loss" in res.output
