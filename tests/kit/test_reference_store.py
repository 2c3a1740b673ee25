"""The in-memory reference store passes every contract: it is the model the others are held to."""

from __future__ import annotations

from memsys.adapters.memory_store import InMemoryStore
from memsys.testing import GraphStoreContract, VectorStoreContract


class TestInMemoryReference(VectorStoreContract, GraphStoreContract):
    def create_store(self, path):
        return InMemoryStore(path=path, dimension=32)
