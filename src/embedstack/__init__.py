"""embedstack: the whole history of text embeddings behind one API."""
__version__ = "0.1.0"
__all__ = ["__version__"]
