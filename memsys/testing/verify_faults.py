"""The ``faults`` section of ``memsys verify-adapter``: the adapter under port-level fault wrappers.

Faults come from one seeded ``FaultPlan`` (memsys.testing.port_faults). They fire where a caller
calls the adapter's ports (``wrap_store``), and, for an adapter built on BaseMemoryStore, also
where its own public methods call its participant ports (``prepare_ops``, ``apply_prepared``,
``flush``): that is where a failing disk or engine surfaces inside a write, so the adapter's own
handling of a failed write (caches, retries, commits) is exercised, not only the caller's.

Checks (each fails by this name):

* ``typed_errors_only``: every error any call raises is a MemsysError.
* ``no_lost_acknowledged_write``: every acknowledged write is read back, before and after reopening.
* ``no_stale_read_after_failed_write``: after a write failed (its outcome unknown), what a read
  returns is the old or the new value, and it is what the store really holds: the same value
  is there after the faults heal and after reopening.
* ``retried_write_applies_once``: a write retried after an error that came after it was applied
  leaves one item, not two (search and count agree with the reference).
* ``rollback_restores_after_failed_commit`` (TRANSACTIONS): a commit that failed, then rolled
  back, left all of its writes or none of them.
* ``calls_end_within_deadline``: under latency and hangs, every call returns or raises within
  ``3 * deadline + 1 s`` (one call may meet a hang and a latency on its ports, and a loaded
  machine adds some): a hang is DeadlineExceededError at the deadline, never a wait past it.
* ``cross_store_typed_errors``, ``cross_store_all_or_nothing``, ``cross_store_nothing_lost``: the
  adapter, faulted, as a participant of MemoryManager transactions with LMDB and DuckDB: after
  the faults heal and recovery runs, each transaction is on all its stores or none, and every
  acknowledged one is there (also after reopening everything).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from memsys.domain.errors import CommitIncompleteError, MemsysError, TransactionStateError
from memsys.domain.model import MemoryItem, MemoryType
from memsys.ports import Capability

NAME = "adapter"
PARTICIPANT_METHODS = ("prepare_ops", "apply_prepared", "flush")


class _Findings:
    """Violations per check name, each kept short; the first few explain the failure."""

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}
        self.ran: list[str] = []
        self.skipped: dict[str, str] = {}
        self.fired: dict[str, int] = {}

    def add(self, check: str, message: str) -> None:
        self.found.setdefault(check, []).append(message)

    def fired_text(self) -> str:
        return "faults fired: " + ", ".join(f"{k} {v}" for k, v in self.fired.items())

    def checks(self, target: str, seed: int, names: list[str]) -> list[Any]:
        from memsys.testing.verify import Check

        out = []
        for name in names:
            if name in self.skipped:
                out.append(Check("faults", name, "skipped", self.skipped[name]))
            elif name in self.found:
                problems = self.found[name]
                detail = f"{len(problems)} violation(s): " + "\n".join(problems[:5])
                out.append(Check("faults", name, "failed", f"{detail}\nreproduce: memsys verify-adapter '{target}' "
                                 f"--sections faults --seed {seed} (every fault plan is a function of the seed)"))
            else:
                out.append(Check("faults", name, "passed", self.fired_text() if name == names[0] else ""))
        return out


def _participant_faults(store: Any, plan: Any, name: str = NAME) -> Callable[[], None]:
    """Route the store's own calls of its participant ports through ``plan`` (instance attributes,
    so ``self.apply_prepared(...)`` inside ``store()`` meets the fault); returns the undo."""
    from memsys.adapters._base import BaseMemoryStore

    if not isinstance(store, BaseMemoryStore):
        return lambda: None
    patched = []
    for method in PARTICIPANT_METHODS:
        original = getattr(store, method, None)
        if original is None:
            continue

        def faulty(*args: Any, _method: str = method, _original: Any = original, **kwargs: Any) -> Any:
            return plan.call(name, _method, _original, args, kwargs)

        setattr(store, method, faulty)
        patched.append(method)

    def undo() -> None:
        for method in patched:
            with contextlib.suppress(AttributeError):
                delattr(store, method)

    return undo


def _item(item_id: str, n: int) -> MemoryItem:
    return MemoryItem(id=item_id, content=f"{item_id} version {n}", memory_type=MemoryType.KNOWLEDGE,
                      metadata={"k": n % 3, "n": n})


def _plain(item: Any) -> Any:
    return None if item is None else item.to_dict()


def _shown(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, dict) and "content" in value:
        return repr(value["content"])
    return repr(value)[:120]


def _call_typed(findings: _Findings, check: str, what: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """(True, result), or (False, the error) for a MemsysError; anything else is a violation of ``check``."""
    try:
        return True, fn()
    except MemsysError as exc:
        return False, exc
    except Exception as exc:  # noqa: BLE001 - exactly what this check is for
        findings.add(check, f"{what} raised {type(exc).__name__}: {exc} (not a memsys error)")
        return False, exc


# ------------------------------------------------------------------------------ the adapter alone

def _alone(target: Any, folder: str, seed: int, dose: Any, findings: _Findings) -> str:
    from memsys.testing.port_faults import FaultPlan, wrap_store

    store = target.open(os.path.join(folder, "alone"))
    persistent = Capability.PERSISTENCE in frozenset(getattr(store, "capabilities", ()))
    plan = FaultPlan(seed=seed, deadline=dose.deadline, crash_mode="raise")
    for method in ("store", "delete", "store_many"):
        plan.add(method=method, kind="transient", when="before", probability=0.08, store=NAME)
        plan.add(method=method, kind="transient", when="after", probability=0.08, store=NAME)
        plan.add(method=method, kind="permanent", when="after", probability=0.04, store=NAME)
    for method in ("prepare_ops", "apply_prepared"):
        plan.add(method=method, kind="transient", when="before", probability=0.08, store=NAME)
        plan.add(method=method, kind="transient", when="after", probability=0.12, store=NAME)
    plan.add(method="retrieve", kind="transient", when="before", probability=0.05, store=NAME)
    plan_text = plan.describe()
    undo = _participant_faults(store, plan)
    faulty = wrap_store(store, plan, NAME)
    rng = random.Random(seed)
    ids = [f"f-{n:02d}" for n in range(10)]
    # id -> (value, provenance): "acked" (a write returned), "read" (a read after a failed write
    # said so), or a list of candidates (a failed write nobody has read back yet).
    model: dict[str, tuple[Any, str]] = {i: (None, "acked") for i in ids}
    batches = callable(getattr(store, "store_many", None))
    try:
        for step in range(dose.fault_ops):
            roll = rng.random()
            if roll < 0.15:
                item_id = rng.choice(ids)
                writes = {item_id: None}
                what = f"delete({item_id!r})"
                call = (lambda i=item_id: faulty.delete(i))
            elif roll < 0.3 and batches:
                chosen = rng.sample(ids, 2)
                batch = [_item(i, step) for i in chosen]
                writes = {i.id: _plain(i) for i in batch}
                what = f"store_many({chosen!r})"
                call = (lambda b=batch: faulty.store_many(b))
            else:
                item = _item(rng.choice(ids), step)
                writes = {item.id: _plain(item)}
                what = f"store({item.id!r}) of version {step}"
                call = (lambda i=item: faulty.store(i))
            retry = rng.random() < 0.5
            for attempt in range(6 if retry else 1):
                ok, _ = _call_typed(findings, "typed_errors_only", what, call)
                if ok:
                    break
            if ok:
                for item_id, value in writes.items():
                    model[item_id] = (value, "acked")
                continue
            for item_id, value in writes.items():  # outcome unknown: read it back to learn it
                previous, how = model[item_id]
                candidates = [*(previous if how == "unknown" else [previous]), value]
                got_ok, got = _call_typed(findings, "typed_errors_only", f"retrieve({item_id!r})",
                                          lambda i=item_id: store.retrieve(i))
                if not got_ok:
                    model[item_id] = (candidates, "unknown")
                    continue
                got = _plain(got)
                if got not in candidates:
                    findings.add("no_stale_read_after_failed_write",
                                 f"after {what} failed, retrieve({item_id!r}) returned {_shown(got)}: neither the "
                                 f"old value {_shown(candidates[0])} nor the new one {_shown(value)}")
                model[item_id] = (got, "read")
        plan.heal()
        _final_alone_checks(store, model, findings, "after the faults healed")
        undo()
        if persistent:
            store.close()
            store = target.open(os.path.join(folder, "alone"))
            _final_alone_checks(store, model, findings, "after reopening")
    finally:
        plan.heal()
        with contextlib.suppress(Exception):
            store.close()
    findings.fired["alone"] = len(plan.fired)
    return plan_text


def _final_alone_checks(store: Any, model: dict[str, tuple[Any, str]], findings: _Findings, when: str) -> None:
    for item_id, (value, how) in sorted(model.items()):
        ok, got = _call_typed(findings, "typed_errors_only", f"retrieve({item_id!r}) {when}",
                              lambda i=item_id: store.retrieve(i))
        if not ok:
            findings.add("no_lost_acknowledged_write", f"retrieve({item_id!r}) {when} raised {got}")
            continue
        got = _plain(got)
        if how == "unknown":
            if got not in value:
                findings.add("no_stale_read_after_failed_write",
                             f"{item_id!r} {when} holds {_shown(got)}, which no write produced")
            else:
                model[item_id] = (got, "read")
        elif got != value:
            check = "no_lost_acknowledged_write" if how == "acked" else "no_stale_read_after_failed_write"
            said = "was acknowledged as" if how == "acked" else "was read after a failed write as"
            findings.add(check, f"{item_id!r} {said} {_shown(value)} but {when} holds {_shown(got)}")
    ok, hits = _call_typed(findings, "typed_errors_only", f"search({{}}) {when}", lambda: store.search({}))
    if ok:
        found = [i.id for i in hits]
        twice = sorted({i for i in found if found.count(i) > 1})
        if twice:
            findings.add("retried_write_applies_once", f"search({{}}) {when} returns {twice} more than once")
        expected = sorted(i for i, (v, _) in model.items() if v is not None)
        if sorted(set(found)) != expected:
            findings.add("no_lost_acknowledged_write", f"search({{}}) {when} returns ids {sorted(set(found))}, "
                                                       f"the reads say {expected}")
    for k in range(3):
        ok, hits = _call_typed(findings, "typed_errors_only", f"search by metadata {when}",
                               lambda k=k: store.search({"metadata": {"k": k}}))
        if ok:
            found = [i.id for i in hits]
            if len(found) != len(set(found)):
                findings.add("retried_write_applies_once",
                             f"search({{'metadata': {{'k': {k}}}}}) {when} returns {found}: an item twice")
    counter = getattr(store, "count", None)
    if callable(counter):
        ok, n = _call_typed(findings, "typed_errors_only", f"count() {when}", counter)
        expected_n = sum(1 for v, _ in model.values() if v is not None)
        if ok and n != expected_n:
            findings.add("retried_write_applies_once", f"count() {when} is {n}, the store holds {expected_n} ids")


def _stale_probe(target: Any, folder: str, seed: int, dose: Any, findings: _Findings) -> str:
    """One failed overwrite per fault point (before/after, at the caller's port and at the engine
    path): the read that follows must show what the store really holds, as a reopen shows it."""
    from memsys.testing.port_faults import FaultPlan, wrap_store

    path = os.path.join(folder, "stale")
    store = target.open(path)
    persistent = Capability.PERSISTENCE in frozenset(getattr(store, "capabilities", ()))
    seen: dict[str, tuple[Any, Any, Any, str]] = {}
    fired = 0
    try:
        for n, (when, method) in enumerate([(w, m) for w in ("after", "before")
                                            for m in ("apply_prepared", "store", "store_many")]):
            item_id = f"s-{when}-{method}"
            old, new = _item(item_id, 1), _item(item_id, 2)
            store.store(old)
            plan = FaultPlan(seed=seed + 10 + n, deadline=dose.deadline, crash_mode="raise")
            plan.add(method=method, kind="transient", when=when, times=1, store=NAME)
            undo = _participant_faults(store, plan)
            faulty = wrap_store(store, plan, NAME)
            try:
                if method == "store_many":
                    if not callable(getattr(store, "store_many", None)):
                        continue
                    ok, _ = _call_typed(findings, "typed_errors_only", f"store_many([{item_id!r}])",
                                        lambda: faulty.store_many([new]))
                else:
                    ok, _ = _call_typed(findings, "typed_errors_only", f"store({item_id!r})", lambda: faulty.store(new))
            finally:
                undo()
            fired += len(plan.fired)
            if ok or not plan.fired:
                continue  # no fault reached this point (an adapter that never calls it)
            what = f"store({item_id!r}) failed {when} {method}"
            got_ok, got = _call_typed(findings, "typed_errors_only", f"retrieve({item_id!r}) after {what}",
                                      lambda: store.retrieve(item_id))
            if not got_ok:
                continue
            got = _plain(got)
            if got not in (_plain(old), _plain(new)):
                findings.add("no_stale_read_after_failed_write",
                             f"after {what}, retrieve returned {_shown(got)}: neither the old nor the new value")
            elif when == "before" and method != "apply_prepared" and got != _plain(old):
                findings.add("no_stale_read_after_failed_write",
                             f"after {what} (before the call reached the store), retrieve returned the new value")
            seen[item_id] = (got, _plain(old), _plain(new), what)
        findings.fired["stale-read probes"] = fired
        if persistent:
            store.close()
            store = target.open(path)
        for item_id, (got, old, new, what) in seen.items():
            ok, now = _call_typed(findings, "typed_errors_only", f"retrieve({item_id!r}) after reopening",
                                  lambda i=item_id: store.retrieve(i))
            now = _plain(now) if ok else now
            if ok and now != got:
                when = "after reopening" if persistent else "later"
                findings.add("no_stale_read_after_failed_write",
                             f"after {what}, retrieve returned {_shown(got)}, but {when} the store holds "
                             f"{_shown(now)}: the read did not show what the store held")
    finally:
        with contextlib.suppress(Exception):
            store.close()
    return ""


# ------------------------------------------------------------------------------ rollback after a failed commit

def _rollback(target: Any, folder: str, seed: int, dose: Any, findings: _Findings) -> str:
    from memsys.testing.port_faults import FaultPlan, wrap_store

    store = target.open(os.path.join(folder, "rollback"))
    if Capability.TRANSACTIONS not in frozenset(getattr(store, "capabilities", ())):
        store.close()
        findings.skipped["rollback_restores_after_failed_commit"] = \
            f"{target.qualname} does not declare the 'transactions' capability"
        return ""
    plan = FaultPlan(seed=seed + 1, deadline=dose.deadline, crash_mode="raise")
    plan.add(method="apply_prepared", kind="transient", when="before", probability=0.3, store=NAME)
    plan.add(method="apply_prepared", kind="transient", when="after", probability=0.1, store=NAME)
    plan.add(method="commit", kind="transient", when="before", probability=0.1, store=NAME)
    plan.add(method="commit", kind="transient", when="after", probability=0.1, store=NAME)
    undo = _participant_faults(store, plan)
    faulty = wrap_store(store, plan, NAME)
    rng = random.Random(seed + 1)
    failed_commits = 0
    try:
        for n in range(dose.fault_transactions):
            before = {i.id: i.to_dict() for i in store.search({})}
            tx = faulty.begin_transaction()
            writes = [_item(f"r-{rng.randrange(8)}", 100 + n * 10 + j) for j in range(rng.randint(2, 4))]
            for item in writes:
                store.store(item)  # buffered in the transaction: no port call, no fault
            after = dict(before)
            for item in writes:
                after[item.id] = item.to_dict()
            ok, error = _call_typed(findings, "typed_errors_only", f"commit of transaction {n}",
                                    lambda: (faulty.prepare_commit(tx), faulty.commit(tx)))
            if not ok:
                failed_commits += 1
                with contextlib.suppress(TransactionStateError):  # the commit may have ended it
                    _call_typed(findings, "typed_errors_only", f"rollback of transaction {n}",
                                lambda: store.rollback(tx))
            now = {i.id: i.to_dict() for i in store.search({})}
            if now == after or (not ok and now == before):
                continue
            changed = sorted(k for k in set(now) | set(after) if now.get(k) != after.get(k))
            if ok:
                findings.add("no_lost_acknowledged_write",
                             f"transaction {n} committed, but the store differs from its writes at {changed}")
            else:
                applied = sum(1 for item in writes if now.get(item.id) == item.to_dict())
                findings.add("rollback_restores_after_failed_commit",
                             f"transaction {n}: commit raised {type(error).__name__}, then rollback; the store "
                             f"holds {applied} of its {len(writes)} writes (neither all nor none; differs at "
                             f"{changed})")
    finally:
        plan.heal()
        undo()
        with contextlib.suppress(Exception):
            store.close()
    findings.fired["rollback"] = len(plan.fired)
    if not failed_commits:
        findings.skipped.setdefault("rollback_restores_after_failed_commit", "no commit failed at this seed")
    return plan.describe()


# ------------------------------------------------------------------------------ deadlines

def _deadlines(target: Any, folder: str, seed: int, dose: Any, findings: _Findings) -> str:
    from memsys.testing.port_faults import FaultPlan, wrap_store

    store = target.open(os.path.join(folder, "deadline"))
    plan = FaultPlan(seed=seed + 2, deadline=dose.deadline, crash_mode="raise")
    # First a run of hangs on the engine path (a correct adapter meets one per call and gives up at
    # the deadline), then a seeded mix of hangs and latency on every port.
    plan.add(method="apply_prepared", kind="hang", times=6, store=NAME)
    plan.add(method="store", kind="hang", times=2, store=NAME)
    for method in ("prepare_ops", "apply_prepared", "store", "retrieve", "search", "delete"):
        plan.add(method=method, kind="hang", probability=0.12, store=NAME)
        plan.add(method=method, kind="latency", seconds=dose.deadline * 0.4, probability=0.25, store=NAME)
    plan_text = plan.describe()
    undo = _participant_faults(store, plan)
    faulty = wrap_store(store, plan, NAME)
    bound = 3 * dose.deadline + 1.0  # slack for a loaded machine; a retry loop takes many deadlines
    rng = random.Random(seed + 2)
    calls = max(8, dose.fault_ops // 4)
    stuck = False
    try:
        for n in range(calls):
            item = _item(f"d-{rng.randrange(5)}", n)
            roll = rng.random()
            what, call = ((f"store({item.id!r})", lambda i=item: faulty.store(i)) if roll < 0.5 else
                          (f"retrieve({item.id!r})", lambda i=item: faulty.retrieve(i.id)) if roll < 0.7 else
                          ("search({})", lambda: faulty.search({})) if roll < 0.85 else
                          (f"delete({item.id!r})", lambda i=item: faulty.delete(i.id)))
            outcome: list[Any] = []

            def run(call: Callable[[], Any] = call, what: str = what) -> None:
                outcome.append(_call_typed(findings, "typed_errors_only", what, call))

            started = time.monotonic()
            worker = threading.Thread(target=run, daemon=True, name=f"memsys-verify-deadline-{n}")
            worker.start()
            worker.join(bound)
            if worker.is_alive():
                plan.heal()  # wakes injected hangs; an adapter that waits on its own may still not return
                worker.join(10)
                stuck = worker.is_alive()
                took = time.monotonic() - started
                findings.add("calls_end_within_deadline",
                             f"{what} under latency/hang faults (deadline {dose.deadline:g} s) was still running "
                             f"after {bound:.1f} s" + (f"; it returned after {took:.1f} s once the faults healed"
                                                        if not worker.is_alive() else "; it never returned"))
                return plan_text
    finally:
        plan.heal()
        undo()
        if not stuck:  # a call that never returned may hold the store's lock: close() would wait for it
            with contextlib.suppress(Exception):
                store.close()
        findings.fired["deadlines"] = len(plan.fired)
    return plan_text


# ------------------------------------------------------------------------------ cross-store transactions

def open_cross_manager(target: Any, folder: str, adapter: Any = None) -> Any:
    """The adapter (or ``adapter``, say a fault wrapper of it) with LMDB and DuckDB in one MemoryManager."""
    from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.application.manager import MemoryManager

    os.makedirs(folder, exist_ok=True)
    if adapter is None:
        adapter = target.open(os.path.join(folder, "adapter"))
    stores = {NAME: adapter,
              "lmdb": LMDBMemoryAdapter(path=os.path.join(folder, "lmdb"), sync=False),
              "duckdb": DuckDBMemoryAdapter(path=os.path.join(folder, "items.duckdb"), sync=False)}
    try:
        return MemoryManager(stores, transaction_log=os.path.join(folder, "txlog"))
    except BaseException:
        for store in stores.values():
            with contextlib.suppress(Exception):
                store.close()
        raise


def cross_writes(rng: random.Random, tx_id: str) -> dict[str, list[str]]:
    """Fresh ids on the adapter and on one or both built-in stores."""
    stores = [NAME, *sorted(rng.sample(["lmdb", "duckdb"], rng.randint(1, 2)))]
    return {s: [f"{tx_id}-{s}-{j}" for j in range(rng.randint(1, 2))] for s in stores}


def write_transaction(manager: Any, tx_id: str, writes: dict[str, list[str]]) -> None:
    with manager.with_transaction(sorted(writes)):
        for store, ids in writes.items():
            for item_id in ids:
                manager.adapters[store].store(MemoryItem(
                    id=item_id, content=f"{tx_id} wrote this to {store}", memory_type=MemoryType.EPISODIC,
                    metadata={"tx": tx_id}))


def judge_transactions(manager: Any, attempted: dict[str, dict[str, list[str]]], acked: set[str],
                       failed: set[str]) -> tuple[list[str], list[str], list[str]]:
    """(partial, lost, unexpected) transaction ids, reading every item back through the manager's stores."""
    partial, lost, unexpected = [], [], []
    for tx_id, writes in attempted.items():
        found = []
        for store, ids in writes.items():
            for item_id in ids:
                item = manager.adapters[store].retrieve(item_id)
                found.append(item is not None and item.content == f"{tx_id} wrote this to {store}")
        if any(found) and not all(found):
            partial.append(f"{tx_id} ({sum(found)} of {len(found)} items)")
        elif tx_id in acked and not all(found):
            lost.append(tx_id)
        elif tx_id in failed and any(found):
            unexpected.append(tx_id)
    return partial, lost, unexpected


