"""Items are values (issue 7, items 14, 15 and 18).

A MemoryItem is validated once and can never change afterwards: what a caller
passed in is copied, what a store returns is read-only, so no store shares a
mutable object with anyone (item 14). Everything the model accepts is storable
by all seven engines, and everything it refuses is refused with a typed error
that names the field (item 18). Calls that race ``close()`` get StoreClosedError.
"""

from __future__ import annotations

import copy
import json
import pickle
import random
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memsys.adapters import BACKENDS
from memsys.adapters.memory_store import InMemoryStore
from memsys.domain.errors import InvalidMemoryItemError, InvalidQueryError, StoreClosedError
from memsys.domain.model import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_TIMESTAMP,
    MAX_VERSION,
    MIN_TIMESTAMP,
    FrozenDict,
    FrozenList,
    MemoryItem,
    MemoryType,
    MemoryVector,
    Relationship,
    decode_item,
    trusted_item,
)
from memsys.domain.operations import Relate, decode_op, encode_op
from memsys.domain.query import MemoryQuery
from memsys.ports import Capability
from memsys.testing.chaos import open_store

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
#: Keys the model accepts on purpose (see the MemoryItem docstring); every store must find them.
ACCEPTED_KEYS = ["", " ", "café", "日本語", "a.b", "$where", 'quote"d', "back\\slash", "tab\there", "nul\x00",
                 "\x1f", "emoji 🙂", "metadata.x"]


def _item(item_id: str = "a", **changes: Any) -> MemoryItem:
    fields: dict[str, Any] = {"id": item_id, "content": {"body": ["x", {"deep": [1]}]},
                              "memory_type": MemoryType.EPISODIC,
                              "metadata": {"tags": ["a"], "nested": {"k": 1}}, "created_at": T0}
    return MemoryItem(**{**fields, **changes})


# ---------------------------------------------------------------------- the value itself (item 14)


def test_changing_what_the_caller_passed_in_does_not_change_the_item() -> None:
    metadata = {"tags": ["a"], "nested": {"k": 1}}
    content = {"body": ["x"]}
    item = MemoryItem(id="a", content=content, memory_type="episodic", metadata=metadata)
    metadata["tags"].append("later")
    metadata["nested"]["k"] = 2
    metadata["new"] = True
    content["body"].clear()
    assert item.metadata == {"tags": ["a"], "nested": {"k": 1}}
    assert item.content == {"body": ["x"]}


