"""The domain model: memory items, their types, vectors and relationships.

Items are immutable values; ``replace`` returns a changed copy. Every
constructor validates, so an item that exists is one every store can keep:
its content and metadata are JSON values (no NaN, no tuples, string keys), its
timestamps are timezone-aware and normalised to UTC, its id is a short string.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, NamedTuple, TypedDict

from memsys.domain.errors import InvalidMemoryItemError, UnknownMemoryTypeError

#: Longest id, in UTF-8 bytes (LMDB keys stop at 511; ids also name files and rows).
MAX_ID_BYTES = 256
#: Deepest nesting accepted in content and metadata.
MAX_DEPTH = 64

_BAD_ID_CHARS = re.compile("[\x00-\x1f\ud800-\udfff]")

JSONValue = Any  # None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]


class MemoryType(Enum):
    """Kinds of memory. Names and values are DevSynth's, so its records load."""

    SHORT_TERM = "short_term"
    LONG_TERM = "long_term"
    WORKING = "working"
    WORKING_MEMORY = "working"  # alias of WORKING, kept for legacy records
    EPISODIC = "episodic"
    SOLUTION = "solution"
    DIALECTICAL_REASONING = "dialectical_reasoning"
    TEAM_STATE = "team_state"
    KNOWLEDGE_GRAPH = "knowledge_graph"
    RELATIONSHIP = "relationship"
    CODE_ANALYSIS = "code_analysis"
    CODE = "code"
    CODE_TRANSFORMATION = "code_transformation"
    DOCUMENTATION = "documentation"
    CONTEXT = "context"
    CONVERSATION = "conversation"
    TASK_HISTORY = "task_history"
    KNOWLEDGE = "knowledge"
    ERROR_LOG = "error_log"
    COLLABORATION_TASK = "collaboration_task"
    COLLABORATION_MESSAGE = "collaboration_message"
    COLLABORATION_TEAM = "collaboration_team"
    PEER_REVIEW = "peer_review"
    EXPAND_RESULTS = "expand_results"
    DIFFERENTIATE_RESULTS = "differentiate_results"
    REFINE_RESULTS = "refine_results"
    RETROSPECT_RESULTS = "retrospect_results"
    FINAL_REPORT = "final_report"
    EDRR_CYCLE_RESULTS = "edrr_cycle_results"
    INGEST_EXPAND_RESULTS = "ingest_expand_results"
    INGEST_DIFFERENTIATE_RESULTS = "ingest_differentiate_results"
    INGEST_REFINE_RESULTS = "ingest_refine_results"
    INGEST_RETROSPECT_RESULTS = "ingest_retrospect_results"

    @classmethod
    def from_raw(cls, raw: object) -> MemoryType:
        """Accept a MemoryType, its value ("expand_results") or its name ("EXPAND_RESULTS")."""
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, str):
            member = _TYPES_BY_VALUE.get(raw) or cls.__members__.get(raw)
            if member is not None:
                return member
        raise UnknownMemoryTypeError(
            f"unknown memory type {raw!r}: expected a MemoryType, one of its values "
            f"(e.g. 'short_term') or names (e.g. 'SHORT_TERM')"
        )


_TYPES_BY_VALUE = {m.value: m for m in MemoryType}


