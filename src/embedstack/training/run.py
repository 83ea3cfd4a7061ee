"""One call from data to a saved model: :func:`train_sentence` (what ``embedstack train sentence`` and
``embedstack recipe`` run), and the named training sets built from the project's datasets.

Named training sets (``--data NAME``; a file path is read by
:func:`~embedstack.training.data.load_training_data` instead):

* ``stsb/train`` (or ``/dev``): STS-B pairs with ``score`` = gold / 5 in [0, 1] (as sentence-transformers'
  ``stsb`` dataset), for CoSENT and cosine regression;
* ``snli/dev``, ``snli/test``, ``snli/dev+test``: premise/hypothesis with ``label`` 0/1/2 (entailment,
  neutral, contradiction), for the NLI softmax;
* ``snli-triplets/...``: (premise, entailed hypothesis, contradicted hypothesis) triplets of the same
  premise, for MNRL with a hard negative (the SimCSE / sentence-transformers NLI recipe);
* ``scifact/train#tune`` (or ``#report``, or no half): (query, title + abstract) for each relevant
  document of the judged train queries of that half (:func:`~embedstack.training.evaluators.query_half`);
* ``scifact-titles``: pseudo-pairs (title → abstract) of every SciFact document: in-domain text with no
  query or judgment in it;
* ``scifact-ict``: inverse-cloze pseudo-pairs (Lee et al. 2019, ICT) of every SciFact document with at
  least :data:`ICT_MIN_SENTENCES` sentences: one sentence of the abstract (a seeded choice among those of
  at least :data:`ICT_MIN_WORDS` words) → title + the rest of the abstract; the sentence is removed from
  the positive in 90% of the rows and kept in 10% (ICT's rate), so the model learns to match a claim-like
  sentence to its context rather than to copy words. No query or judgment is in them;
* ``scifact-ict-last``: the same with each abstract's last such sentence (its conclusion, the closest in form
  to a claim) as the pseudo-query;
* ``NAME:N`` keeps a seeded random ``N`` rows (``scifact-titles:1000``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import ConfigError, InputError

__all__ = ["train_sentence", "train_cross_encoder", "train_colbert", "load_colbert_start", "train_splade",
           "load_splade_start", "load_cross_encoder_start", "training_data", "NAMED_DATA"]

NAMED_DATA = ("stsb", "snli", "snli-triplets", "scifact", "scifact-titles", "scifact-ict", "scifact-ict-last")
ICT_MIN_SENTENCES = 3  # a document needs this many sentences to give an ICT pair
ICT_MIN_WORDS = 6  # the pseudo-query sentence has at least this many words
ICT_KEEP = 0.1  # share of rows whose positive keeps the pseudo-query sentence (Lee et al. 2019)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def _subsample(data: Any, n: int, seed: int) -> Any:
    if n >= len(data):
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    return data.select(keep.tolist())


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``, ``!`` or ``?`` followed by space and a capital, digit or bracket.

    >>> split_sentences("We found X. Y was 3.5 mg. (Z) held.")
    ['We found X.', 'Y was 3.5 mg.', '(Z) held.']
    """
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


def ict_pairs(docs: Any, *, seed: int = 0, keep: float = ICT_KEEP, pick: str = "random") -> dict[str, list[str]]:
    """Inverse-cloze pseudo-pairs from documents (``{"title", "text"}`` dicts): ``{"anchor", "positive"}``.

    For each document with at least :data:`ICT_MIN_SENTENCES` sentences, one sentence of at least
    :data:`ICT_MIN_WORDS` words (``pick="random"``: a seeded choice; ``"last"``: the last such sentence, an
    abstract's conclusion as a claim-like query) becomes the anchor and the title plus the other sentences the
    positive; with probability ``keep`` the positive keeps the sentence.
    """
    if pick not in ("random", "last"):
        raise ConfigError(f"ict_pairs: pick must be 'random' or 'last'; got {pick!r}.")
    rng = np.random.default_rng(seed)
    anchors: list[str] = []
    positives: list[str] = []
    for d in docs:
        sentences = split_sentences(d.get("text", ""))
        if len(sentences) < ICT_MIN_SENTENCES:
            continue
        usable = [i for i, s in enumerate(sentences) if len(s.split()) >= ICT_MIN_WORDS]
        if not usable:
            continue
        i = usable[int(rng.integers(len(usable)))] if pick == "random" else usable[-1]
        kept = sentences if rng.random() < keep else sentences[:i] + sentences[i + 1:]
        anchors.append(sentences[i])
        positives.append((d.get("title", "").strip() + " " + " ".join(kept)).strip())
    return {"anchor": anchors, "positive": positives}


