"""Crash experiments: SIGKILL a process mid-write, recover, and judge the history.

Two workloads, each in a child process that the parent kills, on any of the
seven embedded stores (default: all seven: LMDB, DuckDB, Kuzu, TinyDB,
NetworkX, FAISS and embedded ChromaDB):

* cross-store transactions (``run_campaign``): a MemoryManager over the stores
  with a coordinator log runs transactions that each add fresh ids to two or
  more stores, and every fourth one to every store. The parent kills the child
  at a seeded random instant, or the child kills itself at a named step of the
  protocol (after prepare, after the log write, after the log sync, after the
  first store applied, after all applied, after the end record);
* single-store writes (``run_single_store_campaign``): each store on its own,
  opened durable (no coordinator), one thread per store doing single writes,
  batches (``store_many``), overwrites, deletes and reads of a few register
  keys, until the parent kills the process at a seeded random instant.

Each operation is logged ``invoke`` before and ``ok`` / ``fail`` / ``info`` after,
flushed, so the history survives the kill. Then the parent opens the stores
itself (which runs recovery) and judges the history with the set checker
(nothing acknowledged lost, nothing unexpected), the all-or-nothing checker
(every transaction, and every batch on a store whose apply is atomic, on all
its stores or none) and, for single-store runs, the register check (no key
reads older than its last acknowledged write or resurrects a delete).

    memsys chaos crash --kills 100 --seed 7
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from memsys.application.transactions import STEPS
from memsys.testing.history import (
    AllOrNothingCheck,
    HistoryFile,
    Op,
    RegisterCheck,
    TransactionCheck,
    check_all_or_nothing,
    check_registers,
    check_transactions,
    read_ops,
    read_transactions,
)

#: Every embedded store; the default for both campaigns, the CLI and the chaos run.
BACKENDS = ("lmdb", "duckdb", "kuzu", "tinydb", "networkx", "faiss", "chroma")
#: The four the campaign covered first, with no slow imports: for long kill counts in little time.
FAST_BACKENDS = ("lmdb", "duckdb", "kuzu", "tinydb")
PATHS = {"lmdb": "lmdb", "duckdb": "items.duckdb", "kuzu": "graph.kuzu", "tinydb": "items.json",
         "networkx": "graph", "faiss": "faiss", "chroma": "chroma"}
#: Under a coordinator log a store need not sync each apply: the log already holds the write.
MANAGED = {"lmdb": {"sync": False}, "duckdb": {"sync": False}, "kuzu": {"buffer_pool_size": 64 << 20},
           "tinydb": {"sync": False}, "networkx": {"sync": False}, "faiss": {"sync": False, "dimension": 32},
           "chroma": {"dimension": 32}}
#: On its own a store must make each acknowledged write durable: its default settings.
DURABLE = {"kuzu": {"buffer_pool_size": 64 << 20}, "faiss": {"dimension": 32}, "chroma": {"dimension": 32}}
#: Register keys of the single-store workload (overwritten, deleted and read; not in the set check).
REGISTERS = tuple(f"reg-{k}" for k in range(4))
_CAMPAIGN_FILE = "campaign.json"


def check_backends(backends: Sequence[str]) -> tuple[str, ...]:
    from memsys.domain.errors import InvalidInputError

    chosen = tuple(dict.fromkeys(backends))
    unknown = [b for b in chosen if b not in PATHS]
    if not chosen or unknown:
        raise InvalidInputError(f"unknown crash backends {unknown or '(none given)'}; use some of {BACKENDS}")
    return chosen


def _check_count(value: object, what: str, least: int) -> None:
    from memsys.domain.errors import InvalidInputError

    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidInputError(f"{what} must be an int >= {least}, got {value!r}")


def open_store(backend: str, folder: str, *, managed: bool = True) -> Any:
    """``backend``'s store in ``folder``, set up as the campaign uses it under a manager or alone."""
    from memsys.adapters import adapter_class

    settings = (MANAGED if managed else DURABLE).get(backend, {})
    return adapter_class(backend)(path=os.path.join(folder, PATHS[backend]), **settings)