MUTATIONS = {
    "setitem": lambda d, l: d.__setitem__("x", 1),
    "delitem": lambda d, l: d.__delitem__("tags"),
    "update": lambda d, l: d.update(x=1),
    "ior": lambda d, l: d.__ior__({"x": 1}),
    "setdefault": lambda d, l: d.setdefault("x", 1),
    "pop": lambda d, l: d.pop("tags"),
    "popitem": lambda d, l: d.popitem(),
    "clear": lambda d, l: d.clear(),
    "fromkeys-init": lambda d, l: d.__init__({"x": 1}) or d.__setitem__("x", 1),
    "append": lambda d, l: l.append(1),
    "extend": lambda d, l: l.extend([1]),
    "insert": lambda d, l: l.insert(0, 1),
    "list-setitem": lambda d, l: l.__setitem__(0, 1),
    "list-slice": lambda d, l: l.__setitem__(slice(0, 1), [1, 2]),
    "list-delitem": lambda d, l: l.__delitem__(0),
    "iadd": lambda d, l: l.__iadd__([1]),
    "imul": lambda d, l: l.__imul__(2),
    "list-pop": lambda d, l: l.pop(),
    "remove": lambda d, l: l.remove("a"),
    "reverse": lambda d, l: l.reverse(),
    "sort": lambda d, l: l.sort(),
    "list-clear": lambda d, l: l.clear(),
    "list-init": lambda d, l: l.__init__([9]) or l.append(9),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_every_mutator_of_an_items_containers_raises_at_every_depth(mutation: str) -> None:
    item = _item(metadata={"tags": ["a", "b"], "nested": {"tags": ["a", "b"], "k": {"tags": ["a"]}}})
    before = item.to_dict()
    for d, l in ((item.metadata, item.metadata["tags"]), (item.metadata["nested"], item.metadata["nested"]["tags"]),
                 (item.content["body"][1], item.content["body"])):
        with pytest.raises(TypeError, match="read-only"):
            MUTATIONS[mutation](d, l)
    assert item.to_dict() == before


def test_attributes_cannot_be_reassigned() -> None:
    item = _item()
    for name in ("id", "content", "metadata", "memory_type", "created_at", "updated_at", "version"):
        with pytest.raises(AttributeError):
            setattr(item, name, None)
    with pytest.raises(AttributeError):
        item.metadata.extra = 1  # type: ignore[attr-defined]


def test_frozen_values_still_behave_as_plain_json_everywhere() -> None:
    item = _item(metadata={"tags": ["a"], "nested": {"k": 1.5, "n": None, "b": True}})
    plain = {"tags": ["a"], "nested": {"k": 1.5, "n": None, "b": True}}
    assert isinstance(item.metadata, dict) and isinstance(item.metadata["tags"], list)
    assert item.metadata == plain and plain == item.metadata and item.content["body"] == ["x", {"deep": [1]}]
    assert json.dumps(item.metadata, sort_keys=True) == json.dumps(plain, sort_keys=True)
    assert orjson.dumps(item.metadata) == orjson.dumps(plain)
    assert json.loads(json.dumps(item.content)) == item.content
    for clone in (pickle.loads(pickle.dumps(item)), copy.deepcopy(item), copy.copy(item)):
        assert clone == item and type(clone.metadata["nested"]) is FrozenDict
        with pytest.raises(TypeError):
            clone.metadata["tags"].append("x")
    # Derived values are plain and the caller's to change: the item stays as it was.
    merged = item.metadata | {"extra": 1}
    merged["extra"] = 2
    shallow = item.metadata.copy()
    shallow["x"] = 1
    longer = item.metadata["tags"] + ["b"]
    longer.append("c")
    assert type(merged) is dict and type(shallow) is dict and type(longer) is list
    assert item.metadata == plain


def test_to_dict_gives_plain_mutable_copies_and_from_dict_takes_plain_data() -> None:
    item = _item()
    data = item.to_dict()
    assert type(data["metadata"]) is dict and type(data["metadata"]["nested"]) is dict
    assert type(data["content"]["body"]) is list and type(data["content"]["body"][1]) is dict
    data["metadata"]["tags"].append("changed")
    data["content"]["body"][1]["deep"].append(2)
    assert item == _item()
    rebuilt = MemoryItem.from_dict(json.loads(json.dumps(item.to_dict())))
    assert rebuilt == item and type(rebuilt.content["body"]) is FrozenList


def test_items_rebuilt_from_stored_records_share_nothing_with_the_record() -> None:
    """Adapters rebuild items with trusted_item/decode_item from records they may cache."""
    record = _item().to_dict()
    decoded = decode_item(record)
    trusted = trusted_item("t", record["content"], "episodic", record["metadata"], T0, T0, 1)
    op = decode_op(json.loads(json.dumps(encode_op(Relate(Relationship("a", "b", "t", {"p": [1]}))))))
    record["metadata"]["tags"].append("cache changed")
    record["content"]["body"].append("cache changed")
    for item in (decoded, trusted):
        assert item.metadata == {"tags": ["a"], "nested": {"k": 1}} and item.content == {"body": ["x", {"deep": [1]}]}
        with pytest.raises(TypeError):
            item.metadata["nested"]["k"] = 3
    with pytest.raises(TypeError):
        op.relationship.properties["p"].append(2)
    vector = MemoryVector(id="v", content={"c": [1]}, embedding=[0.5, 0.5], metadata={"m": [1]})
    for container in (vector.metadata["m"], vector.content["c"], vector.as_item().metadata["m"]):
        with pytest.raises(TypeError):
            container.append(2)


def test_frozen_parts_reused_in_new_data_are_checked_for_depth_again() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    part = MemoryItem(id="a", content=deep, memory_type="code").content  # exactly MAX_DEPTH levels
    assert MemoryItem(id="b", content=part, memory_type="code").content is part  # reused as is
    with pytest.raises(InvalidMemoryItemError, match="nested deeper"):
        MemoryItem(id="c", content={"wrap": part}, memory_type="code")
    with pytest.raises(InvalidMemoryItemError, match="nested deeper"):
        FrozenList([part])


# ---------------------------------------------------------------------- typed errors naming the field (item 18)


def test_integers_past_the_text_conversion_limit_are_refused_naming_the_field() -> None:
    largest = 10**MAX_INT_DIGITS - 1
    assert MemoryItem(id="a", content=[largest, -largest], memory_type="code").content == [largest, -largest]
    for kwargs, where in (({"content": {"n": [1, 10**MAX_INT_DIGITS]}}, r"content\['n'\]\[1\]"),
                          ({"metadata": {"big": -(10**5000)}}, r"metadata\['big'\]"),
                          ({"content": 10**MAX_INT_DIGITS}, "content")):
        with pytest.raises(InvalidMemoryItemError, match=rf"{where} is an integer of more than {MAX_INT_DIGITS}"):
            _item(**kwargs)


@pytest.mark.parametrize("field", ["created_at", "updated_at"])
@pytest.mark.parametrize("value", [
    datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-01:00",
])
def test_timestamps_outside_utc_range_are_refused_naming_field_and_range(field: str, value: object) -> None:
    with pytest.raises(InvalidMemoryItemError, match=rf"{field} .* outside .*0001-01-01.*9999-12-31"):
        _item(**{field: value})
    with pytest.raises(InvalidQueryError, match="outside"):
        MemoryQuery.parse({"created_after": value})


def test_the_extreme_timestamps_themselves_are_accepted() -> None:
    item = _item(created_at=MIN_TIMESTAMP, updated_at=MAX_TIMESTAMP)
    assert MemoryItem.from_dict(json.loads(json.dumps(item.to_dict()))) == item


@pytest.mark.parametrize("version", [MAX_VERSION + 1, 2**64, -1])
def test_version_is_bounded_to_a_signed_64_bit_integer(version: int) -> None:
    with pytest.raises(InvalidMemoryItemError, match=r"version .*2\*\*63 - 1"):
        _item(version=version)
    assert _item(version=MAX_VERSION).version == MAX_VERSION


def test_from_dict_names_unknown_fields_of_any_type() -> None:
    record = {**_item().to_dict(), 1: "x", "zz": 2, (2, 3): 4, None: 5}
    with pytest.raises(InvalidMemoryItemError, match=r"unknown fields .*'zz'.*") as caught:
        MemoryItem.from_dict(record)
    for shown in ("1", "'zz'", "(2, 3)", "None"):
        assert shown in str(caught.value)


@pytest.mark.parametrize("query", [
    {"ids": [{}]}, {"ids": [[1]]}, {"ids": [None]}, {"ids": {"a": 1}}, {"ids": b"ab"},
    {"metadata": {1: "x", "a": "y"}}, {"metadata": {"a": (1, 2)}}, {"metadata.a": float("nan")},
    {"metadata": {"a": {1: 2}}}, {"memory_type": [{}]}, {"created_before": datetime(2024, 1, 1)},
])
def test_malformed_queries_raise_invalid_query_error_never_a_raw_one(query: dict) -> None:
    with pytest.raises(InvalidQueryError):
        MemoryQuery.parse(query)
    store = InMemoryStore()
    with pytest.raises(InvalidQueryError):
        store.search(query)


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    | st.sampled_from([b"x", (1,), {1}, "\ud800", datetime.min.replace(tzinfo=timezone.utc)])
    | st.sampled_from([4301, 5000]).map(lambda digits: 10**digits),  # built late: repr() of it would raise
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=30)
@given(fields=st.dictionaries(st.sampled_from(["id", "content", "memory_type", "metadata", "created_at",
                                               "updated_at", "version", "extra", 7]), JUNK, max_size=8))
