"""TinyDB's snapshot is replaced atomically: when the disk fills up in the middle of a compaction
(the rewrite of the whole snapshot), the old snapshot and the journal are left intact and every
acknowledged write is there after a reopen. A snapshot rewritten in place would be half-written."""

from __future__ import annotations

import logging
import os

from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.domain.errors import DiskFullError
from memsys.testing import sample_item
from memsys.testing.disk import fill


def test_a_compaction_that_runs_out_of_disk_keeps_every_acknowledged_write(small_disk, caplog) -> None:
    path = os.path.join(small_disk, "memory.json")
    journal = path + ".journal"
    store = TinyDBMemoryAdapter(path=path, compact_bytes=0)  # compact whenever the journal outgrows the snapshot
    for i in range(100):
        store.store(sample_item(i, content="s" * 2000))
    store.compact()
    snapshot = os.path.getsize(path)
    assert snapshot > 200_000 and os.path.getsize(journal) < 4096
    ballast = fill(small_disk, leave=snapshot + (64 << 10))  # room for the journal, not for a new snapshot
    acknowledged = list(range(100))
    caplog.set_level(logging.CRITICAL)  # the failed compaction's warning is expected here
    try:
        for i in range(100, 400):
            try:
                store.store(sample_item(i, content="j" * 2000))
            except DiskFullError:
                break
            acknowledged.append(i)
            if os.path.getsize(journal) > snapshot:
                break  # the journal outgrew the snapshot: this write tried (and failed) to compact
        assert os.path.getsize(journal) > snapshot, "no compaction was attempted on the full disk"
        assert len(acknowledged) > 100
    finally:
        os.unlink(ballast)
        store.close()
    reopened = TinyDBMemoryAdapter(path=path, compact_bytes=0)
    try:
        assert sorted(int(item.id.split("-")[1]) for item in reopened.search({})) == acknowledged
        reopened.store(sample_item(999))  # and with space back, compaction goes on
    finally:
        reopened.close()
