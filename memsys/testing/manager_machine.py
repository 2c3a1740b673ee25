"""State machines that run the real MemoryManager over real adapters against a plain model.

The scenarios/ suite runs them under the ci profile (memsys.testing.profiles), ``memsys chaos run
--deep`` under the deep one (``MACHINES``: every adapter alone and the mixed sets). Hypothesis
comes with the ``kit`` extra, as for memsys.testing.stateful.

``manager_machine(open_stores)`` extends ``memsys.testing.stateful.transaction_machine`` (its
begin / write / delete / read-own-writes / finish / write-outside / crash-at-a-protocol-step
rules and its dict model are reused as they are) with the rest of the failure catalogue:

* whole-item operations through the manager: store (routed to every store or a chosen subset),
  update, delete, retrieve, search (per store and merged), transactions that raise part way;
* concurrent transactions on one shared id from several threads (first committer wins);
* faults at the port level (``memsys.testing.port_faults``): transient, permanent and latency
  faults in prepare and in commit (apply), before or after the real call;
* store outages (every engine call fails), breaker trips (the circuit opens after its
  threshold and then fails fast: no call reaches the store), healing with exactly one half-open
  probe (a second call during the probe is refused), and a second outage probed again;
* a store failing every apply after the decision: committed (CommitIncompleteError),
  quarantined while the others go on and the log compacts, completed by recovery;
* degraded writes (primary, secondaries, fallback) and reconciliation of the durable queue,
  with newer writes landing over queued ones before reconcile() runs;
* read-through cache reads, warmed before updates (a group commit must invalidate every id);
  drift detection (``SyncManager.diff``) and repair;
* a crash at each protocol step (the base rule) and a clean restart, both checked for versions:
  recovery keeps every version it finds and a redone transaction has one LSN on every store.

Every store is wrapped with ``wrap_store`` around a shared ``FaultPlan``; the circuit breakers
run on a clock the machine advances, so a half-open probe never waits on wall time.

Invariants after every step: every store holds exactly what the model says was committed to
it (read past the fault wrappers, so an outage does not hide a divergence) -- so no aborted or
partial transaction is visible; the cache never holds an item older than the primary store's;
each breaker moved only as its state machine allows; the reconciliation queue holds exactly the
writes the model says are waiting.

``power_loss_machine(open_stores, mount_point, power_failure)`` runs the same transactions on a power-loss filesystem
(``memsys.testing.powerloss``) and adds power failures between transactions and in the middle of a
commit at each protocol step: acknowledged transactions survive, undecided ones vanish.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

try:
    from hypothesis import strategies as st
    from hypothesis.stateful import invariant, precondition, rule
except ImportError as exc:  # pragma: no cover - the kit extra is missing
    from memsys.domain.errors import MissingBackend

    raise MissingBackend("hypothesis", "kit") from exc

from memsys.application.manager import MemoryManager
from memsys.application.sync import SyncManager
from memsys.application.transactions import STEPS
from memsys.domain.errors import (
    CircuitBreakerOpenError,
    CommitIncompleteError,
    ConflictError,
    MemoryRetrievalError,
    MemsysError,
    TransactionAbortedError,
)
from memsys.domain.model import MemoryItem, MemoryType
from memsys.resilience.circuit_breaker import CircuitBreaker, CircuitState
from memsys.testing.crash import SimulatedCrash, abandon, crash_at
from memsys.testing.port_faults import FaultPlan, unwrap, wrap_store
from memsys.testing.stateful import IDS, TEXT, items, transaction_machine

#: Consecutive store failures that open a circuit. One injected fault never reaches it, so only an
#: outage can trip a breaker (the invariant relies on that).
THRESHOLD = 4
RESET = 30.0
#: The port methods that reach a store's engine. An outage fails all of them; the calls that only
#: buffer in this process (begin_transaction, store inside a transaction, rollback) keep working,
#: as they do when a real store is down.
ENGINE_CALLS = ("prepare_ops", "apply_prepared", "flush", "retrieve", "retrieve_many", "search", "count",
                "iter_items", "snapshot", "store_many", "delete_many")
TYPES = list(MemoryType)[:6]


class Boom(Exception):
    """The caller's code failing inside a transaction block."""


