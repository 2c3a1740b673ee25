"""Faults LMDB and DuckDB meet, for real.

Two processes growing one LMDB map; damaged LMDB meta pages and truncated files
(judged in a child process: the old adapter died of SIGBUS there); flipped bits
inside stored values; a real full disk (tmpfs) under both engines; a second
opener; DuckDB damage; out-of-range items DuckDB cannot apply; metadata keys
that a JSONPath cannot name; and ``query_sql`` writes, deadlines and locking.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memsys import (
    CorruptStoreError,
    DeadlineExceededError,
    DiskFullError,
    InvalidMemoryItemError,
    InvalidQueryError,
    MemoryItem,
    MemoryType,
    StoreClosedError,
    StoreLockedError,
)
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.domain.model import trusted_item
from memsys.domain.operations import Put
from memsys.domain.query import MemoryQuery
from memsys.testing import sample_item
from memsys.testing.disk import fill
from memsys.testing.samples import EPOCH

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: a signal there fails the test instead of ending the run."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def child_lines(proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, (
        f"child died: {describe_status(proc.returncode)}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def describe_status(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def needle_item(i: int) -> MemoryItem:
    """An item whose content is a unique run of letters, easy to find in a data file."""
    return sample_item(i, content=f"needle{i:04d}" + "abcdefghij" * 4)


# =============================================================================== LMDB


def lmdb_store_with_items(path, n: int = 200, **options) -> list[MemoryItem]:
    store = LMDBMemoryAdapter(path=path, **options)
    items = [needle_item(i) for i in range(n)]
    store.store_many(items[: n // 2])
    for item in items[n // 2:]:  # one commit each: many transactions, both meta pages in use
        store.store(item)
    store.close()
    return items


_LMDB_GROWER = """
    import json, sys
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.testing import sample_item
    path, who = sys.argv[1], sys.argv[2]
    store = LMDBMemoryAdapter(path=path, map_size=64 << 10, sync=False)
    print(json.dumps({"ready": who}), flush=True)
    n = 0
    for line in sys.stdin:  # one phase per line: write that many ~3 KB items (the map must grow)
        for _ in range(int(line)):
            item = sample_item(n, prefix=who, content=who * 1500)
            store.store(item)
            n += 1
            print(json.dumps({"acked": item.id}), flush=True)
        print(json.dumps({"phase": n}), flush=True)
    store.close()
"""


def test_two_processes_growing_one_lmdb_map_lose_nothing(tmp_path) -> None:
    path = str(tmp_path / "shared")
    LMDBMemoryAdapter(path=path, map_size=64 << 10).close()
    writers = {who: subprocess.Popen([sys.executable, "-c", textwrap.dedent(_LMDB_GROWER), path, who], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for who in ("a", "b")}
    acked: list[str] = []

    def phase(who: str, count: int) -> None:
        writers[who].stdin.write(f"{count}\n")
        writers[who].stdin.flush()

    def finish_phase(who: str) -> None:
        for line in writers[who].stdout:
            record = json.loads(line)
            if "phase" in record:
                return
            acked.append(record["acked"])
        pytest.fail(f"writer {who} died: {writers[who].stderr.read()[-1500:]}")

    try:
        for writer in writers.values():  # both environments are open, each with a 64 KiB map
            assert "ready" in json.loads(writer.stdout.readline()), writer.stderr.read()[-1500:]
        phase("a", 60)  # a grows the map far past b's: b's next transaction meets MDB_MAP_RESIZED
        finish_phase("a")
        phase("b", 60)
        finish_phase("b")
        phase("a", 60)  # then both at once, each growing the map in turn
        phase("b", 60)
        finish_phase("a")
        finish_phase("b")
    finally:
        for writer in writers.values():
            writer.stdin.close()
            writer.wait(timeout=60)
    assert all(writer.returncode == 0 for writer in writers.values())
    assert len(acked) == 240
    store = LMDBMemoryAdapter(path=path)
    try:
        found = store.retrieve_many(acked)
        assert sorted(found) == sorted(acked), "acknowledged writes are missing"
        assert all(found[i].content == i.split("-")[0] * 1500 for i in acked)
    finally:
        store.close()


def test_second_lmdb_adapter_in_one_process_is_refused_naming_the_holder(tmp_path) -> None:
    first = LMDBMemoryAdapter(path=tmp_path / "db", name="first")
    first.store(sample_item(1))
    with pytest.raises(StoreLockedError) as caught:
        LMDBMemoryAdapter(path=tmp_path / "db", name="second")
    assert "first" in caught.value.holder and str(os.getpid()) in caught.value.holder
    assert first.retrieve("item-00001") == sample_item(1)  # the refused opener changed nothing
    first.close()
    again = LMDBMemoryAdapter(path=tmp_path / "db")
    assert again.retrieve("item-00001") == sample_item(1)
    again.close()


_LMDB_JUDGE = """
    import json, sys
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.domain.errors import CorruptStoreError, MemsysError
    for path in sys.argv[1:]:
        print(json.dumps({"case": path}), flush=True)  # names the case if the next open kills us
        try:
            store = LMDBMemoryAdapter(path=path)
            try:
                items = {item.id: item.to_dict() for item in store.iter_items()}
            finally:
                store.close()
            outcome = {"outcome": "opened", "items": items}
        except CorruptStoreError as exc:
            outcome = {"outcome": "corrupt", "path": exc.path, "message": str(exc)}
        except MemsysError as exc:
            outcome = {"outcome": "typed", "type": type(exc).__name__, "message": str(exc)}
        except Exception as exc:
            outcome = {"outcome": "raw", "type": type(exc).__name__, "message": str(exc)}
        print(json.dumps({"case": path, **outcome}), flush=True)
