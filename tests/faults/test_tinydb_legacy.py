"""TinyDB files written by DevSynth (the reference implementation) load, update and delete correctly.

DevSynth keeps items under TinyDB's integer document ids: its TinyDBStore
(src/devsynth/application/memory/tinydb_store.py) in the default table of
``<base_path>/memory.json`` through ``CachingMiddleware(JSONStorage)`` with
``db.upsert(serialized, Query().id == item.id)``; its TinyDBMemoryAdapter in a
``memory_items`` table with ``get``/``update``/``insert``. The fixtures below are
written with tinydb itself, the way DevSynth's code does. memsys migrates such a
file on open, atomically, keeping the original beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest

from memsys import CorruptStoreError, MemoryItem, MemoryType
from memsys.adapters.tinydb_store import DEVSYNTH_BACKUP_SUFFIX, JSON_BACKUP_SUFFIX, TinyDBMemoryAdapter

tinydb = pytest.importorskip("tinydb")

# (id, content, memory_type value, metadata, naive created_at) as DevSynth's MemoryItem holds them.
ITEMS = [
    ("task-1", "plan the sprint", "task_history", {"agent": "planner", "tags": ["a", "b"]}, datetime(2024, 3, 1, 12)),
    ("note-2", {"summary": "déjà vu", "lines": [1, 2, 3]}, "knowledge", {}, datetime(2024, 3, 2, 8, 30)),
    ("edrr-3", "expand phase output", "expand_results", {"phase": "EXPAND", "cycle": 7}, datetime(2024, 3, 3)),
    ("code-4", "def f(): pass", "code", {"path": "src/f.py"}, datetime(2024, 3, 4, 23, 59, 59)),
]


def devsynth_serialize(item_id, content, memory_type, metadata, created_at):
    """TinyDBStore._serialize_memory_item."""
    return {"id": item_id, "content": content, "memory_type": memory_type,
            "metadata": dict(metadata) if metadata else None,
            "created_at": created_at.isoformat() if created_at else None}


def write_devsynth_store_file(base_path, operations) -> str:
    """Run ``operations`` (("store", fields) / ("delete", id)) the way DevSynth's TinyDBStore does."""
    from tinydb import Query, TinyDB
    from tinydb.middlewares import CachingMiddleware
    from tinydb.storages import JSONStorage

    db_file = os.path.join(base_path, "memory.json")
    os.makedirs(base_path, exist_ok=True)
    db = TinyDB(db_file, storage=CachingMiddleware(JSONStorage))
    for kind, payload in operations:
        if kind == "store":
            db.upsert(devsynth_serialize(*payload), Query().id == payload[0])
        else:
            if db.get(Query().id == payload):
                db.remove(Query().id == payload)
    db.storage.flush()
    db.close()
    return db_file


def write_devsynth_adapter_file(db_path, items) -> str:
    """What DevSynth's TinyDBMemoryAdapter writes: table memory_items, get + update or insert."""
    from tinydb import Query, TinyDB

    db = TinyDB(db_path)
    table = db.table("memory_items")
    for item_id, content, memory_type, metadata, created_at in items:
        row = {"id": item_id, "content": content, "memory_type": memory_type, "metadata": dict(metadata),
               "created_at": created_at.isoformat()}
        condition = Query().id == item_id
        if table.get(condition):
            table.update(row, condition)
        else:
            table.insert(row)
    db.close()
    return db_path


def raw_tables(path) -> dict:
    """The tables as TinyDB itself reads them from memsys' files."""
    from memsys.adapters.tinydb_store import JournalStorage

    db = tinydb.TinyDB(path, storage=JournalStorage)
    try:
        return db.storage.read() or {}
    finally:
        db.close()


def expected_item(item_id, content, memory_type, metadata, created_at) -> dict:
    return {"id": item_id, "content": content, "memory_type": MemoryType(memory_type),
            "metadata": metadata, "created_at": created_at.replace(tzinfo=timezone.utc)}


def as_fields(item: MemoryItem) -> dict:
    return {"id": item.id, "content": json.loads(json.dumps(item.content)), "memory_type": item.memory_type,
            "metadata": json.loads(json.dumps(item.metadata)), "created_at": item.created_at}


