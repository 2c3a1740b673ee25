"""Adapters: one module per backend, each imported only when its class is used.

``from memsys.adapters import LMDBMemoryAdapter`` imports memsys' LMDB module,
and the lmdb library is imported when the adapter is constructed; a missing
library raises MissingBackend naming the extra to install.
"""

from __future__ import annotations

from memsys._lazy import lazy_exports

from typing import TYPE_CHECKING

_EXPORTS = {
    "TinyDBMemoryAdapter": "memsys.adapters.tinydb_store",
    "GraphMemoryAdapter": "memsys.adapters.networkx_store",
    "FAISSVectorStore": "memsys.adapters.faiss_store",
    "ChromaDBVectorStore": "memsys.adapters.chroma_store",
    "KuzuMemoryAdapter": "memsys.adapters.kuzu_store",
    "LMDBMemoryAdapter": "memsys.adapters.lmdb_store",
    "DuckDBMemoryAdapter": "memsys.adapters.duckdb_store",
    "InMemoryStore": "memsys.adapters.memory_store",
    "BaseMemoryStore": "memsys.adapters._base",
    "VectorStoreBase": "memsys.adapters._vector",
    "GraphStoreBase": "memsys.adapters._graph",
    "HashingEmbedder": "memsys.adapters.embedders",
    "SentenceTransformerEmbedder": "memsys.adapters.embedders",
}

#: The seven real backends by short name, as the CLI and the chaos runner name them.
BACKENDS = {
    "tinydb": "TinyDBMemoryAdapter",
    "networkx": "GraphMemoryAdapter",
    "faiss": "FAISSVectorStore",
    "chroma": "ChromaDBVectorStore",
    "kuzu": "KuzuMemoryAdapter",
    "lmdb": "LMDBMemoryAdapter",
    "duckdb": "DuckDBMemoryAdapter",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from memsys.adapters._base import BaseMemoryStore
    from memsys.adapters.chroma_store import ChromaDBVectorStore
    from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
    from memsys.adapters.embedders import HashingEmbedder, SentenceTransformerEmbedder
    from memsys.adapters.faiss_store import FAISSVectorStore
    from memsys.adapters.kuzu_store import KuzuMemoryAdapter
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.adapters.memory_store import InMemoryStore
    from memsys.adapters.networkx_store import GraphMemoryAdapter
    from memsys.adapters.tinydb_store import TinyDBMemoryAdapter


__getattr__ = lazy_exports(__name__, _EXPORTS)


def adapter_class(backend: str) -> type:
    """The adapter class for a backend short name ('lmdb', 'chroma', ...)."""
    try:
        return __getattr__(BACKENDS[backend])
    except KeyError:
        raise KeyError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}") from None
