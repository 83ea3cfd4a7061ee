"""Numba hot loops for word2vec, fastText and GloVe.

Every kernel takes plain arrays and a frozen params tuple (never model objects), releases the GIL
(``nogil=True``) so that several Python threads can run it hogwild on shared weight matrices, and has
a pure-numpy twin in :mod:`embedstack.static._reference` that makes the same update.

Conventions shared with the reference twin:

* The random generator is word2vec.c's 64-bit LCG: ``r = r * 25214903917 + 11 (mod 2**64)``; a draw
  uses ``(r >> 16)``. Negatives come from a unigram^0.75 table: ``table[(r >> 16) % len(table)]``.
* sigmoid(x) comes from a 1000-entry table on [-6, 6] as in word2vec.c; outside that range the
  gradient saturates (label - 1 or label - 0) for negative sampling and is skipped for hierarchical
  softmax. Loss terms -log sigma(+-x) come from two matching tables.
* Skip-gram (word2vec): the context word's input vector predicts the centre word (word2vec.c, gensim).
  FastText skip-gram: the centre word's subword mean predicts each context word (fastText). The
  centre word's rows are written once per centre word with the summed gradient, while the hidden
  vector is moved after every context pair, which is exactly what per-pair writes would give (each
  row moves by the same vector, so their mean moves by it) at a fraction of the memory traffic.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from embedstack._extras import require

require("numba", "fast", "word-vector training kernels")
import numba  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

__all__ = [
    "W2VParams",
    "GloveParams",
    "EXP_TABLE_SIZE",
    "MAX_EXP",
    "make_tables",
    "lcg_next",
    "sg_ns_step",
    "sg_hs_step",
    "cbow_step",
    "w2v_train_job",
    "ft_train_job",
    "subword_hashes",
    "cooccur_job",
    "glove_train_job",
    "ft_compose",
]

EXP_TABLE_SIZE = 1000
MAX_EXP = 6.0
_LCG_A = np.uint64(25214903917)
_LCG_C = np.uint64(11)
_U16 = np.uint64(16)
_U32MASK = np.uint64(0xFFFFFFFF)
_U32 = np.uint64(32)
_U16MASK = np.uint64(0xFFFF)

_jit: Any = numba.njit(nogil=True, fastmath=True, cache=True)
# GloVe: fast-math without the no-NaN / no-inf assumptions (its finiteness check must survive), and
# numpy's error model: Python's raises on x / 0, and that branch keeps LLVM from vectorizing the
# AdaGrad update loop (sqrt and divide per element), which is most of the kernel's time.
_jit_glove: Any = numba.njit(nogil=True, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"},
                             error_model="numpy", cache=True)


class W2VParams(NamedTuple):
    """Frozen training options handed to the kernels (all ints: numba types them once)."""

    sg: int
    hs: int
    negative: int
    window: int
    cbow_mean: int
    sample: int  # 1 if frequent-word subsampling is on
    compute_loss: int
    shared: int = 0  # skip-gram + negative sampling: one draw of negatives per centre word (batched)


class GloveParams(NamedTuple):
    """Frozen GloVe options: weighting cut-off, exponent, AdaGrad learning rate, gradient clip."""

    x_max: float
    alpha: float
    learning_rate: float
    grad_clip: float = 100.0


def make_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sigmoid, log sigmoid(x) and log sigmoid(-x) on the word2vec.c grid (float32, EXP_TABLE_SIZE)."""
    x = (np.arange(EXP_TABLE_SIZE, dtype=np.float64) / EXP_TABLE_SIZE * 2.0 - 1.0) * MAX_EXP
    e = np.exp(x)
    sig = e / (e + 1.0)
    return (sig.astype(np.float32), np.log(sig).astype(np.float32), np.log1p(-sig).astype(np.float32))


@_jit
def lcg_next(r: np.uint64) -> np.uint64:
    """One step of word2vec.c's LCG."""
    return r * _LCG_A + _LCG_C


@_jit
def _table_index(f: float) -> int:
    """Slot of ``f`` in the sigmoid tables, for -MAX_EXP < f < MAX_EXP; clamped to the table.

    The clamp is a guard: callers send |f| >= MAX_EXP to the saturated branch, and a NaN score (a
    diverged model) must not read past the table.
    """
    i = int((f + MAX_EXP) * (EXP_TABLE_SIZE / MAX_EXP / 2.0))
    return min(max(i, 0), EXP_TABLE_SIZE - 1)


def _row_pointer(context, builder, aty, arr, row):
    """Pointer to the first float of ``arr[row]`` (2-D C-contiguous) or of ``arr`` (1-D; ``row`` unused)."""
    a = context.make_array(aty)(context, builder, arr)
    if aty.ndim == 1:
        return a.data
    r = context.cast(builder, row[0], row[1], types.intp)
    return cgutils.get_item_pointer2(context, builder, a.data, cgutils.unpack_tuple(builder, a.shape),
                                     cgutils.unpack_tuple(builder, a.strides), aty.layout,
                                     [r, context.get_constant(types.intp, 0)])


