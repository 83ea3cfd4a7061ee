"""A small sample retrieval set and STS set written for this project, bundled with the package.

Used by demos, docs and tests when no real dataset is reachable. The texts were written for
embedstack (not copied from any dataset); the corpus covers a few topics (astronomy, cooking,
medicine, programming, sport, history, ...) so lexical and semantic models both get a sensible score.
"""

from __future__ import annotations

from pathlib import Path

from embedstack.data._pairs import STSDataset, load_sts
from embedstack.data._retrieval import RetrievalDataset, load_beir

__all__ = ["sample_retrieval", "sample_sts", "SAMPLE_DIR"]

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"


def sample_retrieval() -> RetrievalDataset:
    """The bundled sample retrieval set (BEIR layout, graded qrels, split ``test``).

    Example:
        >>> ds = sample_retrieval()
        >>> len(ds.corpus) >= 80 and len(ds.query_ids()) >= 25
        True
    """
    return load_beir(SAMPLE_DIR / "retrieval", split="test", name="sample")


def sample_sts() -> STSDataset:
    """The bundled sample STS set: sentence pairs with 0-5 similarity scores.

    Example:
        >>> sts = sample_sts()
        >>> len(sts) >= 60 and float(sts.scores.min()) >= 0 and float(sts.scores.max()) <= 5
        True
    """
    return load_sts(SAMPLE_DIR / "sts-sample.csv")
