"""Recipes: every model the benchmarks, the ladder or the docs use, rebuilt by one command.

``embedstack recipe NAME --out DIR`` trains the model exactly as the experiments did (same data, loss,
arguments and seed: the result is deterministic given the seed on the same machine and thread count),
then scores it on the recipe's report set, which was never used for tuning or model selection.
``embedstack recipe --list`` shows each recipe's data, time on these 2 cores and the metric measured
when the recipe was last run (BENCHMARKS.md has the commands and the figures). Times were taken with
other jobs sometimes sharing the cores (bert-mlm-small-*, minilm-stsb-cosine, minilm-scifact): upper bounds. A recipe may start
from another one (``model="recipe:NAME"``): that one is built first, into the recipe cache, unless
it is there already.

Example:
    >>> get_recipe("minilm-stsb-cosent").loss
    'cosent'
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedstack.errors import ConfigError, UnknownKeyError

__all__ = ["Recipe", "RECIPES", "get_recipe", "build_recipe", "recipe_dir", "load_recipe_model"]


@dataclass(frozen=True)
class Recipe:
    """A reproducible training run.

    Attributes:
        name: The recipe name.
        summary: One line: what it is and what it shows.
        kind: ``sentence`` (fine-tune a bi-encoder), ``cross`` (train a cross-encoder, a reranker),
            ``colbert`` (train a late-interaction model), ``mlm`` (pretrain a BERT with masked LM) or
            ``elmo`` (train an ELMo biLM from scratch within a time budget).
        model: Starting model SPEC (``all-MiniLM-L6-v2``, ``recipe:NAME``).
        data: Named training sets (:func:`embedstack.training.run.training_data`) concatenated, or the
            corpus of an ``mlm`` recipe.
        loss: Loss name.
        args: :class:`~embedstack.training.trainer.TrainingArgs` fields.
        eval: Evaluation spec for model selection during training (tune data only), or None.
        report: Evaluation spec scored once at the end (held-out: a split never tuned on).
        expected: ``(metric, value)`` measured when the recipe was last run (BENCHMARKS.md).
        minutes: Wall-clock minutes of the last build on these 2 cores.
        options: Extra options (``matryoshka_dims``, ``hard_negatives``, ``mining``, ``loss_options``,
            ``pooler`` of a new cross-encoder, ``model_options`` of a ColBERT, ``teacher`` of a cross-encoder,
            ColBERT or SPLADE, ``mlm`` settings).
        inference: Model options a ``recipe:NAME`` SPEC applies before its own (``max_seq_length=128,doc_stride=32``:
            how the built model reads its inputs best; the build and its ``report`` read the saved folder as it is).
    """

    name: str
    summary: str
    kind: str
    model: str
    data: tuple[str, ...]
    loss: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    eval: str | None = None
    report: str | None = None
    expected: tuple[str, float] | None = None
    minutes: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    inference: str = ""

    @property
    def data_label(self) -> str:
        """The data sets joined by ``+``; a set repeated in a row shows once with ``x N``."""
        parts: list[list[Any]] = []
        for d in self.data:
            if parts and parts[-1][0] == d:
                parts[-1][1] += 1
            else:
                parts.append([d, 1])
        return " + ".join(d if n == 1 else f"{d} x{n}" for d, n in parts)

    @property
    def training_label(self) -> str:
        if self.kind == "mlm":
            return f"MLM {self.options.get('max_steps')} steps"
        if self.kind == "mlm-head":
            return f"MLM head {self.options.get('frozen_steps')} + {self.options.get('unfrozen_steps')} steps"
        if self.kind == "elmo":
            return f"biLM {self.options.get('minutes')} min"
        extra = []
        if self.options.get("hard_negatives"):
            extra.append(f"{self.options['hard_negatives']} negatives")
        if self.options.get("matryoshka_dims"):
            extra.append("matryoshka")
        if self.options.get("teacher"):
            extra.append(f"teacher {self.options['teacher'].partition('@')[0]}")
        epochs = self.args.get("epochs", 1)
        return f"{self.loss}, {epochs} ep" + (f" ({', '.join(extra)})" if extra else "")

    @property
    def time_label(self) -> str:
        if self.minutes is None:
            return "not yet timed"
        return f"{self.minutes:.1f} min" if self.minutes < 10 else f"{self.minutes:.0f} min"

    @property
    def expected_label(self) -> str:
        return "not yet measured" if self.expected is None else f"{self.expected[0]} {self.expected[1]:.2f}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "kind": self.kind, "model": self.model,
                "data": list(self.data), "loss": self.loss, "args": self.args, "eval": self.eval,
                "report": self.report, "options": self.options, "minutes": self.minutes,
                "expected": None if self.expected is None else {"metric": self.expected[0], "value": self.expected[1]}}


_STS_ARGS = {"epochs": 2, "batch_size": 16, "lr": 2e-5, "warmup_ratio": 0.1, "max_seq_length": 128,
             "precision": "bf16", "eval_steps": 360, "seed": 0}
_SCIFACT_ARGS = {"epochs": 1, "batch_size": 32, "lr": 2e-5, "warmup_ratio": 0.1, "max_seq_length": 128,
                 "precision": "bf16", "seed": 0}

_SCIFACT_BI = Recipe("minilm-scifact", "all-MiniLM-L6-v2 + MNRL on SciFact (tune-half query→abstract pairs and 1,500 "
    "title→abstract pseudo-pairs) with one BM25 hard negative per row mined from the whole corpus, lr 1e-4, "
    "documents cut at 256 tokens in training (chosen on tune-dev among 7 trained configurations)", "sentence",
    "all-MiniLM-L6-v2", ("scifact/train#tune", "scifact-titles:1500"), "mnrl",
    {**_SCIFACT_ARGS, "lr": 1e-4, "max_seq_length": 256},
    report="retrieval:scifact/train#report", expected=("nDCG@10 SciFact report half (x100)", 70.36),
    minutes=17.0, options={"hard_negatives": "bm25",
             "mining": {"num_negatives": 1, "range_min": 10, "range_max": 50, "corpus": "scifact"}})

_SCIFACT_CE = Recipe("minilm-scifact-ce", "a reranker on all-MiniLM-L6-v2's weights: the tune-train queries' (query, abstract) "
    "pairs x3, all 5,182 inverse-cloze pseudo-pairs and 1,500 title pairs of the corpus, each against 4 BM25 "
    "negatives (ranks 0-50 of the whole corpus, seeded), listwise softmax, documents cut at 128 tokens in "
    "training; as a model SPEC, `recipe:minilm-scifact-ce` reads a long abstract as windows of 128 tokens sharing 32, a "
    "pair scored by its best window (its report figure, and its use as a training start: documents cut at 256; "
    "`@doc_stride=none,max_seq_length=256` reads it that way); tune-dev was held out to choose both "
    "(benchmarks/train_reranker.py)", "cross",
    "all-MiniLM-L6-v2@max_seq_length=256", ("scifact/train#tune-train",) * 3 + ("scifact-ict:5182",
                                                                            "scifact-titles:1500"),
    "listwise", {"epochs": 1, "batch_size": 16, "lr": 5e-5, "head_lr_scale": 10.0, "warmup_ratio": 0.1,
                 "max_seq_length": 128, "precision": "bf16", "seed": 0},
    report="rerank:scifact/train#report@50",
    expected=("nDCG@10 SciFact report half, BM25 top 50 reranked, bf16, documents cut at 256 (x100)", 60.42),
    minutes=28.0,
    options={"hard_negatives": "bm25", "pooler": "identity",
             "mining": {"num_negatives": 4, "range_min": 0, "range_max": 50, "sampling": "random",
                        "corpus": "scifact"}},
    inference="max_seq_length=128,doc_stride=32")  # chosen on tune-dev: benchmarks/train_reranker.py dev-blend-*

RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("minilm-stsb-cosent", "all-MiniLM-L6-v2 fine-tuned on STS-B train with CoSENT (model selection on STS-B dev)",
           "sentence", "all-MiniLM-L6-v2", ("stsb/train",), "cosent", dict(_STS_ARGS), eval="sts:stsb/dev",
           report="sts:stsb/test", expected=("STS-B test Spearman", 85.75), minutes=4.5),
    Recipe("minilm-stsb-cosine", "all-MiniLM-L6-v2 fine-tuned on STS-B train with cosine-similarity regression",
           "sentence", "all-MiniLM-L6-v2", ("stsb/train",), "cosine", dict(_STS_ARGS), eval="sts:stsb/dev",
           report="sts:stsb/test", expected=("STS-B test Spearman", 85.42), minutes=11.0),
    _SCIFACT_BI,
    dataclasses.replace(
        _SCIFACT_BI, name="minilm-scifact-tune-train",
        summary="minilm-scifact's settings on the tune-train queries only (70% of the tune half; tune-dev held out): "
                "the teacher of the distilled reranker, so that tune-dev stays unseen when choosing it",
        data=("scifact/train#tune-train", "scifact-titles:1500"), expected=None, minutes=8.0),
    Recipe("minilm-stsb-ce", "a cross-encoder on all-MiniLM-L6-v2's weights trained on STS-B train by regression of "
           "sigmoid(logit) on score / 5 (model selection on STS-B dev): the cross-encoder side of the seed's "
           "bi- vs cross-encoder accuracy claim", "cross", "all-MiniLM-L6-v2", ("stsb/train",), "regression",
           {**_STS_ARGS, "head_lr_scale": 10.0}, eval="sts:stsb/dev", report="sts:stsb/test",
           expected=("STS-B test Spearman", 80.21), minutes=5.0),
    _SCIFACT_CE,
    dataclasses.replace(
        _SCIFACT_CE, name="minilm-scifact-ce-distill",
        summary="minilm-scifact-ce plus distillation: KL to a bi-encoder teacher's 20 · cosine over each (query, "
                "positive, 4 BM25 negatives) group (recipe minilm-scifact-tune-train, trained on the same tune-train "
                "queries, scoring in bf16); tune-dev held out (benchmarks/train_reranker.py: its arm "
                "dev-ict-128-distill is this model)",
        options={**_SCIFACT_CE.options, "teacher": "recipe:minilm-scifact-tune-train@precision=bf16"}, inference="",
        expected=("nDCG@10 SciFact report half, BM25 top 50 reranked, bf16 (x100)", 61.72), minutes=13.0),
    Recipe("minilm-scifact-colbert", "ColBERT on all-MiniLM-L6-v2's weights (fresh 128-d projection, queries "
           "[MASK]-padded to 32 tokens, documents cut at 256): SciFact tune-train query→abstract pairs and 1,500 "
           "title→abstract pseudo-pairs, one BM25 negative each (ranks 10-50 of the whole corpus), in-batch + "
           "hard-negative softmax over MaxSim, lr 1e-4 (the bi-encoder recipe's), projection 10x; settings fixed before "
           "the run, tune-dev held out (benchmarks/train_colbert.py: its dev arm is this model)", "colbert",
           "all-MiniLM-L6-v2",
           ("scifact/train#tune-train", "scifact-titles:1500"), "contrastive",
           {**_SCIFACT_ARGS, "lr": 1e-4, "head_lr_scale": 10.0, "max_seq_length": 256, "save_steps": None},
           report="retrieval:scifact/train#report", expected=("nDCG@10 SciFact report half, exact MaxSim, bf16 (x100)",
                                                               68.28), minutes=15.8,
           options={"hard_negatives": "bm25", "model_options": {"query_length": 32, "document_length": 256},
                    "mining": {"num_negatives": 1, "range_min": 10, "range_max": 50, "corpus": "scifact"}}),
    Recipe("minilm-mlm-head", "all-MiniLM-L6-v2 + a masked-LM head trained on the enwiki extract (encoder frozen, "
           "then unfrozen at 1/20 of the head's learning rate): the starting point of SPLADE (saved as a SPLADE "
           "folder)", "mlm-head", "all-MiniLM-L6-v2", ("enwiki",), args={"seed": 0}, minutes=10.6,
           expected=("masked-LM loss, last 10 steps", 5.82),
           options={"frozen_steps": 300, "unfrozen_steps": 200, "batch_size": 32, "max_len": 128, "lr": 1e-3,
                    "encoder_lr_scale": 0.05, "precision": "bf16"}),
    Recipe("minilm-scifact-splade", "SPLADE on recipe:minilm-mlm-head: SciFact tune-train query→abstract pairs (x3), "
           "an inverse-cloze pseudo-pair from every abstract (5,182) and 1,500 title→abstract pseudo-pairs, one BM25 "
           "negative each (ranks 10-50), in-batch + hard-negative softmax over dot products, FLOPS λ_q 5e-4 / λ_d 1e-4 "
           "raised quadratically over 20 steps, lr 5e-5, documents cut at 128 tokens in training (256 at inference); "
           "the data chosen on tune-dev among 4 trained variants (benchmarks/train_splade.py: its arm dev-ict-all is "
           "this model; a fifth, 2 epochs, scored +0.69 for twice the time and was not taken), the other settings fixed "
           "before them", "splade", "recipe:minilm-mlm-head",
           ("scifact/train#tune-train",) * 3 + ("scifact-ict:5182", "scifact-titles:1500"), "splade",
           {**_SCIFACT_ARGS, "lr": 5e-5, "batch_size": 16, "max_seq_length": 128, "save_steps": None},
           report="retrieval:scifact/train#report", expected=("nDCG@10 SciFact report half, bf16 (x100)", 64.68),
           minutes=15.0,
           options={"hard_negatives": "bm25", "loss_options": {"lambda_query": 5e-4, "lambda_document": 1e-4,
                                                                "lambda_warmup_steps": 20},
                    "mining": {"num_negatives": 1, "range_min": 10, "range_max": 50, "corpus": "scifact"}}),
    Recipe("bert-mlm-small", "a 2-layer, 128-wide BERT pretrained here with masked LM on the enwiki extract "
           "(MiniLM's WordPiece vocabulary): the raw encoder of the two-stage experiment", "mlm", "",
           ("enwiki",), args={"seed": 0},
           options={"layers": 2, "hidden": 128, "heads": 2, "max_len": 64, "batch_size": 32, "lr": 1e-3,
                    "max_steps": 1500, "precision": "bf16"}, expected=("STS-B test Spearman (mean pooling)", 39.19),
           minutes=7.0),
    Recipe("bert-mlm-small-nli", "bert-mlm-small + SBERT's NLI softmax over [u; v; |u-v|] on SNLI dev+test",
           "sentence", "recipe:bert-mlm-small", ("snli/dev+test",), "softmax",
           {"epochs": 1, "batch_size": 16, "lr": 2e-5, "max_seq_length": 128, "precision": "bf16", "seed": 0},
           report="sts:stsb/test", expected=("STS-B test Spearman", 38.87), minutes=1.5),
    Recipe("bert-mlm-small-sts", "bert-mlm-small + CoSENT on STS-B train (STS only)", "sentence",
           "recipe:bert-mlm-small", ("stsb/train",), "cosent", dict(_STS_ARGS), eval="sts:stsb/dev",
           report="sts:stsb/test", expected=("STS-B test Spearman", 45.63), minutes=1.0),
    Recipe("bert-mlm-small-nli-sts", "bert-mlm-small-nli + CoSENT on STS-B train (NLI then STS, the seed's two-stage "
           "claim)", "sentence", "recipe:bert-mlm-small-nli", ("stsb/train",), "cosent", dict(_STS_ARGS),
           eval="sts:stsb/dev", report="sts:stsb/test", expected=("STS-B test Spearman", 45.28), minutes=2.5),
    Recipe("bert-mlm-small-mnrl-nli", "bert-mlm-small + MNRL on SNLI (premise, entailment, contradiction) triplets",
           "sentence", "recipe:bert-mlm-small", ("snli-triplets/dev+test",), "mnrl",
           {"epochs": 1, "batch_size": 32, "lr": 2e-5, "max_seq_length": 128, "precision": "bf16", "seed": 0},
           report="sts:stsb/test", expected=("STS-B test Spearman", 40.97), minutes=0.5),
    Recipe("elmo-enwiki", "ELMo trained from scratch on the enwiki extract for 25 minutes: char CNN (5 widths, 512 "
           "filters, 2 highway layers, projected to 256) + 2-layer biLSTM LM (512 cells projected to 256, residual "
           "between layers) + an adaptive softmax over the 50k most frequent words, 20-word windows, bf16, one torch thread; every "
           "100th document held out for perplexity (a time budget: steps, and so the figure, vary with the machine "
           "and its load)", "elmo", "", ("enwiki",), args={"seed": 0},
           options={"minutes": 25.0, "batch_size": 64, "window": 20, "lr": 2e-3, "warmup_steps": 200,
                    "precision": "bf16", "vocab_size": 50_000, "vocab_words": 5_000_000, "held_out_every": 100,
                    "held_out_sentences": 2000, "threads": 1,
                    "config": {"char_dim": 16, "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256]],
                               "highway_layers": 2, "proj_dim": 256, "hidden_dim": 512, "n_layers": 2,
                               "cutoffs": [2000, 10000], "div_value": 4.0, "dropout": 0.0}},
           expected=("held-out perplexity (average of directions)", 340.98), minutes=25.5),
]}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (UnknownKeyError with the closest names otherwise)."""
    if name not in RECIPES:
        from embedstack.models import did_you_mean

        raise UnknownKeyError(f"no recipe {name!r}{did_you_mean(name, list(RECIPES))}; `embedstack recipe --list` "
                              f"shows them: {', '.join(RECIPES)}.")
    return RECIPES[name]