"""


def judge_lmdb_copies(pristine: str, damages: dict, tmp_path) -> dict[str, dict]:
    """Copy the pristine environment once per damage, damage it, and open each in one child."""
    paths = {}
    for name, damage in damages.items():
        copy = str(tmp_path / f"case-{name}")
        shutil.copytree(pristine, copy)
        damage(os.path.join(copy, "data.mdb"))
        paths[copy] = name
    lines = child_lines(run_child(_LMDB_JUDGE, *paths, timeout=120))
    return {paths[line["case"]]: line for line in lines if "outcome" in line}


def truncate_to(size_of):
    def damage(data: str) -> None:
        os.truncate(data, size_of(os.path.getsize(data)))
    return damage


def write_at(offset: int, data: bytes):
    def damage(path: str) -> None:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(data)
    return damage


def flip_bit(offset: int, bit: int):
    def damage(path: str) -> None:
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ (1 << bit)]))
    return damage


# LMDB 0.9 on x86-64: a meta page is a 16-byte page header, then MDB_meta (mdb.c).
PAGE = 4096
M_FLAGS, M_MAGIC, M_VERSION, M_PSIZE = 10, 16, 20, 40
M_MAIN_ROOT, M_LAST_PG, M_TXNID = 128, 136, 144


def meta_txnids(data: str) -> tuple[int, int]:
    with open(data, "rb") as f:
        raw = f.read(2 * PAGE)
    return struct.unpack_from("<Q", raw, M_TXNID)[0], struct.unpack_from("<Q", raw, PAGE + M_TXNID)[0]


@pytest.fixture
def pristine_lmdb(tmp_path):
    path = str(tmp_path / "pristine")
    items = lmdb_store_with_items(path)
    t0, t1 = meta_txnids(os.path.join(path, "data.mdb"))
    assert abs(t0 - t1) == 1, "fixture needs a committed environment"
    return path, items, (PAGE if t1 > t0 else 0), (0 if t1 > t0 else PAGE)


def test_truncated_or_emptied_lmdb_file_is_corrupt_store_error_not_sigbus(pristine_lmdb, tmp_path) -> None:
    pristine, _, _, _ = pristine_lmdb
    damages = {
        "half": truncate_to(lambda size: size // 2),
        "one-page": truncate_to(lambda size: PAGE),
        "metas-only": truncate_to(lambda size: 2 * PAGE),
        "last-page-cut": truncate_to(lambda size: size - PAGE),
        "inside-meta-1": truncate_to(lambda size: PAGE + 100),
        "empty": truncate_to(lambda size: 0),
        "deleted": os.unlink,
    }
    outcomes = judge_lmdb_copies(pristine, damages, tmp_path)
    for name in damages:
        outcome = outcomes[name]
        assert outcome["outcome"] == "corrupt", f"{name}: {outcome}"
        assert outcome["path"].endswith("data.mdb") and "data.mdb" in outcome["message"], f"{name}: {outcome}"


def test_damaged_lmdb_meta_pages_are_corrupt_store_error(pristine_lmdb, tmp_path) -> None:
    pristine, _, newest, older = pristine_lmdb
    damages = {
        "zero-meta-0": write_at(0, bytes(PAGE)),
        "zero-meta-1": write_at(PAGE, bytes(PAGE)),
        "zero-both": write_at(0, bytes(2 * PAGE)),
        "magic": flip_bit(M_MAGIC, 0),
        "version": flip_bit(PAGE + M_VERSION, 1),
        "page-size": flip_bit(M_PSIZE + 1, 0),
        "meta-flag": flip_bit(PAGE + M_FLAGS, 3),
        "last-page-high-bit": flip_bit(newest + M_LAST_PG + 4, 0),
        "main-root-high-bit": flip_bit(newest + M_MAIN_ROOT + 5, 2),
        "newest-txnid-parity": flip_bit(newest + M_TXNID, 0),
        # Without a check, LMDB would take the older meta as newest and drop the last commit silently.
        "older-txnid-made-newest": flip_bit(older + M_TXNID, 5),
    }
    outcomes = judge_lmdb_copies(pristine, damages, tmp_path)
    for name in damages:
        outcome = outcomes[name]
        assert outcome["outcome"] == "corrupt" and outcome["path"].endswith("data.mdb"), f"{name}: {outcome}"


def test_zeroed_lmdb_data_pages_are_corrupt_store_error_not_sigabrt(pristine_lmdb, tmp_path) -> None:
    # LMDB asserts (SIGABRT) on a damaged branch or leaf page; the adapter walks the pages first.
    pristine, items, _, _ = pristine_lmdb
    pages = os.path.getsize(os.path.join(pristine, "data.mdb")) // PAGE
    damages = {f"page-{page}": write_at(page * PAGE, bytes(PAGE)) for page in range(2, pages, max(1, pages // 10))}
    outcomes = judge_lmdb_copies(pristine, damages, tmp_path)
    expected = json.loads(json.dumps({item.id: item.to_dict() for item in items}))
    for name in damages:
        outcome = outcomes[name]
        if outcome["outcome"] == "opened":  # a free page: nothing lost
            assert outcome["items"] == expected, f"{name} returned wrong items"
        else:
            assert outcome["outcome"] == "corrupt" and outcome["path"].endswith("data.mdb"), f"{name}: {outcome}"
    assert sum(o["outcome"] == "corrupt" for o in outcomes.values()) >= len(damages) // 2


def test_random_bit_flips_in_lmdb_meta_pages_never_kill_or_mislead(pristine_lmdb, tmp_path) -> None:
    import random

    pristine, items, _, _ = pristine_lmdb
    rng = random.Random(7)
    expected = {item.id: item.to_dict() for item in items}
    damages = {}
    for n in range(16):
        page = rng.choice((0, PAGE))
        damages[f"flip-{n}"] = flip_bit(page + rng.randrange(8, 16 + 136), rng.randrange(8))
    outcomes = judge_lmdb_copies(pristine, damages, tmp_path)
    for name, outcome in outcomes.items():
        if outcome["outcome"] == "opened":  # a flip in a field LMDB ignores: every value exact
            assert outcome["items"] == json.loads(json.dumps(expected)), f"{name} returned wrong items"
        else:
            assert outcome["outcome"] == "corrupt", f"{name}: {outcome}"
    assert len(outcomes) == len(damages)


def test_flipped_bit_inside_an_lmdb_value_is_corrupt_store_error_naming_the_id(tmp_path) -> None:
    path = tmp_path / "db"
    items = lmdb_store_with_items(path, n=40)
    data = path / "data.mdb"
    raw = bytearray(data.read_bytes())
    needle = b"needle0007"
    start, hits = 0, 0
    while (at := raw.find(needle, start)) >= 0:  # the live value and any stale copy
        raw[at + 8] ^= 0x20  # "0" -> "\x10": still a JSON string, a silently wrong value without a checksum
        start, hits = at + 1, hits + 1
    assert hits
    data.write_bytes(bytes(raw))
    store = LMDBMemoryAdapter(path=path)
    try:
        with pytest.raises(CorruptStoreError) as caught:
            store.retrieve(items[7].id)
        assert items[7].id in str(caught.value) and caught.value.path.endswith("data.mdb")
        with pytest.raises(CorruptStoreError):
            store.search({})
        assert store.retrieve(items[8].id) == items[8]
        store.store(items[7])  # rewriting the value heals it
        assert store.retrieve(items[7].id) == items[7]
    finally:
        store.close()


def test_values_written_without_a_checksum_header_still_load(tmp_path) -> None:
    import lmdb

    path = str(tmp_path / "legacy")
    env = lmdb.open(path, max_dbs=2, subdir=True)
    db = env.open_db(b"items")
    legacy = [sample_item(i) for i in range(3)]
    with env.begin(write=True, db=db) as txn:  # the format the adapter wrote before values had a header
        for item in legacy:
            txn.put(item.id.encode(), json.dumps(item.to_dict(), ensure_ascii=False).encode())
    env.close()
    store = LMDBMemoryAdapter(path=path)
    try:
        assert store.retrieve_many([i.id for i in legacy]) == {i.id: i for i in legacy}
        updated = legacy[0].replace(content="new", version=2)
        store.store(updated)
        assert store.search({}) == [updated, legacy[1], legacy[2]]
    finally:
        store.close()


_LMDB_TRUNCATED_WHILE_OPEN = """
    import json, os, sys
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.domain.errors import CorruptStoreError
    from memsys.testing import sample_item
    store = LMDBMemoryAdapter(path=sys.argv[1])
    store.store_many([sample_item(i, content="x" * 3000) for i in range(100)])
    os.truncate(os.path.join(sys.argv[1], "data.mdb"), 3 * 4096)
    try:
        store.store(sample_item(1000))
        print(json.dumps({"outcome": "stored"}))
    except CorruptStoreError as exc:
        print(json.dumps({"outcome": "corrupt", "path": exc.path}))
