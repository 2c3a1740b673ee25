"""Regression tests for three behaviours a review found untested.

1. ``atomic_apply``: an adapter must claim atomicity, never inherit it. A store that does not
   claim it gets before-images and compensation when its apply fails part way (BaseMemoryStore),
   and its batches are judged per id by the crash campaign; a built-in that claims it is trusted
   (no before-image reads).
2. The vector contract at small dimensions (2 and 8): nearest by the configured metric in order,
   wrong dimension refused with VectorDimensionError, nothing changed by the refusal.
3. ``PathLock.release`` when closing the lock file fails: the flock is dropped anyway and the
   failure is logged at WARNING, never silently swallowed with the lock kept.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytest

from memsys.adapters import adapter_class
from memsys.adapters._base import BaseMemoryStore
from memsys.adapters.chroma_store import ChromaDBVectorStore
from memsys.adapters.faiss_store import FAISSVectorStore
from memsys.adapters.foreign_store import as_participant
from memsys.adapters.memory_store import InMemoryStore
from memsys.domain.errors import StoreLockedError, VectorDimensionError
from memsys.domain.model import MemoryItem, MemoryVector
from memsys.domain.operations import Delete, Operation, Put
from memsys.durable import PathLock
from memsys.testing import dump, sample_item
from memsys.testing.crash import BACKENDS, _single_store_loop, open_store
from memsys.testing.history import HistoryFile

# ---------------------------------------------------------------------------------------- 1. atomic_apply


class _TornApply(Exception):
    """The engine failed after applying part of a batch."""


class _DictStore(BaseMemoryStore):
    """A third-party adapter on BaseMemoryStore that applies one op at a time and does not say
    whether that is atomic. ``fail_after`` makes ``_apply`` fail after that many ops."""

    backend = "dict"
    exclusive_path = False

    def __init__(self) -> None:
        super().__init__(None, name="dict")
        self.items: dict[str, MemoryItem] = {}
        self.fail_after: int | None = None

    def _get(self, item_id: str) -> MemoryItem | None:
        return self.items.get(item_id)

    def _scan(self) -> Iterable[MemoryItem]:
        return list(self.items.values())

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        for n, op in enumerate(ops):
            if self.fail_after is not None and n == self.fail_after:
                self.fail_after = None  # one failure; the compensation's own apply succeeds
                raise _TornApply(f"failed after {n} of {len(ops)} operations")
            if isinstance(op, Put):
                self.items[op.item.id] = op.item
            elif isinstance(op, Delete):
                self.items.pop(op.item_id, None)

    def _close(self) -> None:
        pass


class _ProtocolOnlyStore:
    """A MemoryStore by duck typing only: no BaseMemoryStore, no atomic_apply attribute."""

    def __init__(self) -> None:
        self.items: dict[str, MemoryItem] = {}
        self.fail_on_store: str | None = None

    def store(self, item: MemoryItem) -> str:
        if item.id == self.fail_on_store:
            raise OSError(errno.EIO, f"cannot write {item.id}")
        self.items[item.id] = item
        return item.id

    def store_many(self, items: Sequence[MemoryItem]) -> list[str]:
        return [self.store(item) for item in items]  # one at a time: not atomic

    def retrieve(self, item_id: str) -> MemoryItem | None:
        return self.items.get(item_id)

    def search(self, query: Any) -> list[MemoryItem]:
        return list(self.items.values())

    def delete(self, item_id: str) -> bool:
        return self.items.pop(item_id, None) is not None

    def close(self) -> None:
        pass


def _seed(store: Any) -> dict[str, MemoryItem]:
    for i in range(3):
        store.store(sample_item(i))
    return {i.id: i for i in (store.retrieve(f"item-{n:05d}") for n in range(3))}


def test_base_subclass_without_the_flag_is_compensated_when_its_apply_tears() -> None:
    assert "atomic_apply" not in vars(_DictStore)
    store = _DictStore()
    _seed(store)
    before = dump(store)
    # Update one item, delete another, add a new one; the engine fails after the first two.
    batch = [Put(sample_item(0, content="changed")), Delete("item-00001"), Put(sample_item(7))]
    store.fail_after = 2
    with pytest.raises(Exception) as caught:
        store.apply_prepared(store.prepare_ops(batch))
    assert isinstance(caught.value, _TornApply) or isinstance(caught.value.__cause__, _TornApply)
    # Not claimed atomic, so the base took before-images and put the store back as it was.
    assert dump(store) == before, "a torn batch on an adapter that never claimed atomicity was left behind"


def test_protocol_only_store_gets_per_item_undo_in_a_transaction_participant() -> None:
    inner = _ProtocolOnlyStore()
    participant = as_participant("outside", inner)
    assert participant is not inner and participant.atomic_apply is False
    _seed(inner)
    before = {k: v for k, v in inner.items.items()}
    inner.fail_on_store = "item-00009"
    batch = [Put(sample_item(0, content="changed")), Delete("item-00002"), Put(sample_item(9))]
    with pytest.raises(Exception):
        participant.apply_prepared(participant.prepare_ops(batch))
    assert inner.items == before, "the wrapper of a protocol-only store left a torn batch behind"


def _batch_groups(history_path: str, backend: str) -> list[list[str]]:
    with open(history_path, encoding="utf-8") as f:
        events = [json.loads(line) for line in f]
    return [e["writes"][backend] for e in events if e.get("type") == "invoke" and "writes" in e]


@pytest.mark.parametrize("atomic", [False, True], ids=["protocol-only", "claims-atomic"])
def test_crash_campaign_judges_batches_per_id_unless_the_store_claims_atomicity(tmp_path, atomic: bool) -> None:
    store = InMemoryStore() if atomic else _ProtocolOnlyStore()
    assert hasattr(store, "atomic_apply") is atomic
    path = str(tmp_path / "history.jsonl")
    history = HistoryFile(path)
    try:
        _single_store_loop(store, "s", history, random.Random(11), 1, 80)
    finally:
        history.close()
    groups = _batch_groups(path, "s")
    assert groups, "the seeded loop wrote no batches"
    widest = max(len(g) for g in groups)
    if atomic:
        assert widest == 3, "a store that claims atomic apply should have its batches judged whole"
    else:
        # One record per id: a store that may tear a batch must not be held to all-or-nothing.
        assert widest == 1, f"a store without atomic_apply was judged all-or-nothing: {groups}"


# Chroma does not claim atomic apply: it keeps a durable undo of its own (its _apply_locked).
_CLAIMS = {"lmdb": True, "duckdb": True, "kuzu": True, "tinydb": True, "networkx": True, "faiss": True,
           "chroma": False}


def test_every_builtin_declares_atomic_apply_explicitly() -> None:
    assert set(_CLAIMS) == set(BACKENDS)
    assert BaseMemoryStore.atomic_apply is False
    for backend, claimed in _CLAIMS.items():
        cls = adapter_class(backend)
        assert "atomic_apply" in vars(cls), f"{cls.__name__} inherits atomic_apply instead of declaring it"
        assert cls.atomic_apply is claimed, backend
    assert "atomic_apply" in vars(InMemoryStore) and InMemoryStore.atomic_apply is True


@pytest.mark.parametrize("backend", [b for b, claimed in _CLAIMS.items() if claimed])
def test_builtins_that_claim_atomicity_are_trusted_without_before_images(tmp_path, backend: str) -> None:
    store = open_store(backend, str(tmp_path), managed=False)
    try:
        _seed(store)

        def no_before_images(ops: Sequence[Operation]) -> list[Operation]:
            raise AssertionError(f"{backend} claims atomic apply but paid for before-images")

        store._before_images = no_before_images
        store.store_many([sample_item(0, content="changed"), sample_item(5)])
        assert store.retrieve("item-00000").content == "changed" and store.retrieve("item-00005") is not None
    finally:
        store.close()


def test_chroma_which_does_not_claim_atomicity_undoes_a_torn_apply(tmp_path) -> None:
    store = ChromaDBVectorStore(path=tmp_path / "chroma", dimension=8)
    try:
        _seed(store)
        before = dump(store)
        real_apply = store._apply

        def torn(ops: Sequence[Operation], durable: bool) -> None:
            real_apply(list(ops)[:2], durable)
            raise _TornApply("failed after 2 operations")

        store._apply = torn
        batch = [Delete("item-00001"), Put(sample_item(0, content="changed")), Put(sample_item(8))]
        with pytest.raises(Exception):
            store.apply_prepared(store.prepare_ops(batch))
        del store._apply
        assert dump(store) == before
    finally:
        store.close()


# ---------------------------------------------------------------------------------- 2. small dimensions

_VECTOR_STORES = {
    "faiss-flat": lambda path, d, metric: FAISSVectorStore(path=path, dimension=d, metric=metric),
    "faiss-hnsw": lambda path, d, metric: FAISSVectorStore(path=path, dimension=d, metric=metric, index="hnsw"),
    "chroma": lambda path, d, metric: ChromaDBVectorStore(path=path, dimension=d, metric=metric),
    "memory": lambda path, d, metric: InMemoryStore(dimension=d, metric=metric),
}


def _expected_order(embeddings: np.ndarray, query: np.ndarray, metric: str) -> tuple[list[int], np.ndarray]:
    m = embeddings.astype(np.float64)
    q = query.astype(np.float64)
    if metric == "cosine":
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        q = q / np.linalg.norm(q)
    scores = m @ q
    return sorted(range(len(m)), key=lambda j: (-scores[j], j)), scores


@pytest.mark.parametrize("metric", ["cosine", "ip"])
@pytest.mark.parametrize("dimension", [2, 8])
@pytest.mark.parametrize("kind", sorted(_VECTOR_STORES))
def test_vector_contract_at_small_dimensions(tmp_path, kind: str, dimension: int, metric: str) -> None:
    rng = np.random.default_rng(dimension * 10 + len(metric))
    # Norms from 0.2 to 5: cosine and inner product then rank the same vectors differently.
    directions = rng.normal(size=(24, dimension))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    embeddings = (directions * rng.uniform(0.2, 5.0, size=(24, 1))).astype(np.float32)
    vectors = [MemoryVector(id=f"v{j:02d}", content=f"vector {j}", embedding=embeddings[j].tolist())
               for j in range(24)]
    store = _VECTOR_STORES[kind](tmp_path / kind, dimension, metric)
    try:
        assert store.dimension == dimension and store.metric == metric
        store.store_vectors(vectors[:12])
        for v in vectors[12:]:
            store.store_vector(v)
        for q in range(4):
            query = rng.normal(size=dimension).astype(np.float32)
            order, scores = _expected_order(embeddings, query, metric)
            hits = store.similarity_search_with_scores(query.tolist(), top_k=5)
            assert [v.id for v, _ in hits] == [f"v{j:02d}" for j in order[:5]], f"query {q}"
            assert [s for _, s in hits] == pytest.approx([scores[j] for j in order[:5]], rel=1e-4, abs=1e-4)
        assert store.retrieve_vector("v03").embedding == vectors[3].embedding

        before = dump(store)
        probe = rng.normal(size=dimension).astype(np.float32).tolist()
        hits_before = [v.id for v in store.similarity_search(probe, top_k=24)]
        for width in (dimension - 1, dimension + 1, 1 if dimension > 2 else 3):
            with pytest.raises(VectorDimensionError):
                store.store_vector(MemoryVector(id="v03", content="wrong", embedding=[0.5] * width))
            with pytest.raises(VectorDimensionError):
                store.store_vector(MemoryVector(id="new", content="wrong", embedding=[0.5] * width))
            with pytest.raises(VectorDimensionError):  # one bad vector refuses the whole batch
                store.store_vectors([MemoryVector(id="ok", content="fine", embedding=[0.5] * dimension),
                                     MemoryVector(id="bad", content="wrong", embedding=[0.5] * width)])
            with pytest.raises(VectorDimensionError):
                store.similarity_search([0.5] * width, top_k=3)
        assert dump(store) == before
        assert store.retrieve_vector("v03").embedding == vectors[3].embedding
        assert store.retrieve_vector("new") is None and store.retrieve_vector("ok") is None
        assert [v.id for v in store.similarity_search(probe, top_k=24)] == hits_before
    finally:
        store.close()


# -------------------------------------------------------------------------------- 3. PathLock.release


def _reacquirable(path: str) -> bool:
    try:
        lock = PathLock.acquire(path, owner="second opener")
    except StoreLockedError:
        return False
    lock.release()
    return True


def test_release_whose_close_fails_still_drops_the_lock_and_warns(tmp_path, monkeypatch, caplog) -> None:
    """close() reports EIO and leaves the descriptor open (what POSIX allows): the flock must not
    stay held by a descriptor nobody owns any more, and the failure must be logged."""
    path = str(tmp_path / "store")
    lock = PathLock.acquire(path, owner="first opener")
    assert not _reacquirable(path)
    import memsys.durable as durable

    kept: list[int] = []
    real_close = os.close

    def failing_close(fd: int) -> None:
        kept.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(durable.os, "close", failing_close)
    try:
        with caplog.at_level(logging.WARNING, logger="memsys.durable"):
            lock.release()  # must not raise: release runs on error paths it must not hide
    finally:
        monkeypatch.setattr(durable.os, "close", real_close)
    try:
        assert kept, "release never closed its descriptor"
        assert not lock.held
        assert _reacquirable(path), "a failed close left the lock held by a leaked descriptor"
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "memsys.durable"]
        assert warnings and path in warnings[0].getMessage(), "the failed close was swallowed silently"
    finally:
        for fd in kept:
            real_close(fd)


def test_release_of_a_descriptor_closed_behind_its_back_warns(tmp_path, caplog) -> None:
    """A real close error: the descriptor was closed elsewhere (EBADF). Release still completes,
    and says so."""
    path = str(tmp_path / "store")
    lock = PathLock.acquire(path, owner="first opener")
    os.close(lock._fd)
    with caplog.at_level(logging.WARNING, logger="memsys.durable"):
        lock.release()
    assert not lock.held and _reacquirable(path)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "memsys.durable"]
    assert warnings and path in warnings[0].getMessage(), "the failed close was swallowed silently"
