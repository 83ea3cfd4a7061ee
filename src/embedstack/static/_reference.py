"""Pure-numpy twins of the numba kernels in :mod:`embedstack.static._kernels` (the test oracle).

They are written for clarity, not speed: the same arithmetic, the same LCG draws, the same order of
updates, so a test can check that kernel and twin leave the same weights on a tiny case.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "lcg_next",
    "sg_ns_step",
    "sg_hs_step",
    "cbow_step",
    "w2v_train_job",
    "ft_train_job",
    "cooccur",
    "glove_train_job",
]

EXP_TABLE_SIZE = 1000
MAX_EXP = 6.0
_MASK64 = (1 << 64) - 1


def lcg_next(r: int) -> int:
    """word2vec.c's LCG step on a Python int (mod 2**64)."""
    return (r * 25214903917 + 11) & _MASK64


def _idx(f: float) -> int:
    return int((f + MAX_EXP) * (EXP_TABLE_SIZE / MAX_EXP / 2.0))


def _ns(hidden, syn1neg, target, negatives, alpha, tables, work) -> float:
    """Scores from the rows on entry; then, in draw order, ``work += g * row`` and the row moves."""
    exp_table, lsp, lsn = tables
    loss = 0.0
    h = hidden.astype(np.float64)
    grads: list[tuple[int, float]] = []
    for d, t in enumerate([target, *list(negatives)]):
        label = 1.0 if d == 0 else 0.0
        if d > 0 and t == target:
            continue
        f = float(h @ syn1neg[t].astype(np.float64))
        if f >= MAX_EXP:
            g = (label - 1.0) * alpha
            loss += f if label == 0.0 else 0.0
        elif f <= -MAX_EXP:
            g = label * alpha
            loss += -f if label == 1.0 else 0.0
        else:
            i = _idx(f)
            g = (label - float(exp_table[i])) * alpha
            loss -= float(lsp[i] if label == 1.0 else lsn[i])
        grads.append((int(t), g))
    for t, g in grads:
        row = syn1neg[t].astype(np.float64)
        work += (g * row).astype(np.float32)
        syn1neg[t] = (row + g * h).astype(np.float32)
    return loss


def _hs(hidden, syn1, code, point, alpha, tables, work) -> float:
    exp_table, lsp, lsn = tables
    loss = 0.0
    h = hidden.astype(np.float64)
    for c, p in zip(code, point, strict=True):
        row = syn1[p]
        f = float(h @ row.astype(np.float64))
        if f <= -MAX_EXP or f >= MAX_EXP:
            continue
        i = _idx(f)
        g = (1.0 - int(c) - float(exp_table[i])) * alpha
        loss -= float(lsp[i] if c == 0 else lsn[i])
        work += (g * row.astype(np.float64)).astype(np.float32)
        syn1[p] = (row.astype(np.float64) + g * h).astype(np.float32)
    return loss


def sg_ns_step(syn0, syn1neg, inp, target, negatives, alpha, tables) -> float:
    """Skip-gram negative sampling: row ``inp`` predicts ``target`` against ``negatives``."""
    work = np.zeros(syn0.shape[1], np.float32)
    loss = _ns(syn0[inp].copy(), syn1neg, target, negatives, alpha, tables, work)
    syn0[inp] += work
    return loss


def sg_hs_step(syn0, syn1, inp, code, point, alpha, tables) -> float:
    """Skip-gram hierarchical softmax along one Huffman path."""
    work = np.zeros(syn0.shape[1], np.float32)
    loss = _hs(syn0[inp].copy(), syn1, code, point, alpha, tables, work)
    syn0[inp] += work
    return loss


def cbow_step(syn0, syn1neg, context, target, negatives, alpha, cbow_mean, tables) -> float:
    """CBOW negative sampling: the mean (or sum) of the context rows predicts ``target``."""
    context = list(context)
    neu1 = syn0[context].astype(np.float64).sum(axis=0)
    if cbow_mean:
        neu1 /= len(context)
    work = np.zeros(syn0.shape[1], np.float32)
    loss = _ns(neu1.astype(np.float32), syn1neg, target, negatives, alpha, tables, work)
    if not cbow_mean:
        work = (work / len(context)).astype(np.float32)
    for c in context:
        syn0[c] += work
    return loss