def _cross(target: Any, folder: str, seed: int, dose: Any, findings: _Findings) -> str:
    from memsys.testing.port_faults import FaultPlan, wrap_store

    plan = FaultPlan(seed=seed + 3, deadline=dose.deadline, crash_mode="raise")
    plan.add(method="prepare_ops", kind="transient", probability=0.08, store=NAME)
    plan.add(method="apply_prepared", kind="transient", when="before", probability=0.12, store=NAME)
    plan.add(method="apply_prepared", kind="transient", when="after", probability=0.12, store=NAME)
    plan.add(method="apply_prepared", kind="torn", probability=0.08, store=NAME)
    plan.add(method="store", kind="transient", when="after", probability=0.1, store=NAME)  # outside adapters
    plan.add(method="delete", kind="transient", when="after", probability=0.1, store=NAME)
    plan_text = plan.describe()
    cross = os.path.join(folder, "cross")
    os.makedirs(cross, exist_ok=True)
    adapter = target.open(os.path.join(cross, "adapter"))
    manager = open_cross_manager(target, cross, wrap_store(adapter, plan, NAME))
    rng = random.Random(seed + 3)
    attempted: dict[str, dict[str, list[str]]] = {}
    acked: set[str] = set()
    failed: set[str] = set()
    try:
        for n in range(dose.cross_transactions):
            tx_id = f"x{seed}-{n:04d}"
            writes = attempted[tx_id] = cross_writes(rng, tx_id)
            try:
                write_transaction(manager, tx_id, writes)
            except CommitIncompleteError:  # decided: recovery must finish it
                acked.add(tx_id)
            except MemsysError:
                failed.add(tx_id)
            except Exception as exc:  # noqa: BLE001
                findings.add("cross_store_typed_errors",
                             f"transaction {tx_id} raised {type(exc).__name__}: {exc} (not a memsys error)")
            else:
                acked.add(tx_id)
        plan.heal()
        manager.recover()
        with contextlib.suppress(Exception):
            manager.retry_dead_letters()
        _judge_cross(manager, attempted, acked, failed, findings, "after the faults healed and recovery ran")
        findings.fired["cross-store"] = len(plan.fired)
    finally:
        plan.heal()
        with contextlib.suppress(Exception):
            manager.close()
    if Capability.PERSISTENCE not in frozenset(getattr(adapter, "capabilities", ())):
        return plan_text  # a store that keeps nothing across a reopen has nothing to check there
    manager = open_cross_manager(target, cross)
    try:
        _judge_cross(manager, attempted, acked, failed, findings, "after reopening every store")
    finally:
        manager.close()
    return plan_text


