"""Power-loss simulation: a FUSE filesystem that forgets what was never fsynced.

SIGKILL cannot catch a missing fsync: the killed process's writes sit in the OS page cache and
are all there when the next process reads. A power loss takes that cache with it. This module
mounts a passthrough FUSE filesystem (memsys.testing._powerloss_fs, in its own process so a hang
there cannot wedge the test run) over an empty folder; it keeps every written but not yet
fsynced page in its own memory, and ``power_failure()`` kills it, so those pages are gone, and
mounts it again over the same backing folder: the mount then shows only what was durable, as
the disk would after a reboot. With ``tear=True`` a seeded random subset of the unsynced pages
reaches the disk first (a write that got part of the way), as LazyFS's torn writes do.

What counts as durable (see _powerloss_fs for the details):

* file data: only after fsync / fdatasync of the file (or through an O_SYNC / O_DSYNC handle);
  msync(MS_SYNC) reaches the FUSE process as write-back writes then an fsync, so mmap writers
  are covered; close() makes nothing durable;
* metadata (create, mkdir, rename, unlink, truncate, ...): durable at once. A real filesystem
  can also lose a create or rename that its folder was never fsynced for; this does not simulate
  that.

    with power_loss_fs(tmp_path) as fs:
        path = os.path.join(fs.mount_point, "f")
        ...  # write, maybe fsync
        fs.power_failure()            # or power_failure(tear=True, seed=3)
        ...  # reopen: only what was fsynced is there

Needs /dev/fuse, the fusermount3 helper and libfuse3 (``bash chaos/install-fuse.sh``) and the
mfusepy package; where a mount is not possible ``power_loss_fs`` raises PowerLossUnavailable.
``run_power_loss_experiment`` is a whole experiment (transactions, power failures, recovery,
check) for the chaos runner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

MOUNT_TIMEOUT = 15.0  # seconds for a mount to appear (the child imports mfusepy and loads libfuse)
CONTROL_TIMEOUT = 10.0


class PowerLossUnavailable(RuntimeError):
    """FUSE cannot mount here (no /dev/fuse, no fusermount3 or libfuse3, no mfusepy, or the mount failed)."""


class PowerLossFS:
    """A mounted power-loss filesystem: ``mount_point`` is where the stores go, ``backing`` is the disk."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = os.path.abspath(os.fspath(folder))
        self.backing = os.path.join(self.folder, "disk")
        self.mount_point = os.path.join(self.folder, "mnt")
        self.power_failures = 0
        self._control_dir = tempfile.mkdtemp(prefix="memsys-plfs-")  # short: a socket path has 108 bytes
        self._control = os.path.join(self._control_dir, "control")
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = os.path.join(self._control_dir, "fuse.log")

    # -- lifecycle -------------------------------------------------------------------------------------
    def mount(self) -> None:
        _check_available()
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mount_point, exist_ok=True)
        if os.path.ismount(self.mount_point):
            raise PowerLossUnavailable(f"{self.mount_point} is already a mount point")
        if os.listdir(self.mount_point):
            raise PowerLossUnavailable(f"{self.mount_point} is not empty; FUSE mounts over an empty folder")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._control)
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "memsys.testing._powerloss_fs", self.backing, self.mount_point, self._control],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not (os.path.ismount(self.mount_point) and os.path.exists(self._control)):
            if self._process.poll() is not None:
                self._process = None
                raise PowerLossUnavailable(f"the FUSE process exited before mounting: {self._log_tail()}")
            if time.monotonic() > deadline:
                self._kill()
                raise PowerLossUnavailable(f"no FUSE mount at {self.mount_point} after {MOUNT_TIMEOUT:.0f} s: "
                                           f"{self._log_tail()}")
            time.sleep(0.02)

    def unmount(self) -> None:
        """Unmount cleanly: the FUSE process exits. Unsynced data is lost, as at a power failure (use
        ``sync_all`` first to keep it)."""
        if self._process is None:
            return
        if subprocess.run(["fusermount3", "-u", self.mount_point], capture_output=True).returncode != 0:
            # Busy (a descriptor left open by abandoned stores): detach it; the process dies below.
            subprocess.run(["fusermount3", "-u", "-z", self.mount_point], capture_output=True)
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
        self._process = None

    def close(self) -> None:
        self.unmount()
        shutil.rmtree(self._control_dir, ignore_errors=True)

    def __enter__(self) -> PowerLossFS:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the fault -------------------------------------------------------------------------------------
    def power_failure(self, tear: bool = False, seed: int = 0) -> dict[str, Any]:
        """Lose every unsynced page (with ``tear``, a seeded random half of them reach the disk first),
        then come back: the mount shows only what was durable. Descriptors and maps opened before are
        dead (ENOTCONN), as they would be after a reboot. Returns what was lost."""
        if self._process is None:
            raise PowerLossUnavailable("the power-loss filesystem is not mounted")
        lost = self._request("unsynced")
        torn = self._request("tear", seed=seed) if tear else self._request("halt")
        # The FUSE process holds the only copy of the unsynced pages: killing it is the power failure.
        self._kill()
        subprocess.run(["fusermount3", "-u", "-z", self.mount_point], capture_output=True)
        deadline = time.monotonic() + 5
        while os.path.ismount(self.mount_point) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.power_failures += 1
        self.mount()
        return {**lost, **torn}

    def unsynced_bytes(self) -> int:
        """Bytes written to the mount and not yet fsynced (they would be lost by a power failure now)."""
        return int(self._request("unsynced")["bytes"])

    # -- internals -------------------------------------------------------------------------------------
    def _request(self, command: str, **args: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONTROL_TIMEOUT)
            sock.connect(self._control)
            sock.sendall(json.dumps({"command": command, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if "error" in reply:
            raise RuntimeError(f"power-loss filesystem: {command}: {reply['error']}")
        return reply

    def _kill(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._process.wait(timeout=10)
        self._process = None

    def _log_tail(self) -> str:
        try:
            with open(self._log_path, "rb") as f:
                text = f.read().decode(errors="replace").strip()
        except OSError:
            return "(no log)"
        return text[-800:] or "(no output)"


def _check_available() -> None:
    import importlib.util

    if not os.path.exists("/dev/fuse"):
        raise PowerLossUnavailable("/dev/fuse does not exist (no FUSE in this kernel or container)")
    if shutil.which("fusermount3") is None:
        raise PowerLossUnavailable("fusermount3 is not installed (bash chaos/install-fuse.sh)")
    if importlib.util.find_spec("mfusepy") is None:
        raise PowerLossUnavailable("the mfusepy package is not installed (pip install -e '.[test]')")


@contextlib.contextmanager
def power_loss_fs(folder: str | os.PathLike[str]) -> Iterator[PowerLossFS]:
    """Mount a power-loss filesystem in ``folder`` (``folder/mnt`` over the backing ``folder/disk``),
    unmounted at exit. Raises PowerLossUnavailable where FUSE cannot mount."""
    fs = PowerLossFS(folder)
    try:
        fs.mount()
        yield fs
    finally:
        fs.close()


# -- the experiment ---------------------------------------------------------------------------------------
EXPERIMENT_STORES = ("lmdb", "duckdb", "tinydb")


def open_manager(workdir: str) -> Any:
    """LMDB, DuckDB and TinyDB through one MemoryManager with its coordinator log in ``workdir``; the
    adapters run unsynced (sync=False): the coordinator log is what makes a commit durable."""
    from memsys.adapters.duckdb_store import DuckDBMemoryAdapter
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
    from memsys.application.manager import MemoryManager

    stores = {
        "lmdb": LMDBMemoryAdapter(path=os.path.join(workdir, "lmdb"), sync=False),
        "duckdb": DuckDBMemoryAdapter(path=os.path.join(workdir, "items.duckdb"), sync=False),
        "tinydb": TinyDBMemoryAdapter(path=os.path.join(workdir, "items.json"), sync=False),
    }
    return MemoryManager(stores, transaction_log=os.path.join(workdir, "txlog"))


def _write_transaction(manager: Any, tx_id: str, writes: dict[str, list[str]]) -> None:
    from memsys.domain.model import MemoryItem, MemoryType

    with manager.with_transaction(sorted(writes)):
        for store, ids in writes.items():
            for item_id in ids:
                manager.adapters[store].store(MemoryItem(
                    id=item_id, content=f"{tx_id} wrote this to {store}", memory_type=MemoryType.EPISODIC,
                    metadata={"tx": tx_id}))


def _present(manager: Any, store: str, item_id: str) -> bool:
    return manager.adapters[store].retrieve(item_id) is not None


def _abandon(manager: Any) -> None:
    """What memsys.testing.crash.abandon does, with each close on its own: after a power failure the
    old mount is gone and a close may fail (ENOTCONN); that must not keep the others open."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # those failed closes are expected here, not news
    try:
        with contextlib.suppress(Exception):
            manager.coordinator.log.close()
        for adapter in manager.adapters.values():
            adapter._coordinator = None
            with contextlib.suppress(Exception):
                adapter.close()
    finally:
        logging.disable(previous)


def run_power_loss_experiment(folder: str | os.PathLike[str], seed: int, transactions: int, *,
                              power_failures: int = 2, tear: bool = False,
                              open_manager: Callable[[str], Any] = open_manager) -> dict[str, Any]:
    """Run ``transactions`` cross-store transactions (LMDB, DuckDB, TinyDB by default) on a power-loss
    mount, with ``power_failures`` power failures at seeded points: between transactions or in the
    middle of a commit at a seeded protocol step (memsys.application.transactions.STEPS). The power
    goes first; the dead process's objects are then dropped (their closes reach a dead mount), and
    the stores reopen on the new mount (recovery runs). At the end the manager closes, the power
    fails once more (a close is not a sync), and every transaction is checked after reopening:
    acknowledged ones on all their stores, none on only some of them.

    Returns ``attempted`` / ``acknowledged`` (counts) and the offending transaction ids: ``lost``
    (acknowledged, on none of its stores), ``partial`` (on some of its stores only), ``unexpected``
    (its commit raised an error yet it is there), and ``refused``: why the stores would not reopen
    after a power failure (the experiment stops there), or None; ``ok`` when all are empty. Raises
    PowerLossUnavailable where FUSE cannot mount."""
    from memsys.application.transactions import STEPS
    from memsys.domain.errors import CommitIncompleteError, MemsysError
    from memsys.testing.crash import SimulatedCrash, crash_at

    rng = random.Random(seed)
    points = dict.fromkeys(sorted(rng.sample(range(transactions), min(power_failures, transactions))))
    for n in points:
        points[n] = rng.choice((None, *STEPS))  # None: between transactions
    attempted: dict[str, dict[str, list[str]]] = {}
    acknowledged: set[str] = set()
    failed: set[str] = set()

    def summary(lost: list[str] = (), partial: list[str] = (), unexpected: list[str] = (),  # type: ignore[assignment]
                refused: str | None = None) -> dict[str, Any]:
        return {"seed": seed, "tear": tear, "attempted": len(attempted), "acknowledged": len(acknowledged),
                "lost": list(lost), "partial": list(partial), "unexpected": list(unexpected), "refused": refused,
                "power_failures": fs.power_failures, "ok": not (lost or partial or unexpected or refused)}

    with power_loss_fs(folder) as fs:
        workdir = os.path.join(fs.mount_point, "stores")
        os.makedirs(workdir, exist_ok=True)
        manager = open_manager(workdir)
        for n in range(transactions):
            tx_id = f"s{seed}-t{n:04d}"
            stores = sorted(rng.sample(EXPERIMENT_STORES, rng.randint(2, len(EXPERIMENT_STORES))))
            writes = {s: [f"{tx_id}-{s}-{j}" for j in range(rng.randint(1, 2))] for s in stores}
            attempted[tx_id] = writes
            step = points.get(n)
            if step is not None:
                crash_at(manager, step)
            try:
                _write_transaction(manager, tx_id, writes)
            except SimulatedCrash:  # the power went mid-commit: outcome unknown, all or nothing
                pass
            except CommitIncompleteError:  # decided: recovery owes it
                acknowledged.add(tx_id)
            except MemsysError:
                failed.add(tx_id)
            else:
                acknowledged.add(tx_id)
            if n in points:
                fs.power_failure(tear=tear, seed=rng.randrange(1 << 30))
                _abandon(manager)
                try:
                    manager = open_manager(workdir)  # recovery runs here
                except MemsysError as exc:  # the stores refuse what the power loss left: a finding
                    return summary(refused=f"after the power failure at transaction {n}: "
                                           f"{type(exc).__name__}: {exc}")
        manager.close()
        fs.power_failure(tear=tear, seed=rng.randrange(1 << 30))
        try:
            manager = open_manager(workdir)
        except MemsysError as exc:
            return summary(refused=f"after the final power failure: {type(exc).__name__}: {exc}")
        lost, partial, unexpected = [], [], []
        try:
            for tx_id, writes in attempted.items():
                found = [_present(manager, s, i) for s, ids in writes.items() for i in ids]
                if any(found) and not all(found):
                    partial.append(tx_id)
                elif tx_id in acknowledged and not any(found):
                    lost.append(tx_id)
                elif tx_id in failed and any(found):
                    unexpected.append(tx_id)
        except MemsysError as exc:  # a store opened but cannot read what the power loss left
            return summary(lost, partial, unexpected,
                           refused=f"reading {tx_id} back: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(MemsysError):
                manager.close()
        return summary(lost=lost, partial=partial, unexpected=unexpected)