def recipe_dir(name: str) -> Path:
    """Where ``recipe:NAME`` model specs look: ``$EMBEDSTACK_CACHE_DIR/recipes/NAME`` (``~/.cache/embedstack/recipes/NAME``)."""
    from embedstack.neural.hub import cache_dir

    return cache_dir() / "recipes" / name


def load_recipe_model(arg: str | None) -> Any:
    """The ``recipe:NAME[@options]`` model SPEC: the recipe's model from the recipe cache.

    Raises:
        ModelNotFoundError: it has not been built yet (the message gives the command that builds it).
    """
    from embedstack.errors import ModelNotFoundError

    if not arg:
        raise ConfigError("recipe:NAME needs a recipe name; `embedstack recipe --list` shows them.")
    name, _, options = arg.partition("@")
    recipe = get_recipe(name)
    folder = recipe_dir(name)
    if recipe.kind == "elmo":  # a component folder (manifest.json), not a sentence-transformers one
        if not (folder / "manifest.json").is_file():
            raise ModelNotFoundError(f"recipe {name!r} has not been built here yet; build it with "
                                     f"`embedstack recipe {name}` (it writes {folder}).")
        from embedstack.neural.elmo import elmo_spec

        return elmo_spec(str(folder) + (f",{options}" if options else ""))
    if not (folder / "embedstack.json").is_file():
        raise ModelNotFoundError(f"recipe {name!r} has not been built here yet; build it with "
                                 f"`embedstack recipe {name}` (it writes {folder}).")
    from embedstack.neural.specs import load

    options = ",".join(filter(None, (recipe.inference, options)))  # the SPEC's own options win (parsed last)
    return load(str(folder) + (f"@{options}" if options else ""))


