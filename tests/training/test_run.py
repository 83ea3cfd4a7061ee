"""Named training sets, the tune/report split, recipes and the recipe:NAME model spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedstack.errors import ConfigError, ModelNotFoundError, UnknownKeyError


def test_scifact_halves_are_disjoint_and_cover_the_judged_queries(shared_data: Path) -> None:
    from embedstack.data import load_beir
    from embedstack.training.evaluators import query_half
    from embedstack.training.run import training_data

    beir = load_beir("scifact", split="train")
    tune, report = query_half(beir, "tune"), query_half(beir, "report")
    assert not set(tune.query_ids()) & set(report.query_ids())
    assert len(tune.query_ids()) + len(report.query_ids()) == len(beir.query_ids())
    pairs = training_data("scifact/train#tune")
    assert set(pairs.column("anchor")) <= {beir.queries[q] for q in tune.query_ids()}
    assert not set(pairs.column("anchor")) & {beir.queries[q] for q in report.query_ids()}


def test_named_sets_have_the_columns_their_losses_need(shared_data: Path) -> None:
    from embedstack.training.run import training_data

    sts = training_data("stsb/train")
    assert sts.columns == ("anchor", "positive", "score") and len(sts) == 5749
    assert min(sts.column("score")) >= 0.0 and max(sts.column("score")) <= 1.0
    nli = training_data("snli/dev")
    assert nli.columns == ("anchor", "positive", "label") and set(nli.column("label")) == {0, 1, 2}
    trip = training_data("snli-triplets/dev")
    assert trip.columns == ("anchor", "positive", "negative_1")
    assert len(training_data("scifact-titles:100")) == 100


def test_recipe_spec_names_the_command_that_builds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import embedstack

    monkeypatch.setenv("EMBEDSTACK_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError, match="embedstack recipe minilm-stsb-cosent"):
        embedstack.load("recipe:minilm-stsb-cosent")
    with pytest.raises(UnknownKeyError, match="minilm-scifact"):
        embedstack.load("recipe:minilm-scifakt")


def test_every_recipe_is_complete() -> None:
    from embedstack.training.ce_losses import CE_LOSSES
    from embedstack.training.colbert import COLBERT_LOSSES
    from embedstack.training.evaluators import _split_spec
    from embedstack.training.recipes import RECIPES, get_recipe
    from embedstack.training.trainer import LOSSES, TrainingArgs

    for r in RECIPES.values():
        assert r.kind in ("sentence", "cross", "mlm", "colbert", "mlm-head", "splade", "elmo")
        if r.kind == "elmo":
            import inspect

            from embedstack.neural.elmo import ElmoConfig
            from embedstack.training.elmo import train_elmo

            assert set(r.options) <= set(inspect.signature(train_elmo).parameters) and "minutes" in r.options
            ElmoConfig(vocab_size=r.options["vocab_size"], **r.options["config"])  # valid sizes
        if r.kind == "mlm-head":
            assert {"frozen_steps", "unfrozen_steps", "lr"} <= set(r.options)
        if r.kind in ("sentence", "cross", "colbert", "splade"):
            losses = {"sentence": LOSSES, "cross": CE_LOSSES, "colbert": COLBERT_LOSSES, "splade": ("splade",)}[r.kind]
            assert r.loss in losses and r.report
            assert _split_spec(r.report)[0] in ("sts", "retrieval", "rerank")
            TrainingArgs(**r.args)  # valid arguments
            for spec in (r.model, r.options.get("teacher") or ""):  # a starting model or teacher built first
                if spec.startswith("recipe:"):
                    get_recipe(spec.split(":", 1)[1].partition("@")[0])
    assert {r.name for r in RECIPES.values() if r.kind == "cross"} >= {"minilm-scifact-ce", "minilm-stsb-ce"}


def test_ict_pairs_take_one_sentence_out_of_its_context() -> None:
    from embedstack.training.run import ict_pairs, split_sentences

    assert split_sentences("Dose was 3.5 mg in mice. (B) It rose! Then? no split e.g. here.") == [
        "Dose was 3.5 mg in mice.", "(B) It rose!", "Then? no split e.g. here."]
    docs = [{"title": "T", "text": "First sentence has six words here. Second sentence also has six words. Third one."},
            {"title": "Short", "text": "Only one sentence with enough words here."}]
    removed = ict_pairs(docs, seed=0, keep=0.0)
    assert len(removed["anchor"]) == 1  # the one-sentence document gives no pair
    anchor, positive = removed["anchor"][0], removed["positive"][0]
    assert anchor in ("First sentence has six words here.", "Second sentence also has six words.")
    assert positive.startswith("T ") and anchor not in positive and "Third one." in positive
    kept = ict_pairs(docs, seed=0, keep=1.0)
    assert kept["anchor"][0] in kept["positive"][0]
    assert ict_pairs(docs, seed=3) == ict_pairs(docs, seed=3)  # deterministic given the seed
    # pick="last": the last sentence long enough (an abstract's conclusion), whatever the seed
    for seed in range(5):
        last = ict_pairs(docs, seed=seed, keep=0.0, pick="last")
        assert last["anchor"] == ["Second sentence also has six words."]
        assert "First sentence" in last["positive"][0] and "Second sentence" not in last["positive"][0]
    with pytest.raises(ConfigError, match="pick"):
        ict_pairs(docs, pick="first")


def test_scifact_ict_pairs_come_from_the_corpus_only(shared_data: Path) -> None:
    from embedstack.data import load_beir
    from embedstack.training.run import training_data

    ict = training_data("scifact-ict")
    beir = load_beir("scifact", split="train")
    assert len(ict) > 5000 and ict.columns == ("anchor", "positive")
    assert not set(ict.column("anchor")) & set(beir.queries.values())
    assert len(training_data("scifact-ict:50")) == 50
    last = training_data("scifact-ict-last")  # the same documents, each abstract's last long sentence as the query
    assert len(last) == len(ict) and last.column("anchor") != ict.column("anchor")
    assert not set(last.column("anchor")) & set(beir.queries.values())
