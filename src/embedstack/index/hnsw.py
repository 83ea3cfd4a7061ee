"""Approximate nearest neighbours with an HNSW graph: usearch (default) or faiss behind one index class.

Two backends, one API (user string ids, tombstones, atomic checksummed folders, ``search``/``search_ids``):

* ``backend="usearch"`` (default): a removed document leaves the graph at once, a saved graph opens
  as a read-only memory map (``view``) in milliseconds, and ``dtype`` picks f32 / f16 / bf16 / i8
  storage with usearch's SIMD kernels (AVX-512 BF16, VNNI where the CPU has them).
  ``dtype="i8", rescore="float"`` walks an int8 graph (a quarter of the bytes per distance) for
  ``k × oversample`` candidates and rescores them with the float32 rows, which stay on disk
  (memory-mapped on load; only candidate rows are read).
* ``backend="faiss"``: faiss ``IndexHNSWFlat`` (f32) or ``IndexHNSWSQ`` (f16 / bf16 codes). Which graph is
  fastest at a million vectors depends on the CPU (``benchmarks/hnsw_1m.py``, BENCHMARKS.md; 2 cores, 1M ×
  384 power-law vectors, M=16, ef 768, recall@10 ≥ 0.95, against faiss ``IndexHNSWFlat``): on both AMD
  EPYCs measured (with and without AVX-512) ``dtype="f16"`` answered 1.24–1.35× its queries/s (1.24× in
  ``hnsw_1m_zen4``, with every build timed 5 times) and built in 0.66–0.79× its time, where usearch's int8
  graph + rescoring gave 0.77–1.01×; on an Intel Xeon with AMX the int8 graph gave 1.26× and
  ``dtype="f16"`` 0.99×. The f16 gain is the halved storage, not a faster kernel: faiss's own
  ``IndexHNSWSQ(QT_fp16)`` is as fast. What it costs against usearch: faiss cannot unlink a node, so
  removed documents stay in the graph as tombstones every search skips (a bitmap selector on the walk)
  until :meth:`~HNSWIndex.compact` rebuilds it; a loaded index memory-maps the stored vectors and the
  links (``IO_FLAG_MMAP_IFC``) but reads each node's offsets and level into memory (12 bytes per vector);
  no int8 storage.

Parameters map one to one: ``M`` → usearch ``connectivity`` / faiss ``M``, ``ef_construction`` →
``expansion_add`` / ``efConstruction``, ``ef`` → ``expansion_search`` / ``efSearch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embedstack._extras import require
from embedstack._threads import faiss_threads
from embedstack._validation import check_choice, check_int
from embedstack.errors import ConfigError, FormatError, IndexStateError
from embedstack.index._base import BaseIndex, prepare_rows
from embedstack.registry import register

__all__ = ["HNSWIndex"]

GRAPH_FILE = "hnsw.usearch"
FAISS_GRAPH_FILE = "hnsw.faiss"
_METRICS = {"cosine": "cos", "ip": "ip", "l2": "l2sq"}
_FAISS_SQ = {"f16": "QT_fp16", "bf16": "QT_bf16"}  # faiss ScalarQuantizer types (no training needed)


@register("HNSWIndex", module="embedstack.index")
class HNSWIndex(BaseIndex):
    """HNSW graph index (usearch, or faiss with ``backend="faiss"``) with user string ids, tombstones and
    atomic persistence.

    Args:
        dim: vector dimensionality.
        metric: ``"cosine"``, ``"ip"`` or ``"l2"`` (scores: cosine similarity, inner product,
            negative Euclidean distance).
        M: graph degree (usearch ``connectivity``); higher = better recall, more memory.
        ef_construction: candidate list size while inserting (``expansion_add``).
        ef: candidate list size while searching (``expansion_search``); raise it for recall.
        dtype: stored scalar type: ``"f32"``, ``"f16"``, ``"bf16"`` (fastest build on CPUs with
            AVX-512 BF16) or ``"i8"`` (smallest; lower recall ceiling on anisotropic vectors).
        threads: worker threads for add/search (0 = all cores).
        rescore: ``"float"``: keep the float32 vectors beside the graph and rescore the graph's
            ``k × oversample`` candidates with them (for ``dtype`` i8 / f16 / bf16); None: graph scores.
        oversample: graph candidates per result rescored (with ``rescore``).
        backend: ``"usearch"`` (default: deletes remove nodes from the graph, the whole graph opens
            as a memory map) or ``"faiss"`` (``IndexHNSWFlat`` for f32, ``IndexHNSWSQ`` for f16 / bf16;
            faster at a million vectors on the AMD EPYC measured in BENCHMARKS.md). With faiss,
            removed documents stay in the graph as tombstones that searches skip (a filter on the
            walk) until :meth:`compact` rebuilds it, and a loaded index memory-maps the stored vectors
            and links but reads each node's offsets and level into memory. No ``dtype="i8"`` with faiss.

    Example:
        >>> import numpy as np
        >>> idx = HNSWIndex(8, M=8)
        >>> _ = idx.add(np.eye(8, dtype=np.float32), [str(i) for i in range(8)])
        >>> idx.search(np.eye(8, dtype=np.float32)[:1], k=1)[0][0].id
        '0'
    """

    def __init__(self, dim: int, *, metric: str = "cosine", M: int = 16, ef_construction: int = 128,
                 ef: int = 64, dtype: str = "f32", threads: int = 0, rescore: str | None = None,
                 oversample: int = 4, backend: str = "usearch") -> None:
        self.backend = backend
        self.M = M
        self.ef_construction = ef_construction
        self.ef = ef
        self.dtype = dtype
        self.threads = threads
        self.rescore = rescore
        self.oversample = oversample
        super().__init__(dim, metric=metric)
        self._index: Any = None
        self._view = False
        self._vec: np.ndarray | None = None  # float32 rows for rescoring (normalised for cosine)
        self._pending: list[np.ndarray] = []
        self._allowed: Any = None  # faiss: the live-row selector (and its bitmap), rebuilt after changes

    def _check_params(self) -> None:
        super()._check_params()
        check_int(self, "M", self.M, low=2, high=512)
        check_int(self, "ef_construction", self.ef_construction, low=1)
        check_int(self, "ef", self.ef, low=1)
        check_choice(self, "dtype", self.dtype, ("f32", "f16", "bf16", "i8"))
        check_int(self, "threads", self.threads, low=0)
        if self.rescore is not None:
            check_choice(self, "rescore", self.rescore, ("float",))
        check_int(self, "oversample", self.oversample, low=1)
        check_choice(self, "backend", self.backend, ("usearch", "faiss"))
        if self.backend == "faiss" and self.dtype == "i8":
            raise ConfigError("HNSWIndex(backend='faiss') stores dtype 'f32', 'f16' or 'bf16', not 'i8'; "
                              "pass one of those as dtype, or backend='usearch' for an int8 graph.",
                              param=("dtype", "The 'dtype' parameter of HNSWIndex"))

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "M": self.M, "ef_construction": self.ef_construction, "ef": self.ef,
                  "dtype": self.dtype, "threads": self.threads, "rescore": self.rescore, "oversample": self.oversample}
        if self.backend != "usearch":  # a usearch folder stays loadable by releases that predate backends
            config["backend"] = self.backend
        return config

    @property
    def quantization(self) -> str:  # type: ignore[override]
        return {"f32": "none", "f16": "fp16", "bf16": "bf16", "i8": "int8"}[self.dtype]

    def _faiss(self) -> Any:
        return require("faiss", "index", "HNSWIndex(backend='faiss')")

    @property
    def _graph_file(self) -> str:
        return FAISS_GRAPH_FILE if self.backend == "faiss" else GRAPH_FILE

    def _new(self) -> Any:
        if self.backend == "faiss":
            faiss = self._faiss()
            metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
            if self.dtype == "f32":
                index = faiss.IndexHNSWFlat(self.dim, self.M, metric)
            else:
                index = faiss.IndexHNSWSQ(self.dim, getattr(faiss.ScalarQuantizer, _FAISS_SQ[self.dtype]), self.M, metric)
            index.hnsw.efConstruction = self.ef_construction
            return index
        usearch = require("usearch.index", "index", "HNSWIndex")
        return usearch.Index(ndim=self.dim, metric=_METRICS[self.metric], dtype=self.dtype,
                             connectivity=self.M, expansion_add=self.ef_construction, expansion_search=self.ef)

    def _writable(self) -> Any:
        if self._index is None:
            self._index = self._new()
        elif self._view:  # a memory-mapped view is read-only
            if self.backend == "faiss":
                faiss = self._faiss()
                self._index = faiss.deserialize_index(faiss.serialize_index(self._index))
            else:
                self._index = self._index.copy()
            self._view = False
        return self._index

    def _graph_add(self, index: Any, start: int, vectors: np.ndarray) -> None:
        """Add ``vectors`` to the graph as internal ids ``start, start + 1, ...``; for faiss they are rows as
        stored (:func:`prepare_rows` already applied: a compaction re-adds decoded rows unchanged)."""
        if self.backend == "faiss":  # faiss numbers rows 0, 1, ... in insertion order: our internal ids
            if index.ntotal != start:
                raise IndexStateError(f"the faiss graph holds {index.ntotal} rows but the index {start} ids; "
                                      "rebuild it from its vectors (nothing was added).")
            with faiss_threads(self.threads):
                index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            self._allowed = None
        else:
            index.add(np.arange(start, start + len(vectors), dtype=np.uint64), vectors, threads=self.threads)

    def _append(self, vectors: np.ndarray) -> None:
        # rows as stored, computed once: faiss's graph and the float rows for rescoring (usearch normalises itself)
        rows = prepare_rows(vectors, self.metric) if self.backend == "faiss" or self.rescore is not None else vectors
        self._graph_add(self._writable(), len(self._ids), rows if self.backend == "faiss" else vectors)
        if self.rescore is not None:
            self._pending.append(rows)

    def _float_rows(self) -> np.ndarray:
        if self._pending:
            with self._fold_lock:
                if self._pending:
                    parts = ([] if self._vec is None or len(self._vec) == 0 else [np.asarray(self._vec)]) + self._pending
                    self._vec = np.concatenate(parts) if len(parts) > 1 else parts[0]
                    self._pending = []
        if self._vec is None:
            self._vec = np.zeros((0, self.dim), dtype=np.float32)
        return self._vec

    def _on_remove(self, iid: int) -> None:
        if self.backend == "faiss":
            self._allowed = None  # a tombstone: the walk skips it (see _faiss_search)
        else:
            self._writable().remove(iid)

    def _faiss_selector(self) -> Any:
        """A faiss ``IDSelectorBitmap`` of the live rows (kept with its bitmap), None if none is removed."""
        if not self._n_dead:
            return None
        with self._fold_lock:
            if self._allowed is None:
                faiss = self._faiss()
                bits = np.packbits(~self._dead, bitorder="little")
                self._allowed = (faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits)  # n: bitmap bytes
            return self._allowed[0]

    def _faiss_search(self, queries: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = self._faiss()
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef, kk)
        sel = self._faiss_selector()
        if sel is not None:
            params.sel = sel
        with faiss_threads(self.threads):
            dist, ids = self._index.search(prepare_rows(queries, self.metric), kk, params=params)
        scores = -np.sqrt(np.maximum(dist, 0.0)) if self.metric == "l2" else dist
        return np.where(ids >= 0, scores, -np.inf).astype(np.float32), ids.astype(np.int64)

    def _search_ids(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        kk = k if self.rescore is None else min(len(self._ids), k * self.oversample)
        if self.backend == "faiss":
            scores, ids = self._faiss_search(queries, kk)
            return (scores, ids, {}) if self.rescore is None else self._rescore_candidates(queries, ids, k)
        index = self._index
        index.expansion_search = max(self.ef, kk)
        res = index.search(queries, kk, threads=self.threads)
        keys = np.asarray(res.keys).reshape(len(queries), -1)
        dist = np.asarray(res.distances, dtype=np.float32).reshape(len(queries), -1)
        counts = np.asarray(getattr(res, "counts", [len(np.asarray(res.keys))])).reshape(-1)
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        ids = np.where(valid, keys.astype(np.int64), -1)
        if self.dtype == "i8" and self.metric != "cosine":
            # usearch's int8 "ip" and "l2sq" are in code units (x rounded to x·127): -q·x and |q-x|², ×127²
            dist = dist / np.float32(127.0 * 127.0)
            if self.metric == "ip":
                dist = dist + 1.0  # as 1 - q·x for the line below
        scores = -np.sqrt(np.maximum(dist, 0.0)) if self.metric == "l2" else 1.0 - dist
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        if self.rescore is None:
            return scores, ids, {}
        return self._rescore_candidates(queries, ids, k)

    def _rescore_candidates(self, queries: np.ndarray, cand: np.ndarray, k: int
                            ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Float32 scores of the graph's candidates (``-1`` pads), best ``k`` per query."""
        from embedstack.index._scan import rescore_topk

        s, i = rescore_topk(prepare_rows(queries, self.metric), self._float_rows(), cand, k, l2=self.metric == "l2")
        return s, i, {}

    def set_ef(self, ef: int) -> HNSWIndex:
        """Change the search-time candidate list size; return self."""
        self.ef = int(check_int(self, "ef", ef, low=1))  # type: ignore[arg-type]
        return self

    def _compact_rows(self, keep: np.ndarray) -> None:
        old = self._index
        self._index = self._new()
        self._view = False
        if self.rescore is not None:  # rebuild from the float rows, not from the graph's lossy copies
            self._vec = np.ascontiguousarray(self._float_rows()[keep])
        if len(keep):
            if self._vec is not None and self.rescore is not None:
                vectors = self._vec
            elif self.backend == "faiss":  # stored rows (f16 / bf16 codes decode exactly), re-added as they were
                vectors = old.reconstruct_batch(keep.astype(np.int64))
            else:
                vectors = np.asarray(old.get(keep.astype(np.uint64)), dtype=np.float32).reshape(len(keep), self.dim)
            self._graph_add(self._index, 0, vectors)
        self._allowed = None

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self._float_rows()} if self.rescore is not None else {}

    def nbytes(self) -> int:
        """Bytes of the graph and its vectors as saved (usearch's memory use also counts reserved capacity),
        plus the float32 rows kept for rescoring."""
        return self.memory_bytes() + (int(self._float_rows().nbytes) if self.rescore is not None else 0)

    def memory_bytes(self) -> int:
        """Bytes of the graph (the first stage; rescoring rows are read only for candidates)."""
        if self._index is None:
            return 0
        if self.backend == "faiss":  # stored codes + level-0 and upper links + per-node offsets and levels
            h = self._index.hnsw
            return int(self._index.ntotal * self._index.storage.sa_code_size()
                       + 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size())
        return int(self._index.serialized_length)

    def _write_extra(self, folder: Path) -> None:
        index = self._index if self._index is not None else self._new()
        if self.backend == "faiss":
            self._faiss().write_index(index, str(folder / self._graph_file))
        else:
            index.save(str(folder / self._graph_file))

    def _restore(self, arrays: dict[str, np.ndarray], state: dict[str, Any], folder: Path, mmap: bool) -> None:
        path = str(folder / self._graph_file)
        self._allowed = None
        if self.backend == "faiss":  # IO_FLAG_MMAP_IFC: vectors and links stay on disk, paged in when read
            faiss = self._faiss()
            self._index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC if mmap else 0)
            if self._index.ntotal != len(self._ids):
                raise FormatError(f"{folder}: the faiss graph holds {self._index.ntotal} rows for {len(self._ids)} "
                                  "documents; the folder is damaged.")
        else:
            self._index = self._new()
            if mmap:
                self._index.view(path)
            else:
                self._index.load(path)
        self._view = mmap
        self._vec = np.asarray(arrays["vectors"]) if "vectors" in arrays else None
        self._pending = []