"""


def test_lmdb_write_after_file_truncated_under_it_is_refused_not_sigbus(tmp_path) -> None:
    [line] = child_lines(run_child(_LMDB_TRUNCATED_WHILE_OPEN, str(tmp_path / "db")))
    assert line == {"outcome": "corrupt", "path": str(tmp_path / "db" / "data.mdb")}


def test_lmdb_full_disk_is_disk_full_error_and_loses_nothing(small_disk) -> None:
    path = os.path.join(small_disk, "db")
    store = LMDBMemoryAdapter(path=path)
    store.store_many([sample_item(i) for i in range(20)])
    ballast = fill(small_disk, leave=64 << 10)
    acked = [f"item-{i:05d}" for i in range(20)]
    with pytest.raises(DiskFullError) as caught:
        for i in range(20, 2000):
            store.store(sample_item(i, content="y" * 8000))
            acked.append(f"item-{i:05d}")
    assert caught.value.path and caught.value.path.startswith(small_disk)
    assert sorted(store.retrieve_many(acked)) == acked
    os.unlink(ballast)
    store.store(sample_item(5000))  # space is back: the same adapter writes again
    store.close()
    reopened = LMDBMemoryAdapter(path=path)
    try:
        assert sorted(reopened.retrieve_many(acked + ["item-05000"])) == acked + ["item-05000"]
    finally:
        reopened.close()


_LMDB_OPEN_ON_FULL_DISK = """
    import json, sys
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.domain.errors import DiskFullError
    try:
        store = LMDBMemoryAdapter(path=sys.argv[1])
        store.store_many([])
        print(json.dumps({"outcome": "opened"}))
    except DiskFullError as exc:
        print(json.dumps({"outcome": "disk-full"}))
