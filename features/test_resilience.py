"""Steps for features/resilience.feature: breakers, retries, fallback, cache, degraded mode, repair.

Stores fail through memsys.testing.port_faults (a seeded FaultPlan around the real adapter): the
manager, the breaker, the cache and the queue under test are the real ones.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from features.conftest import note, partner
from memsys import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    MemoryManager,
    MemoryRetrievalError,
    PermanentError,
    StoreUnavailableError,
    SyncManager,
    retry_with_backoff,
)
from memsys.resilience.circuit_breaker import CircuitState
from memsys.testing.port_faults import FaultPlan, wrap_store

scenarios("resilience.feature")

PROBE_SECONDS = 0.5  # how long the probe read takes while the store "comes back slowly"


class Clock:
    """The breakers' monotonic clock, moved by the scenario instead of by waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wrapped(world, kind: str, *, managed: bool = True):
    plan = world.setdefault("plan", FaultPlan(seed=21))
    return wrap_store(world.open_store(kind, managed=managed), plan)


def _events(world, method: str, kind: str, store: str | None = None) -> int:
    return sum(1 for e in world["plan"].fired
               if e.method == method and e.kind == kind and (store is None or e.store == store))


def _attempt(world, fn):
    try:
        world["result"] = fn()
        world["error"] = None
    except Exception as exc:  # the Then steps judge it
        world["result"] = None
        world["error"] = exc


# ------------------------------------------------------------------ faults

@given(parsers.parse("{store} is down"))
def store_down(world, store):
    world["plan"].add("*", "transient", store=store)


@given(parsers.parse("{store} fails the next {count:d} reads"))
def fails_next_reads(world, store, count):
    world["plan"].add("retrieve", "transient", times=count)


@given(parsers.parse("{store} refuses every read for good"))
def refuses_for_good(world, store):
    world["plan"].add("retrieve", "permanent")


# ------------------------------------------------------------------ circuit breaker

@given(parsers.parse("a manager over {store} whose circuit opens after {failures:d} failures and waits "
                     "{seconds:d} seconds"))
def manager_with_breaker(world, store, failures, seconds):
    world["clock"] = Clock()
    breaker = CircuitBreaker(failures, seconds, name=store, clock=world["clock"])
    world.manager({store: _wrapped(world, store)}, breakers={store: breaker})


@given(parsers.parse('"{item_id}" is stored in {store}'))
def stored_in(world, item_id, store):
    stores = list(world["pair"]) if store == "both stores" else [store]
    world["manager"].store(note(item_id), stores)
    world["stored"] = world["manager"].adapters[stores[0]].retrieve(item_id)


@when(parsers.parse('the operator reads "{item_id}" from {store} {times:d} times'))
def read_n_times(world, item_id, store, times):
    world["errors"] = []
    for _ in range(times):
        _attempt(world, lambda: world["manager"].retrieve(item_id, store=store))
        world["errors"].append(world["error"])


@then(parsers.parse("every read failed because {store} is unavailable"))
def every_read_failed(world, store):
    assert all(isinstance(e, StoreUnavailableError) and not isinstance(e, CircuitBreakerOpenError)
               and e.store == store for e in world["errors"]), world["errors"]


@then(parsers.parse("the circuit of {store} is {state}"))
def circuit_state(world, store, state):
    expected = {"open": CircuitState.OPEN, "half-open": CircuitState.HALF_OPEN, "closed": CircuitState.CLOSED}
    assert world["manager"].breakers[store].state is expected[state]


@when(parsers.parse('the operator reads "{item_id}" from {store} again'))
def read_again(world, item_id, store):
    world["calls_before"] = _events(world, "retrieve", "transient", store)
    _attempt(world, lambda: world["manager"].retrieve(item_id, store=store))


@then(parsers.parse("the read fails fast with an open circuit, without calling {store}"))
def fails_fast(world, store):
    assert isinstance(world["error"], CircuitBreakerOpenError) and world["error"].store == store, world["error"]
    assert _events(world, "retrieve", "transient", store) == world["calls_before"], "the open circuit called the store"


