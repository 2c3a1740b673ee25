"""Run calls in a child process, so a fault that kills a process is counted, not suffered.

A damaged file handed to a native engine can end its process (SIGSEGV, SIGBUS,
SIGABRT), make it allocate without bound, or make it spin forever. The harness
must survive all three and say which happened. ``run_isolated`` runs picklable
calls one after another in a fresh ``python -m memsys.testing.isolate`` process:

* each call's result (a JSON value) or the exception it raised comes back on a
  private pipe, one line per call, before the next call starts;
* a call that runs past ``timeout`` is ``hung``; a process whose resident memory
  passes ``rss_limit`` is ``runaway`` (killed); a process that dies is
  ``crashed`` (with the signal or exit status and the tail of its stderr);
* after a call kills its process, the remaining calls go to a new one;
* the child's address space is capped (RLIMIT_AS), so one huge allocation fails
  inside the engine instead of taking the machine.

Calls are pickled, so they must be module-level functions (``functools.partial``
of one is fine). The modules that define them are imported in the child by
name, or loaded from their file where the name alone does not import (test
modules pytest imported with ``--import-mode=importlib``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_LENGTH = struct.Struct("<Q")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass
class ChildOutcome:
    """What became of one call: ``returned`` (``value``), ``raised`` (``error``), ``hung``,
    ``runaway`` (memory) or ``crashed`` (``detail`` names the signal or exit status)."""

    status: str
    value: Any = None
    error: dict[str, Any] | None = None
    detail: str = ""

    @property
    def died(self) -> bool:
        return self.status in ("crashed", "runaway", "hung")


class IsolationError(RuntimeError):
    """The child process could not even start the calls (a harness problem, not a finding)."""


def describe(exc: BaseException) -> dict[str, Any]:
    """A JSON description of an exception: its class and where it sits in memsys' error tree."""
    from memsys.domain import errors

    kind = type(exc)
    return {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "name": kind.__name__,
        "memsys": isinstance(exc, errors.MemsysError),
        "corrupt": isinstance(exc, errors.CorruptStoreError),
        "locked": isinstance(exc, errors.StoreLockedError),
        "disk_full": isinstance(exc, errors.DiskFullError),
        "message": str(exc)[:500],
    }


def plain(value: Any) -> Any:
    """JSON ``default`` hook: read-only mappings and other containers as plain JSON."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


# ---------------------------------------------------------------------------------------- parent


def _modules_of(calls: Sequence[Any]) -> list[tuple[str, str]]:
    """(module name, file) of every module a call's pickle refers to by name, outside memsys."""
    seen: dict[str, str] = {}
    stack: list[Any] = list(calls)
    visited: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) in visited:
            continue
        visited.add(id(obj))
        if isinstance(obj, functools.partial):
            stack.extend([obj.func, *obj.args, *obj.keywords.values()])
            continue
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        owner = getattr(obj, "__self__", None)
        if owner is not None and not isinstance(owner, type(sys)):
            stack.append(owner)  # a bound method pickles its instance or class
        if isinstance(obj, type):
            names = [cls.__module__ for cls in obj.__mro__]
        elif callable(obj) and hasattr(obj, "__module__") and hasattr(obj, "__qualname__"):
            names = [obj.__module__]  # a function
        else:
            names = [type(obj).__module__]
            stack.extend(getattr(obj, "__dict__", {}).values())
        for name in names:
            file = getattr(sys.modules.get(name or ""), "__file__", None)
            if name and file and not name.startswith("memsys."):
                seen.setdefault(name, file)
    return sorted(seen.items())


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def _exit_detail(proc: subprocess.Popen[bytes], stderr_path: str) -> str:
    code = proc.returncode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    try:
        with open(stderr_path, "rb") as f:
            f.seek(max(0, os.path.getsize(stderr_path) - 1500))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()[-6:]
    except OSError:
        tail = []
    return how + (": " + " | ".join(tail) if tail else "")


def _run_child(calls: Sequence[Any], timeout: float, rss_limit: int, address_space: int | None,
               startup_timeout: float) -> list[ChildOutcome]:
    payload = pickle.dumps(list(calls))
    header = {"sys_path": sys.path, "preload": _modules_of(calls), "address_space": address_space}
    with tempfile.NamedTemporaryFile(prefix="memsys-isolate-", suffix=".stderr", delete=False) as errfile:
        stderr_path = errfile.name
    try:
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "memsys.testing.isolate"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=err, start_new_session=True,
                                    env=dict(os.environ, PYTHONHASHSEED="0", PYTHONFAULTHANDLER="1"))
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(header).encode() + b"\n" + _LENGTH.pack(len(payload)) + payload)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            return _collect(proc, len(calls), timeout, rss_limit, startup_timeout, stderr_path)
        finally:
            # The child leaves by os._exit right after its last answer; give it a moment to finish
            # (coverage saves its data there) before killing one that is really stuck.
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill(proc)
            if proc.stdout is not None:
                proc.stdout.close()
    finally:
        os.unlink(stderr_path)


