"""locust machinery for memsys: options, the in-process user, shapes, thresholds, reports.

Imported by benchmarks/locustfile.py (locust puts that folder on sys.path). Never import this
from a test process: locust monkey-patches the standard library with gevent on import.

Options (each also an environment variable, MEMSYS_LOCUST_<NAME>):
    --store SPEC            backend:PATH[?opt=value], e.g. lmdb:/tmp/ycsb, duckdb:/tmp/y.duckdb,
                            chroma+http://127.0.0.1:8000?collection=ycsb; for --workload txn a
                            comma-separated list (a MemoryManager over them)
    --workload A..F|txn     YCSB core workload, or cross-store transactions
    --records N             records preloaded (by the local runner or the master) before the run
    --shape none|step|spike|soak|stress
    --max-fail-ratio / --max-p95-ms / --max-p99-ms
                            thresholds; breaking one makes the exit status 1
    --fault-rate P          memsys FaultInjector: reads, scans and writes fail transiently (and,
                            with --fault-delay-ms, are delayed) with probability P
    --port-faults RULES     memsys.testing.port_faults wrappers around every store, seeded by --seed:
                            METHOD=KIND[:PROBABILITY[:SECONDS]],... with KIND transient, permanent
                            or latency, e.g. retrieve=latency:0.2:0.005,store=transient:0.05
    --toxiproxy URL --toxiproxy-proxy NAME --toxic-latency-ms MS
                            a latency toxic on a Toxiproxy proxy for the run (a Chroma server
                            behind it: --store chroma+http://PROXY_HOST:PROXY_PORT)
    --summary-json FILE     the run's figures: ops/s, p50/p95/p99 in microseconds per operation,
                            thresholds, the stress result

Latencies for thresholds and the summary come from memsys' own microsecond histograms
(ycsb.LogHistogram), merged from the workers on a master; locust's own statistics, CSV and HTML
report are fed through its request event as usual.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

# gevent's patched select has no epoll, which trio needs at import; httpcore (under Chroma's HTTP
# client) imports trio only if it can, so make that an ImportError rather than a crash.
sys.modules.setdefault("trio", None)  # type: ignore[arg-type]

from locust import LoadTestShape, User, events
from locust.runners import MasterRunner, WorkerRunner

import ycsb

log = logging.getLogger("memsys.locust")


#: What an adapter imports when it opens, beyond its own module (Chroma's client imports lazily).
ENGINE_MODULES = {"chroma": ("chromadb", "chromadb.api.fastapi", "chromadb.telemetry.product.posthog"),
                  "lmdb": ("lmdb",), "duckdb": ("duckdb",), "kuzu": ("kuzu",), "faiss": ("faiss",),
                  "networkx": ("networkx",), "tinydb": ("tinydb",)}


def _preimport(argv: list[str]) -> None:
    """Import the named stores' engines while this file loads, before locust builds its runner.

    A memsys call never yields to gevent, and neither does an import: importing Chroma's client
    takes seconds on a busy machine, and done in a worker's first user it stalls the worker's
    heartbeats until the master drops it as missing (seen: "failed to send heartbeat"). Here,
    before any runner exists, nothing is waiting. A spec that does not parse is left for --store's
    own error later."""
    import importlib

    spec = os.environ.get("MEMSYS_LOCUST_STORE", "")
    for n, arg in enumerate(argv):
        if arg == "--store" and n + 1 < len(argv):
            spec = argv[n + 1]
        elif arg.startswith("--store="):
            spec = arg.split("=", 1)[1]
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            backend = ycsb.parse_spec(part)[0]
            from memsys.adapters import adapter_class

            adapter_class(backend)
            for module in ENGINE_MODULES.get(backend, ()):
                importlib.import_module(module)
        except (ValueError, KeyError, ImportError) as exc:
            log.debug("not pre-imported for %r: %s", part, exc)


_preimport(sys.argv)


class Process:
    """What one locust process holds: its store (or manager), histograms, the stress state."""

    def __init__(self) -> None:
        self.store: Any = None
        self.manager: Any = None
        self.faults: Any = None
        self.plan: Any = None  # the memsys.testing.port_faults plan (--port-faults)
        self.options: Any = None
        self.hists: dict[str, ycsb.LogHistogram] = {}
        self.window = ycsb.LogHistogram()  # this stress step's latencies (all operations)
        self.users = itertools.count()
        self.started: float | None = None
        self.stopped: float | None = None
        self.stress: dict[str, Any] | None = None
        self.worker_index = 0

    def record(self, name: str, micros: float) -> None:
        self.hists.setdefault(name, ycsb.LogHistogram()).add(micros)
        self.window.add(micros)


PROCESS = Process()


def _option(parser: Any, name: str, **kwargs: Any) -> None:
    env = "MEMSYS_LOCUST_" + name.lstrip("-").upper().replace("-", "_")
    parser.add_argument(name, env_var=env, **kwargs)


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    _option(parser, "--store", default="", help="store spec, backend:PATH (default: LMDB in a temporary folder)")
    _option(parser, "--workload", default="A", choices=[*ycsb.WORKLOADS, "txn"], help="YCSB workload A-F, or txn")
    _option(parser, "--records", type=int, default=1_000, help="records preloaded before the run")
    _option(parser, "--seed", type=int, default=0, help="seed of every key and field choice")
    _option(parser, "--shape", default="none", choices=["none", "step", "spike", "soak", "stress"],
            help="load shape (none: -u/-r/-t as usual)")
    _option(parser, "--step-users", type=int, default=2, help="users added per step (step, stress; spike baseline)")
    _option(parser, "--step-seconds", type=float, default=10.0, help="seconds per step (step, stress)")
    _option(parser, "--max-users", type=int, default=16, help="most users (step, stress)")
    _option(parser, "--spike-users", type=int, default=16, help="users during the spike")
    _option(parser, "--spike-at", type=float, default=10.0, help="seconds of baseline before (and after) the spike")
    _option(parser, "--spike-seconds", type=float, default=5.0, help="how long the spike lasts")
    _option(parser, "--soak-users", type=int, default=4, help="users for the soak")
    _option(parser, "--soak-seconds", type=float, default=600.0, help="how long the soak lasts")
    _option(parser, "--stress-p95-ms", type=float, default=50.0, help="stress: a step whose p95 exceeds this broke")
    _option(parser, "--stress-fail-ratio", type=float, default=0.01,
            help="stress: a step whose failure ratio exceeds this broke")
    _option(parser, "--stress-min-users", type=int, default=0,
            help="stress: exit status 1 when the store broke below this many users (0: report only)")
    _option(parser, "--max-fail-ratio", type=float, default=0.0, help="exit status 1 above this failure ratio")
    _option(parser, "--max-p95-ms", type=float, default=0.0, help="exit status 1 above this p95 (0: off)")
    _option(parser, "--max-p99-ms", type=float, default=0.0, help="exit status 1 above this p99 (0: off)")
    _option(parser, "--fault-rate", type=float, default=0.0, help="probability of an injected transient fault")
    _option(parser, "--fault-delay-ms", type=float, default=0.0, help="injected delay (with --fault-rate)")
    _option(parser, "--port-faults", default="",
            help="port fault wrappers: METHOD=KIND[:PROBABILITY[:SECONDS]],... (KIND transient|permanent|latency)")
    _option(parser, "--toxiproxy", default="", help="Toxiproxy API, e.g. http://127.0.0.1:8474")
    _option(parser, "--toxiproxy-proxy", default="", help="the proxy to add the latency toxic to")
    _option(parser, "--toxic-latency-ms", type=int, default=0, help="latency toxic (ms) for the run")
    _option(parser, "--toxic-jitter-ms", type=int, default=0, help="its jitter (ms)")
    _option(parser, "--txlog", default="", help="txn workload: the coordinator log (default: a temporary file)")
    _option(parser, "--summary-json", default="", help="write the run's figures here")


def _default_store() -> str:
    return "lmdb:" + os.path.join(tempfile.mkdtemp(prefix="memsys-locust-"), "ycsb")


_opening = threading.Lock()  # gevent's, after locust's patching: one user opens, the others wait


def open_target(options: Any) -> None:
    """This process's store (or, for txn, a MemoryManager), with faults switched on if asked."""
    with _opening:
        if PROCESS.store is None and PROCESS.manager is None:
            _open_target(options)


