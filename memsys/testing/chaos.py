"""``memsys chaos run``: resilience experiments on embedded stores, or on the stores a config names.

Without a config it builds TinyDB, NetworkX, FAISS, ChromaDB (embedded), Kuzu, LMDB and DuckDB
stores in a working folder; with ``--config FILE.toml`` (memsys.testing.chaos_config) it runs
on the stores named there by spec (``lmdb:PATH``, ``chroma+http://HOST:PORT?collection=N``,
``package.module:Class?path=P``...). The experiments:

* ``faults``, per store: cross-store transactions (the store plus an LMDB witness of the run's
  own), some of which delete what an earlier one wrote, at the configured rate and concurrency:
  healthy first, then while the store's calls fail at random (transient) and for good (an
  outage), then healed. Then the stores are closed and opened again from their specs (recovery
  runs) and every transaction is judged: acknowledged ones present on all their stores,
  acknowledged deletes absent (never resurrected), failed ones absent, none on only some stores.
  Latencies are kept per store and operation, before, during and after the faults;
* ``crash``: child processes running transactions are SIGKILLed at random instants and at every
  protocol step (memsys.testing.crash);
* ``stateful``: random transactions over all seven stores, with simulated crashes at every step,
  against a dict model; under the deep profile also the manager machines of scenarios/
  (memsys.testing.manager_machine: every adapter alone, the mixes, and the power-loss machine)
  with the deep settings profile. A failure shows its steps and the lines that replay it
  (``MEMSYS_BLOB=... memsys chaos run --deep --experiments stateful --seed N --only 'manager
  machine (lmdb)'``);
* ``network``: a ``chroma run`` server (or the Chroma server a config names) behind Toxiproxy (a
  local one, or the server at the configured address) gets network faults;
* ``powerloss``: power failures on a FUSE file system that forgets what was never fsynced
  (memsys.testing.powerloss), under an LMDB + DuckDB + TinyDB transaction workload: during
  commits, during log compactions and during recovery, plain and with torn writes, judged by the
  set and all-or-nothing checkers;
* ``real``: the faults real stores meet (memsys.testing.real_faults): disk full, damaged files,
  second openers, oversized writes, sustained updates, each group in a child process.

The destructive experiments (crash, stateful, powerloss, real) always run on embedded stores in
the working folder. On the stores a config names, the run only ever writes ids of its own
(``chaos-RUN-...``), works in a collection of its own on a Chroma server, and deletes what it
wrote when it is done, so a staging store keeps exactly the data it had.

The report goes to report.json, rewritten after every experiment (an interrupted run keeps what
it did), and to a self-contained report.html (memsys.testing.chaos_report). The exit status is
1 when any experiment lost, left partial, resurrected, hung, crashed or mis-typed anything, or
breached a configured threshold; the failing experiments are named.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import secrets
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from memsys.domain.errors import CommitIncompleteError, MemsysError
from memsys.domain.model import MemoryItem, MemoryType

SEVEN = ("tinydb", "networkx", "faiss", "chroma", "kuzu", "lmdb", "duckdb")


@dataclasses.dataclass
class Experiment:
    name: str
    target: str
    faults: int = 0
    attempted: int = 0
    acknowledged: int = 0
    lost: int = 0
    partial: int = 0
    unexpected: int = 0
    hung: int = 0
    crashed: int = 0
    #: Exceptions that are not the typed memsys error the fault calls for.
    errors: int = 0
    recovered: int = 0
    recover_seconds: float = 0.0
    seconds: float = 0.0
    status: str = "ok"
    detail: str = ""
    #: Faults injected, by kind ("apply:StoreUnavailableError", "latency downstream", "SIGKILL", ...).
    fault_kinds: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Latency samples in milliseconds, keyed "store|operation|phase" (phase: before, during, after).
    latency: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    #: The seed that reproduces this experiment.
    seed: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped", "unavailable") and not (
            self.lost or self.partial or self.unexpected or self.hung or self.crashed or self.errors)


#: Where each backend keeps its files inside an experiment's folder, and how chaos runs open it.
PATHS = {"tinydb": "items.json", "networkx": "graph", "faiss": "faiss", "chroma": "chroma",
         "kuzu": "graph.kuzu", "lmdb": "lmdb", "duckdb": "items.duckdb"}
SETTINGS: dict[str, dict[str, Any]] = {
    "faiss": {"dimension": 64}, "chroma": {"dimension": 64}, "kuzu": {"buffer_pool_size": 64 << 20},
    "lmdb": {"sync": False}, "duckdb": {"sync": False}, "tinydb": {"sync": False}, "networkx": {"sync": False}}


def open_store_at(backend: str, path: str, **options: Any) -> Any:
    """The chaos run's ``backend`` store at ``path`` (module level, so child processes can be handed it)."""
    from memsys.adapters import adapter_class

    return adapter_class(backend)(path=path, **{**SETTINGS[backend], **options})


def open_store(backend: str, folder: str, **options: Any) -> Any:
    return open_store_at(backend, os.path.join(folder, PATHS[backend]), **options)


def embedded_spec(backend: str, folder: str) -> Any:
    """The store spec of the chaos run's embedded ``backend`` store in ``folder``."""
    from memsys.specs import parse_spec

    options = "&".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in SETTINGS[backend].items())
    return parse_spec(f"{backend}:{os.path.join(folder, PATHS[backend])}" + (f"?{options}" if options else ""))


def _item(item_id: str, tx: str) -> MemoryItem:
    return MemoryItem(id=item_id, content=f"written by {tx}", memory_type=MemoryType.EPISODIC, metadata={"tx": tx})


# ============================================================================== latency and workload

#: Samples kept per store, operation and phase (reservoir sampling beyond it: the report's plots
#: and percentiles need a fair sample, not every call of a long run).
LATENCY_SAMPLES = 2000


class Latencies:
    """Latency samples in milliseconds per (store, operation, phase); thread-safe, seeded reservoir."""

    def __init__(self, seed: int = 0) -> None:
        self._samples: dict[str, list[float]] = {}
        self._seen: dict[str, int] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def record(self, store: str, operation: str, phase: str, seconds: float) -> None:
        key = f"{store}|{operation}|{phase}"
        with self._lock:
            samples = self._samples.setdefault(key, [])
            seen = self._seen[key] = self._seen.get(key, 0) + 1
            if len(samples) < LATENCY_SAMPLES:
                samples.append(round(seconds * 1000, 3))
            else:
                slot = self._rng.randrange(seen)
                if slot < LATENCY_SAMPLES:
                    samples[slot] = round(seconds * 1000, 3)

    def as_dict(self) -> dict[str, list[float]]:
        with self._lock:
            return {k: list(v) for k, v in self._samples.items()}


@dataclasses.dataclass
class _Tx:
    id: str
    writes: dict[str, list[str]]
    outcome: str = "info"
    deletes: str | None = None      # the transaction whose ids this one deletes
    deleted_by: list[str] = dataclasses.field(default_factory=list)