@intrinsic
def _dot(typingctx, a, i, b, j, n):
    """``a[i] @ b[j]`` over the first ``n`` floats (float32; a 1-D ``a`` or ``b`` is used whole, its
    index ignored), in 16-lane steps.

    LLVM's own loop runs 64 lanes at a time, then 8, then one: at the usual widths (100, 300) most of
    a row's dot product went to those narrower tail loops and their horizontal sums. Here a width of
    16 or more takes ``ceil(n / 16)`` vector steps and one horizontal sum: the last step reloads the
    row's last 16 floats and keeps only the lanes the full steps did not cover (plain loads, no
    masked-load intrinsic, whose form changes between LLVM versions). A width under 16 is summed one
    float at a time. The sum's order differs from a sequential one only by rounding.
    """
    if (any(not isinstance(x, types.Array) or x.dtype != types.float32 or x.layout != "C" or x.ndim not in (1, 2)
            for x in (a, b)) or not all(isinstance(x, types.Integer) for x in (i, j, n))):
        return None  # a typing error: strided, other-dtype or other-rank arrays would need another loop

    def codegen(context, builder, signature, args):
        pa = _row_pointer(context, builder, signature.args[0], args[0], (args[1], signature.args[1]))
        pb = _row_pointer(context, builder, signature.args[2], args[2], (args[3], signature.args[3]))
        n = context.cast(builder, args[4], signature.args[4], types.intp)
        intp = context.get_value_type(types.intp)
        f32 = ir.FloatType()
        i32 = ir.IntType(32)
        v16 = ir.VectorType(f32, 16)
        p16 = v16.as_pointer()
        zero = ir.Constant(v16, None)
        acc = cgutils.alloca_once_value(builder, zero)
        fast = ("fast",)

        def step(off, keep=None):
            x = builder.load(builder.bitcast(builder.gep(pa, [off]), p16), align=4)
            y = builder.load(builder.bitcast(builder.gep(pb, [off]), p16), align=4)
            prod = builder.fmul(x, y, flags=fast)
            if keep is not None:
                prod = builder.select(keep, prod, zero)
            builder.store(builder.fadd(builder.load(acc), prod, flags=fast), acc)

        sixteen = ir.Constant(intp, 16)
        full = builder.sdiv(n, sixteen)
        with cgutils.for_range(builder, full) as loop:
            step(builder.mul(loop.index, sixteen))
        left = builder.sub(n, builder.mul(full, sixteen))
        tail = cgutils.alloca_once_value(builder, ir.Constant(f32, 0.0))  # in the entry block, set here
        with (builder.if_then(builder.icmp_signed(">", left, ir.Constant(intp, 0))),
              builder.if_else(builder.icmp_signed(">", full, ir.Constant(intp, 0))) as (wide, narrow)):
            with wide:  # lanes 16 - left .. 15 of the last 16 floats
                lanes = ir.Constant(ir.VectorType(intp, 16), list(range(16)))
                first = builder.sub(sixteen, left)
                splat = builder.insert_element(ir.Constant(ir.VectorType(intp, 16), None), first, i32(0))
                splat = builder.shuffle_vector(splat, splat, ir.Constant(ir.VectorType(i32, 16), [0] * 16))
                step(builder.sub(n, sixteen), builder.icmp_signed(">=", lanes, splat))
            with narrow, cgutils.for_range(builder, n) as loop:  # fewer than 16 floats in all
                x = builder.load(builder.gep(pa, [loop.index]))
                y = builder.load(builder.gep(pb, [loop.index]))
                builder.store(builder.fadd(builder.load(tail), builder.fmul(x, y, flags=fast), flags=fast), tail)
        s = builder.load(acc)
        width = 16
        while width > 1:  # halves added pairwise: 16 -> 8 -> 4 -> 2 -> 1 lanes
            width //= 2
            upper = ir.Constant(ir.VectorType(i32, 16), [k + width if k < width else k for k in range(16)])
            s = builder.fadd(s, builder.shuffle_vector(s, s, upper), flags=fast)
        return builder.fadd(builder.extract_element(s, i32(0)), builder.load(tail), flags=fast)

    return types.float32(a, i, b, j, n), codegen


@numba.njit(nogil=True, fastmath=True, cache=True, inline="always")
def _ns_grad(f, positive, a32, exp_table, lsp, lsn):
    """Gradient scale (times the learning rate) and loss term of one negative-sampling score ``f``.

    At and beyond +-MAX_EXP the gradient saturates (word2vec.c) and the loss is -log sigma(+-f) taken
    as |f| on the wrong side, 0 on the right side. (f == MAX_EXP exactly is saturated too: its table
    slot would be EXP_TABLE_SIZE, one past the end; word2vec.c allocates that slot, uninitialised. A
    float32 score lands exactly on 6.0 often enough in a long run to read past the table.)
    """
    if f >= MAX_EXP:
        return (np.float32(0.0), 0.0) if positive else (-a32, float(f))
    if f <= -MAX_EXP:
        return (a32, -float(f)) if positive else (np.float32(0.0), 0.0)
    idx = _table_index(f)
    if positive:
        return (np.float32(1.0) - exp_table[idx]) * a32, -float(lsp[idx])
    return -exp_table[idx] * a32, -float(lsn[idx])


