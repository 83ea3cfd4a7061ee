"""NPLM (torch): both losses learn a tiny deterministic language; the cost helper measures steps."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from embedstack.errors import ConfigError, InputError  # noqa: E402
from embedstack.static.nplm import NPLM, step_cost  # noqa: E402


def _texts():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(200):
        a = rng.choice(["red", "blue", "green"])
        out.append(f"the {a} car is fast and the {a} bike is slow")
    return out


@pytest.mark.parametrize("loss", ["softmax", "negative"])
def test_nplm_learns(loss):
    torch.set_num_threads(1)
    lm = NPLM(context=2, dim=8, hidden=16, epochs=3, min_count=1, loss=loss, batch_size=64,
              learning_rate=0.02).fit(_texts())
    assert lm.history_[-1] < lm.history_[0]
    assert lm.wv_.vectors.shape == (len(lm.vocabulary_), 8)
    # "car is" -> "fast" is deterministic in this language; unigram perplexity is far higher
    assert lm.perplexity(_texts()[:20]) < 4.0


def test_nplm_bad_input_and_cost():
    with pytest.raises(ConfigError):
        NPLM(loss="hinge").fit(_texts())
    with pytest.raises(InputError):
        NPLM(context=20, min_count=1).fit(["a b c"])
    full = step_cost(2000, loss="softmax", steps=2, batch_size=32)
    ns = step_cost(2000, loss="negative", steps=2, batch_size=32)
    assert full > 0 and ns > 0