def _sg_shared(syn0, syn1neg, ctx, word, negs, alpha, tables) -> float:
    """Skip-gram with negatives shared by a centre word's contexts: all scores from the rows on entry."""
    exp_table, lsp, lsn = tables
    outs = [word, *negs]
    x = syn0[ctx].astype(np.float64)            # m x d inputs
    y = syn1neg[outs].astype(np.float64)        # (1 + K) x d outputs
    f = x @ y.T
    labels = np.array([1.0] + [0.0] * len(negs))
    live = np.array([True] + [t != word for t in negs])
    g = np.zeros_like(f)
    loss = 0.0
    for a in range(f.shape[0]):
        for b in range(f.shape[1]):
            if not live[b]:
                continue
            v = f[a, b]
            if v >= MAX_EXP:
                g[a, b] = (labels[b] - 1.0) * alpha
                loss += v if b > 0 else 0.0
            elif v <= -MAX_EXP:
                g[a, b] = labels[b] * alpha
                loss += -v if b == 0 else 0.0
            else:
                i = _idx(float(np.float32(v)))
                g[a, b] = (labels[b] - float(exp_table[i])) * alpha
                loss -= float(lsp[i] if b == 0 else lsn[i])
    gin, gout = g @ y, g.T @ x
    for a, c in enumerate(ctx):
        syn0[c] += gin[a].astype(np.float32)
    for b, t in enumerate(outs):
        if live[b]:
            syn1neg[t] += gout[b].astype(np.float32)
    return loss


def _subsample(ids, start, end, keep, do_sample, r):
    out = []
    for p in range(start, end):
        w = int(ids[p])
        if do_sample:
            r = lcg_next(r)
            if int(keep[w]) < ((r >> 16) & 0xFFFFFFFF):
                continue
        out.append(w)
    return out, r


def _negatives(n, ns_table, r):
    negs = []
    for _ in range(n):
        r = lcg_next(r)
        x = r >> 16
        i = ((x >> 16) * len(ns_table)) >> 32
        e = int(ns_table[i])
        negs.append(i if ((x & 0xFFFF) << 16) < (e & 0xFFFFFFFF) else e >> 32)
    return negs, r


def w2v_train_job(syn0, syn1, syn1neg, ids, offsets, s_begin, s_end, keep, ns_table, codes, points,
                  code_lens, tables, params, alpha, seed):
    """Twin of :func:`embedstack.static._kernels.w2v_train_job` (same draws, same update order)."""
    r = seed
    words, loss, terms = 0, 0.0, 0
    window = params.window
    shared = params.sg and getattr(params, "shared", 0) and params.negative and not params.hs
    ahead = (shared or not params.sg) and params.negative and not params.hs  # negatives drawn a word ahead
    for s in range(s_begin, s_end):
        buf, r = _subsample(ids, offsets[s], offsets[s + 1], keep, params.sample, r)
        n = len(buf)
        words += n
        if ahead and n:
            nxt, r = _negatives(params.negative, ns_table, r)
        for i in range(n):
            r = lcg_next(r)
            b = (r >> 16) % window
            lo, hi = max(0, i - window + b), min(n, i + window + 1 - b)
            word = buf[i]
            path = (codes[word][: code_lens[word]], points[word][: code_lens[word]]) if params.hs else None
            if ahead:
                cur = nxt
                if i + 1 < n:
                    nxt, r = _negatives(params.negative, ns_table, r)
            if shared:
                ctx = [buf[j] for j in range(lo, hi) if j != i]
                if not ctx:
                    continue
                loss += _sg_shared(syn0, syn1neg, ctx, word, cur, alpha, tables)
                terms += len(ctx)
            elif params.sg:
                for j in range(lo, hi):
                    if j == i:
                        continue
                    hidden = syn0[buf[j]].copy()
                    work = np.zeros(syn0.shape[1], np.float32)
                    if path is not None:
                        loss += _hs(hidden, syn1, path[0], path[1], alpha, tables, work)
                    if params.negative:
                        negs, r = _negatives(params.negative, ns_table, r)
                        loss += _ns(hidden, syn1neg, word, negs, alpha, tables, work)
                    terms += 1
                    syn0[buf[j]] += work
            else:
                ctx = [buf[j] for j in range(lo, hi) if j != i]
                if not ctx:
                    continue
                neu1 = syn0[ctx].astype(np.float64).sum(axis=0)
                if params.cbow_mean:
                    neu1 /= len(ctx)
                neu1 = neu1.astype(np.float32)
                work = np.zeros(syn0.shape[1], np.float32)
                if path is not None:
                    loss += _hs(neu1, syn1, path[0], path[1], alpha, tables, work)
                if params.negative:
                    if ahead:
                        negs = cur
                    else:
                        negs, r = _negatives(params.negative, ns_table, r)
                    loss += _ns(neu1, syn1neg, word, negs, alpha, tables, work)
                terms += 1
                if not params.cbow_mean:
                    work = (work / len(ctx)).astype(np.float32)
                for c in ctx:
                    syn0[c] += work
    return words, loss, terms