class Ledger:
    """Every transaction a workload ran, with its outcome; judges what the stores hold afterwards."""

    def __init__(self) -> None:
        self.txs: dict[str, _Tx] = {}
        self.blame: dict[str, int] = {}
        #: Transactions that raised something other than a memsys error (their outcome is unknown).
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def error(self, what: str) -> None:
        with self._lock:
            self.errors.append(what)

    def add(self, tx: _Tx) -> None:
        with self._lock:
            self.txs[tx.id] = tx
            if tx.deletes is not None:
                self.txs[tx.deletes].deleted_by.append(tx.id)

    def ids(self) -> dict[str, set[str]]:
        """Every id written, per store."""
        found: dict[str, set[str]] = {}
        for tx in self.txs.values():
            for store, ids in tx.writes.items():
                found.setdefault(store, set()).update(ids)
        return found

    def judge(self, present: Callable[[str, str], bool]) -> dict[str, list[str]]:
        """lost: acknowledged and not deleted, on none of its stores; resurrected: deleted by an
        acknowledged transaction, yet there; unexpected: failed, yet there; partial: on some only."""
        verdict: dict[str, list[str]] = {"lost": [], "partial": [], "unexpected": [], "resurrected": []}
        self.blame: dict[str, int] = {}  # "missing on S" / "still on S after a delete" / ...: partials by store
        for tx in self.txs.values():
            if tx.deletes is not None:
                continue  # judged through the transaction whose ids it deletes
            on = {store: [present(store, i) for i in ids] for store, ids in tx.writes.items()}
            found = [hit for hits in on.values() for hit in hits]
            deleted: bool | None = any(self.txs[d].outcome == "ok" for d in tx.deleted_by)
            if any(self.txs[d].outcome not in ("ok", "fail") for d in tx.deleted_by):
                deleted = None  # a delete of unknown outcome: present and absent are both right, partial is not
            if any(found) and not all(found):
                verdict["partial"].append(tx.id)
                for store, hits in on.items():
                    if tx.outcome == "ok" and deleted is False and not all(hits):
                        why = f"acknowledged writes missing on {store}"
                    elif deleted and any(hits):
                        why = f"acknowledged deletes undone on {store}"
                    elif tx.outcome == "fail" and any(hits):
                        why = f"failed writes present on {store}"
                    else:
                        continue
                    self.blame[why] = self.blame.get(why, 0) + 1
            elif tx.outcome == "ok" and deleted is False and not any(found):
                verdict["lost"].append(tx.id)
            elif tx.outcome == "ok" and deleted and any(found):
                verdict["resurrected"].append(tx.id)
            elif tx.outcome == "fail" and any(found):
                verdict["unexpected"].append(tx.id)
        return verdict


class Pacer:
    """At most ``rate`` starts per second over all threads (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


@dataclasses.dataclass
class WorkloadRun:
    """One workload: transactions over ``stores`` of ``manager``, recorded in ``ledger``."""

    manager: Any
    stores: list[str]
    measured: str                 # the store whose latencies are recorded
    prefix: str                   # every id starts with it: the run's own namespace
    seed: int
    ledger: Ledger
    latencies: Latencies
    concurrency: int = 1
    rate: float | None = None
    delete_fraction: float = 0.2
    tick: Callable[[int], None] = lambda n: None

    def phase(self, phase: str, label: str, *, count: int | None = None, seconds: float | None = None) -> int:
        """Run ``count`` transactions, or as many as start within ``seconds``; returns how many ran."""
        pacer = self._pacer = getattr(self, "_pacer", None) or Pacer(self.rate)  # one rate over every phase
        deadline = time.monotonic() + seconds if seconds is not None else math.inf
        counter = iter(range(count if count is not None else 2**62))
        lock = threading.Lock()
        done = [0]

        def next_number() -> int | None:
            with lock:
                if time.monotonic() >= deadline:
                    return None
                return next(counter, None)

        def worker(thread: int) -> None:
            rng = random.Random(f"{self.seed}-{label}-{thread}")
            mine: list[_Tx] = []  # acknowledged writes of this thread, candidates for deletion
            while True:
                n = next_number()
                if n is None:
                    return
                pacer.wait()
                if time.monotonic() >= deadline:
                    return  # the phase ended while this thread waited for its turn
                tx_id = f"{self.prefix}-{label}-{thread}-{n:05d}"
                if mine and rng.random() < self.delete_fraction:
                    target = mine.pop(rng.randrange(len(mine)))
                    tx = _Tx(tx_id, target.writes, deletes=target.id)
                else:
                    tx = _Tx(tx_id, {s: [f"{tx_id}-{s}-{j}" for j in range(rng.randint(1, 2))] for s in self.stores})
                self._run(tx, phase)
                if tx.deletes is None and tx.outcome == "ok":
                    mine.append(tx)
                with lock:
                    done[0] += 1
                self.tick(1)

        if self.concurrency == 1:
            worker(0)
        else:
            threads = [threading.Thread(target=worker, args=(t,), name=f"chaos-{label}-{t}", daemon=True)
                       for t in range(self.concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return done[0]

    def _run(self, tx: _Tx, phase: str) -> None:
        self.ledger.add(tx)
        started = time.perf_counter()
        try:
            with self.manager.with_transaction(sorted(tx.writes)):
                for store, ids in tx.writes.items():
                    adapter = self.manager.adapters[store]
                    for item_id in ids:
                        if tx.deletes is None:
                            adapter.store(_item(item_id, tx.id))
                        else:
                            adapter.delete(item_id)
            tx.outcome = "ok"
        except CommitIncompleteError:
            tx.outcome = "ok"  # committed: the decision is durable, recovery must complete it
        except MemsysError:
            tx.outcome = "fail"
        except Exception as exc:  # not a typed memsys error: a finding; its outcome is unknown
            tx.outcome = "error"
            self.ledger.error(f"{tx.id}: {type(exc).__name__}: {exc}")
        self.latencies.record(self.measured, "delete" if tx.deletes else "transaction", phase,
                              time.perf_counter() - started)
        if tx.outcome == "ok" and tx.deletes is None:
            item_id = tx.writes[self.measured][0]
            started = time.perf_counter()
            with contextlib.suppress(MemsysError):  # a read that fails under faults still took its time
                self.manager.adapters[self.measured].retrieve(item_id)
            self.latencies.record(self.measured, "retrieve", phase, time.perf_counter() - started)


# ============================================================================== fault injection


def _present_checker(stores: dict[str, Any], wanted: dict[str, set[str]]) -> Callable[[str, str], bool]:
    """Look up only the run's own ids (never scan a store that may hold other people's data)."""
    found: dict[str, set[str]] = {}
    for name, ids in wanted.items():
        store = stores[name]
        ordered = sorted(ids)
        if hasattr(store, "retrieve_many"):
            hits: set[str] = set()
            for start in range(0, len(ordered), 500):
                hits.update(store.retrieve_many(ordered[start:start + 500]))
        else:
            hits = {i for i in ordered if store.retrieve(i) is not None}
        found[name] = hits
    return lambda store, item_id: item_id in found.get(store, set())


def _open_spec(spec: Any, overrides: dict[str, Any]) -> Any:
    return spec.open(**overrides)


def _chroma_collection(spec: Any, run_id: str) -> dict[str, Any]:
    """A Chroma server store gets a collection of the run's own (named after the configured one)."""
    if spec.backend != "chroma" or spec.server is None:
        return {}
    base = str(spec.options.get("collection") or "memsys-chaos")[:400].rstrip("._-")
    return {"collection": f"{base}-{run_id}"}


