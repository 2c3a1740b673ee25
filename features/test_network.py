"""Steps for features/network.feature: a real `chroma run` behind a real Toxiproxy (tests/servers.py)."""

from __future__ import annotations

import threading
import uuid

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from features.conftest import note, present_on
from memsys import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    CommitIncompleteError,
    DeadlineExceededError,
    StoreUnavailableError,
    TransactionAbortedError,
)
from memsys.adapters.chroma_store import ChromaDBVectorStore
from memsys.adapters.lmdb_store import LMDBMemoryAdapter
from memsys.resilience.circuit_breaker import CircuitState
from memsys.testing import dump

scenarios("network.feature")

DEADLINE = 1.0
HANG = DEADLINE * 8  # only tells a hang from an answer: a call still running then ignored its deadline
#: Toxics as Toxiproxy names them, with attributes that make answers miss a 1 s deadline.
FAULTS = {
    "high latency": ("latency", {"latency": 1500}),
    "reset peers": ("reset_peer", {"timeout": 0}),
    "slow responses": ("bandwidth", {"rate": 2}),  # 2 KB/s: a 20-note search answer takes far longer
    "an outage": (None, {}),  # the proxy refuses connections
}
ERRORS = {"DeadlineExceededError": DeadlineExceededError, "StoreUnavailableError": StoreUnavailableError}


