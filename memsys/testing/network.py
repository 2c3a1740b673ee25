"""Network faults through a real Toxiproxy: a bounded client for its API, and the fault matrix.

The client
----------
``ToxiproxyAPI`` and ``NetworkProxy`` are a thin wrapper over toxiproxy-python
(the ``toxiproxy`` package): its objects build the requests, and the wrapper
adds what it lacks, so a test can never hang on, or silently miss, a fault:

* every HTTP call has a timeout (toxiproxy-python passes none to requests);
* every error status raises a typed error (toxiproxy-python raises only on
  400, 404 and 409, and lets a 500 through as if it had worked): a
  ``ToxiproxyError`` with the method, path, status and the server's message,
  ``ToxiproxyUnavailable`` (transient) when the server cannot be reached;
* toxic types and attribute names are checked before anything is sent:
  Toxiproxy ignores an attribute it does not know, so ``latncy=`` would add a
  toxic that does nothing.

toxiproxy-python keeps the API address in class attributes; the wrapper sets
them for each call under one lock, so several wrappers (several servers) can
live in one process.

The matrix
----------
``network_matrix`` puts a real Toxiproxy between the Chroma client and a real
``chroma run`` server and runs, for every toxic (latency with jitter,
bandwidth, slow_close, timeout, reset_peer, slicer, limit_data) on each
stream (upstream, downstream), for the proxy going down, and for faults that
start in the middle of a cross-store transaction (Chroma + LMDB), one
experiment: a MemoryManager over the proxied Chroma store (primary) and an
LMDB store (secondary and fallback), with small circuit-breaker settings,
takes writes (``store_with_degraded_mode``), reads (``get_with_fallback``) and
cross-store transactions before, during and after the fault. Asserted for
each, and reported as a failed experiment naming what did not hold:

* no store call outlives its deadline (the Chroma client's ``timeout`` plus a
  grace for scheduling), and no operation hangs (each runs in a watched thread);
  the deadline under test (``Dose.deadline``) holds from the fault's start until
  healing is done, a generous one before and after, so a loaded machine does
  not fault the healthy baseline;
* the breaker opens during the fault and is closed again after healing;
* reads during the fault are served, by the other store when Chroma fails;
* writes during the fault degrade (fallback store + reconciliation queue) and
  are reconciled after healing; recovery completes committed transactions;
* slow_close, which only holds back a connection's close, must break nothing:
  no call fails, the breaker stays closed, nothing degrades;
* the history checker (``memsys.testing.history.check_transactions``) finds
  nothing lost, nothing partial and nothing unexpected.

Each experiment works in a collection and through a proxy of its own
(``NAMESPACE-N``) and drops both afterwards, so a run against a staging server
never touches data or proxies it did not create. One seed fixes every id,
payload and operation of a run; the seed and the row name every failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from memsys.domain.errors import InvalidInputError, MemsysError

__all__ = [
    "TOXICS", "STREAMS", "ToxiproxyError", "ToxiproxyUnavailable", "ToxiproxyNotFound", "ToxiproxyConflict",
    "ToxiproxyBadRequest", "ToxiproxyAPI", "NetworkProxy", "check_toxic", "Fault", "Dose", "QUICK", "DEEP",
    "matrix", "toxic_attributes", "network_matrix",
]

#: Toxiproxy v2.12's toxics and their attributes (from its toxics/*.go: the JSON field names).
#: Times are milliseconds except slicer's ``delay`` (microseconds); bandwidth's ``rate`` is KB/s.
TOXICS: dict[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),
    "bandwidth": ("rate",),
    "slow_close": ("delay",),
    "timeout": ("timeout",),
    "reset_peer": ("timeout",),
    "slicer": ("average_size", "size_variation", "delay"),
    "limit_data": ("bytes",),
    "noop": (),
}
STREAMS = ("upstream", "downstream")


# ---------------------------------------------------------------------------------------------- errors


class ToxiproxyError(MemsysError):
    """A Toxiproxy API call failed: an error status, or no answer. Names the call and the cause."""

    def __init__(self, message: str, *, method: str = "", path: str = "", status: int | None = None,
                 body: str = "") -> None:
        super().__init__(message)
        self.method, self.path, self.status, self.body = method, path, status, body


class ToxiproxyUnavailable(ToxiproxyError):
    """The Toxiproxy server did not answer in time, or refused the connection."""

    transient = True


def _library_errors() -> tuple[type[Exception], type[Exception], type[Exception]]:
    # The wrapper's errors are also toxiproxy-python's, so code written against it keeps working.
    from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

    return NotFound, ProxyExists, InvalidToxic


_NotFound, _ProxyExists, _InvalidToxic = _library_errors()


class ToxiproxyNotFound(ToxiproxyError, _NotFound):
    """404: no such proxy or toxic."""


class ToxiproxyConflict(ToxiproxyError, _ProxyExists):
    """409: a proxy or toxic of that name exists."""


class ToxiproxyBadRequest(ToxiproxyError, _InvalidToxic):
    """400 (or refused before sending): a bad toxic type, stream, toxicity or attribute."""


_BY_STATUS: dict[int, type[ToxiproxyError]] = {400: ToxiproxyBadRequest, 404: ToxiproxyNotFound,
                                              409: ToxiproxyConflict}


# ---------------------------------------------------------------------------------------------- the client

_API_LOCK = threading.RLock()  # toxiproxy-python's address is process-wide: one call at a time


class _BoundedRequests:
    """Stands in for the ``requests`` module inside toxiproxy-python during a wrapped call: the same
    calls, with a timeout, and an error status raised as a typed error."""

    def __init__(self, session: Any, timeout: float) -> None:
        self._session = session
        self._timeout = timeout

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        path = urllib.parse.urlsplit(url).path
        kwargs.setdefault("timeout", self._timeout)
        try:
            response = self._session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise ToxiproxyUnavailable(f"toxiproxy {method} {path}: no answer (timeout {self._timeout}s): "
                                       f"{type(exc).__name__}: {exc}", method=method, path=path) from exc
        if response.status_code >= 400:
            body = response.text.strip()[:500]
            error = _BY_STATUS.get(response.status_code, ToxiproxyError)
            if response.status_code >= 500:
                error = ToxiproxyUnavailable
            raise error(f"toxiproxy {method} {path} answered {response.status_code}: {body}", method=method,
                        path=path, status=response.status_code, body=body)
        return response

    def get(self, url: str, params: Any = None, **kwargs: Any) -> Any:
        return self._request("GET", url, params=params, **kwargs)

    def post(self, url: str, data: Any = None, json: Any = None, **kwargs: Any) -> Any:
        return self._request("POST", url, data=data, json=json, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self._request("DELETE", url, **kwargs)


def _split_address(address: str, what: str = "an address") -> tuple[str, int]:
    """(host, port) of "HOST:PORT" or "scheme://HOST:PORT[/...]"; ToxiproxyBadRequest otherwise."""
    text = address.strip() if isinstance(address, str) else ""
    if "://" in text:
        text = urllib.parse.urlsplit(text).netloc
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ToxiproxyBadRequest(f"{what} is HOST:PORT (e.g. 127.0.0.1:8474), got {address!r}")
    return host.strip("[]"), int(port)


class ToxiproxyAPI:
    """A Toxiproxy server's API at ``address`` ("HOST:PORT" or "http://HOST:PORT")."""

    def __init__(self, address: str = "127.0.0.1:8474", *, timeout: float = 5.0) -> None:
        import requests
        import toxiproxy

        if not timeout > 0:
            raise ToxiproxyBadRequest(f"timeout must be > 0 seconds, got {timeout!r}")
        self.host, self.port = _split_address(address, "a Toxiproxy address")
        self.timeout = float(timeout)
        self._server = toxiproxy.Toxiproxy()
        self._session = requests.Session()
        self._session.trust_env = False  # an environment proxy must not sit between us and Toxiproxy
        self._requests = _BoundedRequests(self._session, self.timeout)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @contextlib.contextmanager
    def _bound(self) -> Iterator[None]:
        """toxiproxy-python's calls, aimed at this server, with timeouts and typed errors."""
        from toxiproxy import api

        with _API_LOCK:
            saved = api.requests, api.APIConsumer.host, api.APIConsumer.port
            api.requests = self._requests  # type: ignore[assignment]
            api.APIConsumer.host, api.APIConsumer.port = self.host, self.port
            try:
                yield
            finally:
                api.requests, api.APIConsumer.host, api.APIConsumer.port = saved

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._bound():
            try:
                return fn(*args, **kwargs)
            except ToxiproxyError:
                raise
            except (_NotFound, _ProxyExists, _InvalidToxic) as exc:  # raised by the library itself
                error = {_NotFound: ToxiproxyNotFound, _ProxyExists: ToxiproxyConflict}.get(
                    type(exc), ToxiproxyBadRequest)
                raise error(f"toxiproxy: {exc}") from exc

    def version(self) -> str:
        from toxiproxy.api import APIConsumer

        response = self._run(APIConsumer.get, "/version")
        text = response.text.strip()
        try:  # v2.12 answers JSON ({"version": ...}); older servers a bare string
            return str(json.loads(text).get("version", text))
        except (ValueError, AttributeError):
            return text

    def running(self) -> bool:
        try:
            self.version()
        except ToxiproxyError:
            return False
        return True

    def proxies(self) -> dict[str, NetworkProxy]:
        return {name: NetworkProxy(self, p) for name, p in self._run(self._server.proxies).items()}

    def get_proxy(self, name: str) -> NetworkProxy:
        """The proxy ``name``; ToxiproxyNotFound if there is none."""
        from toxiproxy.api import APIConsumer
        from toxiproxy.proxy import Proxy

        info = self._run(APIConsumer.get, f"/proxies/{urllib.parse.quote(name, safe='')}").json()
        return NetworkProxy(self, Proxy(**info))

    def create_proxy(self, name: str, upstream: str, listen: str | None = None) -> NetworkProxy:
        """A new, enabled proxy to ``upstream``; ``listen`` defaults to a free port that Toxiproxy picks
        on this server's host. ToxiproxyConflict if ``name`` is taken."""
        _split_address(upstream)
        if listen is None:
            listen = f"{'127.0.0.1' if self.host in ('127.0.0.1', 'localhost', '::1') else '0.0.0.0'}:0"
        proxy = self._run(self._server.create, upstream=upstream, name=name, listen=listen, enabled=True)
        return NetworkProxy(self, proxy)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic (on every proxy of the server: staging beware)."""
        self._run(self._server.reset)

    def close(self) -> None:
        self._session.close()


class NetworkProxy:
    """One Toxiproxy proxy: its toxics, and taking it down."""

    def __init__(self, api: ToxiproxyAPI, proxy: Any) -> None:
        self.api = api
        self._proxy = proxy  # toxiproxy.Proxy

    @property
    def name(self) -> str:
        return str(self._proxy.name)

    @property
    def upstream(self) -> str:
        return str(self._proxy.upstream)

    @property
    def listen(self) -> str:
        return str(self._proxy.listen)

    @property
    def enabled(self) -> bool:
        return bool(self._proxy.enabled)

    @property
    def host(self) -> str:
        """Where clients connect: the listen host, or the API's host when it listens on every interface."""
        host = self.listen.rpartition(":")[0].strip("[]")
        return self.api.host if host in ("0.0.0.0", "::", "") else host

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def add_toxic(self, type: str, *, stream: str = "downstream", toxicity: float = 1.0, name: str | None = None,
                  **attributes: Any) -> str:
        """Add a toxic; returns its name. Unknown types and attribute names are refused before sending."""
        check_toxic(type, stream, toxicity, attributes)
        name = name or f"{type}_{stream}"
        self.api._run(self._proxy.add_toxic, type=type, stream=stream, toxicity=toxicity, name=name,
                      attributes=attributes)
        return name

    def remove_toxic(self, name: str) -> None:
        self.api._run(self._proxy.destroy_toxic, name)

    def toxics(self) -> dict[str, dict[str, Any]]:
        """The proxy's toxics by name: type, stream, toxicity and attributes."""
        found = self.api._run(self._proxy.toxics)
        return {name: {"type": t.type, "stream": t.stream, "toxicity": t.toxicity, "attributes": dict(t.attributes)}
                for name, t in found.items()}

    def disable(self) -> None:
        """Stop listening and drop every connection."""
        self.api._run(self._proxy.disable)

    def enable(self) -> None:
        self.api._run(self._proxy.enable)

    @contextlib.contextmanager
    def down(self) -> Iterator[NetworkProxy]:
        self.disable()
        try:
            yield self
        finally:
            self.enable()

    @contextlib.contextmanager
    def toxic(self, type: str, **kwargs: Any) -> Iterator[str]:
        name = self.add_toxic(type, **kwargs)
        try:
            yield name
        finally:
            self.remove_toxic(name)

    def destroy(self) -> None:
        self.api._run(self._proxy.destroy)

    def __repr__(self) -> str:
        return f"NetworkProxy({self.name}: {self.listen} -> {self.upstream}, enabled={self.enabled})"