"""


def test_new_lmdb_environment_on_a_full_disk_is_disk_full_error_not_sigbus(small_disk) -> None:
    # LMDB maps its lock file and writes its reader table into it: a sparse page on a full
    # tmpfs is a SIGBUS. The adapter allocates the file first.
    fill(small_disk, leave=0)
    [line] = child_lines(run_child(_LMDB_OPEN_ON_FULL_DISK, os.path.join(small_disk, "new")))
    assert line == {"outcome": "disk-full"}


# =============================================================================== DuckDB


@pytest.fixture
def duck(tmp_path):
    store = DuckDBMemoryAdapter(path=tmp_path / "items.duckdb")
    store.store_many([sample_item(i) for i in range(30)])
    yield store
    store.close()


@pytest.mark.parametrize("field, value", [("version", 2**63), ("version", 2**64 + 5)])
def test_duckdb_prepare_refuses_a_version_bigint_cannot_hold(duck, field, value) -> None:
    good = sample_item(99)
    bad = trusted_item(good.id, good.content, good.memory_type.value, good.metadata, good.created_at,
                       good.updated_at, value)  # past the domain's own check: prepare must hold alone
    before = duck.search({})
    with pytest.raises(InvalidMemoryItemError) as caught:
        duck.prepare_ops([Put(sample_item(98)), Put(bad)])
    assert field in str(caught.value) and str(2**63 - 1) in str(caught.value)
    with pytest.raises(InvalidMemoryItemError):
        duck.store_many([sample_item(98), bad])
    assert duck.search({}) == before
    duck.store(sample_item(98))  # the store is not bricked
    assert duck.retrieve("item-00098") == sample_item(98)


def test_duckdb_prepare_refuses_json_over_the_engine_string_limit(duck, monkeypatch) -> None:
    # DuckDB keeps at most 4 GiB in one string; the limit is lowered here so the test stays small.
    from memsys.adapters import duckdb_store

    monkeypatch.setattr(duckdb_store, "MAX_TEXT_BYTES", 4000)
    before = duck.search({})
    with pytest.raises(InvalidMemoryItemError) as caught:
        duck.store(sample_item(99, content="é" * 2500))  # 5,000 bytes of UTF-8
    assert "content" in str(caught.value) and "4000" in str(caught.value)
    assert duck.search({}) == before


AWKWARD_KEYS = ["café", "日本語", "", "\x00", "a\x00b", "\n", "\x1f", "\x7f", '"', "'", ".", "a.b", "[0]", "['x']",
                "$", "$.x", "\\", "\\\"", "~", "/", "~1", "~0/x", "a/b", " ", "\u2028", "\ufeff", "😀", "*", ".."]
keys = st.one_of(st.sampled_from(AWKWARD_KEYS),
                 st.text(st.characters(blacklist_categories=("Cs",)), max_size=6))
values = st.one_of(st.sampled_from(["v", "", "café", "\x00", "V"]), st.integers(-3, 3), st.booleans())


@settings(max_examples=60)
@given(data=st.data())
def test_duckdb_metadata_search_agrees_with_memory_query_for_awkward_keys(tmp_path_factory, data) -> None:
    store = _awkward_store(tmp_path_factory)
    metadatas = data.draw(st.lists(st.dictionaries(keys, values, max_size=4), min_size=1, max_size=5))
    items = [MemoryItem(id=f"m{i}", content="c", memory_type=MemoryType.LONG_TERM, metadata=meta,
                        created_at=EPOCH) for i, meta in enumerate(metadatas)]
    store.delete_many([item.id for item in store.iter_items()])
    store.store_many(items)
    candidates = [(k, v) for meta in metadatas for k, v in meta.items()]
    key, value = data.draw(st.sampled_from(candidates) if candidates else st.tuples(keys, values))
    queries = [{"metadata": {key: value}}, {"metadata": {key: value}, "limit": 1}]
    if key:  # "metadata." alone is not a key query
        queries.append({f"metadata.{key}": value})
    for query in queries:
        expected = MemoryQuery.parse(query).select(items)
        assert store.search(query) == expected, f"query {query!r}"


_AWKWARD: dict = {}


def _awkward_store(tmp_path_factory) -> DuckDBMemoryAdapter:
    # One store for every example (a fresh DuckDB file per example costs more than the test).
    if "store" not in _AWKWARD or _AWKWARD["store"].closed:
        _AWKWARD["store"] = DuckDBMemoryAdapter(path=tmp_path_factory.mktemp("awkward") / "keys.duckdb", sync=False)
    return _AWKWARD["store"]


@pytest.fixture(autouse=True, scope="module")
def _close_awkward_store():
    yield
    if "store" in _AWKWARD:
        _AWKWARD.pop("store").close()


def test_duckdb_metadata_search_finds_non_ascii_and_empty_keys(duck) -> None:
    item = sample_item(100).replace(metadata={"café": "v", "": "empty", "日本": "x", "a\x01": "ctl"})
    duck.store(item)
    for key, value in item.metadata.items():
        assert duck.search({"metadata": {key: value}}) == [item], repr(key)


@pytest.mark.parametrize("sql", [
    "WITH d AS (DELETE FROM memory_items RETURNING *) SELECT count(*) AS n FROM d",
    "WITH u AS (UPDATE memory_items SET version = 0 RETURNING *) SELECT count(*) AS n FROM u",
    "WITH i AS (INSERT INTO memory_items SELECT * FROM memory_items RETURNING *) SELECT count(*) AS n FROM i",
])
def test_query_sql_refuses_writes_hidden_in_a_cte(duck, sql) -> None:
    before = duck.search({})
    with pytest.raises(InvalidQueryError):
        duck.query_sql(sql)
    assert duck.search({}) == before


def test_query_sql_force_checkpoint_is_a_refused_query_not_a_transient_error(duck) -> None:
    with pytest.raises(InvalidQueryError):
        duck.query_sql("SELECT * FROM force_checkpoint()")
    assert duck.query_sql("SELECT count(*) AS n FROM memory_items") == [{"n": 30}]


LONG_QUERY = "SELECT count(*) AS n FROM range(1000000000000) a"


def run_in_thread(fn):
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def test_query_sql_has_a_deadline(duck) -> None:
    thread, outcome = run_in_thread(lambda: duck.query_sql(LONG_QUERY, timeout=0.3))
    thread.join(timeout=20)
    assert not thread.is_alive(), "query_sql ran on past its deadline"
    assert isinstance(outcome.get("error"), DeadlineExceededError), outcome
    assert duck.count() == 30


def test_query_sql_does_not_hold_the_store_lock(duck) -> None:
    thread, outcome = run_in_thread(lambda: duck.query_sql(LONG_QUERY, timeout=20))
    deadline = time.monotonic() + 10
    while not duck._queries and time.monotonic() < deadline:  # wait until the query is running
        time.sleep(0.01)
    assert duck.retrieve("item-00003") == sample_item(3)
    duck.store(sample_item(31))
    assert thread.is_alive(), "the query should still be running while other calls went through"
    duck.close()  # interrupts the running query
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), StoreClosedError), outcome


_DUCK_HOLDER = """
    import sys, time
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "memsys":
        from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
        store = DuckDBMemoryAdapter(path=path, name="holder")
    else:
        import duckdb
        con = duckdb.connect(path)
    print("ready", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("kind", ["memsys", "raw-duckdb"])
def test_second_duckdb_opener_in_another_process_gets_store_locked_error(tmp_path, kind) -> None:
    path = str(tmp_path / "items.duckdb")
    DuckDBMemoryAdapter(path=path).close()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_DUCK_HOLDER), kind, path], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        with pytest.raises(StoreLockedError) as caught:
            DuckDBMemoryAdapter(path=path)
        assert str(holder.pid) in caught.value.holder
    finally:
        holder.communicate(input="", timeout=30)
    DuckDBMemoryAdapter(path=path).close()  # the lock died with its holder


