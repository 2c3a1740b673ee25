"""Damaged files, for real: bit flips, truncation and zeroed blocks, judged in a child process.

A store is written once (the pristine copy: items whose content is a unique run
of random letters) and closed; its files are also copied while it is still open
(the crash image: journals and WALs not yet compacted or checkpointed). Each
image is copied once per trial. Each copy is damaged on
disk, then reopened and read in a child process (``memsys.testing.isolate``),
so a SIGSEGV, SIGBUS, SIGABRT, a hang or a runaway allocation is counted
instead of ending the run. Each item read back is judged:

* acceptable: the exact value written, or CorruptStoreError (at open, or on
  that read);
* ``unexpected``: any other value, returned silently;
* ``lost``: the item silently missing although the damage was inside its own
  value bytes, or anywhere in a memsys-format file (journals, snapshots, the
  coordinator log: every byte of those is checksummed);
* ``errors``: any other exception, typed or not (a damaged file is
  CorruptStoreError);
* ``crashed`` / ``hung``: the process died, ran away with memory, or stopped
  answering;
* reported, not failed: ``tail``, an item dropped with the torn tail of an
  append-only memsys file (a record cut or damaged in the last append, which no
  reader can tell from a crash mid-append), and ``unchecked``, an item missing
  after damage to an engine's internal structures (pages, indexes, DuckDB's and
  Kuzu's write-ahead logs) that the engine keeps no checksum of. These are the
  engines' honest limits.

Values are found in the files by searching for their unique bytes, so "inside
an item's value" means the bytes the engine really wrote, wherever it wrote
them (the live copy and any stale copies: all are damaged).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import shutil
import string
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from memsys.testing.isolate import ChildOutcome, describe, plain, run_isolated

#: Files memsys itself writes start with this; every byte of them is checksummed.
MEMSYS_MAGIC = b"MEMSYS-"
#: Lock files (memsys' PathLock) are runtime state, never damaged.
LOCK_SUFFIXES = (".memsys-lock",)
BLOCK = 4096


# ------------------------------------------------------------------------------ file primitives


def data_files(folder: str) -> list[str]:
    """Every non-empty regular file under ``folder`` (relative paths, sorted), lock files aside."""
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(LOCK_SUFFIXES) or not os.path.isfile(path) or os.path.islink(path):
                continue
            if os.path.getsize(path) > 0:
                found.append(os.path.relpath(path, folder))
    return sorted(found)


def is_memsys_format(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MEMSYS_MAGIC)) == MEMSYS_MAGIC


def occurrences(data: bytes, needle: bytes) -> list[int]:
    found, start = [], data.find(needle)
    while start >= 0:
        found.append(start)
        start = data.find(needle, start + 1)
    return found


def flip_bit(path: str, offset: int, mask: int = 0x01) -> None:
    """XOR the byte at ``offset`` with ``mask`` (0x01 keeps a letter printable and JSON-safe)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ mask]))


def truncate(path: str, size: int) -> None:
    os.truncate(path, size)


def zero_block(path: str, offset: int, block: int = BLOCK) -> tuple[int, int]:
    """Zero the ``block``-aligned block holding ``offset``; returns the zeroed range."""
    start = offset - offset % block
    end = min(start + block, os.path.getsize(path))
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\0" * (end - start))
    return start, end


def copy_folder(source: str, target: str) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*(f"*{s}" for s in LOCK_SUFFIXES)))


def _file_state(folder: str) -> dict[str, tuple[int, int]]:
    state = {}
    for rel in data_files(folder):
        st = os.stat(os.path.join(folder, rel))
        state[rel] = (st.st_ino, st.st_size)
    return state


