"""Prometheus metrics of a MemoryManager, through prometheus_client (the ``metrics`` extra).

    manager.register_metrics()                      # prometheus_client's global registry
    manager.register_metrics(my_registry)           # or the caller's own CollectorRegistry
    memsys metrics --port 9464 lmdb:data/lmdb ...   # a standalone exporter over store specs

Values are read from ``manager.stats()`` when scraped, so the commit path pays nothing for
them. Metric names (``prefix`` defaults to "memsys"):

    memsys_store_items{store}                                   gauge
    memsys_store_calls_total{store,operation,outcome}           counter (ok, error, invalid, rejected)
    memsys_store_call_duration_seconds{store,operation}         histogram (50 µs .. 10 s)
    memsys_store_error_ratio{store}                             gauge (errors / calls that reached it)
    memsys_store_quarantined{store}                             gauge (1 while awaiting recovery)
    memsys_breaker_state{store}                                 gauge (0 closed, 1 half-open, 2 open)
    memsys_breaker_opened_total{store}                          counter
    memsys_queue_depth{queue}                                   gauge (reconciliation, sync)
    memsys_coordinator_events_total{event}                      counter (committed, aborted, ...)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from memsys.domain.errors import MissingBackend

if TYPE_CHECKING:
    from memsys.application.manager import MemoryManager

BREAKER_STATES = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2}


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise MissingBackend("prometheus_client", "metrics") from exc
    return prometheus_client


class ManagerCollector:
    """A prometheus_client collector over one manager's ``stats()``."""

    def __init__(self, manager: MemoryManager, *, prefix: str = "memsys",
                 labels: Mapping[str, str] | None = None) -> None:
        _client()
        self.manager = manager
        self.prefix = prefix
        self.labels = dict(labels or {})

    def describe(self) -> list[Any]:
        return []  # nothing is read at registration: the stores are counted only when scraped

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        p, extra = self.prefix, self.labels
        names, values = list(extra), list(extra.values())

        def family(cls: Any, name: str, doc: str, labels: list[str]) -> Any:
            return cls(f"{p}_{name}", doc, labels=[*labels, *names])

        stats = self.manager.stats()
        items = family(GaugeMetricFamily, "store_items", "Items the store holds", ["store"])
        calls = family(CounterMetricFamily, "store_calls", "Calls on the store by operation and outcome",
                       ["store", "operation", "outcome"])
        latency = family(HistogramMetricFamily, "store_call_duration_seconds",
                         "Duration of calls on the store that reached it", ["store", "operation"])
        error_ratio = family(GaugeMetricFamily, "store_error_ratio",
                             "Share of the calls that reached the store which failed", ["store"])
        quarantined = family(GaugeMetricFamily, "store_quarantined",
                             "1 while the store awaits recovery of committed writes", ["store"])
        breaker = family(GaugeMetricFamily, "breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                         ["store"])
        opened = family(CounterMetricFamily, "breaker_opened", "Times the store's circuit opened", ["store"])
        for name, store in stats["stores"].items():
            if store["items"] is not None:
                items.add_metric([name, *values], store["items"])
            error_ratio.add_metric([name, *values], store["error_rate"])
            quarantined.add_metric([name, *values], 1 if store["quarantined"] else 0)
            breaker.add_metric([name, *values], BREAKER_STATES.get(store["breaker"]["state"], -1))
            opened.add_metric([name, *values], store["breaker"]["opened"])
            for operation, op in store["operations"].items():
                for outcome in ("ok", "error", "invalid", "rejected"):
                    calls.add_metric([name, operation, outcome, *values], op[outcome])
                buckets = [("+Inf" if math.isinf(le) else floatToGoString(le), n) for le, n in op["latency"]["buckets"]]
                latency.add_metric([name, operation, *values], buckets, op["latency"]["sum"])
        queues = family(GaugeMetricFamily, "queue_depth", "Writes waiting in a queue", ["queue"])
        for queue, depth in stats["queues"].items():
            if depth is not None:
                queues.add_metric([queue, *values], depth)
        events = family(CounterMetricFamily, "coordinator_events", "Transaction coordinator events", ["event"])
        for event, n in sorted(stats["transactions"].items()):
            events.add_metric([event, *values], n)
        yield from (items, calls, latency, error_ratio, quarantined, breaker, opened, queues, events)


def register(manager: MemoryManager, registry: Any = None, *, prefix: str = "memsys",
             labels: Mapping[str, str] | None = None) -> ManagerCollector:
    client = _client()
    collector = ManagerCollector(manager, prefix=prefix, labels=labels)
    (registry if registry is not None else client.REGISTRY).register(collector)
    return collector


def exposition(manager: MemoryManager, *, prefix: str = "memsys") -> bytes:
    """The metrics in Prometheus' text format, once (for ``memsys metrics --once`` and tests)."""
    client = _client()
    registry = client.CollectorRegistry()
    register(manager, registry, prefix=prefix)
    return client.generate_latest(registry)


def serve(manager: MemoryManager, port: int, *, addr: str = "127.0.0.1", prefix: str = "memsys") -> Any:
    """Serve the manager's metrics at http://ADDR:PORT/metrics on a daemon thread; returns
    prometheus_client's (server, thread)."""
    client = _client()
    registry = client.CollectorRegistry()
    register(manager, registry, prefix=prefix)
    return client.start_http_server(port, addr=addr, registry=registry)


__all__ = ["BREAKER_STATES", "ManagerCollector", "exposition", "register", "serve"]


def run_exporter(specs: list[str], *, port: int = 9464, addr: str = "127.0.0.1", once: bool = False,
                 out: Any = None) -> int:
    """``memsys metrics``: open the stores named by ``specs`` (NAME=SPEC or SPEC; existing stores
    only) in a MemoryManager of their own and print their metrics once, or serve them until
    interrupted. The stores are held open (and, but for LMDB, locked) while it runs."""
    import contextlib
    import logging
    import os
    import signal
    import sys
    import threading

    from memsys.application.manager import MemoryManager
    from memsys.domain.errors import InvalidInputError, MemsysError
    from memsys.specs import parse_named_spec

    _client()
    if not 0 <= port <= 65535:
        raise InvalidInputError(f"--port must be 0..65535, got {port}")
    out = out if out is not None else sys.stdout
    named = {}
    for text in specs:
        name, spec = parse_named_spec(text)
        if name in named:
            raise InvalidInputError(f"two stores are named {name!r}: name them, as NAME=SPEC")
        if spec.path is not None and not os.path.lexists(spec.path):
            raise InvalidInputError(f"no store at {spec.path!r} (from spec {spec.text!r})")  # never create one
        named[name] = spec
    stores: dict[str, Any] = {}
    quiet = logging.getLogger("memsys.manager")
    no_log_warning = _DropNoLogWarning()
    try:
        for name, spec in named.items():
            stores[name] = spec.open()
        quiet.addFilter(no_log_warning)  # it only reads: no transaction log needed, none to warn about
        try:
            manager = MemoryManager(stores)
        finally:
            quiet.removeFilter(no_log_warning)
    except BaseException:
        for store in stores.values():
            with contextlib.suppress(MemsysError):
                store.close()
        raise
    try:
        if once:
            out.write(exposition(manager).decode())
            return 0
        server, _thread = serve(manager, port, addr=addr)
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(f"serving metrics of {', '.join(sorted(stores))} at http://{addr}:{server.server_port}/metrics "
              "(Ctrl-C stops)", file=out, flush=True)
        try:
            while not stop.wait(3600):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.shutdown()
        return 0
    finally:
        manager.close()


class _DropNoLogWarning:
    def filter(self, record: Any) -> bool:
        return "without transaction_log" not in record.getMessage()