def _concat(parts: list[Any]) -> Any:
    from embedstack.training.data import TrainingData

    if len(parts) == 1:
        return parts[0]
    columns = parts[0].columns
    for p in parts[1:]:
        if p.columns != columns:
            raise ConfigError(f"recipe data sets have different columns: {columns} and {p.columns}.")
    return TrainingData.from_columns({c: [v for p in parts for v in p.column(c)] for c in columns},
                                     source=" + ".join(p.source for p in parts))


def resolve_start(model: str, *, stage: Callable[[str], None] | None = None, precision: str | None = None) -> str:
    """A model SPEC; ``recipe:NAME`` (or ``recipe:NAME@OPTIONS``, e.g. ``@precision=bf16`` for inference) is
    built into the recipe cache first when it is not there (with ``precision`` overriding its training precision,
    as :func:`build_recipe` does), and becomes that folder (with the same options)."""
    if not model.startswith("recipe:"):
        return model
    name, at, options = model.split(":", 1)[1].partition("@")
    folder = recipe_dir(name)
    if not (folder / "embedstack.json").is_file():
        if stage:
            stage(f"building the starting model recipe:{name} first")
        build_recipe(get_recipe(name), out=folder, stage=stage, precision=precision)
    return str(folder) + at + options


def build_recipe(recipe: Recipe, *, out: str | os.PathLike[str] | None = None, seed: int | None = None,
                 force: bool = False, progress: Callable[[dict[str, Any]], None] | None = None,
                 stage: Callable[[str], None] | None = None, score: bool = True,
                 resume: bool = False, precision: str | None = None) -> tuple[dict[str, Any], Path]:
    """Train ``recipe`` into ``out`` (default :func:`recipe_dir`) and (``score``) score it on its report set.

    ``seed`` overrides the seed of this recipe only (a ``recipe:NAME`` starting model is built with its
    own); ``resume`` continues a build that was interrupted (from ``OUT.ckpt``). ``precision`` (``fp32``, ``bf16``)
    overrides the training precision of a transformer recipe: the recipes train in bf16, which a CPU without
    native bf16 (no AVX-512 BF16 or AMX) emulates at a fraction of fp32's speed; the model then differs slightly
    from the recipe's expected figure, which was measured in bf16.

    Returns:
        ``({"train": {...}, "report": {...}}, folder)``.
    """
    folder = Path(out) if out is not None else recipe_dir(recipe.name)
    args_dict = dict(recipe.args)
    if seed is not None:
        args_dict["seed"] = seed
    say = stage or (lambda _line: None)
    if precision is not None:
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16'; got {precision!r} (--precision).")
        if "precision" in args_dict:
            args_dict["precision"] = precision
        elif "precision" in recipe.options:  # the pretraining recipes keep it with their options
            recipe = dataclasses.replace(recipe, options={**recipe.options, "precision": precision})
        else:
            raise ConfigError(f"recipe {recipe.name} has no training precision to override; drop --precision.")
    elif "bf16" in (args_dict.get("precision"), recipe.options.get("precision")):
        from embedstack.neural.runtime import cpu_has_bf16

        if not cpu_has_bf16():
            say(f"recipe {recipe.name} trains in bf16, which this CPU emulates (no AVX-512 BF16 or AMX): expect it to "
                "take several times its listed time; --precision fp32 trains at full speed, with results that differ "
                "slightly from the expected figure")
    if recipe.kind == "mlm":
        return _build_mlm(recipe, folder, args_dict, force, progress, say)
    if recipe.kind == "mlm-head":
        return _build_mlm_head(recipe, folder, args_dict, force, progress, say)
    if recipe.kind == "elmo":
        return _build_elmo(recipe, folder, args_dict, force, progress, say)
    from embedstack.training.run import train_cross_encoder, train_sentence, training_data
    from embedstack.training.trainer import TrainingArgs

    args = TrainingArgs(**args_dict)
    start = resolve_start(recipe.model, stage=stage, precision=precision)
    data = _concat([training_data(d, seed=args.seed) for d in recipe.data])
    opts = dict(recipe.options)
    mining = dict(opts.get("mining") or {})
    if mining.get("corpus") == "scifact":  # mine from the whole SciFact corpus, not just the positives
        from embedstack.data import load_beir

        mining["corpus"] = load_beir("scifact", split=None).doc_texts()
    opts["mining"] = mining or None
    if recipe.kind == "splade":
        from embedstack.training.run import train_splade

        teacher = opts.get("teacher")
        result = train_splade(start, data, loss_options=opts.get("loss_options"), out=folder, args=args,
                              eval=recipe.eval, hard_negatives=opts.get("hard_negatives"), mining=opts.get("mining"),
                              teacher=None if teacher is None else resolve_start(teacher, stage=stage, precision=precision),
                              model_options=opts.get("model_options"), force=force, progress=progress, stage=stage,
                              resume=resume)
    elif recipe.kind == "colbert":
        from embedstack.training.run import train_colbert

        teacher = opts.get("teacher")
        result = train_colbert(start, data, loss=recipe.loss, out=folder, args=args, eval=recipe.eval,
                               hard_negatives=opts.get("hard_negatives"), mining=opts.get("mining"),
                               teacher=None if teacher is None else resolve_start(teacher, stage=stage, precision=precision),
                               model_options=opts.get("model_options"), force=force, progress=progress,
                               stage=stage, resume=resume)
    elif recipe.kind == "cross":
        teacher = opts.get("teacher")
        result = train_cross_encoder(start, data, loss=recipe.loss, out=folder, args=args, eval=recipe.eval,
                                     hard_negatives=opts.get("hard_negatives"), mining=opts.get("mining"),
                                     pooler=opts.get("pooler", "identity"),
                                     teacher=None if teacher is None else resolve_start(teacher, stage=stage, precision=precision),
                                     force=force, progress=progress, stage=stage, resume=resume)
    else:
        result = train_sentence(start, data, loss=recipe.loss, out=folder, args=args, eval=recipe.eval,
                                matryoshka_dims=opts.get("matryoshka_dims"), hard_negatives=opts.get("hard_negatives"),
                                mining=opts.get("mining"), loss_options=opts.get("loss_options"), force=force,
                                progress=progress, stage=stage, resume=resume)
    summary: dict[str, Any] = {"train": {"steps": result.steps, "seconds": round(result.seconds, 1),
                                         "rows_per_second": round(result.pairs_per_second, 2),
                                         "best_metric": result.best_metric}}
    if recipe.report and score:
        summary["report"] = report(folder, recipe.report, stage=say)
    return summary, folder