_LIBRARIES = {"lmdb": "lmdb", "duckdb": "duckdb", "kuzu": "kuzu", "tinydb": "tinydb", "networkx": "networkx",
              "faiss": "faiss", "chroma": "chromadb"}


def _import_engines(backends: Sequence[str]) -> None:
    """Import the engines first, so the recovery time measured is recovery, not a first import."""
    import importlib

    for backend in backends:
        try:
            importlib.import_module(_LIBRARIES[backend])
        except ImportError:
            pass  # opening the store raises MissingBackend naming the extra


def _remember_backends(workdir: str, backends: tuple[str, ...]) -> None:
    """The campaign's stores, so a later check (or a worker started by hand) opens the same ones."""
    path = os.path.join(workdir, _CAMPAIGN_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            known = tuple(json.load(f)["backends"])
        if known != backends:
            from memsys.domain.errors import InvalidInputError

            raise InvalidInputError(f"{workdir} holds a crash campaign over {list(known)}, not {list(backends)}")
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"backends": list(backends)}, f)


def campaign_backends(workdir: str) -> tuple[str, ...]:
    try:
        with open(os.path.join(workdir, _CAMPAIGN_FILE), encoding="utf-8") as f:
            return tuple(json.load(f)["backends"])
    except FileNotFoundError:
        return FAST_BACKENDS  # a work folder from before the campaign named its stores


class SimulatedCrash(BaseException):
    """Stops the commit protocol where a SIGKILL would; a BaseException, so nothing in memsys catches it."""


def crash_at(manager: Any, step: str) -> None:
    """Make ``manager``'s next commit stop at ``step`` (one of STEPS) with SimulatedCrash."""
    def hook(name: str) -> None:
        if name == step:
            raise SimulatedCrash(step)

    manager.coordinator.crash_hook = hook


def abandon(manager: Any) -> None:
    """Drop a manager as a dead process would: no checkpoint, no flush; the files stay as they are."""
    manager.coordinator.log.close()
    for adapter in manager.adapters.values():
        adapter._coordinator = None
        adapter.close()


def open_manager(workdir: str, backends: Sequence[str] | None = None) -> Any:
    """A MemoryManager over the campaign's stores in ``workdir`` (opening it runs recovery)."""
    from memsys.application.manager import MemoryManager

    chosen = check_backends(backends) if backends is not None else campaign_backends(workdir)
    stores: dict[str, Any] = {}
    try:
        for backend in chosen:
            stores[backend] = open_store(backend, workdir)
        return MemoryManager(stores, transaction_log=os.path.join(workdir, "txlog"))
    except BaseException:
        for store in stores.values():
            store.close()
        raise


def _item(item_id: str, content: str, tx: str, version: int = 1) -> Any:
    from memsys.domain.model import MemoryItem, MemoryType

    return MemoryItem(id=item_id, content=content, memory_type=MemoryType.EPISODIC, metadata={"tx": tx},
                      version=version)


def _say_ready() -> None:
    print("ready", flush=True)