@when(parsers.parse("{seconds:d} seconds pass and {store} comes back slowly"))
def time_passes(world, seconds, store):
    world["clock"].now += seconds
    world["plan"].heal()
    world["plan"].add("retrieve", "latency", seconds=PROBE_SECONDS, times=1, store=store)


@then("while one probe read is running a second read fails fast")
def one_probe_only(world):
    manager, (store,) = world["manager"], list(world["manager"].adapters)
    started = threading.Event()
    world["plan"].listeners.append(lambda event: started.set())
    box: dict = {}

    def probe() -> None:
        try:
            box["item"] = manager.retrieve(world["stored"].id, store=store)
        except Exception as exc:  # judged below
            box["error"] = exc

    thread = threading.Thread(target=probe)
    thread.start()
    assert started.wait(10), "the probe read never reached the store"
    with pytest.raises(CircuitBreakerOpenError, match="probe"):
        manager.retrieve(world["stored"].id, store=store)
    thread.join(30)
    assert not thread.is_alive()
    world["probe"] = box


@then(parsers.parse('the probe read returns "{item_id}" and the circuit of {store} is closed'))
def probe_closes(world, item_id, store):
    assert "error" not in world["probe"], world["probe"]
    assert world["probe"]["item"] == world["stored"]
    circuit_state(world, store, "closed")


@when(parsers.parse("{store} goes down again until its circuit opens, and {seconds:d} seconds later is back"))
def second_outage(world, store, seconds):
    manager, breaker = world["manager"], world["manager"].breakers[store]
    world["plan"].add("*", "transient", store=store)
    for _ in range(breaker.failure_threshold):
        with pytest.raises(StoreUnavailableError):
            manager.retrieve(world["stored"].id, store=store)
    circuit_state(world, store, "open")
    world["clock"].now += seconds
    world["plan"].heal()


@then(parsers.parse('a read of "{item_id}" from {store} is let through as the probe and closes the circuit'))
def second_probe(world, item_id, store):
    circuit_state(world, store, "half-open")
    assert world["manager"].retrieve(item_id, store=store) == world["stored"]
    circuit_state(world, store, "closed")


# ------------------------------------------------------------------ retry

@given(parsers.parse('a {store} store holding "{item_id}"'))
def store_holding(world, store, item_id):
    world["store"] = _wrapped(world, store, managed=False)
    world["store"].store(note(item_id))
    world["stored"] = world["store"].retrieve(item_id)


def _read_with_retry(world, item_id, attempts, deadline=None):
    world["attempts"], world["waits"] = 0, []

    def sleep(seconds: float) -> None:
        world["waits"].append(seconds)
        time.sleep(seconds)

    @retry_with_backoff(max_retries=attempts, initial_backoff=0.01, backoff_multiplier=2.0, deadline=deadline,
                        rng=random.Random(5), sleep=sleep)
    def read():
        world["attempts"] += 1
        return world["store"].retrieve(item_id)

    _attempt(world, read)


@when(parsers.parse('the operator reads "{item_id}" with up to {attempts:d} attempts and backoff'))
def read_with_retry(world, item_id, attempts):
    _read_with_retry(world, item_id, attempts)


@when(parsers.parse('the operator reads "{item_id}" with up to {attempts:d} attempts, backoff and a deadline '
                    'of {deadline:f} seconds'))
def read_with_deadline(world, item_id, attempts, deadline):
    world["deadline"], world["max_attempts"] = deadline, attempts
    _read_with_retry(world, item_id, attempts, deadline)


@then(parsers.parse('the read returns "{item_id}" after {attempts:d} attempts'))
def returns_after(world, item_id, attempts):
    assert world["error"] is None, repr(world["error"])
    assert world["result"] == world["stored"] and world["result"].id == item_id
    assert world["attempts"] == attempts


@then("the waits between attempts grew")
def waits_grew(world):
    waits = world["waits"]
    assert len(waits) == world["attempts"] - 1 and all(a < b for a, b in zip(waits, waits[1:])), waits


