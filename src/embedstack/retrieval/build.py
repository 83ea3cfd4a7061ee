"""Build a searchable index folder from a corpus and a model SPEC, and open folders as pipelines.

``build_index`` fits the encoder if it needs a corpus (counting models), encodes the documents,
stores vectors, texts and metadata, records the encoder identity and — for encoders that are
embedstack components (BM25, TF-IDF, LSA ...) — saves the fitted encoder inside the folder, so that
``open_pipeline(folder)`` can answer text queries with nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import ConfigError, DatasetError
from embedstack.index.store import ENCODER_DIR, encoder_identity, load_index, resolve_alias

__all__ = ["read_corpus", "build_index", "open_pipeline", "load_encoder_for"]

Progress = Callable[[str, int, int], None]


def _noop(stage: str, done: int, total: int) -> None:
    return None


def _jsonl_docs(path: Path, encoding: str, errors: str) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
    from embedstack.data._retrieval import read_jsonl_records

    for line_no, rec in read_jsonl_records(path, encoding=encoding, errors=errors):
        doc_id = rec.pop("_id", rec.pop("id", None))
        if doc_id is None:
            doc_id = str(line_no - 1)
        text = (str(rec.pop("title", "") or "") + " " + str(rec.pop("text", "") or "")).strip()
        yield str(doc_id), text, (rec or None)


def read_corpus(source: str | os.PathLike[str], *, encoding: str = "utf-8", errors: str = "strict",
                ) -> tuple[list[str], list[str], list[dict[str, Any] | None]]:
    """Ids, texts and metadata of a corpus.

    ``source`` is a BEIR folder or dataset name (``corpus.jsonl``: ``_id``, ``title``, ``text``, other
    fields become metadata), a ``.jsonl`` file of the same shape, or any text source readable by
    :func:`embedstack.data.iter_texts` (one document per line; ids are line numbers from 0).
    ``encoding``/``errors`` are those of :func:`embedstack.data.iter_texts` (``--encoding``/``--errors``).
    """
    from embedstack.data._io import check_encoding, check_errors

    check_errors(errors)
    check_encoding(encoding)
    path = Path(source).expanduser()
    if not path.exists():
        from embedstack.data import resolve_dataset

        path = resolve_dataset(str(source))
    if path.is_dir() and any((path / n).is_file() for n in ("corpus.jsonl", "corpus.jsonl.gz")):
        path = next(path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).is_file())
    ids: list[str] = []
    texts: list[str] = []
    metas: list[dict[str, Any] | None] = []
    if path.is_file() and (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
        for doc_id, text, meta in _jsonl_docs(path, encoding, errors):
            ids.append(doc_id)
            texts.append(text)
            metas.append(meta)
    else:
        from embedstack.data import iter_texts

        for i, text in enumerate(iter_texts(path, encoding=encoding, errors=errors)):
            ids.append(str(i))
            texts.append(text)
            metas.append(None)
    if not ids:
        raise DatasetError(f"the corpus {source} holds no documents.")
    return ids, texts, metas


def build_index(texts: Sequence[str], ids: Sequence[str], encoder: Any, *, spec: str,
                index: str = "flat", metadata: Sequence[dict[str, Any] | None] | None = None,
                out: str | os.PathLike[str] | None = None, batch_size: int = 64,
                progress: Progress | None = None, chunk: int = 4096, force: bool = False) -> Any:
    """Encode ``texts`` with ``encoder`` into a new index (saved to ``out`` when given).

    Args:
        texts, ids, metadata: the documents.
        encoder: an encoder resolved from ``spec`` (fitted here if it needs a corpus).
        spec: the model SPEC, recorded in the manifest so the encoder can be resolved again.
        index: an :func:`embedstack.index.from_spec` spec for dense encoders (sparse encoders always
            get a :class:`~embedstack.index.SparseIndex`).
        out: folder to save to (atomically); checked before encoding: it must be absent, empty or a
            saved index unless ``force=True``.
    """
    from embedstack.index import SparseIndex, from_spec
    from embedstack.models import needs_fit

    progress = progress or _noop
    if out is not None:  # refuse a foreign folder before the encoding work, not after it
        from embedstack.index.store import INDEX_KIND, real_path
        from embedstack.io import check_output

        check_output(real_path(out), kind=INDEX_KIND, force=force)
    n = len(texts)
    if needs_fit(encoder):
        progress("fit", 0, 1)
        encoder.fit(list(texts))
        progress("fit", 1, 1)
    sparse = callable(getattr(encoder, "encode_sparse", None))
    multi = not sparse and callable(getattr(encoder, "encode_tokens", None)) and not callable(getattr(encoder, "encode", None))
    if not sparse and not multi and not callable(getattr(encoder, "encode", None)):
        raise ConfigError(f"{type(encoder).__name__} from {spec!r} is neither a dense, a sparse nor a multi-vector "
                          "encoder.")
    idx: Any = None
    progress("encode", 0, n)
    for s in range(0, n, chunk):
        part = list(texts[s : s + chunk])
        if multi:
            from embedstack.index import multivector_from_spec

            def per_text(d: int, s: int = s) -> None:
                progress("encode", s + d, n)

            vecs = encoder.encode_tokens(part, role="document", batch_size=batch_size, progress=per_text)
            if idx is None:
                idx = multivector_from_spec(index, dim=int(encoder.dim), model=spec)
        elif sparse:
            vecs = encoder.encode_sparse(part, role="document")
            if idx is None:
                if index not in ("flat", "sparse"):
                    raise ConfigError(f"{spec!r} is a sparse model: it gets an inverted index; drop the index option {index!r}.")
                idx = SparseIndex(int(vecs.shape[1]))
        else:
            from embedstack.base import progress_kwargs


            def per_slice(d: int, s: int = s) -> None:
                progress("encode", s + d, n)

            per_batch = progress_kwargs(encoder.encode, per_slice)
            vecs = np.asarray(encoder.encode(part, role="document", batch_size=batch_size, **per_batch),
                              dtype=np.float32)
            if idx is None:
                idx = from_spec(index, dim=int(vecs.shape[1]))
        idx.add(vecs, list(ids[s : s + chunk]), texts=part,
                metadata=None if metadata is None else list(metadata[s : s + chunk]))
        progress("encode", min(n, s + chunk), n)
    if idx is None:
        raise DatasetError("no documents to index.")
    if multi and hasattr(idx, "train"):
        idx.train()  # centroids for the candidate stage (and, for plaid, the compression) before saving
    idx.encoder = encoder_identity(encoder, spec)
    if out is not None:
        saveable = callable(getattr(encoder, "save", None)) and bool(getattr(encoder, "type_name", ""))
        idx.save(out, encoder=encoder if saveable else None, force=force)
    return idx


def load_encoder_for(folder: str | os.PathLike[str], index: Any) -> Any:
    """The encoder that built the index in ``folder``: its saved copy, else its SPEC resolved again."""
    real = resolve_alias(folder)
    if (real / ENCODER_DIR).is_dir():
        from embedstack.registry import load_component

        return load_component(real / ENCODER_DIR)
    spec = (index.encoder or {}).get("spec")
    if not spec:
        raise ConfigError(f"{folder} records no encoder SPEC; pass the encoder yourself (Pipeline/Retriever).")
    from embedstack.models import resolve

    return resolve(spec)


def open_pipeline(folders: Sequence[str | os.PathLike[str]], *, fusion: Any = None, reranker: Any = None,
                  candidates: int = 100, mmap: bool = True, verify: bool | None = None,
                  rerank_top: int | None = None, rerank_fusion: Any = None) -> Any:
    """A :class:`~embedstack.retrieval.Pipeline` over saved index folders (hybrid when several).

    ``verify`` as in :func:`embedstack.index.load_index` (``False`` skips hashing a huge index).
    """
    from embedstack.retrieval.pipeline import Pipeline, Retriever

    if isinstance(folders, str | os.PathLike):
        folders = [folders]
    retrievers: list[Any] = []
    for f in folders:
        index = load_index(f, mmap=mmap, verify=verify)
        encoder = load_encoder_for(f, index)
        base = (index.encoder or {}).get("name") or Path(f).name
        name = base
        j = 2
        while any(r.name == name for r in retrievers):
            name = f"{base}#{j}"
            j += 1
        retrievers.append(Retriever(name, encoder, index))
    return Pipeline(retrievers, fusion=fusion, reranker=reranker, candidates=candidates, rerank_top=rerank_top,
                    rerank_fusion=rerank_fusion)