def _worker(args: argparse.Namespace, ready: Callable[[], None] = _say_ready) -> int:
    from memsys.domain.errors import CommitIncompleteError, MemsysError

    backends = check_backends(args.backends.split(",")) if args.backends else campaign_backends(args.workdir)
    manager = open_manager(args.workdir, backends)
    history = HistoryFile(os.path.join(args.workdir, f"history-{args.round:05d}.jsonl"))
    rng = random.Random(args.seed)
    if args.crash_step:
        remaining = [args.crash_after]

        def crash(step: str) -> None:
            if step == args.crash_step:
                remaining[0] -= 1
                if remaining[0] <= 0:
                    os.kill(os.getpid(), signal.SIGKILL)

        manager.coordinator.crash_hook = crash
    ready()
    for n in range(args.transactions):
        tx_id = f"r{args.round:05d}-t{n:05d}"
        # Every fourth transaction spans every store, so each kill can land in one that does.
        stores = sorted(backends) if n % 4 == 0 or len(backends) < 3 else \
            sorted(rng.sample(backends, rng.randint(2, len(backends))))
        writes = {s: [f"{tx_id}-{s}-{j}" for j in range(rng.randint(1, 3))] for s in stores}
        history.write({"type": "invoke", "tx": tx_id, "writes": writes})
        try:
            with manager.with_transaction(stores):
                for store, ids in writes.items():
                    for item_id in ids:
                        manager.adapters[store].store(_item(item_id, f"{tx_id} wrote this to {store}", tx_id))
        except CommitIncompleteError:  # committed: recovery must complete it, so it counts as acknowledged
            history.write({"type": "ok", "tx": tx_id, "incomplete": True})
        except MemsysError as exc:
            history.write({"type": "fail", "tx": tx_id, "error": str(exc)})
        else:
            history.write({"type": "ok", "tx": tx_id})
    history.close()
    manager.close()
    return 0


