"""The FUSE process's page cache, driven directly (no mount): overlays, sizes, truncation, tearing."""

from __future__ import annotations

import errno
import os

import pytest

from memsys.testing._powerloss_fs import PAGE, PowerLossOps


@pytest.fixture
def ops(tmp_path) -> PowerLossOps:
    return PowerLossOps(str(tmp_path))


def _disk(ops: PowerLossOps, name: str) -> bytes:
    with open(os.path.join(ops.backing, name), "rb") as f:
        return f.read()


def test_reads_overlay_unsynced_pages_on_the_disk_and_fsync_persists_them(ops):
    fh = ops.create("/f", 0o644, os.O_WRONLY)
    ops.write("/f", b"a" * 5000, 0, fh)
    ops.fsync("/f", 0, fh)
    ops.write("/f", b"BB", 4095, fh)  # straddles two pages
    ops.write("/f", b"tail", 6000, fh)  # grows the file past its durable end, leaving a hole
    assert ops.getattr("/f")["st_size"] == 6004
    expected = b"a" * 4095 + b"BB" + b"a" * 903 + bytes(1000) + b"tail"
    assert ops.read("/f", 10_000, 0, fh) == expected
    assert ops.read("/f", 10, 6000, fh) == b"tail"
    assert ops.read("/f", 10, 7000, fh) == b""
    assert _disk(ops, "f") == b"a" * 5000
    assert ops.unsynced() == {"bytes": PAGE + 6004 - PAGE, "pages": 2, "files": 1}
    ops.fsync("/f", 1, fh)
    assert _disk(ops, "f") == expected and ops.unsynced()["bytes"] == 0
    ops.release("/f", fh)


def test_truncate_is_durable_and_cuts_the_buffer(ops):
    fh = ops.create("/f", 0o644, os.O_WRONLY)
    ops.write("/f", b"x" * (3 * PAGE), 0, fh)
    ops.truncate("/f", PAGE + 10)
    assert ops.getattr("/f")["st_size"] == PAGE + 10
    assert ops.read("/f", 3 * PAGE, 0, fh) == b"x" * (PAGE + 10)
    ops.write("/f", b"y", PAGE + 20, fh)  # the cut bytes do not come back as the file grows
    assert ops.read("/f", 3 * PAGE, PAGE, fh) == b"x" * 10 + bytes(10) + b"y"
    ops.release("/f", fh)


def test_o_trunc_open_and_rename_carry_the_buffer(ops):
    fh = ops.create("/a", 0o644, os.O_WRONLY)
    ops.write("/a", b"unsynced", 0, fh)
    ops.rename("/a", "/b")
    assert ops.read("/b", 100, 0, fh) == b"unsynced" and _disk(ops, "b") == b""
    ops.release("/b", fh)
    fh = ops.open("/b", os.O_WRONLY | os.O_TRUNC)
    assert ops.getattr("/b")["st_size"] == 0 and ops.unsynced()["files"] == 0
    ops.release("/b", fh)


def test_a_tear_persists_a_seeded_subset_and_then_refuses_everything(ops):
    fh = ops.create("/f", 0o644, os.O_WRONLY)
    ops.write("/f", b"n" * (8 * PAGE), 0, fh)
    torn = ops.tear(seed=1)
    disk = _disk(ops, "f")
    persisted = [i for i in range(8) if disk[i * PAGE:(i + 1) * PAGE] == b"n" * PAGE]
    assert len(persisted) == torn["persisted_pages"] and 0 < len(persisted) < 8
    with pytest.raises(OSError) as caught:
        ops.read("/f", 10, 0, fh)
    assert caught.value.errno == errno.EIO


def test_o_dsync_handles_write_through(ops):
    fh = ops.create("/f", 0o644, os.O_WRONLY | os.O_DSYNC)
    ops.write("/f", b"now", 0, fh)
    assert _disk(ops, "f") == b"now" and ops.unsynced()["bytes"] == 0
    ops.release("/f", fh)


def test_metadata_passes_through_to_the_disk_at_once(ops):
    ops.mkdir("/d", 0o755)
    fh = ops.create("/d/f", 0o644, os.O_WRONLY)
    ops.write("/d/f", b"z" * 10, 0, fh)
    ops.fallocate("/d/f", 0, 0, 2 * PAGE, fh)
    assert ops.getattr("/d/f")["st_size"] == 2 * PAGE
    ops.rename("/d", "/e")  # a folder's rename moves the buffers of the files under it
    assert ops.read("/e/f", 10, 0, fh) == b"z" * 10
    ops.symlink("/e/s", "f")
    ops.link("/e/h", "/e/f")
    assert ops.readlink("/e/s") == "f"
    ops.chmod("/e/f", 0o600)
    ops.chown("/e/f", os.getuid(), os.getgid())
    ops.utimens("/e/f", (1_000_000_000, 2_000_000_000))
    ops.utimens("/e/f")
    assert ops.access("/e/f", os.R_OK) == 0
    assert ops.statfs("/")["f_bsize"] > 0
    assert sorted(entry[0] for entry in ops.readdir("/e", 0)) == [".", "..", "f", "h", "s"]
    for name in ("/e/f", "/e/h", "/e/s"):
        ops.unlink(name)
    ops.release("/e/f", fh)
    ops.rmdir("/e")
    assert os.listdir(ops.backing) == [] and ops.unsynced()["files"] == 0
    ops.halt()
    with pytest.raises(OSError):
        ops.getattr("/")