@pytest.fixture
def devsynth_file(tmp_path):
    operations = [("store", fields) for fields in ITEMS]
    operations += [("store", ("gone-5", "deleted by DevSynth", "working", {}, datetime(2024, 3, 5))),
                   ("delete", "gone-5")]
    operations += [("store", ("task-1", "plan the sprint, revised", "task_history", {"agent": "planner", "rev": 2},
                              datetime(2024, 3, 1, 12)))]  # an upsert: the same document, updated in place
    path = write_devsynth_store_file(tmp_path / "devsynth", operations)
    document_ids = set(json.loads(open(path).read())["_default"])
    assert document_ids == {"1", "2", "3", "4"}, "the fixture must hold TinyDB's integer document ids"
    return path


def test_devsynth_store_file_loads_every_item_by_its_id(devsynth_file) -> None:
    store = TinyDBMemoryAdapter(path=devsynth_file)
    assert store.count() == 4
    revised = ("task-1", "plan the sprint, revised", "task_history", {"agent": "planner", "rev": 2},
               datetime(2024, 3, 1, 12))
    for fields in [revised] + ITEMS[1:]:
        assert as_fields(store.retrieve(fields[0])) == expected_item(*fields)
    assert store.retrieve("gone-5") is None and store.retrieve("1") is None
    assert [i.id for i in store.search({"memory_type": "EXPAND_RESULTS"})] == ["edrr-3"]
    assert [i.id for i in store.search({"metadata": {"path": "src/f.py"}})] == ["code-4"]


def test_update_and_delete_of_a_legacy_item_leave_no_duplicate_or_old_record(devsynth_file) -> None:
    store = TinyDBMemoryAdapter(path=devsynth_file)
    store.store(MemoryItem(id="note-2", content="rewritten by memsys", memory_type=MemoryType.KNOWLEDGE))
    assert store.delete("edrr-3") is True
    assert store.count() == 3
    store.close()

    store = TinyDBMemoryAdapter(path=devsynth_file)
    assert store.retrieve("note-2").content == "rewritten by memsys"
    assert store.retrieve("edrr-3") is None
    assert sorted(i.id for i in store.search({})) == ["code-4", "note-2", "task-1"]
    store.close()
    tables = raw_tables(devsynth_file)
    assert set(tables) == {"memory_items"}, "DevSynth's table must not stay behind"
    assert sorted(tables["memory_items"]) == ["code-4", "note-2", "task-1"]
    assert all(key == record["id"] for key, record in tables["memory_items"].items())


def test_migration_keeps_the_original_file_as_a_backup(devsynth_file) -> None:
    original = open(devsynth_file, "rb").read()
    TinyDBMemoryAdapter(path=devsynth_file).close()
    assert open(devsynth_file + DEVSYNTH_BACKUP_SUFFIX, "rb").read() == original
    assert json.loads(original)["_default"]["1"]["id"] == "task-1"  # still DevSynth's own file
    TinyDBMemoryAdapter(path=devsynth_file).close()  # a second open migrates nothing more
    assert sorted(p for p in os.listdir(os.path.dirname(devsynth_file)) if "backup" in p) == \
        ["memory.json" + DEVSYNTH_BACKUP_SUFFIX]


def test_devsynth_memory_adapter_file_with_integer_ids_in_memory_items(tmp_path) -> None:
    path = write_devsynth_adapter_file(tmp_path / "items.json", ITEMS + [ITEMS[0][:1] + ("again",) + ITEMS[0][2:]])
    assert set(json.loads(open(path).read())["memory_items"]) == {"1", "2", "3", "4"}
    store = TinyDBMemoryAdapter(path=path)
    assert store.retrieve("task-1").content == "again"
    assert sorted(i.id for i in store.search({})) == sorted(fields[0] for fields in ITEMS)
    store.store(MemoryItem(id="code-4", content="v2", memory_type="CODE"))
    store.close()
    tables = raw_tables(path)
    assert sorted(tables["memory_items"]) == sorted(fields[0] for fields in ITEMS)
    assert TinyDBMemoryAdapter(path=path).retrieve("code-4").content == "v2"