def _open_target(options: Any) -> None:
    specs = [s for s in (options.store or "").split(",") if s.strip()]
    if options.workload == "txn":
        from memsys.application.manager import MemoryManager

        if len(specs) < 2:  # LMDB, DuckDB and Kuzu in MEMSYS_LOCUST_DIR (or a new temporary folder)
            root = os.environ.get("MEMSYS_LOCUST_DIR") or tempfile.mkdtemp(prefix="memsys-locust-txn-")
            specs = [f"lmdb:{root}/lmdb?sync=false", f"duckdb:{root}/items.duckdb?sync=false",
                     f"kuzu:{root}/graph.kuzu"]
        stores = {ycsb.parse_spec(s)[0]: _wrapped(ycsb.open_spec(s), options) for s in specs}
        txlog = options.txlog or os.path.join(os.path.dirname(ycsb.parse_spec(specs[0])[1]) or
                                              tempfile.mkdtemp(prefix="memsys-locust-log-"), "txlog")
        PROCESS.manager = MemoryManager(stores, transaction_log=txlog)
        targets = list(stores.values())
    else:
        if len(specs) > 1:
            raise SystemExit("--store: YCSB workloads run against one store")
        PROCESS.store = _wrapped(ycsb.open_spec(specs[0] if specs else options.store), options)
        targets = [PROCESS.store]
    if options.fault_rate > 0:
        from memsys.testing.faults import FaultInjector

        PROCESS.faults = []
        for n, target in enumerate(targets):
            faults = FaultInjector(target, seed=options.seed + 7919 * (PROCESS.worker_index + 1) + n)
            for operation in ("retrieve", "search", "apply"):
                if options.fault_delay_ms > 0:
                    faults.delay(operation, options.fault_delay_ms / 1000, probability=options.fault_rate)
                else:
                    faults.fail(operation, probability=options.fault_rate)
            PROCESS.faults.append(faults)


