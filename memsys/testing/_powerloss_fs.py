"""The FUSE process behind memsys.testing.powerloss: a passthrough filesystem with its own page cache.

Run as ``python -m memsys.testing._powerloss_fs BACKING MOUNT CONTROL_SOCKET`` (the parent,
memsys.testing.powerloss, does this). It mounts MOUNT as a view of BACKING in which:

* data written (write(), or dirty mmap pages the kernel writes back) goes to a volatile per-file
  buffer of 4 KiB pages in this process, not to BACKING; reads see the buffer over BACKING;
* fsync / fdatasync (msync reaches here as write-back writes then fsync) copies the file's
  buffered pages to BACKING: only then is the data durable. Closing a file makes nothing durable;
  a file opened O_SYNC / O_DSYNC writes through;
* metadata (create, mkdir, rename, unlink, rmdir, truncate, chmod, utimens, link, symlink) is
  applied to BACKING at once, i.e. immediately durable, like a filesystem that journals
  metadata synchronously. That is kinder than a real disk (a create or rename that was never
  followed by an fsync of its folder can be lost there); data loss is what this simulates.

A power failure is this process dying: its buffers die with it. The control socket answers
``unsynced`` (buffered bytes) and ``tear SEED`` (persist a seeded random subset of the buffered
pages, as a disk that got part of the way would, then refuse every further operation with EIO
until the parent kills this process).

Kernel caches are kept honest: attribute and entry timeouts are 0 (sizes come from here, where
the buffer may have grown a file), and no direct_io, so mmap works through the kernel page cache
(LMDB's lock file and map). The parent remounts after a power failure, so the kernel's cached
pages of the old mount cannot outlive it.
"""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import stat
import sys
import threading
from typing import Any

PAGE = 4096


class _File:
    """The volatile state of one file: its dirty pages and its size as the running system sees it."""

    __slots__ = ("pages", "size")

    def __init__(self, size: int) -> None:
        self.pages: dict[int, bytearray] = {}
        self.size = size


