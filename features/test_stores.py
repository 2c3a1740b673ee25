"""Steps for features/stores.feature: real disk faults, damaged files, second openers, legacy data,
wrong-dimension vectors and the open/close leak check, on each store they apply to."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import textwrap

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from features.conftest import note, partner
from memsys import (
    CorruptStoreError,
    DiskFullError,
    MemoryType,
    MemoryVector,
    StoreLockedError,
    VectorDimensionError,
)
from memsys.adapters.tinydb_store import DEVSYNTH_BACKUP_SUFFIX, TinyDBMemoryAdapter
from memsys.testing import dump
from memsys.testing.crash import open_store
from memsys.testing.disk import fill
from memsys.testing.leaks import LeakProbe, StoreCycle
from memsys.testing.plugin import skip_server_unavailable
from memsys.testing.powerloss import PowerLossFS, PowerLossUnavailable

scenarios("stores.feature")

CHILD_TIMEOUT = 120.0


def _files(folder: str) -> dict[str, str]:
    """Every file under ``folder`` (locks aside: an open takes and drops them) and its digest."""
    digests = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name.endswith(".memsys-lock"):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _attempt(world, fn):
    try:
        world["result"] = fn()
        world["error"] = None
    except Exception as exc:  # the Then steps judge it
        world["result"] = None
        world["error"] = exc


def _child(script: str, *args: object) -> dict:
    """Run ``script`` in a fresh interpreter (ARGS = args); it prints one JSON line last."""
    code = "import json, sys\nARGS = json.loads(sys.argv[1])\n" + textwrap.dedent(script)
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT, cwd=os.getcwd())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"child failed ({proc.returncode}): {proc.stderr[-3000:]}"
    return json.loads(lines[-1])


# ------------------------------------------------------------------ damaged files

@given(parsers.parse("a closed {store} store holding {count:d} notes"))
def closed_store(world, store, count):
    adapter = open_store(store, str(world["root"]), managed=False)
    adapter.store_many([note(f"n-{i:03d}", f"note number {i} " * 10) for i in range(count)])
    world["path"] = adapter.path
    adapter.close()
    world["kind"] = store


@given("the first block of its largest file is overwritten with garbage")
def garbage_block(world):
    path = world["path"]
    # Lock files hold no data (LMDB's lock.mdb is its reader table, rebuilt at every open).
    candidates = [path] if os.path.isfile(path) else \
        [os.path.join(root, name) for root, _, names in os.walk(path) for name in names
         if not name.endswith((".memsys-lock", "lock.mdb"))]
    target = max(candidates, key=os.path.getsize)
    size = os.path.getsize(target)
    with open(target, "r+b") as f:
        f.write(random.Random(7).randbytes(min(4096, size)))
    world["damaged"] = target
    world["files"] = _files(str(world["root"]))


@when(parsers.parse("the {store} store is opened"))
def open_damaged(world, store):
    _attempt(world, lambda: world.keep(open_store(store, str(world["root"]), managed=False)))


@then("opening fails with a corrupt-store error naming the damaged file")
def corrupt_error(world):
    error = world["error"]
    assert isinstance(error, CorruptStoreError), repr(error)
    assert world["damaged"] in str(error) or error.path == world["damaged"], str(error)


@then("the store's files are exactly as the damage left them")
def files_untouched(world):
    assert _files(str(world["root"])) == world["files"]


@then("opening it again fails the same way")
def refused_again(world):
    open_damaged(world, world["kind"])  # also proves the refused open released the path's lock
    corrupt_error(world)
    files_untouched(world)


# ------------------------------------------------------------------ disk full

@given(parsers.parse("a {store} store holding {count:d} notes on a small disk"))
def store_on_small_disk(world, small_disk, store, count):
    world["disk"], world["kind"] = small_disk, store
    world["store"] = world.open_store(store, managed=False, folder=small_disk)
    world["store"].store_many([note(f"n-{i:03d}", f"before the disk filled #{i}") for i in range(count)])
    world["before"] = dump(world["store"])


@given("the disk is full")
def disk_full(world):
    world["ballast"] = fill(world["disk"], leave=0)


@when(parsers.parse("the operator stores {count:d} large notes in {store}"))
def store_large(world, count, store):
    world["refused"] = [note(f"big-{i:03d}", "x" * 20_000) for i in range(count)]
    _attempt(world, lambda: world["store"].store_many(world["refused"]))


@then("the write fails with a disk-full error naming a file of the store")
def disk_full_error(world):
    error = world["error"]
    assert isinstance(error, DiskFullError) and error.transient, repr(error)
    assert error.path and os.path.abspath(error.path).startswith(os.path.abspath(world["disk"])), error.path
    assert "full" in str(error) or "No space left" in str(error), str(error)


@then("each note stored before reads back as it was, unless the read itself is refused as disk-full")
def reads_while_full(world):
    # A read may itself need space (Chroma's SQLite refuses every read on a full disk): then it must
    # say so, never answer wrongly. That nothing was lost is checked after space is freed.
    for item_id, expected in world["before"].items():
        try:
            item = world["store"].retrieve(item_id)
        except DiskFullError:
            continue
        assert item is not None and item.to_dict() == expected, item_id


@when(parsers.parse('space is freed and the operator stores "{item_id}" in {store}'))
def free_and_store(world, item_id, store):
    os.unlink(world["ballast"])
    world["after"] = note(item_id, "after the disk had space again")
    world["store"].store(world["after"])


@when(parsers.parse("the {store} store is reopened"))
def reopen(world, store):
    world["store"].close()
    world["store"] = world.open_store(store, managed=False, folder=world["disk"])


@then(parsers.parse('it holds the {count:d} notes and "{item_id}" and none of the refused notes'))
def holds_exactly(world, count, item_id):
    expected = dict(world["before"])
    assert len(expected) == count
    now = dump(world["store"])
    assert now.pop(item_id)["content"] == world["after"].content
    assert now == expected, sorted(set(now) ^ set(expected))


# ------------------------------------------------------------------ second opener

_OPEN_IN_CHILD = """
from memsys import StoreLockedError
from memsys.testing.crash import open_store
kind, folder, write = ARGS
try:
    store = open_store(kind, folder, managed=False)
