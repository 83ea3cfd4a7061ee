"""Datasets: BEIR retrieval sets, STS, NLI, analogies, word similarity, streaming corpora, a registry.

Every loader accepts a registry name (``scifact``, ``stsb``, ``analogies``, ``wordsim353``, ``enwiki``,
``snli``, ``banking77``, ``20newsgroups``, ``agnews``, ``imdb``, ``msmarco-subset``, ``dbpedia-subset``,
``ud-english-ewt``, ``wic``)
or a path. Names resolve through ``$EMBEDSTACK_DATA_DIR``, then the cache, then a verified download
(see :func:`resolve_dataset`).

Example:
    >>> from embedstack.data import sample_retrieval
    >>> ds = sample_retrieval()
    >>> len(ds.doc_texts()) == len(ds.doc_ids())
    True
"""

from embedstack.data._classification import ClassificationDataset, load_classification
from embedstack.data._corpus import iter_texts
from embedstack.data._pairs import NLIDataset, STSDataset, load_nli, load_sts
from embedstack.data._registry import (
    DatasetSpec,
    Download,
    cache_dir,
    data_dir,
    dataset_info,
    get_spec,
    list_datasets,
    register_dataset,
    resolve_dataset,
)
from embedstack.data._retrieval import RetrievalDataset, default_split, load_beir, qrels_splits, read_qrels
from embedstack.data._sample import sample_retrieval, sample_sts
from embedstack.data._tokens import TaggedDataset, WiCDataset, load_conllu, load_wic
from embedstack.data._words import load_analogies, load_word_similarity

__all__ = [
    "ClassificationDataset",
    "DatasetSpec",
    "Download",
    "NLIDataset",
    "RetrievalDataset",
    "STSDataset",
    "TaggedDataset",
    "WiCDataset",
    "cache_dir",
    "data_dir",
    "dataset_info",
    "get_spec",
    "iter_texts",
    "list_datasets",
    "load_analogies",
    "load_beir",
    "qrels_splits",
    "default_split",
    "load_classification",
    "load_conllu",
    "load_nli",
    "load_sts",
    "load_wic",
    "load_word_similarity",
    "read_qrels",
    "register_dataset",
    "resolve_dataset",
    "sample_retrieval",
    "sample_sts",
]