def report(folder: str | os.PathLike[str], spec: str, *, stage: Callable[[str], None] | None = None) -> dict[str, float]:
    """Score a saved model on an evaluation spec (fp32 inference: the figure the benchmarks report)."""
    from embedstack.neural.specs import load
    from embedstack.training.evaluators import evaluator_from_spec

    if stage:
        stage(f"scoring on {spec}")
    evaluator = evaluator_from_spec(spec)
    return {k: float(v) for k, v in evaluator(load(str(folder))).items()}


def _build_mlm(recipe: Recipe, folder: Path, args: dict[str, Any], force: bool,
               progress: Callable[[dict[str, Any]], None] | None,
               say: Callable[[str], None]) -> tuple[dict[str, Any], Path]:
    from embedstack.data import iter_texts
    from embedstack.neural.config import BertConfig
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.mlm import pretrain_mlm, save_pretrained
    from embedstack.neural.tokenizer import WordPiece

    o = recipe.options
    tokenizer = WordPiece.from_file(resolve_model(o.get("vocab_from", "all-MiniLM-L6-v2"))[0])
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=o["hidden"], num_hidden_layers=o["layers"],
                        num_attention_heads=o["heads"], intermediate_size=4 * o["hidden"],
                        max_position_embeddings=max(512, o["max_len"]))
    corpus = recipe.data[0]
    say(f"pretraining a {o['layers']}-layer BERT on {corpus} for {o['max_steps']} steps")

    def on_step(step: int, loss: float) -> None:
        if progress is not None:
            progress({"step": step, "total": o["max_steps"], "loss": loss, "lr": o["lr"], "epoch": 0})

    result = pretrain_mlm(lambda: iter_texts(corpus), tokenizer, config, minutes=None, max_steps=o["max_steps"],
                          batch_size=o["batch_size"], max_len=o["max_len"], lr=o["lr"], seed=args.get("seed", 0),
                          precision=o.get("precision", "bf16"), progress=on_step)
    save_pretrained(result, folder, force=force, max_seq_length=o["max_len"],
                    extra={"recipe": recipe.name, "corpus": corpus, "seed": args.get("seed", 0)})
    return {"train": {"steps": result.steps, "seconds": round(result.seconds, 1),
                      "last_loss": result.losses[-1][1] if result.losses else None}}, folder


