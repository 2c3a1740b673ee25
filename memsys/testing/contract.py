"""The conformance kit: one abstract test class per port, one hook to implement.

    from memsys.testing import MemoryStoreContract

    class TestMyStore(MemoryStoreContract):
        def create_store(self, path):       # the same path again = reopen
            return MyStore(path=path)

Every check is there to FAIL an adapter that loses, corrupts or resurrects
data, duplicates on update, or lets a driver exception escape untyped. A check
that needs a capability the store does not declare is skipped with a reason.
Overriding a check in a subclass fails the guard test unless the override is
marked ``pytest.mark.xfail(reason=...)``: a kit that can be quietly switched
off proves nothing.
"""

from __future__ import annotations

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
            pytest.skip(f"{type(store).__name__} does not declare the {capability.value!r} capability")

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
            assert got is not None and got.content == content and type(got.content) is type(content), \
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
        mutated.metadata["bad"] = float("nan")  # metadata dicts stay mutable after validation
        with pytest.raises(InvalidMemoryItemError):
            store.store(mutated)
        assert dump(store) == before, "a rejected call changed the store"

    def test_batch_with_one_bad_item_stores_none(self, store: Any) -> None:
        store_many = getattr(store, "store_many", None)
        if store_many is None:
            pytest.skip(f"{type(store).__name__} has no store_many")
        store.store(sample_item(0))
        before = dump(store)
        bad = sample_item(2)
        bad.metadata["oops"] = {1: "non-string key"}
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
        bad.metadata["late"] = float("inf")
        with pytest.raises(InvalidInputError):
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
            query[q] = 1.0
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
        new_embedding[9] = 1.0
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


def _gid(name: str) -> str:
    return f"{name}-{ord(name):05d}"