@_jit
def _ns_update(hidden, syn1neg, target, negatives, n_neg, alpha, exp_table, lsp, lsn, work, compute_loss, coef):
    """Negative-sampling update of the output rows for one (hidden, target) pair; grad into ``work``.

    All ``n_neg + 1`` scores come from the rows as they are on entry, so their dot products overlap
    instead of each waiting for the previous row's update; then each row, in draw order, adds its
    gradient times its current value to ``work`` and moves, in one pass over it. Only a negative drawn
    twice in one set is scored twice from the row on entry, while its second gradient term reads the
    row as its first draw moved it (word2vec.c scores the second draw from the moved row too).
    ``coef`` holds the ``n_neg + 1`` gradient scales.
    """
    dim = hidden.shape[0]
    loss = 0.0
    a32 = np.float32(alpha)
    for d in range(n_neg + 1):
        if d == 0:
            t = target
        else:
            t = negatives[d - 1]
            if t == target:
                coef[d] = 0.0
                continue
        f = _dot(hidden, 0, syn1neg, t, dim)
        g, term = _ns_grad(f, d == 0, a32, exp_table, lsp, lsn)
        if compute_loss:
            loss += term
        coef[d] = g
    for d in range(n_neg + 1):
        g = coef[d]
        if g != 0.0:
            t = target if d == 0 else negatives[d - 1]
            for k in range(dim):
                row = syn1neg[t, k]
                work[k] += g * row
                syn1neg[t, k] = row + g * hidden[k]
    return loss


@_jit
def _hs_update(hidden, syn1, code, point, code_len, alpha, exp_table, lsp, lsn, work, compute_loss):
    """Hierarchical-softmax update along one Huffman path; grad into ``work``."""
    dim = hidden.shape[0]
    loss = 0.0
    a32 = np.float32(alpha)
    for d in range(code_len):
        t = point[d]
        f = _dot(hidden, 0, syn1, t, dim)
        if f <= -MAX_EXP or f >= MAX_EXP:
            continue
        idx = _table_index(f)
        g = (np.float32(1.0) - np.float32(code[d]) - exp_table[idx]) * a32
        if compute_loss:
            # probability of the branch taken: sigma(f) for code 0, sigma(-f) for code 1
            loss -= lsp[idx] if code[d] == 0 else lsn[idx]
        for k in range(dim):
            work[k] += g * syn1[t, k]
        for k in range(dim):
            syn1[t, k] += g * hidden[k]
    return loss


@_jit
def sg_ns_step(syn0, syn1neg, inp, target, negatives, alpha, exp_table, lsp, lsn, work):
    """One skip-gram negative-sampling step: row ``inp`` of syn0 predicts ``target``."""
    work[:] = 0.0
    loss = _ns_update(syn0[inp], syn1neg, target, negatives, negatives.shape[0], alpha,
                      exp_table, lsp, lsn, work, 1, np.empty(negatives.shape[0] + 1, dtype=np.float32))
    row = syn0[inp]
    for k in range(row.shape[0]):
        row[k] += work[k]
    return loss


@_jit
def sg_hs_step(syn0, syn1, inp, code, point, code_len, alpha, exp_table, lsp, lsn, work):
    """One skip-gram hierarchical-softmax step along ``target``'s Huffman path."""
    work[:] = 0.0
    loss = _hs_update(syn0[inp], syn1, code, point, code_len, alpha, exp_table, lsp, lsn, work, 1)
    row = syn0[inp]
    for k in range(row.shape[0]):
        row[k] += work[k]
    return loss


@_jit
def cbow_step(syn0, syn1neg, context, n_ctx, target, negatives, alpha, cbow_mean, exp_table, lsp, lsn,
              neu1, work):
    """One CBOW negative-sampling step: the mean (or sum) of ``context`` rows predicts ``target``."""
    dim = syn0.shape[1]
    neu1[:] = 0.0
    for c in range(n_ctx):
        row = syn0[context[c]]
        for k in range(dim):
            neu1[k] += row[k]
    if cbow_mean and n_ctx > 0:
        inv = 1.0 / n_ctx
        for k in range(dim):
            neu1[k] *= inv
    work[:] = 0.0
    loss = _ns_update(neu1, syn1neg, target, negatives, negatives.shape[0], alpha, exp_table, lsp, lsn, work, 1,
                      np.empty(negatives.shape[0] + 1, dtype=np.float32))
    if not cbow_mean and n_ctx > 0:
        inv = 1.0 / n_ctx
        for k in range(dim):
            work[k] *= inv
    for c in range(n_ctx):
        row = syn0[context[c]]
        for k in range(dim):
            row[k] += work[k]
    return loss


@_jit
def _sg_shared_update(syn0, syn1neg, ctx, m, outs, n_out, alpha, exp_table, lsp, lsn, coef, gin, gout,
                      compute_loss):
    """Skip-gram negative sampling for one centre word as one small matrix product.

    The ``m`` context rows ``syn0[ctx]`` are the inputs; ``outs[0]`` (the centre word, label 1) and
    ``outs[1:n_out]`` (negatives shared by every context word, label 0; a negative equal to the
    centre word is skipped) are the outputs. All m x n_out scores are computed from the rows as they
    are on entry, then both gradients, then the rows are moved: the pair terms are those of
    per-pair skip-gram, only the negatives are drawn once per centre word instead of once per pair
    (Ji et al. 2016, "Parallelizing word2vec in shared and distributed memory"). Rows are read
    once per centre word instead of once per pair, which is what makes it fast.
    """
    dim = syn0.shape[1]
    a32 = np.float32(alpha)
    loss = 0.0
    word = outs[0]
    # 2-D indexing throughout: a row view (syn0[i]) costs an atomic reference-count increment and
    # decrement on the whole matrix, which the worker threads share.
    for b in range(n_out):
        t = outs[b]
        if b > 0 and t == word:
            for a in range(m):
                coef[a, b] = 0.0
            continue
        for a in range(m):
            c = ctx[a]
            f = _dot(syn0, c, syn1neg, t, dim)
            g, term = _ns_grad(f, b == 0, a32, exp_table, lsp, lsn)
            if compute_loss:
                loss += term
            coef[a, b] = g
    for a in range(m):
        for k in range(dim):
            gin[a, k] = 0.0
        for b in range(n_out):
            g = coef[a, b]
            if g != 0.0:
                t = outs[b]
                for k in range(dim):
                    gin[a, k] += g * syn1neg[t, k]
    for b in range(n_out):
        for k in range(dim):
            gout[b, k] = 0.0
        for a in range(m):
            g = coef[a, b]
            if g != 0.0:
                c = ctx[a]
                for k in range(dim):
                    gout[b, k] += g * syn0[c, k]
    for a in range(m):
        c = ctx[a]
        for k in range(dim):
            syn0[c, k] += gin[a, k]
    for b in range(n_out):
        t = outs[b]
        if b > 0 and t == word:
            continue
        for k in range(dim):
            syn1neg[t, k] += gout[b, k]
    return loss