def test_any_record_either_loads_or_raises_invalid_memory_item_error(fields: dict) -> None:
    try:
        item = MemoryItem.from_dict(fields)
    except InvalidMemoryItemError:
        return
    assert MemoryItem.from_dict(json.loads(json.dumps(item.to_dict()))) == item


@settings(max_examples=30)
@given(query=st.dictionaries(st.sampled_from(["ids", "metadata", "metadata.k", "memory_type", "content",
                                              "created_after", "limit", "bogus"]), JUNK, max_size=4))
def test_any_query_either_parses_or_raises_invalid_query_error(query: dict) -> None:
    try:
        parsed = MemoryQuery.parse(query)
    except InvalidQueryError:
        return
    parsed.matches(_item())


# ---------------------------------------------------------------------- metadata keys (item 15, the model side)


def test_the_metadata_keys_the_model_accepts_are_the_documented_ones() -> None:
    item = _item(metadata={key: f"v{i}" for i, key in enumerate(ACCEPTED_KEYS)})
    for i, key in enumerate(ACCEPTED_KEYS):
        assert MemoryQuery.parse({"metadata": {key: f"v{i}"}}).matches(item)
        assert not MemoryQuery.parse({"metadata": {key: "other"}}).matches(item)
    for bad in ({"\ud800": 1}, {"ok": {"\udfff": 1}}, {1: "x"}):
        with pytest.raises(InvalidMemoryItemError):
            _item(metadata=bad)
    with pytest.raises(InvalidMemoryItemError, match="lone surrogate"):
        _item(metadata={"\ud800": 1})


