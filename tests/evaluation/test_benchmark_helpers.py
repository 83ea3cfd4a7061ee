"""Helpers of the benchmark scripts that decide what a report says (no timing here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def encode_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("encode", None)
    import encode

    yield encode
    sys.modules.pop("encode", None)


def _run(date, pooling):
    return {"machine": {"date": date}, "rows": [], "pooling": pooling}


def test_pooling_rows_not_rerun_carry_the_date_they_were_measured(tmp_path, encode_bench):
    path = tmp_path / "encode.jsonl"
    measured = {"model": "glove (enwiki), mean of word vectors", "mean": 22.28}
    runs = [_run("2026-11-28", [measured, {"model": "small MLM BERT (ours)", "cls": 26.85}]),
            _run("2026-12-01", [{"model": "glove word vectors", "reason": "no glove vectors"}])]
    path.write_text("\n".join(json.dumps(r) for r in runs) + "\n", encoding="utf-8")
    table = [{"model": "MiniLM-L6 (contrastively fine-tuned)", "mean": 82.03},
             {"model": "glove word vectors", "reason": "no glove vectors here"},
             {"model": "fasttext word vectors", "reason": "never measured"}]
    out = encode_bench.carry_pooling(table, path)
    assert out[0] == table[0]  # measured now: untouched
    assert out[1]["mean"] == 22.28 and out[1]["carried_from"] == "2026-11-28"
    assert out[1]["not_rerun"] == "no glove vectors here"
    assert out[2] == table[2]  # nothing to carry: the reason stays

    # carried again by a later run: still the date it was measured, not the date of the run that carried it
    runs.append(_run("2026-12-04", out))
    path.write_text("\n".join(json.dumps(r) for r in runs) + "\n", encoding="utf-8")
    again = encode_bench.carry_pooling([{"model": "glove word vectors", "reason": "still none"}], path)
    assert again[0]["carried_from"] == "2026-11-28" and again[0]["not_rerun"] == "still none"