@then(parsers.parse("the read fails because {store} is unavailable"))
def read_failed_unavailable(world, store):
    error = world["error"]
    assert isinstance(error, StoreUnavailableError) and error.transient and error.store == store, repr(error)


@then("it gave up before its attempts ran out, having waited no longer than the deadline")
def gave_up_at_deadline(world):
    assert 1 < world["attempts"] < world["max_attempts"], world["attempts"]
    assert sum(world["waits"]) <= world["deadline"], world["waits"]


@then(parsers.parse("the read fails with the permanent error after {attempts:d} attempt and no wait"))
def permanent_not_retried(world, attempts):
    assert isinstance(world["error"], PermanentError) and not world["error"].transient, repr(world["error"])
    assert world["attempts"] == attempts and world["waits"] == []


# ------------------------------------------------------------------ fallback reads

@given(parsers.parse("a manager over {store} and a backup store, {first} first"))
def manager_with_priorities(world, store, first):
    backup = partner(store)
    world["pair"] = (store, backup)
    world.manager({store: _wrapped(world, store), backup: _wrapped(world, backup)}, store_priorities=[store, backup])


@given(parsers.parse("a manager over {store} and a backup store"))
def manager_over_pair(world, store):
    manager_with_priorities(world, store, store)


@given(parsers.parse('"{first}" and "{second}" are stored in both stores'))
def two_stored_in_both(world, first, second):
    for item_id in (first, second):
        stored_in(world, item_id, "both stores")


@when(parsers.parse('the operator reads "{item_id}" with fallback'))
def read_with_fallback(world, item_id):
    _attempt(world, lambda: world["manager"].get_with_fallback(item_id))


@then(parsers.parse('the read returns "{item_id}" as the backup store holds it'))
def returned_from_backup(world, item_id):
    assert world["error"] is None, repr(world["error"])
    backup = world["manager"].adapters[world["pair"][1]]
    assert world["result"] == backup.retrieve(item_id) and world["result"].id == item_id
    assert _events(world, "retrieve", "transient", world["pair"][0]) >= 1, "the primary was never tried"


@then(parsers.parse("the read fails, naming {store} and why it failed"))
def fallback_fails_naming(world, store):
    error = world["error"]
    assert isinstance(error, MemoryRetrievalError), repr(error)
    assert set(error.errors) == {store} and isinstance(error.errors[store], StoreUnavailableError)
    assert store in str(error) and "injected fault" in str(error)


# ------------------------------------------------------------------ read-through cache

@given(parsers.parse("a manager over {store} with a read-through cache"))
def manager_with_cache(world, store):
    world.manager({store: _wrapped(world, store)})
    world["cache_store"] = store


@when(parsers.parse('the operator reads "{item_id}" through the cache'))
def read_through_cache(world, item_id):
    store = world["cache_store"]
    if "counting" not in world:
        # From the first cached read on, every read that reaches the store shows in plan.fired
        # (as a 0.1 ms delay): the writes before it are not counted.
        world["plan"].add("retrieve", "latency", seconds=0.0001, store=store)
        world["counting"] = True
    world["result"] = world["manager"].get_with_cache(item_id)


@then(parsers.parse("{store} was read {times}"))
def read_times(world, store, times):
    expected = {"once": 1, "twice": 2}[times]
    assert _events(world, "retrieve", "latency", store) == expected


@when(parsers.parse('a new note "{new_id}" and "{item_id}" with the content "{content}" are written in one '
                    'transaction'))
def rewrite(world, new_id, item_id, content):
    # The uncached note comes first: its invalidation must not keep the cached one's from running.
    manager, store = world["manager"], world["cache_store"]
    with manager.with_transaction([store]):
        manager.adapters[store].store(note(new_id, "never read"))
        manager.adapters[store].store(note(item_id, content))


@then(parsers.parse('the read returns the content "{content}"'))
def returns_content(world, content):
    assert world["result"] is not None and world["result"].content == content, world["result"]


# ------------------------------------------------------------------ degraded writes

