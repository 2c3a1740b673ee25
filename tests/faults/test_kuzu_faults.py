"""Kuzu under the faults real deployments meet (issue 7, items 2, 3, 4 and 12): sustained updates,
oversized writes, a second opener, damaged files, a full disk, a flipped bit inside a stored value.

Everything that may kill a process (Kuzu meeting a damaged file or ENOSPC) runs in a child
process, so this test run survives what it provokes and reports it as a failure instead.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

from memsys.adapters.kuzu_store import KuzuMemoryAdapter
from memsys.domain.errors import (
    CorruptStoreError,
    InvalidMemoryItemError,
    StoreError,
    StoreLockedError,
    TransactionAbortedError,
)
from memsys.domain.model import trusted_item
from memsys.domain.operations import Put
from memsys.testing import sample_item

#: The smallest pool the adapter takes: the adapter before this fix failed after ~190 updates.
POOL = 16 << 20
ADAPTER_MODULE = "memsys.adapters.kuzu_store"


def open_store(path, **kwargs) -> KuzuMemoryAdapter:
    return KuzuMemoryAdapter(path, buffer_pool_size=POOL, **kwargs)


@pytest.fixture
def fast_dir(tmp_path):
    """A folder in memory (/dev/shm) where there is one: the soak tests commit thousands of times,
    and an fsync per commit would measure the disk, not the adapter."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        folder = os.path.join("/dev/shm", f"memsys-kuzu-{uuid.uuid4().hex[:8]}")
        os.makedirs(folder)
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield str(tmp_path)


def digest(store) -> str:
    """What a store holds, as one hash (items and relationships)."""
    items = sorted(json.dumps(item.to_dict(), sort_keys=True, default=str) for item in store.iter_items())
    edges = sorted(json.dumps([r.source_id, r.target_id, r.rel_type, r.properties], sort_keys=True)
                   for r in store._scan_relationships())
    return hashlib.sha256(json.dumps([items, edges]).encode()).hexdigest()


def run_child(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout)


