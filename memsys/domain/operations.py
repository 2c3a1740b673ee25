"""Write operations: what a transaction buffers, logs, and applies to a store.

Every operation is idempotent when applied again in the same order, which is
what lets recovery redo a committed transaction without knowing how far the
crash let it get.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
from typing import Any, Union

from memsys.domain.errors import InvalidInputError
from memsys.domain.model import MemoryItem, Relationship, check_embedding, check_id, decode_item, thaw


@dataclasses.dataclass(frozen=True, slots=True)
class Put:
    """Create or replace an item; vector stores also take its embedding (computed if None)."""

    item: MemoryItem
    embedding: tuple[float, ...] | None = None

    @property
    def item_id(self) -> str:
        return self.item.id


@dataclasses.dataclass(frozen=True, slots=True)
class Delete:
    """Remove an item (and, in graph stores, its relationships); absent is fine."""

    item_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Relate:
    """Create or replace the edge (source, target, rel_type)."""

    relationship: Relationship

    @property
    def item_id(self) -> str:
        return self.relationship.source_id


@dataclasses.dataclass(frozen=True, slots=True)
class Unrelate:
    """Remove the edge (source, target, rel_type); absent is fine."""

    source_id: str
    target_id: str
    rel_type: str

    @property
    def item_id(self) -> str:
        return self.source_id


Operation = Union[Put, Delete, Relate, Unrelate]


def op_key(op: Operation) -> str:
    """The key two transactions conflict on: the item id, or the edge for relationships."""
    if isinstance(op, Relate):
        s, t, r = op.relationship.key
        return f"edge\x00{s}\x00{t}\x00{r}"
    if isinstance(op, Unrelate):
        return f"edge\x00{op.source_id}\x00{op.target_id}\x00{op.rel_type}"
    return op.item_id


def encode_op(op: Operation) -> dict[str, Any]:
    if isinstance(op, Put):
        record: dict[str, Any] = {"op": "put", "item": op.item.to_dict()}
        if op.embedding is not None:  # float32 bytes: exact, and a quarter of the size of JSON numbers
            record["embedding_b64"] = base64.b64encode(struct.pack(f"<{len(op.embedding)}f", *op.embedding)).decode()
        return record
    if isinstance(op, Delete):
        return {"op": "delete", "id": op.item_id}
    if isinstance(op, Relate):
        r = op.relationship
        return {"op": "relate", "source": r.source_id, "target": r.target_id, "type": r.rel_type,
                "properties": thaw(r.properties)}
    if isinstance(op, Unrelate):
        return {"op": "unrelate", "source": op.source_id, "target": op.target_id, "type": op.rel_type}
    raise InvalidInputError(f"not an operation: {op!r}")


def decode_op(record: dict[str, Any]) -> Operation:
    kind = record.get("op")
    if kind == "put":
        embedding = record.get("embedding")
        if "embedding_b64" in record:
            raw = base64.b64decode(record["embedding_b64"])
            embedding = struct.unpack(f"<{len(raw) // 4}f", raw)
        return Put(decode_item(record["item"]), None if embedding is None else check_embedding(embedding))
    if kind == "delete":
        return Delete(check_id(record["id"]))
    if kind == "relate":
        return Relate(Relationship(record["source"], record["target"], record["type"], record.get("properties")))
    if kind == "unrelate":
        return Unrelate(check_id(record["source"]), check_id(record["target"]), check_id(record["type"]))
    raise InvalidInputError(f"unknown operation record {record!r}")