except StoreLockedError as exc:
    print(json.dumps({"outcome": "StoreLockedError", "path": exc.path, "holder": exc.holder}))
else:
    from memsys import MemoryItem, MemoryType
    if write:
        store.store(MemoryItem(id=write, content="from the other process", memory_type=MemoryType.KNOWLEDGE))
    held = store.retrieve("held-1")
    store.close()
    print(json.dumps({"outcome": "opened", "held": held.content if held else None}))
"""


@given(parsers.parse('an open {store} store holding "{item_id}"'))
def open_holding(world, store, item_id):
    world["kind"] = store
    world["store"] = world.open_store(store, managed=False)
    world["store"].store(note(item_id, "held by the first opener"))


@when(parsers.parse("the same {store} path is opened a second time in this process"))
def open_twice(world, store):
    _attempt(world, lambda: world.keep(open_store(store, str(world["root"]), managed=False)))


@then("the second open fails with a store-locked error naming the path and this process")
def locked_here(world):
    error = world["error"]
    assert isinstance(error, StoreLockedError), repr(error)
    assert os.path.abspath(error.path) == os.path.abspath(world["store"].path), error.path
    assert str(os.getpid()) in error.holder, error.holder


@when(parsers.parse("another process opens the same {store} path"))
def other_process_opens(world, store):
    world["child"] = _child(_OPEN_IN_CHILD, store, str(world["root"]), None)


@then("it is refused with a store-locked error naming this process")
def locked_there(world):
    child = world["child"]
    assert child["outcome"] == "StoreLockedError" and str(os.getpid()) in child["holder"], child


@when(parsers.parse("the first {store} store is closed and the path is opened again"))
def close_and_reopen(world, store):
    world["store"].close()
    world["store"] = world.open_store(store, managed=False)


@then(parsers.parse('"{item_id}" is there'))
def is_there(world, item_id):
    assert world["store"].retrieve(item_id).content == "held by the first opener"


@when(parsers.parse('another process opens the same lmdb path and stores "{item_id}"'))
def lmdb_shared(world, item_id):
    world["child"] = _child(_OPEN_IN_CHILD, "lmdb", str(world["root"]), item_id)
    world["shared"] = item_id


@then(parsers.parse('this process reads "{item_id}" and the other read "{held}"'))
def both_see(world, item_id, held):
    assert world["child"] == {"outcome": "opened", "held": "held by the first opener"}, world["child"]
    assert world["store"].retrieve(item_id).content == "from the other process"


# ------------------------------------------------------------------ wrong dimension

def _vector(item_id: str, dimension: int, seed: int) -> MemoryVector:
    rng = random.Random(seed)
    return MemoryVector(id=item_id, content=f"vector {item_id}",
                        embedding=[rng.uniform(-1, 1) for _ in range(dimension)])


@given(parsers.parse("a {store} store of {dimension:d} dimensions holding {count:d} vectors"))
def vector_store(world, store, dimension, count):
    world["kind"] = store
    world["store"] = world.open_store(store, managed=False)
    assert world["store"].dimension == dimension
    world["store"].store_vectors([_vector(f"v-{i}", dimension, i) for i in range(count)])
    world["vectors"] = {i: world["store"].retrieve_vector(f"v-{i}") for i in range(count)}
    world["before"] = dump(world["store"])


@when(parsers.parse("the operator stores a vector of {dimension:d} dimensions in {store}"))
def store_wrong_vector(world, dimension, store):
    _attempt(world, lambda: world["store"].store_vector(_vector("wrong-1", dimension, 99)))


@then(parsers.parse("it is refused with a dimension error saying {expected:d} was expected and {given_:d} given"))
def dimension_error(world, expected, given_):
    error = world["error"]
    assert isinstance(error, VectorDimensionError), repr(error)
    assert str(expected) in str(error) and str(given_) in str(error), str(error)


@then(parsers.parse("{store} holds exactly the {count:d} vectors it held"))
def same_vectors(world, store, count):
    assert dump(world["store"]) == world["before"] and len(world["before"]) == count
    assert {i: world["store"].retrieve_vector(f"v-{i}") for i in range(count)} == world["vectors"]
    assert world["store"].retrieve_vector("wrong-1") is None


@when(parsers.parse("a transaction over {store} and a second store writes a note and the wrong vector"))
def transaction_with_wrong_vector(world, store):
    folder = world["root"] / "managed"
    folder.mkdir()
    second = partner(store)
    world["pair"] = (store, second)
    manager = world.manager({store: world.open_store(store, folder=folder),
                             second: world.open_store(second, folder=folder)},
                            transaction_log=folder / "txlog")
    with pytest.raises(VectorDimensionError):
        with manager.with_transaction(list(world["pair"])):
            manager.adapters[second].store(note("vx-1"))
            manager.adapters[store].store_vector(_vector("vx-1", 31, 5))


@then("neither store holds the note")
def neither_holds(world):
    assert all(world["manager"].adapters[name].retrieve("vx-1") is None for name in world["pair"])


# ------------------------------------------------------------------ legacy data

def _devsynth_file(folder, operations) -> str:
    """Run ``operations`` the way the reference implementation's TinyDBStore does: TinyDB's
    default table, CachingMiddleware(JSONStorage), upsert by ``Query().id``."""
    from tinydb import Query, TinyDB
    from tinydb.middlewares import CachingMiddleware
    from tinydb.storages import JSONStorage

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "memory.json")
    db = TinyDB(path, storage=CachingMiddleware(JSONStorage))
    for kind, payload in operations:
        if kind == "store":
            db.upsert(payload, Query().id == payload["id"])
        else:
            db.remove(Query().id == payload)
    db.storage.flush()
    db.close()
    return path


def _record(item_id: str, content: object, memory_type: object) -> dict:
    return {"id": item_id, "content": content, "memory_type": memory_type, "metadata": {"source": "devsynth"},
            "created_at": "2024-03-01T12:00:00"}


@given(parsers.parse('a TinyDB file written by the reference implementation with a record of memory type "{raw}"'))
def legacy_record(world, raw):
    world["legacy"] = _devsynth_file(world["root"] / "devsynth", [
        ("store", _record("legacy-1", "written by DevSynth", raw)),
        ("store", _record("plain-1", "a plain one", "knowledge"))])


@given("a TinyDB file written by the reference implementation with 3 notes, one updated and one deleted")
def legacy_file(world):
    world["kept"] = {"keep-1": "first, revised", "keep-2": "second", "keep-3": "third"}
    world["legacy"] = _devsynth_file(world["root"] / "devsynth", [
        ("store", _record("keep-1", "first", "task_history")),
        ("store", _record("keep-2", "second", "EXPAND_RESULTS")),
        ("store", _record("gone-1", "deleted later", "working")),
        ("store", _record("keep-3", "third", "code")),
        ("delete", "gone-1"),
        ("store", _record("keep-1", "first, revised", "task_history"))])
    with open(world["legacy"], "rb") as f:
        world["original"] = f.read()


@when("the operator opens it with memsys")
def open_legacy(world):
    world["store"] = world.keep(TinyDBMemoryAdapter(path=world["legacy"]))


@then(parsers.parse("the record is read with the memory type {name}"))
def legacy_type(world, name):
    item = world["store"].retrieve("legacy-1")
    assert item.memory_type is MemoryType[name] and item.content == "written by DevSynth"
    assert item.metadata == {"source": "devsynth"}


@then(parsers.parse("a search for memory type {name} finds it"))
def legacy_search(world, name):
    assert [i.id for i in world["store"].search({"memory_type": name})] == ["legacy-1"]


@then("every note the reference implementation kept is there with its content, and the deleted one is not")
def legacy_kept(world):
    store = world["store"]
    assert {i.id: i.content for i in store.search({})} == world["kept"]
    assert store.retrieve("gone-1") is None


@then("the original file is kept beside it as a backup")
def legacy_backup(world):
    with open(world["legacy"] + DEVSYNTH_BACKUP_SUFFIX, "rb") as f:
        assert f.read() == world["original"]


@when("the operator updates one note and deletes another, and reopens the file")
def legacy_update(world):
    store = world["store"]
    store.store(note("keep-2", "rewritten by memsys"))
    assert store.delete("keep-3") is True
    store.close()
    world["kept"] = {"keep-1": "first, revised", "keep-2": "rewritten by memsys"}
    open_legacy(world)


@then("the file holds exactly the remaining notes, each once")
def legacy_remaining(world):
    items = world["store"].search({})
    assert sorted(i.id for i in items) == sorted(world["kept"])
    assert {i.id: i.content for i in items} == world["kept"]


@then("reading that record fails with a corrupt-store error naming it")
def legacy_refused(world):
    with pytest.raises(CorruptStoreError, match="'legacy-1'"):
        world["store"].retrieve("legacy-1")


@then("the other records load")
def legacy_rest(world):
    assert world["store"].retrieve("plain-1").content == "a plain one"


# ------------------------------------------------------------------ leaks

#: The measured cycles of the leak check; CI runs the feature's count, a deeper dose sets more.
LEAK_CYCLES_ENV = "MEMSYS_LEAK_CYCLES"


@given(parsers.parse("a fresh process that opened and closed a {store} store {times:d} times"))
def leak_probe_warmed_up(world, store, times):
    # A child of its own: the engines' native memory is only seen as resident memory, which
    # every other scenario of this process would move too. First opens load engines and caches.
    cycle = StoreCycle(functools.partial(open_store, store, managed=False), str(world["root"] / "leak"), store)
    world["probe"] = world.keep(LeakProbe(cycle, timeout=CHILD_TIMEOUT))
    world["probe"].warm_up(times)


@when(parsers.parse("it opens, writes, reads and closes the {store} store {times:d} times more, "
                    "and {traced:d} times with Python's allocations traced"))
def leak_probe_cycles(world, store, times, traced):
    times = max(times, int(os.environ.get(LEAK_CYCLES_ENV) or 0))
    world["leaks"] = world["probe"].measure(times, traced_cycles=traced)


@then("it holds no more open files and threads than before those")
def no_resources_left(world):
    report = world["leaks"]
    assert report.fds_after <= report.fds_before, f"{report.fds_after - report.fds_before} more open files"
    assert not report.new_threads, f"threads left running: {report.new_threads}"


@then(parsers.parse("its resident memory grew by less than {kib:d} KiB per cycle"))
def resident_memory_flat(world, kib):
    report = world["leaks"]
    assert report.per_cycle < kib << 10, report.summary()


@then(parsers.parse("its traced Python memory grew by less than {mib:d} MiB"))
def traced_memory_flat(world, mib):
    report = world["leaks"]
    assert report.traced_growth is not None and report.traced_growth < mib << 20, \
        f"{report.traced_growth} bytes over {report.traced_cycles} cycles"


# ------------------------------------------------------------------ power loss, one store alone

@given(parsers.parse("a {store} store on a disk that loses unsynced writes"))
def store_on_power_loss_disk(world, store):
    fs = PowerLossFS(world["root"] / "power")
    try:
        fs.mount()
    except PowerLossUnavailable as exc:
        fs.close()
        skip_server_unavailable(f"power-loss filesystem: {exc}")
    world.keep(fs)  # kept first, so closed last (close_all runs in reverse)
    world["fs"], world["kind"] = fs, store
    world["folder"] = os.path.join(fs.mount_point, "stores")
    os.makedirs(world["folder"])
    world["store"] = world.open_store(store, managed=False, folder=world["folder"])  # durable on its own


@when(parsers.parse('the operator stores {count:d} notes in one batch and "{single}" alone, and deletes "{gone}"'))
def acknowledged_writes(world, count, single, gone):
    store = world["store"]
    store.store_many([note(f"b-{i}", f"batch note {i}") for i in range(count)])
    store.store(note(single, "stored alone"))
    assert store.delete(gone) is True


@when(parsers.parse("the power fails and the {store} store is opened again"))
def power_fails_and_reopen(world, store):
    world["fs"].power_failure()
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # the dead process's close reaches a dead mount
    try:
        with contextlib.suppress(Exception):
            world["store"].close()
    finally:
        logging.disable(previous)
    world["store"] = world.open_store(store, managed=False, folder=world["folder"])


@then(parsers.parse('it holds "b-1" to "b-4" and "one-1", and not "b-0"'))
def all_acknowledged_there(world):
    held = {item.id: item.content for item in world["store"].search({})}
    assert held == {**{f"b-{i}": f"batch note {i}" for i in range(1, 5)}, "one-1": "stored alone"}, held