class FileHistory:
    """Which write appended which bytes to each file: the torn-tail regions of append-only files.

    Call ``changed(ids)`` after every write with the ids it wrote, and ``changed(ids, closed=True)``
    after close. A file that grew in place at a write gained an append; a file created, replaced,
    shrunk, or changed by the close (an engine's checkpoint reorganises it) starts its history again
    with that change as its base. Only files that grew in place at a write are logs, with a torn tail
    to allow for.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._last = _file_state(folder)
        #: file -> [(start, end, ids)]: its base, then each append since it was last rewritten.
        self.appends: dict[str, list[tuple[int, int, frozenset[str]]]] = {
            rel: [(0, size, frozenset())] for rel, (_, size) in self._last.items()}

    def changed(self, ids: Iterable[str], *, closed: bool = False) -> None:
        ids = frozenset(ids)
        now = _file_state(self.folder)
        for rel, (ino, size) in now.items():
            before = self._last.get(rel)
            if before == (ino, size):
                continue
            if not closed and before is not None and before[0] == ino and size > before[1]:
                self.appends.setdefault(rel, []).append((before[1], size, ids))
            else:
                self.appends[rel] = [(0, size, ids)]
        self._last = now

    def logs(self) -> dict[str, list[tuple[int, int, frozenset[str]]]]:
        """The append history of every file that grew in place."""
        return {rel: spans for rel, spans in self.appends.items() if len(spans) > 1}


# ------------------------------------------------------------------------------ the pristine image


def payload_content(rng: random.Random, length: int) -> str:
    """Random letters: unique, incompressible enough to be found verbatim, and a bit flip with mask
    0x01 keeps them valid JSON (no quote or backslash can appear)."""
    return "".join(rng.choices(string.ascii_letters, k=length))


@dataclasses.dataclass
class StoreImage:
    """A store's files at rest and what they must hold: closed, or copied while the store was open
    (``crashed``: the files as a crash leaves them, journals not yet compacted)."""

    folder: str                                   # holds the store (and only it)
    path: str                                     # the store's path, relative to folder
    expected: dict[str, dict[str, Any]]           # id -> normalised to_dict()
    needles: dict[str, bytes]                     # id -> unique bytes inside its content
    found: dict[str, dict[str, list[int]]]        # id -> file -> offsets of the needle
    sizes: dict[str, int]                         # file -> size
    memsys: dict[str, bool]                       # file -> memsys format?
    logs: dict[str, list[tuple[int, int, frozenset[str]]]]  # append-only file -> its appends
    crashed: bool = False

    def torn(self, rel: str, start: int, end: int | None = None, *, to_end: bool = False) -> set[str]:
        """Ids a reader may drop as the torn tail of log ``rel`` (a file that grew by appends) after
        damage to [start, end): those of its last append if the damage touches it; with ``to_end``
        (a cut, or zeros up to the end of the file) those of every append the damage reaches."""
        spans = self.logs.get(rel)
        if not spans:
            return set()
        end = start + 1 if end is None else end
        if to_end:
            return {i for s, e, ids in spans if e > start for i in ids}
        s, e, ids = spans[-1]
        return set(ids) if start < e and s < end else set()


def normalise(value: Any) -> Any:
    """A JSON-comparable form (read-only mappings, tuples and the like as plain JSON)."""
    return json.loads(json.dumps(value, default=plain))


def build_image(open_store: Callable[[str], Any], folder: str, *, items: int, seed: int,
                payload_length: int = 512, path: str = "store") -> StoreImage:
    """Write ``items`` items with unique contents through ``open_store(folder/path)``, close it,
    and find each content's bytes in the files."""
    return build_images(open_store, folder, items=items, seed=seed, payload_length=payload_length, path=path)[0]


def build_images(open_store: Callable[[str], Any], folder: str, *, items: int, seed: int,
                 payload_length: int = 512, path: str = "store",
                 crash_copy: str | None = None) -> tuple[StoreImage, StoreImage | None]:
    """As ``build_image``; with ``crash_copy`` also the image of the files copied there while the
    store was still open, after its last write: what a crash leaves (a journal a close would
    compact still holds its records)."""
    from memsys.domain.model import MemoryItem, MemoryType

    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    store = open_store(os.path.join(folder, path))
    history = FileHistory(folder)
    expected: dict[str, dict[str, Any]] = {}
    needles: dict[str, bytes] = {}
    try:
        for i in range(items):
            content = payload_content(rng, payload_length)
            item = MemoryItem(id=f"damage-{i:03d}", content=content, memory_type=MemoryType.KNOWLEDGE,
                              metadata={"n": i})
            store.store(item)
            history.changed([item.id])
            expected[item.id] = normalise(item.to_dict())
            middle = payload_length // 2
            needles[item.id] = content[middle - 24: middle + 24].encode()
        if crash_copy is not None:  # what a crash would leave: written, not yet checkpointed or compacted
            shutil.rmtree(crash_copy, ignore_errors=True)
            copy_folder(folder, crash_copy)
            crash_logs = history.logs()
    finally:
        store.close()
    history.changed(expected, closed=True)
    crashed = None
    if crash_copy is not None:
        crashed = image_of(crash_copy, path, expected, needles, history)
        crashed.logs, crashed.crashed = crash_logs, True
    return image_of(folder, path, expected, needles, history), crashed