def training_data(spec: str | os.PathLike[str], *, seed: int = 0, encoding: str = "utf-8", errors: str = "strict",
                  **file_options: Any) -> Any:
    """A :class:`~embedstack.training.data.TrainingData` from a file path or a named set (module docstring)."""
    from embedstack.training.data import TrainingData, load_training_data

    text = os.fspath(spec)
    name, _, count = text.partition(":")
    base = name.split("/", 1)[0].split("#", 1)[0]
    if base not in NAMED_DATA or Path(text).exists():
        return load_training_data(text, encoding=encoding, errors=errors, **file_options)
    if file_options:
        raise ConfigError(f"{sorted(file_options)} apply to data files, not to the named set {text!r}.")
    rest = name[len(base):]
    half = rest.partition("#")[2] or None
    split = rest.partition("#")[0].lstrip("/") or None
    data: Any
    if base == "stsb":
        from embedstack.data import load_sts

        sts = load_sts("stsb", split or "train", encoding=encoding, errors=errors)
        data = TrainingData.from_columns({"anchor": list(sts.s1), "positive": list(sts.s2),
                                          "score": [float(s) / 5.0 for s in sts.scores]}, source=text)
    elif base in ("snli", "snli-triplets"):
        from embedstack.data import load_nli
        from embedstack.data._pairs import NLI_LABELS

        prem: list[str] = []
        hyp: list[str] = []
        lab: list[str] = []
        for part in (split or "dev").split("+"):
            nli = load_nli("snli", part, encoding=encoding, errors=errors)
            prem += nli.premises
            hyp += nli.hypotheses
            lab += nli.labels
        if base == "snli":
            data = TrainingData.from_columns({"anchor": prem, "positive": hyp,
                                              "label": [NLI_LABELS.index(x) for x in lab]}, source=text)
        else:
            by_premise: dict[str, dict[str, list[str]]] = {}
            for p, h, y in zip(prem, hyp, lab, strict=True):
                by_premise.setdefault(p, {}).setdefault(y, []).append(h)
            a, pos, neg = [], [], []
            for p, groups in by_premise.items():
                for e, c in zip(groups.get("entailment", []), groups.get("contradiction", []), strict=False):
                    a.append(p)
                    pos.append(e)
                    neg.append(c)
            data = TrainingData.from_columns({"anchor": a, "positive": pos, "negative_1": neg}, source=text)
    elif base == "scifact":
        from embedstack.data import load_beir
        from embedstack.training.evaluators import query_half

        beir = load_beir("scifact", split=split or "train", encoding=encoding, errors=errors)
        if half is not None:
            beir = query_half(beir, half)
        anchors, docs = [], []
        for qid in beir.query_ids():
            for did, grade in beir.qrels[qid].items():
                if grade > 0 and did in beir.corpus:
                    d = beir.corpus[did]
                    anchors.append(beir.queries[qid])
                    docs.append((d.get("title", "") + " " + d.get("text", "")).strip())
        data = TrainingData.from_columns({"anchor": anchors, "positive": docs}, source=text)
    elif base in ("scifact-ict", "scifact-ict-last"):
        from embedstack.data import load_beir

        beir = load_beir("scifact", split=None, encoding=encoding, errors=errors)
        pick = "last" if base == "scifact-ict-last" else "random"
        data = TrainingData.from_columns(ict_pairs(beir.corpus.values(), seed=seed, pick=pick), source=text)
    else:  # scifact-titles
        from embedstack.data import load_beir

        beir = load_beir("scifact", split=None, encoding=encoding, errors=errors)
        rows = [(d.get("title", "").strip(), d.get("text", "").strip()) for d in beir.corpus.values()]
        rows = [(t, b) for t, b in rows if t and b]
        data = TrainingData.from_columns({"anchor": [t for t, _ in rows], "positive": [b for _, b in rows]},
                                         source=text)
    if count:
        try:
            n = int(count)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"data spec {text!r}: the part after ':' must be a row count >= 1.")
        data = _subsample(data, n, seed)
    return data