def _drop_collection(spec: Any, collection: str) -> str:
    """Delete the run's own collection from a Chroma server, only if it is empty (all ours was deleted)."""
    import chromadb
    from chromadb.config import Settings

    parts = urllib.parse.urlsplit(spec.server)
    client = chromadb.HttpClient(host=parts.hostname, port=parts.port or (443 if parts.scheme == "https" else 80),
                                 ssl=parts.scheme == "https", settings=Settings(anonymized_telemetry=False))
    left = client.get_collection(collection).count()
    if left:
        return f"kept collection {collection!r}: {left} items are still in it"
    client.delete_collection(collection)
    return f"dropped collection {collection!r}"


def store_faults(name: str, spec: Any, folder: str, seed: int, *, transactions: int = 40,
                 duration: float | None = None, rate: float | None = None, concurrency: int = 1,
                 delete_fraction: float = 0.2, fault_rate: float = 0.35, run_id: str | None = None,
                 tick: Callable[[int], None] = lambda n: None) -> Experiment:
    """The fault experiment on the store ``spec`` names (any adapter, yours included), with an
    LMDB witness in ``folder``: healthy, faulty (transient, then an outage), healed; then the
    stores are reopened from their specs and every transaction judged. Only ids starting with
    ``chaos-RUN`` are written, and they are deleted at the end."""
    from memsys.application.manager import MemoryManager
    from memsys.testing.port_faults import FaultPlan, wrap_store

    run_id = run_id or f"{seed}-{secrets.token_hex(3)}"
    experiment = Experiment("fault injection", name, seed=seed)
    started = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    overrides = _chroma_collection(spec, run_id)
    witness = embedded_spec("lmdb", os.path.join(folder, "witness"))
    log = os.path.join(folder, "txlog")
    # Faults at the store's ports (memsys.testing.port_faults), so any adapter that follows the
    # protocol can be tested, a third party's too; one seed decides every fault.
    plan = FaultPlan(seed=seed, deadline=0.25)
    manager = MemoryManager({name: wrap_store(_open_spec(spec, overrides), plan, name=name),
                             "witness": witness.open()}, transaction_log=log)
    latencies = Latencies(seed)
    ledger = Ledger()
    work = WorkloadRun(manager, sorted([name, "witness"]), name, f"chaos-{run_id}-{name}", seed, ledger, latencies,
                       concurrency=concurrency, rate=rate, delete_fraction=delete_fraction, tick=tick)
    # By count: a quarter healthy, half transient faults, a quarter outage, a quarter healed (1.25x
    # the count); by time: the same proportions of ``duration``.
    share = (lambda f: {"seconds": duration * f / 1.25}) if duration else \
        (lambda f: {"count": max(2, round(transactions * f))})
    try:
        work.phase("before", "healthy", **share(0.25))
        # Transient failures before and after the real apply (an unknown outcome), torn batches,
        # failed prepares, slow and hung reads.
        plan.add("apply_prepared", "transient", probability=fault_rate)
        plan.add("apply_prepared", "transient", when="after", probability=fault_rate / 4)
        plan.add("apply_prepared", "torn", probability=fault_rate / 4)
        plan.add("prepare_ops", "transient", probability=fault_rate / 3)
        plan.add("retrieve", "latency", probability=fault_rate, seconds=0.005)
        plan.add("retrieve", "hang", probability=fault_rate / 10)
        work.phase("during", "transient", **share(0.5))
        plan.heal()
        plan.add("apply_prepared", "permanent", times=3)  # a store that refuses writes for a while
        work.phase("during", "outage", **share(0.25))
        plan.heal()
        recover_started = time.perf_counter()
        while True:  # the first moment after healing that recovery completes every store
            report = manager.recover()
            if report.ok or time.perf_counter() - recover_started > 60:
                break
            time.sleep(0.05)
        experiment.recover_seconds = time.perf_counter() - recover_started
        if not report.ok:
            experiment.status, experiment.detail = "FAILED", f"recovery failed: {report.failed_stores}"
        work.phase("after", "healed", **share(0.25))
    finally:
        plan.heal()
        experiment.faults = len(plan.fired)
        kinds: dict[str, int] = {}
        for event in plan.fired:
            key = f"{event.method} {event.kind} ({event.when})"
            kinds[key] = kinds.get(key, 0) + 1
        experiment.fault_kinds = kinds
        manager.close()
    # Judge what a new process would see: reopen from the specs (recovery runs on the same log).
    manager = MemoryManager({name: _open_spec(spec, overrides), "witness": witness.open()}, transaction_log=log)
    cleanup = ""
    try:
        verdict = ledger.judge(_present_checker(manager.adapters, ledger.ids()))
        tx = ledger.txs.values()
        experiment.attempted = len(ledger.txs)
        experiment.acknowledged = sum(1 for t in tx if t.outcome == "ok")
        experiment.lost, experiment.partial = len(verdict["lost"]), len(verdict["partial"])
        experiment.unexpected = len(verdict["unexpected"]) + len(verdict["resurrected"])
        experiment.errors = len(ledger.errors)
        if any(verdict.values()) or ledger.errors:
            experiment.status = "FAILED"
            experiment.detail = "; ".join(
                [f"{k} {len(v)} (e.g. {', '.join(v[:2])})" for k, v in verdict.items() if v]
                + [f"untyped errors {len(ledger.errors)} (e.g. {'; '.join(ledger.errors[:2])})"] * bool(ledger.errors)
                + [f"{why}: {n} transactions" for why, n in sorted(ledger.blame.items())]
                + [f"fault seed {plan.seed}: {plan.describe()}"])
        cleanup = _cleanup(manager, ledger)
    finally:
        manager.close()
    if overrides:
        try:
            cleanup += "; " + _drop_collection(spec, overrides["collection"])
        except Exception as exc:  # the verdict stands; say what was left behind
            cleanup += f"; could not drop collection {overrides['collection']!r}: {type(exc).__name__}: {exc}"
    experiment.latency = latencies.as_dict()
    if experiment.status == "ok":
        experiment.detail = (f"{experiment.attempted} transactions ({sum(1 for t in ledger.txs.values() if t.deletes)}"
                             f" deleting), reopened and checked; {cleanup}")
    experiment.seconds = time.perf_counter() - started
    return experiment


def _cleanup(manager: Any, ledger: Ledger) -> str:
    """Delete every id the run wrote (and nothing else); say how many were still there."""
    removed = 0
    for store, ids in ledger.ids().items():
        adapter = manager.adapters[store]
        ordered = sorted(ids)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start:start + 500]
            removed += adapter.delete_many(chunk) if hasattr(adapter, "delete_many") else \
                sum(bool(adapter.delete(i)) for i in chunk)
    return f"cleanup deleted the run's {removed} remaining items"


def fault_injection(backend: str, folder: str, seed: int, transactions: int,
                    tick: Callable[[int], None] = lambda n: None) -> Experiment:
    """``store_faults`` on the chaos run's embedded ``backend`` store in ``folder``."""
    return store_faults(backend, embedded_spec(backend, folder), folder, seed, transactions=transactions, tick=tick)


# ============================================================================== the other experiments