def image_of(folder: str, path: str, expected: dict[str, dict[str, Any]], needles: dict[str, bytes],
             history: FileHistory) -> StoreImage:
    """The image of a closed store in ``folder``: find each value's bytes in its files."""
    blobs = {}
    for rel in data_files(folder):
        with open(os.path.join(folder, rel), "rb") as f:
            blobs[rel] = f.read()
    found = {i: {rel: occ for rel, data in blobs.items() if (occ := occurrences(data, needle))}
             for i, needle in needles.items()}
    return StoreImage(folder, path, expected, needles, found, {rel: len(d) for rel, d in blobs.items()},
                      {rel: d.startswith(MEMSYS_MAGIC) for rel, d in blobs.items()}, history.logs())


# ------------------------------------------------------------------------------ trials


@dataclasses.dataclass
class Damage:
    """One damaged copy: what was done, and how strictly each item is judged."""

    kind: str                                 # "flip" | "truncate" | "zero"
    description: str
    apply: Callable[[str], None]              # damages the copy at this folder
    strict: set[str]                          # must come back exact or as CorruptStoreError
    tail: set[str] = dataclasses.field(default_factory=set)   # may vanish as a torn tail


def _covered(where: dict[str, list[int]], rel: str, ranges: Sequence[tuple[int, int]], width: int) -> bool:
    """True when every copy of a value lies in ``rel`` and each is hit by a damaged range."""
    if set(where) != {rel}:
        return False
    return all(any(start < o + width and o < end for start, end in ranges) for o in where[rel])


def engine_log(rel: str) -> bool:
    """An engine's own write-ahead log (DuckDB's and Kuzu's ``*.wal``): neither engine keeps a
    checksum there, and both stop replaying silently at a damaged record, as at a torn tail.
    An item lost with damage there is counted as ``unchecked`` (the engines' limit, reported),
    not as memsys losing it; a different value returned is still a failure."""
    return rel.endswith(".wal")


def value_flips(image: StoreImage, rng: random.Random, count: int) -> list[Damage]:
    """Flip one bit in the middle of an item's content, in every copy of it the files hold."""
    candidates = [i for i, where in image.found.items() if where
                  and not any(i in image.torn(rel, min(offs)) for rel, offs in where.items())]
    chosen = _spread(candidates, count, rng)
    trials = []
    for item_id in chosen:
        where = image.found[item_id]
        middle = len(image.needles[item_id]) // 2
        strict = set() if all(engine_log(rel) for rel in where) else {item_id}
        if any(image.memsys[rel] for rel in where):
            strict = set(image.expected)  # every byte of a memsys file is checksummed

        def apply(folder: str, where: dict[str, list[int]] = where, middle: int = middle) -> None:
            for rel, offs in where.items():
                for o in offs:
                    flip_bit(os.path.join(folder, rel), o + middle)

        files = ", ".join(f"{rel} ({len(o)}x)" for rel, o in where.items())
        trials.append(Damage("flip", f"bit flip inside the value of {item_id} in {files}", apply, strict))
    return trials


def random_flips(image: StoreImage, rng: random.Random, count: int) -> list[Damage]:
    """Flip a bit anywhere in memsys-format files: every byte there is checksummed."""
    files = [rel for rel, m in image.memsys.items() if m]
    trials = []
    for n in range(count if files else 0):
        rel = files[n % len(files)]
        offset = rng.randrange(image.sizes[rel])
        mask = 1 << rng.randrange(8)
        tail = image.torn(rel, offset)
        trials.append(Damage(
            "flip", f"bit {mask:#04x} flipped at byte {offset} of {rel} ({image.sizes[rel]} bytes)",
            functools.partial(_flip_at, rel, offset, mask), set(image.expected) - tail, tail))
    return trials


def _flip_at(rel: str, offset: int, mask: int, folder: str) -> None:
    flip_bit(os.path.join(folder, rel), offset, mask)


