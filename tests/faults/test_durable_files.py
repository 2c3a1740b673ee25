"""Real faults on memsys' own durable files: a full disk (a real small tmpfs), flipped bits,
torn and zero-padded tails, files in the old format, temp files left by a killed writer."""

from __future__ import annotations

import json
import os
import random

import pytest

from memsys.domain.errors import CorruptStoreError, DiskFullError
from memsys.durable import FramedLog, Journal, atomic_write, frame, log_magic, read_frames
from memsys.testing.disk import fill, free_bytes

PAD = "x" * 40


def make_journal(folder, n: int) -> Journal:
    journal = Journal(str(folder), "state.snapshot", compact_bytes=1 << 30)
    journal.open()
    for i in range(n):
        journal.append([{"i": i, "pad": PAD}])
    return journal


def batches_of(folder) -> list:
    journal = Journal(str(folder), "state.snapshot", compact_bytes=1 << 30)
    try:
        return journal.open()[1]
    finally:
        journal.close()


def record_offsets(log_path: str) -> list[int]:
    framed = FramedLog(log_path, "JOURNAL")
    try:
        return [offset for offset, _ in framed.read()]
    finally:
        framed.close()


def flip(path: str, offset: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


# --- a full disk ------------------------------------------------------------------------------


def test_a_full_disk_while_a_new_journal_starts_loses_nothing_acknowledged(small_disk) -> None:
    """The reported sequence: two appends fail on a full disk, space returns, the next append is
    acknowledged; before the fix the reopen failed with "bad magic" (the magic was NUL-padded)."""
    folder = os.path.join(small_disk, "graph")
    journal = make_journal(folder, 0)
    ballast = fill(small_disk)
    for _ in range(2):
        with pytest.raises(DiskFullError, match="disk is full"):
            journal.append([{"op": "refused", "pad": PAD}])
    assert not os.path.exists(journal.log_path) or os.path.getsize(journal.log_path) == 0
    os.unlink(ballast)
    journal.append([{"op": "acknowledged"}])
    journal.close()
    assert batches_of(folder) == [[{"op": "acknowledged"}]]


def test_a_partial_append_on_a_full_disk_is_cut_back_and_the_next_one_survives(small_disk) -> None:
    folder = os.path.join(small_disk, "graph")
    journal = make_journal(folder, 5)
    before = open(journal.log_path, "rb").read()
    ballast = fill(small_disk, leave=8192)  # room for part of the record: a real short write
    big = [{"op": "refused", "blob": "y" * (64 << 10)}]
    with pytest.raises(DiskFullError) as refused:
        journal.append(big)
    assert refused.value.path == journal.log_path
    assert open(journal.log_path, "rb").read() == before, "the failed append left bytes behind"
    assert journal.seq == 5
    os.unlink(ballast)
    journal.append([{"op": "acknowledged"}])
    journal.close()
    assert batches_of(folder) == [[{"i": i, "pad": PAD}] for i in range(5)] + [[{"op": "acknowledged"}]]


def test_compaction_on_a_full_disk_loses_nothing(small_disk) -> None:
    folder = os.path.join(small_disk, "graph")
    journal = make_journal(folder, 3)
    state = ({"format": "test"}, b"z" * (256 << 10))
    ballast = fill(small_disk, leave=4096)
    with pytest.raises(DiskFullError):
        journal.compact(lambda: state)
    journal.compact_bytes = 1
    journal.maybe_compact(lambda: state)  # logged, not raised: the log still holds every batch
    assert [name for name in os.listdir(folder) if name.endswith(".tmp")] == []
    os.unlink(ballast)
    journal.append([{"i": 3, "pad": PAD}])
    journal.close()
    assert batches_of(folder) == [[{"i": i, "pad": PAD}] for i in range(4)]


def test_atomic_write_on_a_full_disk_is_typed_keeps_the_old_content_and_no_temp_file(small_disk) -> None:
    target = os.path.join(small_disk, "items.json")
    atomic_write(target, b"old content")
    ballast = fill(small_disk, leave=8192)
    with pytest.raises(DiskFullError, match="disk is full") as refused:
        atomic_write(target, b"n" * (1 << 20))
    assert refused.value.path == target
    assert open(target, "rb").read() == b"old content"
    assert sorted(os.listdir(small_disk)) == sorted([os.path.basename(target), os.path.basename(ballast)])
    os.unlink(ballast)
    atomic_write(target, b"new content")
    assert open(target, "rb").read() == b"new content" and free_bytes(small_disk) > 0


def test_a_full_disk_in_a_networkx_store_is_typed_and_the_store_keeps_working(small_disk) -> None:
    from memsys.adapters.networkx_store import GraphMemoryAdapter
    from memsys.testing import sample_item

    path = os.path.join(small_disk, "graph")
    store = GraphMemoryAdapter(path=path)
    store.store(sample_item(1))
    ballast = fill(small_disk)
    big = sample_item(2, content="c" * (64 << 10))  # more than the journal's last page holds
    for _ in range(2):
        with pytest.raises(DiskFullError):
            store.store(big)
    assert store.retrieve("item-00002") is None, "a refused write is visible"
    os.unlink(ballast)
    store.store(sample_item(3))
    store.close()
    reopened = GraphMemoryAdapter(path=path)
    try:
        assert sorted(i.id for i in reopened.search({})) == ["item-00001", "item-00003"]
    finally:
        reopened.close()


# --- damage before the tail -------------------------------------------------------------------

HEADER = 12  # length, crc32 of the payload, crc32 of the header


@pytest.mark.parametrize("record", [0, 1, 23, 58, 59])
@pytest.mark.parametrize("field", ["length", "payload crc", "header crc", "payload"])
def test_a_flipped_bit_anywhere_in_a_record_is_corruption_naming_the_offset(tmp_path, record, field) -> None:
    journal = make_journal(tmp_path, 60)
    journal.close()
    offsets = record_offsets(journal.log_path)
    assert len(offsets) == 60
    rng = random.Random(f"{record}-{field}")
    start = offsets[record]
    position = {"length": start + rng.randrange(0, 4), "payload crc": start + rng.randrange(4, 8),
                "header crc": start + rng.randrange(8, 12), "payload": start + HEADER + rng.randrange(0, 20)}[field]
    flip(journal.log_path, position, rng.randrange(8))
    damaged = open(journal.log_path, "rb").read()
    with pytest.raises(CorruptStoreError, match=f"byte {start}\\b") as error:
        batches_of(tmp_path)
    assert error.value.path == journal.log_path
    assert open(journal.log_path, "rb").read() == damaged, "a damaged journal was changed"


def test_a_damaged_magic_is_corruption_and_the_file_is_left_alone(tmp_path) -> None:
    journal = make_journal(tmp_path, 3)
    journal.close()
    flip(journal.log_path, 3, 0)
    damaged = open(journal.log_path, "rb").read()
    with pytest.raises(CorruptStoreError, match="bad magic"):
        batches_of(tmp_path)
    framed = FramedLog(journal.log_path, "JOURNAL")
    with pytest.raises(CorruptStoreError):
        framed.append([b'{"seq": 4}'], sync=True)  # an append never writes over a file it cannot read
    assert open(journal.log_path, "rb").read() == damaged


# --- genuine torn tails -----------------------------------------------------------------------


def test_every_prefix_of_the_last_record_is_a_torn_tail(tmp_path) -> None:
    journal = make_journal(tmp_path, 4)
    journal.close()
    data = open(journal.log_path, "rb").read()
    last = record_offsets(journal.log_path)[-1]
    expected = [[{"i": i, "pad": PAD}] for i in range(3)]
    for cut in range(last, len(data)):
        with open(journal.log_path, "wb") as f:
            f.write(data[:cut])
        assert batches_of(tmp_path) == expected, f"cut at {cut}"
    # After a torn tail the next append lands on the intact records.
    reopened = Journal(str(tmp_path), "state.snapshot")
    reopened.open()
    reopened.append([{"i": "again"}])
    reopened.close()
    assert batches_of(tmp_path) == expected + [[{"i": "again"}]]


@pytest.mark.parametrize("case", ["zeros after the file", "torn then zeros", "payload zeroed in place",
                                  "header cut short then zeros"])
def test_a_zero_padded_tail_is_a_torn_tail(tmp_path, case) -> None:
    journal = make_journal(tmp_path, 4)
    journal.close()
    data = open(journal.log_path, "rb").read()
    last = record_offsets(journal.log_path)[-1]
    padded = {
        "zeros after the file": data + b"\0" * 4096,
        "torn then zeros": data[:last + HEADER + 5] + b"\0" * 4096,
        "payload zeroed in place": data[:last + HEADER + 3] + b"\0" * (len(data) - last - HEADER - 3),
        "header cut short then zeros": data[:last + 5] + b"\0" * 4096,
    }[case]
    with open(journal.log_path, "wb") as f:
        f.write(padded)
    full = [[{"i": i, "pad": PAD}] for i in range(4)]
    assert batches_of(tmp_path) == (full if case == "zeros after the file" else full[:3])
    reopened = Journal(str(tmp_path), "state.snapshot")
    reopened.open()
    reopened.append([{"i": "next"}])
    reopened.close()
    assert batches_of(tmp_path)[-1] == [{"i": "next"}]


# --- files in the old format ------------------------------------------------------------------


def v1_journal(records: list, magic: bytes = log_magic("JOURNAL", 1)) -> bytes:
    return magic + b"".join(frame(json.dumps({"seq": n, "batch": b}).encode()) for n, b in enumerate(records, 1))


def test_an_old_format_journal_is_read_and_upgraded_at_the_first_append(tmp_path) -> None:
    old = [[{"i": i}] for i in range(10)]
    log_path = tmp_path / "journal.log"
    log_path.write_bytes(v1_journal(old))
    journal = Journal(str(tmp_path), "state.snapshot")
    assert journal.open()[1] == old
    journal.append([{"i": 10}])
    journal.close()
    assert log_path.read_bytes().startswith(log_magic("JOURNAL", 2))
    assert batches_of(tmp_path) == old + [[{"i": 10}]]


def test_an_old_journal_whose_magic_a_full_disk_zeroed_is_read(tmp_path) -> None:
    """What the old writer left after a disk-full episode: zeros for the magic, then acknowledged
    records. They are read (and the file upgraded at the next append)."""
    old = [[{"op": "acknowledged"}], [{"op": "also"}]]
    log_path = tmp_path / "journal.log"
    log_path.write_bytes(v1_journal(old, magic=b"\0" * len(log_magic("JOURNAL", 1))))
    assert batches_of(tmp_path) == old


def test_a_damaged_length_in_an_old_format_file_is_corruption_not_a_torn_tail(tmp_path) -> None:
    old = [[{"i": i, "pad": PAD}] for i in range(30)]
    data = v1_journal(old)
    log_path = tmp_path / "journal.log"
    offsets = [offset for offset in range(len(data)) if data.startswith(b'{"seq": 7,', offset + 8)]
    assert len(offsets) == 1
    log_path.write_bytes(data)
    flip(str(log_path), offsets[0] + 2, 4)  # the length now runs past the end of the file
    damaged = log_path.read_bytes()
    with pytest.raises(CorruptStoreError, match=f"byte {offsets[0]}\\b"):
        batches_of(tmp_path)
    assert log_path.read_bytes() == damaged


def test_the_default_framing_reads_what_it_wrote(tmp_path) -> None:
    """frame/read_frames without a version keep version 1, the format of files written before 2."""
    payloads = [json.dumps({"t": "commit", "lsn": n}).encode() for n in range(5)]
    data = b"MAGIC\n" + b"".join(frame(p) for p in payloads)
    assert [p for p, _ in read_frames("log", data, 6)] == payloads
    assert [p for p, _ in read_frames("log", data[:-3], 6)] == payloads[:4]


def test_a_damaged_length_in_the_coordinator_log_is_corruption(tmp_path) -> None:
    from memsys.application.txlog import CoordinatorLog

    path = str(tmp_path / "txlog")
    txlog = CoordinatorLog(path)
    for lsn in range(1, 31):
        txlog.append([{"t": "commit", "lsn": lsn, "txid": f"t{lsn}", "ops": {}, "ts": 0}], sync=False)
    txlog.close()
    data = open(path, "rb").read()
    start = data.index(b'{"t":"commit","lsn":10,')
    start -= 12 if data.startswith(log_magic("TXLOG", 2)) else 8
    flip(path, start + 1, 3)
    damaged = open(path, "rb").read()
    with pytest.raises(CorruptStoreError, match=f"byte {start}\\b"):
        CoordinatorLog(path).scan()
    assert open(path, "rb").read() == damaged


# --- temp files a killed writer left ----------------------------------------------------------


def test_opening_a_journal_removes_the_temp_files_a_killed_writer_left(tmp_path) -> None:
    journal = make_journal(tmp_path, 2)
    journal.compact(lambda: ({"format": "test"}, b"state"))
    journal.close()
    stale = [tmp_path / ".state.snapshot.k1l2e3d4.tmp", tmp_path / ".journal.log.a1b2c3.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * (1 << 20))
    other = tmp_path / ".unrelated.tmp"
    other.write_bytes(b"keep")
    reopened = Journal(str(tmp_path), "state.snapshot")
    assert reopened.open()[0] == ({"format": "test", "seq": 2, "body_length": 5,
                                   "body_crc32": reopened_crc(b"state")}, b"state")
    reopened.close()
    assert not any(path.exists() for path in stale)
    assert other.read_bytes() == b"keep"


def reopened_crc(body: bytes) -> int:
    import zlib

    return zlib.crc32(body)
