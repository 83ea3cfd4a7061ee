"""SPLADE: learned sparse retrieval. BERT's masked-LM head scores every vocabulary term for every token;
``w_j = max_i log(1 + ReLU(logit_ij))`` makes one |V|-dimensional, mostly-zero vector per text.

:class:`SpladeEncoder` is a :class:`~embedstack.base.SparseEncoder` (Formal et al. 2021, SPLADE v2 max pooling):
its vectors go into the same inverted index as BM25's (:class:`~embedstack.index.SparseIndex`), and a
text's non-zero terms, the words in it and the *expansion* terms the model adds, can be read back
(:meth:`explain`).

* **Head.** The MLM head is BERT's own (transform: dense → GELU → LayerNorm, then a decoder tied to the
  word embeddings, plus a bias; :class:`~embedstack.neural.mlm.BertLMPredictionHead`). all-MiniLM-L6-v2
  ships without one: :func:`embedstack.neural.mlm.train_mlm_head` trains it first.
* **int8** (``precision="int8-token"``): the transformer as in
  :mod:`embedstack.neural.quantize`, and the decoder, half of the work (384 x 30,522 products per token
  against about 21 MFLOP for MiniLM's six blocks), as int8 products too: a text's transformed token states
  quantized with one scale per text (so the max over tokens needs no scale), each term's decoder
  row with its own: on ``torch._int_mm`` where the CPU has int8 dot-product units (:func:`_max_logits_int8`),
  on fbgemm's u8 x s8 kernel elsewhere, one text's real tokens and a block of terms at a time
  (:func:`_max_logits_fbgemm`; the product :func:`embedstack.neural.quantize.int8_product` picks for the
  transformer).
* **bf16** (``bf16``, ``bf16-pure``): where the CPU has AMX or AVX-512 BF16, the decoder's products and the
  max over tokens are one kernel (:func:`embedstack.neural._attention.splade_max`): no logit is written to
  memory, and the sums stay float32.
* **fp32** (and bf16 where no kernel above applies): the decoder's products run a few texts and a block of the
  vocabulary at a time (:func:`_max_logits`), each block masked and max-reduced while its logits are in cache;
  on the AVX2 EPYC this took the decoder step from 80 to 150 GFLOP/s against one product over the whole vocabulary.
* **Pruning.** ``doc_top_k`` / ``query_top_k`` keep a text's largest weights (the index stays small).
* **Inference-free queries** (``query_mode="idf"``): no transformer at query time; a query is its own
  WordPiece tokens, each weighted by its idf in the indexed corpus (:meth:`fit_idf`). Documents are
  still expanded by the model. Latency drops to tokenizing; quality is measured beside the full mode.

It runs on the shared CPU fast path (:class:`~embedstack.neural.runtime.TransformerRuntime`), and reads and
writes a sentence-transformers ``SparseEncoder`` folder (``MLMTransformer`` + ``SpladePooling``).

Example:
    >>> from embedstack.neural.config import BertConfig
    >>> from embedstack.neural.tokenizer import WordPiece
    >>> tok = WordPiece.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"])
    >>> cfg = BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                  intermediate_size=16)
    >>> sp = SpladeEncoder(BertModel(cfg).init_weights(seed=0), tok)
    >>> sp.encode_sparse(["a b", "c"]).shape
    (2, 8)
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from embedstack._extras import require

torch = require("torch", "torch", "SPLADE")

from torch import Tensor  # noqa: E402
from torch.autograd import Function  # noqa: E402

from embedstack._threads import SMALL_BATCH, SMALL_TOKENS  # noqa: E402
from embedstack.errors import ConfigError, FormatError, InputError, NotFittedError  # noqa: E402
from embedstack.io import atomic_dir  # noqa: E402
from embedstack.neural.mlm import BertLMPredictionHead  # noqa: E402
from embedstack.neural.runtime import TransformerRuntime  # noqa: E402
from embedstack.neural.tokenizer import WordPiece  # noqa: E402
from embedstack.neural.transformer import BertModel, load_encoder  # noqa: E402

__all__ = ["SpladeEncoder", "is_splade", "splade_pool", "QUERY_MODES"]

QUERY_MODES = ("full", "idf")
_MLM = "sentence_transformers.sparse_encoder.modules.MLMTransformer"
_POOL = "sentence_transformers.sparse_encoder.modules.SpladePooling"
_LOGIT_BYTES = 64 * 2**20  # int8 decoder: vocabulary logits computed per slice of tokens (B x T x |V| would be GBs)
# float decoder: each product covers about this many tokens (whole texts, so at least this many), enough rows for
# the GEMM's full rate, and this many vocabulary rows, so that a block's logits (about 2 MiB) stay in cache for the
# mask and the max over tokens. On the AVX2 EPYC (2 threads) the decoder step (products, mask, max) ran at 80 GFLOP/s
# with one product over the whole vocabulary per two texts, and at 150 in these blocks.
_DECODER_TOKENS = 2048
_DECODER_VOCAB_BLOCK = 256


def is_splade(folder: Any) -> bool:
    """Whether a model folder holds a SPLADE model (sentence-transformers ``SparseEncoder`` with SPLADE pooling)."""
    root = Path(folder)
    modules = root / "modules.json"
    return modules.is_file() and "SpladePooling" in modules.read_text(encoding="utf-8", errors="replace")


def splade_pool(head: BertLMPredictionHead, states: Tensor, mask: Tensor) -> Tensor:
    """``max_i log(1 + ReLU(head(states)_i))`` over the attended tokens, computed as ``log(1 + ReLU(max_i ·))``
    (the function is monotonic, so the max can come first): ``(B, |V|)``, float32.

    The vocabulary logits are made a few texts and a block of the vocabulary at a time (:func:`_max_logits`), so a
    batch of 256-token texts never holds ``B x T x |V|`` floats, and only their max over tokens (and, with autograd,
    its position) is kept. With autograd, the backward pass follows only the terms whose weight is positive (see
    :class:`_MaxLogits`).
    """
    x = head.transform(states)  # (B, T, C)
    weight, bias = head.decoder.weight, head.bias
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        top = _MaxLogits.apply(x, mask.bool(), weight, bias)
    else:  # inference: no positions to keep for a backward pass
        top = _max_logits(x, mask.bool(), weight, bias, where=False)[0]
    return torch.log1p(torch.relu(top))


def _decoder_blocks(t: int) -> tuple[int, int]:
    """Texts and vocabulary rows per decoder product for texts of ``t`` tokens (:data:`_DECODER_TOKENS`,
    :data:`_DECODER_VOCAB_BLOCK`)."""
    return max(1, -(-_DECODER_TOKENS // max(1, t))), _DECODER_VOCAB_BLOCK


def _max_logits(x: Tensor, mask: Tensor, weight: Tensor, bias: Tensor,
                where: bool = True) -> tuple[Tensor, Tensor | None]:
    """``max_t (x_t · W_v + b_v)`` over each row's unmasked tokens, and (``where``) the token it comes from: two
    ``(B, |V|)``. The logits are made a few texts and a block of the vocabulary at a time (:func:`_decoder_blocks`):
    a block is masked and reduced while it is in cache, and ``B x T x |V|`` floats never exist."""
    b, t, _ = x.shape
    vocab = int(weight.shape[0])
    rows, cols = _decoder_blocks(t)
    if torch.is_autocast_enabled("cpu"):  # cast once: autocast keeps no cast copy of a slice of the weight
        weight = weight.to(torch.get_autocast_dtype("cpu"))
    values = torch.empty(b, vocab, dtype=torch.float32)
    tokens = torch.empty(b, vocab, dtype=torch.int64) if where else None
    for s in range(0, b, rows):
        xs, pad = x[s:s + rows], ~mask[s:s + rows, :, None]
        for v in range(0, vocab, cols):
            logits = torch.nn.functional.linear(xs, weight[v:v + cols])  # (r, T, cols)
            logits.masked_fill_(pad, float("-inf"))
            if tokens is None:
                values[s:s + rows, v:v + cols] = logits.amax(dim=1)
            else:
                top = logits.max(dim=1)
                values[s:s + rows, v:v + cols] = top.values
                tokens[s:s + rows, v:v + cols] = top.indices
    return values.add_(bias.float()), tokens


def _max_logits_int8(x: Tensor, mask: Tensor, qweight: Tensor, wscale: Tensor, bias: Tensor) -> Tensor:
    """:func:`_max_logits`'s values from int8 products (inference): ``x`` (B, T, C) quantized with one
    scale per text (its attended tokens'), the decoder ``qweight`` (|V|, C) int8 with one scale per term
    (``wscale``, positive), int32 sums from ``torch._int_mm``. Every scale and the bias are then the same
    for all of a text's tokens, so the max over tokens is taken on the int32 sums and they are applied once,
    after it: the (tokens x |V|) sums are read twice (mask, max) and never converted. ``(B, |V|)`` float32."""
    from embedstack.neural.quantize import quantize_rows

    b, t, c = x.shape
    vocab = int(qweight.shape[0])
    # one row per text: padding (zeroed) does not set a text's scale
    q, scale = quantize_rows((x.float() * mask[:, :, None]).reshape(b, t * c))
    q = q.view(b, t, c)
    rows = max(1, _LOGIT_BYTES // max(1, t * vocab * 4))
    top = torch.empty(b, vocab, dtype=torch.int32)
    low = torch.iinfo(torch.int32).min
    for s in range(0, b, rows):
        qs = q[s:s + rows]
        sums = torch._int_mm(qs.reshape(-1, c), qweight.T).view(qs.shape[0], t, vocab)
        sums.masked_fill_(~mask[s:s + rows, :, None], low)
        top[s:s + rows] = sums.amax(dim=1)
    return top.float().mul_(scale).mul_(wscale).add_(bias.float())


#: terms per fbgemm decoder product (:func:`_max_logits_fbgemm`): a block's packed weight (1.5 MB for MiniLM) and
#: one abstract's logits of it (4 MB) stay in the caches between the product and the max over tokens
_FBGEMM_VOCAB_BLOCK = 4096


def _fbgemm_decoder(weight: Tensor) -> list[tuple[int, int, Any]]:
    """The decoder ``weight`` (|V|, C) for :func:`_max_logits_fbgemm`: (first term, terms, fbgemm-packed int8 weight
    with one scale per term at :data:`~embedstack.neural.quantize.FBGEMM_WEIGHT_LEVELS` levels) per block of
    :data:`_FBGEMM_VOCAB_BLOCK` terms."""
    from embedstack.neural.quantize import FBGEMM_WEIGHT_LEVELS, fbgemm_pack, quantize_weight

    qweight, wscale = quantize_weight(weight, FBGEMM_WEIGHT_LEVELS)
    vocab = int(weight.shape[0])
    return [(v, min(_FBGEMM_VOCAB_BLOCK, vocab - v),
             fbgemm_pack(qweight[v:v + _FBGEMM_VOCAB_BLOCK].contiguous(), wscale[v:v + _FBGEMM_VOCAB_BLOCK].contiguous()))
            for v in range(0, vocab, _FBGEMM_VOCAB_BLOCK)]


def _max_logits_fbgemm(x: Tensor, mask: Tensor, blocks: list[tuple[int, int, Any]], bias: Tensor) -> Tensor:
    """:func:`_max_logits_int8` on fbgemm's u8 x s8 product (CPUs without int8 dot-product units, where
    ``torch._int_mm`` is a scalar loop): ``blocks`` from :func:`_fbgemm_decoder`. A text's attended tokens are
    quantized with one scale (:func:`~embedstack.neural.quantize.scale_rows`, 127 levels), and only they are
    multiplied, one block of terms at a time: no padding row, no mask to apply; the product's float output is
    already each term's sums times its scale, so the max over tokens is taken on it and the text's scale and the
    bias applied once after. ``(B, |V|)`` float32; ``-inf`` plus the bias for a text with no token."""
    from embedstack.neural.quantize import FBGEMM_LEVELS, scale_rows

    b, _, c = x.shape
    vocab = sum(n for _, n, _ in blocks)
    top = torch.full((b, vocab), float("-inf"), dtype=torch.float32)
    scales = torch.ones(b, 1, dtype=torch.float32)
    texts = []
    for i in range(b):
        tokens = x[i][mask[i]].float()  # (n, C): the attended tokens only
        if tokens.shape[0]:
            rows, scale, _ = scale_rows(tokens.reshape(1, -1), None, FBGEMM_LEVELS)
            texts.append((i, rows.view(tokens.shape)))
            scales[i] = scale[0]
    product = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    for v, n, packed in blocks:  # a block's weight stays in cache over the texts
        for i, rows in texts:
            top[i, v:v + n] = product(rows, 1.0, FBGEMM_LEVELS + 1, packed).amax(0)
    return top.mul_(scales).add_(bias.float())


class _MaxLogits(Function):
    """:func:`_max_logits` with a sparse backward pass.

    The gradient of a max over tokens reaches only the token that holds it, and after ``log(1 + ReLU(·))`` only
    the terms whose max is positive: a few hundred of the 30,522 per text. So the backward pass gathers those
    (row, term, token) triples and updates the matching rows of the token states, the decoder (the word
    embeddings) and the bias, instead of two dense ``(B·T) x |V| x C`` products and a recomputation of the
    logits (sentence-transformers' SpladePooling, and our checkpointed version before it, did both): the same
    gradient as autograd's through ``amax``, except that a tie gives all of it to one token instead of splitting it.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx: Any, x: Tensor, mask: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        values, where = _max_logits(x, mask, weight, bias)
        assert where is not None
        ctx.save_for_backward(x, weight, where)
        ctx.bias_dtype = bias.dtype
        return values

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None, Tensor | None]:
        x, weight, where = ctx.saved_tensors
        b, t, c = x.shape
        row, term = grad.nonzero(as_tuple=True)
        g = grad[row, term].unsqueeze(1)  # (n, 1)
        token = row * t + where[row, term]  # flat (row, token) positions
        flat = x.reshape(b * t, c)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.zeros_like(flat).index_add_(0, token, (weight[term].float() * g).to(x.dtype)).view(b, t, c)
        if ctx.needs_input_grad[2]:
            grad_w = torch.zeros_like(weight).index_add_(0, term, (flat[token].float() * g).to(weight.dtype))
        if ctx.needs_input_grad[3]:
            grad_b = grad.sum(0).to(ctx.bias_dtype)
        return grad_x, None, grad_w, grad_b