def check_toxic(type: str, stream: str, toxicity: float, attributes: dict[str, Any]) -> None:
    """ToxiproxyBadRequest for what Toxiproxy would refuse, or (unknown attributes) silently ignore."""
    if type not in TOXICS:
        raise ToxiproxyBadRequest(f"unknown toxic type {type!r}; Toxiproxy has {', '.join(sorted(TOXICS))}")
    if stream not in STREAMS:
        raise ToxiproxyBadRequest(f"stream must be 'upstream' or 'downstream', got {stream!r}")
    if isinstance(toxicity, bool) or not isinstance(toxicity, (int, float)) or not 0.0 <= toxicity <= 1.0:
        raise ToxiproxyBadRequest(f"toxicity must be a number in [0, 1], got {toxicity!r}")
    unknown = sorted(set(attributes) - set(TOXICS[type]))
    if unknown:
        raise ToxiproxyBadRequest(f"toxic {type!r} has no attribute {', '.join(map(repr, unknown))}; it takes "
                                  f"{', '.join(TOXICS[type]) or 'none'} (Toxiproxy would silently ignore it)")
    for key, value in attributes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ToxiproxyBadRequest(f"toxic {type!r}: {key} must be a whole number >= 0, got {value!r}")


# ---------------------------------------------------------------------------------------------- the matrix