def _ft_rows(word, sub_ptr, sub_idx):
    return int(word), [int(b) for b in sub_idx[sub_ptr[word]: sub_ptr[word + 1]]]


def ft_train_job(syn0_vocab, syn0_ngrams, syn1neg, sub_ptr, sub_idx, ids, offsets, s_begin, s_end, keep,
                 ns_table, tables, params, alpha, seed):
    """Twin of :func:`embedstack.static._kernels.ft_train_job`."""
    r = seed
    words, loss, terms = 0, 0.0, 0
    window = params.window

    def hidden_of(wlist):
        acc = np.zeros(syn0_vocab.shape[1], np.float64)
        cnt = 0
        for w in wlist:
            wr, ngr = _ft_rows(w, sub_ptr, sub_idx)
            acc += syn0_vocab[wr]
            for g in ngr:
                acc += syn0_ngrams[g]
            cnt += 1 + len(ngr)
        return (acc / cnt).astype(np.float32)

    def apply(w, work):
        wr, ngr = _ft_rows(w, sub_ptr, sub_idx)
        syn0_vocab[wr] += work
        for g in ngr:
            syn0_ngrams[g] += work

    shared = params.sg and getattr(params, "shared", 0) and params.negative
    for s in range(s_begin, s_end):
        buf, r = _subsample(ids, offsets[s], offsets[s + 1], keep, params.sample, r)
        n = len(buf)
        words += n
        for i in range(n):
            r = lcg_next(r)
            b = (r >> 16) % window
            lo, hi = max(0, i - window + b), min(n, i + window + 1 - b)
            word = buf[i]
            if shared:  # one draw per two context words, all scored from the centre's mean on entry
                ctx = [buf[j] for j in range(lo, hi) if j != i]
                groups = [ctx[g: g + 2] for g in range(0, len(ctx), 2)]
                draws = []
                for _ in groups:
                    negs, r = _negatives(params.negative, ns_table, r)
                    draws.append(negs)
                h = hidden_of([word]).astype(np.float64)
                for group, negs in zip(groups, draws, strict=True):
                    loss += _ft_shared(h, syn1neg, group, negs, alpha, tables, lambda work, w=word: apply(w, work))
                terms += len(ctx)
            elif params.sg:
                if hi - lo <= 1:
                    continue
                for j in range(lo, hi):
                    if j == i:
                        continue
                    hidden = hidden_of([word])  # fastText: per-pair forward from the current rows
                    work = np.zeros(syn0_vocab.shape[1], np.float32)
                    negs, r = _negatives(params.negative, ns_table, r)
                    loss += _ns(hidden, syn1neg, buf[j], negs, alpha, tables, work)
                    terms += 1
                    apply(word, work)  # per-pair writes (the kernel defers them, with the same result)
            else:
                ctx = [buf[j] for j in range(lo, hi) if j != i]
                if not ctx:
                    continue
                hidden = hidden_of(ctx)
                work = np.zeros(syn0_vocab.shape[1], np.float32)
                negs, r = _negatives(params.negative, ns_table, r)
                loss += _ns(hidden, syn1neg, word, negs, alpha, tables, work)
                terms += 1
                for c in ctx:
                    apply(c, work)
    return words, loss, terms


