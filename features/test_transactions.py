"""Steps for features/transactions.feature: cross-store writes under faults, crashes and power loss."""

from __future__ import annotations

import contextlib
import logging
import os
import threading

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from features.conftest import note, partner, present_on
from memsys import CommitIncompleteError, ConflictError, DiskFullError, MemoryManager, TransactionAbortedError
from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
from memsys.testing.crash import SimulatedCrash, abandon, crash_at, run_campaign
from memsys.testing.disk import fill
from memsys.testing.plugin import skip_server_unavailable
from memsys.testing.port_faults import FaultPlan, wrap_store
from memsys.testing.powerloss import PowerLossFS, PowerLossUnavailable

scenarios("transactions.feature")

#: "before" the decision: prepared, nothing logged; "after": the decision is fsynced, nothing applied.
DECISION = {"before": "after_prepare", "after": "after_log_sync"}


# ------------------------------------------------------------------ two stores

def _open_pair(world, store: str, plan: FaultPlan | None = None, *, first_too: bool = False) -> MemoryManager:
    second = partner(store)
    world["pair"] = (store, second)
    first_store = world.open_store(store)
    second_store = world.open_store(second)
    if plan is not None:
        second_store = wrap_store(second_store, plan)
        if first_too:
            first_store = wrap_store(first_store, plan)
    return world.manager({store: first_store, second: second_store})


@given(parsers.parse("a manager over {store} and a second store with a transaction log"))
def manager_over_pair(world, store):
    world["plan"] = FaultPlan(seed=9)
    _open_pair(world, store, world["plan"])


@given(parsers.parse("a manager over {store} and a second store with a transaction log, where {store_} can fail"))
def manager_over_pair_first_faulty(world, store, store_):
    world["plan"] = FaultPlan(seed=9)
    _open_pair(world, store, world["plan"], first_too=True)


@given(parsers.parse("{store} will fail every write it is asked to apply"))
def fails_every_apply(world, store):
    world["plan"].add("apply_prepared", "transient", store=store)


@then(parsers.parse("the write is committed but incomplete on {store}"))
def committed_but_incomplete(world, store):
    error = world["error"]
    assert isinstance(error, CommitIncompleteError), repr(error)
    assert error.committed and error.store == store, (error.committed, error.store)


@then(parsers.parse('"{item_id}" is on the second store only'))
def on_second_only(world, item_id):
    assert present_on(world["manager"], item_id) == {world["pair"][1]}


@when(parsers.parse("{store} is healed and the manager recovers"))
def heal_and_recover(world, store):
    world["plan"].heal()
    report = world["manager"].recover()
    assert report.ok, report


@when(parsers.parse('a transaction rewrites "{old_id}" and stores "{item_id}" in both stores, then the caller\'s '
                    'code raises'))
def caller_raises(world, old_id, item_id):
    manager = world["manager"]
    try:
        with manager.with_transaction(list(world["pair"])):
            for name in world["pair"]:
                manager.adapters[name].store(note(old_id, "rewritten, then abandoned"))
                manager.adapters[name].store(note(item_id))
            raise _CallerError("the caller changed its mind")
    except Exception as exc:  # judged by the Then step
        world["error"] = exc
    else:
        world["error"] = None


class _CallerError(Exception):
    """The caller's own failure inside a transaction block."""


@then("the caller's error reaches the caller")
def callers_error(world):
    assert type(world["error"]) is _CallerError, repr(world["error"])


@given("the second store refuses to prepare any write")
def second_refuses_prepare(world):
    world["plan"].add("prepare_ops", "transient", store=world["pair"][1])


def _attempt(world, fn):
    try:
        fn()
        world["error"] = None
    except Exception as exc:  # the Then steps judge it
        world["error"] = exc


@when(parsers.parse('the operator stores "{item_id}" in both stores'))
def store_in_both(world, item_id):
    _attempt(world, lambda: world["manager"].store(note(item_id), list(world["pair"])))


@when(parsers.parse('the second store is healed and the operator stores "{item_id}" in both stores again'))
def heal_and_store_again(world, item_id):
    world["plan"].heal()
    store_in_both(world, item_id)
    assert world["error"] is None, repr(world["error"])