def truncations(image: StoreImage, files: Iterable[str]) -> list[Damage]:
    """Cut each file to half its size."""
    trials = []
    for rel in files:
        cut = image.sizes[rel] // 2
        if image.memsys[rel]:
            # A log cut short looks like a crash mid-append; a snapshot says its own length.
            tail = image.torn(rel, cut, to_end=True)
            strict = set(image.expected) - tail
        else:
            tail = image.torn(rel, cut, to_end=True)
            strict = set() if engine_log(rel) else {
                i for i, where in image.found.items()
                if _covered(where, rel, [(cut, image.sizes[rel])], len(image.needles[i]))} - tail
        trials.append(Damage("truncate", f"{rel} cut from {image.sizes[rel]} to {cut} bytes",
                             functools.partial(_truncate_at, rel, cut), strict, tail))
    return trials


def _truncate_at(rel: str, size: int, folder: str) -> None:
    truncate(os.path.join(folder, rel), size)


def zeroed_value_blocks(image: StoreImage, rng: random.Random, count: int) -> list[Damage]:
    """Zero the 4 KiB blocks that hold every copy of an item's value."""
    candidates = [i for i, where in image.found.items() if where]
    trials = []
    for item_id in _spread(candidates, count, rng):
        where = image.found[item_id]
        ranges = {rel: sorted({(o - o % BLOCK, min(o - o % BLOCK + BLOCK, image.sizes[rel])) for o in offs}
                              | {((o + len(image.needles[item_id])) // BLOCK * BLOCK,
                                  min((o + len(image.needles[item_id])) // BLOCK * BLOCK + BLOCK,
                                      image.sizes[rel])) for o in offs})
                  for rel, offs in where.items()}
        trials.append(_zero_trial(image, ranges, f"4 KiB blocks holding {item_id}"))
    return trials


