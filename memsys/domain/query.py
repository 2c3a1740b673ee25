"""The search query every store understands, and its one definition of a match.

A query is a dict (or a string, shorthand for ``{"content": string}``):

    memory_type      a MemoryType, value or name, or a list of them (any of)
    metadata         {key: value}: every key present with an equal value (JSON equality:
                     numbers compare by value, but a bool never equals a number, at any depth)
    metadata.<key>   the same for one key (DevSynth's spelling); any key the item model
                     accepts may be queried ("", non-ASCII, control characters)
    content          case-insensitive substring of the content (JSON text if not a str)
    ids              a list of ids (any of)
    created_after    datetime, inclusive;  created_before  datetime, exclusive
    updated_after    datetime, inclusive;  updated_before  datetime, exclusive
    limit            at most this many results

Results are ordered by (created_at, id). Stores may push parts of a query down
to their engine, but the final word is ``MemoryQuery.matches``, so every store
returns the same items for the same query.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from memsys.domain.errors import InvalidQueryError, MemsysError
from memsys.domain.model import MemoryItem, MemoryType, as_utc, freeze_json, shown, to_epoch_us

_KEYS = ("memory_type", "metadata", "content", "ids", "created_after", "created_before",
         "updated_after", "updated_before", "limit")


def sort_key(item: MemoryItem) -> tuple[datetime, str]:
    return (item.created_at, item.id)  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class MemoryQuery:
    memory_types: frozenset[MemoryType] | None = None
    metadata: tuple[tuple[str, Any], ...] = ()
    content: str | None = None
    ids: frozenset[str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    limit: int | None = None

    @classmethod
    def parse(cls, query: object) -> MemoryQuery:
        if isinstance(query, MemoryQuery):
            return query
        if isinstance(query, str):
            query = {"content": query}
        if query is None:
            query = {}
        if not isinstance(query, Mapping):
            raise InvalidQueryError(f"a query is a dict or a str, got {type(query).__name__}")
        fields: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        for key, value in query.items():
            if not isinstance(key, str):
                raise InvalidQueryError(f"query key {shown(key)} is not a str")
            if key.startswith("metadata.") and len(key) > len("metadata."):
                metadata[key[len("metadata."):]] = _metadata_value(key, value)
            elif key == "metadata":
                if not isinstance(value, Mapping):
                    raise InvalidQueryError("query 'metadata' must be a dict of key: value")
                for name, expected in value.items():
                    if not isinstance(name, str):
                        raise InvalidQueryError(f"query 'metadata' key {shown(name)} is not a str")
                    metadata[name] = _metadata_value(f"metadata[{name!r}]", expected)
            elif key == "memory_type":
                values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
                try:
                    fields["memory_types"] = frozenset(MemoryType.from_raw(v) for v in values)
                except MemsysError as exc:
                    raise InvalidQueryError(f"query 'memory_type': {exc}") from exc
            elif key == "content":
                if not isinstance(value, str):
                    raise InvalidQueryError("query 'content' must be a str")
                fields["content"] = value.casefold()
            elif key == "ids":
                if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
                    raise InvalidQueryError(f"query 'ids' must be a list of str, got {type(value).__name__}")
                ids = list(value)
                for item_id in ids:  # before hashing: an unhashable element must not escape as TypeError
                    if not isinstance(item_id, str):
                        raise InvalidQueryError(f"query 'ids' must be a list of str, got an element {shown(item_id)}")
                fields["ids"] = frozenset(ids)
            elif key in ("created_after", "created_before", "updated_after", "updated_before"):
                try:
                    fields[key] = as_utc(value, f"query {key!r}")
                except MemsysError as exc:
                    raise InvalidQueryError(str(exc)) from exc
            elif key == "limit":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise InvalidQueryError("query 'limit' must be a non-negative int")
                fields["limit"] = value
            else:
                raise InvalidQueryError(f"unknown query key {key!r}; known keys: {', '.join(_KEYS)}")
        fields["metadata"] = tuple(sorted(metadata.items()))
        return cls(**fields)

    def matches(self, item: MemoryItem) -> bool:
        if self.ids is not None and item.id not in self.ids:
            return False
        if self.memory_types is not None and item.memory_type not in self.memory_types:
            return False
        if self.created_after is not None and item.created_at < self.created_after:  # type: ignore[operator]
            return False
        if self.created_before is not None and item.created_at >= self.created_before:  # type: ignore[operator]
            return False
        if self.updated_after is not None and item.updated_at < self.updated_after:  # type: ignore[operator]
            return False
        if self.updated_before is not None and item.updated_at >= self.updated_before:  # type: ignore[operator]
            return False
        metadata = item.metadata or {}
        for key, value in self.metadata:
            if key not in metadata or not _json_equal(metadata[key], value):
                return False
        if self.content is not None and self.content not in content_text(item.content).casefold():
            return False
        return True

    def select(self, items: Iterable[MemoryItem]) -> list[MemoryItem]:
        """Filter, order and limit: the reference semantics of ``search``."""
        hits = sorted((i for i in items if self.matches(i)), key=sort_key)
        return hits if self.limit is None else hits[: self.limit]

    def select_records(self, records: Iterable[Any], decode: Callable[[Any], MemoryItem],
                       key: Callable[[Any], Any] | None = None,
                       item_key: Callable[[MemoryItem], Any] = sort_key) -> list[MemoryItem]:
        """``select`` over serialized records (``to_dict`` form), building items only where needed.

        Building an item costs more than reading its record, so each record is first checked on
        its plain fields (ids, type, timestamps, metadata keys: a necessary condition, never a
        sufficient one), the survivors are ordered by the record's (created_at, id), and only
        then decoded, in order, until ``limit`` items pass ``matches``, which keeps the final
        word. ``decode`` is the adapter's (it raises its typed error on a bad record). A record
        that does not look current (a legacy shape) is decoded at once, as ``select`` would.
        The result is exactly ``select(decode(r) for r in records)`` minus the items it need
        not build. ``key`` replaces the check on plain fields for records of another shape: it
        returns the record's (created_at, id) as its item will have them, or None when unsure;
        ``item_key`` is then what ``key`` is for an item (same order as ``sort_key``, e.g.
        created_at in microseconds).
        """
        record_key = self._record_key if key is None else key
        decoded: list[tuple[tuple[datetime, str], MemoryItem]] = []
        pending: list[tuple[tuple[datetime, str], Any]] = []
        for record in records:
            verdict = record_key(record)
            if verdict is _REJECT:
                continue
            if verdict is None:  # unsure: decide on the item
                item = decode(record)
                if self.matches(item):
                    decoded.append((item_key(item), item))
            else:
                pending.append((verdict, record))
        if not pending:
            decoded.sort(key=_first)
            return [item for _, item in decoded[: self.limit]]
        candidates: list[tuple[tuple[datetime, str], Any]] = decoded + pending
        candidates.sort(key=_first)  # keys are unique: ids are
        hits: list[MemoryItem] = []
        for key, value in candidates:
            if self.limit is not None and len(hits) >= self.limit:
                break
            item = value if isinstance(value, MemoryItem) else decode(value)
            if item_key(item) != key:  # the item model read the record differently: be exact
                return self.select(v if isinstance(v, MemoryItem) else decode(v) for _, v in candidates)
            if self.matches(item):
                hits.append(item)
        return hits

    def could_match(self, memory_type: str, created_at: datetime, updated_at: datetime | None) -> bool:
        """False if no item with this type (its value), created_at and updated_at (None: not
        known) can match: the checks stores can make on fields kept beside a record."""
        if self.memory_types is not None and _TYPE_VALUES.get(memory_type) not in self.memory_types:
            return False
        if self.created_after is not None and created_at < self.created_after:  # type: ignore[operator]
            return False
        if self.created_before is not None and created_at >= self.created_before:  # type: ignore[operator]
            return False
        if updated_at is not None:
            if self.updated_after is not None and updated_at < self.updated_after:  # type: ignore[operator]
                return False
            if self.updated_before is not None and updated_at >= self.updated_before:  # type: ignore[operator]
                return False
        return True

    def field_test(self) -> Callable[[str, int, int], bool]:
        """``could_match`` on (type value, created_at, updated_at in microseconds since the
        epoch), for stores that keep those beside each record: bounds are converted once."""
        values = None if self.memory_types is None else frozenset(t.value for t in self.memory_types)
        low_c, high_c, low_u, high_u = (None if bound is None else to_epoch_us(bound) for bound in
                                        (self.created_after, self.created_before,
                                         self.updated_after, self.updated_before))

        def test(memory_type: str, created_us: int, updated_us: int) -> bool:
            return ((values is None or memory_type in values)
                    and (low_c is None or created_us >= low_c) and (high_c is None or created_us < high_c)
                    and (low_u is None or updated_us >= low_u) and (high_u is None or updated_us < high_u))
        return test

    def _record_key(self, record: Mapping[str, Any]) -> Any:
        """_REJECT if ``record`` cannot match; else its (created_at, id) if it looks current; else None."""
        try:
            item_id, memory_type = record["id"], record["memory_type"]
            created = datetime.fromisoformat(record["created_at"])
            metadata = record["metadata"]
        except (KeyError, TypeError, ValueError):
            return None
        if type(item_id) is not str or created.tzinfo is not timezone.utc or type(metadata) is not dict \
                or memory_type not in _TYPE_VALUES:
            return None
        if self.ids is not None and item_id not in self.ids:
            return _REJECT
        updated = None
        if self.updated_after is not None or self.updated_before is not None:
            try:
                updated = datetime.fromisoformat(record["updated_at"])
            except (KeyError, TypeError, ValueError):
                return None
            if updated.tzinfo is not timezone.utc:
                return None
        if not self.could_match(memory_type, created, updated):
            return _REJECT
        for key, _ in self.metadata:
            if key not in metadata:
                return _REJECT
        return (created, item_id)


_REJECT = object()
_TYPE_VALUES = {m.value: m for m in MemoryType}


def _first(pair: tuple[Any, Any]) -> Any:
    return pair[0]


def content_text(content: Any) -> str:
    """The text a content search looks in."""
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, sort_keys=True)


def _metadata_value(where: str, value: object) -> Any:
    """A query's expected metadata value: a JSON value (so push-down and ``matches`` agree), copied."""
    try:
        return freeze_json(value, f"query {where}")
    except MemsysError as exc:
        raise InvalidQueryError(str(exc)) from exc


def _json_equal(a: Any, b: Any) -> bool:
    # True == 1 in Python but not in JSON; metadata filters compare as JSON does, at any depth.
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b