def _degraded_manager(world, store: str) -> MemoryManager:
    fallback = partner(store)
    world["pair"] = (store, fallback)
    return world.manager({store: _wrapped(world, store), fallback: world.open_store(fallback)},
                         primary_store=store, fallback_store=fallback,
                         reconciliation_queue=world["root"] / "reconcile.queue", failure_threshold=10)


@given(parsers.parse("a manager with primary {store}, a fallback store and a reconciliation queue"))
def manager_degraded(world, store):
    _degraded_manager(world, store)


@when(parsers.parse('the operator writes "{first}" and "{second}" in degraded mode'))
def degraded_writes(world, first, second):
    for item_id in (first, second):
        world["manager"].store_with_degraded_mode(note(item_id, "written while the primary was down"))
    world["queued"] = [first, second]


@then(parsers.parse("both writes are in the fallback store and queued for {store}"))
def queued(world, store):
    manager, fallback = world["manager"], world["pair"][1]
    for item_id in world["queued"]:
        assert manager.adapters[fallback].retrieve(item_id) is not None
    assert manager.degraded_mode
    assert sorted(e.item.id for e in manager.reconciliation.latest() if e.store == store) == world["queued"]


@when(parsers.parse('{store} is back and "{item_id}" is rewritten on {store_} with the content "{content}"'))
def back_and_newer(world, store, item_id, content, store_):
    world["plan"].heal()
    world["manager"].store(note(item_id, content), [store])


@when("the manager reconciles")
def reconciles(world):
    world["reconciled"] = world["manager"].reconcile()


@then(parsers.parse('{store} holds "{item_id}" as the fallback store holds it'))
def holds_as_fallback(world, store, item_id):
    manager = world["manager"]
    assert world["reconciled"]["applied"] == 1 and world["reconciled"]["skipped_newer"] == 1, world["reconciled"]
    assert manager.adapters[store].retrieve(item_id) == manager.adapters[world["pair"][1]].retrieve(item_id)


@then(parsers.parse('{store} still holds "{item_id}" with the content "{content}"'))
def still_newer(world, store, item_id, content):
    assert world["manager"].adapters[store].retrieve(item_id).content == content


@then("the reconciliation queue is empty, also after the manager is reopened")
def queue_empty(world):
    manager = world["manager"]
    assert len(manager.reconciliation) == 0 and not manager.degraded_mode
    manager.close()
    world.pop("plan")
    assert len(_degraded_manager(world, world["pair"][0]).reconciliation) == 0


# ------------------------------------------------------------------ drift and repair

@given(parsers.parse('the backup store alone took "{new_id}" and a newer "{old_id}"'))
def drift(world, new_id, old_id):
    manager, backup = world["manager"], world["pair"][1]
    manager.store(note(new_id), [backup])
    manager.store(note(old_id, "newer"), [backup])


@when(parsers.parse("the operator compares the backup store with {store}"))
def compare(world, store):
    world["sync"] = world.keep(SyncManager(world["manager"]))
    world["diff"] = world["sync"].diff(world["pair"][1], world["pair"][0])


@then(parsers.parse('the diff names "{missing}" as missing and "{stale}" as stale on {store}'))
def diff_names(world, missing, stale, store):
    report = world["diff"]
    assert (report.missing, report.stale, report.conflicts) == ([missing], [stale], []), report


@when("the operator repairs the stores")
def repairs(world):
    world["repaired"] = world["sync"].repair()


@then("both stores hold the same items with the same versions")
def same_items(world):
    store, backup = (world["manager"].adapters[name] for name in world["pair"])
    ours = {i.id: i.to_dict() for i in store.search({})}
    assert ours == {i.id: i.to_dict() for i in backup.search({})} and len(ours) == 3, ours
    assert world["repaired"][world["pair"][0]] == sorted(world["diff"].missing + world["diff"].stale)


@then("a second diff finds them in sync")
def in_sync(world):
    assert world["sync"].diff(world["pair"][1], world["pair"][0], rescan=True).in_sync