def test_second_duckdb_adapter_in_one_process_gets_store_locked_error(duck) -> None:
    with pytest.raises(StoreLockedError) as caught:
        DuckDBMemoryAdapter(path=duck.path)
    assert str(os.getpid()) in caught.value.holder
    assert duck.count() == 30


def test_duckdb_full_disk_is_disk_full_error_and_loses_nothing(small_disk) -> None:
    path = os.path.join(small_disk, "items.duckdb")
    store = DuckDBMemoryAdapter(path=path)
    store.store_many([sample_item(i) for i in range(20)])
    store.flush()
    acked = [f"item-{i:05d}" for i in range(20)]
    ballast = fill(small_disk, leave=128 << 10)
    with pytest.raises(DiskFullError) as caught:
        for i in range(20, 3000):
            store.store(sample_item(i, content="z" * 6000))
            acked.append(f"item-{i:05d}")
    assert caught.value.path == path
    with pytest.raises(DiskFullError):
        store.flush()  # a checkpoint on a full disk: DuckDB invalidates its database
    os.unlink(ballast)
    assert sorted(store.retrieve_many(acked)) == acked  # reopened from its files, nothing lost
    store.store(sample_item(5000))
    store.close()
    reopened = DuckDBMemoryAdapter(path=path)
    try:
        assert sorted(reopened.retrieve_many(acked + ["item-05000"])) == acked + ["item-05000"]
    finally:
        reopened.close()


