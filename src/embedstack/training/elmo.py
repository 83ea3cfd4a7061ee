"""Training ELMo's bidirectional language model on a corpus, within a time, step or word budget.

One loop, top to bottom: documents are split once into a training and a held-out part (document-disjoint,
fixed: every ``held_out_every``-th document is held out, whatever the seed); paragraphs are tokenized with
:data:`~embedstack.neural.elmo.ELMO_ANALYZER` and cut into windows of ``window`` words (truncated
back-propagation: each window is a sentence ``<S> … </S>`` of its own); the output vocabulary is the most
frequent words of the first ``vocab_words`` training tokens. Then AdamW (linear warmup, linear decay to 10%
over the budget), gradient clipping, optional bf16 autocast, until the budget is spent; the held-out
perplexity of both directions is measured at the end.

Example:
    >>> docs = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 4
    >>> res = train_elmo(docs, config={"char_dim": 4, "filters": [[1, 8], [2, 8]], "proj_dim": 8,
    ...                  "hidden_dim": 16}, minutes=None, max_steps=3, batch_size=4, held_out_every=3)
    >>> res.steps, sorted(res.perplexity)
    (3, ['average', 'backward', 'forward', 'tokens'])
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedstack._extras import require

torch = require("torch", "torch", "ELMo training")

from embedstack.errors import ConfigError, InputError  # noqa: E402
from embedstack.neural.elmo import (  # noqa: E402
    ELMO_ANALYZER,
    SPECIALS,
    Elmo,
    ElmoConfig,
    ElmoModel,
    batch_targets,
    perplexity,
)
from embedstack.text.tokenize import Analyzer  # noqa: E402
from embedstack.text.vocab import Vocabulary  # noqa: E402

__all__ = ["ElmoTrainResult", "train_elmo", "split_documents", "windows", "build_vocab"]

Texts = Callable[[], Iterable[str]] | Sequence[str]


@dataclass
class ElmoTrainResult:
    """What :func:`train_elmo` returns: the model, what it saw, and its held-out perplexity."""

    elmo: Elmo
    steps: int = 0
    tokens: int = 0  # words of the training windows (the ``<S>``/``</S>`` markers not counted)
    seconds: float = 0.0
    epochs: int = 0
    losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, forward, backward) mean NLL
    perplexity: dict[str, float] = field(default_factory=dict)
    held_out_sentences: int = 0
    stopped_by: str = ""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-able facts of the run (stored in the saved model's manifest, printed by the CLI)."""
        c = self.elmo.model.config
        return {"steps": self.steps, "tokens": self.tokens, "seconds": round(self.seconds, 1),
                "tokens_per_second": round(self.tokens_per_second, 1), "epochs": self.epochs,
                "stopped_by": self.stopped_by, "held_out_sentences": self.held_out_sentences,
                "held_out_tokens": int(self.perplexity.get("tokens", 0)),
                "perplexity_forward": round(self.perplexity.get("forward", math.nan), 2),
                "perplexity_backward": round(self.perplexity.get("backward", math.nan), 2),
                "perplexity_average": round(self.perplexity.get("average", math.nan), 2),
                "last_loss": None if not self.losses else round((self.losses[-1][1] + self.losses[-1][2]) / 2, 4),
                "params": sum(p.numel() for p in self.elmo.model.parameters()), "vocab_size": c.vocab_size,
                "dim": c.dim, "layers": c.n_layers + 1}


def split_documents(texts: Texts, *, held_out_every: int, held_out: bool) -> Iterator[str]:
    """The training documents (``held_out=False``) or the held-out ones: document ``i`` is held out when
    ``i % held_out_every == held_out_every - 1`` (fixed, so the split never depends on a seed)."""
    source = texts() if callable(texts) else texts
    for i, doc in enumerate(source):
        if (i % held_out_every == held_out_every - 1) == held_out:
            yield doc


def windows(documents: Iterable[str], *, analyzer: Analyzer = ELMO_ANALYZER, window: int = 20,
            min_words: int = 2) -> Iterator[list[str]]:
    """Each paragraph (line) of each document, tokenized and cut into windows of at most ``window`` words."""
    for doc in documents:
        for para in doc.split("\n"):
            words = analyzer.tokenize(para)
            for start in range(0, len(words), window):
                piece = words[start:start + window]
                if len(piece) >= min_words:
                    yield piece


def build_vocab(sentences: Iterable[list[str]], *, size: int, max_words: int) -> list[str]:
    """``</S>``, ``<S>``, ``<unk>`` + the ``size - 3`` most frequent words of the first ``max_words`` tokens."""
    seen = 0

    def head() -> Iterator[list[str]]:
        nonlocal seen
        for s in sentences:
            yield s
            seen += len(s)
            if seen >= max_words:
                return

    vocab = Vocabulary(max_size=size - len(SPECIALS)).fit(head())
    return [*SPECIALS, *(w for w in vocab.words_ if w not in SPECIALS)]