def _judge_cross(manager: Any, attempted: dict[str, dict[str, list[str]]], acked: set[str], failed: set[str],
                 findings: _Findings, when: str) -> None:
    partial, lost, unexpected = judge_transactions(manager, attempted, acked, failed)
    if partial:
        findings.add("cross_store_all_or_nothing", f"{when}: {len(partial)} transaction(s) on only some of their "
                                                   f"stores: {partial[:5]}")
    if unexpected:
        findings.add("cross_store_all_or_nothing", f"{when}: {len(unexpected)} aborted transaction(s) were "
                                                   f"applied: {unexpected[:5]}")
    if lost:
        findings.add("cross_store_nothing_lost", f"{when}: {len(lost)} acknowledged transaction(s) missing: "
                                                 f"{lost[:5]}")


CHECKS = ["typed_errors_only", "no_lost_acknowledged_write", "no_stale_read_after_failed_write",
          "retried_write_applies_once", "rollback_restores_after_failed_commit", "calls_end_within_deadline",
          "cross_store_typed_errors", "cross_store_all_or_nothing", "cross_store_nothing_lost"]


def faults_section(target: Any, folder: str, seed: int, dose: Any) -> list[Any]:
    findings = _Findings()
    plans = [_alone(target, folder, seed, dose, findings),
             _stale_probe(target, folder, seed, dose, findings),
             _rollback(target, folder, seed, dose, findings),
             _deadlines(target, folder, seed, dose, findings),
             _cross(target, folder, seed, dose, findings)]
    return findings.checks(target.spec, seed, CHECKS)