class Clock:
    """The breakers' monotonic clock, advanced by the machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def content(item: MemoryItem) -> tuple:
    """What the model keeps of an item (the base machine's notion: versions are the stores' LSNs)."""
    return (item.content, item.memory_type, item.metadata, item.created_at)


def _reached(plan: FaultPlan, store: str) -> int:
    with plan._lock:
        return sum(n for (s, method), n in plan._calls.items() if s == store and method in ENGINE_CALLS)


def _real(adapter: Any) -> Any:
    return unwrap(adapter)


QUERY = st.one_of(st.just({}), st.sampled_from(TYPES).map(lambda t: {"memory_type": t}),
                  st.integers(0, 3).map(lambda k: {"metadata": {"k": k}}))


def _matches(value: tuple, query: dict) -> bool:
    if "memory_type" in query and value[1] != query["memory_type"]:
        return False
    if "metadata" in query and any(value[2].get(k) != v for k, v in query["metadata"].items()):
        return False
    return True


def manager_machine(open_stores: Callable[[str], dict[str, Any]], *, label: str = "") -> type:
    """The full machine over the stores ``open_stores(folder)`` builds (same folder = reopen)."""
    Base = transaction_machine(open_stores)

    class ManagerMachine(Base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()  # opens the manager through _open below
            self.primary = self.names[0]
            self.fallback = self.names[-1] if len(self.names) > 1 else None
            self.secondaries = self.names[1:-1]
            #: The store whose every engine call fails, or None.
            self.out: str | None = None
            #: (store, id) -> [content, live]: writes waiting in the reconciliation queue; a later
            #: committed put to the store makes one stale (reconcile() must then skip it).
            self.queued: dict[tuple[str, str], list[Any]] = {}
            self.seen = {n: self._breaker(n) for n in self.names}
            self.just_healed: str | None = None
            self.clock_at_step = self.clock.now

        # --- opening: every store behind the fault plan, breakers on the machine's clock

        def _open(self) -> Any:
            old = getattr(self, "manager", None)
            if old is not None:  # an abandoned manager (a simulated crash): free its queue's lock
                with contextlib.suppress(MemsysError):
                    old.reconciliation.close()
            if not hasattr(self, "plan"):
                self.plan = FaultPlan(seed=0, deadline=0.5, crash_mode="raise")
                self.clock = Clock()
            self.plan.heal()
            self.out = None
            raw = open_stores(self.folder)
            names = sorted(raw)
            wrapped = {n: wrap_store(s, self.plan, name=n) for n, s in raw.items()}
            manager = MemoryManager(
                # Compaction every few records, so it also runs while a store is quarantined.
                wrapped, transaction_log=f"{self.folder}/txlog", store_priorities=names, compact_records=6,
                primary_store=names[0], secondary_stores=names[1:-1],
                fallback_store=names[-1] if len(names) > 1 else None,
                reconciliation_queue=f"{self.folder}/reconcile",
                breakers={n: CircuitBreaker(THRESHOLD, RESET, name=n, clock=self.clock) for n in names})
            self.sync = None
            if hasattr(self, "seen"):
                self.seen = {n: (CircuitState.CLOSED, 0) for n in names}  # new process, new breakers
            return manager

        def _breaker(self, name: str) -> tuple[CircuitState, int]:
            breaker = self.manager.breakers[name]
            return breaker.state, breaker.opened

        # --- the model's bookkeeping

        def _commit_put(self, store: str, item_id: str, value: tuple) -> None:
            self.model[store][item_id] = value
            entry = self.queued.get((store, item_id))
            if entry is not None:
                entry[1] = False  # this write is newer than the queued one

        def _apply_pending(self) -> None:
            for store, writes in self.pending.items():
                for item_id, value in writes.items():
                    if value is None:
                        self.model[store].pop(item_id, None)
                    else:
                        self._commit_put(store, item_id, value)

        def _new_item(self, data: Any, item_id: str | None = None) -> MemoryItem:
            item = data.draw(items())
            return item if item_id is None else item.replace(id=item_id)

        def _up(self) -> list[str]:
            return [n for n in self.names if n != self.out]

        # --- base rules that must respect an outage

        @precondition(lambda self: self.tx is None and self.out is None)
        @rule(data=st.data())
        def begin(self, data: Any) -> None:
            super().begin(data)

        @precondition(lambda self: self.tx is None)
        @rule(data=st.data(), item=items())
        def write_outside(self, data: Any, item: MemoryItem) -> None:
            store = data.draw(st.sampled_from(self.names))
            if store == self.out:
                with _raises(TransactionAbortedError, f"a write to {store} while it is down"):
                    self.manager.adapters[store].store(item)
                return
            self.manager.adapters[store].store(item)
            self._commit_put(store, item.id, content(item))

        # --- whole-item operations through the manager

        @precondition(lambda self: self.tx is None)
        @rule(data=st.data(), everywhere=st.booleans())
        def manager_store(self, data: Any, everywhere: bool) -> None:
            item = self._new_item(data)
            stores = self.names if everywhere else data.draw(
                st.lists(st.sampled_from(self.names), min_size=1, unique=True), label="stores")
            if self.out in stores:
                with _raises(TransactionAbortedError, f"manager.store over {stores} while {self.out} is down"):
                    self.manager.store(item, stores=None if everywhere else stores)
                return
            self.manager.store(item, stores=None if everywhere else stores)
            for s in stores:
                self._commit_put(s, item.id, content(item))

        @precondition(lambda self: self.tx is None and self.out is None
                      and any(self.model[n] for n in self.names))
        @rule(data=st.data(), text=TEXT, companion=IDS)
        def update(self, data: Any, text: str, companion: str) -> None:
            """Update an item in one store, in one transaction with a write of ``companion`` (first,
            and uncached: a group's invalidations must not stop at an id the cache lacks); the read
            through the cache before and after must see the update."""
            store = data.draw(st.sampled_from([n for n in self.names if self.model[n]]), label="store")
            item_id = data.draw(st.sampled_from(sorted(self.model[store])), label="id")
            old = self.manager.retrieve(item_id, store=store)
            assert old is not None and content(old) == self.model[store][item_id]
            self.manager.get_with_cache(item_id)  # cached now (from the primary or a store by priority)
            new = old.replace(content=text, metadata={**old.metadata, "k": (old.metadata.get("k", 0) + 1) % 4},
                              updated_at=old.updated_at + timedelta(seconds=1))
            other = None
            if companion != item_id:
                self.manager.cache.invalidate(companion)
                other = self._new_item(data, companion)
            with self.manager.with_transaction([store]) as tx:
                if other is not None:
                    tx.adapters[store].store(other)
                tx.adapters[store].store(new)
            if other is not None:
                self._commit_put(store, companion, content(other))
            self._commit_put(store, item_id, content(new))
            got = self.manager.retrieve(item_id, store=store)
            assert got.version > old.version, f"an update on {store} did not raise the version"
            if store == self.primary:
                cached = self.manager.get_with_cache(item_id)
                assert content(cached) == content(new), \
                    f"get_with_cache({item_id!r}) served the version from before the update on the primary"

        @precondition(lambda self: self.tx is None)
        @rule(item_id=IDS)
        def manager_delete(self, item_id: str) -> None:
            holding = [n for n in self.names if item_id in self.model[n]]
            if self.out is not None:  # the down store cannot say whether it holds the id: no delete
                with _raises(TransactionAbortedError, f"delete({item_id!r}) while {self.out} is down"):
                    self.manager.delete(item_id)
                return
            assert self.manager.delete(item_id) is bool(holding)
            for n in holding:
                self.model[n].pop(item_id)

        @precondition(lambda self: self.tx is None)
        @rule(data=st.data(), item_id=IDS)
        def manager_retrieve(self, data: Any, item_id: str) -> None:
            store = data.draw(st.sampled_from(self.names), label="store")
            if store == self.out:
                with _raises(MemsysError, f"retrieve from {store} while it is down"):
                    self.manager.retrieve(item_id, store=store)
            else:
                got = self.manager.retrieve(item_id, store=store)
                assert (None if got is None else content(got)) == self.model[store].get(item_id), \
                    f"retrieve({item_id!r}) from {store}"
            # Fallback: the first store by priority that answers with it, passing over the down one.
            expected = next((self.model[n][item_id] for n in self._up() if item_id in self.model[n]), None)
            if expected is None:
                with _raises(MemoryRetrievalError, f"get_with_fallback({item_id!r}) of an absent id"):
                    self.manager.get_with_fallback(item_id)
            else:
                assert content(self.manager.get_with_fallback(item_id)) == expected, \
                    f"get_with_fallback({item_id!r}) with {self.out} down"

        @precondition(lambda self: self.tx is None)
        @rule(data=st.data(), query=QUERY)
        def search(self, data: Any, query: dict) -> None:
            store = data.draw(st.sampled_from(self.names), label="store")
            if store == self.out:
                with _raises(MemsysError, f"search on {store} while it is down"):
                    self.manager.adapters[store].search(query)
            else:
                got = sorted(i.id for i in self.manager.adapters[store].search(query))
                assert got == sorted(k for k, v in self.model[store].items() if _matches(v, query)), \
                    f"search({query!r}) on {store}"
            # The manager's search reads, per route, the first store by priority that answers.
            first = self._up()[0] if self._up() else None
            if first is not None:
                got = sorted(i.id for i in self.manager.search(query))
                assert got == sorted(k for k, v in self.model[first].items() if _matches(v, query)), \
                    f"manager.search({query!r}) answered from {first}"

        @precondition(lambda self: self.tx is None and self.out is None)
        @rule(data=st.data(), writes=st.integers(0, 3))
        def transaction_raises_midway(self, data: Any, writes: int) -> None:
            chosen = data.draw(st.lists(st.sampled_from(self.names), min_size=1, unique=True), label="stores")
            with _raises(Boom, "the block's own exception"):
                with self.manager.with_transaction(chosen) as tx:
                    for n in range(writes):
                        tx.adapters[chosen[n % len(chosen)]].store(self._new_item(data))
                    raise Boom()
            # nothing changed: the invariant compares every store with the unchanged model

        # --- concurrency

        @precondition(lambda self: self.tx is None and self.out is None)
        @rule(data=st.data(), threads=st.integers(2, 3), item_id=IDS)
        def concurrent_transactions_on_one_id(self, data: Any, threads: int, item_id: str) -> None:
            stores = data.draw(st.lists(st.sampled_from(self.names), min_size=1, unique=True), label="stores")
            written = [self._new_item(data, item_id).replace(content=f"thread {t}") for t in range(threads)]
            barrier = threading.Barrier(threads, timeout=60)
            outcome: dict[int, Any] = {}

            def worker(t: int) -> None:
                try:
                    tx = self.manager.with_transaction(stores)
                    tx.begin()
                    for name in stores:
                        tx.adapters[name].store(written[t])
                    barrier.wait()  # every transaction has begun and written before any commits
                    outcome[t] = tx.commit()
                except BaseException as exc:  # noqa: BLE001 - judged below
                    outcome[t] = exc

            workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(120)
            assert not any(w.is_alive() for w in workers), "a transaction thread hung"
            won = [t for t, o in outcome.items() if isinstance(o, int)]
            lost = {t: o for t, o in outcome.items() if t not in won}
            assert all(isinstance(o, ConflictError) for o in lost.values()), \
                f"a concurrent transaction failed other than by a conflict: {lost}"
            assert len(won) == 1, f"{len(won)} of {threads} concurrent writers of {item_id!r} committed " \
                                  f"(first committer wins: exactly one must)"
            for name in stores:
                self._commit_put(name, item_id, content(written[won[0]]))

        # --- injected faults in prepare and commit

        @precondition(lambda self: self.tx is None and self.out is None)
        @rule(data=st.data(), kind=st.sampled_from(["transient", "permanent", "latency"]),
              when=st.sampled_from(["before", "after"]))
        def fault_in_prepare(self, data: Any, kind: str, when: str) -> None:
            self._transaction_with_a_fault(data, "prepare_ops", kind, when)

        @precondition(lambda self: self.tx is None and self.out is None)
        @rule(data=st.data(), kind=st.sampled_from(["transient", "permanent", "latency"]),
              when=st.sampled_from(["before", "after"]))
        def fault_in_commit(self, data: Any, kind: str, when: str) -> None:
            self._transaction_with_a_fault(data, "apply_prepared", kind, when)

        def _transaction_with_a_fault(self, data: Any, method: str, kind: str, when: str) -> None:
            stores = data.draw(st.lists(st.sampled_from(self.names), min_size=1, unique=True), label="stores")
            faulty = data.draw(st.sampled_from(stores), label="faulty store")
            writes = [(s, self._new_item(data)) for s in stores]
            self.plan.add(method=method, kind=kind, when=when, times=1, store=faulty, seconds=0.01)
            committed = True
            try:
                with self.manager.with_transaction(stores) as tx:
                    for s, item in writes:
                        tx.adapters[s].store(item)
            except CommitIncompleteError:
                pass  # committed; recovery completes the store
            except TransactionAbortedError as exc:
                committed = False
                assert method == "prepare_ops" and kind != "latency", \
                    f"a {kind} fault {when} {faulty}.{method} aborted a transaction: {exc!r}"
            else:
                assert method != "prepare_ops" or kind == "latency", \
                    f"a {kind} fault {when} {faulty}.prepare_ops did not abort the transaction"
            finally:
                self.plan.heal()
            if committed:
                for s, item in writes:
                    self._commit_put(s, item.id, content(item))
            self._settle()

        @precondition(lambda self: self.tx is None and self.out is None)
        @rule(data=st.data(), others=st.integers(0, 8), crash=st.booleans())
        def store_fails_after_the_decision(self, data: Any, others: int, crash: bool) -> None:
            """A store fails every apply after the decision: the transaction is committed
            (CommitIncompleteError) and the store quarantined; commits to the other stores go on
            (the log compacts meanwhile, every few records); once the store heals, recovery
            completes it with everything it missed, also when the process dies (``crash``) before
            the store is back and the new process recovers from the compacted log."""
            stores = data.draw(st.lists(st.sampled_from(self.names), min_size=1, unique=True), label="stores")
            faulty = data.draw(st.sampled_from(stores), label="failing store")
            writes = [(s, self._new_item(data)) for s in stores]
            self.plan.add(method="apply_prepared", kind="transient", store=faulty)
            self.just_healed = faulty  # its breaker may open: the apply failures are the store's
            try:
                with _raises(CommitIncompleteError, f"a commit whose apply on {faulty} keeps failing"):
                    with self.manager.with_transaction(stores) as tx:
                        for s, item in writes:
                            tx.adapters[s].store(item)
                for s, item in writes:
                    self._commit_put(s, item.id, content(item))
                rest = [n for n in self.names if n != faulty]
                for n in range(others if rest else 0):
                    store = rest[n % len(rest)]
                    # Rewrites too, of ids committed while the store was failing: a quarantine must not
                    # make them conflict (scenarios/test_stateful_findings.py, a bug this machine found).
                    item_id = data.draw(st.sampled_from([*sorted(self.model[store]), f"during-quarantine-{n}"]),
                                        label="id written during the quarantine")
                    item = self._new_item(data, item_id)
                    self.manager.store(item, stores=[store])
                    self._commit_put(store, item.id, content(item))
                if crash:  # still down; the new process opens with the store back
                    abandon(self.manager)
                    self.manager = self._open()
                    assert self.manager.last_recovery.ok, self.manager.last_recovery
                    return
            finally:
                self.plan.heal()
            if self.manager.breakers[faulty].state is not CircuitState.CLOSED:
                self.clock.now += RESET  # recovery's call is the half-open probe
            self._settle()

        def _settle(self) -> None:
            """Finish what a fault left: recover quarantined stores, retry dead letters, and let each
            store answer once (a success resets its breaker's count of consecutive failures)."""
            if self.manager.coordinator.quarantined:
                report = self.manager.recover()
                assert report.failed_stores == {}, f"recovery failed after the fault healed: {report}"
            if self.manager.dead_letters():
                self.manager.retry_dead_letters()
            assert not self.manager.dead_letters(), "dead letters left after the fault healed"
            assert not self.manager.coordinator.quarantined, "a store stayed quarantined after it healed"
            for n in self._up():
                self.manager.retrieve("id-0", store=n)

        # --- outages, breaker trips, healing

        @precondition(lambda self: self.tx is None and self.out is None)
        @rule(data=st.data())
        def outage_trips_the_breaker(self, data: Any) -> None:
            store = data.draw(st.sampled_from(self.names), label="store down")
            self.out = store
            for method in ENGINE_CALLS:
                self.plan.add(method=method, kind="transient", store=store)
            for n in range(THRESHOLD):
                with _raises(TransactionAbortedError, f"write {n} to {store} while it is down"):
                    self.manager.store(self._new_item(data), stores=[store])
            assert self.manager.breakers[store].state is CircuitState.OPEN, \
                f"{THRESHOLD} failures did not open {store}'s circuit"
            before = _reached(self.plan, store)
            with _raises(TransactionAbortedError, f"a write to {store} with its circuit open") as caught:
                self.manager.store(self._new_item(data), stores=[store])
            assert isinstance(caught.error.__cause__, CircuitBreakerOpenError), caught.error
            assert _reached(self.plan, store) == before, "a call reached a store whose circuit is open"
            if self.fallback is not None:
                self.degraded_write(data)  # a write the down store misses: queued for reconciliation

        @precondition(lambda self: self.tx is None and self.out is not None)
        @rule(data=st.data(), newer=st.booleans())
        def heal_and_probe(self, data: Any, newer: bool) -> None:
            """The store comes back: after the reset timeout exactly one probe goes through (a second
            call meanwhile fails fast), its success closes the circuit; a second outage at once opens
            it again and it is probed again. With ``newer``, a write lands on the healed store over
            an id it has queued, so reconcile() must skip that queued write."""
            store, self.out = self.out, None
            self.just_healed = store
            breaker = self.manager.breakers[store]
            self.plan.heal()
            assert breaker.state is CircuitState.OPEN
            self.clock.now += RESET
            assert breaker.state is CircuitState.HALF_OPEN
            self._one_probe(store)
            assert breaker.state is CircuitState.CLOSED, f"{store}'s circuit did not close after a successful probe"
            for method in ENGINE_CALLS:  # the next outage
                self.plan.add(method=method, kind="transient", store=store)
            for n in range(THRESHOLD):
                with _raises(MemsysError, f"read {n} from {store} in its second outage"):
                    self.manager.retrieve("id-0", store=store)
            assert breaker.state is CircuitState.OPEN, f"{store}'s circuit did not open at its second outage"
            self.plan.heal()
            self.clock.now += RESET
            self.manager.retrieve("id-0", store=store)  # the probe
            assert breaker.state is CircuitState.CLOSED, f"{store}'s circuit could not be probed at its second outage"
            self._settle()
            waiting = sorted(i for (s, i), (_, live) in self.queued.items() if s == store and live)
            if newer and waiting:
                item = self._new_item(data, waiting[0])
                self.manager.store(item, stores=[store])
                self._commit_put(store, item.id, content(item))

        def _one_probe(self, store: str) -> None:
            """A slow probe on another thread; meanwhile a second call is refused without reaching the store."""
            self.plan.add(method="retrieve", kind="latency", seconds=0.3, times=1, store=store)
            probing = threading.Event()

            def listener(event: Any) -> None:
                if event.store == store and event.method == "retrieve":
                    probing.set()

            self.plan.listeners.append(listener)
            outcome: list[Any] = []

            def probe() -> None:
                try:
                    outcome.append(self.manager.retrieve("id-0", store=store))
                except BaseException as exc:  # noqa: BLE001 - judged below
                    outcome.append(exc)

            thread = threading.Thread(target=probe)
            thread.start()
            try:
                assert probing.wait(60), "the probe never reached the store"
                reached = _reached(self.plan, store)
                with _raises(CircuitBreakerOpenError, f"a second call to {store} while its half-open probe runs"):
                    self.manager.retrieve("id-1", store=store)
                assert _reached(self.plan, store) == reached, "a second call reached the store during the probe"
            finally:
                thread.join(60)
                self.plan.listeners.remove(listener)
                self.plan.heal()
            assert not thread.is_alive(), "the probe hung"
            assert not isinstance(outcome[0], BaseException), f"the probe failed: {outcome[0]!r}"

        # --- degraded writes and reconciliation

        @precondition(lambda self: self.tx is None and self.fallback is not None)
        @rule(data=st.data())
        def degraded_write(self, data: Any) -> None:
            item = self._new_item(data)
            value = content(item)
            self.manager.store_with_degraded_mode(item)
            if self.out != self.primary:
                self._commit_put(self.primary, item.id, value)
                for s in self.secondaries:
                    if s == self.out:
                        self.queued[(s, item.id)] = [value, True]
                    else:
                        self._commit_put(s, item.id, value)
            else:
                self._commit_put(self.fallback, item.id, value)
                for s in [self.primary, *self.secondaries]:
                    self.queued[(s, item.id)] = [value, True]

        @precondition(lambda self: self.tx is None)
        @rule()
        def reconcile(self) -> None:
            report = self.manager.reconcile()
            due = {k: v for k, v in self.queued.items() if k[0] != self.out}
            expected = {"applied": sum(1 for v in due.values() if v[1]),
                        "skipped_newer": sum(1 for v in due.values() if not v[1]),
                        "failed": len(self.queued) - len(due)}
            assert {k: report[k] for k in expected} == expected, f"reconcile() reported {report}, the model expected {expected}"
            for (store, item_id), (value, live) in due.items():
                if live:
                    self.model[store][item_id] = value
                del self.queued[(store, item_id)]
            if self.out is None:  # every store answers: the queue drains
                assert len(self.manager.reconciliation) == 0, self.manager.reconciliation.describe()

        # --- cache reads

        @precondition(lambda self: self.tx is None)
        @rule(item_id=IDS)
        def cached_read(self, item_id: str) -> None:
            got = self.manager.get_with_cache(item_id)
            held = {n: self.model[n][item_id] for n in self.names if item_id in self.model[n]}
            if got is None:
                assert not any(n in held for n in self._up()), f"get_with_cache({item_id!r}) missed a stored item"
                return
            assert content(got) in held.values(), f"get_with_cache({item_id!r}) served what no store holds"
            if self.out is None and not any(k[1] == item_id and v[1] for k, v in self.queued.items()):
                first = next(n for n in [self.primary, *self.names] if n in held)
                assert content(got) == held[first], f"get_with_cache({item_id!r}) is not the primary's item"

        # --- drift: diff and repair

        def _sync(self) -> SyncManager:
            if self.sync is None:
                self.sync = SyncManager(self.manager)
            return self.sync

        @precondition(lambda self: self.tx is None and self.out is None and len(self.names) > 1)
        @rule(data=st.data())
        def diff_detects_drift(self, data: Any) -> None:
            a, b = data.draw(st.lists(st.sampled_from(self.names), min_size=2, max_size=2, unique=True))
            report = self._sync().diff(a, b)
            ma, mb = self.model[a], self.model[b]
            assert report.missing == sorted(set(ma) - set(mb)), f"diff({a}, {b}).missing"
            assert report.extra == sorted(set(mb) - set(ma)), f"diff({a}, {b}).extra"
            differing = {k for k in set(ma) & set(mb) if ma[k] != mb[k]}
            flagged = set(report.stale) | set(report.newer_in_target) | set(report.conflicts)
            assert differing <= flagged, f"diff({a}, {b}) missed drifted ids {sorted(differing - flagged)}"

        @precondition(lambda self: self.tx is None and self.out is None and len(self.names) > 1)
        @rule()
        def repair(self) -> None:
            self.reconcile()  # the queue first: repair then sees every write
            before = {n: {i.id: i for i in _real(self.manager.adapters[n]).search({})} for n in self.names}
            ids = set().union(*(set(v) for v in before.values()))
            self._sync().repair()
            for item_id in ids:
                held = [before[n][item_id] for n in self.names if item_id in before[n]]
                top = max(i.version for i in held)
                candidates = [content(i) for i in held if i.version == top]
                now = [_real(self.manager.adapters[n]).retrieve(item_id) for n in self.names]
                assert all(i is not None for i in now), f"repair left {item_id!r} missing somewhere"
                assert all(content(i) == content(now[0]) for i in now), f"repair left {item_id!r} different across stores"
                assert content(now[0]) in candidates and now[0].version == top, \
                    f"repair did not spread the newest version of {item_id!r}"
                for n in self.names:
                    self.model[n][item_id] = content(now[0])

        # --- the process: a crash at a protocol step, a clean restart; versions survive both

        def _versions(self) -> dict[tuple[str, str], int]:
            return {(n, i.id): i.version for n in self.names for i in _real(self.manager.adapters[n]).search({})}

        @precondition(lambda self: self.tx is not None and any(self.pending.values()))
        @rule(step=st.sampled_from(STEPS))
        def crash_during_commit(self, step: str) -> None:
            """The base machine's crash and recovery, then: recovery kept every version it found (a
            redo replays a write, it is not a new one), and a redone transaction has one version,
            its commit LSN, on every store, above every version from before it."""
            before = self._versions()
            puts = {(s, i) for s, w in self.pending.items() for i, v in w.items() if v is not None}
            decided = STEPS.index(step) >= STEPS.index("after_log_sync")
            super().crash_during_commit(step)
            after = self._versions()
            changed = {k: (v, after[k]) for k, v in before.items() if k not in puts and k in after and after[k] != v}
            assert not changed, f"recovery changed the versions of untouched items: {changed}"
            if decided and puts:
                stamped = {after[k] for k in puts}
                assert len(stamped) == 1, f"a redone transaction has several versions: {sorted(stamped)}"
                assert stamped.pop() > max(before.values(), default=0), "a redone write is not newer than before"


        @precondition(lambda self: self.tx is None and self.out is None)
        @rule()
        def restart(self) -> None:
            waiting = len(self.manager.reconciliation)
            versions = self._versions()
            if self.sync is not None:
                self.sync.close()
            self.manager.close()
            self.manager = self._open()
            assert self.manager.last_recovery.ok, self.manager.last_recovery
            assert len(self.manager.reconciliation) == waiting, "the reconciliation queue lost writes on restart"
            assert self._versions() == versions, "a restart changed stored versions"

        # --- invariants

        @invariant()
        def stores_hold_what_was_committed(self) -> None:
            if self.tx is not None:
                return  # reads would see the open transaction's own writes
            for name in self.names:  # past the fault wrapper: a down store must still hold its data
                got = {i.id: content(i) for i in _real(self.manager.adapters[name]).search({})}
                if got != self.model[name]:
                    diff = sorted(set(got) ^ set(self.model[name])
                                  | {k for k in set(got) & set(self.model[name]) if got[k] != self.model[name][k]})
                    raise AssertionError(f"store {name} diverged from the committed history at ids {diff}:\n"
                                         f"  store: {[got.get(k) for k in diff]}\n"
                                         f"  model: {[self.model[name].get(k) for k in diff]}")

        @invariant()
        def cache_is_never_older_than_the_primary(self) -> None:
            if self.tx is not None:
                return
            primary = _real(self.manager.adapters[self.primary])
            with self.manager.cache._lock:
                cached = {k: v for k, (_, v) in self.manager.cache._data.items()}
            for item_id, item in cached.items():
                current = primary.retrieve(item_id)
                assert current is None or item.version >= current.version, \
                    f"the cache holds {item_id!r} v{item.version}, older than the primary's v{current.version}"

        @invariant()
        def breakers_follow_their_state_machine(self) -> None:
            for name in self.names:
                state, opened = self._breaker(name)
                was, was_opened = self.seen[name]
                assert opened >= was_opened, f"{name}'s breaker forgot it opened"
                if opened > was_opened or (was is CircuitState.CLOSED and state is not CircuitState.CLOSED):
                    assert name in (self.out, self.just_healed), \
                        f"{name}'s circuit opened with no outage ({was} -> {state})"
                if self.out != name:
                    assert state is CircuitState.CLOSED, f"{name}'s circuit is {state} though the store is up"
                self.seen[name] = (state, opened)
            self.just_healed = None

        @invariant()
        def queue_holds_what_waits(self) -> None:
            got = {(e.store, e.item.id): content(e.item) for e in self.manager.reconciliation.latest()}
            expected = {k: v[0] for k, v in self.queued.items()}
            assert got == expected, f"reconciliation queue {sorted(got)} != model {sorted(expected)}"

        def teardown(self) -> None:
            self.plan.heal()
            with contextlib.suppress(Exception):
                if self.sync is not None:
                    self.sync.close()
            super().teardown()

    ManagerMachine.__name__ = ManagerMachine.__qualname__ = f"ManagerMachine[{label or 'stores'}]"
    return ManagerMachine


class _Caught:
    error: BaseException


@contextlib.contextmanager
def _raises(kind: type[BaseException], what: str) -> Any:
    caught = _Caught()
    try:
        yield caught
    except kind as exc:
        caught.error = exc
        return
    raise AssertionError(f"{what}: expected {kind.__name__}, nothing was raised")


# ---------------------------------------------------------------------------------------------------
# Power loss: the same transactions on a FUSE filesystem that forgets what was never fsynced.


def power_loss_machine(open_stores: Callable[[str], dict[str, Any]], mount_point: str, power_failure: Callable[[], Any],
                       *, label: str = "") -> type:
    """Transactions (the base machine's rules) over stores in ``mount_point`` (a power-loss mount, shared by
    every example: each gets its own folder), plus power failures between transactions and part way
    through a commit. ``power_failure()`` drops every unsynced page and remounts."""
    from memsys.testing.powerloss import _abandon

    Base = transaction_machine(open_stores)

    class PowerLossMachine(Base):  # type: ignore[misc, valid-type]
        def _open(self) -> Any:
            if not hasattr(self, "root"):
                self.root = tempfile.mkdtemp(prefix="ex-", dir=mount_point)
            return MemoryManager(open_stores(self.root), transaction_log=f"{self.root}/txlog")

        def _reopen_after_power_loss(self) -> None:
            power_failure()
            _abandon(self.manager)
            self.manager = self._open()  # recovery runs here
            assert self.manager.last_recovery.ok, self.manager.last_recovery

        @precondition(lambda self: self.tx is None)
        @rule()
        def power_fails_between_transactions(self) -> None:
            self._reopen_after_power_loss()

        @precondition(lambda self: self.tx is not None and any(self.pending.values()))
        @rule(step=st.sampled_from(STEPS))
        def power_fails_mid_commit(self, step: str) -> None:
            crash_at(self.manager, step)
            with contextlib.suppress(SimulatedCrash):
                self.tx.commit()
            if STEPS.index(step) >= STEPS.index("after_log_sync"):
                self._apply_pending()  # the decision was durable: recovery must finish it
            self.tx, self.pending = None, {}
            self._reopen_after_power_loss()

        def teardown(self) -> None:
            previous = logging.root.manager.disable
            logging.disable(logging.CRITICAL)
            try:
                with contextlib.suppress(Exception):
                    super().teardown()
            finally:
                logging.disable(previous)
                shutil.rmtree(getattr(self, "root", ""), ignore_errors=True)

    PowerLossMachine.__name__ = PowerLossMachine.__qualname__ = f"PowerLossMachine[{label or 'stores'}]"
    return PowerLossMachine


def backend_stores(*backends: str) -> Callable[[str], dict[str, Any]]:
    """``open_stores`` for the named embedded backends, set up as under a coordinator log
    (memsys.testing.crash.open_store): the same folder again reopens them."""
    from memsys.testing.crash import open_store

    def open_stores(folder: str) -> dict[str, Any]:
        opened: dict[str, Any] = {}
        try:
            for backend in backends:
                opened[backend] = open_store(backend, folder)
        except BaseException:
            for store in opened.values():
                store.close()
            raise
        return opened

    open_stores.__name__ = "+".join(backends)
    return open_stores


#: The manager machines and their CI dose (examples, steps): each of the seven adapters alone, then
#: the mixed sets, each with at least one store without native transactions (TinyDB, NetworkX,
#: FAISS, Chroma) so the coordinator log alone makes its writes atomic with the others'. The same
#: doses as scenarios/test_stateful_adapters.py and test_stateful_mixed.py; Chroma's commits are the
#: slowest. The deep profile multiplies them (memsys.testing.profiles.dose).
ALONE: dict[tuple[str, ...], tuple[int, int]] = {
    (b,): (5, 20) if b == "chroma" else (10, 25)
    for b in ("lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chroma")}
MIXES: dict[tuple[str, ...], tuple[int, int]] = {
    ("lmdb", "tinydb"): (10, 25),
    ("duckdb", "faiss", "networkx"): (8, 25),
    ("chroma", "kuzu", "lmdb"): (4, 20),
    ("duckdb", "kuzu", "lmdb", "networkx", "tinydb"): (5, 25),
}
MACHINES: dict[tuple[str, ...], tuple[int, int]] = {**ALONE, **MIXES}
#: The power-loss machine's mixes and CI doses (scenarios/test_stateful_powerloss.py).
POWER_LOSS_MIXES: dict[tuple[str, ...], tuple[int, int]] = {("lmdb", "tinydb"): (5, 15), ("duckdb", "networkx"): (3, 12)}


def machine_label(backends: tuple[str, ...]) -> str:
    """How a machine over ``backends`` is named (scenarios' test ids, the chaos run's steps)."""
    return "+".join(backends)


__all__ = ["ALONE", "MACHINES", "MIXES", "POWER_LOSS_MIXES", "backend_stores", "machine_label", "manager_machine", "power_loss_machine"]
