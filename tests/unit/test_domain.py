from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from memsys import (
    CircuitBreakerOpenError,
    InvalidInputError,
    InvalidMemoryItemError,
    InvalidQueryError,
    MemoryItem,
    MemoryQuery,
    MemoryRetrievalError,
    MemoryStorageError,
    MemoryType,
    MemoryVector,
    MissingBackend,
    NotFoundError,
    PermanentError,
    Relationship,
    StoreUnavailableError,
    TransientError,
    UnknownMemoryTypeError,
)
from memsys.domain.model import decode_item
from memsys.domain.operations import Delete, Put, Relate, Unrelate, decode_op, encode_op, op_key
from memsys.testing.samples import EPOCH, sample_item

LEGACY_NAMES = """SHORT_TERM LONG_TERM WORKING WORKING_MEMORY EPISODIC SOLUTION DIALECTICAL_REASONING TEAM_STATE
KNOWLEDGE_GRAPH RELATIONSHIP CODE_ANALYSIS CODE CODE_TRANSFORMATION DOCUMENTATION CONTEXT CONVERSATION TASK_HISTORY
KNOWLEDGE ERROR_LOG COLLABORATION_TASK COLLABORATION_MESSAGE COLLABORATION_TEAM PEER_REVIEW EXPAND_RESULTS
DIFFERENTIATE_RESULTS REFINE_RESULTS RETROSPECT_RESULTS FINAL_REPORT EDRR_CYCLE_RESULTS INGEST_EXPAND_RESULTS
INGEST_DIFFERENTIATE_RESULTS INGEST_REFINE_RESULTS INGEST_RETROSPECT_RESULTS""".split()


@pytest.mark.parametrize("name", LEGACY_NAMES)
def test_every_legacy_name_loads_by_enum_value_and_name(name: str) -> None:
    member = MemoryType[name]
    assert MemoryType.from_raw(member) is member
    assert MemoryType.from_raw(member.value) is member
    assert MemoryType.from_raw(name) is member
    assert MemoryType.from_raw(f"MemoryType.{name}") is member  # str() of the enum member, as some code stored it


def test_working_memory_is_an_alias_of_working() -> None:
    assert MemoryType.WORKING_MEMORY is MemoryType.WORKING
    assert MemoryType.from_raw("WORKING_MEMORY") is MemoryType.WORKING


@pytest.mark.parametrize("raw", ["nope", "expand-results", 3, None, "", "Short_Term"])
def test_unknown_memory_types_raise_a_typed_error(raw: object) -> None:
    with pytest.raises(UnknownMemoryTypeError, match="unknown memory type"):
        MemoryType.from_raw(raw)
    assert issubclass(UnknownMemoryTypeError, InvalidInputError) and issubclass(UnknownMemoryTypeError, ValueError)


def test_round_trip_through_serialized_form_is_exact() -> None:
    item = sample_item(3)
    data = item.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert MemoryItem.from_dict(json.loads(json.dumps(data))) == item
    assert decode_item(json.loads(json.dumps(data))) == item
    assert data["memory_type"] == item.memory_type.value


def test_legacy_record_with_enum_name_and_naive_timestamp_loads() -> None:
    legacy = {"id": "old", "content": "x", "memory_type": "EXPAND_RESULTS", "metadata": {"a": 1},
              "created_at": "2024-05-01T10:00:00"}
    item = MemoryItem.from_dict(legacy)
    assert item.memory_type is MemoryType.EXPAND_RESULTS
    assert item.created_at == datetime(2024, 5, 1, 10, tzinfo=timezone.utc) == item.updated_at
    assert item.version == 1
    assert decode_item(legacy) == item


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"content": "x", "memory_type": "code"}, "lacks id"),
        ({"id": "a", "content": "x", "memory_type": "code", "extra": 1}, "unknown fields"),
        ({"id": "a", "content": "x", "memory_type": "bogus"}, "unknown memory type"),
        ({"id": "a", "content": "x", "memory_type": "code", "created_at": "yesterday"}, "not an ISO 8601"),
        ({"id": "a", "content": "x", "memory_type": "code", "version": "2"}, "version"),
        ("not a dict", "must be a dict"),
    ],
)
def test_unreadable_records_raise_typed_errors_naming_the_problem(record: object, message: str) -> None:
    with pytest.raises(InvalidMemoryItemError, match=message):
        MemoryItem.from_dict(record)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": ""}, "must not be empty"),
        ({"id": 5}, "must be a str"),
        ({"id": "x" * 257}, "longer than 256"),
        ({"id": "é" * 200}, "longer than 256"),
        ({"id": "tab\there"}, "control character"),
        ({"content": float("nan")}, "NaN"),
        ({"content": (1, 2)}, "use a list"),
        ({"content": {1: "x"}}, "non-string key"),
        ({"content": {"s": {1, 2}}}, "set"),
        ({"content": "\ud800"}, "lone surrogate"),
        ({"metadata": [1]}, "metadata must be a dict"),
        ({"metadata": {"t": datetime.now(timezone.utc)}}, "datetime"),
        ({"created_at": datetime(2024, 1, 1)}, "no timezone"),
        ({"created_at": 12}, "must be a datetime"),
        ({"version": -1}, "non-negative"),
        ({"version": True}, "non-negative"),
        ({"memory_type": "bogus"}, "unknown memory type"),
    ],
)
def test_invalid_items_are_rejected_at_construction(kwargs: dict, message: str) -> None:
    base = {"id": "ok", "content": "c", "memory_type": MemoryType.CODE}
    with pytest.raises(InvalidInputError, match=message):
        MemoryItem(**{**base, **kwargs})