def zeroed_random_blocks(image: StoreImage, rng: random.Random, files: Iterable[str]) -> list[Damage]:
    trials = []
    for rel in files:
        blocks = max(1, image.sizes[rel] // BLOCK)
        start = rng.randrange(blocks) * BLOCK
        ranges = {rel: [(start, min(start + BLOCK, image.sizes[rel]))]}
        trials.append(_zero_trial(image, ranges, "a random 4 KiB block"))
    return trials


def _zero_trial(image: StoreImage, ranges: dict[str, list[tuple[int, int]]], what: str) -> Damage:
    strict: set[str] = set()
    tail: set[str] = set()
    for rel, spans in ranges.items():
        for start, end in spans:
            # Zeros up to the end of a log read as a padded, torn tail.
            tail |= image.torn(rel, start, end, to_end=end >= image.sizes[rel])
        if image.memsys[rel]:
            strict |= set(image.expected)
        elif not engine_log(rel):
            strict |= {i for i, where in image.found.items() if _covered(where, rel, spans, len(image.needles[i]))}
    strict -= tail
    files = "; ".join(f"{rel} bytes " + ", ".join(f"{s}-{e}" for s, e in spans) for rel, spans in ranges.items())
    return Damage("zero", f"zeroed {what}: {files}", functools.partial(_zero_ranges, ranges), strict, tail)


def _zero_ranges(ranges: dict[str, list[tuple[int, int]]], folder: str) -> None:
    for rel, spans in ranges.items():
        path = os.path.join(folder, rel)
        for start, end in spans:
            with open(path, "r+b") as f:
                f.seek(start)
                f.write(b"\0" * (end - start))


def _spread(candidates: list[str], count: int, rng: random.Random) -> list[str]:
    """``count`` of ``candidates``: evenly spread over the store (first, middle, ...), seeded."""
    if len(candidates) <= count:
        return list(candidates)
    step = len(candidates) / count
    return [candidates[min(len(candidates) - 1, int(n * step + rng.random() * step))] for n in range(count)]


# ------------------------------------------------------------------------------ the child side


def probe_store(open_store: Callable[[str], Any], path: str, ids: Sequence[str]) -> dict[str, Any]:
    """Open ``path``, read every id and everything ``search({})`` returns, close: what happened."""
    result: dict[str, Any] = {"open": None, "items": {}, "search": None, "close": None}
    try:
        store = open_store(path)
    except BaseException as exc:  # noqa: BLE001 - judged by the parent
        result["open"] = describe(exc)
        return result
    for item_id in ids:
        try:
            item = store.retrieve(item_id)
        except BaseException as exc:  # noqa: BLE001
            result["items"][item_id] = {"error": describe(exc)}
        else:
            result["items"][item_id] = None if item is None else {"value": normalise(item.to_dict())}
    try:
        result["search"] = {"value": {i.id: normalise(i.to_dict()) for i in store.search({})}}
    except BaseException as exc:  # noqa: BLE001
        result["search"] = {"error": describe(exc)}
    try:
        store.close()
    except BaseException as exc:  # noqa: BLE001
        result["close"] = describe(exc)
    return result


# ------------------------------------------------------------------------------ judging


@dataclasses.dataclass
class Tally:
    """Counts over many operations under faults, with the first problems described."""

    faults: int = 0
    attempted: int = 0
    acknowledged: int = 0
    lost: int = 0
    partial: int = 0
    unexpected: int = 0
    hung: int = 0
    crashed: int = 0
    errors: int = 0
    detected: int = 0
    unchecked: int = 0
    tail: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    FAILURES = ("lost", "partial", "unexpected", "hung", "crashed", "errors")

    def fail(self, kind: str, problem: str, n: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + n)
        if len(self.problems) < 12:
            self.problems.append(f"{kind}: {problem}")

    @property
    def failed(self) -> bool:
        return any(getattr(self, k) for k in self.FAILURES)

    def merge(self, other: Tally) -> None:
        for field in dataclasses.fields(self):
            if field.name in ("problems", "notes"):
                getattr(self, field.name).extend(getattr(other, field.name)[: 12 - len(getattr(self, field.name))])
            else:
                setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def summary(self) -> str:
        counts = ", ".join(f"{k} {getattr(self, k)}" for k in (*self.FAILURES, "detected", "tail", "unchecked")
                           if getattr(self, k))
        return "; ".join([counts or "nothing wrong", *self.problems[:6], *self.notes[:3]])


def _error_kind(error: dict[str, Any]) -> str:
    return "corrupt" if error.get("corrupt") else "typed" if error.get("memsys") else "untyped"


def judge(image: StoreImage, damage: Damage, outcome: ChildOutcome, tally: Tally) -> None:
    """Count what one damaged copy gave back (one problem line per kind of failure)."""
    what = damage.description
    tally.faults += 1
    tally.attempted += len(image.expected)
    tally.acknowledged += len(image.expected)
    if outcome.status == "hung":
        tally.fail("hung", f"{what}: {outcome.detail}")
        return
    if outcome.died:
        tally.fail("crashed", f"{what}: {outcome.detail}")
        return
    if outcome.status == "raised":
        tally.fail("errors", f"{what}: the probe itself raised {outcome.error}")
        return
    result = outcome.value
    if result["open"] is not None:
        error = result["open"]
        if error["corrupt"]:
            tally.detected += len(image.expected)
        else:
            tally.fail("errors", f"{what}: open raised {error['type']}: {error['message'][:160]} "
                                 "(a damaged file is CorruptStoreError)")
        return
    found: dict[str, list[str]] = {"lost": [], "unexpected": [], "errors": []}
    for item_id, want in image.expected.items():
        got = result["items"].get(item_id)
        if got is None:
            if item_id in damage.strict:
                found["lost"].append(f"{item_id} silently missing")
            elif item_id in damage.tail:
                tally.tail += 1
            else:
                tally.unchecked += 1
        elif "error" in got:
            if _error_kind(got["error"]) == "corrupt":
                tally.detected += 1
            else:
                found["errors"].append(f"retrieve({item_id}) raised {got['error']['type']}: "
                                       f"{got['error']['message'][:160]}")
        elif got["value"] != want:
            found["unexpected"].append(f"retrieve({item_id}) returned a different value, silently")
    search = result["search"]
    if search is not None and "error" in search:
        if _error_kind(search["error"]) != "corrupt":
            found["errors"].append(f"search raised {search['error']['type']}: {search['error']['message'][:160]}")
    elif search is not None:
        wrong = [i for i, value in search["value"].items() if image.expected.get(i) != value]
        if wrong:
            found["unexpected"].append(f"search returned {len(wrong)} values never written ({wrong[:3]})")
    if result["close"] is not None and _error_kind(result["close"]) == "untyped":
        found["errors"].append(f"close raised {result['close']['type']}")
    for kind, problems in found.items():
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            tally.fail(kind, f"{what}: {problems[0]}{more}", n=len(problems))


# ------------------------------------------------------------------------------ the whole run


def _baseline(image: StoreImage, outcome: ChildOutcome, tally: Tally) -> StoreImage | None:
    """What the undamaged copy gives back decides what the damaged ones are held to."""
    result = outcome.value if outcome.status == "returned" else None
    if result is None or result["open"] is not None:
        why = outcome.detail or (outcome.error or {}).get("message") or (result or {}).get("open")
        tally.fail("crashed" if outcome.died else "errors", f"the undamaged {'crash ' if image.crashed else ''}"
                                                           f"copy does not open: {why}")
        return None
    intact = {i for i, want in image.expected.items() if (result["items"].get(i) or {}).get("value") == want}
    if intact == set(image.expected):
        return image
    if not image.crashed:
        tally.fail("lost", f"the undamaged copy of a closed store lacks {len(image.expected) - len(intact)} items")
        return None
    tally.notes.append(f"a crash copy holds {len(intact)} of {len(image.expected)} items (the rest wait in the "
                       "engine's memory until close); damage is judged on those")
    return dataclasses.replace(image, expected={i: v for i, v in image.expected.items() if i in intact})


@dataclasses.dataclass
class DamagePlan:
    """How much damage: trials of each kind (the dose)."""

    value_flips: int = 3
    random_flips: int = 4
    truncate_all_files: bool = False
    zero_value_blocks: int = 1
    zero_random_blocks: bool = False


def plan_trials(image: StoreImage, plan: DamagePlan, seed: int) -> list[Damage]:
    rng = random.Random(seed)
    files = sorted(image.sizes, key=lambda rel: (-image.memsys[rel], -image.sizes[rel]))
    memsys_files = [rel for rel in files if image.memsys[rel]]
    engine_files = [rel for rel in files if not image.memsys[rel]]
    cut = files if plan.truncate_all_files else memsys_files + engine_files[:1]
    trials = value_flips(image, rng, plan.value_flips)
    trials += random_flips(image, rng, plan.random_flips)
    trials += truncations(image, cut)
    trials += zeroed_value_blocks(image, rng, plan.zero_value_blocks)
    if plan.zero_random_blocks:
        trials += zeroed_random_blocks(image, rng, engine_files)
    return trials


def run_damage(open_store: Callable[[str], Any], image: StoreImage, trials: Sequence[Damage], workdir: str, *,
               timeout: float = 60.0, rss_limit: int = 4 << 30, address_space: int | None = None) -> Tally:
    """Damage one copy of the image per trial, then reopen and read every copy in child processes.

    The first probe reads an undamaged copy. A closed image must give back everything there; a
    crash image may lack what the store keeps in memory until close (an engine's buffers): those
    items are left out of the judgement, and a note says how many."""
    tally = Tally()
    calls = [functools.partial(probe_store, open_store, os.path.join(image.folder, image.path),
                               sorted(image.expected))]
    for n, damage in enumerate(trials):
        copy = os.path.join(workdir, f"trial-{n:03d}{'-crash' if image.crashed else ''}")
        shutil.rmtree(copy, ignore_errors=True)
        copy_folder(image.folder, copy)
        damage.apply(copy)
        calls.append(functools.partial(probe_store, open_store, os.path.join(copy, image.path),
                                       sorted(image.expected)))
    missing = sorted(i for i, where in image.found.items() if not where)
    if missing:  # honest: damage inside these values could not be aimed
        tally.notes.append(f"the values of {len(missing)} of {len(image.found)} items are not in the files "
                           f"verbatim (compressed or encoded), so no bit was flipped inside them: {missing[:3]}")
    outcomes = run_isolated(calls, timeout=timeout, rss_limit=rss_limit, address_space=address_space)
    image = _baseline(image, outcomes[0], tally)
    if image is not None:
        for damage, outcome in zip(trials, outcomes[1:]):
            judge(image, damage, outcome, tally)
    for n in range(len(trials)):
        shutil.rmtree(os.path.join(workdir, f"trial-{n:03d}{'-crash' if image.crashed else ''}"), ignore_errors=True)
    return tally