def test_records_memsys_keyed_by_id_win_over_devsynth_records_of_the_same_id(tmp_path) -> None:
    """A DevSynth file an older memsys wrote into: its records (keyed by id) are the newer ones."""
    path = write_devsynth_store_file(tmp_path, [("store", fields) for fields in ITEMS])
    data = json.loads(open(path).read())
    newer = MemoryItem(id="task-1", content="written by memsys later", memory_type="TASK_HISTORY")
    data["memory_items"] = {"task-1": newer.to_dict()}
    open(path, "w").write(json.dumps(data))
    store = TinyDBMemoryAdapter(path=path)
    assert store.retrieve("task-1") == newer
    assert store.count() == 4


def test_an_unreadable_legacy_record_is_a_typed_error_naming_it_and_the_rest_loads(tmp_path) -> None:
    # Older DevSynth versions stored memory_type None for items without a type.
    path = write_devsynth_store_file(tmp_path, [("store", fields) for fields in ITEMS[:2]])
    data = json.loads(open(path).read())
    data["_default"]["3"] = {"id": "untyped", "content": "x", "memory_type": None, "metadata": None,
                             "created_at": None}
    open(path, "w").write(json.dumps(data))
    store = TinyDBMemoryAdapter(path=path)
    with pytest.raises(CorruptStoreError, match="'untyped'"):
        store.retrieve("untyped")
    assert store.retrieve("task-1").content == ITEMS[0][1]


def test_plain_json_of_older_memsys_is_migrated_with_a_backup(tmp_path) -> None:
    path = tmp_path / "memory.json"
    item = MemoryItem(id="old-1", content="plain json", memory_type="KNOWLEDGE")
    original = json.dumps({"memory_items": {"old-1": item.to_dict()}}).encode()
    path.write_bytes(original)
    store = TinyDBMemoryAdapter(path=path)
    assert store.retrieve("old-1") == item
    store.close()
    assert (tmp_path / ("memory.json" + JSON_BACKUP_SUFFIX)).read_bytes() == original
    assert not path.read_bytes().startswith(b"{"), "the file is now a checksummed snapshot"


def test_damaged_legacy_json_is_a_typed_error_naming_file_and_offset_and_nothing_is_written(tmp_path) -> None:
    path = write_devsynth_store_file(tmp_path, [("store", fields) for fields in ITEMS])
    data = bytearray(open(path, "rb").read())
    data[40] = ord("\x01")  # a control byte inside a JSON string
    open(path, "wb").write(bytes(data))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(CorruptStoreError, match=r"memory\.json.*at byte 40"):
        TinyDBMemoryAdapter(path=path)
    assert open(path, "rb").read() == bytes(data)
    assert sorted(os.listdir(tmp_path)) == before + ["memory.json.memsys-lock"]


_KILL_AT_REPLACE = textwrap.dedent("""
    import os, signal, sys
    target = sys.argv[2]
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):  # die as a SIGKILL would, just before the rename lands
        if os.path.basename(dst) == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
    TinyDBMemoryAdapter(path=sys.argv[1])
""")


@pytest.mark.parametrize("killed_at", ["memory.json", "memory.json.journal"])
def test_a_kill_during_migration_leaves_the_original_or_the_migrated_file(devsynth_file, killed_at) -> None:
    original = open(devsynth_file, "rb").read()
    child = subprocess.run([sys.executable, "-c", _KILL_AT_REPLACE, devsynth_file, killed_at],
                           capture_output=True, timeout=60)
    assert child.returncode == -9, child.stderr.decode()[-2000:]
    if killed_at == "memory.json":  # before the commit point: DevSynth's file is untouched
        assert open(devsynth_file, "rb").read() == original
    store = TinyDBMemoryAdapter(path=devsynth_file)  # the lock died with the child
    assert store.count() == 4 and store.retrieve("edrr-3").content == ITEMS[2][1]
    store.close()
    assert open(devsynth_file + DEVSYNTH_BACKUP_SUFFIX, "rb").read() == original
    leftovers = [p for p in os.listdir(os.path.dirname(devsynth_file)) if p.endswith(".tmp")]
    assert not leftovers, f"the killed migration's temporary files stayed: {leftovers}"