def _build_mlm_head(recipe: Recipe, folder: Path, args: dict[str, Any], force: bool,
                    progress: Callable[[dict[str, Any]], None] | None,
                    say: Callable[[str], None]) -> tuple[dict[str, Any], Path]:
    """An encoder without an MLM head (all-MiniLM-L6-v2) + a trained head, saved as a SPLADE folder."""
    from embedstack.data import iter_texts
    from embedstack.neural.mlm import train_mlm_head
    from embedstack.neural.splade import SpladeEncoder

    o = recipe.options
    total = o["frozen_steps"] + o["unfrozen_steps"]
    say(f"training an MLM head for {recipe.model} on {recipe.data[0]}: {o['frozen_steps']} steps encoder frozen, "
        f"{o['unfrozen_steps']} unfrozen")

    def on_step(step: int, loss: float) -> None:
        if progress is not None:
            progress({"step": step, "total": total, "loss": loss, "lr": o["lr"], "epoch": 0})

    corpus = recipe.data[0]
    result = train_mlm_head(recipe.model, lambda: iter_texts(corpus), frozen_steps=o["frozen_steps"],
                            unfrozen_steps=o["unfrozen_steps"], batch_size=o["batch_size"], max_len=o["max_len"],
                            lr=o["lr"], encoder_lr_scale=o["encoder_lr_scale"], seed=args.get("seed", 0),
                            precision=o.get("precision", "bf16"), progress=on_step)
    m = result.model
    enc = SpladeEncoder(m.bert, result.tokenizer, head=m.cls.predictions, max_seq_length=o.get("max_seq_length", 256),
                        name=recipe.name)
    sample = [t for _, t in zip(range(64), iter_texts(corpus), strict=False)]
    shift = enc.calibrate(sample, terms_per_token=o.get("terms_per_token", 32))
    say(f"MLM head bias shifted by {-shift:.2f} (about {o.get('terms_per_token', 32)} positive logits per token)")
    info = {"steps": result.steps, "seconds": round(result.seconds, 1), "losses": result.losses, "recipe": recipe.name,
            "corpus": corpus, "frozen_steps": o["frozen_steps"], "bias_shift": -shift}

    def add(tmp: Path) -> None:
        (tmp / "training.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

    enc.save(folder, force=force, extra=add)
    last = [loss for _, loss in result.losses[-3:]]
    return {"train": {"steps": result.steps, "seconds": round(result.seconds, 1),
                      "mlm_loss_first": result.losses[0][1] if result.losses else None,
                      "mlm_loss_last": sum(last) / len(last) if last else None}}, folder


def _build_elmo(recipe: Recipe, folder: Path, args: dict[str, Any], force: bool,
                progress: Callable[[dict[str, Any]], None] | None,
                say: Callable[[str], None]) -> tuple[dict[str, Any], Path]:
    """Train an ELMo biLM within the recipe's time budget; its report is the held-out perplexity."""
    from embedstack.data import iter_texts
    from embedstack.io import check_output
    from embedstack.training.elmo import train_elmo

    check_output(folder, kind="Elmo", force=force)  # before the training minutes, not after
    o = dict(recipe.options)
    corpus = recipe.data[0]
    say(f"training ELMo on {corpus} for {o['minutes']} minutes (held out: every {o['held_out_every']}th document)")
    result = train_elmo(lambda: iter_texts(corpus), seed=args.get("seed", 0), progress=progress, **o)
    result.elmo.name = recipe.name
    result.elmo.meta = {"training": result.summary(), "recipe": recipe.name, "corpus": corpus}
    result.elmo.save(folder, force=force)
    summary = result.summary()
    report = {"perplexity_forward": summary["perplexity_forward"], "perplexity_backward": summary["perplexity_backward"],
              "perplexity_average": summary["perplexity_average"]}
    return {"train": {k: v for k, v in summary.items() if not k.startswith("perplexity")}, "report": report}, folder