class SerializedMemoryItem(TypedDict):
    """The stored form of a MemoryItem: JSON only, memory_type as the enum value."""

    id: str
    content: JSONValue
    memory_type: str
    metadata: dict[str, JSONValue]
    created_at: str
    updated_at: str
    version: int


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid item id, else raise InvalidMemoryItemError."""
    if not isinstance(value, str):
        raise InvalidMemoryItemError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise InvalidMemoryItemError(f"{what} must not be empty")
    if len(value) > MAX_ID_BYTES or len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise InvalidMemoryItemError(f"{what} is longer than {MAX_ID_BYTES} UTF-8 bytes: {value[:40]!r}...")
    if _BAD_ID_CHARS.search(value):
        raise InvalidMemoryItemError(f"{what} {value!r} contains a control character or lone surrogate")
    return value


def check_json(value: JSONValue, where: str) -> None:
    """Raise InvalidMemoryItemError unless ``value`` survives a JSON round-trip unchanged.

    Runs on every write, so the walk is iterative and builds no path strings; only when a
    value is rejected is the walk repeated to name where it sits.
    """
    stack = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        kind = type(current)
        if kind not in _JSON_TYPES:
            kind = next((t for t in _JSON_TYPES if isinstance(current, t)), kind)  # subclasses, e.g. OrderedDict
        if kind is str:
            if not current.isascii() and _has_lone_surrogate(current):
                break
        elif kind is dict:
            if depth >= MAX_DEPTH:
                break
            for key, element in current.items():
                if type(key) is not str:
                    break
                stack.append((element, depth + 1))
            else:
                continue
            break
        elif kind is list:
            if depth >= MAX_DEPTH:
                break
            stack.extend((element, depth + 1) for element in current)
        elif kind is float:
            if not math.isfinite(current):
                break
        elif current is not None and kind is not int and kind is not bool:
            break
    else:
        return
    _explain_json(value, where, 0)


_JSON_TYPES = (str, dict, list, float, int, bool)


def _explain_json(value: JSONValue, where: str, depth: int) -> None:
    """The slow walk that names the offending path (it raises)."""
    if depth > MAX_DEPTH:
        raise InvalidMemoryItemError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, str):
        if _has_lone_surrogate(value):
            raise InvalidMemoryItemError(f"{where} contains a lone surrogate, which is not valid UTF-8")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMemoryItemError(f"{where} is {value!r}; JSON has no NaN or infinity")
        return
    if isinstance(value, list):
        for i, element in enumerate(value):
            _explain_json(element, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, element in value.items():
            if not isinstance(key, str):
                raise InvalidMemoryItemError(f"{where} has a non-string key {key!r}")
            _explain_json(element, f"{where}[{key!r}]", depth + 1)
        return
    hint = " (use a list)" if isinstance(value, tuple) else ""
    raise InvalidMemoryItemError(f"{where} is a {type(value).__name__}, which is not a JSON value{hint}")


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def as_utc(value: object, what: str) -> datetime:
    """A timezone-aware datetime in UTC; ISO strings accepted (naive ones are legacy UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidMemoryItemError(f"{what} {value!r} is not an ISO 8601 timestamp") from exc
        if value.tzinfo is None:  # legacy DevSynth records wrote naive local-free timestamps
            value = value.replace(tzinfo=timezone.utc)
    if not isinstance(value, datetime):
        raise InvalidMemoryItemError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidMemoryItemError(f"{what} {value.isoformat()} has no timezone; pass an aware datetime")
    return value.astimezone(timezone.utc)


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryItem:
    """One memory: an id, JSON content, a type, metadata, timestamps and a version.

    ``version`` orders writes of one id: the manager stamps every committed write
    with a larger version than any before it, so "newer" is decidable everywhere.
    """

    id: str
    content: JSONValue
    memory_type: MemoryType
    metadata: dict[str, JSONValue] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 1

    def __post_init__(self) -> None:
        check_id(self.id)
        object.__setattr__(self, "memory_type", MemoryType.from_raw(self.memory_type))
        check_json(self.content, "content")
        metadata = {} if self.metadata is None else self.metadata
        if not isinstance(metadata, Mapping):
            raise InvalidMemoryItemError(f"metadata must be a dict, got {type(metadata).__name__}")
        metadata = dict(metadata)
        check_json(metadata, "metadata")
        object.__setattr__(self, "metadata", metadata)
        created = utc_now() if self.created_at is None else as_utc(self.created_at, "created_at")
        object.__setattr__(self, "created_at", created)
        updated = created if self.updated_at is None else as_utc(self.updated_at, "updated_at")
        object.__setattr__(self, "updated_at", updated)
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise InvalidMemoryItemError(f"version must be a non-negative int, got {self.version!r}")

    @classmethod
    def new(cls, content: JSONValue, memory_type: MemoryType | str, metadata: dict | None = None) -> MemoryItem:
        """An item with a fresh random id."""
        return cls(id=uuid.uuid4().hex, content=content, memory_type=memory_type, metadata=metadata)

    def replace(self, **changes: Any) -> MemoryItem:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> SerializedMemoryItem:
        return {
            "id": self.id,
            "content": self.content,
            "memory_type": self.memory_type.value,
            "metadata": self.metadata,  # type: ignore[typeddict-item]
            "created_at": self.created_at.isoformat(),  # type: ignore[union-attr]
            "updated_at": self.updated_at.isoformat(),  # type: ignore[union-attr]
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemoryItem:
        """Rebuild an item from ``to_dict`` output or a legacy DevSynth record.

        Legacy records may lack ``updated_at`` and ``version``, store the type's
        name, or carry a naive timestamp (read as UTC). Anything else that is
        wrong raises InvalidMemoryItemError naming the field.
        """
        if not isinstance(data, Mapping):
            raise InvalidMemoryItemError(f"a serialized item must be a dict, got {type(data).__name__}")
        missing = [k for k in ("id", "content", "memory_type") if k not in data]
        if missing:
            raise InvalidMemoryItemError(f"serialized item {data.get('id')!r} lacks {', '.join(missing)}")
        unknown = set(data) - _SERIALIZED_KEYS
        if unknown:
            raise InvalidMemoryItemError(f"serialized item {data.get('id')!r} has unknown fields {sorted(unknown)}")
        return cls(
            id=data["id"],
            content=data["content"],
            memory_type=data["memory_type"],
            metadata=data.get("metadata"),
            created_at=data.get("created_at"),
            updated_at=data.get("updated_at"),
            version=data.get("version", 1),
        )


_SERIALIZED_KEYS = frozenset(SerializedMemoryItem.__annotations__)
_new_item = object.__new__
# The slots' own setters: they bypass the frozen __setattr__ without its per-call cost.
_ITEM_SETTERS = tuple(MemoryItem.__dict__[name].__set__ for name in
                      ("id", "content", "memory_type", "metadata", "created_at", "updated_at", "version"))


_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def to_epoch_us(value: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (engines store timestamps this way)."""
    return (value - _UTC_EPOCH) // _MICROSECOND


def from_epoch_us(value: int) -> datetime:
    return _UTC_EPOCH + timedelta(microseconds=value)


def trusted_item(item_id: str, content: JSONValue, memory_type: str, metadata: dict[str, JSONValue],
                 created_at: datetime, updated_at: datetime, version: int) -> MemoryItem:
    """Build an item from fields an adapter wrote itself, skipping the deep checks (the read hot path)."""
    item = _new_item(MemoryItem)
    member = _TYPES_BY_VALUE.get(memory_type) or MemoryType.from_raw(memory_type)
    set_id, set_content, set_type, set_metadata, set_created, set_updated, set_version = _ITEM_SETTERS
    set_id(item, item_id)
    set_content(item, content)
    set_type(item, member)
    set_metadata(item, metadata)
    set_created(item, created_at)
    set_updated(item, updated_at)
    set_version(item, version)
    return item


def decode_item(data: Mapping[str, Any]) -> MemoryItem:
    """Fast decode of a record an adapter wrote itself from ``to_dict``.

    The content came out of a JSON decoder, so the deep JSON check is skipped;
    the type, timestamps and field types are still checked. Anything that does
    not look current goes through ``from_dict`` (full checks, legacy coercions).
    """
    try:
        memory_type = data["memory_type"]
        created = datetime.fromisoformat(data["created_at"])
        updated = datetime.fromisoformat(data["updated_at"])
        version = data["version"]
        metadata = data["metadata"]
        item_id = data["id"]
        content = data["content"]
    except (KeyError, TypeError, ValueError):
        return MemoryItem.from_dict(data)
    if (memory_type not in _TYPES_BY_VALUE or type(version) is not int or type(metadata) is not dict
            or type(item_id) is not str or len(data) != len(_SERIALIZED_KEYS)
            or created.tzinfo is None or updated.tzinfo is None):
        return MemoryItem.from_dict(data)
    if created.tzinfo is not timezone.utc:
        created = created.astimezone(timezone.utc)
    if updated.tzinfo is not timezone.utc:
        updated = updated.astimezone(timezone.utc)
    return trusted_item(item_id, content, memory_type, metadata, created, updated, version)


def check_embedding(embedding: object, what: str = "embedding") -> tuple[float, ...]:
    """A finite, non-empty vector as a tuple of float32-representable floats.

    Vector stores keep float32; rounding here makes what comes back equal what went in.
    """
    import numpy as np

    try:
        array = np.asarray(embedding, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidMemoryItemError(f"{what} is not a sequence of numbers") from exc
    if array.ndim != 1 or array.size == 0:
        raise InvalidMemoryItemError(f"{what} must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidMemoryItemError(f"{what} contains NaN or infinity")
    return tuple(array.tolist())


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryVector:
    """An embedding with the item it stands for, as the guide's VectorStore keeps it."""

    id: str
    content: JSONValue
    embedding: tuple[float, ...]
    metadata: dict[str, JSONValue] | None = None
    created_at: datetime | None = None
    memory_type: MemoryType = MemoryType.KNOWLEDGE

    def __post_init__(self) -> None:
        check_id(self.id)
        check_json(self.content, "content")
        object.__setattr__(self, "embedding", check_embedding(self.embedding))
        metadata = {} if self.metadata is None else dict(self.metadata)
        check_json(metadata, "metadata")
        object.__setattr__(self, "metadata", metadata)
        created = utc_now() if self.created_at is None else as_utc(self.created_at, "created_at")
        object.__setattr__(self, "created_at", created)
        object.__setattr__(self, "memory_type", MemoryType.from_raw(self.memory_type))

    def as_item(self) -> MemoryItem:
        # Every field was validated when this vector was built; only the item's shape changes.
        return trusted_item(self.id, self.content, self.memory_type.value, self.metadata,  # type: ignore[arg-type]
                            self.created_at, self.created_at, 1)  # type: ignore[arg-type]


_VECTOR_SETTERS = tuple(MemoryVector.__dict__[name].__set__ for name in
                        ("id", "content", "embedding", "metadata", "created_at", "memory_type"))


def trusted_vector(item: MemoryItem, embedding: tuple[float, ...]) -> MemoryVector:
    """A MemoryVector for a stored item and its stored embedding, without re-validating either."""
    vector = _new_item(MemoryVector)
    for setter, value in zip(_VECTOR_SETTERS, (item.id, item.content, embedding, item.metadata,
                                               item.created_at, item.memory_type)):
        setter(vector, value)
    return vector


@dataclasses.dataclass(frozen=True, slots=True)
class Relationship:
    """A typed, directed edge between two items, with JSON properties."""

    source_id: str
    target_id: str
    rel_type: str
    properties: dict[str, JSONValue] | None = None

    def __post_init__(self) -> None:
        check_id(self.source_id, "source_id")
        check_id(self.target_id, "target_id")
        check_id(self.rel_type, "rel_type")
        properties = {} if self.properties is None else dict(self.properties)
        check_json(properties, "properties")
        object.__setattr__(self, "properties", properties)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source_id, self.target_id, self.rel_type)


class ScoredItem(NamedTuple):
    """A similarity-search hit: the item and its similarity (higher is closer)."""

    item: MemoryItem
    score: float