def _single_store_loop(store: Any, backend: str, history: HistoryFile, rng: random.Random, round_no: int,
                       operations: int) -> None:
    """One store's share of a single-store round: fresh writes, batches, and register traffic."""
    from memsys.domain.errors import InvalidInputError

    process = f"{backend}-r{round_no}"
    atomic = bool(getattr(store, "atomic_apply", False))
    for n in range(operations):
        tx = f"r{round_no:05d}-{backend}-o{n:05d}"
        roll = rng.random()
        if roll < 0.55:
            size = 1 if roll < 0.3 else 3
            ids = [f"{tx}-{j}" for j in range(size)]
            # A batch is one all-or-nothing record where the store's apply is atomic; otherwise
            # each id is its own record (a store that compensates in process cannot outlive a kill).
            groups = [(tx, ids)] if atomic or size == 1 else [(f"{tx}-{j}", [i]) for j, i in enumerate(ids)]
            for name, group in groups:
                history.write({"type": "invoke", "tx": name, "writes": {backend: group}})
            items = [_item(i, f"{tx} wrote this", name) for name, group in groups for i in group]
            try:
                if size == 1:
                    store.store(items[0])
                else:
                    store.store_many(items)
            except InvalidInputError as exc:  # refused before anything changed
                for name, _ in groups:
                    history.write({"type": "fail", "tx": name, "error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - the outcome is unknown; the checker decides
                for name, _ in groups:
                    history.write({"type": "info", "tx": name, "error": f"{type(exc).__name__}: {exc}"})
            else:
                for name, _ in groups:
                    history.write({"type": "ok", "tx": name})
            continue
        key = REGISTERS[rng.randrange(len(REGISTERS))]
        if roll < 0.8:
            op, version = "write", round_no * 1_000_000 + n + 1  # larger than every earlier write of the key
        elif roll < 0.88:
            op, version = "delete", None
        else:
            op, version = "read", None
        logged = f"{backend}/{key}"  # register keys are per store
        history.write({"process": process, "type": "invoke", "f": op, "key": logged, "value": version})
        try:
            if op == "write":
                store.store(_item(key, f"version {version}", tx, version))
                value = version
            elif op == "delete":
                store.delete(key)
                value = None
            else:
                found = store.retrieve(key)
                value = None if found is None else found.version
        except Exception as exc:  # noqa: BLE001
            history.write({"process": process, "type": "info", "f": op, "key": logged, "value": version,
                           "error": f"{type(exc).__name__}: {exc}"})
            continue
        history.write({"process": process, "type": "ok", "f": op, "key": logged, "value": value})


def _single_worker(args: argparse.Namespace, ready: Callable[[], None] = _say_ready) -> int:
    backends = check_backends(args.backends.split(",")) if args.backends else campaign_backends(args.workdir)
    stores = {b: open_store(b, args.workdir, managed=False) for b in backends}
    histories = {b: HistoryFile(os.path.join(args.workdir, f"single-{b}-{args.round:05d}.jsonl")) for b in backends}
    failures: list[str] = []

    def run(backend: str, offset: int) -> None:
        try:
            _single_store_loop(stores[backend], backend, histories[backend], random.Random(args.seed + offset),
                               args.round, args.transactions)
        except BaseException as exc:  # noqa: BLE001 - reported by the exit code
            failures.append(f"{backend}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(b, k), name=f"crash-{b}") for k, b in enumerate(backends)]
    ready()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for backend in backends:
        histories[backend].close()
        stores[backend].close()
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 3
    return 0


@dataclasses.dataclass
class CampaignResult:
    kills: int = 0
    rounds: int = 0
    not_killed: int = 0
    recovery_seconds: list[float] = dataclasses.field(default_factory=list)
    check: TransactionCheck = dataclasses.field(default_factory=TransactionCheck)
    per_step: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Atomicity alone (per partial transaction, which stores have it and which lack it).
    atomicity: AllOrNothingCheck = dataclasses.field(default_factory=AllOrNothingCheck)
    #: Stale and invented reads of register keys (single-store campaigns).
    registers: RegisterCheck = dataclasses.field(default_factory=RegisterCheck)
    backends: tuple[str, ...] = ()
    mode: str = "cross-store"

    @property
    def valid(self) -> bool:
        return self.check.valid and self.atomicity.valid and self.registers.valid

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "backends": list(self.backends), "kills": self.kills, "rounds": self.rounds,
                "not_killed": self.not_killed, "kills_by_step": self.per_step, **self.check.counts(),
                "partial_transactions": len(self.atomicity.partial), "stale_reads": len(self.registers.stale),
                "unexpected_reads": len(self.registers.unexpected), "register_reads": self.registers.reads,
                "recovery_seconds_max": max(self.recovery_seconds, default=0.0),
                "recovery_seconds_median": sorted(self.recovery_seconds)[len(self.recovery_seconds) // 2]
                if self.recovery_seconds else 0.0}

    def problems(self, limit: int = 5) -> str:
        """What broke, for a failure message: the first few of each anomaly."""
        parts = []
        for label, items in (("lost", self.check.lost), ("partial", self.check.partial),
                             ("unexpected", self.check.unexpected)):
            if items:
                parts.append(f"{label} {items[:limit]}")
        if self.atomicity.partial:
            parts.append("not all-or-nothing: " + self.atomicity.explain(limit).replace("\n", "; "))
        if self.registers.stale:
            parts.append(f"stale reads {self.registers.stale[:limit]}")
        if self.registers.unexpected:
            parts.append(f"invented reads {self.registers.unexpected[:limit]}")
        return "; ".join(parts)


def present_ids(manager: Any) -> dict[str, set[str]]:
    return {name: {item.id for item in adapter.iter_items()} for name, adapter in manager.adapters.items()}


def _writers(stores: dict[str, Any], skip: Sequence[str] = ()) -> dict[str, dict[str, str | None]]:
    """Per store, each id it holds and the transaction that wrote it (its ``tx`` metadata)."""
    return {name: {item.id: (item.metadata or {}).get("tx") for item in store.iter_items() if item.id not in skip}
            for name, store in stores.items()}


def check_workdir(workdir: str) -> tuple[TransactionCheck, float]:
    """Open the stores (recovery runs), then judge every history in ``workdir`` (set checker)."""
    check, _, recovery = judge_workdir(workdir)
    return check, recovery


def judge_workdir(workdir: str) -> tuple[TransactionCheck, AllOrNothingCheck, float]:
    """Open the stores (recovery runs), then judge the histories: set checker and all-or-nothing."""
    _import_engines(campaign_backends(workdir))
    started = time.perf_counter()
    manager = open_manager(workdir)
    recovery = time.perf_counter() - started
    try:
        writers = _writers(manager.adapters)
    finally:
        manager.close()
    histories = sorted(os.path.join(workdir, f) for f in os.listdir(workdir) if f.startswith("history-"))
    records = read_transactions(histories)
    present = {store: set(ids) for store, ids in writers.items()}
    return check_transactions(records, present), check_all_or_nothing(records, writers), recovery


def judge_single_store(workdir: str) -> tuple[TransactionCheck, AllOrNothingCheck, RegisterCheck, float]:
    """Reopen each store on its own, then judge its histories: set, all-or-nothing and registers."""
    backends = campaign_backends(workdir)
    _import_engines(backends)
    started = time.perf_counter()
    stores: dict[str, Any] = {}
    try:
        for backend in backends:
            stores[backend] = open_store(backend, workdir, managed=False)
        recovery = time.perf_counter() - started
        writers = _writers(stores, skip=REGISTERS)
        finals = {b: {key: stores[b].retrieve(key) for key in REGISTERS} for b in backends}
    finally:
        for store in stores.values():
            store.close()
    files = sorted(os.listdir(workdir))
    records: dict[str, Any] = {}
    ops: list[Op] = []
    for backend in backends:
        mine = [os.path.join(workdir, f) for f in files if f.startswith(f"single-{backend}-")]
        records.update(read_transactions(mine))
        ops.extend(read_ops(mine))
        for key, item in finals[backend].items():  # a read after everything: must see the last acknowledged
            ops.append(Op(f"check-{backend}", "invoke", "read", None, f"{backend}/{key}"))
            ops.append(Op(f"check-{backend}", "ok", "read", None if item is None else item.version,
                          f"{backend}/{key}"))
    present = {store: set(ids) for store, ids in writers.items()}
    return (check_transactions(records, present), check_all_or_nothing(records, writers), check_registers(ops),
            recovery)


# Children come from a fork server that has imported memsys and every engine once (chromadb
# alone takes seconds), so a round costs opening the stores, not starting Python again. The
# server imports only: no engine runs there, so no engine thread pool is forked.
_PRELOAD = ["memsys.testing.crash", "memsys.application.manager", "memsys.adapters.lmdb_store",
            "memsys.adapters.duckdb_store", "memsys.adapters.kuzu_store", "memsys.adapters.tinydb_store",
            "memsys.adapters.networkx_store", "memsys.adapters.faiss_store", "memsys.adapters.chroma_store",
            *_LIBRARIES.values()]


def _context() -> Any:
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)  # a missing engine is skipped by the server
    return context


def _child(argv: list[str], ready: Any) -> None:
    """A round's worker, in a process forked from the server: ``main`` with a ready event."""
    import traceback

    args = _parser().parse_args(argv)
    try:
        code = (_worker if args.command == "worker" else _single_worker)(args, ready.set)
    except BaseException:
        with open(os.path.join(args.workdir, f"worker-{args.round:05d}.err"), "w", encoding="utf-8") as f:
            f.write(traceback.format_exc())
        raise
    sys.exit(code)


def _worker_error(workdir: str, round_no: int) -> str:
    try:
        with open(os.path.join(workdir, f"worker-{round_no:05d}.err"), encoding="utf-8") as f:
            return f.read()[-3000:]
    except FileNotFoundError:
        return "(no traceback saved)"


def _start(argv: list[str], workdir: str, round_no: int, timeout: float) -> Any:
    context = _context()
    ready = context.Event()
    child = context.Process(target=_child, args=(argv, ready), name=f"memsys-crash-{round_no}")
    child.start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.02):
        if not child.is_alive() or time.monotonic() > deadline:
            child.kill()
            child.join()
            raise RuntimeError(f"crash worker failed to start (round {round_no}, exit code {child.exitcode}): "
                               f"{_worker_error(workdir, round_no)}")
    return child


def _finish(child: Any, workdir: str, round_no: int, timeout: float) -> int:
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        raise RuntimeError(f"crash worker hung in round {round_no}")
    if child.exitcode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"crash worker exited with {child.exitcode} in round {round_no}: "
                           f"{_worker_error(workdir, round_no)}")
    return child.exitcode


