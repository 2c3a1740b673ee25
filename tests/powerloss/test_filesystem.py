"""The power-loss filesystem itself: what fsync makes durable survives, everything else is lost."""

from __future__ import annotations

import mmap
import os

import pytest

pytestmark = pytest.mark.server

PAGE = 4096


def _write(path: str, data: bytes, *, sync: bool, flags: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_unsynced_data_vanishes_and_fsynced_data_survives(plfs):
    synced, unsynced = os.path.join(plfs.mount_point, "synced"), os.path.join(plfs.mount_point, "unsynced")
    _write(synced, b"s" * 10_000, sync=True)
    _write(unsynced, b"u" * 10_000, sync=False)  # closed, but close is not a sync
    assert _read(unsynced) == b"u" * 10_000  # the running system sees its own writes
    assert plfs.unsynced_bytes() == 10_000

    lost = plfs.power_failure()

    assert lost["bytes"] == 10_000
    assert _read(synced) == b"s" * 10_000
    assert _read(unsynced) == b""  # the create was durable (metadata), the data was not
    assert plfs.unsynced_bytes() == 0


def test_appends_after_the_last_fsync_are_lost_and_fdatasync_counts(plfs):
    path = os.path.join(plfs.mount_point, "log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, b"first;")
        os.fdatasync(fd)
        os.write(fd, b"second;")
    finally:
        os.close(fd)
    assert _read(path) == b"first;second;"
    plfs.power_failure()
    assert _read(path) == b"first;"


def test_o_dsync_writes_are_durable_at_once(plfs):
    path = os.path.join(plfs.mount_point, "dsync")
    _write(path, b"d" * 100, sync=False, flags=os.O_DSYNC)
    assert plfs.unsynced_bytes() == 0
    plfs.power_failure()
    assert _read(path) == b"d" * 100


def test_msync_makes_mmap_writes_durable_and_unsynced_map_writes_are_lost(plfs):
    # The kernel page cache serves the map (no direct_io): msync reaches the FUSE process as
    # write-back writes followed by an fsync.
    path = os.path.join(plfs.mount_point, "mapped")
    _write(path, bytes(2 * PAGE), sync=True)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 2 * PAGE) as m:
        m[0:5] = b"msync"
        m.flush()  # msync(MS_SYNC)
        m[PAGE:PAGE + 5] = b"later"
    plfs.power_failure()
    data = _read(path)
    assert data[0:5] == b"msync"
    assert data[PAGE:PAGE + 5] == bytes(5)


def test_metadata_is_durable_at_once(plfs):
    base = plfs.mount_point
    _write(os.path.join(base, "a.tmp"), b"A" * 50, sync=True)
    os.replace(os.path.join(base, "a.tmp"), os.path.join(base, "a"))
    _write(os.path.join(base, "gone"), b"x", sync=True)
    os.unlink(os.path.join(base, "gone"))
    _write(os.path.join(base, "cut"), b"c" * 300, sync=True)
    os.truncate(os.path.join(base, "cut"), 100)
    os.mkdir(os.path.join(base, "folder"))
    plfs.power_failure()
    assert sorted(os.listdir(base)) == ["a", "cut", "folder"]
    assert _read(os.path.join(base, "a")) == b"A" * 50
    assert _read(os.path.join(base, "cut")) == b"c" * 100


def test_rename_without_fsync_of_the_data_leaves_an_empty_file(plfs):
    # The classic: write a temporary, rename it over the target, no fsync: the rename survives
    # the power loss, the content does not.
    base = plfs.mount_point
    _write(os.path.join(base, "t"), b"old", sync=True)
    _write(os.path.join(base, "t.tmp"), b"new content", sync=False)
    os.replace(os.path.join(base, "t.tmp"), os.path.join(base, "t"))
    plfs.power_failure()
    assert _read(os.path.join(base, "t")) == b""


def test_a_torn_power_failure_persists_a_seeded_subset_of_whole_pages(plfs):
    path = os.path.join(plfs.mount_point, "torn")
    _write(path, b"o" * (8 * PAGE), sync=True)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"n" * (8 * PAGE), 0)
    finally:
        os.close(fd)
    result = plfs.power_failure(tear=True, seed=1)
    pages = [_read(path)[i * PAGE:(i + 1) * PAGE] for i in range(8)]
    assert all(p in (b"o" * PAGE, b"n" * PAGE) for p in pages)  # each page old or new, never mixed
    new = sum(p == b"n" * PAGE for p in pages)
    assert new == result["persisted_pages"]
    assert 0 < new < 8  # torn: some of the write reached the disk, not all