def _wrapped(store: Any, options: Any) -> Any:
    """``store`` behind this process's port-fault plan (one plan per process, seeded per worker)."""
    if not options.port_faults:
        return store
    from memsys.testing.port_faults import wrap_store

    if PROCESS.plan is None:
        PROCESS.plan = ycsb.port_fault_plan(options.port_faults, seed=options.seed + 7919 * (PROCESS.worker_index + 1))
    return wrap_store(store, PROCESS.plan)


def close_target() -> None:
    for value in (PROCESS.manager, PROCESS.store):
        if value is not None:
            value.close()
    PROCESS.manager = PROCESS.store = None


@events.init.add_listener
def _init(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    runner = environment.runner
    if options.workload != "txn" and options.records < 1:
        raise SystemExit("--records must be at least 1: YCSB reads the records it preloaded")
    try:
        ycsb.parse_port_faults(options.port_faults)
    except ValueError as exc:
        raise SystemExit(f"--port-faults: {exc}") from None
    if not options.store and options.workload != "txn":
        if isinstance(runner, (MasterRunner, WorkerRunner)):
            raise SystemExit("--store is required in distributed runs: the master and every worker name the "
                             "same store (one several processes can share, e.g. lmdb:PATH or chroma+http://...)")
        options.store = _default_store()
    PROCESS.options = options
    if isinstance(runner, WorkerRunner):
        return  # workers open the store when their first user starts (its engine is imported: _preimport)
    if options.workload != "txn":
        store = ycsb.open_spec(options.store)
        try:
            started = time.perf_counter()
            written = ycsb.preload(store, options.records)
            log.info("preloaded %d of %d records into %s in %.1f s", written, options.records, options.store,
                     time.perf_counter() - started)
        finally:
            store.close()  # the master keeps nothing open; a local runner reopens it with its faults


@events.test_start.add_listener
def _test_start(environment: Any, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    PROCESS.started = time.perf_counter()
    options = environment.parsed_options
    if options.toxiproxy and options.toxiproxy_proxy and options.toxic_latency_ms:
        _toxiproxy(options, "POST", f"/proxies/{options.toxiproxy_proxy}/toxics", {
            "name": "memsys_latency", "type": "latency", "stream": "downstream", "toxicity": 1.0,
            "attributes": {"latency": options.toxic_latency_ms, "jitter": options.toxic_jitter_ms}})


@events.test_stop.add_listener
def _test_stop(environment: Any, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    PROCESS.stopped = time.perf_counter()
    options = environment.parsed_options
    if options.toxiproxy and options.toxiproxy_proxy and options.toxic_latency_ms:
        _toxiproxy(options, "DELETE", f"/proxies/{options.toxiproxy_proxy}/toxics/memsys_latency", None)


def _toxiproxy(options: Any, method: str, path: str, body: dict[str, Any] | None) -> None:
    request = urllib.request.Request(options.toxiproxy.rstrip("/") + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:  # a hung proxy must not hang the run
        answer.read()


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    data["memsys_hists"] = {name: hist.to_dict() for name, hist in PROCESS.hists.items()}
    PROCESS.hists = {}


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any], **_kwargs: Any) -> None:
    for name, counts in data.get("memsys_hists", {}).items():
        PROCESS.hists.setdefault(name, ycsb.LogHistogram()).merge(counts)
        PROCESS.window.merge(counts)


class MemsysUser(User):
    """A user calling memsys in-process; every call is one locust request (and one histogram entry)."""

    abstract = True

    def on_start(self) -> None:
        options = self.environment.parsed_options
        runner = self.environment.runner
        PROCESS.worker_index = max(0, getattr(runner, "worker_index", 0))
        open_target(options)
        self.index = next(PROCESS.users)
        self.rng = random.Random(options.seed * 1_000_003 + PROCESS.worker_index * 10_007 + self.index)

    def call(self, name: str, fn: Any) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        result = None
        try:
            result = fn()
        except Exception as exc:  # any failure is a failed request; its latency still counts
            error = exc
        seconds = time.perf_counter() - started
        PROCESS.record(name, seconds * 1e6)
        self.environment.events.request.fire(request_type=self.request_type, name=name,
                                             response_time=seconds * 1000, response_length=0,
                                             exception=error, context={})
        return result


NotFound = ycsb.NotFound  # a YCSB read of a record that should exist


# --- shapes


class MemsysShape(LoadTestShape):
    """--shape: none (plain -u/-r/-t), step, spike, soak or stress (raise load until it breaks)."""

    use_common_options = True

    def _options(self) -> Any:
        return self.runner.environment.parsed_options

    def tick(self) -> tuple[int, float] | None:
        options = self._options()
        t = self.get_run_time()
        if options.run_time and t >= options.run_time:
            return None  # -t bounds every shape (locust leaves the run time to a shape once there is one)
        if options.shape == "none":
            return (options.num_users or 1, options.spawn_rate or 1)
        if options.shape == "step":
            steps = max(1, math.ceil(options.max_users / options.step_users))
            if t >= steps * options.step_seconds:
                return None
            return (min(options.max_users, options.step_users * (1 + int(t // options.step_seconds))), 100)
        if options.shape == "spike":
            if t < options.spike_at:
                return (options.step_users, 100)
            if t < options.spike_at + options.spike_seconds:
                return (options.spike_users, 100)
            if t < 2 * options.spike_at + options.spike_seconds:
                return (options.step_users, 100)
            return None
        if options.shape == "soak":
            return (options.soak_users, 100) if t < options.soak_seconds else None
        return self._stress(options, t)

    def _stress(self, options: Any, t: float) -> tuple[int, float] | None:
        state = getattr(self, "_state", None)
        stats = self.runner.stats.total
        if state is None:
            state = self._state = {"users": options.step_users, "since": t, "requests": stats.num_requests,
                                   "failures": stats.num_failures, "steps": []}
            PROCESS.window = ycsb.LogHistogram()
        if t - state["since"] < options.step_seconds:
            return (state["users"], 100)
        requests = stats.num_requests - state["requests"]
        failures = stats.num_failures - state["failures"]
        p95_ms = PROCESS.window.percentile(95) / 1000
        step = {"users": state["users"], "seconds": round(t - state["since"], 2), "requests": requests,
                "ops_per_s": round(requests / max(t - state["since"], 1e-9), 1),
                "fail_ratio": round(failures / requests, 4) if requests else 0.0,
                "p95_ms": None if math.isnan(p95_ms) else round(p95_ms, 3)}
        state["steps"].append(step)
        log.info("stress step: %s", step)
        broke = requests == 0 or step["fail_ratio"] > options.stress_fail_ratio or (
            step["p95_ms"] is not None and step["p95_ms"] > options.stress_p95_ms)
        if broke or state["users"] + options.step_users > options.max_users:
            good = [s for s in state["steps"] if s is not step] if broke else state["steps"]
            PROCESS.stress = {"broke": broke, "broke_at_users": step["users"] if broke else None,
                              "last_good_users": good[-1]["users"] if good else 0,
                              "last_good_ops_per_s": good[-1]["ops_per_s"] if good else 0.0,
                              "limits": {"p95_ms": options.stress_p95_ms, "fail_ratio": options.stress_fail_ratio},
                              "steps": state["steps"]}
            return None
        state.update(users=state["users"] + options.step_users, since=t, requests=stats.num_requests,
                     failures=stats.num_failures)
        PROCESS.window = ycsb.LogHistogram()
        return (state["users"], 100)


# --- the verdict


def summary(environment: Any) -> dict[str, Any]:
    options = environment.parsed_options
    stats = environment.runner.stats
    seconds = max(1e-9, (PROCESS.stopped or time.perf_counter()) - (PROCESS.started or time.perf_counter()))
    total = ycsb.LogHistogram()
    operations = {}
    for name, hist in sorted(PROCESS.hists.items()):
        total.merge(hist)
        entry = stats.entries.get((name, _request_type(options)))
        operations[name] = {"requests": hist.total, "failures": entry.num_failures if entry else None,
                            "ops_per_s": round(hist.total / seconds, 1),
                            **{f"p{p}_us": _round(hist.percentile(p)) for p in (50, 95, 99)}}
    figures = {"store": options.store or "lmdb,duckdb,kuzu (default)", "workload": options.workload, "records": options.records,
               "shape": options.shape, "seconds": round(seconds, 2), "requests": stats.total.num_requests,
               "failures": stats.total.num_failures, "fail_ratio": round(stats.total.fail_ratio, 5),
               "ops_per_s": round(total.total / seconds, 1),
               **{f"p{p}_us": _round(total.percentile(p)) for p in (50, 95, 99)},
               "operations": operations, "faults": {"rate": options.fault_rate, "delay_ms": options.fault_delay_ms,
                                                    "toxic_latency_ms": options.toxic_latency_ms,
                                                    "port_faults": options.port_faults,
                                                    # this process's plan only (a master's workers keep theirs)
                                                    "port_faults_fired": PROCESS.plan.summary()["fired"]
                                                    if PROCESS.plan is not None else None}}
    broken = []
    if options.shape == "stress":
        figures["stress"] = PROCESS.stress
        if PROCESS.stress and options.stress_min_users and PROCESS.stress["broke"] \
                and PROCESS.stress["broke_at_users"] < options.stress_min_users:
            broken.append(f"broke at {PROCESS.stress['broke_at_users']} users < --stress-min-users "
                          f"{options.stress_min_users}")
    else:  # overload is the point of a stress run; thresholds judge every other run
        if stats.total.fail_ratio > options.max_fail_ratio:
            broken.append(f"failure ratio {stats.total.fail_ratio:.4f} > {options.max_fail_ratio}")
        for p, limit in ((95, options.max_p95_ms), (99, options.max_p99_ms)):
            value = total.percentile(p) / 1000
            if limit and not math.isnan(value) and value > limit:
                broken.append(f"p{p} {value:.3f} ms > {limit} ms")
    figures["thresholds"] = {"max_fail_ratio": options.max_fail_ratio, "max_p95_ms": options.max_p95_ms,
                             "max_p99_ms": options.max_p99_ms, "broken": broken}
    return figures


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 1)


def _request_type(options: Any) -> str:
    return "txn" if options.workload == "txn" else f"YCSB-{options.workload}"


@events.quitting.add_listener
def _quitting(environment: Any, **_kwargs: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        close_target()
        return
    close_target()
    figures = summary(environment)
    environment.process_exit_code = 1 if figures["thresholds"]["broken"] else 0
    lines = [f"memsys {figures['workload']} on {figures['store']}: {figures['requests']} requests in "
             f"{figures['seconds']} s, {figures['ops_per_s']} ops/s, p50 {figures['p50_us']} us, p95 "
             f"{figures['p95_us']} us, p99 {figures['p99_us']} us, failure ratio {figures['fail_ratio']}"]
    for name, op in figures["operations"].items():
        lines.append(f"  {name:<18} {op['requests']:>8} req {op['ops_per_s']:>10} ops/s  p50 {op['p50_us']} us  "
                     f"p95 {op['p95_us']} us  p99 {op['p99_us']} us")
    if figures.get("stress"):
        s = figures["stress"]
        lines.append(f"  stress: {'broke at ' + str(s['broke_at_users']) + ' users' if s['broke'] else 'did not break'}"
                     f"; last good load {s['last_good_users']} users at {s['last_good_ops_per_s']} ops/s "
                     f"(limits p95 {s['limits']['p95_ms']} ms, failure ratio {s['limits']['fail_ratio']})")
    verdict = "; ".join(figures["thresholds"]["broken"]) or "within thresholds"
    lines.append(f"  exit status {environment.process_exit_code}: {verdict}")
    print("\n".join(lines), flush=True)
    if environment.parsed_options.summary_json:
        with open(environment.parsed_options.summary_json, "w") as handle:
            json.dump(figures, handle, indent=1)
    if isinstance(runner, MasterRunner):
        log.info("master summary written")
