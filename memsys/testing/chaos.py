"""``memsys chaos run``: resilience experiments on the seven embedded stores.

In a working folder it builds TinyDB, NetworkX, FAISS, ChromaDB (embedded),
Kuzu, LMDB and DuckDB stores and runs:

* fault injection per store: cross-store transactions (the store under test
  plus an LMDB witness) while the store's applies and prepares fail at random,
  transiently and for good; then the faults heal and recovery catches up;
* crash and recovery: child processes running transactions over LMDB, DuckDB,
  Kuzu and TinyDB are SIGKILLed at random instants and at every protocol step;
* the stateful model: random transactions over all seven stores, with
  simulated crashes at every step, against a dict model;
* network faults, where a Toxiproxy server binary is at hand: a `chroma run`
  server behind Toxiproxy gets latency, a stalled connection and an outage;
* the faults real stores meet (``memsys.testing.real_faults``), on each of the
  seven stores, the coordinator log and a manager over several stores: a small
  file system that fills up, bit flips / truncation / zeroed blocks in the
  files (read back in child processes), a second opener in this process and
  in another, items up to 64 MiB and versions near 2**63, and a soak of
  sustained updates.

Every experiment keeps a history and the history checker judges it. The
report (printed, and saved as JSON) gives per experiment the faults injected,
operations acknowledged, lost, partial, unexpected, hung, crashed, errors (an
exception that is not the typed memsys error the fault calls for), and the
time to recover. The exit status is 1 if any of those is not zero.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from memsys.domain.errors import CommitIncompleteError, MemsysError, StoreError
from memsys.domain.model import MemoryItem, MemoryType
from memsys.testing.crash import present_ids
from memsys.testing.faults import FaultInjector
from memsys.testing.history import TransactionRecord, check_transactions

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


def _item(item_id: str, tx: str) -> MemoryItem:
    return MemoryItem(id=item_id, content=f"written by {tx}", memory_type=MemoryType.EPISODIC, metadata={"tx": tx})


def run_transactions(manager: Any, stores: list[str], count: int, prefix: str, rng: random.Random,
                     records: dict[str, TransactionRecord]) -> None:
    """``count`` transactions adding fresh ids to ``stores``; each outcome goes in ``records``."""
    for n in range(count):
        tx = f"{prefix}-{n:04d}"
        writes = {s: [f"{tx}-{s}-{j}" for j in range(rng.randint(1, 2))] for s in stores}
        record = records[tx] = TransactionRecord(tx, writes)
        try:
            with manager.with_transaction(stores):
                for store, ids in writes.items():
                    for item_id in ids:
                        manager.adapters[store].store(_item(item_id, tx))
            record.outcome = "ok"
        except CommitIncompleteError:
            record.outcome = "ok"  # committed: the decision is durable, recovery must complete it
        except MemsysError:
            record.outcome = "fail"


def judge(experiment: Experiment, manager: Any, records: dict[str, TransactionRecord]) -> None:
    check = check_transactions(records, present_ids(manager))
    experiment.attempted = check.attempted
    experiment.acknowledged = check.acknowledged
    experiment.lost, experiment.partial = len(check.lost), len(check.partial)
    experiment.unexpected, experiment.recovered = len(check.unexpected), len(check.recovered)
    if not check.valid:
        experiment.status = "FAILED"
        experiment.detail = f"lost {check.lost[:3]} partial {check.partial[:3]} unexpected {check.unexpected[:3]}"


def fault_injection(backend: str, folder: str, seed: int, transactions: int) -> Experiment:
    from memsys.application.manager import MemoryManager

    experiment = Experiment("fault injection", backend)
    started = time.perf_counter()
    manager = MemoryManager({backend: open_store(backend, folder), "witness": open_store("lmdb", folder + "-w")},
                            transaction_log=os.path.join(folder, "txlog"))
    faults = FaultInjector(manager.adapters[backend], seed=seed)
    rng = random.Random(seed)
    records: dict[str, TransactionRecord] = {}
    try:
        stores = sorted([backend, "witness"])
        faults.fail("apply", probability=0.35).fail("prepare", probability=0.1)
        run_transactions(manager, stores, transactions, f"{backend}-transient", rng, records)
        faults.heal()
        faults.fail("apply", error=StoreError, times=3)  # a store that refuses writes for a while
        run_transactions(manager, stores, transactions // 2, f"{backend}-outage", rng, records)
        faults.heal()
        recover_started = time.perf_counter()
        report = manager.recover()
        experiment.recover_seconds = time.perf_counter() - recover_started
        if not report.ok:
            experiment.status, experiment.detail = "FAILED", f"recovery failed: {report.failed_stores}"
        run_transactions(manager, stores, 5, f"{backend}-healed", rng, records)
        experiment.faults = faults.total
        judge(experiment, manager, records)
    finally:
        faults.remove()
        manager.close()
    experiment.seconds = time.perf_counter() - started
    return experiment


def crash_recovery(folder: str, seed: int, kills: int) -> Experiment:
    from memsys.testing.crash import run_campaign

    experiment = Experiment("crash and recovery (SIGKILL)", "lmdb+duckdb+kuzu+tinydb")
    started = time.perf_counter()
    result = run_campaign(kills=kills, seed=seed, workdir=folder, transactions=80, progress=False)
    summary = result.summary()
    experiment.faults = result.kills
    experiment.attempted, experiment.acknowledged = summary["attempted"], summary["acknowledged"]
    experiment.lost, experiment.partial = summary["lost"], summary["partial"]
    experiment.unexpected, experiment.recovered = summary["unexpected"], summary["recovered"]
    experiment.recover_seconds = summary["recovery_seconds_max"]
    experiment.detail = "kills by step: " + ", ".join(f"{k} {v}" for k, v in sorted(result.per_step.items()))
    if not result.valid:
        experiment.status = "FAILED"
    experiment.seconds = time.perf_counter() - started
    return experiment


def stateful_model(folder: str, examples: int, steps: int) -> Experiment:
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    from memsys.testing.stateful import transaction_machine

    experiment = Experiment("stateful model with simulated crashes", "all seven")
    started = time.perf_counter()

    def open_seven(path: str) -> dict[str, Any]:
        return {backend: open_store(backend, path) for backend in SEVEN}

    try:
        run_state_machine_as_test(transaction_machine(open_seven), settings=settings(
            max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck)))
    except AssertionError as exc:
        experiment.status = "FAILED"
        experiment.partial = 1
        experiment.detail = str(exc).splitlines()[0][:300]
    else:
        experiment.attempted = examples
        experiment.detail = f"{examples} runs of up to {steps} steps, every state checked against the model"
    experiment.seconds = time.perf_counter() - started
    return experiment


def network_faults(folder: str, seed: int, transactions: int) -> Experiment:
    from memsys.adapters.chroma_store import ChromaDBVectorStore
    from memsys.application.manager import MemoryManager
    from memsys.testing.servers import ChromaServer, ServerUnavailable, ToxiproxyServer

    experiment = Experiment("network faults (Toxiproxy)", "chroma server")
    started = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    try:
        toxiproxy = ToxiproxyServer(log_dir=folder)
    except ServerUnavailable as exc:
        experiment.status, experiment.detail = "skipped", str(exc)
        return experiment
    chroma = None
    manager = None
    try:
        chroma = ChromaServer(os.path.join(folder, "chroma-server"))
        proxy = toxiproxy.client.create_proxy("chroma", upstream=f"127.0.0.1:{chroma.port}")
        remote = ChromaDBVectorStore(path=os.path.join(folder, "ns"), host=proxy.host, port=proxy.port,
                                     dimension=64, timeout=1.0)
        manager = MemoryManager({"chroma": remote, "witness": open_store("lmdb", os.path.join(folder, "w"))},
                                transaction_log=os.path.join(folder, "txlog"))
        rng = random.Random(seed)
        records: dict[str, TransactionRecord] = {}
        stores = ["chroma", "witness"]
        run_transactions(manager, stores, transactions, "healthy", rng, records)
        with proxy.toxic("latency", latency=150, jitter=30):
            run_transactions(manager, stores, transactions // 2, "latency", rng, records)
        experiment.faults += 1
        with proxy.toxic("timeout", timeout=0):
            run_transactions(manager, stores, 3, "stalled", rng, records)
        experiment.faults += 1
        with proxy.down():
            run_transactions(manager, stores, 3, "down", rng, records)
        experiment.faults += 1
        recover_started = time.perf_counter()
        while True:  # the first moment after healing that the store takes writes again
            report = manager.recover()
            if report.ok or time.perf_counter() - recover_started > 30:
                break
            time.sleep(0.1)
        experiment.recover_seconds = time.perf_counter() - recover_started
        run_transactions(manager, stores, 5, "healed", rng, records)
        judge(experiment, manager, records)
    except ServerUnavailable as exc:
        experiment.status, experiment.detail = "skipped", str(exc)
    finally:
        if manager is not None:
            manager.close()
        if chroma is not None:
            chroma.stop()
        toxiproxy.stop()
    experiment.seconds = time.perf_counter() - started
    return experiment


def run_experiments(workdir: str, seed: int, quick: bool,
                    on_result: Callable[[Experiment], None] | None = None, *, dose: str | None = None,
                    only: Sequence[str] | None = None) -> list[Experiment]:
    """Every experiment, in order. ``dose`` names the real-fault dose (``tiny``, ``quick``,
    ``default``, ``deep``; by default ``quick`` with ``quick``); ``only`` keeps the plan entries
    whose description starts with one of its strings (for focused runs)."""
    from memsys.testing.real_faults import DOSES, fault_plan, run_group

    transactions = 20 if quick else 60
    fault_dose = DOSES[dose or ("quick" if quick else "default")]
    plan: list[tuple[str, Callable[[], Experiment | list[Experiment]]]] = []
    for n, backend in enumerate(SEVEN):
        plan.append((f"fault injection: {backend}", lambda b=backend, n=n: fault_injection(
            b, os.path.join(workdir, f"faults-{b}"), seed + n, transactions)))
    plan.append(("crash and recovery", lambda: crash_recovery(os.path.join(workdir, "crash"), seed,
                                                              5 if quick else 30)))
    plan.append(("stateful model", lambda: stateful_model(os.path.join(workdir, "model"), 3 if quick else 10,
                                                          15 if quick else 25)))
    plan.append(("network faults", lambda: network_faults(os.path.join(workdir, "network"), seed, transactions)))
    # The faults real stores meet (disk full, damaged files, a second opener, oversized writes,
    # sustained updates): each group in a child process, so a crash or a hang is counted, not suffered.
    for description, group in fault_plan(workdir, seed, fault_dose):
        plan.append((description, lambda g=group: run_group(g, fault_dose)))
    if only is not None:
        plan = [(d, run) for d, run in plan if d.startswith(tuple(only))]
    results: list[Experiment] = []
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("experiments", total=len(plan))
        for description, run in plan:
            bar.update(task, description=description)
            os.makedirs(workdir, exist_ok=True)
            try:
                outcome = run()
            except Exception as exc:  # an experiment that breaks is a finding, not a crash of the runner
                outcome = Experiment(description, "-", status="ERROR", detail=f"{type(exc).__name__}: {exc}")
            for result in outcome if isinstance(outcome, list) else [outcome]:
                results.append(result)
                if on_result is not None:
                    on_result(result)
            bar.advance(task)
    return results


def run_chaos(workdir: str | None = None, seed: int = 0, report_path: str | None = None,
              quick: bool = False, *, dose: str | None = None, only: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.width = max(console.width, 170)  # the report table is wide; a pipe defaults to 80 columns
    workdir = workdir or tempfile.mkdtemp(prefix="memsys-chaos-")
    os.makedirs(workdir, exist_ok=True)
    # Quarantines and retries are the experiments working: they go to a log file, not the terminal.
    handler = logging.FileHandler(os.path.join(workdir, "memsys.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("memsys")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    console.print(f"memsys chaos run: seven embedded stores in [bold]{workdir}[/], seed {seed}"
                  + (" (quick dose)" if quick else ""))
    started = time.perf_counter()
    results = run_experiments(workdir, seed, quick, dose=dose, only=only)
    table = Table(title="memsys chaos run")
    for column in ("experiment", "target", "faults", "attempted", "acked", "lost", "partial", "unexpected",
                   "hung", "crashed", "errors", "recover s", "status"):
        table.add_column(column, justify="right" if column not in ("experiment", "target", "status") else "left")
    for r in results:
        status = {"ok": "[green]ok", "skipped": "[yellow]skipped", "unavailable": "[yellow]unavailable"}.get(
            r.status, f"[bold red]{r.status}")
        table.add_row(r.name, r.target, str(r.faults), str(r.attempted), str(r.acknowledged), str(r.lost),
                      str(r.partial), str(r.unexpected), str(r.hung), str(r.crashed), str(r.errors),
                      f"{r.recover_seconds:.3f}", status)
    console.print(table)
    for r in results:
        if r.detail and not (r.status == "ok" and r.ok):
            console.print(f"[bold]{r.name} ({r.target})[/]: {r.detail}")
    totals = {k: sum(getattr(r, k) for r in results) for k in ("faults", "attempted", "acknowledged", "lost",
                                                                 "partial", "unexpected", "hung", "crashed",
                                                                 "errors")}
    report = {"seed": seed, "workdir": workdir, "quick": quick, "seconds": time.perf_counter() - started,
              "totals": totals, "experiments": [dataclasses.asdict(r) for r in results]}
    report_path = report_path or os.path.join(workdir, "report.json")
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)
    console.print(f"faults injected {totals['faults']}, operations acknowledged {totals['acknowledged']}, "
                  f"lost {totals['lost']}, partial {totals['partial']}, unexpected {totals['unexpected']}, "
                  f"hung {totals['hung']}, crashed {totals['crashed']}, errors {totals['errors']}; "
                  f"report: {report_path}")
    root.removeHandler(handler)
    root.propagate = True
    handler.close()
    return 0 if all(r.ok for r in results) else 1