def _shuffled(stream: Iterable[list[str]], buffer: int, batch_size: int,
              rng: np.random.Generator) -> Iterator[list[list[str]]]:
    buf: list[list[str]] = []
    for s in stream:
        buf.append(s)
        if len(buf) >= buffer:
            order = rng.permutation(len(buf))
            for i in range(0, len(order) - batch_size + 1, batch_size):  # the rest stays for the next round
                yield [buf[j] for j in order[i:i + batch_size]]
            rest = len(order) - len(order) % batch_size
            buf = [buf[j] for j in order[rest:]]
    from embedstack.neural.mlm import _shuffled_batches

    yield from _shuffled_batches(buf, batch_size, rng)  # the last, partial buffer: as the MLM trainer does


def train_elmo(
    texts: Texts,
    *,
    config: dict[str, Any] | None = None,
    minutes: float | None = 10.0,
    max_steps: int | None = None,
    max_words: int | None = None,
    batch_size: int = 64,
    window: int = 20,
    lr: float = 2e-3,
    warmup_steps: int = 200,
    weight_decay: float = 0.0,
    clip: float = 1.0,
    precision: str = "fp32",
    vocab_size: int = 50_000,
    vocab_words: int = 5_000_000,
    held_out_every: int = 100,
    held_out_sentences: int = 2000,
    shuffle_buffer: int = 4096,
    seed: int = 0,
    log_every: int = 20,
    threads: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> ElmoTrainResult:
    """Train an ELMo biLM from scratch and measure its held-out perplexity.

    Args:
        texts: Documents: a list, or a callable returning a fresh iterable (re-read each epoch), e.g.
            ``lambda: iter_texts("enwiki")``.
        config: :class:`~embedstack.neural.elmo.ElmoConfig` fields (``vocab_size`` comes from the data).
        minutes: Wall-clock training budget (None: only the other budgets stop training).
        max_steps: Step budget; with it (and no ``minutes``) the run is deterministic.
        max_words: Stop once this many training words have been seen.
        batch_size, window: Windows per step and words per window.
        lr, warmup_steps, weight_decay, clip: AdamW, linear warmup, linear decay to 10% of ``lr`` over the
            budget; gradient-norm clipping.
        precision: ``fp32``, or ``bf16`` autocast (LSTMs and CNN in bfloat16, softmax and weights in fp32):
            faster on CPUs with AVX-512 BF16 / AMX.
        vocab_size: Output vocabulary size, markers included.
        vocab_words: Training tokens counted to choose the vocabulary.
        held_out_every, held_out_sentences: Every N-th document is held out; perplexity is measured on the
            first ``held_out_sentences`` windows of those.
        shuffle_buffer: Windows shuffled together (seeded) before batching.
        seed: Seeds initialisation and shuffling.
        log_every: Steps per entry of ``losses``.
        threads: torch threads while training (None: torch's setting). One thread is often as fast on a
            few cores: the LSTMs' per-step matmuls are small, and a single thread never waits on a busy core.
        progress: Called after each step with ``{step, total, loss, forward, backward, lr, epoch, tokens,
            tokens_per_second, elapsed, eta}`` (``total`` is an estimate under a time budget).

    Raises:
        ConfigError: no budget, or an invalid option. InputError: the corpus has no usable text.
    """
    if minutes is None and max_steps is None and max_words is None:
        raise ConfigError("Give a budget: minutes, max_steps or max_words (all are None).", fix={"minutes": 10})
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"Unknown training precision {precision!r}; use 'fp32' or 'bf16'.", fix={"precision": "fp32"})
    for name, value, low in (("batch_size", batch_size, 1), ("window", window, 2), ("held_out_every", held_out_every, 2),
                             ("held_out_sentences", held_out_sentences, 1), ("vocab_size", vocab_size, 4)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"The {name!r} parameter of train_elmo must be an int >= {low}. Got {value!r} instead.",
                              param=(name, f"The {name!r} parameter of train_elmo"))
    for name, given, low in (("max_steps", max_steps, 1), ("max_words", max_words, 1), ("threads", threads, 1)):
        if given is not None and (isinstance(given, bool) or not isinstance(given, int) or given < low):
            raise ConfigError(f"The {name!r} parameter of train_elmo must be None or an int >= {low}. Got {given!r} "
                              "instead.", param=(name, f"The {name!r} parameter of train_elmo"))
    if minutes is not None and not (isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0):
        raise ConfigError(f"The 'minutes' parameter of train_elmo must be None or > 0. Got {minutes!r} instead.",
                          param=("minutes", "The 'minutes' parameter of train_elmo"))
    unknown = sorted(set(config or {}) - set(ElmoConfig.__dataclass_fields__) - {"vocab_size"})
    if unknown:
        raise ConfigError(f"unknown ELMo config key(s) {unknown}; known: {sorted(ElmoConfig.__dataclass_fields__)}.")
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train(texts, config, minutes, max_steps, max_words, batch_size, window, lr, warmup_steps, weight_decay,
                      clip, autocast, vocab_size, vocab_words, held_out_every, held_out_sentences, shuffle_buffer,
                      seed, log_every, progress)
    finally:
        torch.set_num_threads(before)


