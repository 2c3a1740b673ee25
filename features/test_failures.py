"""Steps for features/failures.feature."""

from __future__ import annotations

import threading

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from memsys import (
    CommitIncompleteError,
    ConflictError,
    CorruptStoreError,
    MemoryItem,
    MemoryManager,
    MemoryType,
    StoreUnavailableError,
)
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.testing.faults import FaultInjector
from memsys.testing.crash import SimulatedCrash, abandon, crash_at

scenarios("failures.feature")

STORES = ("lmdb", "duckdb", "tinydb")


def open_manager(root) -> MemoryManager:
    return MemoryManager({"lmdb": LMDBMemoryAdapter(path=root / "lmdb"),
                          "duckdb": DuckDBMemoryAdapter(path=root / "items.duckdb"),
                          "tinydb": TinyDBMemoryAdapter(path=root / "items.json")},
                         transaction_log=root / "txlog")


def note(item_id: str, content: object = "remember this") -> MemoryItem:
    return MemoryItem(id=item_id, content=content, memory_type=MemoryType.KNOWLEDGE)


@pytest.fixture
def world(tmp_path):
    state = {"root": tmp_path}
    yield state
    manager = state.get("manager")
    if manager is not None and not manager.adapters["lmdb"].closed:
        manager.close()


@given("a memory manager over LMDB, DuckDB and TinyDB with a transaction log")
def manager_over_three_stores(world):
    world["manager"] = open_manager(world["root"])


@given("TinyDB will refuse every write")
def tinydb_refuses(world):
    world["faults"] = FaultInjector(world["manager"].adapters["tinydb"], seed=1).fail(
        "apply", error=StoreUnavailableError)


@when(parsers.parse('a transaction stores "{item_id}" in every store'))
def store_everywhere(world, item_id):
    try:
        world["manager"].store(note(item_id))
        world["error"] = None
    except Exception as exc:
        world["error"] = exc


@then(parsers.parse('the transaction reports it is committed but incomplete on "{store}"'))
def committed_but_incomplete(world, store):
    error = world["error"]
    assert isinstance(error, CommitIncompleteError) and error.committed and error.store == store


def present(world, item_id):
    return {name for name in STORES if world["manager"].adapters[name].retrieve(item_id) is not None}


@then(parsers.parse('"{item_id}" is on "{first}" and "{second}" but not on "{third}"'))
def on_two_of_three(world, item_id, first, second, third):
    assert present(world, item_id) == {first, second}


@when("TinyDB is healed and the manager recovers")
def heal_and_recover(world):
    world["faults"].remove()
    assert world["manager"].recover().ok


@when(parsers.parse('a transaction stores "{item_id}" in every store and then raises an error'))
def store_then_raise(world, item_id):
    with pytest.raises(RuntimeError):
        with world["manager"].with_transaction(list(STORES)) as tx:
            for adapter in tx.adapters.values():
                adapter.store(note(item_id))
            raise RuntimeError("the caller changed its mind")


@given(parsers.parse('"{item_id}" holds {value:d} on "{store}"'))
def holds(world, item_id, value, store):
    world["manager"].store(note(item_id, value), [store])


@when(parsers.parse('two transactions read "{item_id}" and both try to increment it'))
def race(world, item_id):
    manager = world["manager"]
    both_read = threading.Barrier(2)
    first_done = threading.Event()
    outcomes = []

    def increment(wait_for_first: bool) -> None:
        try:
            with manager.with_transaction(["lmdb"]):
                current = manager.adapters["lmdb"].retrieve(item_id)
                both_read.wait(10)
                if wait_for_first:
                    first_done.wait(10)
                manager.adapters["lmdb"].store(current.replace(content=current.content + 1))
            outcomes.append("committed")
        except ConflictError:
            outcomes.append("conflict")
        finally:
            if not wait_for_first:
                first_done.set()

    threads = [threading.Thread(target=increment, args=(flag,)) for flag in (False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    world["outcomes"] = sorted(outcomes)


@then("one commits and the other fails with a conflict")
def one_conflict(world):
    assert world["outcomes"] == ["committed", "conflict"]


@then(parsers.parse('"{item_id}" holds {value:d} on "{store}"'))
def holds_value(world, item_id, value, store):
    assert world["manager"].adapters[store].retrieve(item_id).content == value


@when(parsers.parse('the process dies {step} while storing "{item_id}" in every store'))
def dies(world, step, item_id):
    manager = world["manager"]
    crash_at(manager, step)
    with pytest.raises(SimulatedCrash):
        manager.store(note(item_id))
    abandon(manager)


@when("the manager is opened again on the same stores and log")
def reopen(world):
    world["manager"] = open_manager(world["root"])


@then(parsers.re(r'"(?P<item_id>[^"]+)" is on (?P<where>every store|no store)$'))
def on_where(world, item_id, where):
    expected = set(STORES) if where == "every store" else set()
    assert present(world, item_id) == expected


@given("the TinyDB file holds garbage")
def garbage(world):
    world["manager"].close()
    world["garbage"] = b"\x00\xffnot json at all{"
    (world["root"] / "items.json").write_bytes(world["garbage"])


@when("the TinyDB store is opened")
def open_tinydb(world):
    try:
        TinyDBMemoryAdapter(path=world["root"] / "items.json")
        world["error"] = None
    except Exception as exc:
        world["error"] = exc


@then("opening fails with a corrupt-store error naming the file")
def corrupt_error(world):
    error = world["error"]
    assert isinstance(error, CorruptStoreError) and "items.json" in str(error)


@then("the file still holds the same garbage")
def untouched(world):
    assert (world["root"] / "items.json").read_bytes() == world["garbage"]