def _bounded(fn):
    """("returned", value) or ("raised", exc); the scenario fails if the call is still running after HANG."""
    box: dict = {}

    def run() -> None:
        try:
            box["returned"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the step
            box["raised"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    if thread.is_alive():
        pytest.fail(f"a call was still blocked {HANG:.0f}s after it started: its {DEADLINE}s deadline did not end it")
    return ("returned", box["returned"]) if "returned" in box else ("raised", box["raised"])


@pytest.fixture
def proxy(chroma_server, toxiproxy):
    made = toxiproxy.client.create_proxy(f"features-{uuid.uuid4().hex[:8]}", upstream=f"127.0.0.1:{chroma_server.port}")
    yield made
    toxiproxy.client.delete_proxy(made.name)


def _remote(world, proxy) -> ChromaDBVectorStore:
    # A fresh namespace (collection) per scenario on the shared server. Set up with a generous
    # deadline (a loaded machine is slow, not faulty); the 1 s deadline starts with the fault.
    return world.keep(ChromaDBVectorStore(path=world["root"] / "ns", host=proxy.host, port=proxy.port,
                                          dimension=16, timeout=30.0))


def _break(world, fault: str) -> None:
    world["chroma_store"].timeout = DEADLINE
    proxy = world["proxy"]
    toxic, attributes = FAULTS[fault]
    if toxic is None:
        proxy.set_enabled(False)
        world["heal"] = lambda: proxy.set_enabled(True)
    else:
        name = proxy.add_toxic(toxic, **attributes)
        world["heal"] = lambda: _patiently(lambda: proxy.remove_toxic(name))


def _patiently(call, attempts: int = 4) -> None:
    """Toxiproxy answers a toxic's removal only once the links it slows have drained, which can
    outlast its API's 5 s timeout while abandoned slow calls are still in flight: ask again."""
    for attempt in range(attempts):
        try:
            return call()
        except StoreUnavailableError:
            if attempt == attempts - 1:
                raise


# ------------------------------------------------------------------ one store, four faults

@given(parsers.parse("a Chroma server store behind a proxy, with a deadline of 1 second, holding {count:d} notes"))
def remote_store(world, proxy, count):
    world["proxy"] = proxy
    world["store"] = world["chroma_store"] = _remote(world, proxy)
    world["store"].store_many([note(f"n-{i:03d}", "x" * 4000) for i in range(count)])
    world["before"] = dump(world["store"])


@when(parsers.parse("the network has {fault}"))
def network_fault(world, fault):
    _break(world, fault)


@when(parsers.parse('the operator reads, searches and stores "{item_id}" through it'))
def calls_through(world, item_id):
    store = world["store"]
    world["new"] = note(item_id, "written through a bad network")
    world["outcomes"] = {name: _bounded(call) for name, call in {
        "retrieve": lambda: store.retrieve("n-001"),
        "search": lambda: store.search({}),
        "store": lambda: store.store(world["new"]),
    }.items()}


@then(parsers.parse("every call ended by its deadline, and each failure was a transient {error}"))
def failures_typed(world, error):
    for name, (kind, value) in world["outcomes"].items():
        if kind == "raised":
            assert isinstance(value, ERRORS[error]) and value.transient and value.store == "chroma", \
                f"{name}: {type(value).__name__}: {value}"


@then("at least the search failed")
def search_failed(world):
    assert world["outcomes"]["search"][0] == "raised", world["outcomes"]


@when("the network heals")
def heals(world):
    world["heal"]()
    world["chroma_store"].timeout = 30.0  # healed: only recovery is judged now, not speed on a loaded machine


@then(parsers.parse('the store holds the {count:d} notes, and "{item_id}" only if its write returned'))
def holds_after_heal(world, count, item_id):
    expected = dict(world["before"])
    now = dump(world["store"])
    if world["outcomes"]["store"][0] == "returned":
        assert now.pop(item_id)["content"] == world["new"].content
    assert now == expected and len(expected) == count, sorted(set(now) ^ set(expected))


@then("a new note can be stored and read back")
def store_after_heal(world):
    world["store"].store(note("after-heal", "the network is back"))
    assert world["store"].retrieve("after-heal").content == "the network is back"


# ------------------------------------------------------------------ outage under a manager

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@given(parsers.parse('a manager over the Chroma server store and LMDB, Chroma first, with "{item_id}" stored in both'))
def manager_remote(world, proxy, item_id):
    world["proxy"], world["clock"] = proxy, Clock()
    lmdb = world.keep(LMDBMemoryAdapter(path=world["root"] / "lmdb"))
    world["chroma_store"] = _remote(world, proxy)
    world.manager({"chroma": world["chroma_store"], "lmdb": lmdb}, store_priorities=["chroma", "lmdb"],
                  breakers={"chroma": CircuitBreaker(3, 30, name="chroma", clock=world["clock"])})
    world["manager"].store(note(item_id, "on both"))


@when("the network to the Chroma server is down")
def remote_down(world):
    _break(world, "an outage")


@then(parsers.parse('a transaction storing "{item_id}" in both stores is committed, and incomplete on "{store}"'))
def remote_write_incomplete(world, item_id, store):
    # Prepare needs nothing from the server; the apply fails after the decision: recovery owes it.
    kind, error = _bounded(lambda: world["manager"].store(note(item_id), ["chroma", "lmdb"]))
    assert kind == "raised" and isinstance(error, CommitIncompleteError), repr(error)
    assert error.committed and error.store == store


@then(parsers.parse('after {reads:d} reads of "{item_id}" with fallback, each returning LMDB\'s copy, '
                    'the circuit of "{store}" is open'))
def fallback_reads_open_circuit(world, reads, item_id, store):
    manager = world["manager"]
    for _ in range(reads):
        kind, item = _bounded(lambda: manager.get_with_fallback(item_id))
        assert kind == "returned", repr(item)
        assert item == manager.adapters["lmdb"].retrieve(item_id)
    assert manager.breakers[store].state is CircuitState.OPEN


@then(parsers.parse('a transaction storing "{item_id}" in both stores is aborted at once because the circuit is open'))
def aborted_by_open_circuit(world, item_id):
    kind, error = _bounded(lambda: world["manager"].store(note(item_id), ["chroma", "lmdb"]))
    assert kind == "raised" and isinstance(error, TransactionAbortedError), repr(error)
    assert isinstance(error.__cause__, CircuitBreakerOpenError), repr(error.__cause__)


@when("the network heals, the circuit's wait has passed and the manager recovers")
def heal_wait_recover(world):
    world["heal"]()
    world["clock"].now += 30
    world["chroma_store"].timeout = 30.0  # healed: recovery is judged, not speed on a loaded machine
    assert world["manager"].recover().ok


@then(parsers.parse('a transaction storing "{item_id}" in both stores commits'))
def remote_commits(world, item_id):
    world["manager"].store(note(item_id), ["chroma", "lmdb"])
    assert world["manager"].breakers["chroma"].state is CircuitState.CLOSED


@then(parsers.parse('"{a}", "{b}" and "{c}" are on both stores and "{missing}" on none'))
def final_state(world, a, b, c, missing):
    manager = world["manager"]
    for item_id in (a, b, c):
        assert present_on(manager, item_id) == {"chroma", "lmdb"}, item_id
    assert present_on(manager, missing) == set()