@_jit
def _draw_negatives(negs, n, ns_table, r):
    """``n`` draws from the alias table ``ns_table`` (see ``word2vec.alias_table``), one LCG step each.

    Of the 48 bits of a draw, the top 32 pick a bucket (multiply-shift) and the low 16 toss the
    bucket's coin: its own word or its alias.
    """
    size = np.uint64(ns_table.shape[0])
    for d in range(n):
        r = r * _LCG_A + _LCG_C
        x = r >> _U16
        i = ((x >> _U16) * size) >> _U32
        e = ns_table[i]
        if ((x & _U16MASK) << _U16) < (e & _U32MASK):
            negs[d] = i
        else:
            negs[d] = e >> _U32
    return r


@_jit
def _subsample(ids, start, end, keep, buf, do_sample, r):
    n = 0
    for p in range(start, end):
        w = ids[p]
        if do_sample:
            r = r * _LCG_A + _LCG_C
            if keep[w] < ((r >> _U16) & _U32MASK):
                continue
        buf[n] = w
        n += 1
    return n, r


@_jit
def w2v_train_job(syn0, syn1, syn1neg, ids, offsets, s_begin, s_end, keep, ns_table, codes, points,
                  code_lens, exp_table, lsp, lsn, params, alpha, seed, max_len):
    """Train word2vec on sentences ``s_begin..s_end`` of the id stream; returns (words, loss, terms).

    ``offsets`` are sentence start positions into ``ids`` (length n_sentences + 1); ``keep`` holds
    uint32 keep thresholds (probability * 2**32); ``seed`` seeds this job's LCG.
    """
    dim = syn0.shape[1]
    buf = np.empty(max_len, dtype=np.int32)
    negs = np.empty(max(params.negative, 1), dtype=np.int32)
    ctx = np.empty(2 * params.window, dtype=np.int32)
    neu1 = np.zeros(dim, dtype=np.float32)
    work = np.zeros(dim, dtype=np.float32)
    hidden = np.zeros(dim, dtype=np.float32)
    shared = params.sg and params.shared and params.negative > 0 and not params.hs
    # CBOW and shared skip-gram (negative sampling only) draw the next centre word's negatives one word
    # ahead and prefetch their rows, so the cache misses on those random rows overlap this word's work.
    ahead = (shared or not params.sg) and params.negative > 0 and not params.hs
    nxt = np.empty(max(params.negative, 1), dtype=np.int32)
    n_out = params.negative + 1
    outs = np.empty(n_out, dtype=np.int32)
    coef = np.empty((2 * params.window, n_out), dtype=np.float32)
    scale = np.empty(n_out, dtype=np.float32)  # _ns_update's gradient scales
    gin = np.empty((2 * params.window if shared else 1, dim), dtype=np.float32)
    gout = np.empty((n_out if shared else 1, dim), dtype=np.float32)
    r = np.uint64(seed)
    words = 0
    loss = 0.0
    terms = 0
    window = params.window
    for s in range(s_begin, s_end):
        n, r = _subsample(ids, offsets[s], offsets[s + 1], keep, buf, params.sample, r)
        words += n
        if ahead and n > 0:
            r = _draw_negatives(nxt, params.negative, ns_table, r)
        for i in range(n):
            r = r * _LCG_A + _LCG_C
            b = int((r >> _U16) % np.uint64(window))
            lo = max(0, i - window + b)
            hi = min(n, i + window + 1 - b)
            word = buf[i]
            if ahead:
                for d in range(params.negative):
                    negs[d] = nxt[d]
                if i + 1 < n:
                    r = _draw_negatives(nxt, params.negative, ns_table, r)
                    for d in range(params.negative):
                        _prefetch_row(syn1neg, nxt[d])
                    _prefetch_row(syn1neg, buf[i + 1])
                    if i + window + 1 < n:
                        _prefetch_row(syn0, buf[i + window + 1])
            if shared:
                m = 0
                for j in range(lo, hi):
                    if j != i:
                        ctx[m] = buf[j]
                        m += 1
                if m == 0:
                    continue
                outs[0] = word
                for d in range(params.negative):
                    outs[d + 1] = negs[d]
                loss += _sg_shared_update(syn0, syn1neg, ctx, m, outs, n_out, alpha, exp_table, lsp, lsn,
                                          coef, gin, gout, params.compute_loss)
                terms += m
            elif params.sg:
                for j in range(lo, hi):
                    if j == i:
                        continue
                    inp = buf[j]
                    for k in range(dim):  # a copy, not a row view (see _sg_shared_update)
                        hidden[k] = syn0[inp, k]
                    work[:] = 0.0
                    if params.hs:
                        loss += _hs_update(hidden, syn1, codes[word], points[word], code_lens[word], alpha,
                                           exp_table, lsp, lsn, work, params.compute_loss)
                    if params.negative > 0:
                        r = _draw_negatives(negs, params.negative, ns_table, r)
                        loss += _ns_update(hidden, syn1neg, word, negs, params.negative, alpha, exp_table,
                                           lsp, lsn, work, params.compute_loss, scale)
                    terms += 1
                    for k in range(dim):
                        syn0[inp, k] += work[k]
            else:
                n_ctx = 0
                for j in range(lo, hi):
                    if j != i:
                        ctx[n_ctx] = buf[j]
                        n_ctx += 1
                if n_ctx == 0:
                    continue
                neu1[:] = 0.0
                for c in range(n_ctx):
                    t = ctx[c]
                    for k in range(dim):
                        neu1[k] += syn0[t, k]
                if params.cbow_mean:
                    inv = np.float32(1.0 / n_ctx)
                    for k in range(dim):
                        neu1[k] *= inv
                work[:] = 0.0
                if params.hs:
                    loss += _hs_update(neu1, syn1, codes[word], points[word], code_lens[word], alpha,
                                       exp_table, lsp, lsn, work, params.compute_loss)
                if params.negative > 0:
                    if not ahead:
                        r = _draw_negatives(negs, params.negative, ns_table, r)
                    loss += _ns_update(neu1, syn1neg, word, negs, params.negative, alpha, exp_table,
                                       lsp, lsn, work, params.compute_loss, scale)
                terms += 1
                if not params.cbow_mean:
                    inv = np.float32(1.0 / n_ctx)
                    for k in range(dim):
                        work[k] *= inv
                for c in range(n_ctx):
                    t = ctx[c]
                    for k in range(dim):
                        syn0[t, k] += work[k]
    return words, loss, terms