@then("the write is aborted, naming the second store")
def aborted_naming_second(world):
    error, second = world["error"], world["pair"][1]
    assert isinstance(error, TransactionAbortedError), repr(error)
    assert error.store == second and repr(second) in str(error), str(error)
    assert world["plan"].fired, "the fault never fired: nothing was tested"


@then(parsers.re(r'"(?P<item_id>[^"]+)" is on (?P<where>no store|both stores|every store)$'))
def on_where(world, item_id, where):
    expected = set() if where == "no store" else set(world["manager"].adapters)
    assert present_on(world["manager"], item_id) == expected


@given(parsers.parse('"{item_id}" was stored in both stores'))
def stored_before(world, item_id):
    world["manager"].store(note(item_id), list(world["pair"]))
    world["acknowledged"] = {name: world["manager"].adapters[name].retrieve(item_id).version
                             for name in world["pair"]}


@when(parsers.parse('the process dies {when_} the decision while storing "{item_id}" in both stores'))
def dies_around_decision(world, when_, item_id):
    manager = world["manager"]
    crash_at(manager, DECISION[when_])
    with pytest.raises(SimulatedCrash):
        manager.store(note(item_id), list(world["pair"]))
    abandon(manager)  # a dead process: no checkpoint, no flush


@when(parsers.parse('two transactions read "{item_id}" from {store} and both rewrite it, the first commits first'))
def race(world, item_id, store):
    # Both read inside their transactions before either commits; the second writes only after the
    # first has committed, so first-committer-wins must refuse the second.
    manager = world["manager"]
    both_read, first_done = threading.Barrier(2), threading.Event()
    outcomes: dict[str, object] = {}

    def rewrite(who: str) -> None:
        try:
            with manager.with_transaction([store]):
                current = manager.adapters[store].retrieve(item_id)
                both_read.wait(10)
                if who == "second":
                    first_done.wait(10)
                manager.adapters[store].store(current.replace(content=f"rewritten by the {who}"))
            outcomes[who] = "committed"
        except Exception as exc:  # judged by the Then step
            outcomes[who] = exc
        finally:
            if who == "first":
                first_done.set()

    threads = [threading.Thread(target=rewrite, args=(who,)) for who in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a racing transaction hung"
    world["outcomes"] = outcomes


@then(parsers.parse('the first commits and the second fails with a conflict naming "{item_id}"'))
def first_committer_wins(world, item_id):
    outcomes = world["outcomes"]
    assert outcomes.get("first") == "committed", outcomes
    assert isinstance(outcomes.get("second"), ConflictError) and item_id in str(outcomes["second"]), outcomes


@then(parsers.parse('{store} holds the first rewrite of "{item_id}", with a newer version than before'))
def holds_first_rewrite(world, store, item_id):
    item = world["manager"].adapters[store].retrieve(item_id)
    assert item.content == "rewritten by the first", item
    assert item.version > world["acknowledged"][store], (item.version, world["acknowledged"])


@when(parsers.parse("{transactions:d} transactions each store {count:d} notes in {store} and the process dies "
                    "after deciding the last"))
def dies_after_large_decisions(world, transactions, count, store):
    # More operations since the last checkpoint than recovery applies in one batch (REDO_BATCH).
    manager = world["manager"]
    world["large"] = [f"bulk-{t}-{n:04d}" for t in range(transactions) for n in range(count)]
    for t in range(transactions):
        if t == transactions - 1:
            crash_at(manager, DECISION["after"])
        with contextlib.ExitStack() as stack:
            if t == transactions - 1:
                stack.enter_context(pytest.raises(SimulatedCrash))
            with manager.with_transaction([store]):
                manager.adapters[store].store_many([note(item_id, "bulk")
                                                    for item_id in world["large"][t * count:(t + 1) * count]])
    abandon(manager)


@then(parsers.parse("all {count:d} notes are on {store}, with one version per transaction"))
def large_redone(world, count, store):
    found = world["manager"].adapters[store].retrieve_many(world["large"])
    assert len(world["large"]) == count and sorted(found) == sorted(world["large"]), \
        f"{len(found)} of {count} there"
    assert len({item.version for item in found.values()}) == 3, "three transactions, three versions"


@when("the manager is opened again on the same stores and log")
def reopen_pair(world):
    if "log_path" in world:  # the full-disk scenario's stores and log
        _full_disk_manager(world)
    else:
        _open_pair(world, world["pair"][0])


@when(parsers.parse('the operator deletes "{item_id}"'))
def delete_everywhere(world, item_id):
    assert world["manager"].delete(item_id) is True


@when("the manager is closed and opened again on the same stores and log")
def close_and_reopen(world):
    world["manager"].close()
    reopen_pair(world)


@when("the process dies and the manager is opened again on the same stores and log")
def die_and_reopen(world):
    abandon(world["manager"])  # no checkpoint: recovery reads the log as the failure left it
    reopen_pair(world)


# ------------------------------------------------------------------ a full disk under the log

def _full_disk_manager(world) -> MemoryManager:
    root = world["root"]
    stores = {"lmdb": world.keep(LMDBMemoryAdapter(path=root / "lmdb", sync=False)),
              "tinydb": world.keep(TinyDBMemoryAdapter(path=root / "items.json", sync=False))}
    return world.manager(stores, transaction_log=world["log_path"])


@given("a manager over LMDB and TinyDB whose transaction log is on a small disk")
def log_on_small_disk(world, small_disk):
    world["disk"], world["log_path"] = small_disk, os.path.join(small_disk, "txlog")
    world["pair"] = ("lmdb", "tinydb")
    _full_disk_manager(world)


@given("the disk under the log is full")
def log_disk_full(world):
    world["ballast"] = fill(world["disk"])


@when(parsers.parse('the operator stores a large note "{item_id}" in both stores'))
def store_large_note(world, item_id):
    _attempt(world, lambda: world["manager"].store(note(item_id, "y" * 64_000), list(world["pair"])))


@then("the write is aborted because the disk is full")
def aborted_disk_full(world):
    error = world["error"]
    assert isinstance(error, TransactionAbortedError) and isinstance(error.__cause__, DiskFullError), repr(error)
    assert "disk is full" in str(error) and error.transient


@when(parsers.parse('space is freed and "{item_id}" is stored in both stores'))
def free_and_store(world, item_id):
    os.unlink(world["ballast"])
    world["manager"].store(note(item_id), list(world["pair"]))


@then(parsers.parse('"{item_id}" is on both stores with the version it was acknowledged with'))
def same_versions(world, item_id):
    now = {name: world["manager"].adapters[name].retrieve(item_id) for name in world["pair"]}
    assert {name: item.version if item else None for name, item in now.items()} == world["acknowledged"]


@when("the operator stores a note larger than one Kuzu transaction holds in both stores")
def store_huge(world):
    limit = world["manager"].adapters["kuzu"].max_write_bytes
    _attempt(world, lambda: world["manager"].store(note("huge-1", "x" * (2 * limit)), list(world["pair"])))


@then(parsers.parse('the write is aborted, naming "{store}" and saying the note is too large'))
def aborted_too_large(world, store):
    error = world["error"]
    assert isinstance(error, TransactionAbortedError) and error.store == store, repr(error)
    assert "too large" in str(error) and "huge-1" in str(error), str(error)


# ------------------------------------------------------------------ SIGKILL of a writer process

@given("a crash campaign over LMDB, TinyDB and DuckDB")
def campaign(world):
    world["backends"] = ("lmdb", "tinydb", "duckdb")


@when(parsers.parse("a writer process is killed {kills:d} times, at random instants and at protocol steps"))
def kill_writer(world, kills):
    world["campaign"] = run_campaign(kills, seed=11, workdir=str(world["root"] / "campaign"), transactions=40,
                                     progress=False, timeout=60, backends=world["backends"])


@then("every transaction the writer acknowledged is on all its stores")
def none_lost(world):
    result = world["campaign"]
    assert result.kills == 2 and result.check.counts()["acknowledged"] > 0, result.summary()
    assert not result.check.lost and not result.check.unexpected, result.problems()


@then("no transaction is on only some of its stores")
def none_partial(world):
    result = world["campaign"]
    assert not result.check.partial and result.atomicity.valid, result.problems()


# ------------------------------------------------------------------ power loss

PL_STORES = ("lmdb", "duckdb", "tinydb")


def _pl_manager(world) -> MemoryManager:
    workdir = world["workdir"]
    stores = {"lmdb": LMDBMemoryAdapter(path=os.path.join(workdir, "lmdb"), sync=False),
              "duckdb": DuckDBMemoryAdapter(path=os.path.join(workdir, "items.duckdb"), sync=False),
              "tinydb": TinyDBMemoryAdapter(path=os.path.join(workdir, "items.json"), sync=False)}
    for store in stores.values():
        world.keep(store)
    # compact_records=2: the log is compacted (after the stores are flushed) every few commits, so a
    # power failure meets commits that live only in the stores' files, not in the log.
    return world.manager(stores, transaction_log=os.path.join(workdir, "txlog"), compact_records=2)


def _mount_power_loss_disk(world) -> None:
    fs = PowerLossFS(world["root"] / "power")
    try:
        fs.mount()
    except PowerLossUnavailable as exc:
        fs.close()
        skip_server_unavailable(f"power-loss filesystem: {exc}")
    world.keep(fs)  # kept first, so closed last (close_all runs in reverse): the stores go first
    world["fs"] = fs
    world["workdir"] = os.path.join(fs.mount_point, "stores")
    os.makedirs(world["workdir"])


@given("a manager over LMDB, DuckDB and TinyDB on a disk that loses unsynced writes, compacting its log often")
def power_loss_disk(world):
    _mount_power_loss_disk(world)
    _pl_manager(world)


def _pl_pair(world) -> MemoryManager:
    """The two stores set up as under a coordinator log (unsynced: the log makes commits durable)."""
    folder = world["workdir"]
    stores = {name: world.open_store(name, folder=folder) for name in world["pair"]}
    return world.manager(stores, transaction_log=os.path.join(folder, "txlog"))


@given(parsers.parse("a manager over {store} and a second store on a disk that loses unsynced writes"))
def pair_on_power_loss_disk(world, store):
    _mount_power_loss_disk(world)
    world["pair"] = (store, partner(store))
    _pl_pair(world)


@when(parsers.parse('the power fails {step} while a transaction stores "{item_id}" in both stores'))
def power_fails_in_pair(world, step, item_id):
    manager = world["manager"]
    crash_at(manager, step)
    with pytest.raises(SimulatedCrash):
        manager.store(note(item_id), list(world["pair"]))
    _lose_power(world, manager)


@when("the two stores are opened again after the power is back")
def reopen_pair_after_power(world):
    assert _pl_pair(world).last_recovery.ok, world["manager"].last_recovery


@given(parsers.parse("{count:d} transactions were acknowledged"))
def acknowledged_transactions(world, count):
    world["acked"] = [f"ack-{n}" for n in range(count)]
    for item_id in world["acked"]:
        world["manager"].store(note(item_id), list(PL_STORES))


@when(parsers.parse('the power fails {step} while a transaction stores "{item_id}" in every store'))
def power_fails(world, step, item_id):
    manager = world["manager"]
    assert world["fs"].unsynced_bytes() > 0, "the stores synced everything: a power failure would test nothing"
    crash_at(manager, step)
    with pytest.raises(SimulatedCrash):
        manager.store(note(item_id), list(PL_STORES))
    _lose_power(world, manager)


def _lose_power(world, manager: MemoryManager) -> None:
    """The power fails; then what the dead process held is dropped."""
    world["fs"].power_failure()
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # the dead process's closes reach a dead mount
    try:  # abandon() each part on its own: one failed close must not keep the others open
        with contextlib.suppress(Exception):
            manager.coordinator.log.close()
        for adapter in manager.adapters.values():
            adapter._coordinator = None
            with contextlib.suppress(Exception):
                adapter.close()
    finally:
        logging.disable(previous)


@when("the stores are opened again after the power is back")
def reopen_after_power(world):
    _pl_manager(world)


@then(parsers.parse("the {count:d} acknowledged transactions are on every store"))
def acknowledged_survive(world, count):
    assert len(world["acked"]) == count
    for item_id in world["acked"]:
        assert present_on(world["manager"], item_id) == set(PL_STORES), item_id
