"""NetworkX: items as nodes of a MultiDiGraph, relationships as edges keyed by type.

The graph lives in memory; on disk it is a snapshot plus a journal of
operation batches (memsys.durable.Journal). A write appends and fsyncs
one journal record, so its cost does not grow with the graph; the snapshot is
rewritten atomically when the journal outgrows it. Reopening loads the
snapshot and replays the journal. The folder is locked while open (a second
opener gets StoreLockedError); at open, under that lock, the Journal removes
temporary files a killed process left behind. Items and edge properties are
copied in and out, so no caller's object is ever part of the graph.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from memsys.adapters._base import import_backend
from memsys.adapters._graph import GraphStoreBase, edge
from memsys.adapters._vector import check_bool_arg, check_int_arg, copy_json, detached
from memsys.domain.errors import CorruptStoreError, InvalidInputError, MemsysError, StoreError
from memsys.domain.model import MemoryItem, Relationship, decode_item
from memsys.domain.operations import Delete, Operation, Put, Relate, Unrelate, decode_op, encode_op
from memsys.domain.query import MemoryQuery
from memsys.durable import Journal, os_error
from memsys.ports import Capability

SNAPSHOT = "graph.snapshot"


class GraphMemoryAdapter(GraphStoreBase):
    atomic_apply = True  # one engine transaction / one atomic file write per batch
    backend = "networkx"
    capabilities: ClassVar[frozenset[Capability]] = GraphStoreBase.capabilities | {Capability.PERSISTENCE}

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True, compact_bytes: int = 4 << 20,
                 name: str | None = None) -> None:
        check_bool_arg(sync, "sync")
        check_int_arg(compact_bytes, "compact_bytes", 0, 1 << 40)
        super().__init__(path, name=name)
        if self.path is None:
            raise InvalidInputError("GraphMemoryAdapter needs path= (a folder it keeps its files in)")
        self._nx = import_backend("networkx", "graph")
        self.sync = sync
        self.graph: Any = self._nx.MultiDiGraph()
        self._journal = Journal(self.path, SNAPSHOT, sync=sync, compact_bytes=compact_bytes, store=self.name)
        with self._opening():  # the folder is ours until close(); a failed open lets it go
            self._call("open", self._open)

    def _open(self) -> None:
        if os.path.exists(self.path) and not os.path.isdir(self.path):  # type: ignore[arg-type]
            raise InvalidInputError(f"{self.name}: path {self.path} is a file; GraphMemoryAdapter keeps a folder")
        snapshot, batches = self._journal.open()
        if snapshot is not None:
            header, body = snapshot
            if header.get("format") != "memsys-networkx-1":
                raise CorruptStoreError(f"{self._journal.snapshot_path}: unknown format {header.get('format')!r}",
                                        path=self._journal.snapshot_path)
            state = json.loads(body)
            for record in state["nodes"]:
                self.graph.add_node(record["id"], item=decode_item(record))
            for source, target, rel_type, properties in state["edges"]:
                self.graph.add_edge(source, target, key=rel_type, properties=properties)
        for batch in batches:
            self._apply_to_graph([decode_op(record) for record in batch])

    def _translate(self, exc: Exception, operation: str) -> MemsysError:
        if isinstance(exc, OSError):
            return os_error(exc, f"{self.name}: {operation} on {self.path}", store=self.name)
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            return CorruptStoreError(f"{self.name}: {self.path} holds an unreadable graph: {exc}", path=self.path)
        return StoreError(f"{self.name}: {operation} on {self.path} failed: {type(exc).__name__}: {exc}",
                          store=self.name)

    # --- items (copied in and out by ``detached``: the graph never holds a caller's object)

    def _get(self, item_id: str) -> MemoryItem | None:
        node = self.graph.nodes.get(item_id)
        return None if node is None else detached(node["item"])

    def _scan(self) -> Iterable[MemoryItem]:
        return [detached(data["item"]) for _, data in self.graph.nodes(data=True)]

    def _search(self, query: MemoryQuery) -> list[MemoryItem]:
        return [detached(item) for item in query.select(data["item"] for _, data in self.graph.nodes(data=True))]

    def _count(self) -> int:
        return int(self.graph.number_of_nodes())

    def _apply(self, ops: Sequence[Operation], durable: bool) -> None:
        if not ops:
            return
        self._journal.append([encode_op(op) for op in ops], durable=durable or self.sync)
        self._apply_to_graph(ops)
        self._journal.maybe_compact(self._dump)

    def _apply_to_graph(self, ops: Sequence[Operation]) -> None:
        g = self.graph
        for op in ops:
            if isinstance(op, Put):
                item = detached(op.item)
                if item.id in g:
                    g.nodes[item.id]["item"] = item
                else:
                    g.add_node(item.id, item=item)
            elif isinstance(op, Delete):
                if op.item_id in g:
                    g.remove_node(op.item_id)
            elif isinstance(op, Relate):
                r = op.relationship
                if r.source_id in g and r.target_id in g:
                    g.add_edge(r.source_id, r.target_id, key=r.rel_type, properties=copy_json(r.properties))
            elif isinstance(op, Unrelate):
                if g.has_edge(op.source_id, op.target_id, key=op.rel_type):
                    g.remove_edge(op.source_id, op.target_id, key=op.rel_type)

    def _dump(self) -> tuple[dict[str, Any], bytes]:
        state = {
            "nodes": [data["item"].to_dict() for _, data in self.graph.nodes(data=True)],
            "edges": [[s, t, k, d["properties"]] for s, t, k, d in self.graph.edges(keys=True, data=True)],
        }
        return {"format": "memsys-networkx-1"}, json.dumps(state, ensure_ascii=False).encode()

    def compact(self) -> None:
        """Rewrite the snapshot now and empty the journal."""
        self._call("compact", self._journal.compact, self._dump)

    def _flush(self) -> None:
        self._journal.flush()

    def _close(self) -> None:
        self._journal.close()

    # --- graph

    def _get_edge(self, source_id: str, target_id: str, rel_type: str) -> Relationship | None:
        data = self.graph.get_edge_data(source_id, target_id, key=rel_type)
        return None if data is None else edge(source_id, target_id, rel_type, data["properties"])

    def _edges(self, item_id: str, direction: str, rel_type: str | None) -> list[Relationship]:
        if item_id not in self.graph:
            return []
        edges = []
        if direction in ("out", "both"):
            edges += list(self.graph.out_edges(item_id, keys=True, data=True))
        if direction in ("in", "both"):
            edges += [e for e in self.graph.in_edges(item_id, keys=True, data=True)
                      if direction == "in" or e[0] != e[1]]
        return [edge(s, t, k, d["properties"]) for s, t, k, d in edges if rel_type is None or k == rel_type]

    def _scan_relationships(self) -> Iterable[Relationship]:
        return [edge(s, t, k, d["properties"]) for s, t, k, d in self.graph.edges(keys=True, data=True)]