@_jit
def _ft_hidden(word, syn0_vocab, syn0_ngrams, sub_ptr, sub_idx, out, scale_add):
    """Add the sum of ``word``'s rows (word row + its n-gram buckets) to ``out``; return the row count."""
    dim = out.shape[0]
    for k in range(dim):
        out[k] += syn0_vocab[word, k]
    for p in range(sub_ptr[word], sub_ptr[word + 1]):
        t = sub_idx[p]
        for k in range(dim):
            out[k] += syn0_ngrams[t, k]
    return 1 + sub_ptr[word + 1] - sub_ptr[word]


@_jit
def _ft_apply(word, syn0_vocab, syn0_ngrams, sub_ptr, sub_idx, work):
    dim = work.shape[0]
    for k in range(dim):
        syn0_vocab[word, k] += work[k]
    for p in range(sub_ptr[word], sub_ptr[word + 1]):
        t = sub_idx[p]
        for k in range(dim):
            syn0_ngrams[t, k] += work[k]


# fastText skip-gram with shared negatives: context words per draw. Measured on the enwiki extract (1
# epoch): sharing one draw among all of a centre's context words lost 2.9 analogy points against
# per-pair draws; pairs of context words lost 0.9 (2.1x faster training than the per-pair path then;
# the per-pair update has been faster since stop 62, so the gap is smaller now: not re-measured).
_FT_SHARED_GROUP = 2