_DUCK_JUDGE = """
    import json, sys
    from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
    from memsys.domain.errors import CorruptStoreError, MemsysError
    for path in sys.argv[1:]:
        print(json.dumps({"case": path}), flush=True)
        try:
            store = DuckDBMemoryAdapter(path=path)
            try:
                items = {item.id: item.to_dict() for item in store.iter_items()}
            finally:
                store.close()
            outcome = {"outcome": "opened", "items": items}
        except CorruptStoreError as exc:
            outcome = {"outcome": "corrupt", "path": exc.path}
        except MemsysError as exc:
            outcome = {"outcome": "typed", "type": type(exc).__name__, "message": str(exc)}
        except Exception as exc:
            outcome = {"outcome": "raw", "type": type(exc).__name__, "message": str(exc)}
        print(json.dumps({"case": path, **outcome}), flush=True)
"""


def test_damaged_duckdb_file_is_corrupt_store_error_never_a_crash(tmp_path) -> None:
    import random

    pristine = str(tmp_path / "pristine.duckdb")
    store = DuckDBMemoryAdapter(path=pristine)
    items = [sample_item(i) for i in range(300)]
    store.store_many(items)
    store.close()  # checkpointed: everything is in the database file
    size = os.path.getsize(pristine)
    rng = random.Random(11)
    damages = {
        "truncated-half": truncate_to(lambda n: n // 2),
        "truncated-100": truncate_to(lambda n: 100),
        "truncated-empty": truncate_to(lambda n: 0),
        "zero-header": write_at(0, bytes(4096)),
        "zero-db-header-1": write_at(4096, bytes(4096)),
        "zero-db-header-2": write_at(8192, bytes(4096)),
        "zero-first-block": write_at(12288, bytes(4096)),
        **{f"flip-{n}": flip_bit(rng.randrange(size), rng.randrange(8)) for n in range(12)},
    }
    paths = {}
    for name, damage in damages.items():
        copy = str(tmp_path / f"{name}.duckdb")
        shutil.copyfile(pristine, copy)
        damage(copy)
        paths[copy] = name
    lines = child_lines(run_child(_DUCK_JUDGE, *paths, timeout=180))
    outcomes = {paths[line["case"]]: line for line in lines if "outcome" in line}
    assert len(outcomes) == len(damages)
    expected = json.loads(json.dumps({item.id: item.to_dict() for item in items}))
    for name, outcome in outcomes.items():
        if name.startswith(("truncated", "zero")):
            assert outcome["outcome"] == "corrupt", f"{name}: {outcome}"
        elif outcome["outcome"] == "opened":  # a flip in a free region: every value exact
            assert outcome["items"] == expected, f"{name} returned wrong items"
        else:
            assert outcome["outcome"] == "corrupt", f"{name}: {outcome}"
