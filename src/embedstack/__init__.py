"""embedstack: the whole history of text embeddings behind one API.

Example:
    >>> import embedstack
    >>> enc = embedstack.load("bm25")  # any model SPEC: bm25, lsa:256, word2vec:PATH, a folder, a model name
    >>> enc.k1
    1.2
"""
__version__ = "0.1.0"
__all__ = ["__version__", "load", "similarity"]


def __getattr__(name: str):  # lazy: `import embedstack` must not import numpy or torch
    if name == "load":
        from embedstack.models import load

        return load
    if name == "similarity":
        from embedstack._similarity import similarity

        return similarity
    raise AttributeError(f"module 'embedstack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "load", "similarity"])
