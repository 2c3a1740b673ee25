"""asv: peak memory (``peakmem_``) of building each adapter's largest stores from nothing, and of
searching them: what a process needs for 10k and 100k items."""

from __future__ import annotations

import os
import shutil
import tempfile

from . import _stores

_TITLES = {"lmdb": "LMDB", "duckdb": "DuckDB", "kuzu": "Kuzu", "tinydb": "TinyDB", "networkx": "NetworkX",
           "faiss": "FAISS", "chroma": "Chroma"}


class _Memory:
    backend = ""
    param_names = ["items"]
    timeout = 900
    setup_cache = staticmethod(_stores.build_stores)

    def peakmem_build(self, root: str, items: int) -> None:
        folder = tempfile.mkdtemp(prefix="memsys-asv-peak-", dir=os.getcwd())
        try:
            store = _stores.open_store(self.backend, folder)
            _stores.fill(store, self.backend, items)
            store.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def peakmem_open_and_search(self, root: str, items: int) -> None:
        store = _stores.opened(root, self.backend, items, writes=False)
        store.search({"memory_type": "KNOWLEDGE", "limit": 10})


def _classes() -> dict[str, type]:
    made: dict[str, type] = {}
    for backend in _stores.BACKENDS:
        name = f"{_TITLES[backend]}Memory"
        large = [s for s in _stores.sizes(backend) if s >= 10_000] or _stores.sizes(backend)[-1:]
        made[name] = type(name, (_Memory,), {"backend": backend, "params": [large], "__module__": __name__,
                                             "__qualname__": name})
    return made


globals().update(_classes())
