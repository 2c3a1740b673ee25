"""The domain model: memory items, their types, vectors and relationships.

Items are immutable values; ``replace`` returns a changed copy. Every
constructor validates, so an item that exists is one every store can keep:
its content and metadata are JSON values (no NaN, no tuples, string keys), its
timestamps are timezone-aware and normalised to UTC, its id is a short string.

Validation happens once, so what was validated must never change afterwards:
content, metadata and relationship properties are copied at construction into
``FrozenDict`` / ``FrozenList`` (read-only subclasses of dict and list, so JSON
encoders, ``isinstance`` and equality with plain values keep working). No store
and no caller can change an item another one holds; ``to_dict`` gives plain,
mutable copies.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
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
#: Most decimal digits of an integer in content or metadata: every store writes JSON text, and
#: Python refuses int<->str conversions past this (its default ``sys.set_int_max_str_digits``).
MAX_INT_DIGITS = getattr(sys.int_info, "default_max_str_digits", 4300) or 4300
_INT_BOUND = 10 ** MAX_INT_DIGITS
#: ``version`` is kept as a signed 64-bit integer by the SQL and graph engines.
MAX_VERSION = 2**63 - 1

_BAD_ID_CHARS = re.compile("[\x00-\x1f\ud800-\udfff]")

JSONValue = Any  # None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]


def shown(value: object, limit: int = 120) -> str:
    """``repr(value)`` for an error message: bounded, and never raising (an int past the
    str-conversion limit cannot be repr()'d)."""
    try:
        text = repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"<an int of about {int(value.bit_length() * 0.30103)} digits>"
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


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
        """Accept a MemoryType, its value ("expand_results"), its name ("EXPAND_RESULTS") or the
        name as ``str()`` of the enum member spells it ("MemoryType.EXPAND_RESULTS", which code
        that stored ``str(item.memory_type)`` wrote)."""
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, str):
            name = raw[len("MemoryType."):] if raw.startswith("MemoryType.") else raw
            member = _TYPES_BY_VALUE.get(raw) or cls.__members__.get(name)
            if member is not None:
                return member
        raise UnknownMemoryTypeError(
            f"unknown memory type {shown(raw)}: expected a MemoryType, one of its values "
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


class FrozenDict(dict):
    """A read-only dict: the form content and metadata take inside an item.

    A subclass of dict, so ``json``/``orjson`` serialise it, ``isinstance(x, dict)`` holds and it
    equals a plain dict with the same entries; every mutator raises TypeError. Building one
    validates and deep-freezes its values (it is a JSON value, nested at most ``MAX_DEPTH``).
    ``dict(x)`` or ``copy()`` give a plain (shallow) dict, ``thaw(x)`` a plain deep copy.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> FrozenDict:
        return freeze_json(dict(*args, **kwargs), "value")  # type: ignore[no-any-return]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # filled by __new__; dict.__init__ would update a frozen value

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this dict is read-only: it belongs to an immutable MemoryItem value; "
                        "change a copy (item.to_dict(), dict(value)) and build a new item, e.g. item.replace(...)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    @classmethod
    def fromkeys(cls, keys: Any, value: Any = None) -> FrozenDict:  # type: ignore[override]
        return cls(dict.fromkeys(keys, value))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))  # pickle would otherwise fill it through __setitem__

    def __copy__(self) -> FrozenDict:
        return self  # immutable: a copy is the value itself, as for tuples

    def __deepcopy__(self, memo: Any) -> FrozenDict:
        return self


class FrozenList(list):
    """A read-only list: the form JSON arrays take inside an item (see FrozenDict)."""

    __slots__ = ()

    def __new__(cls, *args: Any) -> FrozenList:
        return freeze_json(list(*args), "value")  # type: ignore[no-any-return]

    def __init__(self, *args: Any) -> None:
        pass  # filled by __new__; list.__init__ would clear and refill a frozen value

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this list is read-only: it belongs to an immutable MemoryItem value; "
                        "change a copy (item.to_dict(), list(value)) and build a new item, e.g. item.replace(...)")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = reverse = sort = clear = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: Any) -> FrozenList:
        return self


_new_dict = dict.__new__
_new_list = list.__new__
_fill_dict = dict.update
_fill_list = list.extend
_set_dict_item = dict.__setitem__
_set_list_item = list.__setitem__
_isfinite = math.isfinite
_NESTED = frozenset((FrozenDict, FrozenList, dict, list))


class _Rejected(Exception):
    """Internal: the fast walk found something wrong; the slow walk says what and where."""


def freeze_json(value: JSONValue, where: str) -> JSONValue:
    """``value`` validated as a JSON value and copied into read-only containers.

    Raises InvalidMemoryItemError naming the offending path. Strings, numbers and
    subclasses of them come back as the exact built-in type (what a store returns);
    a frozen container is returned as it is (it was validated when it was built).
    """
    try:
        return _freeze(value, 0)
    except _Rejected:
        pass
    _explain_json(value, where, 0)
    raise InvalidMemoryItemError(f"{where} is not a JSON value")  # pragma: no cover - _explain_json raises


def check_json(value: JSONValue, where: str) -> None:
    """Raise InvalidMemoryItemError unless ``value`` survives a JSON round-trip unchanged."""
    freeze_json(value, where)


def _freeze(value: JSONValue, depth: int) -> JSONValue:
    kind = type(value)
    if kind is dict or kind is list:
        return _freeze_container(value, depth)
    if kind is str:
        if not value.isascii() and _has_lone_surrogate(value):
            raise _Rejected
        return value
    if kind is int:
        if not -_INT_BOUND < value < _INT_BOUND:
            raise _Rejected
        return value
    if kind is float:
        if not _isfinite(value):
            raise _Rejected
        return value
    if value is None or kind is bool:
        return value
    if kind is FrozenDict or kind is FrozenList:
        # Built (so validated) with itself as the root: it can stand as a root again. Nested in
        # new data it sits deeper than it was checked for, so it is walked again.
        return value if depth == 0 else _freeze_container(value, depth)
    return _freeze_subclass(value, depth)


def _freeze_container(value: dict | list, depth: int) -> FrozenDict | FrozenList:
    """A frozen copy of a dict or list; scalars are checked inline (the hot path).

    The copy is made in C first; only nested containers are then replaced by frozen ones.
    """
    if depth >= MAX_DEPTH:
        raise _Rejected
    if isinstance(value, dict):
        frozen = _new_dict(FrozenDict)
        _fill_dict(frozen, value)
        for key, element in value.items():
            if type(key) is not str or (not key.isascii() and _has_lone_surrogate(key)):
                raise _Rejected
            kind = type(element)
            if kind is str:
                if not element.isascii() and _has_lone_surrogate(element):
                    raise _Rejected
            elif kind is int:
                if not -_INT_BOUND < element < _INT_BOUND:
                    raise _Rejected
            elif kind is float:
                if not _isfinite(element):
                    raise _Rejected
            elif element is not None and kind is not bool:
                _set_dict_item(frozen, key, _freeze(element, depth + 1))
        return frozen
    frozen = _new_list(FrozenList)
    _fill_list(frozen, value)
    for index, element in enumerate(value):
        kind = type(element)
        if kind is str:
            if not element.isascii() and _has_lone_surrogate(element):
                raise _Rejected
        elif kind is int:
            if not -_INT_BOUND < element < _INT_BOUND:
                raise _Rejected
        elif kind is float:
            if not _isfinite(element):
                raise _Rejected
        elif element is not None and kind is not bool:
            _set_list_item(frozen, index, _freeze(element, depth + 1))
    return frozen


def _freeze_subclass(value: object, depth: int) -> JSONValue:
    """Subclasses of the JSON types (OrderedDict, str enums, numpy floats) become the built-in type."""
    if isinstance(value, str):
        return _freeze(str.__str__(value), depth)
    if isinstance(value, int):  # bool cannot be subclassed, so this is a number (e.g. an IntEnum)
        return _freeze(int.__int__(value), depth)
    if isinstance(value, float):
        return _freeze(float.__float__(value), depth)
    if isinstance(value, dict):
        return _freeze_container(dict(dict.items(value)), depth)
    if isinstance(value, list):
        return _freeze_container(list(list.__iter__(value)), depth)
    raise _Rejected


def _trusted_freeze(value: JSONValue) -> JSONValue:
    """Freeze JSON that an adapter's own decoder produced: no checks, just read-only copies."""
    kind = type(value)
    if kind is dict:
        frozen = _new_dict(FrozenDict)
        _fill_dict(frozen, value)
        for key, element in value.items():
            kind = type(element)
            if kind is dict or kind is list:
                _set_dict_item(frozen, key, _trusted_freeze(element))
        return frozen
    if kind is list:
        frozen = _new_list(FrozenList)
        _fill_list(frozen, value)
        for index, element in enumerate(value):
            kind = type(element)
            if kind is dict or kind is list:
                _set_list_item(frozen, index, _trusted_freeze(element))
        return frozen
    return value


def thaw(value: JSONValue) -> JSONValue:
    """A plain, mutable deep copy of a (frozen) JSON value."""
    kind = type(value)
    if kind is FrozenDict or kind is dict:
        for element in value.values():
            if type(element) in _NESTED:
                return {key: thaw(element) if type(element) in _NESTED else element
                        for key, element in value.items()}
        return dict(value)  # flat: one C-level copy
    if kind is FrozenList or kind is list:
        for element in value:
            if type(element) in _NESTED:
                return [thaw(element) if type(element) in _NESTED else element for element in value]
        return list(value)
    if isinstance(value, dict):  # other mappings and lists: slow path, same result
        return {key: thaw(element) for key, element in value.items()}
    if isinstance(value, list):
        return [thaw(element) for element in value]
    return value


def _explain_json(value: JSONValue, where: str, depth: int) -> None:
    """The slow walk that names the offending path (it raises)."""
    if depth >= MAX_DEPTH and isinstance(value, (dict, list)):
        raise InvalidMemoryItemError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -_INT_BOUND < value < _INT_BOUND:
            raise InvalidMemoryItemError(
                f"{where} is an integer of more than {MAX_INT_DIGITS} decimal digits (about "
                f"{int(value.bit_length() * 0.30103)}); stores keep JSON text, and Python reads and writes "
                f"integers of at most {MAX_INT_DIGITS} digits as text")
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
                raise InvalidMemoryItemError(f"{where} has a non-string key {shown(key)}")
            if _has_lone_surrogate(key):
                raise InvalidMemoryItemError(f"{where} has a key {key!r} with a lone surrogate, which is not valid UTF-8")
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
    try:
        value = value.astimezone(timezone.utc)
    except OverflowError as exc:  # e.g. datetime.min at +05:00 is before year 1 in UTC
        raise InvalidMemoryItemError(
            f"{what} {value.isoformat()} is outside the timestamps every store keeps: "
            f"{MIN_TIMESTAMP.isoformat()} to {MAX_TIMESTAMP.isoformat()} (UTC)") from exc
    if type(value) is not datetime:  # a subclass (pandas.Timestamp): keep the plain value stores return
        value = datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                         value.microsecond, tzinfo=timezone.utc)
    return value