@dataclasses.dataclass(frozen=True)
class Fault:
    """One row of the matrix: a toxic on one stream (``toxic=None``: the proxy goes down), and when it
    starts: ``between`` operations, or inside a cross-store transaction: ``after_prepare`` (every store
    prepared, nothing logged), ``in_apply`` (Chroma has read the before-images of its apply and is
    about to write)."""

    toxic: str | None
    stream: str | None = None
    attributes: tuple[tuple[str, int], ...] = ()
    start: str = "between"

    @property
    def name(self) -> str:
        what = "proxy down" if self.toxic is None else f"{self.toxic} {self.stream}"
        return what if self.start == "between" else f"{what}, starting mid-transaction ({self.start})"

    @property
    def breaks_calls(self) -> bool:
        """Whether the fault must make Chroma calls fail. slow_close only holds back the close of a
        connection; an HTTP client that reads by Content-Length and reuses its connections never
        waits for a close, so under slow_close every call must still work: nothing may fail over,
        degrade or open a breaker."""
        return self.toxic != "slow_close"

    @property
    def breaks_small_answers(self) -> bool:
        """Whether calls whose answers are small (a write's acknowledgement) must fail too. A 1 KB/s
        downstream trickle carries those within the deadline and stalls only large answers (a 4 KB
        item read back): reads must fall back, but writes rightly succeed on Chroma, so a breaker
        that the successes keep closed and writes that never degrade are the correct outcome."""
        return self.breaks_calls and not (self.toxic == "bandwidth" and self.stream == "downstream")


START_POINTS = ("between", "after_prepare", "in_apply")


