"""The fast search paths (header-field filtering, ordered lazy decoding, engine ORDER BY/LIMIT)
return exactly what the reference path returns (``MemoryQuery.select`` over every stored item),
and still raise typed errors on damage."""

from __future__ import annotations

import json
import random
import zlib
from datetime import datetime, timedelta, timezone

import pytest

from memsys.domain.errors import CorruptStoreError
from memsys.domain.model import MemoryItem, MemoryType
from memsys.domain.query import MemoryQuery

EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
TYPES = list(MemoryType)


def random_items(rng: random.Random, n: int) -> list[MemoryItem]:
    items = []
    for i in range(n):
        # few distinct timestamps: ties on created_at are ordered by id, non-ASCII ids included
        created = EPOCH + timedelta(seconds=rng.randrange(20), microseconds=rng.choice((0, 1, 999_999)))
        item_id = rng.choice(("item", "Item", "é", "日本", "z")) + f"-{i:03d}"
        metadata = {k: rng.choice((1, True, "v", [1, 2], {"a": 1})) for k in rng.sample(("a", "b", "c", "ü"), 2)}
        content = rng.choice(("needle here", "hay", {"text": "Needle"}, ["x", 1]))
        items.append(MemoryItem(id=item_id, content=content, memory_type=rng.choice(TYPES), metadata=metadata,
                                created_at=created, updated_at=created + timedelta(seconds=rng.randrange(5))))
    return items


def random_query(rng: random.Random) -> dict:
    query: dict = {}
    if rng.random() < 0.5:
        query["memory_type"] = [t.value for t in rng.sample(TYPES, rng.randint(1, 3))]
    for bound in ("created_after", "created_before", "updated_after", "updated_before"):
        if rng.random() < 0.3:
            query[bound] = EPOCH + timedelta(seconds=rng.randrange(22), microseconds=rng.choice((0, 1)))
    if rng.random() < 0.3:
        query["metadata"] = {rng.choice(("a", "b", "ü", "missing")): rng.choice((1, True, "v", [1, 2]))}
    if rng.random() < 0.2:
        query["content"] = "needle"
    if rng.random() < 0.15:
        query["ids"] = [f"{p}-{i:03d}" for p in ("item", "é") for i in rng.sample(range(120), 10)]
    if rng.random() < 0.7:
        query["limit"] = rng.choice((0, 1, 3, 10, 50))
    return query


def open_store(backend: str, path):
    if backend == "lmdb":
        from memsys.adapters.lmdb_store import LMDBMemoryAdapter
        return LMDBMemoryAdapter(path=path / "lmdb", sync=False)
    if backend == "tinydb":
        from memsys.adapters.tinydb_store import TinyDBMemoryAdapter
        return TinyDBMemoryAdapter(path / "t.json")
    if backend == "kuzu":
        from memsys.adapters.kuzu_store import KuzuMemoryAdapter
        return KuzuMemoryAdapter(path / "kuzu", buffer_pool_size=64 << 20)
    from memsys.adapters.chroma_store import ChromaDBVectorStore
    return ChromaDBVectorStore(path=path / "chroma", dimension=8)


@pytest.mark.parametrize("backend", ["lmdb", "tinydb", "kuzu", "chroma"])
def test_fast_search_returns_what_the_reference_path_returns(backend, tmp_path) -> None:
    rng = random.Random(20261125)
    items = random_items(rng, 120)
    store = open_store(backend, tmp_path)
    try:
        store.store_many(items)
        everything = list(store.iter_items())
        assert len(everything) == len(items)
        for _ in range(60):
            query = random_query(rng)
            expected = MemoryQuery.parse(query).select(everything)
            assert store.search(query) == expected, query
    finally:
        store.close()


def lmdb_with(path, items):
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    store = LMDBMemoryAdapter(path=path)
    store.store_many(items)
    return store


def test_lmdb_mixes_older_value_formats_with_the_current_one_exactly(tmp_path) -> None:
    import struct
    rng = random.Random(7)
    items = random_items(rng, 90)
    store = lmdb_with(tmp_path / "db", items[:30])
    try:
        with store._env.begin(write=True, db=store._db) as txn:  # values as older versions wrote them
            for n, item in enumerate(items[30:]):
                body = json.dumps(item.to_dict(), ensure_ascii=False).encode()
                txn.put(item.id.encode(), body if n % 2 else struct.pack("<BI", 1, zlib.crc32(body)) + body)
        for _ in range(40):
            query = random_query(rng)
            assert store.search(query) == MemoryQuery.parse(query).select(items), query
    finally:
        store.close()


@pytest.mark.parametrize("where", ["json", "header"])
def test_lmdb_search_raises_on_a_damaged_value_it_would_not_return(tmp_path, where) -> None:
    """Every value's checksum is verified by a search, also of values the query rules out: a
    flipped bit in the JSON or in the header fields a search filters on is a CorruptStoreError
    naming the item, never a silently wrong (or missing) result."""
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    items = [MemoryItem(id=f"needle{i:04d}", content=f"c{i}", memory_type=MemoryType.SHORT_TERM if i == 7
                        else MemoryType.LONG_TERM, created_at=EPOCH + timedelta(seconds=i)) for i in range(40)]
    lmdb_with(tmp_path / "db", items).close()
    data = tmp_path / "db" / "data.mdb"
    raw = bytearray(data.read_bytes())
    hits = start = 0
    # The value is [format][crc32][created_at_us][updated_at_us][type length][type][JSON].
    type_length = len(MemoryType.SHORT_TERM.value)
    while (at := raw.find(b'{"id": "needle0007"', start)) >= 0:  # the live value and any stale copy
        if where == "json":
            raw[at + 16] ^= 0x01  # a digit of the id inside the JSON: still valid JSON
        else:
            raw[at - type_length - 5] ^= 0x01  # inside updated_at: still a plausible timestamp
        start, hits = at + 1, hits + 1
    assert hits
    data.write_bytes(bytes(raw))
    store = LMDBMemoryAdapter(path=tmp_path / "db")
    try:
        with pytest.raises(CorruptStoreError) as caught:
            store.search({"memory_type": "LONG_TERM", "limit": 1})  # needle0007 is SHORT_TERM
        assert "needle0007" in str(caught.value)
    finally:
        store.close()


def test_chroma_record_whose_side_fields_disagree_with_its_payload_gets_the_exact_answer(tmp_path) -> None:
    """Chroma orders candidates by the created_at_us kept beside each payload; if that field
    disagrees with the checksummed payload, the result is still the reference one."""
    rng = random.Random(3)
    items = random_items(rng, 40)
    store = open_store("chroma", tmp_path)
    try:
        store.store_many(items)
        victim = min(items, key=lambda i: (i.created_at, i.id))
        record = store._collection.get(ids=[victim.id], include=["metadatas"])["metadatas"][0]
        store._collection.update(ids=[victim.id], metadatas=[{**record, "created_at_us": 2**50}])
        for query in ({"limit": 1}, {"limit": 5}, {}):
            assert store.search(query) == MemoryQuery.parse(query).select(items), query
    finally:
        store.close()