def child_result(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, f"the child process died (status {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- item 3: sustained updates ---------------------------------------------------------------------


def test_sustained_single_updates_run_indefinitely(fast_dir) -> None:
    """6 ids updated 1,500 times on the smallest pool: Kuzu keeps every update's column vectors in
    the pool until a checkpoint, so without the adapter's own checkpoints this failed after ~190."""
    path = os.path.join(fast_dir, "graph.kuzu")
    store = open_store(path)
    store.store_many([sample_item(i) for i in range(6)])
    for n in range(1500):
        store.store(sample_item(n % 6, content=f"update {n}", version=n + 2))
    expected = {f"item-{i:05d}": sample_item(i, content=f"update {n}", version=n + 2)
                for n in range(1500 - 6, 1500) for i in [n % 6]}
    assert store.retrieve_many(list(expected)) == expected
    store.close()
    with open_store(path) as reopened:
        assert reopened.retrieve_many(list(expected)) == expected
        assert reopened.count() == 6


def test_sustained_batch_updates_run_indefinitely(fast_dir) -> None:
    """The batch paths (one UNWIND statement; a transaction mixing new and existing ids) under 300
    batches: before the fix this failed after ~170 with the ROLLBACK's error hiding the real one."""
    path = os.path.join(fast_dir, "graph.kuzu")
    store = open_store(path)
    store.store_many([sample_item(i) for i in range(6)])
    for n in range(300):
        batch = [sample_item(i, content=f"batch {n}", version=n + 2) for i in range(6)]
        if n % 2:  # a new id too: the explicit-transaction path
            batch.append(sample_item(1000 + n))
        store.store_many(batch)
        if n % 50 == 0:
            store.add_relationship("item-00000", "item-00001", "next", {"n": n})
    last = {f"item-{i:05d}": sample_item(i, content="batch 299", version=301) for i in range(6)}
    assert store.retrieve_many(list(last)) == last
    assert store.count() == 6 + 150
    assert store.get_relationship("item-00000", "item-00001", "next").properties == {"n": 250}
    store.close()
    with open_store(path) as reopened:
        assert reopened.retrieve_many(list(last)) == last
        assert reopened.count() == 6 + 150


def test_an_error_inside_a_batch_transaction_is_the_one_raised(fast_dir) -> None:
    """A batch Kuzu cannot hold (pool/4, the most max_write_bytes allows) fails inside the explicit
    transaction: the error says so, it is not ROLLBACK's "No active transaction", and nothing of the
    batch is applied."""
    store = open_store(os.path.join(fast_dir, "graph.kuzu"), max_write_bytes=POOL // 4)
    store.store_many([sample_item(i) for i in range(4)])
    before = digest(store)
    each = int(POOL // 4 * 0.98) // 4 - 1024
    batch = [sample_item(i, content="x" * each, version=2) for i in range(4)] + [sample_item(10)]
    with pytest.raises(StoreError) as raised:
        store.store_many(batch)
    chain, error = [], raised.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert "buffer pool" in chain[0], chain
    assert not any("No active transaction" in text for text in chain), chain
    assert digest(store) == before, "a failed batch was partly applied"
    store.store(sample_item(11))  # and the store still works
    assert store.count() == 5
    store.close()


# --- item 2: prepare refuses what Kuzu cannot apply -----------------------------------------------------


def test_prepare_refuses_an_item_larger_than_one_kuzu_transaction_holds(tmp_path) -> None:
    store = open_store(tmp_path / "graph.kuzu")
    assert store.max_write_bytes == POOL // KuzuMemoryAdapter.WRITE_LIMIT_DIVISOR
    store.store(sample_item(1))
    before = digest(store)
    big = sample_item(2, content="x" * (2 * store.max_write_bytes))
    with pytest.raises(InvalidMemoryItemError, match=r"too large for kuzu: \d+ bytes, limit 1048576"):
        store.prepare_ops([Put(big)])
    with pytest.raises(InvalidMemoryItemError, match="too large for kuzu"):
        store.store(big)
    assert digest(store) == before
    near = sample_item(3, content="y" * (store.max_write_bytes - 4096))
    store.store(near)
    assert store.retrieve(near.id) == near
    store.close()


def test_a_batch_larger_than_one_transaction_is_applied_in_parts(tmp_path) -> None:
    store = open_store(tmp_path / "graph.kuzu")
    items = [sample_item(i, content="z" * (store.max_write_bytes // 2)) for i in range(9)]  # 4.5 limits
    store.store_many(items)
    assert store.retrieve_many([i.id for i in items]) == {i.id: i for i in items}
    store.close()


def test_prepare_refuses_a_version_outside_int64(tmp_path) -> None:
    store = open_store(tmp_path / "graph.kuzu")
    item = sample_item(1)
    outside = trusted_item(item.id, item.content, item.memory_type.value, dict(item.metadata), item.created_at,
                           item.updated_at, 2**63)  # built past the domain's own check, as a buggy caller could
    with pytest.raises(InvalidMemoryItemError, match="INT64"):
        store.prepare_ops([Put(outside)])
    assert store.count() == 0
    store.close()


def test_a_manager_aborts_an_oversized_item_in_prepare_and_keeps_working(tmp_path) -> None:
    """The issue's case: an item over LMDB + Kuzu passed prepare and failed Kuzu's apply forever after."""
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.application.manager import MemoryManager

    def manager() -> MemoryManager:
        return MemoryManager({"lmdb": LMDBMemoryAdapter(path=str(tmp_path / "lmdb")),
                              "kuzu": open_store(tmp_path / "graph.kuzu")}, transaction_log=str(tmp_path / "tx.log"))

    m = manager()
    with pytest.raises(TransactionAbortedError, match="too large for kuzu"):
        m.store(sample_item(1, content="x" * (2 << 20)))
    m.store(sample_item(2))
    assert [a.retrieve("item-00001") for a in m.adapters.values()] == [None, None]
    m.close()
    m = manager()
    assert [a.count() for a in m.adapters.values()] == [1, 1]
    m.close()


# --- item 4: a second opener ---------------------------------------------------------------------------


def test_a_second_adapter_in_this_process_is_refused_until_the_first_closes(tmp_path) -> None:
    path = tmp_path / "graph.kuzu"
    first = open_store(path)
    with pytest.raises(StoreLockedError) as refused:
        open_store(path)
    assert refused.value.path == str(path) and str(os.getpid()) in refused.value.holder
    first.store_many([sample_item(i) for i in range(20)])
    first.close()
    with open_store(path) as second:  # the lock went with the first store
        assert second.count() == 20


def test_another_process_gets_store_locked_error(tmp_path) -> None:
    path = str(tmp_path / "graph.kuzu")
    holder = open_store(path)
    proc = run_child(f"""
        import json, sys
        from {ADAPTER_MODULE} import KuzuMemoryAdapter
        from memsys.domain.errors import StoreLockedError
        try:
            KuzuMemoryAdapter(sys.argv[1], buffer_pool_size={POOL})
            print(json.dumps("opened"))
        except StoreLockedError as e:
            print(json.dumps(["StoreLockedError", e.holder]))
        """, path)
    kind, named = child_result(proc)
    assert kind == "StoreLockedError" and f"pid {os.getpid()}" in named
    holder.close()


def test_a_foreign_kuzu_process_holding_the_file_is_store_locked_error(tmp_path) -> None:
    """A process that opened the file with Kuzu directly (no memsys lock): Kuzu's own lock refuses
    us, and that must arrive as StoreLockedError, not a raw RuntimeError."""
    path = str(tmp_path / "graph.kuzu")
    open_store(path).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, kuzu
        db = kuzu.Database(sys.argv[1], buffer_pool_size=16 << 20)
        print("ready", flush=True)
        sys.stdin.read()
        """), path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError):
            open_store(path)
    finally:
        holder.communicate("", timeout=60)
    with open_store(path) as store:  # and once it is gone the store opens
        assert store.count() == 0


# --- item 12: damaged files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def damaged_base(tmp_path_factory):
    """A closed store (300 items, 100 edges, a checksum beside it) and the digest of its content."""
    folder = tmp_path_factory.mktemp("kuzu-base")
    path = str(folder / "base.kuzu")
    store = KuzuMemoryAdapter(path, buffer_pool_size=64 << 20)
    items = [sample_item(i) for i in range(300)]
    store.store_many(items)
    for i in range(0, 299, 3):
        store.add_relationship(items[i].id, items[i + 1].id, "next", {"w": i})
    expected = digest(store)
    store.close()
    return path, expected


_OPEN_ALL = f"""
import hashlib, json, sys
from {ADAPTER_MODULE} import KuzuMemoryAdapter
from memsys.domain.errors import CorruptStoreError
{inspect.getsource(digest)}
out = []
for path in sys.argv[1:]:
    try:
        store = KuzuMemoryAdapter(path, buffer_pool_size=64 << 20)
        out.append(["ok", digest(store)])
        store.close()
    except CorruptStoreError as e:
        out.append(["corrupt", str(e)])
print(json.dumps(out))
"""


def damage_copies(base: str, folder, damages) -> list[str]:
    paths = []
    for n, damage in enumerate(damages):
        path = str(folder / f"case{n}.kuzu")
        shutil.copy(base, path)
        if os.path.exists(base + ".memsys-sum"):
            shutil.copy(base + ".memsys-sum", path + ".memsys-sum")
        with open(path, "r+b") as f:
            damage(f)
        paths.append(path)
    return paths


def assert_detected_or_harmless(paths: list[str], expected: str, timeout: float = 240) -> list[str]:
    """Open every damaged copy in one child process: each must raise CorruptStoreError naming the
    file or read exactly the original content; the child must not die."""
    outcomes = child_result(run_child(_OPEN_ALL, *paths, timeout=timeout))
    for path, (kind, detail) in zip(paths, outcomes):
        if kind == "corrupt":
            assert path in detail, f"the error does not name the file: {detail}"
        else:
            assert detail == expected, f"{path}: damage read back silently as different content"
    return [kind for kind, _ in outcomes]


def used_pages(path: str) -> list[int]:
    with open(path, "rb") as f:
        data = f.read()
    return [i // 4096 for i in range(0, len(data), 4096) if any(data[i:i + 4096])]


@pytest.mark.parametrize("where", ["header", "body"])
def test_zeroed_blocks_are_corrupt_store_errors_never_crashes(damaged_base, tmp_path, where) -> None:
    """One zeroed 4 KiB block gave SIGSEGV once and a 23 GiB allocation another time."""
    base, expected = damaged_base
    pages = used_pages(base)
    chosen = pages[:3] if where == "header" else sorted(random.Random(12).sample(pages[3:], 5))

    def zero(page):
        return lambda f: (f.seek(page * 4096), f.write(b"\0" * 4096))

    kinds = assert_detected_or_harmless(damage_copies(base, tmp_path, [zero(p) for p in chosen]), expected)
    assert "corrupt" in kinds  # the chosen blocks hold data: some damage must be seen


def test_truncated_files_are_corrupt_store_errors(damaged_base, tmp_path) -> None:
    base, expected = damaged_base
    size = os.path.getsize(base)

    def cut(fraction):
        return lambda f: f.truncate(int(size * fraction))

    kinds = assert_detected_or_harmless(damage_copies(base, tmp_path, [cut(x) for x in (0.1, 0.5, 0.9)]), expected)
    assert kinds == ["corrupt"] * 3


def test_random_bit_flips_are_detected_or_harmless(damaged_base, tmp_path) -> None:
    """Bits flipped anywhere in the file, and inside stored values (which Kuzu, having no page
    checksums, would return as other values)."""
    base, expected = damaged_base
    with open(base, "rb") as f:
        data = f.read()
    rng = random.Random(7)
    pages = used_pages(base)
    anywhere = [rng.choice(pages) * 4096 * 8 + rng.randrange(4096 * 8) for _ in range(4)]
    marker = "emoji".encode()  # in every sample item's content
    values = [i for i in range(len(data)) if data.startswith(marker, i)]
    in_values = [rng.choice(values) * 8 + rng.randrange(len(marker) * 8) for _ in range(3)]

    def flip(bit):
        def damage(f):
            f.seek(bit // 8)
            byte = f.read(1)[0]
            f.seek(bit // 8)
            f.write(bytes([byte ^ (1 << (bit % 8))]))
        return damage

    kinds = assert_detected_or_harmless(damage_copies(base, tmp_path, [flip(b) for b in anywhere + in_values]),
                                        expected)
    assert kinds[len(anywhere):] == ["corrupt"] * len(in_values), kinds


def test_a_clean_store_reopens_without_a_probe_and_an_unclean_one_is_probed(tmp_path) -> None:
    path = str(tmp_path / "graph.kuzu")
    store = open_store(path)
    assert store.open_check == "new"
    store.store_many([sample_item(i) for i in range(50)])
    store.close()
    with open_store(path) as reopened:
        assert reopened.open_check == "checksum"  # the checksum beside the file matched: no child process
        assert reopened.count() == 50
    # A process killed after acknowledged writes leaves a WAL: the next open probes, then replays it.
    proc = run_child(f"""
        import os, sys
        from {ADAPTER_MODULE} import KuzuMemoryAdapter
        from memsys.testing import sample_item
        store = KuzuMemoryAdapter(sys.argv[1], buffer_pool_size={POOL})
        store.store_many([sample_item(i) for i in range(50, 80)])
        os._exit(0)
        """, path)
    assert proc.returncode == 0, proc.stderr
    with open_store(path) as recovered:
        assert recovered.open_check == "probe"
        assert recovered.count() == 80


# --- a flipped bit inside a stored value -----------------------------------------------------------------

MARKER = "MARKER-the-value-to-damage-" + "0123456789" * 5


def store_with_marker(path: str) -> int:
    store = open_store(path)
    store.store_many([sample_item(i) for i in range(50)] + [sample_item(99, content=MARKER)])
    store.close()
    with open(path, "rb") as f:
        offset = f.read().find(MARKER.encode())
    assert offset > 0, "the value is not stored verbatim; pick another way to reach it"
    return offset + 30


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x04]))


def test_a_flipped_bit_inside_a_value_is_a_corrupt_store_error_naming_the_item(tmp_path) -> None:
    path = str(tmp_path / "graph.kuzu")
    flip_byte(path, store_with_marker(path))
    with pytest.raises(CorruptStoreError, match="item-00099") as raised:
        open_store(path)  # the checksum beside the file differs: the probe reads every row's crc
    assert path in str(raised.value)


def test_every_read_checks_the_row_checksum(tmp_path) -> None:
    """Damage the probe cannot see (the file checksum was taken after the damage, as when a page
    went bad in memory before a clean close): the row's own crc still catches it on read."""
    from memsys.adapters.kuzu_store import _file_crc

    path = str(tmp_path / "graph.kuzu")
    flip_byte(path, store_with_marker(path))
    size, crc = _file_crc(path)
    with open(path + ".memsys-sum", "w") as f:
        json.dump({"size": size, "crc32": crc}, f)
    store = open_store(path)
    assert store.open_check == "checksum"
    assert store.retrieve("item-00001") == sample_item(1)
    with pytest.raises(CorruptStoreError, match="item-00099.*fails its checksum"):
        store.retrieve("item-00099")
    with pytest.raises(CorruptStoreError, match="item-00099"):
        store.search({})
    store.close()


def test_rows_written_before_the_checksum_column_are_still_read(tmp_path) -> None:
    """A store written by the adapter before rows carried a crc: opened, migrated, read, updated."""
    import kuzu

    path = str(tmp_path / "graph.kuzu")
    db = kuzu.Database(path, buffer_pool_size=POOL)
    con = kuzu.Connection(db)
    con.execute("CREATE NODE TABLE MemoryItem(id STRING PRIMARY KEY, content STRING, memory_type STRING, "
                "metadata STRING, created_at INT64, updated_at INT64, version INT64)")
    con.execute("CREATE REL TABLE RELATED(FROM MemoryItem TO MemoryItem, rel_type STRING, properties STRING)")
    old = [sample_item(i) for i in range(3)]
    for item in old:
        params = KuzuMemoryAdapter._params(item)
        del params["crc"]
        con.execute("CREATE (n:MemoryItem {id: $id, content: $content, memory_type: $memory_type, metadata: "
                    "$metadata, created_at: $created_at, updated_at: $updated_at, version: $version})", params)
    con.execute("MATCH (a:MemoryItem {id: 'item-00000'}), (b:MemoryItem {id: 'item-00001'}) "
                "CREATE (a)-[:RELATED {rel_type: 'next', properties: '{\"w\": 1}'}]->(b)")
    con.close()
    db.close()
    with open_store(path) as store:
        assert store.open_check == "probe"  # no checksum beside it yet
        assert store.retrieve_many([i.id for i in old]) == {i.id: i for i in old}
        assert store.get_relationship("item-00000", "item-00001", "next").properties == {"w": 1}
        store.store(sample_item(1, content="updated", version=2))
        assert store.retrieve("item-00001") == sample_item(1, content="updated", version=2)


# --- disk full (a real tmpfs) --------------------------------------------------------------------------

_DISK_FULL = f"""
import json, os, sys
from {ADAPTER_MODULE} import KuzuMemoryAdapter
from memsys.domain.errors import DiskFullError, MemsysError
from memsys.testing import sample_item
from memsys.testing.disk import fill

class Unguarded(KuzuMemoryAdapter):
    disk_reserve_bytes = -(1 << 40)  # never refuse a write: Kuzu meets ENOSPC itself

folder, kind, close_while_full = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
cls = Unguarded if kind == "unguarded" else KuzuMemoryAdapter
path = os.path.join(folder, "graph.kuzu")
store = cls(path, buffer_pool_size={POOL})
acked, errors = {{}}, set()

def write(items):
    try:
        store.store_many(items) if len(items) > 1 else store.store(items[0])
    except MemsysError as e:
        errors.add(type(e).__name__)
        return
    acked.update((i.id, i) for i in items)

for i in range(20):
    write([sample_item(i)])
ballast = fill(folder, leave=int(sys.argv[4]))
for k in range(40):  # updates, new ids and batches on a full disk
    write([sample_item(k % 30, content="v%d " % k * 200, version=k + 2)])
    if k % 10 == 0:
        write([sample_item(200 + k + j, content="w" * 3000) for j in range(5)])
try:
    reads = "same" if all(store.retrieve(i) == it for i, it in acked.items()) else "DIFFERENT"
except DiskFullError:
    reads = "DiskFullError"
closed_full = reopened_full = None
if close_while_full:  # close, and open again, while the disk is still full
    try:
        store.close()
        closed_full = "closed"
    except DiskFullError:
        closed_full = "DiskFullError"
    try:
        store = cls(path, buffer_pool_size={POOL})
        reopened_full = "same" if all(store.retrieve(i) == it for i, it in acked.items()) else "DIFFERENT"
        store.close()
    except DiskFullError:
        reopened_full = "DiskFullError"
os.remove(ballast)
if close_while_full:
    store = cls(path, buffer_pool_size={POOL})
for k in range(20):  # space is back: writes work again
    write([sample_item(100 + k, version=5)])
store.close()
store = KuzuMemoryAdapter(path, buffer_pool_size={POOL})
lost = [i for i, it in acked.items() if store.retrieve(i) != it]
print(json.dumps({{"acked": len(acked), "errors": sorted(errors), "reads": reads, "closed_full": closed_full,
                  "reopened_full": reopened_full, "lost": lost, "count": store.count()}}))
store.close()
"""


@pytest.mark.parametrize("close_while_full", [False, True])
def test_a_full_disk_is_disk_full_error_and_loses_nothing(small_disk, close_while_full) -> None:
    """Writes on a full disk are refused with DiskFullError before Kuzu sees ENOSPC (which it does
    not survive); reads go on; after space returns the store works and reopens with everything."""
    out = child_result(run_child(_DISK_FULL, small_disk, "guarded", "1" if close_while_full else "0", "0"))
    assert out["errors"] == ["DiskFullError"], out
    assert out["reads"] == "same", out
    assert out["lost"] == [], out
    assert out["acked"] == 40 and out["count"] == 40, out
    if close_while_full:
        assert out["closed_full"] == "closed" and out["reopened_full"] == "same", out


@pytest.mark.parametrize("leave,close_while_full", [(0, False), (8000, True)])
def test_kuzu_meeting_enospc_itself_is_disk_full_error_and_loses_nothing(small_disk, leave, close_while_full) -> None:
    """With the free-space guard off, Kuzu's own WAL write fails: its half-failed commit must never
    be read or replayed, closing it must not abort the process, and the error is DiskFullError."""
    out = child_result(run_child(_DISK_FULL, small_disk, "unguarded", "1" if close_while_full else "0", str(leave)))
    assert out["errors"] == ["DiskFullError"], out
    assert out["reads"] in ("same", "DiskFullError"), out
    assert out["lost"] == [], out
    assert out["count"] == out["acked"], out
    if close_while_full:
        assert out["closed_full"] in ("closed", "DiskFullError"), out
        assert out["reopened_full"] in ("same", "DiskFullError"), out
