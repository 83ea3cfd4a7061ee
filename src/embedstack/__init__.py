"""embedstack: the whole history of text embeddings behind one API."""
__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def __getattr__(name: str):  # lazy: `import embedstack` must not import torch
    if name == "load":
        from embedstack.neural.specs import load

        return load
    raise AttributeError(f"module 'embedstack' has no attribute {name!r}")