def toxic_attributes(toxic: str, deadline: float) -> dict[str, int]:
    """Attributes that make ``toxic`` break calls against a client whose deadline is ``deadline`` s.

    Each is chosen to fail calls in both directions: latency beyond the deadline (jitter
    included), a trickle, data held, connections cut, reset, sliced slower than the deadline.
    slow_close holds a closing connection for four deadlines (see ``Fault.breaks_calls``).
    """
    ms = max(1, int(deadline * 1000))
    return {
        "latency": {"latency": int(ms * 1.5), "jitter": ms // 4},
        "bandwidth": {"rate": 1},
        "slow_close": {"delay": ms * 4},
        "timeout": {"timeout": 0},
        "reset_peer": {"timeout": 0},
        "slicer": {"average_size": 8, "size_variation": 4, "delay": ms * 100},
        "limit_data": {"bytes": 64},
    }[toxic]


def matrix(quick: bool = True, deadline: float = 0.5) -> list[Fault]:
    """Every toxic on each stream, the proxy down, and faults starting mid-transaction. The deep dose
    starts every toxic mid-transaction too."""
    rows = [Fault(toxic, stream, tuple(sorted(toxic_attributes(toxic, deadline).items())))
            for toxic in ("latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data")
            for stream in STREAMS]
    rows.append(Fault(None))
    rows.append(Fault(None, start="after_prepare"))
    rows.append(Fault("reset_peer", "downstream", tuple(sorted(toxic_attributes("reset_peer", deadline).items())),
                      start="in_apply"))
    rows.append(Fault("limit_data", "upstream", tuple(sorted(toxic_attributes("limit_data", deadline).items())),
                      start="in_apply"))
    if not quick:
        for toxic in ("latency", "bandwidth", "timeout", "slicer"):
            for stream in STREAMS:
                for start in ("after_prepare", "in_apply"):
                    rows.append(Fault(toxic, stream, tuple(sorted(toxic_attributes(toxic, deadline).items())),
                                      start=start))
    return rows


@dataclasses.dataclass
class Dose:
    deadline: float  # the Chroma client's timeout, seconds
    grace: float  # how far past its deadline a call may end (scheduling on a loaded machine)
    healthy_writes: int
    fault_ops: tuple[str, ...]  # the operations while the fault is on, in order
    after_writes: int
    failure_threshold: int
    reset_timeout: float
    heal_timeout: float  # how long healing may take before the experiment fails
    #: Bytes of content per item: large enough that a 1 KB/s trickle cannot carry one read
    #: within the deadline.
    payload: int = 4096


QUICK = Dose(deadline=0.5, grace=1.0, healthy_writes=2, fault_ops=("read", "read", "write", "tx", "write", "read"),
             after_writes=2, failure_threshold=2, reset_timeout=1.0, heal_timeout=20.0)
DEEP = Dose(deadline=1.0, grace=1.0, healthy_writes=6,
            fault_ops=("read", "write", "read", "read", "tx", "write", "read", "write", "tx", "read", "write",
                       "read", "tx", "write", "read"),
            after_writes=5, failure_threshold=3, reset_timeout=2.0, heal_timeout=60.0)


#: The Chroma client's deadline outside the fault and its healing: generous, so that a loaded
#: machine does not turn the healthy baseline into a fault of its own.
BASELINE_DEADLINE = 20.0


@dataclasses.dataclass
class _CallRecord:
    operation: str
    seconds: float
    error: str | None
    phase: str
    deadline: float | None = None


def _timed_chroma_class() -> type:
    from memsys.adapters.chroma_store import ChromaDBVectorStore

    class TimedChroma(ChromaDBVectorStore):  # type: ignore[misc, valid-type]
        """The Chroma adapter, with each deadline-bounded call timed, and a trigger that fires inside
        an apply, after the before-images are read and before the write goes out."""

        def __init__(self, *args: Any, calls: list[_CallRecord], phase: list[str], **kwargs: Any) -> None:
            self.calls, self.phase = calls, phase
            self.before_write: Callable[[], None] | None = None
            super().__init__(*args, **kwargs)

        def _call(self, operation: str, fn: Any, *args: Any) -> Any:
            started = time.monotonic()
            error: str | None = None
            try:
                return super()._call(operation, fn, *args)
            except BaseException as exc:
                error = type(exc).__name__
                raise
            finally:
                self.calls.append(_CallRecord(operation, time.monotonic() - started, error, self.phase[0],
                                              self.timeout))

        def _apply(self, ops: Any, durable: bool) -> None:
            trigger, self.before_write = self.before_write, None
            if trigger is not None:
                trigger()
            super()._apply(ops, durable)

    return TimedChroma


class _Hung(Exception):
    pass


def _bounded(fn: Callable[[], Any], budget: float) -> Any:
    """``fn()`` in a worker thread; _Hung if it has not returned after ``budget`` seconds (the thread
    is left behind: a hang is the finding, and the experiment stops there)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller as is
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="memsys-network-op", daemon=True)
    worker.start()
    worker.join(budget)
    if worker.is_alive():
        raise _Hung(f"still running after {budget:.1f}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class _Run:
    """One experiment: a manager over the proxied Chroma store and LMDB, its history, its verdict."""

    def __init__(self, fault: Fault, folder: str, seed: int, dose: Dose, api: ToxiproxyAPI,
                 chroma: tuple[str, int], tick: Callable[[str], None]) -> None:
        from memsys.testing.chaos import Experiment
        from memsys.testing.history import TransactionRecord

        self.fault, self.folder, self.dose, self.api, self.chroma = fault, folder, dose, api, chroma
        self.seed = seed
        self.rng = random.Random(f"{seed}/{fault.name}")
        self.tick = tick
        self.experiment = Experiment(f"network: {fault.name}", "chroma server via toxiproxy")
        self.records: dict[str, TransactionRecord] = {}
        self.expected: dict[str, dict[str, str]] = {}  # store -> id -> content of acknowledged writes
        self.calls: list[_CallRecord] = []  # every deadline-bounded call of the Chroma client
        self.ops: list[_CallRecord] = []  # every manager operation
        self.phase = ["healthy"]
        self.failures: list[str] = []
        self.reads = self.fallback_reads = 0
        self.degraded_writes = 0
        self.failed_calls = 0
        self.proxy: NetworkProxy | None = None
        self.manager: Any = None
        self.toxic_name: str | None = None
        self.upstream = f"{chroma[0]}:{chroma[1]}"
        self.name = f"memsys-network-{os.getpid()}"  # the proxy's and the collection's name
        self.listen: tuple[str, str] | None = None
        self._n = 0
        self._TransactionRecord = TransactionRecord

    # --- setup and teardown

    def open(self) -> None:
        from memsys.adapters import adapter_class
        from memsys.application.manager import MemoryManager
        from memsys.resilience.retry import retry_with_backoff

        os.makedirs(self.folder, exist_ok=True)
        self.proxy = self.api.create_proxy(self.name, upstream=self.upstream,
                                           listen=self.listen[0] if self.listen else None)
        host, port = _split_address(self.listen[1]) if self.listen else (self.proxy.host, self.proxy.port)

        # The baseline must be healthy, but a server still busy with the last experiment may miss a
        # deadline: opening is retried (a transient error) before anything is judged.
        @retry_with_backoff(4, initial_backoff=0.2, rng=self.rng)
        def connect() -> Any:
            return _timed_chroma_class()(path=os.path.join(self.folder, "chroma"), host=host,
                                         port=port, collection=self.name, dimension=16,
                                         timeout=BASELINE_DEADLINE,
                                         calls=self.calls, phase=self.phase)

        chroma = connect()
        self.collection = chroma.collection_name
        try:
            lmdb = adapter_class("lmdb")(path=os.path.join(self.folder, "lmdb"))
        except BaseException:
            chroma.close()
            raise
        self.manager = MemoryManager(
            {"chroma": chroma, "lmdb": lmdb}, transaction_log=os.path.join(self.folder, "txlog"),
            store_priorities=["chroma", "lmdb"], primary_store="chroma", secondary_stores=["lmdb"],
            fallback_store="lmdb", reconciliation_queue=os.path.join(self.folder, "reconcile"),
            failure_threshold=self.dose.failure_threshold, reset_timeout=self.dose.reset_timeout)

    def close(self) -> None:
        try:
            if self.manager is not None:
                self.manager.close()
        except MemsysError as exc:
            self.failures.append(f"closing the manager failed: {type(exc).__name__}: {exc}")
        finally:
            try:
                self._drop_collection()
            finally:
                if self.proxy is not None:
                    with contextlib.suppress(ToxiproxyError):
                        self.proxy.destroy()

    def _drop_collection(self) -> None:
        """Delete this experiment's own collection, straight at the server (not through the proxy)."""
        import httpx

        url = (f"http://{self.chroma[0]}:{self.chroma[1]}/api/v2/tenants/default_tenant/databases/"
               f"default_database/collections/{self.collection}")
        with contextlib.suppress(httpx.HTTPError):
            with httpx.Client(timeout=10.0, trust_env=False) as client:
                client.delete(url)

    # --- the fault

    def _inject(self) -> None:
        assert self.proxy is not None
        if self.fault.toxic is None:
            self.proxy.disable()
            return
        name = f"{self.fault.toxic}_{self.fault.stream}"
        self.toxic_name = self.proxy.add_toxic(self.fault.toxic, stream=self.fault.stream or "downstream",
                                               name=name, **dict(self.fault.attributes))

    def _heal(self) -> None:
        assert self.proxy is not None
        if self.toxic_name is not None:
            self.proxy.remove_toxic(self.toxic_name)
            self.toxic_name = None
        if self.fault.toxic is None:
            self.proxy.enable()

    # --- operations

    def _budget(self) -> float:
        # A manager operation makes a few deadline-bounded calls (recovery, apply attempts, a read-back).
        return 12 * self.dose.deadline + 10 * self.dose.grace

    def _item(self, item_id: str) -> Any:
        from memsys.domain.model import MemoryItem, MemoryType

        head = f"{item_id} {self.rng.getrandbits(48):012x} "
        content = head + self.rng.randbytes(max(0, self.dose.payload - len(head)) // 2).hex()
        return MemoryItem(id=item_id, content=content, memory_type=MemoryType.EPISODIC, metadata={"n": self._n})

    def _next_id(self, kind: str) -> str:
        self._n += 1
        return f"{kind}-{self.phase[0]}-{self._n:04d}"

    def write(self) -> None:
        """store_with_degraded_mode: Chroma (primary) and LMDB (secondary), else LMDB and the queue."""
        from memsys.domain.errors import TransactionAbortedError

        item = self._item(self._next_id("w"))
        record = self.records[item.id] = self._TransactionRecord(item.id, {"chroma": [item.id], "lmdb": [item.id]})
        queued = len(self.manager.reconciliation)
        try:
            self._op(lambda: self.manager.store_with_degraded_mode(item), "store_with_degraded_mode")
            record.outcome = "ok"
        except TransactionAbortedError:
            record.outcome = "fail"
        except _Hung:
            raise
        except MemsysError:
            record.outcome = "info"
        if record.outcome == "ok":
            for store in ("chroma", "lmdb"):
                self.expected.setdefault(store, {})[item.id] = item.content
            if len(self.manager.reconciliation) > queued:
                self.degraded_writes += 1

    def transaction(self, trigger: str | None = None) -> None:
        """One cross-store transaction: an item to Chroma, another to LMDB. ``trigger`` names where
        in it the fault starts."""
        from memsys.domain.errors import CommitIncompleteError, TransactionAbortedError

        tx = self._next_id("tx-mid" if trigger else "tx")
        a, b = self._item(f"{tx}-c"), self._item(f"{tx}-l")
        record = self.records[tx] = self._TransactionRecord(tx, {"chroma": [a.id], "lmdb": [b.id]})
        coordinator = self.manager.coordinator
        chroma = self.manager.adapters["chroma"]
        if trigger == "after_prepare":
            def hook(step: str) -> None:
                if step == "after_prepare" and coordinator.crash_hook is hook:
                    coordinator.crash_hook = None
                    self._start_fault()
            coordinator.crash_hook = hook
        elif trigger == "in_apply":
            chroma.before_write = self._start_fault

        def run() -> None:
            with self.manager.with_transaction(["chroma", "lmdb"]):
                self.manager.adapters["chroma"].store(a)
                self.manager.adapters["lmdb"].store(b)

        try:
            self._op(run, "transaction")
            record.outcome = "ok"
        except CommitIncompleteError:
            record.outcome = "ok"  # committed: the log holds it, recovery completes the store
        except TransactionAbortedError:
            record.outcome = "fail"
        except _Hung:
            raise
        except MemsysError:
            record.outcome = "info"
        finally:
            coordinator.crash_hook = None
            chroma.before_write = None
        if trigger is not None and self.phase[0] != "fault":
            self.failures.append(f"the fault did not start inside the transaction ({trigger})")
        if record.outcome == "ok":
            self.expected.setdefault("chroma", {})[a.id] = a.content
            self.expected.setdefault("lmdb", {})[b.id] = b.content

    def read(self) -> None:
        """get_with_fallback of an acknowledged item; it must come back, from LMDB if Chroma fails."""
        from memsys.domain.errors import MemoryRetrievalError

        known = sorted(self.expected.get("lmdb", {}))
        if not known:
            return
        item_id = self.rng.choice(known)
        breaker = self.manager.breakers["chroma"]
        failed_before = sum(1 for c in self.calls if c.error and c.operation == "retrieve")
        open_before = breaker.state.value != "CLOSED"
        self.reads += 1
        try:
            item = self._op(lambda: self.manager.get_with_fallback(item_id), "get_with_fallback")
        except MemoryRetrievalError as exc:
            self.failures.append(f"a read of acknowledged {item_id} failed on every store: {exc}")
            return
        failed_now = sum(1 for c in self.calls if c.error and c.operation == "retrieve") > failed_before
        if open_before or failed_now:
            self.fallback_reads += 1
        if item.content != self.expected["lmdb"][item_id]:
            self.failures.append(f"a read of {item_id} returned {item.content!r}, not what was acknowledged")

    def _op(self, fn: Callable[[], Any], kind: str = "probe") -> Any:
        started = time.monotonic()
        try:
            return _bounded(fn, self._budget())
        except _Hung:
            self.experiment.hung += 1
            raise
        except MemsysError:
            raise
        except Exception as exc:  # not a typed memsys error: a finding
            self.experiment.errors += 1
            self.failures.append(f"an operation raised {type(exc).__name__} (not a memsys error): {exc}")
            raise MemsysError(str(exc)) from exc
        finally:
            seconds = time.monotonic() - started
            self.ops.append(_CallRecord(kind, seconds, None, self.phase[0]))
            self.tick(f"{self.fault.name}: {self.phase[0]} {kind} ({seconds:.2f}s)")

    def _start_fault(self) -> None:
        self._inject()
        self.phase[0] = "fault"

    # --- the experiment

    def run(self) -> None:
        dose = self.dose
        for _ in range(dose.healthy_writes):
            self.write()
        self.transaction()
        if self.degraded_writes:
            self.failures.append("writes degraded before any fault: the healthy baseline is broken")
        # From here until healed, calls have the deadline under test (the client reads it per call).
        chroma = self.manager.adapters["chroma"]
        chroma.timeout = dose.deadline
        if self.fault.start == "between":
            self._start_fault()
        else:
            self.transaction(trigger=self.fault.start)
        for op in dose.fault_ops:
            getattr(self, {"read": "read", "write": "write", "tx": "transaction"}[op])()
        self.phase[0] = "heal"
        self._heal()
        healed = time.monotonic()
        breaker = self.manager.breakers["chroma"]
        opened = breaker.opened
        self._until(lambda: self._probe() and breaker.state.value == "CLOSED", "the breaker to close")
        self._until(lambda: self.manager.recover().ok, "recovery to complete the stores")
        self._until(lambda: self.manager.reconcile()["pending"] == 0, "reconciliation to drain the queue")
        self.experiment.recover_seconds = time.monotonic() - healed
        chroma.timeout = BASELINE_DEADLINE
        self.phase[0] = "after"
        degraded = self.degraded_writes
        for _ in range(dose.after_writes):
            self.write()
        self.transaction()
        if self.degraded_writes > degraded:
            self.failures.append("writes still degrade after healing")
        if not self.fault.breaks_calls:  # a fault the client must ride out unharmed
            failed = sum(1 for c in self.calls if c.error and c.phase == "fault")
            if failed or opened or self.fallback_reads or self.degraded_writes:
                self.failures.append(f"a fault that must not break calls did: {failed} calls failed, breaker opened "
                                     f"{opened}x, {self.fallback_reads} reads by fallback, {self.degraded_writes} "
                                     "writes degraded")
            return
        if self.fallback_reads < 1:
            self.failures.append("no read was served by the fallback store during the fault")
        if not self.fault.breaks_small_answers:
            return
        if opened < 1:
            self.failures.append("the breaker never opened during the fault")
        if self.degraded_writes < 1:
            self.failures.append("no write degraded to the fallback store during the fault")

    def _probe(self) -> bool:
        known = sorted(self.expected.get("lmdb", {}))
        if known:
            with contextlib.suppress(MemsysError):
                self._op(lambda: self.manager.get_with_fallback(known[0]))
        return True

    def _until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.dose.heal_timeout
        while True:
            try:
                if ready():
                    return
            except MemsysError:
                pass
            if time.monotonic() > deadline:
                self.failures.append(f"after healing, waited {self.dose.heal_timeout:.0f}s for {what}")
                return
            time.sleep(0.05)

    def judge(self) -> None:
        """The history checker over what each store holds after healing (Chroma through the healed proxy)."""
        from memsys.testing.history import check_transactions

        present: dict[str, set[str]] = {}
        contents: dict[str, dict[str, str]] = {}
        for store in ("chroma", "lmdb"):
            items = list(self.manager.adapters[store].iter_items())
            present[store] = {i.id for i in items}
            contents[store] = {i.id: i.content for i in items}
        check = check_transactions(self.records, present)
        e = self.experiment
        e.attempted, e.acknowledged = check.attempted, check.acknowledged
        e.lost, e.partial, e.unexpected, e.recovered = (len(check.lost), len(check.partial), len(check.unexpected),
                                                        len(check.recovered))
        if not check.valid:
            self.failures.append(f"history: lost {check.lost[:3]} partial {check.partial[:3]} "
                                 f"unexpected {check.unexpected[:3]}")
        wrong = [f"{s}:{i}" for s, ids in self.expected.items() for i, c in ids.items()
                 if i in contents[s] and contents[s][i] != c]
        if wrong:
            e.lost += len(wrong)
            self.failures.append(f"acknowledged writes hold other values: {wrong[:3]}")

    def deadlines(self) -> None:
        """Every Chroma call ended within its deadline (plus grace); the numbers for the report."""
        e = self.experiment
        late = [c for c in self.calls if c.seconds > (c.deadline or self.dose.deadline) + self.dose.grace]
        self.failed_calls = sum(1 for c in self.calls if c.error and c.phase == "fault")
        e.faults = 1 if self.phase[0] != "healthy" else 0  # the one network fault this row injects
        # The report's fields (memsys.testing.chaos.Experiment): faults by kind, latency by phase.
        phases = {"healthy": "before", "fault": "during", "heal": "after", "after": "after"}
        if isinstance(getattr(e, "fault_kinds", None), dict) and e.faults:
            e.fault_kinds[self.fault.name] = e.faults
        if isinstance(getattr(e, "latency", None), dict):
            for store, records in (("chroma", self.calls), ("manager", self.ops)):
                for c in records:
                    e.latency.setdefault(f"{store}|{c.operation}|{phases[c.phase]}", []).append(
                        round(c.seconds * 1000, 3))
        if late:
            worst = max(late, key=lambda c: c.seconds)
            self.failures.append(f"{len(late)} store calls outlived their deadline (+{self.dose.grace}s grace); "
                                 f"worst: {worst.operation} {worst.seconds:.2f}s against {worst.deadline}s "
                                 f"({worst.phase}, {worst.error or 'ok'})")

    def summary(self) -> str:
        fault = self.fault
        toxic = "proxy disabled" if fault.toxic is None else f"{fault.toxic} {fault.stream} {dict(fault.attributes)}"
        if not fault.breaks_calls:
            toxic += " (must not break calls)"
        breaker = self.manager.breakers["chroma"] if self.manager is not None else None
        return (f"{toxic}; seed {self.seed}; deadline {self.dose.deadline}s; {self.failed_calls} calls failed; "
                f"breaker opened "
                f"{breaker.opened if breaker else 0}x; {self.fallback_reads}/{self.reads} reads by fallback; "
                f"{self.degraded_writes} writes degraded and reconciled")


def network_matrix(folder: str, seed: int, *, toxiproxy: str | None = None, chroma_url: str | None = None,
                   quick: bool = True, progress: Callable[[int, int, str], None] | None = None,
                   only: Callable[[Fault], bool] | None = None, rows: Sequence[Fault] | None = None,
                   dose: Dose | None = None, upstream: str | None = None,
                   listen: tuple[str, str] | None = None, namespace: str | None = None) -> list[Any]:
    """Run the network fault matrix; one ``memsys.testing.chaos.Experiment`` per row.

    ``toxiproxy``: "HOST:PORT" of a running Toxiproxy server, else one is started here.
    ``chroma_url``: "http://HOST:PORT" of a running Chroma server, else ``chroma run`` is started
    in ``folder``. ``progress(done, total, label)`` is called after every operation (``total`` is
    an estimate: healing takes as many probes as it needs). If a server cannot be found or
    started, the result is one experiment with status "skipped" saying why (a caller that
    requires servers turns that into a failure).

    ``rows`` replaces the matrix (``only`` filters it); ``dose`` replaces the quick or deep dose.
    Where Toxiproxy runs elsewhere (a container, a staging host): ``upstream`` is the Chroma
    address as Toxiproxy sees it (default: ``chroma_url``'s), and ``listen`` is (the address
    the proxy listens on at Toxiproxy's side, the address clients reach it by).

    Row N works in the Chroma collection ``NAMESPACE-N`` through the proxy ``NAMESPACE-N``
    (default namespace: "memsys-network-" and a random tag), and drops both when it ends: a run
    against staging servers never touches a collection or proxy it did not create.
    """
    from memsys.testing.chaos import Experiment
    from memsys.testing.servers import ChromaServer, ServerUnavailable, ToxiproxyServer

    dose = dose or (QUICK if quick else DEEP)
    rows = [row for row in (matrix(quick, dose.deadline) if rows is None else rows) if only is None or only(row)]
    # Malformed addresses are the caller's mistake: refused before anything starts.
    chroma = _split_address(chroma_url, "chroma_url") if chroma_url is not None else None
    for what, address in (("toxiproxy", toxiproxy), ("upstream", upstream),
                          *(("listen", a) for a in (listen or ()))):
        if address is not None:
            _split_address(address, what)
    namespace = namespace or f"memsys-network-{random.Random().getrandbits(40):010x}"
    if not isinstance(namespace, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}", namespace):
        # Chroma's collection names and Toxiproxy's proxy names both accept this.
        raise InvalidInputError(f"namespace must be 1-60 letters, digits, '.', '_' or '-', starting with a letter "
                                f"or digit; got {namespace!r}")
    os.makedirs(folder, exist_ok=True)
    started_servers: list[Any] = []
    results: list[Any] = []
    try:
        try:
            if chroma is None:
                server = ChromaServer(os.path.join(folder, "chroma-server", "data"))
                started_servers.append(server)
                chroma = (server.host, server.port)
            else:
                _heartbeat(chroma)
            if toxiproxy is None:
                proxy_server = ToxiproxyServer(log_dir=folder)
                started_servers.append(proxy_server)
                toxiproxy = f"{proxy_server.host}:{proxy_server.port}"
            api = ToxiproxyAPI(toxiproxy)
            api.version()
        except (ServerUnavailable, ToxiproxyError) as exc:
            return [Experiment("network fault matrix", "chroma server via toxiproxy", status="skipped",
                               detail=str(exc))]
        # Operations per row; healing takes as many probes as it needs, so a row's count is capped
        # below its end until it ends (progress never goes back, and never passes the total).
        per_row = dose.healthy_writes + 1 + len(dose.fault_ops) + 2 + dose.after_writes + 1
        total, done, cap = per_row * len(rows), [0], [per_row - 1]

        def tick(label: str) -> None:
            if done[0] < cap[0]:
                done[0] += 1
            if progress is not None:
                progress(done[0], total, label)

        for n, fault in enumerate(rows):
            results.append(_run_row(fault, os.path.join(folder, f"row-{n:02d}"), seed, dose, api, chroma, tick,
                                    upstream=upstream, listen=listen, name=f"{namespace}-{n:02d}"))
            done[0], cap[0] = per_row * (n + 1), per_row * (n + 2) - 1
            if progress is not None:
                progress(done[0], total, f"{fault.name}: done")
        api.close()
    finally:
        for server in reversed(started_servers):
            server.stop()
    return results


def _heartbeat(chroma: tuple[str, int]) -> None:
    """ServerUnavailable unless the Chroma server at ``chroma`` answers its heartbeat."""
    import httpx

    from memsys.testing.servers import ServerUnavailable

    url = f"http://{chroma[0]}:{chroma[1]}/api/v2/heartbeat"
    try:
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            client.get(url).raise_for_status()
    except httpx.HTTPError as exc:
        raise ServerUnavailable(f"the Chroma server at {chroma[0]}:{chroma[1]} does not answer {url}: "
                                f"{type(exc).__name__}: {exc}") from exc


def _run_row(fault: Fault, folder: str, seed: int, dose: Dose, api: ToxiproxyAPI, chroma: tuple[str, int],
             tick: Callable[[str], None], *, upstream: str | None = None,
             listen: tuple[str, str] | None = None, name: str) -> Any:
    started = time.perf_counter()
    run = _Run(fault, folder, seed, dose, api, chroma, tick)
    run.name = name
    if hasattr(run.experiment, "seed"):
        run.experiment.seed = seed
    run.upstream, run.listen = upstream or f"{chroma[0]}:{chroma[1]}", listen
    experiment = run.experiment
    try:
        run.open()
        run.run()
        run.judge()
    except _Hung as exc:
        run.failures.append(f"an operation hung: {exc}")
    except (MemsysError, OSError) as exc:
        run.failures.append(f"the experiment broke: {type(exc).__name__}: {exc}")
    finally:
        run.deadlines()
        if run.manager is not None and not experiment.hung:
            run.close()
        elif run.proxy is not None:  # a hung operation still runs: leave the manager, drop the proxy
            with contextlib.suppress(ToxiproxyError):
                run.proxy.destroy()
    experiment.detail = run.summary()
    if run.failures:
        experiment.status = "failed"
        experiment.detail = "; ".join(run.failures) + " -- " + experiment.detail
    experiment.seconds = time.perf_counter() - started
    return experiment
