"""The ``crash`` section of ``memsys verify-adapter``: SIGKILL a child writing through the adapter.

Alone: a child process opens the adapter and stores items as fast as it can (fresh ids and
updates of a few ids), logging ``invoke`` before and ``ok`` after each store to a history file
(flushed, so the log survives the kill). The parent kills it at a seeded instant, reopens the
store itself and checks every write: an acknowledged one must be there (an update may have
been overtaken only by a later attempted one), nothing written may come back different.

In transactions: the child runs MemoryManager transactions over the adapter, LMDB and DuckDB
(fresh ids on the adapter and one or both others) and is killed at seeded instants and at
each named step of the commit protocol (after prepare, the log write, the log sync, the first
apply, all applies, the end record). The parent reopens the manager (recovery runs) and
judges the history: each transaction on all its stores or none, every acknowledged one present.

Checks: ``alone_reopens_after_sigkill``, ``alone_acknowledged_writes_survive_sigkill``,
``transactions_reopen_after_sigkill``, ``transactions_all_or_nothing_after_sigkill``,
``transactions_acknowledged_survive_sigkill``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

from memsys.application.transactions import STEPS

WORKER_SECONDS = 20.0  # a child that is never killed stops by itself


def _target_from(args: argparse.Namespace) -> Any:
    from memsys.testing.verify import AdapterTarget

    options = tuple(sorted(json.loads(args.options).items()))
    return AdapterTarget(args.module, args.qualname, options, args.import_root or None)


def _worker(args: argparse.Namespace) -> int:
    from memsys.domain.errors import CommitIncompleteError, MemsysError
    from memsys.domain.model import MemoryItem, MemoryType
    from memsys.testing.history import HistoryFile

    target = _target_from(args)
    rng = random.Random(args.seed)
    history = HistoryFile(os.path.join(args.workdir, f"history-{args.mode}-{args.round:04d}.jsonl"))
    stop = time.monotonic() + WORKER_SECONDS
    if args.mode == "alone":
        store = target.open(os.path.join(args.workdir, "store"))
        print("ready", flush=True)
        n = 0
        while time.monotonic() < stop:
            item_id = f"u-{rng.randrange(4)}" if rng.random() < 0.3 else f"r{args.round:04d}-{n:06d}"
            content = f"round {args.round} write {n}"
            history.write({"type": "invoke", "id": item_id, "content": content})
            try:
                store.store(MemoryItem(id=item_id, content=content, memory_type=MemoryType.EPISODIC,
                                       metadata={"round": args.round, "n": n}))
            except MemsysError as exc:
                history.write({"type": "fail", "id": item_id, "content": content, "error": str(exc)})
            else:
                history.write({"type": "ok", "id": item_id, "content": content})
            n += 1
        store.close()
        return 0
    from memsys.testing.verify_faults import cross_writes, open_cross_manager, write_transaction

    manager = open_cross_manager(target, os.path.join(args.workdir, "stores"))
    if args.crash_step:
        remaining = [args.crash_after]

        def crash(step: str) -> None:
            if step == args.crash_step:
                remaining[0] -= 1
                if remaining[0] <= 0:
                    os.kill(os.getpid(), signal.SIGKILL)

        manager.coordinator.crash_hook = crash
    print("ready", flush=True)
    n = 0
    while time.monotonic() < stop:
        tx_id = f"r{args.round:04d}-t{n:05d}"
        writes = cross_writes(rng, tx_id)
        history.write({"type": "invoke", "tx": tx_id, "writes": writes})
        try:
            write_transaction(manager, tx_id, writes)
        except CommitIncompleteError:
            history.write({"type": "ok", "tx": tx_id, "incomplete": True})
        except MemsysError as exc:
            history.write({"type": "fail", "tx": tx_id, "error": str(exc)})
        else:
            history.write({"type": "ok", "tx": tx_id})
        n += 1
    manager.close()
    return 0


def _spawn(target: Any, workdir: str, mode: str, seed: int, round_no: int, step: str = "",
           after: int = 1) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "memsys.testing.verify_crash", "worker", "--module", target.module,
               "--qualname", target.qualname, "--options", json.dumps(dict(target.options)),
               "--import-root", target.import_root or "", "--workdir", workdir, "--mode", mode,
               "--seed", str(seed), "--round", str(round_no)]
    if step:
        command += ["--crash-step", step, "--crash-after", str(after)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=target.child_env())


def _run_round(child: subprocess.Popen[str], kill_after: float | None, timeout: float = 120.0) -> str:
    """Wait for ready, kill at ``kill_after`` seconds (None: the child kills itself); returns how it ended."""
    ready = child.stdout.readline().strip()  # type: ignore[union-attr]
    if ready != "ready":
        child.kill()
        _, err = child.communicate(timeout=timeout)
        raise RuntimeError(f"the crash worker could not open the stores: {err.strip()[-2000:]}")
    if kill_after is not None:
        time.sleep(kill_after)
        child.send_signal(signal.SIGKILL)
    try:
        _, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return "hung"
    if child.returncode == -signal.SIGKILL:
        return "killed"
    if child.returncode == 0:
        return "not killed"
    raise RuntimeError(f"the crash worker exited with {child.returncode}: {err.strip()[-2000:]}")


def _read_history(path: str) -> list[dict[str, Any]]:
    events = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):  # the line the kill cut short was never an acknowledgement
                events.append(json.loads(line))
    return events


def _check_alone(target: Any, workdir: str, problems: dict[str, list[str]]) -> None:
    from memsys.domain.errors import MemsysError

    expected: dict[str, tuple[str | None, set[str]]] = {}  # id -> (last acked content, contents tried after it)
    for name in sorted(f for f in os.listdir(workdir) if f.startswith("history-alone-")):
        for event in _read_history(os.path.join(workdir, name)):
            acked, tried = expected.get(event["id"], (None, set()))
            if event["type"] == "invoke":
                tried = tried | {event["content"]}
            elif event["type"] == "ok":
                acked, tried = event["content"], set()
            expected[event["id"]] = (acked, tried)
    try:
        store = target.open(os.path.join(workdir, "store"))
    except MemsysError as exc:
        problems.setdefault("alone_reopens_after_sigkill", []).append(f"reopening raised {type(exc).__name__}: {exc}")
        return
    except Exception as exc:  # noqa: BLE001
        problems.setdefault("alone_reopens_after_sigkill", []).append(
            f"reopening raised {type(exc).__name__}: {exc} (not a memsys error)")
        return
    try:
        lost = []
        for item_id, (acked, tried) in sorted(expected.items()):
            item = store.retrieve(item_id)
            got = None if item is None else item.content
            allowed = tried | ({acked} if acked is not None else set())
            if acked is not None and got not in allowed:
                lost.append(f"{item_id!r} acknowledged as {acked!r}, found {got!r}")
            elif acked is None and got is not None and got not in tried:
                lost.append(f"{item_id!r} holds {got!r}, which was never written")
        if lost:
            problems.setdefault("alone_acknowledged_writes_survive_sigkill", []).append(
                f"{len(lost)} of {len(expected)} ids wrong after the kill: " + "; ".join(lost[:4]))
    finally:
        store.close()


def _check_transactions(target: Any, workdir: str, problems: dict[str, list[str]]) -> dict[str, int]:
    from memsys.domain.errors import MemsysError
    from memsys.testing.crash import present_ids
    from memsys.testing.history import check_transactions, read_transactions
    from memsys.testing.verify_faults import open_cross_manager

    try:
        manager = open_cross_manager(target, os.path.join(workdir, "stores"))
    except MemsysError as exc:
        problems.setdefault("transactions_reopen_after_sigkill", []).append(
            f"reopening (recovery) raised {type(exc).__name__}: {exc}")
        return {}
    try:
        present = present_ids(manager)
    finally:
        manager.close()
    histories = sorted(os.path.join(workdir, f) for f in os.listdir(workdir) if f.startswith("history-tx-"))
    check = check_transactions(read_transactions(histories), present)
    if check.partial or check.unexpected:
        problems.setdefault("transactions_all_or_nothing_after_sigkill", []).append(
            f"on only some stores: {check.partial[:5]}; applied though they failed or never ran: "
            f"{check.unexpected[:5]}")
    if check.lost:
        problems.setdefault("transactions_acknowledged_survive_sigkill", []).append(
            f"{len(check.lost)} acknowledged transaction(s) missing: {check.lost[:5]}")
    return check.counts()


CHECKS = ["alone_reopens_after_sigkill", "alone_acknowledged_writes_survive_sigkill",
          "transactions_reopen_after_sigkill", "transactions_all_or_nothing_after_sigkill",
          "transactions_acknowledged_survive_sigkill"]


def crash_section(target: Any, folder: str, seed: int, dose: Any) -> list[Any]:
    from memsys.testing.verify import Check

    from memsys.ports import Capability

    if Capability.PERSISTENCE not in frozenset(getattr(target.cls(), "capabilities", ())):
        return [Check("crash", name, "skipped", f"{target.qualname} does not declare the 'persistence' capability: "
                      "nothing it holds is meant to survive its process") for name in CHECKS]
    rng = random.Random(seed)
    problems: dict[str, list[str]] = {}
    notes: dict[str, str] = {}
    kills = {"alone": 0, "tx": 0}
    alone = os.path.join(folder, "alone")
    os.makedirs(alone, exist_ok=True)
    for round_no in range(dose.crash_kills_alone):
        instant = rng.uniform(0.15, 0.8)
        ended = _run_round(_spawn(target, alone, "alone", rng.randrange(2**32), round_no), instant)
        kills["alone"] += ended == "killed"
        _check_alone(target, alone, problems)
        if problems:
            notes["alone"] = f"failed after kill {round_no + 1} ({instant:.3f} s after the store opened)"
            break
    tx = os.path.join(folder, "tx")
    os.makedirs(tx, exist_ok=True)
    steps: list[str] = []
    for round_no in range(dose.crash_kills_tx):
        named = round_no % 2 == 1
        step = STEPS[(round_no // 2 + seed) % len(STEPS)] if named else ""
        instant = None if named else rng.uniform(0.2, 1.0)
        ended = _run_round(_spawn(target, tx, "tx", rng.randrange(2**32), round_no, step, rng.randint(1, 6)), instant)
        kills["tx"] += ended == "killed"
        steps.append(step or f"{instant:.2f} s")
        counts = _check_transactions(target, tx, problems)
        notes["tx"] = f"{counts}" if counts else ""
        if any(k.startswith("transactions") for k in problems):
            notes["tx"] = f"failed after kill {round_no + 1} ({step or f'{instant:.3f} s'}); {notes['tx']}"
            break
    out = []
    for name in CHECKS:
        part = "alone" if name.startswith("alone") else "tx"
        where = f"{kills[part]} SIGKILLs" + (f" at {', '.join(steps)}" if part == "tx" else "")
        if name in problems:
            out.append(Check("crash", name, "failed", "\n".join(problems[name][:3]) + f"\n{notes.get(part, '')}; "
                             f"{where}; reproduce: memsys verify-adapter '{target.spec}' --sections crash --seed {seed}"))
        else:
            first = name in ("alone_reopens_after_sigkill", "transactions_reopen_after_sigkill")
            out.append(Check("crash", name, "passed", where + (f"; {notes[part]}" if first and notes.get(part) else "")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memsys.testing.verify_crash")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker")
    worker.add_argument("--module", required=True)
    worker.add_argument("--qualname", required=True)
    worker.add_argument("--options", default="{}")
    worker.add_argument("--import-root", default="")
    worker.add_argument("--workdir", required=True)
    worker.add_argument("--mode", choices=["alone", "tx"], required=True)
    worker.add_argument("--seed", type=int, required=True)
    worker.add_argument("--round", type=int, required=True)
    worker.add_argument("--crash-step", choices=STEPS)
    worker.add_argument("--crash-after", type=int, default=1)
    return _worker(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