def test_metadata_filters_compare_as_json_at_every_depth() -> None:
    item = _item(metadata={"flags": [True, 1], "one": 1.0})
    assert MemoryQuery.parse({"metadata": {"flags": [True, 1], "one": 1}}).matches(item)
    assert not MemoryQuery.parse({"metadata": {"flags": [1, 1]}}).matches(item)
    assert not MemoryQuery.parse({"metadata": {"flags": [True, True]}}).matches(item)


# ---------------------------------------------------------------------- across the seven real stores


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def test_no_store_shares_a_mutable_object_with_its_callers(backend: str, tmp_path: Any) -> None:
    """Item 14 as reported: caller and reader mutations must not reach the store, before or after reopen."""
    metadata = {"tags": ["a"], "nested": {"k": 1}}
    content = {"body": ["x"]}
    item = MemoryItem(id="a1", content=content, memory_type=MemoryType.EPISODIC, metadata=metadata, created_at=T0)
    expected = json.loads(json.dumps(item.to_dict()))
    store = open_store(backend, str(tmp_path))
    try:
        store.store(item)
        metadata["tags"].append("caller")
        metadata["nested"]["k"] = 2
        content["body"].append("caller")
        returned = [store.retrieve("a1"), *store.search({})]
        if Capability.VECTOR_SEARCH in store.capabilities:
            probe = store.embed_texts(["x"])[0]
            returned += [hit for hit in store.similarity_search(probe, top_k=1)]
            returned += [hit.item for hit in store.similar_items(probe, top_k=1)]
            returned.append(store.retrieve_vector("a1"))
        for got in returned:
            for mutate in (lambda: got.metadata["tags"].append("reader"), lambda: got.content["body"].append("reader"),
                           lambda: got.metadata.update(x=1)):
                with pytest.raises(TypeError):
                    mutate()
            got_dict = got.to_dict() if isinstance(got, MemoryItem) else None
            if got_dict is not None:
                got_dict["metadata"]["tags"].append("copy")
        store.store(MemoryItem(id="b2", content="next write", memory_type=MemoryType.EPISODIC, created_at=T0))
        assert store.retrieve("a1").to_dict() == expected
    finally:
        store.close()
    reopened = open_store(backend, str(tmp_path))
    try:
        assert reopened.retrieve("a1").to_dict() == expected
    finally:
        reopened.close()


