"""Vector search: exact and quantised flat indexes, HNSW, sparse, multi-vector, fusion, persistence."""