def train_sentence(
    model: str | Any,
    data: str | os.PathLike[str] | Any,
    *,
    loss: str | Any = "mnrl",
    out: str | os.PathLike[str] | None = None,
    args: Any = None,
    matryoshka_dims: Sequence[int] | None = None,
    hard_negatives: str | None = None,
    mining: Mapping[str, Any] | None = None,
    eval: str | Callable[[Any], Mapping[str, float]] | None = None,
    loss_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stage: Callable[[str], None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Train a sentence model end to end; the Python twin of ``embedstack train sentence``.

    Args:
        model: A model SPEC (``all-MiniLM-L6-v2``, a folder) or a SentenceEncoder.
        data: A file (JSONL/CSV/TSV), a named set (:func:`training_data`) or a TrainingData.
        loss: A name of :data:`~embedstack.training.trainer.LOSSES` or a loss module.
        out: Folder for the trained model (sentence-transformers format).
        args: :class:`~embedstack.training.trainer.TrainingArgs`.
        matryoshka_dims: Wrap the loss in MatryoshkaLoss over these dimensions.
        hard_negatives: ``bm25``, ``dense`` or ``both``: mine negatives for (anchor, positive) data first
            (with the model being trained, before training, for ``dense``).
        mining: Options of :func:`~embedstack.training.mining.mine_hard_negatives` (num_negatives,
            range_min, range_max, margin, sampling ...); the corpus is the data's positives unless
            ``corpus`` is given.
        eval: An evaluation spec (``sts:stsb/dev``, ``retrieval:scifact/train#tune``) or an evaluator.
        loss_options: Keyword options of the loss (scale, margin, score_range ...).
        resume, force: As :meth:`SentenceTrainer.train`.
        progress: Per-step callback of the trainer.
        stage: Called with a line for each stage (loading, mining, training, saving).
        cache_dir: Embedding cache for mining (default: the project cache).

    Returns:
        The :class:`~embedstack.training.trainer.TrainResult` (with ``.mining`` stats when mined).
    """
    from embedstack.neural.sentence import SentenceEncoder
    from embedstack.training.evaluators import evaluator_from_spec
    from embedstack.training.trainer import SentenceTrainer, TrainingArgs, make_loss

    say = stage or (lambda _line: None)
    args = args or TrainingArgs()
    if isinstance(model, SentenceEncoder):
        encoder = model
    else:
        from embedstack.models import load

        say(f"loading {model}")
        encoder = load(str(model))
        if not isinstance(encoder, SentenceEncoder):
            raise ConfigError(f"model {model!r} is a {type(encoder).__name__}; training needs a transformer sentence "
                              "model (all-MiniLM-L6-v2, a sentence-transformers folder, a model from "
                              "`embedstack train mlm`).", param=("model", f"model {model!r}"))
    if out is not None:
        from embedstack.io import SENTENCE_MODEL, check_output

        check_output(out, kind=SENTENCE_MODEL, force=force)
    rows: Any = data
    if not hasattr(rows, "columns"):
        say(f"reading {os.fspath(data)}")
        rows = training_data(data, seed=args.seed)
    data = rows
    mined = None
    if hard_negatives is not None:
        from embedstack.training.mining import mine_hard_negatives

        if "anchor" not in data.columns or "positive" not in data.columns:
            raise InputError(f"hard-negative mining needs (anchor, positive) rows; the data has {list(data.columns)}.")
        options = dict(mining or {})
        corpus = options.pop("corpus", None)
        say(f"mining hard negatives ({hard_negatives}) for {len(data):,} rows")
        pairs = (data.column("anchor"), data.column("positive"))
        scorer = None
        if hard_negatives in ("dense", "both") or options.get("margin") is not None \
                or options.get("relative_margin") is not None:
            from embedstack.neural.sentence import cpu_has_bf16

            # the model as it is before training; bf16 inference where the CPU has it (cosine >= 0.9999 to fp32)
            scorer = encoder.with_options(precision="bf16") if cpu_has_bf16() else encoder
        mined = mine_hard_negatives(pairs, corpus, method=hard_negatives, model=scorer, seed=args.seed,
                                    cache_dir=cache_dir, **options)
        data = mined.data
    evaluator = evaluator_from_spec(eval) if isinstance(eval, str) else eval
    loss_module = loss if not isinstance(loss, str) else make_loss(loss, encoder, matryoshka_dims=matryoshka_dims,
                                                                     seed=args.seed, **dict(loss_options or {}))
    trainer = SentenceTrainer(encoder, loss_module, data, args=args, evaluator=evaluator, progress=progress)
    trainer.notes = {"model_in": getattr(encoder, "source", None) or getattr(encoder, "name", None),
                     "evaluation": getattr(evaluator, "name", None), "hard_negatives": hard_negatives,
                     "mining": None if mined is None else mined.stats, "matryoshka_dims": list(matryoshka_dims or [])}
    say(f"training {len(data):,} rows with {type(loss_module).__name__}")
    result = trainer.train(out=out, resume=resume, force=force)
    result.mining = None if mined is None else mined.stats
    return result


def load_cross_encoder_start(model: str | Any, *, num_labels: int = 1, pooler: str = "identity", seed: int = 0) -> Any:
    """A cross-encoder to train: a cross-encoder SPEC/folder as it is, or a new one on a bi-encoder's or
    BERT's weights (``CrossEncoder.from_pretrained_encoder``: fresh classifier, ``pooler`` init)."""
    from embedstack.neural.cross_encoder import CrossEncoder

    if isinstance(model, CrossEncoder):
        return model
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.specs import is_cross_encoder, parse_options
    from embedstack.training.recipes import resolve_start

    name, options = parse_options(resolve_start(str(model)))
    folder, _how = resolve_model(name)
    if is_cross_encoder(folder):
        return CrossEncoder.from_folder(folder, **options)
    wrong = sorted(set(options) & {"pooling", "normalize", "truncate_dim"})
    if wrong:
        raise ConfigError(f"the options {wrong} of {model!r} apply to bi-encoders; a cross-encoder has none.")
    return CrossEncoder.from_pretrained_encoder(folder, num_labels=num_labels, pooler=pooler, seed=seed, **options)


def train_cross_encoder(
    model: str | Any,
    data: str | os.PathLike[str] | Any,
    *,
    loss: str = "bce",
    out: str | os.PathLike[str] | None = None,
    args: Any = None,
    hard_negatives: str | None = None,
    mining: Mapping[str, Any] | None = None,
    eval: str | Callable[[Any], Mapping[str, float]] | None = None,
    pooler: str = "identity",
    teacher: str | Any = None,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stage: Callable[[str], None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Train a cross-encoder (reranker) end to end; the Python twin of ``embedstack train cross-encoder``.

    Args:
        model: A cross-encoder SPEC/folder to continue, or a bi-encoder / BERT SPEC (``all-MiniLM-L6-v2``)
            to start one from (a fresh classifier; BERT's pooler set by ``pooler``).
        data: A file, a named set (:func:`training_data`) or a TrainingData: ``(anchor, positive, label)``
            pairs for ``bce``, ``(anchor, positive, score)`` for ``regression``, ``(anchor, positive)`` pairs
            with ``hard_negatives`` mined into ``(anchor, positive, negative_1..k)`` groups for ``listwise``
            and ``bce`` (groups become labelled pairs, the positive weighted ``k`` to balance the classes).
        loss: ``bce``, ``listwise`` or ``regression``.
        hard_negatives, mining: As :func:`train_sentence` (``bm25`` needs no model; ``dense`` mines with
            all-MiniLM-L6-v2 unless ``mining["model"]`` names another bi-encoder).
        eval: An evaluation spec (``rerank:scifact/train#tune-dev``) or an evaluator.
        pooler: ``identity``, ``keep`` or ``random`` (a new cross-encoder only).
        teacher: ``listwise`` only: a cross-encoder or bi-encoder SPEC/folder (or model) whose scores of each
            row's candidates add a KL term (:class:`~embedstack.training.cross.CrossEncoderTrainer`).

    Returns:
        The :class:`~embedstack.training.trainer.TrainResult` (with ``.mining`` stats when mined).
    """
    from embedstack.training.ce_losses import BinaryCrossEntropyLoss
    from embedstack.training.cross import CrossEncoderTrainer, groups_to_labelled_pairs
    from embedstack.training.evaluators import evaluator_from_spec
    from embedstack.training.trainer import TrainingArgs

    say = stage or (lambda _line: None)
    args = args or TrainingArgs()
    if teacher is not None and loss != "listwise":  # before loading (or building) anything
        raise ConfigError(f"distillation from a teacher trains the listwise loss on (anchor, positive, negative_1..k) "
                          f"groups; got loss {loss!r}.", fix={"loss": "listwise"})
    say(f"loading {model if isinstance(model, str) else type(model).__name__}")
    ce = load_cross_encoder_start(model, pooler=pooler, seed=args.seed)
    if out is not None:
        from embedstack.io import SENTENCE_MODEL, check_output

        check_output(out, kind=SENTENCE_MODEL, force=force)
    rows: Any = data if hasattr(data, "columns") else training_data(data, seed=args.seed)
    rows, mined = _mine_rows(rows, hard_negatives, mining, seed=args.seed, cache_dir=cache_dir, say=say)
    loss_module: Any = loss
    if loss == "bce" and "label" not in rows.columns and any(c.startswith("negative_") for c in rows.columns):
        k = sum(1 for c in rows.columns if c.startswith("negative_"))
        rows = groups_to_labelled_pairs(rows)
        loss_module = BinaryCrossEntropyLoss(pos_weight=float(k))
    evaluator = evaluator_from_spec(eval) if isinstance(eval, str) else eval
    teacher_model = _load_teacher(teacher, say)
    trainer = CrossEncoderTrainer(ce, loss_module, rows, args=args, evaluator=evaluator, progress=progress,
                                  teacher=teacher_model)
    trainer.notes = {"model_in": getattr(ce, "source", None), "evaluation": getattr(evaluator, "name", None),
                     "hard_negatives": hard_negatives, "mining": None if mined is None else mined.stats,
                     "pooler_init": pooler, "first_stage": getattr(evaluator, "first_stage", None),
                     "teacher": None if teacher is None else str(getattr(teacher_model, "name", teacher))}
    say(f"training a cross-encoder on {len(rows):,} rows with {type(trainer.loss).__name__}")
    result = trainer.train(out=out, resume=resume, force=force)
    result.mining = None if mined is None else mined.stats
    return result


def _mine_rows(rows: Any, hard_negatives: str | None, mining: Mapping[str, Any] | None, *, seed: int,
               cache_dir: Any, say: Callable[[str], None]) -> tuple[Any, Any]:
    """``(rows, mined)``: rows with mined ``negative_1..k`` columns (unchanged when ``hard_negatives`` is None).
    ``dense`` / ``both`` (or a margin) score with ``mining["model"]`` (default all-MiniLM-L6-v2 in bf16)."""
    if hard_negatives is None:
        return rows, None
    from embedstack.training.mining import mine_hard_negatives

    if "anchor" not in rows.columns or "positive" not in rows.columns:
        raise InputError(f"hard-negative mining needs (anchor, positive) rows; the data has {list(rows.columns)}.")
    options = dict(mining or {})
    corpus = options.pop("corpus", None)
    scorer = options.pop("model", None)
    if hard_negatives in ("dense", "both") or options.get("margin") is not None \
            or options.get("relative_margin") is not None:
        from embedstack.models import resolve

        scorer = resolve(str(scorer or "all-MiniLM-L6-v2@precision=bf16"))
    say(f"mining hard negatives ({hard_negatives}) for {len(rows):,} rows")
    mined = mine_hard_negatives((rows.column("anchor"), rows.column("positive")), corpus, method=hard_negatives,
                                model=scorer, seed=seed, cache_dir=cache_dir, **options)
    return mined.data, mined


def _load_teacher(teacher: str | os.PathLike[str] | Any, say: Callable[[str], None]) -> Any:
    """A teacher for distillation: a reranker object as it is, or a SPEC / folder loaded: a cross-encoder, or a
    bi-encoder (scores ``20 · cos``, :class:`~embedstack.training.ranking.BiEncoderTeacher`)."""
    model = teacher
    if isinstance(teacher, str | os.PathLike):
        from embedstack.models import resolve

        say(f"loading the teacher {teacher}")
        model = resolve(str(teacher))
    if model is not None and not callable(getattr(model, "predict", None)):
        from embedstack.neural.sentence import SentenceEncoder

        if not isinstance(model, SentenceEncoder):
            raise ConfigError(f"the teacher must score (query, document) pairs: a cross-encoder or a bi-encoder; "
                              f"{teacher!r} is a {type(model).__name__}.", param=("teacher", "teacher"))
        from embedstack.training.ranking import BiEncoderTeacher

        model = BiEncoderTeacher(model)
    return model


def load_colbert_start(model: str | Any, *, dim: int = 128, seed: int = 0, **options: Any) -> Any:
    """A ColBERT to train: a ColBERT SPEC/folder as it is, or a new one on a bi-encoder's or BERT's weights
    (:meth:`~embedstack.neural.colbert.ColBERT.from_pretrained_encoder`: a fresh ``dim``-wide projection)."""
    from embedstack.neural.colbert import ColBERT, is_colbert

    if isinstance(model, ColBERT):
        return model
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.specs import parse_options
    from embedstack.training.recipes import resolve_start

    name, parsed = parse_options(resolve_start(str(model)))
    folder, how = resolve_model(name)
    merged = {**parsed, **options}
    wrong = sorted(set(merged) & {"pooling", "normalize", "truncate_dim", "max_seq_length"})
    if wrong:
        raise ConfigError(f"the options {wrong} of {model!r} apply to bi-encoders; a ColBERT takes query_length and "
                          "document_length.")
    if is_colbert(folder):
        out = ColBERT.from_folder(folder, **merged)
    else:
        out = ColBERT.from_pretrained_encoder(folder, dim=dim, seed=seed, **merged)
    out.source = how
    return out


def train_colbert(
    model: str | Any,
    data: str | os.PathLike[str] | Any,
    *,
    loss: str = "contrastive",
    out: str | os.PathLike[str] | None = None,
    args: Any = None,
    hard_negatives: str | None = None,
    mining: Mapping[str, Any] | None = None,
    eval: str | Callable[[Any], Mapping[str, float]] | None = None,
    teacher: str | Any = None,
    dim: int = 128,
    model_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stage: Callable[[str], None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Train a ColBERT model end to end; the Python twin of ``embedstack train colbert``.

    Args:
        model: A ColBERT SPEC/folder to continue, or a bi-encoder / BERT SPEC (``all-MiniLM-L6-v2``) to start
            one from (a fresh ``dim``-wide projection).
        data: A file, a named set (:func:`training_data`) or a TrainingData of ``(anchor, positive)`` rows
            (with ``hard_negatives``: mined into ``negative_1..k``).
        loss: ``contrastive`` (in-batch + hard negatives) or ``distillation`` (KL to ``teacher`` only).
        hard_negatives, mining: As :func:`train_sentence`.
        eval: An evaluation spec (``retrieval:scifact/train#tune-dev``) or an evaluator.
        teacher: A cross-encoder or bi-encoder SPEC/folder (or model) whose scores the KL term follows; with the
            ``contrastive`` loss both terms are summed.
        dim: Width of a new projection.
        model_options: ``query_length``, ``document_length`` ... of the ColBERT.
    Returns:
        The :class:`~embedstack.training.trainer.TrainResult` (with ``.mining`` stats when mined).
    """
    from embedstack.training.colbert import ColBERTTrainer
    from embedstack.training.evaluators import evaluator_from_spec
    from embedstack.training.trainer import TrainingArgs

    say = stage or (lambda _line: None)
    args = args or TrainingArgs()
    say(f"loading {model if isinstance(model, str) else type(model).__name__}")
    colbert = load_colbert_start(model, dim=dim, seed=args.seed, **dict(model_options or {}))
    if out is not None:
        from embedstack.io import SENTENCE_MODEL, check_output

        check_output(out, kind=SENTENCE_MODEL, force=force)
    rows: Any = data if hasattr(data, "columns") else training_data(data, seed=args.seed)
    rows, mined = _mine_rows(rows, hard_negatives, mining, seed=args.seed, cache_dir=cache_dir, say=say)
    teacher_model = _load_teacher(teacher, say)
    evaluator = evaluator_from_spec(eval) if isinstance(eval, str) else eval
    trainer = ColBERTTrainer(colbert, loss, rows, args=args, evaluator=evaluator, progress=progress,
                             teacher=teacher_model)
    trainer.notes = {"model_in": getattr(colbert, "source", None), "evaluation": getattr(evaluator, "name", None),
                     "hard_negatives": hard_negatives, "mining": None if mined is None else mined.stats,
                     "teacher": None if teacher is None else str(getattr(teacher_model, "name", teacher))}
    if teacher_model is not None:
        say(f"scoring {len(rows):,} rows with the teacher")
    say(f"training a ColBERT on {len(rows):,} rows with {type(trainer.loss).__name__}")
    result = trainer.train(out=out, resume=resume, force=force)
    result.mining = None if mined is None else mined.stats
    return result


def load_splade_start(model: str | Any, *, head: str | None = None, **options: Any) -> Any:
    """A SPLADE encoder to train: a SPLADE SPEC/folder as it is, or a BERT / bi-encoder with the MLM head of
    ``head`` (a folder or ``mlm_head.safetensors``; :func:`~embedstack.neural.mlm.train_mlm_head` makes one)."""
    from embedstack.neural.splade import SpladeEncoder, is_splade

    if isinstance(model, SpladeEncoder):
        return model
    from embedstack.neural.hub import resolve_model
    from embedstack.neural.specs import parse_options
    from embedstack.training.recipes import resolve_start

    name, parsed = parse_options(resolve_start(str(model)))
    folder, how = resolve_model(name)
    merged = {**parsed, **options}
    out = SpladeEncoder.from_folder(folder, **merged) if is_splade(folder) and head is None \
        else SpladeEncoder.from_pretrained(folder, head=head, **merged)
    out.source = how
    return out


def train_splade(
    model: str | Any,
    data: str | os.PathLike[str] | Any,
    *,
    loss_options: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    args: Any = None,
    hard_negatives: str | None = None,
    mining: Mapping[str, Any] | None = None,
    eval: str | Callable[[Any], Mapping[str, float]] | None = None,
    teacher: str | Any = None,
    head: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stage: Callable[[str], None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Train a SPLADE model end to end; the Python twin of ``embedstack train splade``.

    Args:
        model: A SPLADE SPEC/folder (``recipe:minilm-mlm-head``: all-MiniLM-L6-v2 with a trained MLM head), or a
            BERT with ``head``.
        data: ``(anchor, positive)`` rows (a file, a named set or a TrainingData); ``hard_negatives`` mines more.
        loss_options: :class:`~embedstack.training.splade.SpladeLoss` options (``lambda_query``,
            ``lambda_document``, ``lambda_warmup_steps``, ``distill_weight``).
        teacher: A cross-encoder or bi-encoder SPEC/folder (or model): its scores of each row's candidates add a KL
            term.
        model_options: ``max_seq_length``, ``doc_top_k`` ... of the encoder.
        Others: as :func:`train_colbert`.
    """
    from embedstack.training.evaluators import evaluator_from_spec
    from embedstack.training.splade import SpladeLoss, SpladeTrainer
    from embedstack.training.trainer import TrainingArgs

    say = stage or (lambda _line: None)
    args = args or TrainingArgs()
    say(f"loading {model if isinstance(model, str) else type(model).__name__}")
    encoder = load_splade_start(model, head=head, **dict(model_options or {}))
    if out is not None:
        from embedstack.io import SENTENCE_MODEL, check_output

        check_output(out, kind=SENTENCE_MODEL, force=force)
    rows: Any = data if hasattr(data, "columns") else training_data(data, seed=args.seed)
    rows, mined = _mine_rows(rows, hard_negatives, mining, seed=args.seed, cache_dir=cache_dir, say=say)
    teacher_model = _load_teacher(teacher, say)
    evaluator = evaluator_from_spec(eval) if isinstance(eval, str) else eval
    loss = SpladeLoss(**dict(loss_options or {}))
    trainer = SpladeTrainer(encoder, loss, rows, args=args, evaluator=evaluator, progress=progress,
                            teacher=teacher_model)
    trainer.notes = {"model_in": getattr(encoder, "source", None), "evaluation": getattr(evaluator, "name", None),
                     "hard_negatives": hard_negatives, "mining": None if mined is None else mined.stats,
                     "loss_options": dict(loss_options or {}),
                     "teacher": None if teacher is None else str(getattr(teacher_model, "name", teacher))}
    say(f"training SPLADE on {len(rows):,} rows")
    result = trainer.train(out=out, resume=resume, force=force)
    result.mining = None if mined is None else mined.stats
    return result
