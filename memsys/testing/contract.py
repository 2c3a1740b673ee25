"""The conformance kit: one abstract test class per port, one hook to implement.

    from memsys.testing import MemoryStoreContract

    class TestMyStore(MemoryStoreContract):
        def create_store(self, path):       # the same path again = reopen
            return MyStore(path=path)

Every check is there to FAIL an adapter that loses, corrupts or resurrects
data, duplicates on update, or lets a driver exception escape untyped. The
faults real stores meet are checks too, on real files and a real small file
system: damage inside a stored value (a flipped bit, a zeroed block) and cut
files never give a different value silently; a second opener (here and in
another process) is refused with StoreLockedError or shares safely; nothing
the store holds changes through objects passed to it or returned by it;
sustained updates keep working; a full disk is a typed error that loses
nothing. Whatever may kill a process runs in a child process. A check that
needs a capability the store does not declare is skipped with a reason; class
attributes (``sustained_updates``, ``disk_full_unsupported``, ...) tune them.
Overriding a check in a subclass fails the guard test unless the override is
marked ``pytest.mark.xfail(reason=...)``: a kit that can be quietly switched
off proves nothing.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from memsys.domain.errors import (
    InvalidInputError,
    InvalidMemoryItemError,
    InvalidQueryError,
    MemsysError,
    NotFoundError,
    StoreClosedError,
    TransactionStateError,
    VectorDimensionError,
)
from memsys.domain.model import MemoryItem, MemoryType, MemoryVector
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability
from memsys.testing.samples import AWKWARD_IDS, EPOCH, UNICODE_TEXT, sample_item


def dump(store: Any) -> dict[str, dict]:
    """Everything a store holds, as comparable dicts (via its public API)."""
    items = store.search({})
    return {item.id: item.to_dict() for item in items}


def _capabilities(store: Any) -> frozenset:
    return frozenset(getattr(store, "capabilities", frozenset()))


class _Contract:
    """Fixtures and helpers shared by the contracts."""

    #: Set on each contract class (not on your subclass): marks whose tests the guard protects.
    _contract: ClassVar[bool] = True

    def create_store(self, path: str) -> Any:
        """Return a store persisting at ``path``; called again with the same path to reopen."""
        raise NotImplementedError("implement create_store(self, path) in your test class")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "test_contract_is_not_silently_overridden" in cls.__dict__ and not cls.__dict__.get("_contract"):
            raise TypeError(f"{cls.__name__} overrides the contract guard; that switches the kit off")
        if "_contract" not in cls.__dict__:
            cls._contract = False

    @pytest.fixture
    def store_path(self, tmp_path: Path) -> str:
        return os.fspath(tmp_path / "store")

    @pytest.fixture
    def store(self, store_path: str) -> Iterator[Any]:
        opened = self.create_store(store_path)
        self._open_stores = [opened]
        yield opened
        for s in self._open_stores:
            try:
                s.close()
            except MemsysError:
                pass

    def reopen(self, store: Any, path: str) -> Any:
        """Close ``store`` and open the same path again."""
        store.close()
        reopened = self.create_store(path)
        self._open_stores.append(reopened)
        return reopened

    def require(self, store: Any, capability: Capability) -> None:
        if capability not in _capabilities(store):
            # pytest's -rs shows where the skip was raised (a line of this file, shared by every
            # check), so the reason names the check itself.
            test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0].rsplit("::", 1)[-1] or "this check"
            pytest.skip(f"{test}: {type(store).__name__} does not declare the {capability.value!r} capability "
                        f"(declare it in `capabilities` to run this check)")

    def test_contract_is_not_silently_overridden(self) -> None:
        offenders = []
        mro = type(self).__mro__
        for contract in mro:
            if not contract.__dict__.get("_contract"):
                continue
            for name, original in contract.__dict__.items():
                if not name.startswith("test_"):
                    continue
                owner = next(c for c in mro if name in c.__dict__)
                if owner.__dict__.get("_contract"):
                    continue
                marks = getattr(owner.__dict__[name], "pytestmark", [])
                if not any(m.name == "xfail" and m.kwargs.get("reason") for m in marks):
                    offenders.append(f"{owner.__name__}.{name}")
        assert not offenders, (
            "contract checks overridden without pytest.mark.xfail(reason=...): " + ", ".join(sorted(set(offenders))))


class MemoryStoreContract(_Contract):
    """What every MemoryStore must do."""

    _contract = True

    # --- round trips -----------------------------------------------------------

    def test_round_trip_keeps_every_field(self, store: Any) -> None:
        items = [sample_item(i) for i in range(5)]
        for item in items:
            assert store.store(item) == item.id
        for item in items:
            got = store.retrieve(item.id)
            assert got is not None, f"{item.id} was acknowledged but cannot be retrieved"
            assert got.to_dict() == item.to_dict()
            assert got == item

    def test_every_memory_type_round_trips(self, store: Any) -> None:
        for i, memory_type in enumerate(MemoryType):
            item = sample_item(i, prefix="type", memory_type=memory_type)
            store.store(item)
            assert store.retrieve(item.id).memory_type is MemoryType.from_raw(memory_type.value)

    def test_json_content_of_every_kind_round_trips(self, store: Any) -> None:
        contents = [
            UNICODE_TEXT, "", 0, -(2**63), 2**64 + 1, 3.141592653589793, 1e-300, True, False, None,
            [], {}, [1, "two", 3.0, None, [True, {"x": []}]], {"nested": {"deep": {"list": [1, 2, {"k": "v"}]}}},
        ]
        for i, content in enumerate(contents):
            item = sample_item(i, prefix="content", content=content)
            store.store(item)
            got = store.retrieve(item.id)
            assert got is not None and got.content == content and _same_kind(got.content, content), \
                f"content {content!r} came back as {None if got is None else got.content!r}"

    def test_one_megabyte_content_round_trips(self, store: Any) -> None:
        big = ("0123456789abcdef" * 65536)[: 1 << 20]
        item = sample_item(1, prefix="big", content=big)
        store.store(item)
        assert store.retrieve(item.id).content == big

    def test_awkward_ids_round_trip(self, store: Any) -> None:
        for i, item_id in enumerate(AWKWARD_IDS):
            store.store(sample_item(i).replace(id=item_id))
        for item_id in AWKWARD_IDS:
            got = store.retrieve(item_id)
            assert got is not None and got.id == item_id, f"id {item_id!r} did not round-trip"
        assert sorted(dump(store)) == sorted(AWKWARD_IDS)

    # --- updates and deletes -----------------------------------------------------

    def test_store_of_existing_id_updates_without_duplicating(self, store: Any) -> None:
        first = sample_item(7)
        second = first.replace(content="second version", metadata={"v": 2}, version=2,
                               updated_at=first.updated_at + timedelta(hours=1))
        store.store(first)
        store.store(second)
        assert store.retrieve(first.id) == second
        hits = [i for i in store.search({}) if i.id == first.id]
        assert len(hits) == 1, f"search returned {len(hits)} copies of one id"
        assert [i.content for i in store.search("second version")] == ["second version"]
        assert store.search({"metadata": {"n": 7}}) == [], "metadata of the old version is still searchable"

    def test_retrieve_of_missing_id_is_none(self, store: Any) -> None:
        assert store.retrieve("never-stored") is None

    def test_delete_reports_whether_the_item_existed(self, store: Any) -> None:
        item = sample_item(3)
        store.store(item)
        assert store.delete(item.id) is True
        assert store.retrieve(item.id) is None
        assert store.delete(item.id) is False
        assert store.delete("never-stored") is False
        assert item.id not in dump(store)

    # --- durability ----------------------------------------------------------------

    def test_reopen_keeps_acknowledged_writes_and_deletes(self, store: Any, store_path: str) -> None:
        expected: dict[str, MemoryItem] = {}
        for i in range(60):
            item = sample_item(i)
            store.store(item)
            expected[item.id] = item
        for i in range(0, 60, 6):
            updated = sample_item(i, content=f"updated {i}", version=2)
            store.store(updated)
            expected[updated.id] = updated
        for i in range(1, 60, 5):
            assert store.delete(f"item-{i:05d}") is True
            expected.pop(f"item-{i:05d}")
        for _ in range(2):  # twice: a journal replayed twice must not double-apply
            store = self.reopen(store, store_path)
            state = dump(store)
            lost = sorted(set(expected) - set(state))
            resurrected = sorted(set(state) - set(expected))
            assert not lost, f"acknowledged writes lost on reopen: {lost[:5]}"
            assert not resurrected, f"deleted items came back on reopen: {resurrected[:5]}"
            stale = [k for k in expected if state[k] != expected[k].to_dict()]
            assert not stale, f"items reopened with old or corrupted values: {stale[:5]}"

    def test_last_writes_before_close_survive_reopen(self, store: Any, store_path: str) -> None:
        for i in range(3):
            store.store(sample_item(i))
        store.delete("item-00001")
        last = sample_item(2, content="the very last write")
        store.store(last)
        store = self.reopen(store, store_path)
        assert store.retrieve("item-00002") == last
        assert store.retrieve("item-00001") is None
        assert store.retrieve("item-00000") is not None

    # --- search -------------------------------------------------------------------------

    def test_search_matches_the_reference_semantics(self, store: Any) -> None:
        items = [sample_item(i) for i in range(40)]
        for item in items:
            store.store(item)
        queries: list[Any] = [
            {}, {"memory_type": MemoryType.CODE}, {"memory_type": ["SHORT_TERM", "episodic"]},
            {"metadata": {"parity": "even"}}, {"metadata.flag": True}, {"metadata": {"nested": {"a": {"b": {"c": 4}}}}},
            "#1", {"content": "CAFÉ"}, {"ids": ["item-00003", "item-00004", "missing"]},
            {"created_after": EPOCH + timedelta(seconds=10), "created_before": EPOCH + timedelta(seconds=20)},
            {"updated_before": EPOCH + timedelta(seconds=65)}, {"limit": 7}, {"metadata": {"parity": "odd"}, "limit": 3},
            {"metadata": {"n": 1.0}}, {"metadata": {"flag": 1}},
        ]
        for query in queries:
            expected = [i.id for i in MemoryQuery.parse(query).select(items)]
            got = [i.id for i in store.search(query)]
            assert got == expected, f"search({query!r}) returned {got[:6]}..., expected {expected[:6]}..."

    def test_search_rejects_malformed_queries_with_typed_errors(self, store: Any) -> None:
        store.store(sample_item(1))
        for bad in [{"no_such_key": 1}, {"memory_type": "NOT_A_TYPE"}, {"limit": -1}, {"content": 5}, 42, ["x"]]:
            with pytest.raises(InvalidQueryError):
                store.search(bad)

    # --- concurrency --------------------------------------------------------------------

    def test_concurrent_writers_lose_nothing(self, store: Any, store_path: str) -> None:
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def writer(worker: int) -> None:
            try:
                barrier.wait(timeout=30)
                for i in range(40):
                    store.store(sample_item(worker * 1000 + i, prefix="w"))
            except BaseException as exc:  # reported below, with the worker's traceback
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, f"writer threads failed: {errors[:3]!r}"
        expected = {f"w-{w * 1000 + i:05d}" for w in range(4) for i in range(40)}
        assert set(dump(store)) == expected
        store = self.reopen(store, store_path)
        assert set(dump(store)) == expected, "concurrent writes were lost on reopen"

    # --- bad input and typed errors ----------------------------------------------------------

    def test_bad_input_raises_typed_errors_and_changes_nothing(self, store: Any) -> None:
        for i in range(3):
            store.store(sample_item(i))
        before = dump(store)
        bad_calls: list[tuple[Callable[[], Any], type[BaseException]]] = [
            (lambda: store.store(None), InvalidInputError),
            (lambda: store.store({"id": "x", "content": "y"}), InvalidInputError),
            (lambda: store.store("item"), InvalidInputError),
            (lambda: store.retrieve(""), InvalidInputError),
            (lambda: store.retrieve(None), InvalidInputError),
            (lambda: store.retrieve("x" * 1000), InvalidInputError),
            (lambda: store.retrieve("nul\x00id"), InvalidInputError),
            (lambda: store.delete(""), InvalidInputError),
            (lambda: store.delete(17), InvalidInputError),
            (lambda: store.search({"bogus": 1}), InvalidQueryError),
        ]
        for call, error in bad_calls:
            with pytest.raises(error):
                call()
        mutated = sample_item(99)
        # Where items are mutable after validation, a store must check again what it writes; an
        # immutable item refuses the change (TypeError), so the bad value never exists.
        if _try_set(mutated.metadata, "bad", float("nan")):
            with pytest.raises(InvalidMemoryItemError):
                store.store(mutated)
        assert dump(store) == before, "a rejected call changed the store"

    def test_batch_with_one_bad_item_stores_none(self, store: Any) -> None:
        store_many = getattr(store, "store_many", None)
        if store_many is None:
            pytest.skip(f"{type(store).__name__} has no store_many")
        store.store(sample_item(0))
        before = dump(store)
        bad: Any = sample_item(2)
        if not _try_set(bad.metadata, "oops", {1: "non-string key"}):
            bad = {"id": "not-an-item"}  # an immutable item cannot turn bad: a batch holding a non-item
        with pytest.raises(InvalidInputError):
            store_many([sample_item(1), bad, sample_item(3)])
        assert dump(store) == before, "a batch with one bad item was partly stored"

    def test_closed_store_raises_typed_errors(self, store: Any) -> None:
        store.store(sample_item(1))
        store.close()
        store.close()  # closing twice is harmless
        for call in (lambda: store.store(sample_item(2)), lambda: store.retrieve("item-00001"),
                     lambda: store.search({}), lambda: store.delete("item-00001")):
            with pytest.raises(StoreClosedError):
                call()

    def test_corrupt_files_raise_typed_errors_and_are_never_overwritten(self, store: Any, store_path: str) -> None:
        self.require(store, Capability.PERSISTENCE)
        for i in range(5):
            store.store(sample_item(i))
        store.close()
        files = [p for p in Path(store_path).rglob("*") if p.is_file()] if os.path.isdir(store_path) else \
            [Path(store_path)] if os.path.isfile(store_path) else []
        assert files, f"{type(store).__name__} declares persistence but wrote nothing at {store_path}"
        garbage = {}
        for n, p in enumerate(files):
            data = bytes((n * 37 + k * 101) % 251 for k in range(max(64, min(p.stat().st_size, 8192))))
            p.write_bytes(data)
            garbage[p] = data
        try:
            reopened = self.create_store(store_path)
        except MemsysError:
            pass
        else:
            self._open_stores.append(reopened)
            try:
                state = dump(reopened)
            except MemsysError:
                pass
            else:
                pytest.fail(f"opened corrupt files without an error and read {len(state)} items")
        # Lock files are runtime state the engine re-creates at open; only data must stay untouched.
        scratch = tuple(getattr(store, "scratch_files", ()))
        changed = [str(p) for p, data in garbage.items()
                   if not any(p.match(pattern) for pattern in scratch)
                   and (not p.exists() or p.read_bytes() != data)]
        assert not changed, f"corrupt files were overwritten or removed: {changed}"

    # --- the faults real stores meet --------------------------------------------------------------
    #
    # Damage is done to real files, a real second opener opens the path (here and in another
    # process), a real small file system fills up. Whatever may kill a process (a native engine
    # reading a damaged file) runs in a child process, so a crash or a hang fails the check
    # instead of the test run.

    #: Items written before the damage checks damage the files, each with a unique value.
    damage_items: ClassVar[int] = 24
    #: Seconds a child process may take for one call (open a damaged copy and read it back).
    child_timeout: ClassVar[float] = 120.0
    #: Resident memory (bytes) a child process may reach before it counts as running away.
    child_memory_limit: ClassVar[int] = 4 << 30
    #: Updates the sustained-update check makes, spread over ``sustained_ids`` ids; raise it for a soak.
    sustained_updates: ClassVar[int] = 400
    sustained_ids: ClassVar[int] = 6
    #: Set to the reason your store cannot run on a small file system the kit mounts under
    #: ``path`` (it keeps its files elsewhere, say): the disk-full check then skips with it.
    #: The adapter class may declare the same attribute (for ``memsys verify-adapter``).
    disk_full_unsupported: ClassVar[str | None] = None
    #: Size of the small file system the disk-full check fills up.
    disk_full_size: ClassVar[int] = 24 << 20

    def _child_factory(self) -> Callable[[str], Any]:
        """``create_store`` as a child process can call it (the test class, pickled by name)."""
        import pickle

        factory = _ChildFactory(type(self))
        try:
            pickle.dumps(factory)
        except Exception as exc:  # noqa: BLE001 - explained to the author
            pytest.fail(f"these checks call create_store in a child process, so {type(self).__qualname__} must be "
                        f"importable by name (defined at module level): {exc}")
        return factory

    def _damage_images(self, tmp_path: Path) -> list[Any]:
        """The store closed, and as a crash leaves it (copied while open: journals not compacted)."""
        from memsys.testing.damage import build_images

        closed, crashed = build_images(self._child_factory(), os.fspath(tmp_path / "pristine"),
                                       items=self.damage_items, seed=7, crash_copy=os.fspath(tmp_path / "crashed"))
        if not any(closed.found.values()):
            pytest.skip(f"{type(self).__name__}: no stored value is in the files verbatim (compressed or "
                        "encoded), so no damage can be aimed inside one")
        return [closed, crashed]

    def _damage(self, tmp_path: Path, plan: Callable[[Any, Any], list[Any]]) -> Any:
        import random

        from memsys.testing.damage import Tally, run_damage

        tally = Tally()
        for n, image in enumerate(self._damage_images(tmp_path)):
            tally.merge(run_damage(self._child_factory(), image, plan(image, random.Random(n)),
                                   os.fspath(tmp_path / "trials"), timeout=self.child_timeout,
                                   rss_limit=self.child_memory_limit))
        return tally

    def _assert_tally(self, tally: Any, what: str) -> None:
        assert not tally.failed, f"{what}: {tally.summary()}"

    def test_damage_inside_a_stored_value_is_detected(self, store: Any, tmp_path: Path) -> None:
        """A flipped bit or a zeroed block inside an item's stored bytes (before the tail of the files):
        reading gives the exact value or CorruptStoreError, never another value, never nothing."""
        from memsys.testing.damage import value_flips, zeroed_value_blocks

        self.require(store, Capability.PERSISTENCE)
        store.close()
        tally = self._damage(tmp_path,
                             lambda image, rng: value_flips(image, rng, 3) + zeroed_value_blocks(image, rng, 1))
        self._assert_tally(tally, "damage inside stored values")

    def test_truncated_files_never_return_a_different_value(self, store: Any, tmp_path: Path) -> None:
        """Every file cut to half its size: exact values or CorruptStoreError; an item the cut took away
        with a log's tail or an engine's pages may be missing (counted, not failed); never another
        value, an untyped error, a crash or a hang."""
        from memsys.testing.damage import truncations

        self.require(store, Capability.PERSISTENCE)
        store.close()
        tally = self._damage(tmp_path, lambda image, rng: truncations(image, sorted(image.sizes)))
        self._assert_tally(tally, "truncated files")

    def test_a_second_opener_is_refused_or_safe(self, store: Any, tmp_path: Path) -> None:
        """A second opener of the same path, in this process and in another one: StoreLockedError, or
        both work and every acknowledged write of each is seen by the other and survives."""
        from memsys.testing.real_faults import opener_trial

        self.require(store, Capability.PERSISTENCE)
        store.close()
        result = opener_trial(self._child_factory(), os.fspath(tmp_path / "shared" / "store"), writes=10,
                              timeout=self.child_timeout)
        self._assert_tally(result.tally, f"second openers (in this process: {result.in_process}, "
                                         f"in another: {result.other_process})")

    def test_stored_and_returned_items_never_alias_the_caller(self, store: Any, store_path: str) -> None:
        """What a store holds changes only through its own calls: mutating the item passed to store(),
        or anything reachable from items it returned, changes nothing it returns (before and after
        reopening). An immutable item that refuses the mutation (TypeError) is fine."""
        original = _nested_item("alias-1")
        expected = _plain(original.to_dict())
        store.store(original)
        store.store(_nested_item("alias-2"))
        mutated = _mutate_item(original)

        def check(when: str) -> None:
            got = store.retrieve("alias-1")
            assert got is not None and _plain(got.to_dict()) == expected, \
                f"{when}, the store returns {None if got is None else _plain(got.to_dict())!r}"
            hits = {i.id: _plain(i.to_dict()) for i in store.search({})}
            assert hits.get("alias-1") == expected, f"{when}, search returns a changed item"

        check(f"after the caller's item was mutated ({mutated} changes)")
        readers: list[tuple[str, Callable[[], Any]]] = [
            ("retrieve", lambda: [store.retrieve("alias-1")]),
            ("search", lambda: store.search({})),
            ("search by metadata", lambda: store.search({"metadata": {"kind": "alias"}})),
        ]
        if hasattr(store, "retrieve_many"):
            readers.append(("retrieve_many", lambda: list(store.retrieve_many(["alias-1", "alias-2"]).values())))
        if Capability.VECTOR_SEARCH in _capabilities(store):
            query = list(store.retrieve_vector("alias-1").embedding)
            readers += [("similarity_search", lambda: store.similarity_search(query, top_k=2)),
                        ("similar_items", lambda: [hit.item for hit in store.similar_items(query, top_k=2)]),
                        ("retrieve_vector", lambda: [store.retrieve_vector("alias-1")])]
        if Capability.GRAPH in _capabilities(store):
            store.add_relationship("alias-2", "alias-1", "next", {"weight": {"w": [1, 2]}})
            readers.append(("neighbors", lambda: store.neighbors("alias-2")))
        for name, read in readers:
            for returned in read():
                _mutate_item(returned)
            check(f"after items returned by {name} were mutated")
        if Capability.GRAPH in _capabilities(store):
            for rel in store.get_relationships("alias-2", "out"):
                _mutate_value(rel.properties)
            props = [r.properties for r in store.get_relationships("alias-2", "out")]
            assert [_plain(p) for p in props] == [{"weight": {"w": [1, 2]}}], \
                "mutating a returned relationship's properties changed the stored edge"
        store.store(_nested_item("alias-3"))  # a store that writes its whole state at the next write
        check("after another write")
        if Capability.PERSISTENCE in _capabilities(store):
            store = self.reopen(store, store_path)
            check("after reopening")

    def test_sustained_updates_keep_only_the_latest_values(self, store: Any, store_path: str) -> None:
        """``sustained_updates`` updates of a few ids all succeed, and each id holds its last update."""
        from memsys.testing.real_faults import _latest_check, soak_trial

        tally, latest, _ = soak_trial(store, self.sustained_updates, ids=self.sustained_ids, seed=3)
        _latest_check(store, latest, tally, "after the updates", stamped=False)
        if Capability.PERSISTENCE in _capabilities(store) and not tally.failed:
            store = self.reopen(store, store_path)
            _latest_check(store, latest, tally, "after reopening", stamped=False)
        self._assert_tally(tally, f"{self.sustained_updates} updates of {self.sustained_ids} ids")

    def test_disk_full_is_a_typed_error_and_loses_nothing(self, store: Any, tmp_path: Path) -> None:
        """On a small file system that fills up: every refused write is a typed memsys error, every
        acknowledged one survives freeing space and reopening, no refused one appears, new writes work."""
        from memsys.testing.disk import DiskFaultUnavailable, small_filesystem
        from memsys.testing.isolate import run_isolated
        from memsys.testing.plugin import servers_required, skip_server_unavailable

        self.require(store, Capability.PERSISTENCE)
        reason = self.disk_full_unsupported or getattr(store, "disk_full_unsupported", None)
        if reason:
            pytest.skip(f"disk_full_unsupported: {reason}")
        store.close()
        factory = self._child_factory()
        try:
            with small_filesystem(tmp_path / "disk", size=self.disk_full_size) as disk:
                # In a child process: a store that hangs on a full disk must fail the check, not the run.
                [outcome] = run_isolated([functools.partial(_disk_full_in_child, factory, disk)],
                                         timeout=self.child_timeout, rss_limit=self.child_memory_limit)
        except DiskFaultUnavailable as exc:
            if servers_required():
                pytest.fail(f"cannot mount a small file system, and CI requires the real fault: {exc}")
            skip_server_unavailable(f"cannot mount a small file system: {exc}")
        assert outcome.status == "returned", f"on a full disk the store {outcome.status}: " \
                                             f"{outcome.detail or outcome.error}"
        from memsys.testing.damage import Tally

        self._assert_tally(Tally(**outcome.value), "disk full")

    # --- batches, scans ------------------------------------------------------------------------

    def test_batch_operations(self, store: Any) -> None:
        for method in ("store_many", "retrieve_many", "delete_many"):
            if not hasattr(store, method):
                pytest.skip(f"{type(store).__name__} has no {method}")
        items = [sample_item(i, prefix="batch") for i in range(120)]
        assert store.store_many(items) == [i.id for i in items]
        found = store.retrieve_many([i.id for i in items[:10]] + ["missing"])
        assert found == {i.id: i for i in items[:10]}
        assert store.delete_many([i.id for i in items[:30]] + ["missing"]) == 30
        assert set(dump(store)) == {i.id for i in items[30:]}

    # --- the stateful model ------------------------------------------------------------------------

    #: How hard the stateful check works; raise it for a soak, lower it for a very slow store.
    stateful_examples: ClassVar[int] = 12
    stateful_steps: ClassVar[int] = 20

    def test_stateful_model_agrees_with_the_reference(self, store: Any) -> None:
        from hypothesis import HealthCheck, settings
        from hypothesis.stateful import run_state_machine_as_test

        from memsys.testing.stateful import store_machine

        store.close()  # the machine opens its own stores, one folder per example
        run_state_machine_as_test(store_machine(self.create_store), settings=settings(
            max_examples=self.stateful_examples, stateful_step_count=self.stateful_steps, deadline=None,
            derandomize=True, database=None, suppress_health_check=list(HealthCheck)))

    # --- transactions and snapshots --------------------------------------------------------------

    def test_transaction_commit_applies_everything_and_isolates_until_then(self, store: Any) -> None:
        self.require(store, Capability.TRANSACTIONS)
        store.store(sample_item(1))
        tx = store.begin_transaction()
        store.store(sample_item(2))
        store.delete("item-00001")
        seen_by_other: dict[str, Any] = {}
        other = threading.Thread(target=lambda: seen_by_other.update(
            new=store.retrieve("item-00002"), old=store.retrieve("item-00001")))
        other.start()
        other.join(timeout=30)
        assert seen_by_other == {"new": None, "old": sample_item(1)}, "another thread saw uncommitted writes"
        assert store.retrieve("item-00002") == sample_item(2), "a transaction must see its own writes"
        assert store.retrieve("item-00001") is None
        assert [i.id for i in store.search({})] == ["item-00002"]
        store.prepare_commit(tx)
        store.commit(tx)
        assert set(dump(store)) == {"item-00002"}

    def test_transaction_rollback_leaves_the_store_as_it_was(self, store: Any) -> None:
        self.require(store, Capability.TRANSACTIONS)
        store.store(sample_item(1))
        before = dump(store)
        tx = store.begin_transaction()
        store.store(sample_item(2))
        store.store(sample_item(1, content="changed"))
        store.delete("item-00001")
        store.rollback(tx)
        assert dump(store) == before

    def test_transaction_prepare_rejects_bad_writes_and_changes_nothing(self, store: Any) -> None:
        self.require(store, Capability.TRANSACTIONS)
        store.store(sample_item(1))
        before = dump(store)
        tx = store.begin_transaction()
        bad = sample_item(2)
        store.store(sample_item(3))
        store.store(bad)
        if _try_set(bad.metadata, "late", float("inf")):  # a mutable item turned bad after store()
            with pytest.raises(InvalidInputError):
                store.prepare_commit(tx)
        else:  # an immutable item stayed valid: prepare succeeds, and the rollback still undoes all
            store.prepare_commit(tx)
        store.rollback(tx)
        assert dump(store) == before

    def test_nested_transaction_on_one_thread_is_rejected(self, store: Any) -> None:
        self.require(store, Capability.TRANSACTIONS)
        tx = store.begin_transaction()
        with pytest.raises(TransactionStateError):
            store.begin_transaction()
        store.rollback(tx)

    def test_snapshot_and_restore(self, store: Any) -> None:
        self.require(store, Capability.SNAPSHOT)
        for i in range(10):
            store.store(sample_item(i))
        snapshot = store.snapshot()
        before = dump(store)
        store.store(sample_item(50))
        store.store(sample_item(1, content="changed"))
        store.delete("item-00002")
        store.restore(snapshot)
        assert dump(store) == before


class VectorStoreContract(MemoryStoreContract):
    """What every VectorStore must do, on top of the MemoryStore contract."""

    _contract = True

    def _vector(self, store: Any, i: int, direction: int | None = None, **kwargs: Any) -> MemoryVector:
        import numpy as np

        rng = np.random.default_rng(i)
        embedding = rng.normal(size=store.dimension).astype("float32")
        if direction is not None:
            embedding[:] = 0.01 * embedding
            embedding[direction % store.dimension] += 1.0
        return MemoryVector(id=f"vec-{i:05d}", content=f"vector {i}", embedding=embedding.tolist(),
                            metadata={"i": i, "even": i % 2 == 0}, created_at=EPOCH + timedelta(seconds=i), **kwargs)

    def test_vector_round_trip(self, store: Any) -> None:
        self.require(store, Capability.VECTOR_SEARCH)
        vector = self._vector(store, 1)
        assert store.store_vector(vector) == vector.id
        got = store.retrieve_vector(vector.id)
        assert got is not None and got.embedding == vector.embedding and got.content == vector.content
        assert got.metadata == vector.metadata and got.created_at == vector.created_at
        assert store.retrieve(vector.id).content == vector.content

    def test_store_embeds_content_with_the_store_embedder(self, store: Any) -> None:
        self.require(store, Capability.VECTOR_SEARCH)
        item = sample_item(4)
        store.store(item)
        expected = tuple(store.embed_texts([item.content])[0].tolist())
        assert store.retrieve_vector(item.id).embedding == expected
        hits = store.similarity_search(list(expected), top_k=1)
        assert [h.id for h in hits] == [item.id]

    def test_wrong_dimension_is_a_typed_error_and_changes_nothing(self, store: Any) -> None:
        self.require(store, Capability.VECTOR_SEARCH)
        store.store_vector(self._vector(store, 1))
        before = dump(store)
        wrong = MemoryVector(id="wrong", content="x", embedding=[0.5] * (store.dimension + 1))
        with pytest.raises(VectorDimensionError):
            store.store_vector(wrong)
        with pytest.raises(VectorDimensionError):
            store.similarity_search([0.5] * (store.dimension - 1), top_k=3)
        with pytest.raises(InvalidInputError):
            store.similarity_search([float("nan")] * store.dimension, top_k=3)
        assert dump(store) == before

    def test_similarity_search_returns_exactly_top_k_live_items(self, store: Any) -> None:
        self.require(store, Capability.VECTOR_SEARCH)
        vectors = [self._vector(store, i) for i in range(60)]
        for v in vectors:
            store.store_vector(v)
        deleted = {v.id for v in vectors[::3]}
        for vector_id in deleted:
            assert store.delete_vector(vector_id) is True
        live = 60 - len(deleted)
        for k in (1, 5, 10, live, live + 5):
            hits = store.similarity_search_with_scores(list(vectors[1].embedding), top_k=k)
            ids = [v.id for v, _ in hits]
            assert len(ids) == min(k, live), f"top_k={k} returned {len(ids)} items with {live} live"
            assert not deleted & set(ids), "similarity search returned deleted items"
            assert len(set(ids)) == len(ids), "similarity search returned an id twice"
            scores = [s for _, s in hits]
            assert scores == sorted(scores, reverse=True)
        assert store.similarity_search(list(vectors[1].embedding), top_k=0) == []

    def test_similarity_search_agrees_with_exact_search(self, store: Any) -> None:
        self.require(store, Capability.VECTOR_SEARCH)
        import numpy as np

        vectors = [self._vector(store, i, direction=i % 20) for i in range(200)]
        for v in vectors:
            store.store_vector(v)
        matrix = np.array([v.embedding for v in vectors], dtype="float32")
        if store.metric == "cosine":
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        recalls = []
        for q in range(0, 20, 2):
            query = np.zeros(store.dimension, dtype="float32")
            query[q % store.dimension] = 1.0  # any dimension, down to 1
            exact = {vectors[j].id for j in np.argsort(-(matrix @ query), kind="stable")[:10]}
            got = {v.id for v in store.similarity_search(query.tolist(), top_k=10)}
            recalls.append(len(exact & got) / 10)
        floor = 1.0 if getattr(store, "exact_search", True) else 0.9
        assert min(recalls) >= floor, f"recall@10 against exact search was {min(recalls):.2f} (floor {floor})"

    def test_similar_items_agree_with_similarity_search(self, store: Any) -> None:
        self.require(store, Capability.VECTOR_SEARCH)
        for i in range(25):
            store.store_vector(self._vector(store, i))
        query = list(self._vector(store, 3).embedding)
        with_vectors = store.similarity_search_with_scores(query, top_k=7)
        items = store.similar_items(query, top_k=7)
        assert [(v.id, round(s, 5)) for v, s in with_vectors] == [(h.item.id, round(h.score, 5)) for h in items]
        assert items[0].item == store.retrieve("vec-00003")

    def test_similarity_search_filters_by_query(self, store: Any) -> None:
        self.require(store, Capability.VECTOR_SEARCH)
        vectors = [self._vector(store, i) for i in range(30)]
        for v in vectors:
            store.store_vector(v)
        hits = store.similarity_search(list(vectors[0].embedding), top_k=50, query={"metadata": {"even": True}})
        assert sorted(h.id for h in hits) == sorted(v.id for v in vectors if v.metadata["even"])

    def test_update_replaces_the_vector(self, store: Any) -> None:
        self.require(store, Capability.VECTOR_SEARCH)
        old = self._vector(store, 1, direction=0)
        store.store_vector(old)
        for i in range(2, 12):
            store.store_vector(self._vector(store, i, direction=5))
        new_embedding = [0.0] * store.dimension
        new_embedding[9 % store.dimension] = 1.0
        store.store_vector(MemoryVector(id=old.id, content="moved", embedding=new_embedding))
        hits = store.similarity_search(new_embedding, top_k=3)
        assert hits[0].id == old.id and hits[0].content == "moved"
        assert [h.id for h in store.similarity_search(list(old.embedding), top_k=20)].count(old.id) == 1
        assert len(dump(store)) == 11

    def test_reopen_keeps_vectors(self, store: Any, store_path: str) -> None:
        self.require(store, Capability.VECTOR_SEARCH)
        vectors = [self._vector(store, i) for i in range(20)]
        for v in vectors:
            store.store_vector(v)
        store.delete_vector(vectors[0].id)
        store = self.reopen(store, store_path)
        assert store.retrieve_vector(vectors[0].id) is None
        assert store.retrieve_vector(vectors[5].id).embedding == vectors[5].embedding
        assert store.similarity_search(list(vectors[7].embedding), top_k=1)[0].id == vectors[7].id


class GraphStoreContract(MemoryStoreContract):
    """What every GraphStore must do, on top of the MemoryStore contract."""

    _contract = True

    def _graph(self, store: Any) -> None:
        # a -> b -> c -> d, a -> e (type "other"), d -> a closes a cycle
        for name in "abcdef":
            store.store(sample_item(ord(name), prefix=name))
        for s, t in (("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")):
            store.add_relationship(_gid(s), _gid(t), "next", {"from": s})
        store.add_relationship(_gid("a"), _gid("e"), "other", {"w": 1.5, "nested": {"x": [1]}})

    def test_relationship_round_trip(self, store: Any) -> None:
        self.require(store, Capability.GRAPH)
        self._graph(store)
        rels = store.get_relationships(_gid("a"), "out")
        assert [(r.target_id, r.rel_type, r.properties) for r in rels] == [
            (_gid("b"), "next", {"from": "a"}), (_gid("e"), "other", {"w": 1.5, "nested": {"x": [1]}})]
        assert [r.source_id for r in store.get_relationships(_gid("a"), "in")] == [_gid("d")]
        assert len(store.get_relationships(_gid("a"), "both")) == 3
        assert [r.target_id for r in store.get_relationships(_gid("a"), "out", "other")] == [_gid("e")]

    def test_relationship_needs_both_items(self, store: Any) -> None:
        self.require(store, Capability.GRAPH)
        store.store(sample_item(1))
        before = dump(store)
        with pytest.raises(NotFoundError):
            store.add_relationship("item-00001", "missing", "next")
        assert store.get_relationships("item-00001", "both") == []
        assert dump(store) == before

    def test_adding_an_edge_again_replaces_it(self, store: Any) -> None:
        self.require(store, Capability.GRAPH)
        self._graph(store)
        store.add_relationship(_gid("a"), _gid("b"), "next", {"from": "again"})
        rels = store.get_relationships(_gid("a"), "out", "next")
        assert [(r.target_id, r.properties) for r in rels] == [(_gid("b"), {"from": "again"})]

    def test_remove_relationship(self, store: Any) -> None:
        self.require(store, Capability.GRAPH)
        self._graph(store)
        assert store.remove_relationship(_gid("a"), _gid("b"), "next") is True
        assert store.remove_relationship(_gid("a"), _gid("b"), "next") is False
        assert [r.target_id for r in store.get_relationships(_gid("a"), "out")] == [_gid("e")]

    def test_deleting_an_item_deletes_its_edges(self, store: Any) -> None:
        self.require(store, Capability.GRAPH)
        self._graph(store)
        store.delete(_gid("b"))
        assert [r.target_id for r in store.get_relationships(_gid("a"), "out")] == [_gid("e")]
        assert store.get_relationships(_gid("c"), "in") == []
        store.store(sample_item(ord("b"), prefix="b"))
        assert store.get_relationships(_gid("b"), "both") == [], "a re-created item inherited old edges"

    def test_neighbors_by_depth_and_direction(self, store: Any) -> None:
        self.require(store, Capability.GRAPH)
        self._graph(store)
        assert [i.id for i in store.neighbors(_gid("a"), 1)] == [_gid("b"), _gid("e")]
        assert [i.id for i in store.neighbors(_gid("a"), 2)] == [_gid("b"), _gid("e"), _gid("c")]
        assert [i.id for i in store.neighbors(_gid("a"), 3, rel_type="next")] == [_gid("b"), _gid("c"), _gid("d")]
        assert [i.id for i in store.neighbors(_gid("a"), 1, direction="in")] == [_gid("d")]
        assert [i.id for i in store.neighbors(_gid("f"), 3, direction="both")] == []

    def test_shortest_path(self, store: Any) -> None:
        self.require(store, Capability.GRAPH)
        self._graph(store)
        assert store.shortest_path(_gid("a"), _gid("d")) == [_gid(x) for x in "abcd"]
        assert store.shortest_path(_gid("d"), _gid("b")) == [_gid(x) for x in "dab"]
        assert store.shortest_path(_gid("a"), _gid("f")) is None
        assert store.shortest_path(_gid("e"), _gid("a"), direction="both") == [_gid("e"), _gid("a")]

    def test_reopen_keeps_the_graph(self, store: Any, store_path: str) -> None:
        self.require(store, Capability.GRAPH)
        self._graph(store)
        store.remove_relationship(_gid("c"), _gid("d"), "next")
        store.delete(_gid("e"))
        before = sorted((r.source_id, r.target_id, r.rel_type, str(r.properties))
                        for n in "abcdf" for r in store.get_relationships(_gid(n), "out"))
        store = self.reopen(store, store_path)
        after = sorted((r.source_id, r.target_id, r.rel_type, str(r.properties))
                       for n in "abcdf" for r in store.get_relationships(_gid(n), "out"))
        assert after == before
        assert store.get_relationships(_gid("a"), "out", "other") == []

    def test_graph_writes_in_a_rolled_back_transaction_vanish(self, store: Any) -> None:
        self.require(store, Capability.GRAPH)
        self.require(store, Capability.TRANSACTIONS)
        self._graph(store)
        tx = store.begin_transaction()
        store.add_relationship(_gid("a"), _gid("f"), "new")
        store.delete(_gid("b"))
        assert [i.id for i in store.neighbors(_gid("a"))] == [_gid("e"), _gid("f")]
        store.rollback(tx)
        assert [i.id for i in store.neighbors(_gid("a"))] == [_gid("b"), _gid("e")]


def _try_set(mapping: Any, key: str, value: Any) -> bool:
    """Set ``mapping[key]``; False if the mapping is read-only (an immutable item's metadata)."""
    try:
        mapping[key] = value
    except TypeError:
        return False
    return True


def _same_kind(got: Any, want: Any) -> bool:
    """Same JSON kind all the way down: 1, 1.0 and True differ; a read-only list is still a list."""
    if isinstance(want, (list, dict)):
        if not isinstance(got, type(want)) or len(got) != len(want):
            return False
        pairs = zip(got, want) if isinstance(want, list) else ((got[k], want[k]) for k in want)
        return all(_same_kind(g, w) for g, w in pairs)
    return type(got) is type(want)


class _ChildFactory:
    """Calls ``create_store`` of a contract test class in a child process (pickled by name)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __call__(self, path: str) -> Any:
        return self.cls().create_store(path)


def _disk_full_in_child(factory: Callable[[str], Any], disk: str) -> dict[str, Any]:
    import dataclasses

    from memsys.testing.real_faults import disk_full_trial

    return dataclasses.asdict(disk_full_trial(factory, disk, seed=5))


def _nested_item(item_id: str) -> MemoryItem:
    return MemoryItem(id=item_id, content={"text": "alias", "list": [1, {"deep": ["x", {"y": 2}]}]},
                      memory_type=MemoryType.KNOWLEDGE,
                      metadata={"kind": "alias", "tags": ["a", {"b": [1, 2]}], "nested": {"x": {"y": 1}}},
                      created_at=EPOCH)


def _plain(value: Any) -> Any:
    from memsys.testing.damage import normalise

    return normalise(value)


def _mutate_value(value: Any) -> int:
    """Change every mutable container reachable from ``value``; returns how many changes stuck.
    A container that refuses (TypeError: an immutable value) is left as it is."""
    from collections.abc import MutableMapping, MutableSequence

    changes = 0
    try:
        if isinstance(value, MutableMapping):
            for key in list(value):
                changes += _mutate_value(value[key])
            for key in list(value)[:1]:
                value[key] = "mutated"
                changes += 1
            value["mutated-key"] = ["mutated"]
            changes += 1
        elif isinstance(value, MutableSequence):
            for element in list(value):
                changes += _mutate_value(element)
            if value:
                value[0] = "mutated"
                changes += 1
            value.append("mutated")
            changes += 1
    except TypeError:
        pass
    return changes


def _mutate_item(item: Any) -> int:
    changes = 0
    for field in ("content", "metadata", "embedding"):
        value = getattr(item, field, None)
        if value is not None:
            changes += _mutate_value(value)
    try:
        item.metadata["mutated-top"] = 1  # an immutable item raises TypeError here: accepted
        changes += 1
    except (TypeError, AttributeError):
        pass
    return changes


def _gid(name: str) -> str:
    return f"{name}-{ord(name):05d}"
