"""Real disk faults for tests and chaos runs: a small file system that fills up, and one that
turns read-only.

As root, ``small_filesystem`` mounts a tmpfs of a few MiB on an empty folder, so every
engine (LMDB, DuckDB, Kuzu, Chroma's SQLite, memsys' own files) meets a real ENOSPC, or
EROFS after ``remount_read_only``. Where mounting is refused it raises DiskFaultUnavailable;
test suites turn that into a skip, which CI turns into a failure.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator


class DiskFaultUnavailable(RuntimeError):
    """This machine cannot mount a small file system here (not root, or no tmpfs)."""


def _run(*args: str) -> None:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise DiskFaultUnavailable(f"{' '.join(args)} failed: {proc.stderr.strip() or proc.returncode}")


@contextlib.contextmanager
def small_filesystem(folder: str | os.PathLike[str], size: int = 8 << 20) -> Iterator[str]:
    """Mount a tmpfs of ``size`` bytes on ``folder`` (created empty) and unmount it at the end."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    if os.listdir(folder):
        raise ValueError(f"{folder} is not empty")
    if os.geteuid() != 0:
        raise DiskFaultUnavailable("mounting a tmpfs needs root")
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", f"memsys-{uuid.uuid4().hex[:8]}", folder)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", folder], capture_output=True, timeout=30)


def fill(folder: str | os.PathLike[str], leave: int = 0) -> str:
    """Fill the file system under ``folder`` until at most ``leave`` bytes are free; returns the
    ballast file's path (delete it to free the space again)."""
    path = os.path.join(os.fspath(folder), f".ballast-{uuid.uuid4().hex[:8]}")
    chunk = b"\0" * (64 << 10)
    with open(path, "wb") as f:
        while True:
            free = free_bytes(folder)
            if free <= leave:
                break
            try:
                f.write(chunk[: max(1, min(len(chunk), free - leave))])
                f.flush()
            except OSError:
                break
    return path


def free_bytes(folder: str | os.PathLike[str]) -> int:
    st = os.statvfs(os.fspath(folder))
    return st.f_bavail * st.f_frsize


def remount_read_only(folder: str | os.PathLike[str], read_only: bool = True) -> None:
    _run("mount", "-o", f"remount,{'ro' if read_only else 'rw'}", os.fspath(folder))