def _campaign(name: str, folder: str, seed: int, kills: int, run: Callable[..., Any],
              tick: Callable[[int], None]) -> Experiment:
    """A SIGKILL campaign in rounds of a few kills, each round a campaign in its own folder (so
    progress follows the kills done), judged by the history, all-or-nothing and register checks."""
    experiment = Experiment(name, "-", seed=seed)
    started = time.perf_counter()
    per_step: dict[str, int] = {}
    recoveries: list[float] = []
    done = chunk = 0
    while done < kills:
        n = min(5, kills - done)
        result = run(n, seed * 1000 + chunk, os.path.join(folder, f"round-{chunk}"))
        summary = result.summary()
        experiment.target = "+".join(result.backends)
        experiment.faults += result.kills
        experiment.attempted += summary["attempted"]
        experiment.acknowledged += summary["acknowledged"]
        experiment.lost += summary["lost"]
        experiment.partial += max(summary["partial"], summary["partial_transactions"])
        experiment.unexpected += summary["unexpected"] + summary["stale_reads"] + summary["unexpected_reads"]
        experiment.recovered += summary["recovered"]
        recoveries.extend(result.recovery_seconds)
        for step, count in result.per_step.items():
            per_step[step] = per_step.get(step, 0) + count
        done += n
        chunk += 1
        tick(n)
        if not result.valid:
            experiment.status = "FAILED"
            experiment.detail = f"round {chunk - 1}: {result.problems()}; "
            break  # the first round that breaks a promise is the one to debug
    experiment.recover_seconds = max(recoveries, default=0.0)
    experiment.fault_kinds = {f"SIGKILL at {k}": v for k, v in per_step.items()}
    experiment.latency = {f"{experiment.target}|recovery|after": [round(s * 1000, 3) for s in recoveries]}
    experiment.detail += "kills by step: " + ", ".join(f"{k} {v}" for k, v in sorted(per_step.items()))
    experiment.seconds = time.perf_counter() - started
    return experiment