def _topk_rows(dense: np.ndarray, k: int | None) -> sp.csr_array:
    """csr rows of ``dense`` keeping the ``k`` largest positive weights of each row (all positives for None)."""
    if k is not None and dense.shape[1] > k:
        part = np.argpartition(-dense, k - 1, axis=1)[:, :k]
        kept = np.zeros_like(dense)
        np.put_along_axis(kept, part, np.take_along_axis(dense, part, axis=1), axis=1)
        dense = kept
    return sp.csr_array(np.where(dense > 0, dense, 0).astype(np.float32))


class SpladeEncoder(TransformerRuntime):
    """A SPLADE sparse encoder (see the module docstring).

    Args:
        model: The transformer.
        tokenizer: Its WordPiece tokenizer.
        head: The MLM head (tied to ``model``'s word embeddings); a new, untrained one when None.
        max_seq_length: Longest text in tokens (longer ones are cut, with one warning).
        query_mode: ``full`` (queries through the model) or ``idf`` (inference-free: token idf weights).
        idf: ``(|V|,)`` idf weights of the vocabulary (:meth:`fit_idf`), needed by ``query_mode="idf"``.
        doc_top_k, query_top_k: Keep at most this many terms per document / query (None: all non-zero).
        backend, precision, num_threads, compile, workers, small_backend: The shared runtime options.
        name, source: A display name and where the model came from.
    """

    def __init__(
        self,
        model: BertModel,
        tokenizer: WordPiece,
        *,
        head: BertLMPredictionHead | None = None,
        max_seq_length: int = 256,
        query_mode: str = "full",
        idf: np.ndarray | None = None,
        doc_top_k: int | None = None,
        query_top_k: int | None = None,
        backend: str = "torch",
        precision: str = "fp32",
        num_threads: int | None = None,
        compile: bool = False,
        workers: int = 1,
        small_backend: str | None = None,
        name: str | None = None,
        source: str | None = None,
    ) -> None:
        if backend != "torch":
            raise ConfigError("SpladeEncoder runs on the torch backend (its MLM head is not in the ONNX graph).")
        self._init_runtime(model, tokenizer, max_seq_length=min(int(max_seq_length), model.config.max_position_embeddings),
                           backend=backend, precision=precision, num_threads=num_threads, compile=compile,
                           workers=workers, small_backend=small_backend)
        if head is None:
            head = BertLMPredictionHead(model.config, model.embeddings.word_embeddings)
        self.head = head.eval()
        if query_mode not in QUERY_MODES:
            raise ConfigError(f"query_mode must be one of {list(QUERY_MODES)}; got {query_mode!r}.")
        for label, value in (("doc_top_k", doc_top_k), ("query_top_k", query_top_k)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1):
                raise ConfigError(f"{label} must be an int >= 1 or None. Got {value!r}.")
        self.query_mode = query_mode
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float32)
        if self.idf is not None and self.idf.shape != (self.vocab_size,):
            raise FormatError(f"the idf table has shape {self.idf.shape}; the vocabulary has {self.vocab_size} terms.")
        self.doc_top_k = doc_top_k
        self.query_top_k = query_top_k
        self.name = name or "splade"
        self.source = source
        self.folder: Path | None = None
        self._vocab_words: list[str] | None = None
        # the decoder as the int8 / fused kernels read it: (the weight's version and address when made, the copy)
        self._int8_decoder: tuple[tuple[int, int], Any] | None = None
        self._packed_decoder: tuple[tuple[int, int], Any] | None = None
        self._decoder_lock = threading.Lock()

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def dim(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"SpladeEncoder(name={self.name!r}, vocab={self.vocab_size}, query_mode={self.query_mode!r}, "
                f"doc_top_k={self.doc_top_k}, precision={self.precision!r})")

    # -------------------------------------------------------------------------------------- encoding
    def _tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        ids, cut = self.tokenizer.encode_batch(list(texts), max_length=self.max_seq_length)
        self._warn_truncated(cut)
        return ids

    def encode_sparse(self, texts: Sequence[str], *, role: str = "document", batch_size: int = 32,
                      progress: Callable[[int], None] | None = None) -> sp.csr_array:
        """Term weights of each text: a ``scipy.sparse.csr_array`` ``(n, |V|)`` of non-negative float32.

        Queries in ``query_mode="idf"`` skip the transformer (their tokens weighted by idf).
        """
        if isinstance(texts, str | bytes):
            raise InputError("encode_sparse() takes a list of texts; wrap one text in a list: [text].")
        if role not in ("query", "document"):
            raise ConfigError(f"Unknown role {role!r}; use 'query' or 'document'.")
        texts = list(texts)
        if role == "query" and self.query_mode == "idf":
            return self._idf_queries(texts)
        top_k = self.query_top_k if role == "query" else self.doc_top_k
        ids = self._tokenize(texts)
        rows: list[Any] = [None] * len(ids)
        run = self._get_runner()
        done = [0]

        def one(sel: np.ndarray) -> None:
            from embedstack.neural.tokenizer import pad_batch

            x, m = pad_batch([ids[i] for i in sel], self.tokenizer.pad_id)
            states = run(x, m)
            if self.precision == "int8-token":
                pooled = self._pool_int8(states, torch.from_numpy(m)).numpy()
            elif self._fused():
                pooled = self._pool_fused(states, torch.from_numpy(m)).numpy()
            else:
                with self._autocast():
                    pooled = splade_pool(self.head, states, torch.from_numpy(m)).float().numpy()
            block = _topk_rows(pooled, top_k)
            for r, i in enumerate(sel):
                rows[i] = block[[r]]

        def on_batch(k: int) -> None:
            done[0] += k
            if progress is not None:
                progress(done[0])

        if not ids:
            return sp.csr_array((0, self.vocab_size), dtype=np.float32)
        with torch.inference_mode(), self._threads(len(ids) <= SMALL_BATCH and sum(len(x) for x in ids) <= SMALL_TOKENS):
            self._run_batches(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), int(batch_size),
                              one, on_batch)
        return sp.csr_array(sp.vstack(rows, format="csr"))

    def _idf_queries(self, texts: list[str]) -> sp.csr_array:
        if self.idf is None:
            raise NotFittedError(self, "query_mode='idf' needs the corpus idf table: call fit_idf(corpus) and save "
                                       "the model (the table is saved with it) before encoding queries.")
        ids = self._tokenize(texts)
        special = set(self.tokenizer.special_ids())
        indptr, indices, data = [0], [], []
        for x in ids:
            terms = np.unique([t for t in x.tolist() if t not in special]).astype(np.int64)
            w = self.idf[terms]
            keep = w > 0
            indices.extend(terms[keep].tolist())
            data.extend(w[keep].tolist())
            indptr.append(len(indices))
        return sp.csr_array((np.asarray(data, np.float32), np.asarray(indices, np.int64), np.asarray(indptr)),
                            shape=(len(ids), self.vocab_size))

    def fit_idf(self, corpus: Sequence[str]) -> SpladeEncoder:
        """Learn the idf of every vocabulary token on ``corpus`` (BM25's ``log(1 + (N - df + .5) / (df + .5))``)."""
        ids = self._tokenize(list(corpus))
        df = np.zeros(self.vocab_size, dtype=np.float64)
        for x in ids:
            df[np.unique(x)] += 1
        n = len(ids)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        idf[self.tokenizer.special_ids()] = 0.0
        self.idf = idf.astype(np.float32)
        return self

    def calibrate(self, texts: Sequence[str], *, terms_per_token: int = 32) -> float:
        """Shift the MLM head's output bias so that a token has about ``terms_per_token`` positive logits.

        Masked-LM training only sees softmax probabilities, which ignore a constant added to every logit, so a
        freshly trained head can put almost every logit above 0: then ``log(1 + ReLU(·))`` keeps the whole
        vocabulary (measured: 25,000-30,000 of 30,522 terms per text for all-MiniLM-L6-v2's new head) and SPLADE
        starts from dense vectors whose dot products are in the tens of thousands. Subtracting the median (over the
        sample's tokens) of each token's ``terms_per_token``-th largest logit changes no MLM prediction and starts
        SPLADE sparse, as BERT's own head does. Returns the shift.
        """
        from embedstack.neural.tokenizer import pad_batch

        ids = self._tokenize(list(texts))
        if not ids:
            raise InputError("calibrate() needs some texts.")
        x, m = pad_batch(ids, self.tokenizer.pad_id)
        cuts = []
        with torch.inference_mode():
            states = self.model(torch.from_numpy(x), torch.from_numpy(m))[torch.from_numpy(m).bool()]
            for s in range(0, len(states), 256):
                logits = self.head(states[s:s + 256]).float()
                cuts.append(torch.topk(logits, terms_per_token, dim=1).values[:, -1])
            shift = float(torch.cat(cuts).median())
            self.head.bias.sub_(shift)
        self.reset_runner()
        return shift

    # -------------------------------------------------------------------------------------- reading
    def vocabulary(self) -> list[str]:
        """The term of each dimension (WordPiece strings; ``##`` marks a word piece)."""
        if self._vocab_words is None:
            vocab = self.tokenizer.tokenizer.get_vocab()
            words = [""] * self.vocab_size
            for w, i in vocab.items():
                if i < self.vocab_size:
                    words[i] = w
            self._vocab_words = words
        return self._vocab_words

    def explain(self, text: str, *, role: str = "document", top: int = 20) -> list[dict[str, Any]]:
        """The ``top`` heaviest terms of ``text``'s vector: ``{"term", "weight", "in_text"}``, heaviest first
        (``in_text`` False: an expansion term the model added)."""
        row = self.encode_sparse([text], role=role).tocsr()
        if row.nnz == 0:
            return []
        own = set(self._tokenize([text])[0].tolist())
        words = self.vocabulary()
        order = np.argsort(-row.data, kind="stable")[:top]
        return [{"term": words[int(row.indices[j])], "weight": float(row.data[j]),
                 "in_text": int(row.indices[j]) in own} for j in order]

    # -------------------------------------------------------------------------------------- training
    def forward_sparse(self, ids: Sequence[np.ndarray], *, model: Any = None, min_rows: int = 8) -> Tensor:
        """Pooled term weights ``(n, |V|)`` **with autograd** (training), rows in input order (length pieces;
        the vocabulary logits are made slice by slice and not kept)."""
        from embedstack.neural.tokenizer import pad_batch

        net = self.model if model is None else model

        def run(sel: np.ndarray) -> Tensor:
            x, m = pad_batch([ids[i] for i in sel], self.tokenizer.pad_id)
            mask = torch.from_numpy(m)
            states = net(torch.from_numpy(x), mask)
            return splade_pool(self.head, states, mask)

        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        return self._pieced(lengths, min_rows, run)

    def _decoder_copy(self, slot: str, make: Callable[[Tensor], Any]) -> Any:
        """``make(decoder weight)``, made once and kept in ``slot`` while the weight stays the same tensor at the same
        version: an optimiser step or ``calibrate`` on any encoder sharing the weights makes it again (``reset_runner``
        drops it too). Under a lock: workers share it."""
        w = self.head.decoder.weight
        key = (int(w._version), int(w.data_ptr()))
        with self._decoder_lock:
            kept = getattr(self, slot)
            if kept is None or kept[0] != key:
                kept = (key, make(w.detach()))
                setattr(self, slot, kept)
            return kept[1]

    def _pool_int8(self, states: Tensor, mask: Tensor) -> Tensor:
        """:func:`splade_pool` with the decoder as int8 products (``precision="int8-token"``, inference), on the
        transformer's product (``int8_product``): ``torch._int_mm`` or fbgemm."""
        from embedstack.neural.quantize import quantize_weight

        with torch.inference_mode():
            x = self.head.transform(states.float())
            if self.int8_product == "fbgemm":
                blocks = self._decoder_copy("_int8_decoder", _fbgemm_decoder)
                top = _max_logits_fbgemm(x, mask.bool(), blocks, self.head.bias)
            else:
                qweight, wscale = self._decoder_copy("_int8_decoder", quantize_weight)
                top = _max_logits_int8(x, mask.bool(), qweight, wscale, self.head.bias)
            return torch.log1p(torch.relu(top))

    def _fused(self) -> bool:
        """Whether the decoder runs as :func:`~embedstack.neural._attention.splade_max` (bf16 precisions, and the
        bf16-pure ones with int8 products, on a CPU with AMX or AVX-512 BF16, where the kernel is built;
        ``EMBEDSTACK_ATTENTION=torch`` turns it off with the other kernels). Elsewhere a bf16-int8 precision's decoder
        would run as float32 products."""
        from embedstack.neural.runtime import ONEDNN_INT8

        if self.precision not in ("bf16", "bf16-pure", *ONEDNN_INT8):
            return False
        from embedstack.neural import _attention

        return _attention.splade_supported(int(self.model.config.hidden_size))

    def _pool_fused(self, states: Tensor, mask: Tensor) -> Tensor:
        """:func:`splade_pool` for inference with the decoder's products and the max over tokens fused (AMX tiles, or
        AVX-512 BF16 registers): bf16 products summed in float32, the logits never written out (bf16 autocast
        rounds each to bf16, then masks and reads them all again)."""
        from embedstack.neural import _attention

        packed = self._decoder_copy("_packed_decoder", _attention.pack_decoder)
        with self._autocast():
            x = self.head.transform(states)
        top = _attention.splade_max(x.to(torch.bfloat16), mask.bool(), packed, self.head.bias.detach().float())
        return torch.log1p(torch.relu(top))

    def reset_runner(self) -> None:
        super().reset_runner()
        self._int8_decoder = None
        self._packed_decoder = None

    def _head_modules(self) -> list[Any]:
        return [self.head]  # its decoder is the word-embedding matrix: parameters() lists it once

    def with_options(self, **options: Any) -> SpladeEncoder:
        """A new encoder sharing the weights, with other options (query mode, pruning, precision ...)."""
        return self._copy_with(dict(head=self.head, query_mode=self.query_mode, idf=self.idf, doc_top_k=self.doc_top_k,
                                    query_top_k=self.query_top_k, name=self.name, source=self.source), options)

    # ----------------------------------------------------------------------------------- persistence
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, head: str | os.PathLike[str] | None = None,
                        **options: Any) -> SpladeEncoder:
        """A SPLADE encoder on a BERT / bi-encoder folder's weights, with the MLM head of ``head`` (a
        ``mlm_head.safetensors`` file or a folder holding one) or of the checkpoint itself (``cls.predictions.*``)."""
        from embedstack.neural.cross_encoder import _transformer_dir

        folder = _transformer_dir(Path(path))
        model, tokenizer = _load_bert(folder)
        source = Path(head) if head is not None else folder / "model.safetensors"
        if source.is_dir():
            source = source / "mlm_head.safetensors"
        mlm = BertLMPredictionHead(model.config, model.embeddings.word_embeddings)
        _load_head(mlm, source)
        return cls(model, tokenizer, head=mlm, **options)

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str], **options: Any) -> SpladeEncoder:
        """Load a SPLADE folder (sentence-transformers ``SparseEncoder`` layout, or one saved here)."""
        from embedstack.io import verify_files
        from embedstack.neural.sentence import _read_json_opt

        folder = Path(path)
        verify = options.pop("verify", None)
        if not folder.is_dir():
            raise FormatError(f"Model folder {folder} does not exist.")
        ours = _read_json_opt(folder / "embedstack.json")
        verify_files(folder, ours, verify=verify)
        pool = _read_json_opt(folder / "1_SpladePooling" / "config.json")
        if pool.get("pooling_strategy", "max") != "max" or pool.get("activation_function", "relu") != "relu":
            raise FormatError(f"{folder}: SPLADE pooling {pool} is not supported (max pooling of log(1 + ReLU)).")
        model, tokenizer = _load_bert(folder)
        mlm = BertLMPredictionHead(model.config, model.embeddings.word_embeddings)
        _load_head(mlm, folder / "model.safetensors")
        idf = None
        if (folder / "idf.safetensors").is_file():
            from safetensors.numpy import load_file

            idf = load_file(str(folder / "idf.safetensors"))["idf"]
        st_cfg = _read_json_opt(folder / "sentence_bert_config.json")
        kwargs: dict[str, Any] = {"head": mlm, "idf": idf, "name": ours.get("name") or folder.name,
                                  "max_seq_length": int(st_cfg.get("max_seq_length", 256))}
        for key in ("query_mode", "doc_top_k", "query_top_k"):
            if ours.get(key) is not None:
                kwargs[key] = ours[key]
        kwargs.update(options)
        out = cls(model, tokenizer, **kwargs)
        out.folder = folder
        return out

    def save(self, path: str | os.PathLike[str], *, force: bool = False,
             extra: Callable[[Path], None] | None = None) -> Path:
        """Write a sentence-transformers ``SparseEncoder`` folder atomically (+ ``idf.safetensors`` when fitted)."""
        from safetensors.torch import save_file

        from embedstack.io import SENTENCE_MODEL, file_checksums
        from embedstack.neural.sentence import _version

        with atomic_dir(path, kind=SENTENCE_MODEL, force=force) as tmp:
            cfg = {**self.model.config.to_dict(), "architectures": ["BertForMaskedLM"], "tie_word_embeddings": True}
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
            tensors = {f"bert.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
            for k, v in self.head.state_dict().items():
                if not k.startswith("decoder."):  # the decoder is the word-embedding matrix (tied)
                    tensors[f"cls.predictions.{k}"] = v.detach().contiguous()
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            self.tokenizer.save(tmp, model_max_length=self.model.config.max_position_embeddings)
            (tmp / "sentence_bert_config.json").write_text(
                json.dumps({"max_seq_length": self.max_seq_length, "do_lower_case": False}, indent=2), encoding="utf-8")
            (tmp / "1_SpladePooling").mkdir()
            (tmp / "1_SpladePooling" / "config.json").write_text(json.dumps(
                {"pooling_strategy": "max", "activation_function": "relu", "word_embedding_dimension": self.vocab_size,
                 "embedding_dimension": self.vocab_size}, indent=2), encoding="utf-8")
            modules = [{"idx": 0, "name": "0", "path": "", "type": _MLM},
                       {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": _POOL}]
            (tmp / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
            st = {"model_type": "SparseEncoder", "prompts": {"query": "", "document": ""}, "default_prompt_name": None,
                  "similarity_fn_name": "dot", "__version__": {"embedstack": _version()}}
            (tmp / "config_sentence_transformers.json").write_text(json.dumps(st, indent=2), encoding="utf-8")
            if self.idf is not None:
                from safetensors.numpy import save_file as save_np

                save_np({"idf": self.idf}, str(tmp / "idf.safetensors"))
            if extra is not None:
                extra(tmp)
            ours = {"name": self.name, "kind": "splade", "format_version": 1, "query_mode": self.query_mode,
                    "doc_top_k": self.doc_top_k, "query_top_k": self.query_top_k,
                    "files": file_checksums(tmp, exclude=("embedstack.json",))}
            (tmp / "embedstack.json").write_text(json.dumps(ours, indent=2), encoding="utf-8")
        self.folder = Path(path)
        return Path(path)


def _load_bert(folder: Path) -> tuple[BertModel, WordPiece]:
    return load_encoder(folder), WordPiece.from_file(folder)


def _load_head(head: BertLMPredictionHead, path: Path) -> None:
    """Copy ``cls.predictions.*`` tensors (transform and bias; the decoder stays tied) from ``path``."""
    from safetensors import safe_open

    if not path.is_file():
        raise FormatError(f"Missing {path}: SPLADE needs an MLM head. all-MiniLM-L6-v2 ships none; train one with "
                          "`embedstack recipe minilm-mlm-head` (embedstack.neural.mlm.train_mlm_head).")
    want = {k: v for k, v in head.state_dict().items() if not k.startswith("decoder.")}
    seen = set()
    with safe_open(str(path), framework="pt") as fh, torch.no_grad():
        for raw in fh.keys():  # noqa: SIM118 - safe_open is not a dict
            key = raw[len("cls.predictions."):] if raw.startswith("cls.predictions.") else None
            if key is None or key not in want:
                continue
            tensor = fh.get_tensor(raw)
            if tuple(tensor.shape) != tuple(want[key].shape):
                raise FormatError(f"{path}: {raw!r} has shape {tuple(tensor.shape)}, the model needs "
                                  f"{tuple(want[key].shape)}.")
            want[key].copy_(tensor)
            seen.add(key)
    missing = sorted(set(want) - seen)
    if missing:
        raise FormatError(f"{path} lacks the MLM head tensors {missing[:3]}; SPLADE needs BERT's MLM head "
                          "(cls.predictions.*). Train one with embedstack.neural.mlm.train_mlm_head.")
