"""Faults Chroma meets for real: slow networks (a real Toxiproxy between the adapter and a real
``chroma run``), a full disk (a real tmpfs), a crash mid-restore (SIGKILL), a second opener,
damaged files (bytes changed on disk) and bad constructor arguments.

Scenarios that drive embedded Chroma into a full disk run in a child process: a wedged engine
blocks while holding the GIL, so only another process can notice a hang and still report it.
Wall times are never asserted; a generous bound only tells a hang from an answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from memsys import CorruptStoreError, DeadlineExceededError, InvalidInputError, StoreLockedError
from memsys.adapters.chroma_store import ChromaDBVectorStore
from memsys.domain.errors import StoreUnavailableError
from memsys.domain.operations import Put
from memsys.testing import dump, sample_item

DEADLINE = 1.0
HANG = DEADLINE * 5  # only a hang detector: a call still blocked after this never ended by its deadline
CHILD_TIMEOUT = 90.0  # a child scenario still running after this is hung
DATABASE_FILE = "chroma.sqlite3"  # Chroma's
UNDO_FILE = "memsys-undo"  # the adapter's undo of a write in progress (one per collection)


# ------------------------------------------------------------------------------ helpers


def _bounded(fn: Any, limit: float = HANG) -> tuple[str, Any]:
    """Run ``fn`` in a thread: ("returned", value) or ("raised", exc); fail the test if it is
    still blocked after ``limit`` seconds (the old adapter blocked for tens of seconds)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["returned"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["raised"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        pytest.fail(f"the call was still blocked {limit:.0f}s after it started: its {DEADLINE}s deadline "
                    "did not end it")
    return ("returned", box["returned"]) if "returned" in box else ("raised", box["raised"])


def _child(script: str, *args: Any) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter with ``args`` (JSON) in ARGS; it prints one JSON line."""
    code = "import json, sys\nARGS = json.loads(sys.argv[1])\n" + textwrap.dedent(script)
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT, cwd=os.getcwd())
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child scenario hung (still running after {CHILD_TIMEOUT:.0f}s)")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"child failed ({proc.returncode}): {proc.stderr[-3000:]}"
    return json.loads(lines[-1])


def _undo_files(folder: str) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(UNDO_FILE)]


def _folder_digest(folder: str) -> dict[str, str]:
    digests = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


# ------------------------------------------------------------------------------ item 10: deadlines


TOXICS = {
    "slicer": {"average_size": 16, "size_variation": 0, "delay": 20000},  # 16 bytes every 20 ms
    "bandwidth": {"rate": 2},  # 2 KB/s
    "latency": {"latency": 3000},  # longer than the deadline
    "timeout": {"timeout": 0},  # the server's answer never arrives
}


@pytest.fixture
def slow_network(chroma_server, toxiproxy, tmp_path):
    proxy = toxiproxy.client.create_proxy(f"chroma-slow-{tmp_path.name}", upstream=f"127.0.0.1:{chroma_server.port}")
    store = ChromaDBVectorStore(path=tmp_path / "ns", host=proxy.host, port=proxy.port, dimension=16,
                                timeout=DEADLINE)
    # Answers of tens of KB: at 2 KB/s or through the slicer they take far longer than the deadline.
    store.store_many([sample_item(i, content="x" * 4000) for i in range(30)])
    yield store, proxy
    toxiproxy.client.delete_proxy(proxy.name)
    store.close()


@pytest.mark.parametrize("toxic", sorted(TOXICS))
def test_every_remote_call_ends_by_its_deadline_whatever_the_network_does(slow_network, toxic) -> None:
    """Under each slow-response fault every call returns or raises DeadlineExceededError (never blocks
    on); a write that raised never lands later; after the fault heals the same store works."""
    store, proxy = slow_network
    before = dump(store)
    calls = {
        "retrieve": lambda: store.retrieve("item-00001"),
        "search": lambda: store.search({}),
        "similar_items": lambda: store.similar_items([0.1] * 16, top_k=20),
        "overwrite": lambda: store.store(sample_item(2, content="changed under a slow network")),
        "store": lambda: store.store(sample_item(99, content="new under a slow network")),
    }
    outcomes = {}
    with proxy.toxic(toxic, **TOXICS[toxic]):
        for name, call in calls.items():
            kind, value = _bounded(call)
            if kind == "raised":
                assert isinstance(value, DeadlineExceededError), f"{name}: {type(value).__name__}: {value}"
                assert value.transient and value.store == "chroma"
            outcomes[name] = kind
    # Whole answers of ~120 KB cannot arrive in time through any of these faults.
    assert outcomes["search"] == "raised"
    if toxic in ("latency", "timeout"):
        assert set(outcomes.values()) == {"raised"}, outcomes

    store.timeout = 30.0  # healed: only the recovery is checked now, not speed on a loaded machine
    expected = dict(before)
    for name, item in (("overwrite", sample_item(2, content="changed under a slow network")),
                       ("store", sample_item(99, content="new under a slow network"))):
        if outcomes[name] == "returned":
            expected[item.id] = item.to_dict()
    assert dump(store) == expected, "a write that raised landed after all, or one that returned is missing"
    store.store(sample_item(100))
    assert store.retrieve("item-00100") == sample_item(100)


def test_opening_through_a_trickling_network_ends_by_the_deadline(chroma_server, toxiproxy, tmp_path) -> None:
    proxy = toxiproxy.client.create_proxy("chroma-trickle-open", upstream=f"127.0.0.1:{chroma_server.port}")
    try:
        with proxy.toxic("slicer", average_size=1, size_variation=0, delay=50000):
            kind, value = _bounded(lambda: ChromaDBVectorStore(path=tmp_path / "x", host=proxy.host,
                                                               port=proxy.port, dimension=16, timeout=DEADLINE))
        assert kind == "raised" and isinstance(value, DeadlineExceededError), value
    finally:
        toxiproxy.client.delete_proxy(proxy.name)


# ------------------------------------------------------------------------------ item 11: disk full, embedded

_DISK_FULL_EPISODES = """
import os, time
from memsys import DiskFullError, MemsysError
from memsys.adapters.chroma_store import ChromaDBVectorStore
from memsys.testing import dump, sample_item
from memsys.testing.disk import fill
disk, = ARGS
path = os.path.join(disk, "chroma")
store = ChromaDBVectorStore(path=path, dimension=16)
store.store_many([sample_item(i) for i in range(5)])
acked = {i.id: i.to_dict() for i in map(sample_item, range(5))}
report = {"write_errors": [], "reads_while_full": [], "failed_present": []}
n = 100
for episode in range(4):
    ballast = fill(disk, leave=200_000)
    batch = [sample_item(i) for i in range(n, n + 200)]
    try:
        store.store_many(batch)
        acked.update({i.id: i.to_dict() for i in batch})
        report["write_errors"].append(None)
    except MemsysError as exc:
        report["write_errors"].append(type(exc).__name__)
    try:
        got = store.retrieve("item-00001")
        report["reads_while_full"].append("ok" if got == sample_item(1) else repr(got))
    except MemsysError as exc:
        report["reads_while_full"].append(type(exc).__name__)
    os.unlink(ballast)
    later = sample_item(1000 + episode)
    store.store(later)  # space is back: writes work again
    acked[later.id] = later.to_dict()
    report["failed_present"].append(store.retrieve(batch[0].id) is not None and batch[0].id not in acked)
    n += 200
report["same_as_acked"] = dump(store) == acked
store.close()
again = ChromaDBVectorStore(path=path, dimension=16)
report["same_after_reopen"] = dump(again) == acked
again.close()
print(json.dumps(report))
"""


def test_embedded_disk_full_is_typed_and_never_wedges_the_store(small_disk) -> None:
    """Four real disk-full episodes: each write raises DiskFullError, reads still answer, and once
    space is back writes work; the store never hangs (the old adapter hung in Chroma's upsert)."""
    report = _child(_DISK_FULL_EPISODES, str(small_disk))
    assert report["write_errors"] == ["DiskFullError"] * 4, report
    assert all(r in ("ok", "DiskFullError", "StoreUnavailableError") for r in report["reads_while_full"]), report
    assert report["failed_present"] == [False] * 4, "a write that raised landed later"
    assert report["same_as_acked"] and report["same_after_reopen"], report


# ------------------------------------------------------------------------------ item 8: restore is durable

_RESTORE_ON_FULL_DISK = """
import os
from memsys import MemsysError
from memsys.adapters.chroma_store import ChromaDBVectorStore
from memsys.testing import dump, sample_item
from memsys.testing.disk import fill
disk, = ARGS
path = os.path.join(disk, "chroma")
store = ChromaDBVectorStore(path=path, dimension=16)
store.store_many([sample_item(i) for i in range(20)])
original = dump(store)
snapshot = ChromaDBVectorStore(path=os.path.join(disk, "other"), dimension=16)
snapshot.store_many([sample_item(i, content="r" * 30_000) for i in range(100, 120)])
replacement = snapshot.snapshot()
snapshot.close()
ballast = []
delete = store._collection.delete
def delete_then_fill(*args, **kwargs):  # the disk fills up right after the deletes landed
    result = delete(*args, **kwargs)
    ballast.append(fill(disk))
    return result
store._collection.delete = delete_then_fill
report = {}
try:
    store.restore(replacement)
    report["restore"] = "returned"
except MemsysError as exc:
    report["restore"] = type(exc).__name__
store.close()  # the old adapter dropped its in-memory undo here
try:  # still full: the undo cannot run yet, and nothing half-restored may be served
    reopened = ChromaDBVectorStore(path=path, dimension=16)
    try:
        report["while_full"] = "same" if dump(reopened) == original else "different"
    except MemsysError as exc:
        report["while_full"] = type(exc).__name__
    reopened.close()
except MemsysError as exc:
    report["while_full"] = type(exc).__name__
    report["while_full_message"] = str(exc)
for b in ballast:
    os.unlink(b)
final = ChromaDBVectorStore(path=path, dimension=16)
report["after_free"] = dump(final) == original
report["undo_left"] = any(name.startswith("memsys-undo") for name in os.listdir(path))
final.close()
print(json.dumps(report))
"""


def test_a_restore_that_failed_on_a_full_disk_is_undone_even_after_close(small_disk) -> None:
    """restore(): the deletes land, the disk fills, the upserts and the undo fail; close(); a
    reopen on the full disk serves nothing half-restored; once space is back the original store
    is there again (the old adapter lost the deleted items for good)."""
    report = _child(_RESTORE_ON_FULL_DISK, str(small_disk))
    assert report["restore"] == "DiskFullError", report
    assert report["while_full"] in ("same", "DiskFullError"), report
    assert report["after_free"] is True and report["undo_left"] is False, report


_RESTORE_KILLED = """
import os, signal
from memsys.adapters.chroma_store import ChromaDBVectorStore
from memsys.testing import sample_item
path, = ARGS
from memsys.domain.operations import Put
store = ChromaDBVectorStore(path=path, dimension=16)
replacement = [Put(sample_item(i, content="replacement"), tuple([0.5] * 16)) for i in range(100, 110)]
def crash(*args, **kwargs):  # SIGKILL after the deletes landed, before any upsert
    os.kill(os.getpid(), signal.SIGKILL)
store._collection.upsert = crash
store.restore(replacement)
print(json.dumps({"restore": "returned"}))
"""


def test_a_crash_in_the_middle_of_a_restore_is_rolled_back_at_the_next_open(tmp_path) -> None:
    path = str(tmp_path / "chroma")
    store = ChromaDBVectorStore(path=path, dimension=16)
    store.store_many([sample_item(i) for i in range(10)])
    original = dump(store)
    store.close()
    code = "import json, sys\nARGS = json.loads(sys.argv[1])\n" + textwrap.dedent(_RESTORE_KILLED)
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([path])], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _undo_files(path), "no undo was on disk when the process died"
    reopened = ChromaDBVectorStore(path=path, dimension=16)
    assert dump(reopened) == original, "the items the crashed restore deleted are gone"
    assert not _undo_files(path)
    reopened.close()


# ------------------------------------------------------------------------------ item 4: a second opener

_SECOND_OPENER = """
from memsys import StoreLockedError
from memsys.adapters.chroma_store import ChromaDBVectorStore
path, = ARGS
try:
    ChromaDBVectorStore(path=path, dimension=16)
    print(json.dumps({"outcome": "opened"}))
except StoreLockedError as exc:
    print(json.dumps({"outcome": "StoreLockedError", "path": exc.path, "holder": exc.holder}))
"""


def test_a_second_opener_in_this_or_another_process_is_refused(tmp_path) -> None:
    path = str(tmp_path / "chroma")
    store = ChromaDBVectorStore(path=path, dimension=16)
    store.store(sample_item(1))
    with pytest.raises(StoreLockedError) as refused:
        ChromaDBVectorStore(path=path, dimension=16)
    assert refused.value.path == os.path.abspath(path) and str(os.getpid()) in refused.value.holder
    other = _child(_SECOND_OPENER, path)
    assert other["outcome"] == "StoreLockedError" and str(os.getpid()) in other["holder"], other
    store.close()
    again = ChromaDBVectorStore(path=path, dimension=16)
    assert again.retrieve("item-00001") == sample_item(1)
    again.close()


# ------------------------------------------------------------------------------ item 18 and values: damage


def _truncate_half(path: str) -> None:
    size = os.path.getsize(path)
    os.truncate(path, size // 2 // 4096 * 4096)


def _flip_magic(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(3)
        byte = f.read(1)[0]
        f.seek(3)
        f.write(bytes([byte ^ 0x01]))


def _zero_table_page(path: str) -> None:
    """Zero the root page of the table holding every record's metadata (a whole 4 KiB block)."""
    import sqlite3

    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (root,), = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'embedding_metadata'")
        page_size, = connection.execute("PRAGMA page_size").fetchone()
    finally:
        connection.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\0" * page_size)


@pytest.mark.parametrize("damage", [_truncate_half, _flip_magic, _zero_table_page],
                         ids=["truncated", "header-bit", "zeroed-page"])
def test_a_damaged_database_file_is_refused_and_left_untouched(tmp_path, damage) -> None:
    path = str(tmp_path / "chroma")
    store = ChromaDBVectorStore(path=path, dimension=16)
    store.store_many([sample_item(i, content="c" * 500) for i in range(300)])
    store.close()
    database = os.path.join(path, DATABASE_FILE)
    damage(database)
    before = _folder_digest(path)
    for _ in range(2):  # the second open proves the refused open released the path's lock
        with pytest.raises(CorruptStoreError) as refused:
            ChromaDBVectorStore(path=path, dimension=16)
        assert refused.value.path == database and database in str(refused.value)
    assert _folder_digest(path) == before, "a refused open changed the damaged store's files"


def test_a_flipped_bit_in_a_stored_value_is_corruption_naming_the_id(tmp_path) -> None:
    path = str(tmp_path / "chroma")
    store = ChromaDBVectorStore(path=path, dimension=16)
    store.store_many([sample_item(i, content=f"marker-{i:03d}-abcdefghij") for i in range(10)])
    # A record written before checksums existed (no crc32 in its metadata) is still read.
    legacy = sample_item(50, content="legacy")
    metadata = ChromaDBVectorStore._metadata(Put(legacy, tuple([0.25] * 16)))
    del metadata["memsys_crc32"]
    store._collection.upsert(ids=[legacy.id], embeddings=[[0.25] * 16], metadatas=[metadata])
    store.close()

    database = os.path.join(path, DATABASE_FILE)
    with open(database, "rb") as f:
        data = bytearray(f.read())
    needle = b"marker-003-abcdefghij"
    start, hits = 0, 0
    while (at := data.find(needle, start)) >= 0:  # every copy the engine wrote: 'i' -> 'k'
        data[at + len(needle) - 2] ^= 0x02
        start, hits = at + 1, hits + 1
    assert hits
    with open(database, "wb") as f:
        f.write(data)

    reopened = ChromaDBVectorStore(path=path, dimension=16)
    with pytest.raises(CorruptStoreError, match="item-00003"):
        reopened.retrieve("item-00003")
    with pytest.raises(CorruptStoreError, match="item-00003"):
        reopened.search({})  # a scan must not return the damaged value either
    assert reopened.retrieve("item-00004").content == "marker-004-abcdefghij"
    assert reopened.retrieve(legacy.id) == legacy
    reopened.close()


# ------------------------------------------------------------------------------ item 13: arguments


@pytest.mark.parametrize("kwargs", [
    {"server": "ftp://127.0.0.1:8000"},
    {"server": "http://127.0.0.1:0"},
    {"server": "http://127.0.0.1:99999"},
    {"server": "http://127.0.0.1:port"},
    {"server": "http://127.0.0.1:8000/api"},
    {"server": "http://user:secret@127.0.0.1:8000"},
    {"server": "http://"},
    {"server": ""},
    {"server": 8000},
    {"server": "http://127.0.0.1:8000", "host": "127.0.0.1"},
    {"host": "http://127.0.0.1:8000"},
    {"host": "bad host"},
    {"host": ""},
    {"host": "127.0.0.1", "port": 0},
    {"host": "127.0.0.1", "port": 65536},
    {"host": "127.0.0.1", "port": True},
    {"host": "127.0.0.1", "port": "8000"},
    {"port": 8000},
    {"timeout": 0},
    {"timeout": -1.0},
    {"timeout": float("nan")},
    {"timeout": float("inf")},
    {"timeout": "1"},
    {"timeout": True},
    {"collection": "ab"},
    {"collection": "-starts-with-dash"},
    {"collection": "has space"},
    {"collection": "x" * 513},
    {"collection": 7},
    {"dimension": 0},
    {"metric": "l2"},
    {"path": 3},
], ids=lambda kwargs: ",".join(f"{k}={v!r}"[:40] for k, v in kwargs.items()))
def test_bad_constructor_arguments_are_typed_errors_that_create_nothing(tmp_path, kwargs) -> None:
    args = {"path": str(tmp_path / "chroma"), "dimension": 16, **kwargs}
    with pytest.raises(InvalidInputError):
        ChromaDBVectorStore(**args)
    assert not os.path.exists(tmp_path / "chroma")


@pytest.mark.parametrize(("server", "expected"), [
    ("http://127.0.0.1:8001", ("127.0.0.1", 8001, False)),
    ("127.0.0.1:8001", ("127.0.0.1", 8001, False)),
    ("http://localhost", ("localhost", 8000, False)),
    ("https://chroma.example.com", ("chroma.example.com", 443, True)),
    ("https://chroma.example.com:9443/", ("chroma.example.com", 9443, True)),
    ("http://[::1]:8001", ("::1", 8001, False)),
])
def test_server_urls_of_every_accepted_form_parse(server, expected) -> None:
    from memsys.adapters.chroma_store import _parse_server

    assert _parse_server(server) == expected


def test_an_https_server_that_is_not_there_is_a_typed_error(tmp_path) -> None:
    from memsys.testing.servers import free_port

    with pytest.raises(StoreUnavailableError):  # was a raw ValueError from parsing the URL
        ChromaDBVectorStore(server=f"https://127.0.0.1:{free_port()}", dimension=16, timeout=DEADLINE)
