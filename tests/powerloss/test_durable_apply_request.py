"""A store opened with ``sync=False`` relies on the coordinator log for durability. A manager
without a transaction log has no such log, so it asks each store for a durable apply: that request
must win over the store's own ``sync=False``, or an acknowledged write is lost at a power failure.
"""

from __future__ import annotations

import os

import pytest

from memsys import MemoryItem, MemoryManager, MemoryType
from memsys.testing.crash import BACKENDS, MANAGED, open_store

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_manager_without_a_log_makes_each_acknowledged_write_durable_on_unsynced_stores(plfs, backend) -> None:
    folder = os.path.join(plfs.mount_point, "stores")
    os.makedirs(folder)
    assert MANAGED[backend].get("sync", True) is False or backend in ("kuzu", "chroma")
    manager = MemoryManager({backend: open_store(backend, folder)})  # no transaction_log: no log to rely on
    try:
        for n in range(3):
            manager.store(MemoryItem(id=f"note-{n}", content=f"acknowledged {n}", memory_type=MemoryType.KNOWLEDGE))
        plfs.power_failure()
    finally:
        # The process "died" with the power: drop the stores as they are, no flush.
        for adapter in manager.adapters.values():
            adapter._coordinator = None
            adapter.close()
    reopened = open_store(backend, folder)
    try:
        assert {n: (got.content if (got := reopened.retrieve(f"note-{n}")) else None) for n in range(3)} == \
            {n: f"acknowledged {n}" for n in range(3)}
    finally:
        reopened.close()