def run_campaign(kills: int, seed: int = 0, workdir: str | None = None, transactions: int = 200,
                 progress: bool = True, timeout: float = 120.0, backends: Sequence[str] = BACKENDS,
                 steps: Sequence[str] = STEPS, on_kill: Callable[[int], None] | None = None) -> CampaignResult:
    """Kill ``kills`` child processes running cross-store transactions over ``backends``,
    alternating seeded random instants and the named protocol ``steps``; ``on_kill(1)`` is
    called after each kill has been judged (for progress that follows the work)."""
    from rich.progress import Progress

    backends = check_backends(backends)
    _check_count(kills, "kills", 0)
    _check_count(transactions, "transactions", 1)
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        from memsys.domain.errors import InvalidInputError

        raise InvalidInputError(f"unknown crash steps {unknown or '(none given)'}; use some of {STEPS}")
    workdir = workdir or tempfile.mkdtemp(prefix="memsys-crash-")
    os.makedirs(workdir, exist_ok=True)
    _remember_backends(workdir, backends)
    rng = random.Random(seed)
    result = CampaignResult(backends=backends)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("SIGKILL rounds", total=kills)
        while result.kills < kills:
            round_no = result.rounds
            result.rounds += 1
            named = round_no % 2 == 1
            step = steps[(round_no // 2) % len(steps)] if named else ""
            argv = ["worker", "--workdir", workdir, "--seed", str(rng.randrange(2**32)), "--round", str(round_no),
                    "--transactions", str(transactions), "--backends", ",".join(backends)]
            if named:
                argv += ["--crash-step", step, "--crash-after", str(rng.randint(1, 12))]
            child = _start(argv, workdir, round_no, timeout)
            if not named:
                time.sleep(rng.uniform(0.005, 0.5))
                child.kill()
            killed = _finish(child, workdir, round_no, timeout) == -signal.SIGKILL
            if killed:
                result.kills += 1
                key = step or "random instant"
                result.per_step[key] = result.per_step.get(key, 0) + 1
                bar.advance(task)
            else:
                result.not_killed += 1
            check, atomicity, recovery = judge_workdir(workdir)
            result.recovery_seconds.append(recovery)
            result.check, result.atomicity = check, atomicity
            if on_kill is not None and killed:
                on_kill(1)
            if not result.valid:
                break  # the first round that breaks a promise is the one to debug
    _save(workdir, "crash-report.json", result)
    return result


def run_single_store_campaign(kills: int, seed: int = 0, workdir: str | None = None, operations: int = 400,
                              progress: bool = True, timeout: float = 120.0,
                              backends: Sequence[str] = BACKENDS,
                              on_kill: Callable[[int], None] | None = None) -> CampaignResult:
    """Kill ``kills`` child processes in which every store in ``backends``, opened on its own,
    takes single writes, batches, overwrites, deletes and reads at once (one thread each)."""
    from rich.progress import Progress

    backends = check_backends(backends)
    _check_count(kills, "kills", 0)
    _check_count(operations, "operations", 1)
    workdir = workdir or tempfile.mkdtemp(prefix="memsys-crash-single-")
    os.makedirs(workdir, exist_ok=True)
    _remember_backends(workdir, backends)
    rng = random.Random(seed)
    result = CampaignResult(backends=backends, mode="single-store")
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("SIGKILL rounds (single-store writes)", total=kills)
        while result.kills < kills:
            round_no = result.rounds
            result.rounds += 1
            argv = ["single", "--workdir", workdir, "--seed", str(rng.randrange(2**32)), "--round", str(round_no),
                    "--transactions", str(operations), "--backends", ",".join(backends)]
            child = _start(argv, workdir, round_no, timeout)
            time.sleep(rng.uniform(0.02, 0.6))
            child.kill()
            killed = _finish(child, workdir, round_no, timeout) == -signal.SIGKILL
            if killed:
                result.kills += 1
                result.per_step["random instant"] = result.per_step.get("random instant", 0) + 1
                bar.advance(task)
            else:
                result.not_killed += 1
            check, atomicity, registers, recovery = judge_single_store(workdir)
            result.recovery_seconds.append(recovery)
            result.check, result.atomicity, result.registers = check, atomicity, registers
            if on_kill is not None and killed:
                on_kill(1)
            if not result.valid:
                break
    _save(workdir, "crash-single-report.json", result)
    return result


def _save(workdir: str, name: str, result: CampaignResult) -> None:
    with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
        json.dump({**result.summary(), "lost": result.check.lost[:50], "partial": result.check.partial[:50],
                   "unexpected": result.check.unexpected[:50],
                   "not_all_or_nothing": dict(list(result.atomicity.partial.items())[:50]),
                   "stale_reads": result.registers.stale[:50],
                   "unexpected_reads": result.registers.unexpected[:50]}, f, indent=1, default=str)


def run_crash_campaign(kills: int, seed: int, workdir: str | None, transactions: int,
                       single_kills: int | None = None, backends: Sequence[str] = BACKENDS) -> int:
    """The ``memsys chaos crash`` command: SIGKILLs during cross-store transactions over every
    store, then during single-store writes (``single_kills``, default a fifth as many); print
    the counts, exit 1 on any anomaly."""
    from rich.console import Console
    from rich.table import Table

    _check_count(kills, "kills", 0)
    single_kills = max(1, kills // 5) if single_kills is None else single_kills
    _check_count(single_kills, "single_kills", 0)
    check_backends(backends)
    base = workdir or tempfile.mkdtemp(prefix="memsys-crash-")
    results = [run_campaign(kills, seed, os.path.join(base, "transactions"), transactions, backends=backends)]
    if single_kills:
        results.append(run_single_store_campaign(single_kills, seed, os.path.join(base, "single"),
                                                 backends=backends))
    console = Console()
    for result in results:
        summary = result.summary()
        table = Table(title=f"memsys chaos crash, {result.mode}: {result.kills} SIGKILLs, seed {seed}",
                      caption="stores: " + ", ".join(result.backends))
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key in ("kills", "attempted", "acknowledged", "present", "lost", "partial", "unexpected", "recovered",
                    "failed", "unknown", "not_killed", "register_reads", "stale_reads", "unexpected_reads"):
            style = "bold red" if key in ("lost", "partial", "unexpected", "stale_reads", "unexpected_reads") \
                and summary[key] else ""
            table.add_row(key, f"[{style}]{summary[key]}" if style else str(summary[key]))
        table.add_row("recovery (median / max s)",
                      f"{summary['recovery_seconds_median']:.3f} / {summary['recovery_seconds_max']:.3f}")
        console.print(table)
        console.print("kills by step: " + ", ".join(f"{k} {v}" for k, v in sorted(result.per_step.items())))
        if not result.valid:
            console.print(f"[bold red]{result.mode}: {result.problems()}")
    console.print(f"work folder: {base}")
    return 0 if all(r.valid for r in results) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m memsys.testing.crash")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="cross-store transactions until killed")
    single = sub.add_parser("single", help="single-store writes on every store at once until killed")
    for p in (worker, single):
        p.add_argument("--workdir", required=True)
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--round", type=int, required=True)
        p.add_argument("--transactions", type=int, default=200)
        p.add_argument("--backends", default=None, help="comma-separated; default: the campaign's")
    worker.add_argument("--crash-step", choices=STEPS)
    worker.add_argument("--crash-after", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _worker(args) if args.command == "worker" else _single_worker(args)


if __name__ == "__main__":
    sys.exit(main())