def test_deep_nesting_is_bounded() -> None:
    content: list = []
    for _ in range(70):
        content = [content]
    with pytest.raises(InvalidMemoryItemError, match="nested deeper"):
        MemoryItem(id="deep", content=content, memory_type="code")


def test_timestamps_normalise_to_utc_and_default_sensibly() -> None:
    plus_two = timezone(timedelta(hours=2))
    item = MemoryItem(id="t", content="c", memory_type="CODE", created_at=datetime(2025, 1, 1, 12, tzinfo=plus_two))
    assert item.created_at.tzinfo is timezone.utc and item.created_at.hour == 10
    assert item.updated_at == item.created_at
    fresh = MemoryItem.new("c", MemoryType.CODE)
    assert len(fresh.id) == 32 and fresh.created_at.tzinfo is timezone.utc and fresh.metadata == {}


def test_items_are_immutable_values() -> None:
    item = sample_item(1)
    with pytest.raises(AttributeError):
        item.content = "other"  # type: ignore[misc]
    assert item.replace(content="other").content == "other" and item.content != "other"
    with pytest.raises(TypeError):  # the containers too: validated once, never changed after
        item.metadata["n"] = float("nan")
    relationship = Relationship("a", "b", "knows", {"since": [2020]})
    with pytest.raises(TypeError):
        relationship.properties["since"].append(2021)


def test_vectors_keep_float32_values_exactly() -> None:
    v = MemoryVector(id="v", content="c", embedding=[0.1, 0.2, 1e-3])
    assert v.embedding == tuple(float(x) for x in __import__("numpy").asarray([0.1, 0.2, 1e-3], "float32"))
    assert v.as_item().id == "v"
    for bad in ([], [[1.0]], ["a"], [float("inf")]):
        with pytest.raises(InvalidMemoryItemError):
            MemoryVector(id="v", content="c", embedding=bad)


def test_relationships_validate_their_parts() -> None:
    r = Relationship("a", "b", "knows", {"since": 2020})
    assert r.key == ("a", "b", "knows")
    with pytest.raises(InvalidMemoryItemError):
        Relationship("a", "", "knows")
    with pytest.raises(InvalidMemoryItemError):
        Relationship("a", "b", "knows", {"x": float("nan")})


def test_operations_encode_and_decode() -> None:
    ops = [Put(sample_item(1)), Put(sample_item(2), (0.5, 0.25)), Delete("x"),
           Relate(Relationship("a", "b", "t", {"p": [1]})), Unrelate("a", "b", "t")]
    for op in ops:
        assert decode_op(json.loads(json.dumps(encode_op(op)))) == op
    assert op_key(ops[0]) == "item-00001" and op_key(ops[3]) != op_key(Relate(Relationship("a", "b", "u")))
    assert op_key(ops[3]) == op_key(ops[4])
    with pytest.raises(InvalidInputError):
        decode_op({"op": "explode"})
    with pytest.raises(InvalidInputError):
        encode_op("nope")  # type: ignore[arg-type]


def test_error_tree_separates_transient_from_permanent() -> None:
    assert issubclass(StoreUnavailableError, TransientError) and StoreUnavailableError("x").transient
    assert issubclass(CircuitBreakerOpenError, TransientError)
    assert issubclass(NotFoundError, PermanentError) and not NotFoundError("x").transient
    assert str(NotFoundError("missing thing")) == "missing thing"
    missing = MissingBackend("lmdb", "lmdb")
    assert isinstance(missing, ImportError) and "pip install 'memsys[lmdb]'" in str(missing)
    all_transient = MemoryRetrievalError("all failed", {"a": StoreUnavailableError("down")})
    assert all_transient.transient and set(all_transient.errors) == {"a"}
    mixed = MemoryStorageError("all failed", {"a": StoreUnavailableError("down"), "b": NotFoundError("x")})
    assert not mixed.transient


def test_query_parsing_and_matching() -> None:
    items = [sample_item(i) for i in range(10)]
    assert [i.id for i in MemoryQuery.parse({"metadata.parity": "odd", "limit": 2}).select(items)] == \
        ["item-00001", "item-00003"]
    assert MemoryQuery.parse("CAFÉ").content == "café"
    assert len(MemoryQuery.parse(None).select(items)) == 10
    window = MemoryQuery.parse({"created_after": EPOCH + timedelta(seconds=2),
                                "created_before": (EPOCH + timedelta(seconds=4)).isoformat()})
    assert [i.id for i in window.select(items)] == ["item-00002", "item-00003"]
    assert MemoryQuery.parse({"metadata": {"flag": 1}}).select(items) == []  # True is not 1 in JSON
    assert MemoryQuery.parse(window) is window
    json_content = sample_item(1, content={"Key": "VALUE"})
    assert MemoryQuery.parse({"content": '"key": "value"'}).matches(json_content)


@pytest.mark.parametrize("bad", [{"x": 1}, {1: 2}, {"metadata": 3}, {"memory_type": "zzz"}, {"content": 1},
                                 {"ids": "abc"}, {"ids": [1]}, {"limit": True}, {"created_after": "nope"}, 3.5])
def test_malformed_queries_raise_invalid_query_error(bad: object) -> None:
    with pytest.raises(InvalidQueryError):
        MemoryQuery.parse(bad)