def _ft_shared(h, syn1neg, ctx, negs, alpha, tables, apply) -> float:
    """fastText skip-gram, negatives shared by the centre's contexts, each weighted by the pairs it stands for."""
    exp_table, lsp, lsn = tables
    outs = [*ctx, *negs]
    weights = [1.0] * len(ctx) + [float(sum(c != t for c in ctx)) for t in negs]
    y = syn1neg[outs].astype(np.float64)
    g = np.zeros(len(outs))
    loss = 0.0
    for a, w in enumerate(weights):
        if w == 0.0:
            continue
        pos = a < len(ctx)
        f = float(np.float32(h @ y[a]))
        if f >= MAX_EXP:
            g[a] = ((1.0 if pos else 0.0) - 1.0) * alpha * w
            loss += 0.0 if pos else w * f
        elif f <= -MAX_EXP:
            g[a] = (1.0 if pos else 0.0) * alpha * w
            loss += -f if pos else 0.0
        else:
            i = _idx(f)
            g[a] = ((1.0 if pos else 0.0) - float(exp_table[i])) * alpha * w
            loss -= float(lsp[i]) if pos else w * float(lsn[i])
    apply((g @ y).astype(np.float32))
    for a, t in enumerate(outs):
        if g[a] != 0.0:
            syn1neg[t] += (g[a] * h).astype(np.float32)
    return loss


def cooccur(ids, offsets, window) -> dict[tuple[int, int], float]:
    """Upper-triangle 1/distance co-occurrence weights as a dict {(i, j): x} with i <= j."""
    out: dict[tuple[int, int], float] = {}
    for s in range(len(offsets) - 1):
        a, b = int(offsets[s]), int(offsets[s + 1])
        for i in range(a, b):
            for j in range(i + 1, min(b, i + window + 1)):
                wi, wj = int(ids[i]), int(ids[j])
                key = (min(wi, wj), max(wi, wj))
                out[key] = out.get(key, 0.0) + 1.0 / (j - i)
    return out


def glove_train_job(W, Wc, bw, bc, gW, gWc, gbw, gbc, rows, cols, vals, start, end, params) -> float:
    """Twin of :func:`embedstack.static._kernels.glove_train_job` (glove.c's AdaGrad, both directions)."""
    eta, clip = params.learning_rate, params.grad_clip
    loss = 0.0
    for e in range(start, end):
        x = float(vals[e])
        fx = 1.0 if x >= params.x_max else (x / params.x_max) ** params.alpha
        pairs = [(int(rows[e]), int(cols[e]))]
        if rows[e] != cols[e]:
            pairs.append((int(cols[e]), int(rows[e])))
        for a, c in pairs:
            wa, wc = W[a].astype(np.float64), Wc[c].astype(np.float64)
            diff = float(wa @ wc) + float(bw[a]) + float(bc[c]) - math.log(x)
            fdiff = fx * diff
            loss += 0.5 * fdiff * diff
            u1 = eta * np.clip(fdiff * wc, -clip, clip)  # learning rate x gradient, as glove.c
            u2 = eta * np.clip(fdiff * wa, -clip, clip)
            W[a] = (wa - u1 / np.sqrt(gW[a])).astype(np.float32)
            Wc[c] = (wc - u2 / np.sqrt(gWc[c])).astype(np.float32)
            gW[a] += (u1 * u1).astype(np.float32)
            gWc[c] += (u2 * u2).astype(np.float32)
            ub = eta * fdiff
            bw[a] -= ub / math.sqrt(gbw[a])
            bc[c] -= ub / math.sqrt(gbc[c])
            gbw[a] += ub * ub
            gbc[c] += ub * ub
    return loss
