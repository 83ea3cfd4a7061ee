"""Hot loops of the indexes: running top-k, packed-bit Hamming selection, int8 dot products.

Each compiled kernel (numba, ``parallel=True``, GIL released) takes plain arrays and has a numpy
reference twin (``*_ref``) that the tests compare it with. When numba is not installed the public
dispatchers (:func:`topk_block`, :func:`hamming_select`, :func:`int8_dot`) fall back to the twins,
so every index works without the ``fast`` extra, only slower.

Layouts:
  * binary codes are sign bits packed big-endian with :func:`numpy.packbits`, padded with zero bits to
    a multiple of 64 and stored *transposed* as ``uint64 (words, n)`` so that the Hamming loop runs
    over contiguous memory and vectorises (``vpopcntq`` on AVX-512).
  * the Hamming selection streams the codes once per group of up to 32 queries (a block of codes is
    reused from cache by the whole group), computes distances slice by slice with the words of a code
    added up in registers, and skips any slice whose minimum distance cannot enter the candidates
    (the bound is the c-th best distance so far, tightened as candidates are compacted), so the
    candidate selection costs little beyond the popcounts. Ties go to the lower id; the result does
    not depend on how the work is split across threads.
  * int8 codes are ``int8 (n, d)``; the dequantised vector is ``mid + step * code`` per dimension.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

__all__ = [
    "HAVE_NUMBA",
    "pack_bits",
    "words_to_rows",
    "topk_merge_ref",
    "topk_block",
    "topk_block_t",
    "hamming_select",
    "hamming_select_ref",
    "int8_dot",
    "int8_dot_ref",
    "gather_dot",
    "gather_dot_ref",
    "finalize_topk",
    "probe_docs",
    "probe_docs_ref",
    "centroid_interaction",
    "centroid_interaction_ref",
    "decode_residuals",
    "decode_residuals_ref",
    "segment_maxsum",
    "segment_maxsum_ref",
]

try:  # numba is the optional "fast" extra
    import numba
    from numba import njit, prange, types
    from numba.extending import intrinsic

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without the extra
    HAVE_NUMBA = False

_HAMMING_BLOCK = 2048  # codes per pass of the Hamming kernel (384 bits: 96 KiB, stays in L2)
_SLICE = 512  # codes scored per kernel call; a slice whose minimum reaches the bound is not scanned
_RUN = 64  # scores per run of the top-k merge: a run with no score above the heap's bound is skipped


# --------------------------------------------------------------------------- bit packing (numpy)

def pack_bits(x: np.ndarray) -> np.ndarray:
    """Sign bits of ``x`` (``x > 0``) packed into ``uint64 (words, n)`` (transposed, zero padded)."""
    n, d = x.shape
    words = (d + 63) // 64
    packed = np.packbits(x > 0, axis=1)  # (n, ceil(d/8)) uint8, big-endian bit order
    if packed.shape[1] != words * 8:
        packed = np.pad(packed, ((0, 0), (0, words * 8 - packed.shape[1])))
    return np.ascontiguousarray(np.ascontiguousarray(packed).view(np.uint64).T)


def words_to_rows(codes_t: np.ndarray, dim: int) -> np.ndarray:
    """Inverse layout of :func:`pack_bits`: ``uint8 (n, ceil(dim/8))`` rows as ``np.packbits`` gives."""
    rows = np.ascontiguousarray(codes_t.T).view(np.uint8)
    return np.ascontiguousarray(rows[:, : (dim + 7) // 8])


# --------------------------------------------------------------------------- numpy reference twins

def topk_merge_ref(scores: np.ndarray, offset: int, best_s: np.ndarray, best_i: np.ndarray) -> None:
    """Merge a block of scores (columns are ids ``offset + j``) into the running top-k, in place.

    As the numba kernel: -inf (and, for int32 scores, the int32 minimum, the scan's fill for removed rows)
    never enters; such slots keep id -1."""
    k = best_s.shape[1]
    ids = np.broadcast_to(np.arange(offset, offset + scores.shape[1], dtype=np.int64), scores.shape)
    sc = scores.astype(np.float32, copy=False)
    keep = scores > np.iinfo(np.int32).min if scores.dtype.kind == "i" else sc > -np.inf
    ids = np.where(keep, ids, -1)
    all_s = np.concatenate([best_s, np.where(keep, sc, np.float32(-np.inf))], axis=1)
    all_i = np.concatenate([best_i, ids], axis=1)
    part = np.lexsort((np.where(all_i < 0, np.iinfo(np.int64).max, all_i), -all_s), axis=1)[:, :k]  # ties: lower id
    best_s[:] = np.take_along_axis(all_s, part, axis=1)
    best_i[:] = np.take_along_axis(all_i, part, axis=1)


def hamming_select_ref(q_words: np.ndarray, codes_t: np.ndarray, dead: np.ndarray,
                       c: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``c`` nearest codes by Hamming distance per query: (distances int32, ids int64), ties by id.

    ``dead`` lists internal ids that must never be returned (tombstones).
    """
    nq = q_words.shape[0]
    out_d = np.empty((nq, c), dtype=np.int32)
    out_i = np.empty((nq, c), dtype=np.int64)
    for qi in range(nq):
        x = np.bitwise_xor(codes_t, q_words[qi][:, None])
        dist = np.bitwise_count(x).sum(axis=0).astype(np.int32)
        dist[dead] = np.iinfo(np.int32).max
        order = np.argsort(dist, kind="stable")[:c]  # callers keep c <= live count
        out_d[qi] = dist[order]
        out_i[qi] = order
    return out_d, out_i


def int8_dot_ref(qw: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``qw (nq, d) float32 @ codes (n, d) int8 .T`` in float32."""
    return qw.astype(np.float32) @ codes.astype(np.float32).T


def gather_dot_ref(qw: np.ndarray, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``out[i, j] = qw[i] · rows[cand[i, j]]`` in float32 (rows float or int8): rescoring candidates."""
    picked = np.asarray(rows[cand.ravel()], dtype=np.float32).reshape(cand.shape[0], cand.shape[1], -1)
    return np.einsum("icd,id->ic", picked, qw.astype(np.float32)).astype(np.float32)


def probe_docs_ref(cents: np.ndarray, indptr: np.ndarray, indices: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """Sorted live documents in the inverted lists of ``cents`` (lists as CSR ``indptr/indices``; ``dead``
    uint8 per document)."""
    hit = np.zeros(len(dead), dtype=bool)
    for c in cents:
        hit[indices[indptr[c] : indptr[c + 1]]] = True
    return np.flatnonzero(hit & (dead == 0))


def centroid_interaction_ref(sims_t: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                             docs: np.ndarray) -> np.ndarray:
    """PLAID's approximate score: ``Σ_i max_{c ∈ cents(doc)} sims_t[c, i]`` for each of ``docs``, where
    ``sims_t (n_centroids, q_tokens)`` are the query tokens' centroid similarities and a document's
    centroids are row ``doc`` of the CSR ``indptr/indices``."""
    starts = indptr[docs]
    lens = indptr[docs + 1] - starts
    seg = np.zeros(len(docs), dtype=np.int64)
    np.cumsum(lens[:-1], out=seg[1:])
    flat = indices[np.repeat(starts - seg, lens) + np.arange(int(lens.sum()))]
    return np.maximum.reduceat(sims_t[flat], seg, axis=0).sum(axis=1).astype(np.float32)


def decode_residuals_ref(packed: np.ndarray, assign: np.ndarray, centroids: np.ndarray, lut: np.ndarray,
                         pos: np.ndarray, normalize: bool) -> np.ndarray:
    """float32 ``(len(pos), dim)`` token vectors ``centroids[assign[p]] + residual(packed[p])``, where ``lut
    (256, 8 / nbits)`` maps a packed byte to the residual values it holds (renormalised if ``normalize``)."""
    x = lut[np.asarray(packed[pos])].reshape(len(pos), centroids.shape[1])
    x += centroids[np.asarray(assign[pos])]
    if normalize:
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def segment_maxsum_ref(sims: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """MaxSim of each run of rows of ``sims (tokens, q_tokens)``: ``Σ_i max_{t ∈ run} sims[t, i]``, runs starting
    at ``starts`` (non-empty)."""
    return np.maximum.reduceat(sims, starts, axis=0).sum(axis=1).astype(np.float32)


def finalize_topk(best_s: np.ndarray, best_i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row of a running top-k by descending score (ties by ascending id)."""
    order = np.lexsort((best_i, -best_s), axis=1) if best_s.size else np.zeros(best_s.shape, dtype=np.int64)
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


# --------------------------------------------------------------------------- numba kernels

if HAVE_NUMBA:

    @intrinsic
    def _popcount64(typingctx: Any, x: Any) -> Any:
        """LLVM ``ctpop`` on a uint64 (one ``popcnt`` instruction; vectorised where the CPU allows)."""
        sig = types.uint64(types.uint64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.ctpop(args[0])

        return sig, codegen

    @intrinsic
    def _prefer_512bit(typingctx: Any) -> Any:
        """Let LLVM vectorise the calling function with 512-bit registers where the CPU has them.

        LLVM tunes recent Intel cores to 256-bit vectors; the popcount loops run about 10% faster
        with 512-bit ``vpopcntq``. The hint is LLVM's per-function ``prefer-vector-width``
        attribute (what clang's ``-mprefer-vector-width=512`` sets); llvmlite's attribute set does not
        list string attributes, so it is added to the set directly, and skipped if that ever fails.
        Elsewhere (no AVX-512) the attribute changes nothing.
        """

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            with contextlib.suppress(Exception):  # a different llvmlite: keep the default width
                set.add(builder.function.attributes, '"prefer-vector-width"="512"')
            return context.get_dummy_value()

        return types.none(), codegen

    from embedstack._topk import sift_down as _sift_down

    @njit(cache=True, nogil=True, inline="always")
    def _run_bound(worst: float, wv: np.ndarray, integer: bool) -> Any:
        """The bound ``w`` in the scores' type (``wv``'s): a score ``<= w`` cannot beat a heap whose worst is
        ``worst``. Integers get ``floor(worst)`` (at or below ``worst``: conservative), clipped to int32, so a
        heap still holding -inf gets the int32 minimum: the scan's fill for removed rows never enters."""
        wv[0] = max(min(np.floor(worst), 2147483647.0), -2147483648.0) if integer else worst
        return wv[0]

    @njit(cache=True, nogil=True)
    def _topk_block_nb(scores: np.ndarray, offset: int, best_s: np.ndarray, best_i: np.ndarray, row0: int,
                       integer: bool) -> None:
        """Merge one thread's cache-sized block of scores into its running top-k heaps.

        Rows of ``scores`` are the heaps ``row0 ..`` of ``best_s``/``best_i``; the heaps must already be
        heaps (the scan initialises them with -inf, which is one). Scores are float32 or int32 (int8
        products, exact in the float32 heap; ``integer``). A run of ``_RUN`` scores is skipped when none
        of them exceeds the bound ``w`` of :func:`_run_bound`: the count of scores above ``w`` is a loop of
        vector compares and adds with one horizontal sum per run, and ``w`` changes only after a run with
        a hit, which is looked at one by one. Once the heaps hold good scores nearly every run is skipped:
        64-score runs and counting take a third of the time of the 16-score maximum this replaced (AMD
        EPYC, a steady 256 x 2,048 block: 0.04 against 0.12 ms).
        """
        nq, nb = scores.shape
        k = best_s.shape[1]
        full = nb - nb % _RUN
        wv = np.empty(1, dtype=scores.dtype)
        for r in range(nq):
            hs = best_s[row0 + r]
            hi = best_i[row0 + r]
            row = scores[r]
            w = _run_bound(hs[0], wv, integer)
            for j in range(0, full, _RUN):
                hits = 0
                for t in range(_RUN):  # a constant trip count: vector compares, one sum per run
                    hits += row[j + t] > w
                if hits == 0:
                    continue
                for a in range(j, j + _RUN, 16):  # a hit: its runs of 16 are counted the same way
                    hits = 0
                    for t in range(16):
                        hits += row[a + t] > w
                    if hits == 0:
                        continue
                    for t in range(a, a + 16):
                        if row[t] > w:
                            s = np.float32(row[t])
                            if s > hs[0]:
                                hs[0] = s
                                hi[0] = offset + t
                                _sift_down(hs, hi, k, 0)
                w = _run_bound(hs[0], wv, integer)
            for t in range(full, nb):
                s = np.float32(row[t])
                if row[t] > w and s > hs[0]:
                    hs[0] = s
                    hi[0] = offset + t
                    _sift_down(hs, hi, k, 0)

    @njit(cache=True, nogil=True)
    def _topk_block_t_nb(scores_t: np.ndarray, offset: int, best_s: np.ndarray, best_i: np.ndarray,
                         row0: int) -> None:
        """:func:`_topk_block_nb` for a block laid out documents × queries (fbgemm's product writes its output
        that way: the documents are its input rows). Each document's row of scores is compared with every
        query's heap bound at once (one vector compare and count per row); a row with a hit is looked at 16
        queries at a time, the same way, and a group with a hit one query at a time (with hundreds of
        queries per block, a row often holds a hit for one query or another)."""
        nb, nq = scores_t.shape
        k = best_s.shape[1]
        w = np.empty(nq, dtype=np.float32)
        for r in range(nq):
            w[r] = best_s[row0 + r, 0]
        full = nq - nq % 16
        for j in range(nb):
            row = scores_t[j]
            hits = 0
            for r in range(nq):
                hits += row[r] > w[r]
            if hits == 0:
                continue
            for a in range(0, nq, 16):
                hits = 0
                if a < full:
                    for t in range(16):  # a constant trip count: vector compares
                        hits += row[a + t] > w[a + t]
                    e = a + 16
                else:
                    e = nq
                    for r in range(a, e):
                        hits += row[r] > w[r]
                if hits == 0:
                    continue
                for r in range(a, e):
                    s = row[r]
                    if s > w[r]:
                        hs = best_s[row0 + r]
                        hi = best_i[row0 + r]
                        hs[0] = s
                        hi[0] = offset + j
                        _sift_down(hs, hi, k, 0)
                        w[r] = hs[0]

    # Hamming distances of one query to docs a..e, written to buf[: e - a]. The popcount loops read
    # 6, 4, 2 or 1 packed words of each doc from contiguous rows of codes_t and add them up in
    # registers, so LLVM vectorises them (vpopcntq where the CPU has it) and buf is written once per
    # group of words (once in all for 384 bits) instead of once per word.

    @njit(cache=True, nogil=True)
    def _ham6(q: np.ndarray, w: int, codes_t: np.ndarray, a: int, e: int, buf: np.ndarray, acc: bool) -> int:
        _prefer_512bit()  # type: ignore[call-arg]  # numba's @intrinsic supplies typingctx
        q0, q1, q2, q3, q4, q5 = q[w], q[w + 1], q[w + 2], q[w + 3], q[w + 4], q[w + 5]
        c0, c1, c2 = codes_t[w, a:e], codes_t[w + 1, a:e], codes_t[w + 2, a:e]
        c3, c4, c5 = codes_t[w + 3, a:e], codes_t[w + 4, a:e], codes_t[w + 5, a:e]
        low = np.int32(1 << 30)
        for j in range(e - a):
            d = np.int32(_popcount64(q0 ^ c0[j]) + _popcount64(q1 ^ c1[j]) + _popcount64(q2 ^ c2[j])  # type: ignore[call-arg]
                         + _popcount64(q3 ^ c3[j]) + _popcount64(q4 ^ c4[j]) + _popcount64(q5 ^ c5[j]))  # type: ignore[call-arg]
            v = buf[j] + d if acc else d
            buf[j] = v
            low = min(low, v)
        return low

    @njit(cache=True, nogil=True)
    def _ham4(q: np.ndarray, w: int, codes_t: np.ndarray, a: int, e: int, buf: np.ndarray, acc: bool) -> int:
        _prefer_512bit()  # type: ignore[call-arg]  # numba's @intrinsic supplies typingctx
        q0, q1, q2, q3 = q[w], q[w + 1], q[w + 2], q[w + 3]
        c0, c1, c2, c3 = codes_t[w, a:e], codes_t[w + 1, a:e], codes_t[w + 2, a:e], codes_t[w + 3, a:e]
        low = np.int32(1 << 30)
        for j in range(e - a):
            d = np.int32(_popcount64(q0 ^ c0[j]) + _popcount64(q1 ^ c1[j])  # type: ignore[call-arg]
                         + _popcount64(q2 ^ c2[j]) + _popcount64(q3 ^ c3[j]))  # type: ignore[call-arg]
            v = buf[j] + d if acc else d
            buf[j] = v
            low = min(low, v)
        return low

    @njit(cache=True, nogil=True)
    def _ham2(q: np.ndarray, w: int, codes_t: np.ndarray, a: int, e: int, buf: np.ndarray, acc: bool) -> int:
        _prefer_512bit()  # type: ignore[call-arg]  # numba's @intrinsic supplies typingctx
        q0, q1 = q[w], q[w + 1]
        c0, c1 = codes_t[w, a:e], codes_t[w + 1, a:e]
        low = np.int32(1 << 30)
        for j in range(e - a):
            d = np.int32(_popcount64(q0 ^ c0[j]) + _popcount64(q1 ^ c1[j]))  # type: ignore[call-arg]
            v = buf[j] + d if acc else d
            buf[j] = v
            low = min(low, v)
        return low

    @njit(cache=True, nogil=True)
    def _ham1(q: np.ndarray, w: int, codes_t: np.ndarray, a: int, e: int, buf: np.ndarray, acc: bool) -> int:
        _prefer_512bit()  # type: ignore[call-arg]  # numba's @intrinsic supplies typingctx
        q0 = q[w]
        c0 = codes_t[w, a:e]
        low = np.int32(1 << 30)
        for j in range(e - a):
            d = np.int32(_popcount64(q0 ^ c0[j]))  # type: ignore[call-arg]
            v = buf[j] + d if acc else d
            buf[j] = v
            low = min(low, v)
        return low

    @njit(cache=True, nogil=True)
    def _block_distances(qrow: np.ndarray, codes_t: np.ndarray, a: int, e: int, buf: np.ndarray) -> int:
        """Write the distances of docs a..e to buf[: e - a]; return their minimum."""
        words = codes_t.shape[0]
        w = 0
        low = 0
        while w + 6 <= words:
            low = _ham6(qrow, w, codes_t, a, e, buf, w > 0)
            w += 6
        if w + 4 <= words:
            low = _ham4(qrow, w, codes_t, a, e, buf, w > 0)
            w += 4
        if w + 2 <= words:
            low = _ham2(qrow, w, codes_t, a, e, buf, w > 0)
            w += 2
        if w < words:
            low = _ham1(qrow, w, codes_t, a, e, buf, w > 0)
        return low

    @njit(cache=True, nogil=True)
    def _keep_best(cd: np.ndarray, ci: np.ndarray, fill: int, c: int, nbins: int, out_d: np.ndarray,
                   out_i: np.ndarray) -> int:
        # Keep the c best of the first `fill` (distance, id) pairs, which arrive in id order, sorted by
        # (distance, id) into out_*; returns the distance bound: later (larger) ids must be strictly below it.
        hist = np.zeros(nbins, dtype=np.int64)
        for t in range(fill):
            hist[cd[t]] += 1
        cum = 0
        thr = nbins - 1
        for b in range(nbins):
            if cum + hist[b] >= c:
                thr = b
                break
            cum += hist[b]
        rest = c - cum
        start = np.zeros(nbins, dtype=np.int64)
        acc = 0
        for b in range(thr + 1):
            start[b] = acc
            acc += hist[b]
        kept = 0
        for t in range(fill):
            dj = cd[t]
            if dj < thr or (dj == thr and rest > 0):
                if dj == thr:
                    rest -= 1
                p = start[dj]
                out_d[p] = dj
                out_i[p] = ci[t]
                start[dj] = p + 1
                kept += 1
        return thr if kept >= c else nbins

    @njit(cache=True, nogil=True, parallel=True)
    def _hamming_select_nb(q_words: np.ndarray, codes_t: np.ndarray, dead_mask: np.ndarray, c: int,
                           group: int, nseg: int, slice_: int) -> tuple[np.ndarray, np.ndarray]:
        # Tasks are (group of queries) x (segment of the database). A task streams its segment block by
        # block (each block of codes is reused by every query of the group while it sits in cache) and
        # keeps, per query, the candidates strictly below a distance bound. Docs arrive in id order, so
        # the bound (the c-th best distance so far) breaks ties towards lower ids; segment results are
        # merged in segment (= id) order, so the result does not depend on group or nseg.
        nq = q_words.shape[0]
        words, n = codes_t.shape
        nbins = words * 64 + 1
        cap = 2 * c + 64
        ngroups = (nq + group - 1) // group
        seg_len = (n + nseg - 1) // nseg
        seg_d = np.empty((nseg, nq, c), dtype=np.int32)
        seg_i = np.empty((nseg, nq, c), dtype=np.int64)
        seg_f = np.zeros((nseg, nq), dtype=np.int64)
        for t in prange(ngroups * nseg):
            g = t // nseg
            s = t - g * nseg
            q0 = g * group
            m = min(nq, q0 + group) - q0
            lo = s * seg_len
            hi = min(n, lo + seg_len)
            buf = np.empty(slice_, dtype=np.int32)
            cd = np.empty((m, cap), dtype=np.int32)
            ci = np.empty((m, cap), dtype=np.int64)
            tmp_d = np.empty(c, dtype=np.int32)
            tmp_i = np.empty(c, dtype=np.int64)
            fill = np.zeros(m, dtype=np.int64)
            bound = np.full(m, nbins, dtype=np.int64)
            for a in range(lo, hi, _HAMMING_BLOCK):
                e = min(hi, a + _HAMMING_BLOCK)
                for r in range(m):
                    bnd = np.int32(bound[r])
                    f = fill[r]
                    for s0 in range(a, e, slice_):  # a slice whose minimum reaches the bound is skipped
                        s1 = min(e, s0 + slice_)
                        if _block_distances(q_words[q0 + r], codes_t, s0, s1, buf) >= bnd:
                            continue
                        for j in range(s1 - s0):
                            dj = buf[j]
                            if dj < bnd and dead_mask[s0 + j] == 0:
                                cd[r, f] = dj
                                ci[r, f] = s0 + j
                                f += 1
                                if f == cap:  # compact to the c best: the bound tightens early and often
                                    bnd = np.int32(_keep_best(cd[r], ci[r], f, c, nbins, tmp_d, tmp_i))
                                    cd[r, :c] = tmp_d
                                    ci[r, :c] = tmp_i
                                    f = c
                    fill[r] = f
                    bound[r] = bnd
            for r in range(m):
                kept = min(fill[r], c)
                _keep_best(cd[r], ci[r], fill[r], c, nbins, tmp_d, tmp_i)
                seg_d[s, q0 + r, :kept] = tmp_d[:kept]
                seg_i[s, q0 + r, :kept] = tmp_i[:kept]
                seg_f[s, q0 + r] = kept
        if nseg == 1:
            return seg_d[0], seg_i[0]
        out_d = np.empty((nq, c), dtype=np.int32)
        out_i = np.empty((nq, c), dtype=np.int64)
        for qi in prange(nq):
            total = 0
            for s in range(nseg):
                total += seg_f[s, qi]
            cat_d = np.empty(total, dtype=np.int32)
            cat_i = np.empty(total, dtype=np.int64)
            p = 0
            for s in range(nseg):
                f = seg_f[s, qi]
                cat_d[p : p + f] = seg_d[s, qi, :f]
                cat_i[p : p + f] = seg_i[s, qi, :f]
                p += f
            tmp_d = np.empty(c, dtype=np.int32)
            tmp_i = np.empty(c, dtype=np.int64)
            _keep_best(cat_d, cat_i, total, c, nbins, tmp_d, tmp_i)
            out_d[qi] = tmp_d
            out_i[qi] = tmp_i
        return out_d, out_i

    def _int8_dot_body(qw: np.ndarray, codes: np.ndarray) -> np.ndarray:
        nq, d = qw.shape
        n = codes.shape[0]
        out = np.empty((nq, n), dtype=np.float32)
        for j in prange(n):  # a plain range where compiled without parallel=True
            row = codes[j]
            for q in range(nq):
                acc = np.float32(0.0)
                qr = qw[q]
                for t in range(d):
                    acc += qr[t] * np.float32(row[t])
                out[q, j] = acc
        return out

    _int8_dot_nb = njit(cache=True, nogil=True, parallel=True, fastmath=True)(_int8_dot_body)
    _int8_dot_inline = njit(nogil=True, fastmath=True, inline="always")(_int8_dot_body)

    @njit(cache=True, nogil=True, fastmath=True)
    def _int8_dot_serial_nb(qw: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The same loop on the calling thread (inside a scan, whose worker threads are the parallelism);
        a function of its own, so that numba's on-disk cache keeps the two compilations apart."""
        return _int8_dot_inline(qw, codes)

    @njit(cache=True, nogil=True, parallel=True, fastmath=True)
    def _gather_dot_nb(qw: np.ndarray, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
        nq, c = cand.shape
        d = qw.shape[1]
        out = np.empty((nq, c), dtype=np.float32)
        for i in prange(nq):
            qr = qw[i]
            for j in range(c):
                row = rows[cand[i, j]]
                acc = np.float32(0.0)
                for t in range(d):
                    acc += qr[t] * np.float32(row[t])
                out[i, j] = acc
        return out


    _DOC_BLOCK = 64  # documents per task of the centroid interaction (one scratch row per task)

    @njit(cache=True, nogil=True)
    def _probe_docs_nb(cents: np.ndarray, indptr: np.ndarray, indices: np.ndarray, dead: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(dead), dtype=np.uint8)
        n = 0
        for c in cents:
            for p in range(indptr[c], indptr[c + 1]):
                d = indices[p]
                if hit[d] == 0 and dead[d] == 0:
                    hit[d] = 1
                    n += 1
        out = np.empty(n, dtype=np.int64)
        k = 0
        for d in range(len(hit)):
            if hit[d]:
                out[k] = d
                k += 1
        return out

    @njit(nogil=True, fastmath=True, inline="always")
    def _max_into(best: np.ndarray, row: np.ndarray) -> None:
        for i in range(len(best)):
            best[i] = max(best[i], row[i])

    @njit(nogil=True, fastmath=True, inline="always")
    def _total(best: np.ndarray) -> np.float32:
        s = np.float32(0.0)
        for i in range(len(best)):
            s += best[i]
        return s

    @njit(cache=True, nogil=True, parallel=True, fastmath=True)
    def _centroid_interaction_nb(sims_t: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                                 docs: np.ndarray) -> np.ndarray:
        nq = sims_t.shape[1]
        n = len(docs)
        out = np.empty(n, dtype=np.float32)
        for b in prange((n + _DOC_BLOCK - 1) // _DOC_BLOCK):
            best = np.empty(nq, dtype=np.float32)
            for j in range(b * _DOC_BLOCK, min(n, (b + 1) * _DOC_BLOCK)):
                d = docs[j]
                best[:] = -np.inf
                for p in range(indptr[d], indptr[d + 1]):
                    _max_into(best, sims_t[indices[p]])
                out[j] = _total(best)
        return out

    # the two kernels below run on the calling thread: the worker threads of MultiVectorIndex._maxsim, one block
    # of token vectors each, are the parallelism
    @njit(cache=True, nogil=True, fastmath=True)
    def _decode_residuals_nb(packed: np.ndarray, assign: np.ndarray, centroids: np.ndarray, lut: np.ndarray,
                             pos: np.ndarray, normalize: bool) -> np.ndarray:
        dim = centroids.shape[1]
        width = packed.shape[1]
        per = lut.shape[1]
        out = np.empty((len(pos), dim), dtype=np.float32)
        for r in range(len(pos)):
            p = pos[r]
            c = centroids[assign[p]]
            x = out[r]
            for b in range(width):
                v = lut[packed[p, b]]
                for e in range(per):
                    x[b * per + e] = v[e] + c[b * per + e]
            if normalize:
                ss = np.float32(0.0)
                for k in range(dim):
                    ss += x[k] * x[k]
                inv = np.float32(1.0) / max(np.float32(np.sqrt(ss)), np.float32(1e-12))
                for k in range(dim):
                    x[k] *= inv
        return out

    @njit(cache=True, nogil=True, fastmath=True)
    def _segment_maxsum_nb(sims: np.ndarray, starts: np.ndarray) -> np.ndarray:
        m, nq = sims.shape
        n = len(starts)
        out = np.empty(n, dtype=np.float32)
        best = np.empty(nq, dtype=np.float32)
        for j in range(n):
            end = starts[j + 1] if j + 1 < n else m
            best[:] = sims[starts[j]]
            for t in range(starts[j] + 1, end):
                _max_into(best, sims[t])
            out[j] = _total(best)
        return out


# --------------------------------------------------------------------------- dispatchers

def topk_block(scores: np.ndarray, offset: int, best_s: np.ndarray, best_i: np.ndarray, row0: int = 0) -> None:
    """Merge ``scores (r, nb)`` (float32 or int32; columns are ids ``offset + j``) into the heaps
    ``row0 .. row0 + r`` of ``best_s/best_i``, on the calling thread (GIL released).

    The heaps start as ``-inf`` / ``-1`` rows; :func:`finalize_topk` sorts them at the end. Without
    numba the block is merged by :func:`topk_merge_ref` (same result, as a heap needs no order).
    """
    r = scores.shape[0]
    if HAVE_NUMBA:
        _topk_block_nb(scores, int(offset), best_s, best_i, int(row0), scores.dtype.kind == "i")
    else:  # pragma: no cover
        bs, bi = best_s[row0 : row0 + r], best_i[row0 : row0 + r]
        topk_merge_ref(scores, offset, bs, bi)
        best_s[row0 : row0 + r], best_i[row0 : row0 + r] = bs, bi


def topk_block_t(scores_t: np.ndarray, offset: int, best_s: np.ndarray, best_i: np.ndarray, row0: int = 0) -> None:
    """:func:`topk_block` for a float32 block laid out documents × queries: ``scores_t (nb, r)``, rows are ids
    ``offset + j``, columns the heaps ``row0 .. row0 + r``."""
    if HAVE_NUMBA:
        _topk_block_t_nb(scores_t, int(offset), best_s, best_i, int(row0))
    else:  # pragma: no cover
        topk_block(np.ascontiguousarray(scores_t.T), offset, best_s, best_i, row0)


def hamming_select(q_words: np.ndarray, codes_t: np.ndarray, dead: np.ndarray, c: int, *,
                   group: int | None = None, segments: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``c`` nearest packed codes per query (distance, id), sorted by distance then id.

    ``group`` (queries sharing one pass over the codes) and ``segments`` (slices of the database
    searched in parallel, then merged) only change how the work is split across threads; the result
    is the same for every choice. ``None`` picks them from the number of queries and threads.
    """
    n = codes_t.shape[1]
    nq = len(q_words)
    dead = np.ascontiguousarray(dead, dtype=np.int64)
    c = int(min(c, n - len(dead)))
    if c <= 0:
        return np.zeros((nq, 0), dtype=np.int32), np.zeros((nq, 0), dtype=np.int64)
    if not HAVE_NUMBA:  # pragma: no cover
        return hamming_select_ref(q_words, codes_t, dead, c)
    threads = numba.get_num_threads()
    if group is None:  # enough tasks for the threads; up to 32 queries share each pass over the codes
        group = max(1, min(32, -(-nq // (2 * threads))))
    ngroups = -(-nq // group)
    if segments is None:  # few queries: split the database instead (each slice ≥ 32k codes)
        segments = max(1, min(-(-2 * threads // ngroups), n // 32768))
    mask = np.zeros(n, dtype=np.uint8)
    mask[dead] = 1
    with numba.parallel_chunksize(1):  # dynamic scheduling: the cores are shared with other work
        return _hamming_select_nb(np.ascontiguousarray(q_words), np.ascontiguousarray(codes_t), mask, c,
                                  int(group), int(max(1, min(segments, n))), _SLICE)


def int8_dot(qw: np.ndarray, codes: np.ndarray, *, parallel: bool = True) -> np.ndarray:
    """``qw (nq, d) float32`` against ``codes (n, d) int8``: float32 ``(nq, n)`` dot products
    (``parallel=False``: on the calling thread)."""
    if HAVE_NUMBA:
        kernel = _int8_dot_nb if parallel else _int8_dot_serial_nb
        return kernel(np.ascontiguousarray(qw, dtype=np.float32), np.ascontiguousarray(codes))
    return int8_dot_ref(qw, codes)  # pragma: no cover


def gather_dot(qw: np.ndarray, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Float queries ``qw (nq, d)`` against the rows ``cand (nq, c)`` of ``rows (n, d)`` (float32 or int8).

    Only the candidate rows are read, so ``rows`` may be a memory map of vectors kept on disk.
    """
    if HAVE_NUMBA and rows.dtype in (np.float32, np.int8):
        return _gather_dot_nb(np.ascontiguousarray(qw, dtype=np.float32), rows, np.ascontiguousarray(cand, dtype=np.int64))
    return gather_dot_ref(qw, rows, cand)


def probe_docs(cents: np.ndarray, indptr: np.ndarray, indices: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """Sorted int64 ids of the live documents in the inverted lists of ``cents`` (see :func:`probe_docs_ref`)."""
    if HAVE_NUMBA:
        return _probe_docs_nb(np.asarray(cents, dtype=np.int64), indptr, indices, np.asarray(dead, dtype=np.uint8))
    return probe_docs_ref(cents, indptr, indices, dead)  # pragma: no cover


def centroid_interaction(sims_t: np.ndarray, indptr: np.ndarray, indices: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """PLAID's centroid interaction for ``docs`` (see :func:`centroid_interaction_ref`), float32."""
    if len(docs) == 0:
        return np.zeros(0, dtype=np.float32)
    if HAVE_NUMBA:
        return _centroid_interaction_nb(np.ascontiguousarray(sims_t, dtype=np.float32), indptr, indices,
                                        np.asarray(docs, dtype=np.int64))
    return centroid_interaction_ref(sims_t, indptr, indices, docs)  # pragma: no cover


def decode_residuals(packed: np.ndarray, assign: np.ndarray, centroids: np.ndarray, lut: np.ndarray,
                     pos: np.ndarray, normalize: bool) -> np.ndarray:
    """Decompressed token vectors at ``pos`` (see :func:`decode_residuals_ref`), on the calling thread;
    ``packed`` and ``assign`` may be memory maps: only the rows at ``pos`` are read."""
    if HAVE_NUMBA:
        return _decode_residuals_nb(packed, assign, np.ascontiguousarray(centroids, dtype=np.float32),
                                    np.ascontiguousarray(lut, dtype=np.float32), np.asarray(pos, dtype=np.int64),
                                    bool(normalize))
    return decode_residuals_ref(packed, assign, centroids, lut, pos, normalize)  # pragma: no cover


def segment_maxsum(sims: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """MaxSim per run of rows of ``sims (tokens, q_tokens)`` (see :func:`segment_maxsum_ref`), float32, on the
    calling thread."""
    if len(starts) and (starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= len(sims)):
        raise ValueError(f"runs must start at row 0 and rise within the {len(sims)} rows of sims")
    if HAVE_NUMBA:
        return _segment_maxsum_nb(np.ascontiguousarray(sims, dtype=np.float32), np.asarray(starts, dtype=np.int64))
    return segment_maxsum_ref(sims, starts)  # pragma: no cover


def set_threads(n: int | None) -> None:
    """Limit numba's worker threads (``None`` leaves the default)."""
    if HAVE_NUMBA and n:
        numba.set_num_threads(int(n))