#: The timestamps an item may carry: every UTC datetime Python has. In microseconds since the
#: epoch (how DuckDB, Kuzu and Chroma keep them) they span about +-2.5e17, well inside int64.
MIN_TIMESTAMP = datetime.min.replace(tzinfo=timezone.utc)
MAX_TIMESTAMP = datetime.max.replace(tzinfo=timezone.utc)


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryItem:
    """One memory: an id, JSON content, a type, metadata, timestamps and a version.

    An item is a value: validated once at construction and never changed after.
    ``content`` and ``metadata`` are copied into read-only containers
    (``FrozenDict``, ``FrozenList``), so changing the dict a caller passed in, or
    trying to change an item a store returned, never changes what any store holds;
    ``replace`` builds a changed copy, ``to_dict`` gives plain mutable data.

    What is accepted, so every store can keep it and answer queries on it alike:

    * ``id``: a non-empty str of at most ``MAX_ID_BYTES`` UTF-8 bytes, no control
      characters or lone surrogates (ids also name rows, keys and files).
    * ``content``: any JSON value; ``metadata``: a JSON object. Inside both, keys are
      any str that is valid Unicode: the empty key, spaces, dots, quotes, non-ASCII
      and control characters are all accepted deliberately (JSON allows them and
      DevSynth records use free-form keys); every store must find an item by any
      of them exactly as ``MemoryQuery.matches`` does. Rejected: lone surrogates
      (not UTF-8), non-str keys, NaN and infinity, integers of more than
      ``MAX_INT_DIGITS`` digits, tuples, sets and other non-JSON types, nesting
      deeper than ``MAX_DEPTH``. Subclasses of str, int, float, dict and list are
      stored as the built-in type.
    * ``created_at`` / ``updated_at``: aware datetimes (or ISO strings), normalised
      to UTC; the UTC instant must lie between ``MIN_TIMESTAMP`` and ``MAX_TIMESTAMP``.
    * ``version``: an int with 0 <= version <= ``MAX_VERSION`` (2**63 - 1). It orders
      writes of one id: the manager stamps every committed write with a larger version
      than any before it, so "newer" is decidable everywhere.
    """

    id: str
    content: JSONValue
    memory_type: MemoryType
    metadata: dict[str, JSONValue] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int = 1

    def __post_init__(self) -> None:
        set_id, set_content, set_type, set_metadata, set_created, set_updated, _ = _ITEM_SETTERS
        check_id(self.id)
        set_type(self, MemoryType.from_raw(self.memory_type))
        set_content(self, freeze_json(self.content, "content"))
        set_metadata(self, _frozen_object(self.metadata, "metadata"))
        created = utc_now() if self.created_at is None else as_utc(self.created_at, "created_at")
        set_created(self, created)
        set_updated(self, created if self.updated_at is None else as_utc(self.updated_at, "updated_at"))
        version = self.version
        if type(version) is not int:
            if isinstance(version, bool) or not isinstance(version, int):
                raise InvalidMemoryItemError(f"version must be a non-negative int, got {shown(version)}")
            _ITEM_SETTERS[6](self, int.__int__(version))
        if not 0 <= version <= MAX_VERSION:
            raise InvalidMemoryItemError(
                f"version must be a non-negative int of at most 2**63 - 1 ({MAX_VERSION}); stores keep it "
                f"as a signed 64-bit integer; got {shown(version)}")

    @classmethod
    def new(cls, content: JSONValue, memory_type: MemoryType | str, metadata: dict | None = None) -> MemoryItem:
        """An item with a fresh random id."""
        return cls(id=uuid.uuid4().hex, content=content, memory_type=memory_type, metadata=metadata)

    def replace(self, **changes: Any) -> MemoryItem:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> SerializedMemoryItem:
        """The serialized form, as plain mutable data (a copy: changing it changes no item)."""
        return {
            "id": self.id,
            "content": thaw(self.content),
            "memory_type": self.memory_type.value,
            "metadata": thaw(self.metadata),  # type: ignore[typeddict-item]
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
            raise InvalidMemoryItemError(f"serialized item {shown(data.get('id'))} lacks {', '.join(missing)}")
        unknown = [key for key in data if key not in _SERIALIZED_KEYS]
        if unknown:  # keys of any type: name them by repr, never sort mixed types
            raise InvalidMemoryItemError(f"serialized item {shown(data.get('id'))} has unknown fields "
                                         f"{', '.join(sorted(map(shown, unknown)))}")
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
_EMPTY = FrozenDict()


def _frozen_object(value: object, what: str) -> FrozenDict:
    """A JSON object (None: empty) as a validated FrozenDict."""
    if value is None:
        return _EMPTY
    if type(value) is FrozenDict:
        return value
    if not isinstance(value, Mapping):
        raise InvalidMemoryItemError(f"{what} must be a dict, got {type(value).__name__}")
    return freeze_json(value if type(value) is dict else dict(value), what)  # type: ignore[no-any-return]
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
    """Build an item from fields an adapter wrote itself, skipping the deep checks (the read hot path).

    Content and metadata are still copied into read-only containers (unless they already
    are), so the item never shares a mutable object with the adapter's cache or decoder.
    """
    item = _new_item(MemoryItem)
    member = _TYPES_BY_VALUE.get(memory_type) or MemoryType.from_raw(memory_type)
    set_id, set_content, set_type, set_metadata, set_created, set_updated, set_version = _ITEM_SETTERS
    set_id(item, item_id)
    kind = type(content)
    set_content(item, _trusted_freeze(content) if kind is dict or kind is list else content)
    set_type(item, member)
    if not metadata:
        metadata = _EMPTY
    else:
        metadata = _trusted_freeze(metadata)
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
            or created.tzinfo is not timezone.utc or updated.tzinfo is not timezone.utc
            or not 0 <= version <= MAX_VERSION):
        return MemoryItem.from_dict(data)  # not what to_dict writes: the full checks say what is wrong
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
        object.__setattr__(self, "content", freeze_json(self.content, "content"))
        object.__setattr__(self, "embedding", check_embedding(self.embedding))
        object.__setattr__(self, "metadata", _frozen_object(self.metadata, "metadata"))
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
        object.__setattr__(self, "properties", _frozen_object(self.properties, "properties"))

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source_id, self.target_id, self.rel_type)


class ScoredItem(NamedTuple):
    """A similarity-search hit: the item and its similarity (higher is closer)."""

    item: MemoryItem
    score: float