@_jit
def _ft_draw_ahead(i, n, window, n_neg, group, ns_table, r, out):
    """Draw centre ``i``'s reduced window and its negatives (one set per ``group`` context words)."""
    r = r * _LCG_A + _LCG_C
    b = int((r >> _U16) % np.uint64(window))
    m = min(n, i + window + 1 - b) - max(0, i - window + b) - 1
    for q in range((m + group - 1) // group):
        r = _draw_negatives(out[q], n_neg, ns_table, r)
    return r, b


@_jit
def _ft_shared_update(hidden, syn1neg, ctx, m, negs, n_neg, alpha, exp_table, lsp, lsn, coef, work, compute_loss):
    """fastText skip-gram for one centre word with negatives shared by its ``m`` context words.

    All scores come from ``hidden`` (the centre's subword mean) and the output rows as they are on
    entry. Each context word is a positive; each shared negative stands for the ``m`` per-pair
    draws it replaces, so its gradient and loss are weighted by the number of context words it is
    not equal to (the per-pair objective in expectation: a negative equal to a pair's target is
    skipped there too). ``m + n_neg`` dot products instead of ``m * (n_neg + 1)``. The input gradient
    is added to ``work``; the output rows are moved here.
    """
    dim = hidden.shape[0]
    a32 = np.float32(alpha)
    loss = 0.0
    for a in range(m + n_neg):
        if a < m:
            t = ctx[a]
            w = np.float32(1.0)
        else:
            t = negs[a - m]
            same = 0
            for q in range(m):
                if ctx[q] == t:
                    same += 1
            w = np.float32(m - same)
            if w == 0.0:
                coef[a] = 0.0
                continue
        f = _dot(hidden, 0, syn1neg, t, dim)
        g, term = _ns_grad(f, a < m, a32, exp_table, lsp, lsn)
        if compute_loss:
            loss += w * term
        coef[a] = g * w
    for a in range(m + n_neg):
        g = coef[a]
        if g != 0.0:
            t = ctx[a] if a < m else negs[a - m]
            for k in range(dim):
                work[k] += g * syn1neg[t, k]
    for a in range(m + n_neg):
        g = coef[a]
        if g != 0.0:
            t = ctx[a] if a < m else negs[a - m]
            for k in range(dim):
                syn1neg[t, k] += g * hidden[k]
    return loss


@_jit
def ft_train_job(syn0_vocab, syn0_ngrams, syn1neg, sub_ptr, sub_idx, ids, offsets, s_begin, s_end, keep,
                 ns_table, exp_table, lsp, lsn, params, alpha, seed, max_len):
    """Train fastText (negative sampling) on sentences ``s_begin..s_end``; returns (words, loss, terms).

    The input representation of a word is the mean of its word row and its n-gram bucket rows; the
    gradient is added in full to every one of those rows, as fastText does.
    """
    dim = syn0_vocab.shape[1]
    buf = np.empty(max_len, dtype=np.int32)
    negs = np.empty(max(params.negative, 1), dtype=np.int32)
    ctx = np.empty(2 * params.window, dtype=np.int32)
    hidden = np.zeros(dim, dtype=np.float32)
    work = np.zeros(dim, dtype=np.float32)
    pair = np.zeros(dim, dtype=np.float32)
    # Skip-gram draws the next centre word's window and negatives one word ahead (the same draws in the
    # same order as drawing them when they are used) and prefetches their rows.
    sg = params.sg and params.negative > 0
    group = _FT_SHARED_GROUP if params.shared else 1
    k_neg = max(params.negative, 1)
    cur = np.empty((2 * params.window, k_neg), dtype=np.int32)
    nxt = np.empty((2 * params.window, k_neg), dtype=np.int32)
    coef = np.empty(2 * params.window + params.negative, dtype=np.float32)
    r = np.uint64(seed)
    words = 0
    loss = 0.0
    terms = 0
    window = params.window
    b_next = 0
    for s in range(s_begin, s_end):
        n, r = _subsample(ids, offsets[s], offsets[s + 1], keep, buf, params.sample, r)
        words += n
        if sg and n > 0:
            r, b_next = _ft_draw_ahead(0, n, window, params.negative, group, ns_table, r, nxt)
        for i in range(n):
            if sg:
                b = b_next
                cur, nxt = nxt, cur
                if i + 1 < n:
                    r, b_next = _ft_draw_ahead(i + 1, n, window, params.negative, group, ns_table, r, nxt)
                    lo2 = max(0, i + 1 - window + b_next)
                    hi2 = min(n, i + 1 + window + 1 - b_next)
                    for q in range((hi2 - lo2 - 1 + group - 1) // group):
                        for d in range(params.negative):
                            _prefetch_row(syn1neg, nxt[q, d])
            else:
                r = r * _LCG_A + _LCG_C
                b = int((r >> _U16) % np.uint64(window))
            lo = max(0, i - window + b)
            hi = min(n, i + window + 1 - b)
            word = buf[i]
            if i + 1 < n:  # the next word's n-gram rows are random rows of a large matrix: fetch them early
                nw = buf[i + 1]
                _prefetch_row(syn0_vocab, nw)
                for p in range(sub_ptr[nw], sub_ptr[nw + 1]):
                    _prefetch_row(syn0_ngrams, sub_idx[p])
            if sg:
                m = 0
                for j in range(lo, hi):
                    if j != i:
                        ctx[m] = buf[j]
                        m += 1
                if m == 0:
                    continue
                hidden[:] = 0.0
                cnt = _ft_hidden(word, syn0_vocab, syn0_ngrams, sub_ptr, sub_idx, hidden, 1.0)
                inv = np.float32(1.0 / cnt)
                for k in range(dim):
                    hidden[k] *= inv
                work[:] = 0.0
                if params.shared:
                    for q in range((m + group - 1) // group):
                        g0 = q * group
                        g1 = min(m, g0 + group)
                        loss += _ft_shared_update(hidden, syn1neg, ctx[g0:g1], g1 - g0, cur[q], params.negative,
                                                  alpha, exp_table, lsp, lsn, coef, work, params.compute_loss)
                else:
                    for p in range(m):
                        if p + 1 < m:  # the next pair's rows, one pair ahead (its negatives also one word ahead)
                            _prefetch_row(syn1neg, ctx[p + 1])
                            for d in range(params.negative):
                                _prefetch_row(syn1neg, cur[p + 1, d])
                        pair[:] = 0.0
                        loss += _ns_update(hidden, syn1neg, ctx[p], cur[p], params.negative, alpha, exp_table,
                                           lsp, lsn, pair, params.compute_loss, coef)
                        # every input row moves by `pair`, so their mean moves by `pair`: keeping `hidden`
                        # current makes the deferred row writes below equal to per-pair updates.
                        for k in range(dim):
                            hidden[k] += pair[k]
                            work[k] += pair[k]
                terms += m
                _ft_apply(word, syn0_vocab, syn0_ngrams, sub_ptr, sub_idx, work)
            else:
                n_ctx = 0
                for j in range(lo, hi):
                    if j != i:
                        ctx[n_ctx] = buf[j]
                        n_ctx += 1
                if n_ctx == 0:
                    continue
                hidden[:] = 0.0
                cnt = 0
                for c in range(n_ctx):
                    cnt += _ft_hidden(ctx[c], syn0_vocab, syn0_ngrams, sub_ptr, sub_idx, hidden, 1.0)
                inv = np.float32(1.0 / cnt)
                for k in range(dim):
                    hidden[k] *= inv
                work[:] = 0.0
                r = _draw_negatives(negs, params.negative, ns_table, r)
                loss += _ns_update(hidden, syn1neg, word, negs, params.negative, alpha, exp_table,
                                   lsp, lsn, work, params.compute_loss, coef)
                terms += 1
                for c in range(n_ctx):
                    _ft_apply(ctx[c], syn0_vocab, syn0_ngrams, sub_ptr, sub_idx, work)
    return words, loss, terms


@_jit
def subword_hashes(buf, word_ptr, minn, maxn, bucket):
    """fastText n-gram bucket ids of every word, as CSR (ptr, ids).

    ``buf`` holds the UTF-8 bytes of ``<word>`` for each word back to back, ``word_ptr`` their
    offsets. N-grams are counted in characters (UTF-8 continuation bytes never start or end one);
    single-character n-grams at the boundaries are skipped; the hash is fastText's FNV-1a 32-bit
    over sign-extended bytes.
    """
    n_words = word_ptr.shape[0] - 1
    # first pass: count
    counts = np.zeros(n_words, dtype=np.int64)
    for w in range(n_words):
        a = word_ptr[w]
        b = word_ptr[w + 1]
        c = 0
        for i in range(a, b):
            if (buf[i] & 0xC0) == 0x80:
                continue
            j = i
            nchar = 1
            while j < b and nchar <= maxn:
                j += 1
                while j < b and (buf[j] & 0xC0) == 0x80:
                    j += 1
                if nchar >= minn and not (nchar == 1 and (i == a or j == b)):
                    c += 1
                nchar += 1
        counts[w] = c
    ptr = np.zeros(n_words + 1, dtype=np.int64)
    for w in range(n_words):
        ptr[w + 1] = ptr[w] + counts[w]
    out = np.empty(ptr[n_words], dtype=np.int32)
    for w in range(n_words):
        a = word_ptr[w]
        b = word_ptr[w + 1]
        pos = ptr[w]
        for i in range(a, b):
            if (buf[i] & 0xC0) == 0x80:
                continue
            j = i
            nchar = 1
            h = np.uint32(2166136261)
            while j < b and nchar <= maxn:
                h = _fnv_byte(h, buf[j])
                j += 1
                while j < b and (buf[j] & 0xC0) == 0x80:
                    h = _fnv_byte(h, buf[j])
                    j += 1
                if nchar >= minn and not (nchar == 1 and (i == a or j == b)):
                    out[pos] = np.int32(h % np.uint32(bucket))
                    pos += 1
                nchar += 1
    return ptr, out


@_jit
def _fnv_byte(h, byte):
    sb = np.int32(np.int8(byte))  # fastText hashes each byte as a sign-extended int8
    h = h ^ np.uint32(sb)
    return np.uint32(h * np.uint32(16777619))


@_jit
def cooccur_job(ids, offsets, s_begin, pos, s_end, window, n_vocab, dense, n_dense, keys, vals, max_fill):
    """Accumulate 1/distance co-occurrence weights (upper triangle i <= j) from token ``pos`` of sentence
    ``s_begin`` (``offsets[s_begin] <= pos``) up to sentence ``s_end``.

    Each pair is counted at its left token, so the count can stop after any token and resume at the next.
    Pairs of two frequent words (both ids < ``n_dense``) go to the dense block; the others into an
    open-addressing hash table (``keys`` int64, -1 = empty; capacity a power of two). Stops after the
    token that brings the table to ``max_fill`` entries (a token adds at most ``window``), so a table of
    at least ``max_fill + window`` entries never fills. Returns (sentence, next token, filled entries).
    """
    cap = keys.shape[0]
    mask = np.uint64(cap - 1)
    fill = 0
    for p in range(cap):
        if keys[p] >= 0:
            fill += 1
    s = s_begin
    i = pos
    while s < s_end:
        b = offsets[s + 1]
        while i < b:
            wi = ids[i]
            jmax = min(b, i + window + 1)
            for j in range(i + 1, jmax):
                wj = ids[j]
                x = 1.0 / (j - i)
                lo = min(wi, wj)
                hi = max(wi, wj)
                if hi < n_dense:
                    dense[lo, hi] += x
                    continue
                key = np.int64(lo) * n_vocab + hi
                slot = (np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
                slot = slot & mask
                while True:
                    k = keys[slot]
                    if k == key:
                        vals[slot] += x
                        break
                    if k < 0:
                        keys[slot] = key
                        vals[slot] = x
                        fill += 1
                        break
                    slot = (slot + np.uint64(1)) & mask
            i += 1
            if fill >= max_fill:
                if i >= b:
                    s += 1
                return s, i, fill
        s += 1
    return s, i, fill


@_jit
def merge_sum(ka, va, kb, vb):
    """Merge two runs of ascending unique int64 keys with their float64 values; a key in both gets the sum.

    One linear pass (the counting step's flushed tables are merged this way, instead of sorting all of
    them again at every flush). Returns the merged keys and values, trimmed to their length.
    """
    na, nb = ka.shape[0], kb.shape[0]
    ko = np.empty(na + nb, np.int64)
    vo = np.empty(na + nb, np.float64)
    i = j = n = 0
    while i < na and j < nb:
        a, b = ka[i], kb[j]
        if a < b:
            ko[n] = a
            vo[n] = va[i]
            i += 1
        elif b < a:
            ko[n] = b
            vo[n] = vb[j]
            j += 1
        else:
            ko[n] = a
            vo[n] = va[i] + vb[j]
            i += 1
            j += 1
        n += 1
    while i < na:
        ko[n] = ka[i]
        vo[n] = va[i]
        i += 1
        n += 1
    while j < nb:
        ko[n] = kb[j]
        vo[n] = vb[j]
        j += 1
        n += 1
    return ko[:n].copy(), vo[:n].copy()


@intrinsic
def _prefetch_row(typingctx, arr, row):
    """Hint the CPU to fetch the cache lines of ``arr[row]`` (2-D C-contiguous float32), up to 1 KiB.

    GloVe's updates touch eight random rows per entry (W, W~ and their AdaGrad sums, both
    directions); out of cache, waiting for them is most of the time. ``llvm.prefetch`` a few entries
    ahead lets those loads overlap the arithmetic. A hint only: it never faults and changes no value.
    """

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ptr = _row_pointer(context, builder, aty, args[0], (args[1], signature.args[1]))
        shape = cgutils.unpack_tuple(builder, context.make_array(aty)(context, builder, args[0]).shape)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        base = builder.bitcast(ptr, i8p)
        nbytes = builder.mul(shape[1], context.get_constant(types.intp, 4))
        for line in range(0, 1024, 64):
            off = context.get_constant(types.intp, line)
            with builder.if_then(builder.icmp_signed("<", off, nbytes)):
                builder.call(fn, [builder.gep(base, [off]), i32(0), i32(3), i32(1)])  # read, keep, data
        return context.get_dummy_value()

    return types.void(arr, row), codegen


@_jit_glove
def _glove_pair(W, Wc, bw, bc, gW, gWc, gbw, gbc, a, c, logx, fx, eta, clip):
    """One AdaGrad step on the term f(x) (w_a . w~_c + b_a + b~_c - log x)^2; returns its halved loss.

    As the reference glove.c: the step of a parameter is ``u / sqrt(G)`` with ``u = eta * grad`` and
    ``G`` (started at 1) accumulating ``u^2`` — so the first step is ``eta * grad`` and later steps tend
    to ``grad / sqrt(sum grad^2)``. Word-vector gradients are clipped to ``[-clip, clip]`` first.
    """
    dim = W.shape[1]
    diff = bw[a] + bc[c] - logx
    for k in range(dim):
        diff += W[a, k] * Wc[c, k]
    fdiff = fx * diff
    if not math.isfinite(fdiff):
        return 0.0
    for k in range(dim):  # (clip by compare-and-select: min/max here stop LLVM vectorizing the loop)
        g1 = fdiff * Wc[c, k]
        g2 = fdiff * W[a, k]
        g1 = clip if g1 > clip else g1
        g1 = -clip if g1 < -clip else g1
        g2 = clip if g2 > clip else g2
        g2 = -clip if g2 < -clip else g2
        u1 = eta * g1
        u2 = eta * g2
        W[a, k] -= u1 / np.sqrt(gW[a, k])
        Wc[c, k] -= u2 / np.sqrt(gWc[c, k])
        gW[a, k] += u1 * u1
        gWc[c, k] += u2 * u2
    ub = eta * fdiff
    bw[a] -= ub / np.sqrt(gbw[a])
    bc[c] -= ub / np.sqrt(gbc[c])
    gbw[a] += ub * ub
    gbc[c] += ub * ub
    return 0.5 * np.float64(fdiff) * np.float64(diff)


@_jit_glove
def glove_train_job(W, Wc, bw, bc, gW, gWc, gbw, gbc, rows, cols, vals, start, end, params):
    """One pass of AdaGrad over co-occurrence entries ``start..end`` (upper triangle, both directions).

    Entry (i, j, x) with i < j stands for both X_ij and X_ji: it trains (w_i, w~_j) then (w_j, w~_i);
    a diagonal entry trains once. Minimises f(x) (w_i . w~_j + b_i + b~_j - log x)^2 with
    f(x) = min(1, (x / x_max)^alpha). All arrays float32 and C-contiguous (weights, AdaGrad sums).
    Returns the summed weighted squared error (halved, as GloVe reports it).
    """
    eta = np.float32(params.learning_rate)
    clip = np.float32(params.grad_clip)
    x_max = params.x_max
    alpha = params.alpha
    loss = 0.0
    ahead = 4  # entries to prefetch ahead (measured: 2-8 are alike, 2x faster than none out of cache)
    for e in range(start, end):
        if e + ahead < end:
            p = rows[e + ahead]
            q = cols[e + ahead]
            _prefetch_row(W, p)
            _prefetch_row(gW, p)
            _prefetch_row(Wc, q)
            _prefetch_row(gWc, q)
            _prefetch_row(W, q)
            _prefetch_row(gW, q)
            _prefetch_row(Wc, p)
            _prefetch_row(gWc, p)
        x = np.float64(vals[e])
        logx = np.float32(math.log(x))
        fx = np.float32(1.0) if x >= x_max else np.float32(math.exp(alpha * math.log(x / x_max)))
        i = rows[e]
        j = cols[e]
        loss += _glove_pair(W, Wc, bw, bc, gW, gWc, gbw, gbc, i, j, logx, fx, eta, clip)
        if i != j:
            loss += _glove_pair(W, Wc, bw, bc, gW, gWc, gbw, gbc, j, i, logx, fx, eta, clip)
    return loss


@_jit
def ft_compose(syn0_vocab, syn0_ngrams, sub_ptr, sub_idx, out):
    """fastText's word vectors: the mean of each word's row and its n-gram bucket rows."""
    dim = syn0_vocab.shape[1]
    for w in range(syn0_vocab.shape[0]):
        o = out[w]
        o[:] = 0.0
        cnt = _ft_hidden(w, syn0_vocab, syn0_ngrams, sub_ptr, sub_idx, o, 1.0)
        inv = 1.0 / cnt
        for k in range(dim):
            o[k] *= inv