def _collect(proc: subprocess.Popen[bytes], expected: int, timeout: float, rss_limit: int,
             startup_timeout: float, stderr_path: str) -> list[ChildOutcome]:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    outcomes: list[ChildOutcome] = []
    buffer = bytearray()  # appending to bytes would copy the whole line per chunk: quadratic
    scanned = 0
    ready = False
    deadline = time.monotonic() + startup_timeout
    while len(outcomes) < expected:
        now = time.monotonic()
        if now > deadline:
            _kill(proc)
            if not ready:
                raise IsolationError(f"the child process did not start within {startup_timeout:.0f}s: "
                                     + _exit_detail(proc, stderr_path))
            return outcomes + [ChildOutcome("hung", detail=f"no answer within {timeout:.0f}s; killed")]
        if rss_limit and _rss(proc.pid) > rss_limit:
            _kill(proc)
            return outcomes + [ChildOutcome("runaway", detail=f"resident memory passed {rss_limit >> 20} MiB; "
                                                                "killed")]
        readable, _, _ = select.select([fd], [], [], min(0.05, max(0.0, deadline - now)))
        if not readable:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:  # the child is gone
            proc.wait()
            if not ready:
                raise IsolationError("the child process died before it ran a call: "
                                     + _exit_detail(proc, stderr_path))
            return outcomes + [ChildOutcome("crashed", detail=_exit_detail(proc, stderr_path))]
        buffer += chunk
        while (end := buffer.find(b"\n", scanned)) >= 0:
            record = json.loads(bytes(buffer[:end]))
            del buffer[:end + 1]
            scanned = 0
            if record.get("ready"):
                ready = True
            else:
                outcomes.append(ChildOutcome(record["status"], record.get("value"), record.get("error")))
            deadline = time.monotonic() + timeout
        scanned = len(buffer)
    return outcomes


def run_isolated(calls: Sequence[Callable[[], Any]], *, timeout: float = 60.0, rss_limit: int = 4 << 30,
                 address_space: int | None = None, startup_timeout: float = 120.0) -> list[ChildOutcome]:
    """Run ``calls`` in child processes, in order; one outcome per call.

    ``timeout`` bounds each call; ``rss_limit`` the child's resident memory; ``address_space``
    (bytes) its RLIMIT_AS, by default this process's peak address space plus 16 GiB (engines
    such as Kuzu reserve their maximum database size up front).
    """
    if address_space is None:
        address_space = peak_address_space() + (16 << 30)
    outcomes: list[ChildOutcome] = []
    remaining = list(calls)
    while remaining:
        got = _run_child(remaining, timeout, rss_limit, address_space, startup_timeout)
        outcomes.extend(got)
        remaining = remaining[len(got):]
    return outcomes


def peak_address_space() -> int:
    """This process's peak virtual memory (VmPeak), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------------------- child


def _preload(modules: list[list[str]]) -> None:
    for name, file in modules:
        if name == "__main__":  # the parent's script: loaded as multiprocessing does, guard not run
            if os.path.abspath(file) != os.path.abspath(__file__):
                sys.modules["__main__"] = _load("__mp_main__", file) or sys.modules["__main__"]
            continue
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        _load(name, file)


def _load(name: str, file: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _child_main() -> None:
    # Results go out on a private copy of stdout; whatever engines print goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    header = json.loads(stdin.readline())
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if header.get("address_space"):
        limit = int(header["address_space"])
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    sys.path[:] = header["sys_path"]
    _preload(header["preload"])
    (length,) = _LENGTH.unpack(stdin.read(_LENGTH.size))
    calls = pickle.loads(stdin.read(length))
    out.write('{"ready": true}\n')
    for call in calls:
        try:
            record = {"status": "returned", "value": call()}
            line = json.dumps(record, default=plain)
        except BaseException as exc:  # noqa: BLE001 - every escape is reported, typed or not
            line = json.dumps({"status": "raised", "error": describe(exc)})
        out.write(line + "\n")
        out.flush()
    out.close()
    # Skip interpreter teardown: an engine's destructor must not turn a finished run into a crash.
    os._exit(0)


if __name__ == "__main__":
    _child_main()