def _train(texts: Texts, config: dict[str, Any] | None, minutes: float | None, max_steps: int | None,
           max_words: int | None, batch_size: int, window: int, lr: float, warmup_steps: int, weight_decay: float,
           clip: float, autocast: Callable[[], Any], vocab_size: int, vocab_words: int, held_out_every: int,
           held_out_sentences: int, shuffle_buffer: int, seed: int, log_every: int,
           progress: Callable[[dict[str, Any]], None] | None) -> ElmoTrainResult:
    rng = np.random.default_rng(seed)

    def train_windows() -> Iterator[list[str]]:
        return windows(split_documents(texts, held_out_every=held_out_every, held_out=False), window=window)

    held = [s for _, s in zip(range(held_out_sentences), windows(
        split_documents(texts, held_out_every=held_out_every, held_out=True), window=window), strict=False)]
    if not held:
        raise InputError(f"no held-out text: the corpus has fewer than {held_out_every} documents with words; "
                         "lower held_out_every.", fix={"held_out_every": 2})
    try:
        vocab = build_vocab(train_windows(), size=vocab_size, max_words=vocab_words)
    except InputError:
        raise InputError("the corpus yielded no training words; nothing to train ELMo on.") from None
    cfg = ElmoConfig(**{**(config or {}), "vocab_size": len(vocab)})
    model = ElmoModel(cfg, seed=seed)
    elmo = Elmo(model, vocab)  # (puts the model in eval mode)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr)
    result = ElmoTrainResult(elmo=elmo, held_out_sentences=len(held))
    budget_s = None if minutes is None else float(minutes) * 60.0
    start = time.monotonic()

    def done_fraction() -> float:
        parts = [0.0]
        if max_steps is not None:
            parts.append(result.steps / max(1, max_steps))
        if max_words is not None:
            parts.append(result.tokens / max(1, max_words))
        if budget_s is not None:
            parts.append((time.monotonic() - start) / max(budget_s, 1e-9))
        return min(1.0, max(parts))

    def batches() -> Iterator[list[list[str]]]:
        while True:
            produced = 0
            for batch in _shuffled(train_windows(), shuffle_buffer, batch_size, rng):
                produced += 1
                yield batch
            result.epochs += 1
            if produced == 0:  # pragma: no cover - build_vocab already saw words
                raise InputError("the corpus yielded no training windows.")

    window_f: list[float] = []
    window_b: list[float] = []
    for batch in batches():
        if max_steps is not None and result.steps >= max_steps:
            result.stopped_by = "max_steps"
            break
        if max_words is not None and result.tokens >= max_words:
            result.stopped_by = "max_words"
            break
        if budget_s is not None and time.monotonic() - start >= budget_s:
            result.stopped_by = "minutes"
            break
        chars, lengths, targets = batch_targets(elmo, batch)
        step_lr = lr * min(1.0, (result.steps + 1) / max(1, warmup_steps)) * max(0.1, 1.0 - done_fraction())
        for group in opt.param_groups:
            group["lr"] = step_lr
        with autocast():
            f_loss, b_loss, _ = model.lm_losses(chars, lengths, targets)
        loss = (f_loss + b_loss) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        f, b = float(f_loss.detach()), float(b_loss.detach())
        if not (math.isfinite(f) and math.isfinite(b)):
            raise InputError(f"ELMo loss became {f}/{b} at step {result.steps}; lower the learning rate (lr={lr}).",
                             fix={"lr": lr / 2})
        result.steps += 1
        result.tokens += sum(len(s) for s in batch)
        window_f.append(f)
        window_b.append(b)
        if len(window_f) >= log_every:
            result.losses.append((result.steps, float(np.mean(window_f)), float(np.mean(window_b))))
            window_f, window_b = [], []
        if progress is not None:
            elapsed = time.monotonic() - start
            frac = done_fraction()
            steps_only = minutes is None and max_words is None
            total = max_steps if steps_only else (int(result.steps / frac) if frac > 0 else None)
            progress({"step": result.steps, "total": total,
                      "loss": (f + b) / 2, "forward": f, "backward": b, "lr": step_lr, "epoch": result.epochs,
                      "tokens": result.tokens, "tokens_per_second": result.tokens / max(elapsed, 1e-9),
                      "elapsed": elapsed, "eta": elapsed * (1 - frac) / frac if frac > 0 else None})
    if window_f:
        result.losses.append((result.steps, float(np.mean(window_f)), float(np.mean(window_b))))
    result.seconds = time.monotonic() - start
    if not result.stopped_by:  # pragma: no cover - the batch stream is endless
        result.stopped_by = "data"
    model.eval()
    result.perplexity = perplexity(elmo, held)
    elmo.meta = {"training": result.summary()}
    return result