class PowerLossOps:
    """Passthrough operations with a volatile write buffer; one lock serialises everything (simple, and
    the workloads are small)."""

    use_ns = True

    def __init__(self, backing: str) -> None:
        self.backing = os.path.realpath(backing)
        self._mutex = threading.RLock()
        self.files: dict[str, _File] = {}  # backing path -> volatile state, only while it has dirty pages
        self.sync_fh: set[int] = set()  # handles opened O_SYNC / O_DSYNC: their writes are durable at once
        self.dead = False  # after a tear: the machine is going down, nothing more reaches the disk

    # -- helpers --------------------------------------------------------------------------------------
    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _check(self) -> None:
        if self.dead:
            raise OSError(errno.EIO, "power failure in progress")

    def _state(self, real: str) -> _File:
        state = self.files.get(real)
        if state is None:
            state = self.files[real] = _File(os.stat(real).st_size)
        return state

    def _page(self, fd: int, state: _File, index: int) -> bytearray:
        page = state.pages.get(index)
        if page is None:
            # The page's current content is what the file shows below its logical size.
            base = os.pread(fd, PAGE, index * PAGE)
            visible = max(0, min(PAGE, state.size - index * PAGE))
            page = bytearray(base[:visible].ljust(PAGE, b"\0"))
            state.pages[index] = page
        return page

    def _persist(self, real: str, state: _File, indexes: list[int]) -> None:
        """Write the given buffered pages of ``real`` to the backing file (clipped to the logical size)."""
        fd = os.open(real, os.O_WRONLY)
        try:
            for index in sorted(indexes):
                start = index * PAGE
                length = max(0, min(PAGE, state.size - start))
                if length:
                    os.pwrite(fd, bytes(state.pages[index][:length]), start)
                del state.pages[index]
        finally:
            os.close(fd)

    def _sync_file(self, real: str) -> None:
        state = self.files.pop(real, None)
        if state is None:
            return
        self._persist(real, state, list(state.pages))
        if os.stat(real).st_size < state.size:  # a write past the end with a hole, now durable
            os.truncate(real, state.size)

    # -- control ---------------------------------------------------------------------------------------
    def unsynced(self) -> dict[str, Any]:
        with self._mutex:
            pages = sum(len(s.pages) for s in self.files.values())
            nbytes = sum(max(0, min(PAGE, s.size - i * PAGE)) for s in self.files.values() for i in s.pages)
            return {"bytes": nbytes, "pages": pages, "files": len(self.files)}

    def tear(self, seed: int) -> dict[str, Any]:
        """Persist a seeded random subset of the buffered pages, then stop serving (the power is going)."""
        with self._mutex:
            rng = random.Random(seed)
            persisted = 0
            for real in sorted(self.files):
                state = self.files[real]
                chosen = [i for i in sorted(state.pages) if rng.random() < 0.5]
                if chosen and os.path.exists(real):
                    # A page that lands past the durable end grows the file: a torn append.
                    self._persist(real, state, chosen)
                    persisted += len(chosen)
            self.files.clear()
            self.dead = True
            return {"persisted_pages": persisted}

    def halt(self) -> dict[str, Any]:
        with self._mutex:
            self.files.clear()
            self.dead = True
            return {}

    # -- metadata: passthrough, immediately durable ----------------------------------------------------
    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        with self._mutex:
            self._check()
            real = self._real(path)
            st = os.lstat(real)
            attrs = {key: getattr(st, key) for key in (
                "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns", "st_mtime_ns",
                "st_ctime_ns", "st_ino", "st_blocks")}
            for key in ("st_atime", "st_mtime", "st_ctime"):
                attrs[key] = attrs.pop(key + "_ns")
            state = self.files.get(real)
            if state is not None and stat.S_ISREG(st.st_mode):
                attrs["st_size"] = state.size
                attrs["st_blocks"] = (state.size + 511) // 512
            return attrs

    def access(self, path: str, amode: int) -> int:
        with self._mutex:
            self._check()
            if not os.access(self._real(path), amode):
                raise OSError(errno.EACCES, "access denied")
            return 0

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._mutex:
            self._check()
            # With use_ino the kernel gets each entry's inode number from here; a zero one hides the entry.
            entries = []
            with os.scandir(self._real(path)) as scan:
                for entry in scan:
                    st = entry.stat(follow_symlinks=False)
                    entries.append((entry.name, {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0))
            here = os.stat(self._real(path))
            return [(".", {"st_mode": here.st_mode, "st_ino": here.st_ino}, 0),
                    ("..", {"st_mode": here.st_mode, "st_ino": 1}, 0), *entries]

    def readlink(self, path: str) -> str:
        with self._mutex:
            self._check()
            return os.readlink(self._real(path))

    def mkdir(self, path: str, mode: int) -> int:
        with self._mutex:
            self._check()
            os.mkdir(self._real(path), mode)
            return 0

    def rmdir(self, path: str) -> int:
        with self._mutex:
            self._check()
            os.rmdir(self._real(path))
            return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            self._check()
            real = self._real(path)
            os.unlink(real)
            self.files.pop(real, None)
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            self._check()
            src, dst = self._real(old), self._real(new)
            os.rename(src, dst)
            self.files.pop(dst, None)  # the replaced file's buffer goes with it
            if src in self.files:
                self.files[dst] = self.files.pop(src)
            else:  # a folder: move the buffers of the files under it
                prefix = src + os.sep
                for real in [r for r in self.files if r.startswith(prefix)]:
                    self.files[dst + real[len(src):]] = self.files.pop(real)
            return 0

    def link(self, target: str, source: str) -> int:
        with self._mutex:
            self._check()
            os.link(self._real(source), self._real(target))
            return 0

    def symlink(self, target: str, source: str) -> int:
        with self._mutex:
            self._check()
            os.symlink(source, self._real(target))
            return 0

    def chmod(self, path: str, mode: int) -> int:
        with self._mutex:
            self._check()
            os.chmod(self._real(path), mode)
            return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        with self._mutex:
            self._check()
            os.lchown(self._real(path), uid, gid)
            return 0

    def utimens(self, path: str, times: Any = None) -> int:
        with self._mutex:
            self._check()
            if times is None:
                os.utime(self._real(path))
            else:
                os.utime(self._real(path), ns=tuple(times))
            return 0

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        with self._mutex:
            self._check()
            real = self._real(path)
            os.truncate(real, length)
            state = self.files.get(real)
            if state is not None:
                state.size = length
                keep = (length + PAGE - 1) // PAGE
                for index in [i for i in state.pages if i >= keep]:
                    del state.pages[index]
                if length % PAGE and (length // PAGE) in state.pages:
                    page = state.pages[length // PAGE]
                    page[length % PAGE:] = bytes(PAGE - length % PAGE)
                if not state.pages:
                    del self.files[real]
            return 0

    def statfs(self, path: str) -> dict[str, int]:
        with self._mutex:
            st = os.statvfs(self._real(path))
            return {key: getattr(st, key) for key in (
                "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail",
                "f_flag", "f_namemax")}

    # -- data: buffered until fsync ----------------------------------------------------------------------
    def _open_flags(self, flags: int) -> int:
        # The backing descriptor reads and writes at explicit offsets: no O_APPEND (pwrite would append),
        # and durability is this layer's business, not the backing file's.
        drop = os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_SYNC | os.O_DSYNC | getattr(os, "O_DIRECT", 0)
        return (flags & ~drop & ~os.O_ACCMODE) | os.O_RDWR

    def _remember_sync(self, fh: int, flags: int) -> None:
        if flags & (os.O_SYNC | os.O_DSYNC):
            self.sync_fh.add(fh)

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            self._check()
            real = self._real(path)
            if flags & os.O_TRUNC:
                self.truncate(path, 0)
            fh = os.open(real, self._open_flags(flags))
            self._remember_sync(fh, flags)
            return fh

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        with self._mutex:
            self._check()
            real = self._real(path)
            fh = os.open(real, self._open_flags(flags) | os.O_CREAT | (flags & os.O_EXCL), mode)
            if flags & os.O_TRUNC:
                os.ftruncate(fh, 0)
                self.files.pop(real, None)
            self._remember_sync(fh, flags)
            return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            self._check()
            real = self._real(path)
            state = self.files.get(real)
            if state is None:
                return os.pread(fh, size, offset)
            end = min(offset + size, state.size)
            if end <= offset:
                return b""
            data = bytearray(os.pread(fh, end - offset, offset).ljust(end - offset, b"\0"))
            for index in range(offset // PAGE, (end - 1) // PAGE + 1):
                page = state.pages.get(index)
                if page is None:
                    continue
                lo, hi = max(offset, index * PAGE), min(end, (index + 1) * PAGE)
                data[lo - offset:hi - offset] = page[lo - index * PAGE:hi - index * PAGE]
            return bytes(data)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            self._check()
            real = self._real(path)
            state = self._state(real)
            end = offset + len(data)
            position = offset
            while position < end:
                index = position // PAGE
                page = self._page(fh, state, index)
                lo = position - index * PAGE
                take = min(PAGE - lo, end - position)
                page[lo:lo + take] = data[position - offset:position - offset + take]
                position += take
            state.size = max(state.size, end)
            if fh in self.sync_fh:
                self._sync_file(real)
            return len(data)

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            self._check()
            self._sync_file(self._real(path))
            return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0  # metadata is already durable

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() makes nothing durable

    def release(self, path: str, fh: int) -> int:
        with self._mutex:
            self.sync_fh.discard(fh)
            os.close(fh)
            return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        with self._mutex:
            self._check()
            if mode:
                raise OSError(errno.EOPNOTSUPP, "only plain fallocate is supported")
            real = self._real(path)
            os.posix_fallocate(fh, offset, size)  # space reservation: metadata, durable
            state = self.files.get(real)
            if state is not None:
                state.size = max(state.size, offset + size)
            return 0


def _serve_control(ops: PowerLossOps, sock_path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                request = json.loads(line)
                command = request.get("command")
                try:
                    if command == "unsynced":
                        reply = ops.unsynced()
                    elif command == "tear":
                        reply = ops.tear(int(request.get("seed", 0)))
                    elif command == "halt":
                        reply = ops.halt()
                    elif command == "ping":
                        reply = {}
                    else:
                        reply = {"error": f"unknown command {command!r}"}
                except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
                    reply = {"error": f"{type(exc).__name__}: {exc}"}
                stream.write(json.dumps(reply).encode() + b"\n")
                stream.flush()


def _watch_parent(parent: int, mount: str) -> None:
    """A test run that dies must not leave a mount behind: when the parent is gone, detach and exit."""
    import subprocess
    import time

    while os.getppid() == parent:
        time.sleep(0.5)
    subprocess.run(["fusermount3", "-u", "-z", mount], capture_output=True)
    os._exit(0)


def main(argv: list[str]) -> int:
    backing, mount, sock_path = argv
    import mfusepy  # loads libfuse; a missing library fails here, and the parent reports it

    ops = PowerLossOps(backing)
    threading.Thread(target=_serve_control, args=(ops, sock_path), daemon=True).start()
    threading.Thread(target=_watch_parent, args=(os.getppid(), mount), daemon=True).start()
    mfusepy.FUSE(ops, mount, foreground=True, fsname="memsys-powerloss", subtype="powerloss",
                 attr_timeout=0, entry_timeout=0, negative_timeout=0, use_ino=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