def test_an_item_at_every_bound_the_model_accepts_is_storable_everywhere(backend: str, tmp_path: Any) -> None:
    largest = 10**MAX_INT_DIGITS - 1
    items = [
        _item("low", content={"n": -largest}, created_at=MIN_TIMESTAMP, updated_at=MIN_TIMESTAMP, version=0),
        _item("high", content=[largest, 2**64, -(2**63) - 1], created_at=MAX_TIMESTAMP, updated_at=MAX_TIMESTAMP,
              version=MAX_VERSION),
        _item("keys", metadata={key: [key] for key in ACCEPTED_KEYS}, content={key: 1 for key in ACCEPTED_KEYS}),
    ]
    expected = {i.id: i.to_dict() for i in items}
    store = open_store(backend, str(tmp_path))
    try:
        for item in items:
            store.store(item)
        assert {i.id: i.to_dict() for i in store.search({})} == expected
    finally:
        store.close()
    reopened = open_store(backend, str(tmp_path))
    try:
        assert {i: reopened.retrieve(i).to_dict() for i in expected} == expected
    finally:
        reopened.close()


def test_every_store_finds_every_metadata_key_the_model_accepts(backend: str, tmp_path: Any) -> None:
    """What MemoryQuery.matches says is the answer, for every accepted key (DuckDB pushes these down)."""
    items = [_item(f"k{i}", metadata={key: "v", "other": i}) for i, key in enumerate(ACCEPTED_KEYS)]
    store = open_store(backend, str(tmp_path))
    try:
        for item in items:
            store.store(item)
        for key in ACCEPTED_KEYS:
            for query in ({"metadata": {key: "v"}}, {"metadata": {key: "v"}, "limit": 1}):
                want = [i.id for i in MemoryQuery.parse(query).select(items)]
                assert [i.id for i in store.search(query)] == want, f"{backend}: metadata key {key!r}"
    finally:
        store.close()


# ---------------------------------------------------------------------- calls racing close() (item 18)


@pytest.mark.parametrize("backend_name", ["lmdb", "duckdb", "tinydb", "kuzu"])
@pytest.mark.parametrize("seed", [0, 1])
def test_calls_racing_close_get_store_closed_error(backend_name: str, seed: int, tmp_path: Any) -> None:
    rng = random.Random(seed)
    store = open_store(backend_name, str(tmp_path))
    for i in range(20):
        store.store(MemoryItem(id=f"i{i}", content=f"c{i}", memory_type=MemoryType.EPISODIC, created_at=T0))
    wrong: list[BaseException] = []
    closed = 0
    counts = threading.Lock()
    start = threading.Barrier(4)

    def hammer(kind: int) -> None:
        nonlocal closed
        start.wait()
        for n in range(1_000_000):
            try:
                if kind == 0:
                    store.retrieve(f"i{n % 20}")
                elif kind == 1:
                    store.search({"limit": 3})
                else:
                    store.store(MemoryItem(id=f"w{n % 50}", content="x", memory_type=MemoryType.EPISODIC))
            except StoreClosedError:
                with counts:
                    closed += 1
                return
            except BaseException as exc:  # noqa: BLE001 - anything else is the bug under test
                wrong.append(exc)
                return

    threads = [threading.Thread(target=hammer, args=(kind,), daemon=True) for kind in range(3)]
    for thread in threads:
        thread.start()
    start.wait()
    threading.Event().wait(rng.uniform(0.02, 0.08))
    store.close()
    for thread in threads:
        thread.join(20)
    assert not any(t.is_alive() for t in threads), "a call hung after close()"
    assert not wrong, f"calls racing close() raised {[repr(e) for e in wrong]}"
    assert closed == 3
