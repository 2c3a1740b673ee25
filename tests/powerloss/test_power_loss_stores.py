"""Power loss under memsys' stores: nothing acknowledged is lost, and the checks notice when it is.

The two seeded breaks here are the ones SIGKILL cannot catch (the page cache survives a killed
process): the coordinator log's appends never fsynced, and the LMDB adapter never fsyncing.
"""

from __future__ import annotations

import contextlib
import os
import types

import pytest

import memsys.adapters.lmdb_store as lmdb_store
import memsys.application.txlog as txlog
import memsys.durable as durable
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.domain.errors import MemsysError
from memsys.domain.model import MemoryItem, MemoryType
from memsys.testing.plugin import skip_server_unavailable
from memsys.testing.powerloss import PowerLossUnavailable, run_power_loss_experiment

pytestmark = pytest.mark.server


class _OsWithoutFsync(types.SimpleNamespace):
    """``os`` as a module sees it after the break: fsync returns at once and syncs nothing."""

    def __getattr__(self, name: str):
        return getattr(os, name)

    @staticmethod
    def fsync(fd: int) -> None:
        return None


def _experiment(folder, seed: int, transactions: int = 6) -> dict:
    try:
        return run_power_loss_experiment(folder, seed=seed, transactions=transactions, power_failures=2)
    except PowerLossUnavailable as exc:
        skip_server_unavailable(f"power-loss filesystem: {exc}")


@pytest.mark.parametrize("seed", [1, 4])
def test_no_acknowledged_transaction_is_lost_across_power_failures(tmp_path, seed):
    result = _experiment(tmp_path, seed)
    assert result["ok"], result
    assert result["acknowledged"] >= 3 and result["power_failures"] == 3


def test_coordinator_log_appends_never_fsynced_lose_acknowledged_transactions(tmp_path, monkeypatch):
    # The break, as seen from the coordinator log's code only: its fsyncs do nothing.
    monkeypatch.setattr(durable, "os", _OsWithoutFsync())
    monkeypatch.setattr(txlog, "os", _OsWithoutFsync())
    result = _experiment(tmp_path, seed=1)
    assert not result["ok"]
    assert result["lost"] or result["partial"], result


def _items(n: int) -> list[MemoryItem]:
    return [MemoryItem(id=f"item-{i}", content=f"content {i}", memory_type=MemoryType.EPISODIC) for i in range(n)]


def _lmdb_acknowledged_after_power_failure(plfs, count: int = 5) -> tuple[int, str | None]:
    """Store ``count`` items one call each in a sync=True LMDB adapter on the mount, cut the power,
    reopen: how many acknowledged items are still there (or why the store refused to open)."""
    path = os.path.join(plfs.mount_point, "lmdb")
    adapter = LMDBMemoryAdapter(path=path, sync=True)
    for item in _items(count):
        adapter.store(item)
    plfs.power_failure()
    with contextlib.suppress(Exception):  # the process died with the power: its closes hit a dead mount
        adapter.close()
    try:
        reopened = LMDBMemoryAdapter(path=path, sync=True)
    except MemsysError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    try:
        return sum(reopened.retrieve(item.id) is not None for item in _items(count)), None
    finally:
        reopened.close()


def test_lmdb_with_sync_keeps_every_acknowledged_write(plfs):
    assert _lmdb_acknowledged_after_power_failure(plfs) == (5, None)


class _LmdbNeverSyncing:
    """The lmdb module as the adapter sees it after the break: environments open with sync off."""

    def __init__(self, module) -> None:
        self._module = module

    def __getattr__(self, name: str):
        return getattr(self._module, name)

    def open(self, path, **options):
        return self._module.open(path, **{**options, "sync": False, "metasync": False})


def test_lmdb_adapter_never_fsyncing_loses_acknowledged_writes(plfs, monkeypatch):
    real_import = lmdb_store.import_backend

    def import_backend(module: str, *args, **kwargs):
        loaded = real_import(module, *args, **kwargs)
        return _LmdbNeverSyncing(loaded) if module == "lmdb" else loaded

    monkeypatch.setattr(lmdb_store, "import_backend", import_backend)
    survived, refused = _lmdb_acknowledged_after_power_failure(plfs)
    assert survived < 5 or refused, "acknowledged writes survived a power loss without any fsync"
