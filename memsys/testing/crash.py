"""Crash experiments: SIGKILL a process mid-transaction, recover, and judge the history.

A child process opens a MemoryManager over LMDB, DuckDB, Kuzu (native
transactions) and TinyDB (none), with a coordinator log, and runs
transactions that each add fresh ids to two or more of the stores. It logs
``invoke`` before each transaction and ``ok`` / ``fail`` / ``info`` after,
flushed, so the history survives the kill. The parent kills the child either
at a seeded random instant, or lets the child kill itself at a named step of
the protocol (after prepare, after the log write, after the log sync, after
the first store applied, after all applied, after the end record). Then the
parent opens the stores itself (which runs recovery) and checks every
transaction with the history checker: on all its stores or none, and present
if acknowledged.

    memsys chaos crash --kills 1000 --seed 7
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from memsys.application.transactions import STEPS
from memsys.testing.history import (
    HistoryFile,
    TransactionCheck,
    check_transactions,
    read_transactions,
)

BACKENDS = ("lmdb", "duckdb", "kuzu", "tinydb")


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


def open_manager(workdir: str) -> Any:
    from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
    from memsys.adapters.kuzu_store import KuzuMemoryAdapter
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
    from memsys.application.manager import MemoryManager

    stores = {
        "lmdb": LMDBMemoryAdapter(path=os.path.join(workdir, "lmdb"), sync=False),
        "duckdb": DuckDBMemoryAdapter(path=os.path.join(workdir, "items.duckdb"), sync=False),
        "kuzu": KuzuMemoryAdapter(path=os.path.join(workdir, "graph.kuzu"), buffer_pool_size=64 << 20),
        "tinydb": TinyDBMemoryAdapter(path=os.path.join(workdir, "items.json"), sync=False),
    }
    return MemoryManager(stores, transaction_log=os.path.join(workdir, "txlog"))


def _worker(args: argparse.Namespace) -> int:
    from memsys.domain.errors import CommitIncompleteError, MemsysError
    from memsys.domain.model import MemoryItem, MemoryType

    manager = open_manager(args.workdir)
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
    print("ready", flush=True)
    for n in range(args.transactions):
        tx_id = f"r{args.round:05d}-t{n:05d}"
        stores = sorted(rng.sample(BACKENDS, rng.randint(2, len(BACKENDS))))
        writes = {s: [f"{tx_id}-{s}-{j}" for j in range(rng.randint(1, 3))] for s in stores}
        history.write({"type": "invoke", "tx": tx_id, "writes": writes})
        try:
            with manager.with_transaction(stores):
                for store, ids in writes.items():
                    for item_id in ids:
                        manager.adapters[store].store(MemoryItem(
                            id=item_id, content=f"{tx_id} wrote this to {store}", memory_type=MemoryType.EPISODIC,
                            metadata={"tx": tx_id, "round": args.round}))
        except CommitIncompleteError:  # committed: recovery must complete it, so it counts as acknowledged
            history.write({"type": "ok", "tx": tx_id, "incomplete": True})
        except MemsysError as exc:
            history.write({"type": "fail", "tx": tx_id, "error": str(exc)})
        else:
            history.write({"type": "ok", "tx": tx_id})
    history.close()
    manager.close()
    return 0


@dataclasses.dataclass
class CampaignResult:
    kills: int = 0
    rounds: int = 0
    not_killed: int = 0
    recovery_seconds: list[float] = dataclasses.field(default_factory=list)
    check: TransactionCheck = dataclasses.field(default_factory=TransactionCheck)
    per_step: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.check.valid

    def summary(self) -> dict[str, Any]:
        return {"kills": self.kills, "rounds": self.rounds, "not_killed": self.not_killed,
                "kills_by_step": self.per_step, **self.check.counts(),
                "recovery_seconds_max": max(self.recovery_seconds, default=0.0),
                "recovery_seconds_median": sorted(self.recovery_seconds)[len(self.recovery_seconds) // 2]
                if self.recovery_seconds else 0.0}


def present_ids(manager: Any) -> dict[str, set[str]]:
    return {name: {item.id for item in adapter.iter_items()} for name, adapter in manager.adapters.items()}


def check_workdir(workdir: str) -> tuple[TransactionCheck, float]:
    """Open the stores (recovery runs), then judge every history in ``workdir``."""
    started = time.perf_counter()
    manager = open_manager(workdir)
    recovery = time.perf_counter() - started
    try:
        present = present_ids(manager)
    finally:
        manager.close()
    histories = sorted(os.path.join(workdir, f) for f in os.listdir(workdir) if f.startswith("history-"))
    return check_transactions(read_transactions(histories), present), recovery


def run_campaign(kills: int, seed: int = 0, workdir: str | None = None, transactions: int = 200,
                 progress: bool = True, timeout: float = 120.0) -> CampaignResult:
    """Kill ``kills`` child processes, alternating seeded random instants and named protocol steps."""
    from rich.progress import Progress

    workdir = workdir or tempfile.mkdtemp(prefix="memsys-crash-")
    os.makedirs(workdir, exist_ok=True)
    rng = random.Random(seed)
    result = CampaignResult()
    env = dict(os.environ, PYTHONHASHSEED="0")
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("SIGKILL rounds", total=kills)
        while result.kills < kills:
            round_no = result.rounds
            result.rounds += 1
            named = round_no % 2 == 1
            step = STEPS[(round_no // 2) % len(STEPS)] if named else ""
            command = [sys.executable, "-m", "memsys.testing.crash", "worker", "--workdir", workdir,
                       "--seed", str(rng.randrange(2**32)), "--round", str(round_no),
                       "--transactions", str(transactions)]
            if named:
                command += ["--crash-step", step, "--crash-after", str(rng.randint(1, 12))]
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
            ready = child.stdout.readline().strip()  # type: ignore[union-attr]
            if ready != "ready":
                child.kill()
                _, err = child.communicate(timeout=timeout)
                raise RuntimeError(f"crash worker failed to start (round {round_no}): {err[-3000:]}")
            if not named:
                time.sleep(rng.uniform(0.005, 0.5))
                child.send_signal(signal.SIGKILL)
            try:
                child.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
                raise RuntimeError(f"crash worker hung in round {round_no}") from None
            if child.returncode == -signal.SIGKILL:
                result.kills += 1
                key = step or "random instant"
                result.per_step[key] = result.per_step.get(key, 0) + 1
                bar.advance(task)
            elif child.returncode == 0:
                result.not_killed += 1
            else:
                raise RuntimeError(f"crash worker exited with {child.returncode} in round {round_no}")
            check, recovery = check_workdir(workdir)
            result.recovery_seconds.append(recovery)
            result.check = check
            if not check.valid:
                break  # the first round that breaks a promise is the one to debug
    with open(os.path.join(workdir, "crash-report.json"), "w") as f:
        json.dump({**result.summary(), "lost": result.check.lost[:50], "partial": result.check.partial[:50],
                   "unexpected": result.check.unexpected[:50]}, f, indent=1)
    return result


def run_crash_campaign(kills: int, seed: int, workdir: str | None, transactions: int) -> int:
    """The ``memsys chaos crash`` command: run, print the counts, exit 1 on any anomaly."""
    from rich.console import Console
    from rich.table import Table

    result = run_campaign(kills, seed, workdir, transactions)
    summary = result.summary()
    table = Table(title=f"memsys chaos crash: {result.kills} SIGKILLs, seed {seed}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("kills", "attempted", "acknowledged", "present", "lost", "partial", "unexpected", "recovered",
                "failed", "unknown", "not_killed"):
        style = "bold red" if key in ("lost", "partial", "unexpected") and summary[key] else ""
        table.add_row(key, f"[{style}]{summary[key]}" if style else str(summary[key]))
    table.add_row("recovery (median / max s)",
                  f"{summary['recovery_seconds_median']:.3f} / {summary['recovery_seconds_max']:.3f}")
    console = Console()
    console.print(table)
    console.print("kills by step: " + ", ".join(f"{k} {v}" for k, v in sorted(result.per_step.items())))
    return 0 if result.valid else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memsys.testing.crash")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("--workdir", required=True)
    worker.add_argument("--seed", type=int, required=True)
    worker.add_argument("--round", type=int, required=True)
    worker.add_argument("--transactions", type=int, default=200)
    worker.add_argument("--crash-step", choices=STEPS)
    worker.add_argument("--crash-after", type=int, default=1)
    args = parser.parse_args(argv)
    return _worker(args)


if __name__ == "__main__":
    sys.exit(main())
