"""Retrieval: documents (``documents``), chunking, embeddings (MiniLM, torch or ONNX), ingestion into
pgvector with a full-text index (``ingestion``), hybrid search (``retrieval``), retrieval evaluation
(``evaluation``) and the HTTP schemas (``schemas``).

May import ``models`` (the registry's MLflow client) and ``platform``.
"""