def crash_recovery(folder: str, seed: int, kills: int, tick: Callable[[int], None] = lambda n: None,
                   single_kills: int | None = None) -> list[Experiment]:
    """SIGKILLs during cross-store transactions over every store (at random instants and at each
    protocol step), then during single-store writes, batches, overwrites and deletes on every
    store (``single_kills``, default a fifth as many); memsys.testing.crash runs them."""
    from memsys.testing.crash import run_campaign, run_single_store_campaign

    single_kills = max(1, kills // 5) if single_kills is None else single_kills
    results = [_campaign("crash and recovery (SIGKILL)", os.path.join(folder, "transactions"), seed, kills,
                         lambda n, s, w: run_campaign(kills=n, seed=s, workdir=w, transactions=80, progress=False),
                         tick)]
    if single_kills:
        results.append(_campaign("single-store writes killed (SIGKILL)", os.path.join(folder, "single"), seed,
                                 single_kills, lambda n, s, w: run_single_store_campaign(
                                     kills=n, seed=s, workdir=w, operations=400, progress=False), tick))
    return results


def _profile_flag(profile: str) -> str:
    return {"quick": " --quick", "deep": " --deep"}.get(profile, "")


def chaos_replay_command(seed: int, profile: str, step: str) -> str:
    """The ``memsys chaos run`` command that reruns only the plan step ``step`` (its description)."""
    import shlex

    return f"memsys chaos run{_profile_flag(profile)} --experiments stateful --seed {seed} --only {shlex.quote(step)}"


def _machine_failure(experiment: Experiment, exc: BaseException, machine: type, lines: int = 40) -> None:
    """A machine's failure in the experiment: what broke, the steps that led there (the invariant
    checks after each step left out) and the lines that replay it, all of it in ``detail``."""
    experiment.status = "FAILED"
    if isinstance(exc, AssertionError):
        experiment.unexpected = 1  # a store disagreed with the model
    else:
        experiment.errors = 1  # an exception no rule expected
    notes = [str(n) for n in getattr(exc, "__notes__", [])]
    checks = {f"state.{name}()" for name in _invariants(machine)}
    steps = [n for n in notes if n.startswith(("state", "Draw ")) and n not in checks]
    replay = [n for n in notes if "to replay this failure" in n]
    if len(steps) > lines:
        steps = [*steps[:5], f"... {len(steps) - lines + 5} steps ...", *steps[-(lines - 5):]]
    message = str(exc).strip() or type(exc).__name__
    experiment.detail = "\n".join([f"{type(exc).__name__}: {message}", "failing steps:",
                                    *(f"    {s}" for s in steps), *(r.strip("\n") for r in replay)])


def _invariants(machine: type) -> set[str]:
    """The names of ``machine``'s invariants (Hypothesis prints each check as a step of its own)."""
    try:
        from hypothesis.stateful import INVARIANT_MARKER
    except ImportError:  # pragma: no cover - a Hypothesis without it: the checks stay in the listing
        return set()
    return {name for name in dir(machine) if getattr(getattr(machine, name, None), INVARIANT_MARKER, None)}


def stateful_model(folder: str, examples: int, steps: int, tick: Callable[[int], None] = lambda n: None,
                   *, seed: int = 0, profile: str = "default") -> Experiment:
    """The transaction machine (memsys.testing.stateful) over all seven stores, seeded and bounded
    (the ci settings profile); a failure carries its steps and replay lines."""
    from memsys.testing import profiles
    from memsys.testing.stateful import transaction_machine

    description = "stateful model"
    experiment = Experiment("stateful model with simulated crashes", "all seven")
    started = time.perf_counter()

    def open_seven(path: str) -> dict[str, Any]:
        return {backend: open_store(backend, path) for backend in SEVEN}

    machine = transaction_machine(open_seven)

    class Counted(machine):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            tick(1)  # one example starts
            super().__init__()

    try:
        profiles.run(Counted, examples=examples, steps=steps, profile="ci",
                     command=chaos_replay_command(seed, profile, description))
    except Exception as exc:  # noqa: BLE001 - a finding, reported with what replays it
        _machine_failure(experiment, exc, Counted)
    else:
        experiment.attempted = examples
        experiment.detail = f"{examples} runs of up to {steps} steps, every state checked against the model"
    experiment.seconds = time.perf_counter() - started
    return experiment


def machine_step(backends: Sequence[str], kind: str = "manager") -> str:
    """The plan step (and report experiment) of the ``kind`` machine (manager, power-loss) over ``backends``."""
    return f"{kind} machine ({'+'.join(backends)})"


def _run_machine(experiment: Experiment, machine: type, step: str, *, examples: int, steps: int, seed: int,
                 settings_profile: str, chaos_profile: str, tick: Callable[[int], None],
                 shrink: bool | None, checked: str) -> Experiment:
    """Run ``machine`` for ``experiment`` (a plan step named ``step``): the CI dose ``examples`` x
    ``steps`` under ``settings_profile``, seeded from the chaos run's ``seed``; one tick per step."""
    import zlib

    from hypothesis.stateful import invariant

    from memsys.testing import profiles

    # Each machine its own seed, all named by the run's: --seed reruns every one of them.
    experiment.seed = zlib.crc32(f"{seed}:{experiment.target}".encode())
    counts = {"examples": 0, "steps": 0}

    class Counted(machine):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            counts["examples"] += 1
            super().__init__()

        @invariant()
        def step_done(self) -> None:  # checked after every step (and once at the start)
            counts["steps"] += 1
            tick(1)

        def teardown(self) -> None:
            plan = getattr(self, "plan", None)  # the manager machine's port-level faults
            for event in getattr(plan, "fired", ()):
                key = f"{event.method}:{event.kind}"
                experiment.fault_kinds[key] = experiment.fault_kinds.get(key, 0) + 1
            super().teardown()

    started = time.perf_counter()
    planned = profiles.dose(examples, steps, settings_profile)
    try:
        ran = profiles.run(Counted, examples=examples, steps=steps, profile=settings_profile, seed=experiment.seed,
                           shrink=shrink, command=chaos_replay_command(seed, chaos_profile, step))
    except Exception as exc:  # noqa: BLE001 - a finding, reported with what replays it
        _machine_failure(experiment, exc, Counted)
    else:
        experiment.seed = ran["seed"]  # MEMSYS_SEED overrides the run's
        experiment.detail = (f"{counts['examples']} examples ({planned[0]} planned) of up to {planned[1]} steps, "
                             f"seed {experiment.seed}: {checked}")
    experiment.attempted = max(0, counts["steps"] - counts["examples"])  # steps, not the checks at the start
    experiment.faults += sum(experiment.fault_kinds.values())
    experiment.seconds = time.perf_counter() - started
    return experiment


def manager_machine_run(backends: Sequence[str], *, examples: int, steps: int, seed: int, settings_profile: str = "deep",
                        chaos_profile: str = "deep", tick: Callable[[int], None] = lambda n: None,
                        open_stores: Callable[[str], dict[str, Any]] | None = None,
                        shrink: bool | None = None) -> Experiment:
    """The full manager machine (memsys.testing.manager_machine) over ``backends``: the CI dose
    ``examples`` x ``steps`` under ``settings_profile`` (deep: 10x the examples, 2x the steps),
    seeded by ``seed`` (the chaos run's seed names it). ``tick`` gets one unit per step run.
    ``open_stores`` replaces the embedded stores (a test's broken adapter). A failure is the
    experiment FAILED with its steps and the lines that replay it, exactly or as the same run."""
    from memsys.testing import manager_machine as machines

    label = machines.machine_label(tuple(backends))
    step = machine_step(backends)
    machine = machines.manager_machine(open_stores or machines.backend_stores(*backends), label=label)
    return _run_machine(Experiment(step, label), machine, step, examples=examples, steps=steps, seed=seed,
                        settings_profile=settings_profile, chaos_profile=chaos_profile, tick=tick, shrink=shrink,
                        checked="every store, the cache, the breakers and the queue checked against the model "
                                "after each step")


def power_loss_machine_run(backends: Sequence[str], folder: str, *, examples: int, steps: int, seed: int,
                           settings_profile: str = "deep", chaos_profile: str = "deep",
                           tick: Callable[[int], None] = lambda n: None, shrink: bool | None = None) -> Experiment:
    """The power-loss machine (memsys.testing.manager_machine.power_loss_machine) over ``backends`` on
    a power-loss file system mounted in ``folder``: transactions, simulated crashes and power failures
    between transactions and at each protocol step. Where FUSE cannot mount, "unavailable"."""
    from memsys.testing import manager_machine as machines
    from memsys.testing.powerloss import PowerLossFS, PowerLossUnavailable

    label = machines.machine_label(tuple(backends))
    step = machine_step(backends, "power-loss")
    experiment = Experiment(step, label)
    fs = PowerLossFS(folder)
    try:
        fs.mount()
    except PowerLossUnavailable as exc:
        fs.close()
        experiment.status, experiment.detail = "unavailable", f"power-loss filesystem: {exc}"
        return experiment
    try:
        machine = machines.power_loss_machine(machines.backend_stores(*backends), fs.mount_point, fs.power_failure,
                                              label=label)
        _run_machine(experiment, machine, step, examples=examples, steps=steps, seed=seed,
                     settings_profile=settings_profile, chaos_profile=chaos_profile, tick=tick, shrink=shrink,
                     checked="acknowledged transactions survive every power failure, undecided ones leave no trace")
    finally:
        fs.close()
    if fs.power_failures:
        experiment.fault_kinds["power failure"] = fs.power_failures
        experiment.faults += fs.power_failures
    return experiment


#: Seconds per manager-machine step (example set-up included) on the 2-core reference machine, by
#: store; a mixed set costs about its dearest store's plus a little per other store.
MACHINE_STEP_SECONDS = {"chroma": 0.13, "duckdb": 0.065, "kuzu": 0.05, "lmdb": 0.035, "networkx": 0.025,
                        "faiss": 0.023, "tinydb": 0.02}


#: The power-loss machine's steps remount a FUSE file system now and then.
POWER_LOSS_STEP_SECONDS = 0.2


def machine_step_seconds(backends: Sequence[str]) -> float:
    costs = sorted((MACHINE_STEP_SECONDS.get(b, 0.05) for b in backends), reverse=True)
    return costs[0] + 0.01 * (len(costs) - 1)


def network(folder: str, seed: int, *, toxiproxy: str | None, start_toxiproxy: bool, chroma: Any,
            quick: bool, faults: Sequence[str] | None = None, tick: Callable[[int], None] = lambda n: None,
            units: int = 100) -> list[Experiment]:
    """The network fault matrix (memsys.testing.network) between the Chroma client and a server:
    the one ``chroma`` (a ``chroma+http`` spec) names, else a ``chroma run`` started for it;
    through the Toxiproxy at ``toxiproxy``, else a local one. Progress: ``units`` over the matrix."""
    from memsys.testing.network import network_matrix
    from memsys.testing.plugin import servers_required

    if toxiproxy is None and not start_toxiproxy:
        return [Experiment("network fault matrix", "chroma server via toxiproxy", status="skipped",
                           detail="no Toxiproxy: give [toxiproxy] address, or start = true")]
    ticked = [0]

    def progress(done: int, total: int, label: str) -> None:
        target = min(units, units * done // max(total, 1))
        if target > ticked[0]:
            tick(target - ticked[0])
            ticked[0] = target

    only = None if faults is None else (lambda fault: (fault.toxic or "down") in faults)
    results = network_matrix(folder, seed, toxiproxy=toxiproxy, chroma_url=chroma.server if chroma else None,
                             quick=quick, progress=progress, only=only)
    for result in results:
        if result.seed is None:
            result.seed = seed
        if result.status == "skipped" and servers_required():
            result.status = "FAILED"  # CI installs Toxiproxy and chroma: not running them is a failure
    return results


def power_loss_stores(workdir: str) -> dict[str, Any]:
    """memsys.testing.powerloss's stores with LMDB synced: LMDB unsynced is not safe against torn
    writes (a known limit: its own meta pages tear), and sync=True is its setting for power loss."""
    from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.adapters.tinydb_store import TinyDBMemoryAdapter

    return {"lmdb": LMDBMemoryAdapter(path=os.path.join(workdir, "lmdb"), sync=True),
            "duckdb": DuckDBMemoryAdapter(path=os.path.join(workdir, "items.duckdb"), sync=False),
            "tinydb": TinyDBMemoryAdapter(path=os.path.join(workdir, "items.json"), sync=False)}


def _power_loss_name(phase: str, tear: bool) -> str:
    return f"power loss: {phase}" + (" (torn writes)" if tear else "")


def _power_loss_target(tear: bool) -> str:
    return "lmdb(synced)+duckdb+tinydb" if tear else "lmdb+duckdb+tinydb"


def _power_loss(folder: str, seed: int, transactions: int, power_failures: int, tear: bool) -> list[dict[str, Any]]:
    """The power-loss experiment's phases (memsys.testing.powerloss.PHASES: during commits, during
    log compaction, during recovery), one plain dict each (they run in one child process). Torn
    power failures run with LMDB synced (see power_loss_stores). Every figure is the history
    checker's (memsys.testing.history.check_history)."""
    from memsys.testing.plugin import servers_required
    from memsys.testing.powerloss import PHASES, PowerLossUnavailable, open_stores, run_power_loss_experiment

    out = []
    for phase in PHASES:
        experiment = Experiment(_power_loss_name(phase, tear), _power_loss_target(tear), seed=seed)
        started = time.perf_counter()
        try:
            result = run_power_loss_experiment(os.path.join(folder, phase), seed, transactions,
                                               power_failures=power_failures, tear=tear, phase=phase,
                                               open_stores=power_loss_stores if tear else open_stores)
        except PowerLossUnavailable as exc:
            # Where FUSE cannot mount, the fault cannot be made real; CI must make it.
            experiment.status = "FAILED" if servers_required() else "unavailable"
            experiment.detail = f"unavailable: {exc}"
            out.append(dataclasses.asdict(experiment))
            continue
        experiment.faults = result["power_failures"]
        experiment.fault_kinds = {f"power failure {where}": count for where, count in result["fault_kinds"].items()}
        experiment.attempted, experiment.acknowledged = result["attempted"], result["acknowledged"]
        experiment.lost, experiment.partial = len(result["lost"]), len(result["partial"])
        experiment.unexpected, experiment.recovered = len(result["unexpected"]), result.get("recovered", 0)
        figures = (f"{result['power_failures']} power failures, {result['recoveries']} recoveries "
                   f"({result['redone']} transactions redone)")
        if phase == "compaction":
            figures += f"; {result['compactions']} log compactions, {result['compactions_cut']} cut by the power"
        elif phase == "recovery":
            figures += f"; {result['recoveries_cut']} recoveries cut by the power"
        problems = []
        if result["refused"]:
            experiment.errors += 1
            problems.append(f"the stores would not reopen: {result['refused']}")
        if result["recovery_failures"]:
            experiment.errors += len(result["recovery_failures"])
            problems.append(f"recovery failed: {'; '.join(result['recovery_failures'][:2])}")
        if result["explain"]:
            problems.append(result["explain"].replace("\n", "; "))
        if not result["ok"]:
            experiment.status = "FAILED"
            experiment.detail = "; ".join(problems) + f" ({figures})"
        else:
            experiment.detail = f"{figures}; every transaction judged by the set and all-or-nothing checkers"
        experiment.seconds = time.perf_counter() - started
        out.append(dataclasses.asdict(experiment))
    return out


def power_loss(folder: str, seed: int, transactions: int, power_failures: int,
               tick: Callable[[int], None] = lambda n: None) -> list[Experiment]:
    """Power failures during commits, log compactions and recoveries (plain, then with torn
    writes), in a child process each: a hang in the FUSE mount or a crash of an engine on what the
    power left is counted, not suffered."""
    import functools

    from memsys.testing.isolate import run_isolated
    from memsys.testing.powerloss import PHASES

    results = []
    for tear in (False, True):
        call = functools.partial(_power_loss, os.path.join(folder, "torn" if tear else "plain"), seed + tear,
                                 transactions, power_failures, tear)
        outcome = run_isolated([call], timeout=300 + 30 * transactions)[0]
        if outcome.status == "returned":
            results.extend(Experiment(**value) for value in outcome.value)
        else:
            experiment = Experiment(_power_loss_name("/".join(PHASES), tear), _power_loss_target(tear),
                                    status="FAILED", seed=seed + tear)
            if outcome.status == "hung":
                experiment.hung = 1
            elif outcome.died:
                experiment.crashed = 1
            else:
                experiment.errors = 1
            experiment.detail = outcome.detail or f"{outcome.error['type']}: {outcome.error['message']}"
            results.append(experiment)
        tick(1)
    return results


# ============================================================================== the plan and the run


@dataclasses.dataclass
class Planned:
    """One step of the run: what it is, how much work (units, and seconds each, estimated)."""

    description: str
    experiment: str                      # the config's name for it: faults, crash, ...
    units: int
    unit_seconds: float
    run: Callable[[Callable[[int], None]], Experiment | list[Experiment]]

    @property
    def estimate(self) -> float:
        return self.units * self.unit_seconds


#: Seconds per transaction of the fault experiment, measured on the 2-core reference machine; the
#: progress bar scales every estimate by how fast this run turns out to be.
TRANSACTION_SECONDS = {"chroma": 0.06, "kuzu": 0.03, "duckdb": 0.03, "faiss": 0.02, "networkx": 0.02,
                       "tinydb": 0.015, "lmdb": 0.012}
NETWORK_SECONDS = {"quick": 45.0, "deep": 200.0}
#: The real-fault groups: seconds of the TinyDB group per dose, and each group's cost relative to it
#: (measured in one default run: Chroma's engine reopens dominate).
REAL_GROUP_SECONDS = {"tiny": 3.0, "quick": 5.0, "default": 8.0, "deep": 120.0}
REAL_GROUP_WEIGHT = {"tinydb": 1.0, "networkx": 1.1, "faiss": 2.7, "chroma": 15.0, "kuzu": 3.3, "lmdb": 1.4,
                     "duckdb": 3.9}


def plan_run(config: Any, workdir: str, *, dose: str | None = None, run_id: str | None = None) -> list[Planned]:
    """Every step ``config`` asks for, in order, with its work estimate."""
    from memsys.testing.real_faults import DOSES, fault_plan, run_group

    profile = config.profile
    seed = config.seed
    run_id = run_id or f"{seed}-{secrets.token_hex(3)}"
    w = config.workload
    plan: list[Planned] = []
    if "faults" in config.experiments:
        stores = dict(config.stores) or {b: embedded_spec(b, os.path.join(workdir, f"faults-{b}")) for b in SEVEN}
        for n, (name, spec) in enumerate(stores.items()):
            count = config.transactions
            total = max(2, round(count * 0.25)) * 3 + max(2, round(count * 0.5))
            per = TRANSACTION_SECONDS.get(spec.backend, 0.05) * (2 if spec.server else 1)
            if w.duration:
                units, per = int(w.duration), 1.0
            else:
                units = total
            folder = os.path.join(workdir, f"faults-{name}")

            def run(tick: Callable[[int], None], name: str = name, spec: Any = spec, n: int = n,
                    folder: str = folder) -> Experiment:
                if w.duration:
                    ticks = _TimeTicks(tick)
                    try:
                        return store_faults(name, spec, folder, seed + n, duration=w.duration, rate=w.rate,
                                            concurrency=w.concurrency, delete_fraction=w.delete_fraction,
                                            fault_rate=w.fault_rate, run_id=run_id, tick=ticks)
                    finally:
                        ticks.stop()
                return store_faults(name, spec, folder, seed + n, transactions=config.transactions, rate=w.rate,
                                    concurrency=w.concurrency, delete_fraction=w.delete_fraction,
                                    fault_rate=w.fault_rate, run_id=run_id, tick=tick)

            plan.append(Planned(f"fault injection: {name}", "faults", units, per, run))
    if "crash" in config.experiments:
        kills = profile.kills + max(1, profile.kills // 5)
        plan.append(Planned("crash and recovery", "crash", kills, 6.0,
                            lambda tick: crash_recovery(os.path.join(workdir, "crash"), seed, profile.kills, tick)))
    if "stateful" in config.experiments:
        plan.append(Planned("stateful model", "stateful", profile.stateful_examples, 0.03 * profile.stateful_steps,
                            lambda tick: stateful_model(os.path.join(workdir, "model"), profile.stateful_examples,
                                                        profile.stateful_steps, tick, seed=seed,
                                                        profile=profile.name)))
        if profile.manager_machines:
            # The manager machines of scenarios/ (every adapter alone, then the mixes) at the deep dose.
            from memsys.testing.manager_machine import MACHINES
            from memsys.testing.profiles import dose as machine_dose

            for backends, (examples, steps) in MACHINES.items():
                total = machine_dose(examples, steps, profile.manager_machines)
                per = machine_step_seconds(backends)
                plan.append(Planned(machine_step(backends), "stateful", total[0] * (total[1] + 1), per,
                                    lambda tick, b=backends, e=examples, s=steps: manager_machine_run(
                                        b, examples=e, steps=s, seed=seed, settings_profile=profile.manager_machines,
                                        chaos_profile=profile.name, tick=tick)))
            from memsys.testing.manager_machine import POWER_LOSS_MIXES

            for backends, (examples, steps) in POWER_LOSS_MIXES.items():
                total = machine_dose(examples, steps, profile.manager_machines)
                folder = os.path.join(workdir, f"powerloss-machine-{'+'.join(backends)}")
                plan.append(Planned(machine_step(backends, "power-loss"), "stateful", total[0] * (total[1] + 1),
                                    POWER_LOSS_STEP_SECONDS,
                                    lambda tick, b=backends, e=examples, s=steps, f=folder: power_loss_machine_run(
                                        b, f, examples=e, steps=s, seed=seed, settings_profile=profile.manager_machines,
                                        chaos_profile=profile.name, tick=tick)))
    if "network" in config.experiments:
        chroma = next((s for s in config.stores.values() if s.server is not None), None)
        from memsys.testing.chaos_config import NETWORK_FAULTS

        share = len(config.network_faults) / len(NETWORK_FAULTS)
        estimate = NETWORK_SECONDS["quick" if profile.network_quick else "deep"] * share
        plan.append(Planned("network faults", "network", 100, estimate / 100,
                            lambda tick: network(os.path.join(workdir, "network"), seed,
                                                 toxiproxy=config.toxiproxy.address,
                                                 start_toxiproxy=config.toxiproxy.start, chroma=chroma,
                                                 quick=profile.network_quick, faults=config.network_faults,
                                                 tick=tick)))
    if "powerloss" in config.experiments:
        plan.append(Planned("power loss", "powerloss", 2, 12 + 0.4 * profile.powerloss_transactions,
                            lambda tick: power_loss(os.path.join(workdir, "powerloss"), seed,
                                                    profile.powerloss_transactions, profile.power_failures, tick)))
    if "real" in config.experiments:
        fault_dose = DOSES[dose or profile.dose]
        for description, group in fault_plan(workdir, seed, fault_dose):
            weight = REAL_GROUP_WEIGHT.get(description.rpartition(": ")[2], 0.4)
            plan.append(Planned(description, "real", 1, weight * REAL_GROUP_SECONDS.get(fault_dose.name, 8.0),
                                lambda tick, g=group: _ticked(run_group(g, fault_dose), tick)))
    return plan


def _ticked(result: Any, tick: Callable[[int], None]) -> Any:
    tick(1)
    return result


class _TimeTicks:
    """For a workload bounded by time: one tick per second that passes, from a timer thread."""

    def __init__(self, tick: Callable[[int], None]) -> None:
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="chaos-time-ticks")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._tick(1)

    def __call__(self, n: int) -> None:  # transactions done: time, not count, is the measure here
        pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class RunProgress:
    """A progress bar over the whole run that advances with real work (transactions, kills,
    examples, groups) weighted by its estimated cost, so its time estimate is the remaining
    estimated work at the speed this run has shown so far. One line per finished step, for logs."""

    def __init__(self, plan: list[Planned], console: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.plan = plan
        self.console = console
        self.total = sum(p.estimate for p in plan) or 1.0
        self.done = 0.0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console,
                            transient=True, disable=not console.is_terminal)
        self.task = self.bar.add_task("chaos run", total=self.total)

    def __enter__(self) -> RunProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def step(self, planned: Planned) -> Callable[[int], None]:
        """The tick function for ``planned``: each call reports that many of its units done."""
        self.bar.update(self.task, description=planned.description)
        budget = [planned.estimate]

        def tick(units: int) -> None:
            with self._lock:
                amount = min(budget[0], units * planned.unit_seconds)
                budget[0] -= amount
                self.done += amount
            self.bar.advance(self.task, amount)

        self._budget = budget
        return tick

    def finish(self, index: int, planned: Planned, results: list[Experiment]) -> None:
        with self._lock:
            self.done += self._budget[0]  # what was estimated but not ticked (a step that ended early)
            self.bar.advance(self.task, self._budget[0])
            self._budget[0] = 0.0
        elapsed = time.monotonic() - self.started
        remaining = (self.total - self.done) * elapsed / max(self.done, 1e-9)
        verdict = ", ".join(sorted({r.status if r.ok else "FAILED" for r in results})) or "no result"
        self.console.print(f"[{index + 1}/{len(self.plan)}] {planned.description}: {verdict} in "
                           f"{sum(r.seconds for r in results):.1f} s; about {_eta(remaining)} left", highlight=False)


def run_plan(plan: list[Planned], on_result: Callable[[Experiment], None] | None = None,
             console: Any = None) -> list[Experiment]:
    from rich.console import Console

    console = console or Console(stderr=True)
    results: list[Experiment] = []
    with RunProgress(plan, console) as progress:
        for index, planned in enumerate(plan):
            tick = progress.step(planned)
            started = time.perf_counter()
            try:
                outcome = planned.run(tick)
            except Exception as exc:  # an experiment that breaks is a finding, not a crash of the runner
                outcome = Experiment(planned.description, "-", status="ERROR", detail=f"{type(exc).__name__}: {exc}",
                                     seconds=time.perf_counter() - started)
            batch = outcome if isinstance(outcome, list) else [outcome]
            for result in batch:
                results.append(result)
                if on_result is not None:
                    on_result(result)
            progress.finish(index, planned, batch)
    return results


def _default_config(seed: int, quick: bool, deep: bool = False) -> Any:
    from memsys.testing.chaos_config import build_config

    return build_config(None, seed=seed, profile="quick" if quick else "deep" if deep else "default")


def run_experiments(workdir: str, seed: int, quick: bool,
                    on_result: Callable[[Experiment], None] | None = None, *, dose: str | None = None,
                    only: Sequence[str] | None = None, config: Any = None) -> list[Experiment]:
    """Every experiment, in order. ``dose`` names the real-fault dose (``tiny``, ``quick``,
    ``default``, ``deep``; by default the profile's); ``only`` keeps the plan entries whose
    description starts with one of its strings (for focused runs)."""
    config = config or _default_config(seed, quick)
    plan = plan_run(config, workdir, dose=dose)
    if only is not None:
        plan = [p for p in plan if p.description.startswith(tuple(only))]
    os.makedirs(workdir, exist_ok=True)
    return run_plan(plan, on_result)


# ============================================================================== thresholds and report


def breaches(results: Sequence[Experiment], config: Any) -> list[str]:
    """Why the run fails: each experiment that is not ok or is beyond a threshold, named."""
    from memsys.testing.chaos_config import THRESHOLD_COUNTS

    found = []
    for r in results:
        reasons = []
        if r.status not in ("ok", "skipped", "unavailable"):
            reasons.append(f"status {r.status}")
        for key in THRESHOLD_COUNTS:
            limit = config.threshold(key)
            if getattr(r, key) > limit:
                reasons.append(f"{key} {getattr(r, key)} > {limit:g}")
        limit = config.threshold("recover_seconds")
        if limit is not None and r.recover_seconds > limit:
            reasons.append(f"recovery {r.recover_seconds:.2f} s > {limit:g} s")
        limit = config.threshold("p99_ms")
        if limit is not None:
            for key, samples in r.latency.items():
                store, operation, phase = key.split("|")
                if phase != "during" and samples and percentile(samples, 99) > limit:
                    reasons.append(f"p99 {operation} on {store} {phase} faults {percentile(samples, 99):.1f} ms > "
                                   f"{limit:g} ms")
        if reasons:
            found.append(f"{r.name} ({r.target}): {'; '.join(reasons)}")
    return found


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class ReportWriter:
    """report.json, rewritten (atomically) after every experiment, and report.html at the end."""

    def __init__(self, json_path: str, html_path: str, header: dict[str, Any]) -> None:
        self.json_path, self.html_path = json_path, html_path
        self.header = header
        self.results: list[Experiment] = []
        self.started = time.perf_counter()

    def add(self, result: Experiment) -> None:
        self.results.append(result)
        self.write(finished=False)

    def report(self, finished: bool, failures: Sequence[str] = ()) -> dict[str, Any]:
        keys = ("faults", "attempted", "acknowledged", "lost", "partial", "unexpected", "hung", "crashed", "errors")
        totals = {k: sum(getattr(r, k) for r in self.results) for k in keys}
        return {**self.header, "finished": finished, "seconds": time.perf_counter() - self.started,
                "totals": totals, "failures": list(failures),
                "experiments": [dataclasses.asdict(r) for r in self.results]}

    def write(self, finished: bool, failures: Sequence[str] = ()) -> dict[str, Any]:
        from memsys.durable import atomic_write

        report = self.report(finished, failures)
        atomic_write(self.json_path, json.dumps(report, indent=1).encode(), sync=False)
        os.chmod(self.json_path, 0o644)
        return report

    def write_html(self, report: dict[str, Any]) -> None:
        from memsys.testing.chaos_report import write_html

        write_html(report, self.html_path)


def run_chaos(workdir: str | None = None, seed: int = 0, report_path: str | None = None,
              quick: bool = False, *, dose: str | None = None, only: Sequence[str] | None = None,
              config: Any = None) -> int:
    """The ``memsys chaos run`` command. ``config`` (a checked ChaosConfig) overrides ``seed``,
    ``quick`` and ``report_path``; everything is checked before the first experiment."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from memsys.testing.chaos_config import build_config

    if config is None:
        config = build_config(None, seed=seed, profile="quick" if quick else None, workdir=workdir,
                              report=report_path)
    console = Console()
    console.width = max(console.width, 170)  # the report table is wide; a pipe defaults to 80 columns
    workdir = config.workdir or workdir or tempfile.mkdtemp(prefix="memsys-chaos-")
    os.makedirs(workdir, exist_ok=True)
    json_path, html_path = config.report_paths(workdir)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    run_id = f"{config.seed}-{secrets.token_hex(3)}"
    plan = plan_run(config, workdir, dose=dose, run_id=run_id)
    if only is not None:
        plan = [p for p in plan if p.description.startswith(tuple(only))]
    # Quarantines and retries are the experiments working: they go to a log file, not the terminal.
    handler = logging.FileHandler(os.path.join(workdir, "memsys.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("memsys")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    where = f"{len(config.stores)} configured stores" if config.stores else "seven embedded stores"
    console.print(f"memsys chaos run: {where}, profile {config.profile.name}, seed {config.seed}, "
                  f"{len(plan)} steps (about {_eta(sum(p.estimate for p in plan))} on the reference machine); "
                  f"work in {workdir}; report {json_path}", highlight=False)
    writer = ReportWriter(json_path, html_path, {"seed": config.seed, "run_id": run_id, "workdir": workdir,
                                                 "quick": config.profile.name == "quick", "config": config.describe(),
                                                 "planned": [p.description for p in plan]})
    writer.write(finished=False)
    try:
        results = run_plan(plan, writer.add, console)
    except KeyboardInterrupt:
        report = writer.write(finished=False, failures=["interrupted"])
        writer.write_html(report)
        console.print(f"interrupted: what ran is in {json_path} and {html_path}")
        raise
    finally:
        root.removeHandler(handler)
        root.propagate = True
        handler.close()
    failures = breaches(results, config)
    report = writer.write(finished=True, failures=failures)
    writer.write_html(report)
    table = Table(title="memsys chaos run")
    for column in ("experiment", "target", "faults", "attempted", "acked", "lost", "partial", "unexpected",
                   "hung", "crashed", "errors", "recover s", "status"):
        table.add_column(column, justify="right" if column not in ("experiment", "target", "status") else "left")
    for r in results:
        status = {"ok": "[green]ok", "skipped": "[yellow]skipped", "unavailable": "[yellow]unavailable"}.get(
            r.status, f"[bold red]{r.status}")
        table.add_row(escape(r.name), escape(r.target), str(r.faults), str(r.attempted), str(r.acknowledged), str(r.lost),
                      str(r.partial), str(r.unexpected), str(r.hung), str(r.crashed), str(r.errors),
                      f"{r.recover_seconds:.3f}", status)
    console.print(table)
    for r in results:
        # The power-loss phases' figures (compactions and recoveries cut by the power) are not columns.
        if r.detail and (not (r.status == "ok" and r.ok) or r.name.startswith("power loss")):
            console.print(f"[bold]{escape(r.name)} ({escape(r.target)})[/]: {escape(r.detail)}", highlight=False,
                          soft_wrap=True)
    totals = report["totals"]
    console.print(f"seed {config.seed}: faults injected {totals['faults']}, operations acknowledged "
                  f"{totals['acknowledged']}, lost {totals['lost']}, partial {totals['partial']}, unexpected "
                  f"{totals['unexpected']}, hung {totals['hung']}, crashed {totals['crashed']}, errors "
                  f"{totals['errors']}; report: {json_path} and {html_path}", highlight=False)
    for failure in failures:
        console.print(f"[bold red]FAILED[/] {escape(failure)} (seed {config.seed})", highlight=False, soft_wrap=True)
    return 1 if failures else 0
