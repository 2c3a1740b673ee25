"""Port-level fault wrappers: any store, any port method, driven by one seeded plan.

    plan = FaultPlan(seed=7, deadline=2.0)
    plan.add(method="apply_prepared", kind="transient", when="before", times=2)
    plan.add(method="retrieve", kind="corrupt", probability=0.1, store="lmdb")
    plan.randomize(rate=0.05)                 # FoundationDB-style: the seed picks the fault points
    lmdb = wrap_store(LMDBMemoryAdapter(path=...), plan)
    manager = MemoryManager({"lmdb": lmdb, ...}, transaction_log=...)
    ...
    plan.heal(); plan.fired; plan.summary(); plan.replay_hint()

``wrap_store`` returns an object that implements exactly the ports the wrapped
store implements (``isinstance`` against ``memsys.ports`` protocols, the
store's class and ``BaseMemoryStore`` answer as for the store itself), with the
same ``capabilities``, ``name`` and ``dimension``. Attribute writes go to the
store, so a MemoryManager binds the real store and the wrapper joins
transactions as the store would. It works on any object that follows the
protocol, third-party classes included. Faults are injected where the caller
calls the port: a store's internal calls to its own methods are not faulted.

Kinds of fault:

    transient  StoreUnavailableError (a retry may help)
    permanent  StoreError (a PermanentError), or the ``error`` class given
    latency    sleep ``seconds``, then the call proceeds
    hang       block until the deadline passes (``seconds`` if given, else ``plan.deadline``),
               then DeadlineExceededError (a ``heal()`` meanwhile lets the call proceed)
    crash      SIGKILL this process (``plan.crash_mode = "raise"``: raise InjectedCrash,
               a BaseException, for in-process tests); ``point="mid"`` on a batch
               method applies a seeded prefix first
    torn       batch methods (store_many, delete_many, apply_prepared): apply a seeded
               prefix of the batch, then raise StoreUnavailableError
    corrupt    reads return an altered item (content replaced, vectors flipped), so a
               checker must notice

``when`` is "before" or "after" the real call: an error after it means the write
happened but the caller was told otherwise (an unknown outcome).

Every decision is a pure function of (seed, rule, store, method, call index), so
one seed reproduces the same fired sequence for the same calls, even when
threads interleave differently. Every injected exception message ends with
``[fault seed=N, event #k]``; ``replay_hint()`` is the line that reruns it.
A plan built with ``seed=None`` takes ``MEMSYS_FAULT_SEED`` from the
environment, or a fresh random seed, and says which; ``live_plans()`` lists the
plans still in use, so a test runner can print their replay hints on failure.

A MemoryManager puts a store that is not built on memsys' adapter base inside
a ForeignStore named by its key; give ``wrap_store`` that name (``name=``) so
``store=`` filters match. Code that patches a store's methods itself can run
each call through a plan with ``plan.call(store, method, fn, args, kwargs)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shlex
import signal
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from memsys.domain.errors import (
    DeadlineExceededError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
)

KINDS = ("transient", "permanent", "latency", "hang", "crash", "torn", "corrupt")
WHEN = ("before", "after")

#: Every method the ports in memsys.ports declare, except close (faulting close only hides the
#: store; name it explicitly to fault it). "*" and randomize() cover these.
PORT_METHODS = frozenset({
    "store", "retrieve", "search", "delete",
    "store_many", "retrieve_many", "delete_many", "iter_items", "count",
    "begin_transaction", "prepare_commit", "commit", "rollback",
    "prepare_ops", "apply_prepared", "flush",
    "snapshot", "restore",
    "store_vector", "retrieve_vector", "delete_vector", "similarity_search", "similarity_search_with_scores",
    "add_relationship", "remove_relationship", "get_relationships", "neighbors", "shortest_path",
    "query_sql",
})
#: Methods whose first argument is a batch a torn write can split.
BATCH_METHODS = frozenset({"store_many", "delete_many", "apply_prepared"})
#: Methods whose answer a corrupt fault can alter.
READ_METHODS = frozenset({"retrieve", "retrieve_many", "search", "iter_items", "retrieve_vector",
                          "similarity_search", "similarity_search_with_scores", "neighbors"})
#: Kinds that change what the real call does or returns, so they apply only to some methods.
_APPLIES = {"torn": BATCH_METHODS, "corrupt": READ_METHODS}


class InjectedCrash(BaseException):
    """A planned crash in ``crash_mode="raise"``: a BaseException, so nothing in memsys catches it."""


@dataclasses.dataclass(frozen=True)
class FaultEvent:
    """One fault that fired: ``seq`` counts from 1 over the whole plan."""

    seq: int
    store: str
    method: str
    call_index: int
    kind: str
    when: str
    point: str | None = None
    detail: str = ""
    #: The exception class raised, where the fault raises one.
    error: str = ""

    def describe(self) -> str:
        where = f"{self.when}" + (f", point {self.point}" if self.point else "")
        return f"#{self.seq} {self.kind} on {self.store}.{self.method} call {self.call_index} ({where})" + \
            (f": {self.detail}" if self.detail else "")


@dataclasses.dataclass
class _Rule:
    id: int
    method: str
    kind: str
    when: str
    probability: float
    times: int | None
    seconds: float
    point: str | None
    store: str | None
    error: type[BaseException] | None = None
    # randomize(): the seed decides per (store, method) point whether it is on, its kind and when.
    kinds: tuple[str, ...] = ()
    methods: frozenset[str] | None = None
    enable: float = 1.0
    fired: int = 0

    @property
    def random(self) -> bool:
        return bool(self.kinds)

    def describe(self) -> str:
        if self.random:
            methods = "None" if self.methods is None else repr(sorted(self.methods))
            return (f".randomize(rate={self.probability!r}, kinds={self.kinds!r}, methods={methods}, "
                    f"seconds={self.seconds!r}, enable={self.enable!r}, store={self.store!r})")
        parts = [f"method={self.method!r}", f"kind={self.kind!r}", f"when={self.when!r}"]
        if self.probability != 1.0:
            parts.append(f"probability={self.probability!r}")
        if self.times is not None:
            parts.append(f"times={self.times!r}")
        if self.seconds:
            parts.append(f"seconds={self.seconds!r}")
        if self.point is not None:
            parts.append(f"point={self.point!r}")
        if self.store is not None:
            parts.append(f"store={self.store!r}")
        if self.error is not None:
            parts.append(f"error={self.error.__name__}")
        return f".add({', '.join(parts)})"


def _unit(*key: object) -> float:
    """A uniform number in [0, 1) that depends only on ``key`` (stable across runs and processes)."""
    digest = hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _seed_from_env() -> tuple[int, str]:
    raw = os.environ.get("MEMSYS_FAULT_SEED")
    if raw is None or not raw.strip():
        return random.SystemRandom().randrange(2**32), "random"
    try:
        return int(raw), "MEMSYS_FAULT_SEED"
    except ValueError:
        raise InvalidInputError(f"MEMSYS_FAULT_SEED must be an integer, got {raw!r}") from None


_LIVE: weakref.WeakSet[FaultPlan] = weakref.WeakSet()


def live_plans() -> list[FaultPlan]:
    """Every FaultPlan not yet garbage-collected, oldest first."""
    return sorted(_LIVE, key=lambda plan: plan._created)


class FaultPlan:
    """Which faults fire where, decided by one seed. Shared by every store wrapped with it."""

    def __init__(self, seed: int | None = None, deadline: float = 2.0, *, crash_mode: str = "kill") -> None:
        if seed is None:
            seed, self.seed_source = _seed_from_env()
        else:
            self.seed_source = "given"
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidInputError(f"FaultPlan seed must be an int, got {seed!r}")
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not deadline > 0:
            raise InvalidInputError(f"FaultPlan deadline must be a positive number of seconds, got {deadline!r}")
        self.seed = seed
        self.deadline = float(deadline)
        self.crash_mode = crash_mode
        self.fired: list[FaultEvent] = []
        #: Called with each FaultEvent as it fires (before an exception is raised or a kill sent).
        self.listeners: list[Callable[[FaultEvent], None]] = []
        self._rules: list[_Rule] = []
        self._built: list[str] = []  # every add/randomize/heal, in order: the plan as code, for replay
        self._next_rule = 0
        self._calls: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._healed = threading.Event()
        self._created = time.monotonic_ns()
        _LIVE.add(self)

    @property
    def crash_mode(self) -> str:
        return self._crash_mode

    @crash_mode.setter
    def crash_mode(self, mode: str) -> None:
        if mode not in ("kill", "raise"):
            raise InvalidInputError(f"crash_mode is 'kill' (SIGKILL this process) or 'raise', got {mode!r}")
        self._crash_mode = mode

    # ------------------------------------------------------------------ building the plan

    def add(self, method: str = "*", kind: str = "transient", when: str = "before", probability: float = 1.0,
            times: int | None = None, seconds: float = 0.0, point: str | None = None, store: str | None = None,
            *, error: type[BaseException] | None = None) -> FaultPlan:
        """Fire ``kind`` on calls of ``method`` ("*": every port method but close) of ``store``
        (default: every wrapped store), each call with ``probability``, at most ``times`` times."""
        self._check_common(probability, seconds, store)
        if not isinstance(method, str) or not method or (method != "*" and method.startswith("_")):
            raise InvalidInputError(f"method must be a public method name or '*', got {method!r}")
        if kind not in KINDS:
            raise InvalidInputError(f"unknown fault kind {kind!r}; use one of {KINDS}")
        if when not in WHEN:
            raise InvalidInputError(f"when is 'before' or 'after', got {when!r}")
        if kind in _APPLIES and method != "*" and method not in _APPLIES[kind]:
            raise InvalidInputError(f"a {kind} fault applies to {sorted(_APPLIES[kind])}, not {method!r}")
        if point not in (None, "mid"):
            raise InvalidInputError(f"point is None or 'mid' (a crash part way through a batch), got {point!r}")
        if point == "mid" and (kind != "crash" or (method != "*" and method not in BATCH_METHODS)):
            raise InvalidInputError(f"point='mid' is for crash faults on {sorted(BATCH_METHODS)}")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
            raise InvalidInputError(f"times must be None or a non-negative int, got {times!r}")
        if kind == "latency" and not seconds > 0:
            raise InvalidInputError("a latency fault needs seconds > 0")
        if error is not None and not (isinstance(error, type) and issubclass(error, BaseException)):
            raise InvalidInputError(f"error must be an exception class, got {error!r}")
        with self._lock:
            self._rules.append(_Rule(self._next_rule, method, kind, when, float(probability), times,
                                     float(seconds), point, store, error))
            self._built.append(self._rules[-1].describe())
            self._next_rule += 1
            self._healed.clear()
        return self

    def randomize(self, rate: float = 0.05, kinds: Sequence[str] = ("transient", "permanent", "latency"),
                  methods: Iterable[str] | None = None, *, seconds: float = 0.01, enable: float = 0.5,
                  store: str | None = None) -> FaultPlan:
        """Let the seed choose: each (store, method) fault point is switched on with chance ``enable``
        and gets a kind from ``kinds`` and a side (before/after); an enabled point fires on a call
        with chance ``rate``. One seed, one run."""
        self._check_common(rate, seconds, store)
        kinds = tuple(kinds)
        bad = [k for k in kinds if k not in KINDS]
        if not kinds or bad:
            raise InvalidInputError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
        if not 0.0 <= enable <= 1.0:
            raise InvalidInputError(f"enable must lie in [0, 1], got {enable!r}")
        chosen = None if methods is None else frozenset(methods)
        if chosen is not None and (not chosen or any(not isinstance(m, str) or m.startswith("_") for m in chosen)):
            raise InvalidInputError(f"methods must be public method names, got {methods!r}")
        if "latency" in kinds and not seconds > 0:
            raise InvalidInputError("randomized latency needs seconds > 0")
        with self._lock:
            self._rules.append(_Rule(self._next_rule, "*", "random", "before", float(rate), None, float(seconds),
                                     None, store, kinds=kinds, methods=chosen, enable=float(enable)))
            self._built.append(self._rules[-1].describe())
            self._next_rule += 1
            self._healed.clear()
        return self

    @staticmethod
    def _check_common(probability: float, seconds: float, store: str | None) -> None:
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
            raise InvalidInputError(f"probability must lie in [0, 1], got {probability!r}")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 3600:
            raise InvalidInputError(f"seconds must be a number in [0, 3600), got {seconds!r}")
        if store is not None and (not isinstance(store, str) or not store):
            raise InvalidInputError(f"store must be None or a store name, got {store!r}")

    def heal(self) -> None:
        """No more faults from now on (what fired stays in ``fired``); wakes hung calls, which proceed."""
        with self._lock:
            self._rules.clear()
            self._built.append(".heal()")
            self._healed.set()

    @property
    def healed(self) -> bool:
        return not self._rules

    # ------------------------------------------------------------------ reporting

    def summary(self) -> dict[str, Any]:
        with self._lock:
            events = list(self.fired)
        return {"seed": self.seed, "fired": len(events),
                "by_kind": dict(Counter(e.kind for e in events)),
                "by_method": dict(Counter(e.method for e in events)),
                "by_store": dict(Counter(e.store for e in events)),
                "calls": sum(self._calls.values())}

    def describe(self) -> str:
        """The plan as the code that built it (heal() calls included)."""
        with self._lock:
            rules = "".join(self._built)
        return f"FaultPlan(seed={self.seed}, deadline={self.deadline!r})" + rules

    def replay_hint(self) -> str:
        """One line that reruns this run with the same seed."""
        test = os.environ.get("PYTEST_CURRENT_TEST")
        if test:
            command = "python -m pytest " + shlex.quote(test.rsplit(" (", 1)[0])
        else:
            command = shlex.join([os.path.basename(sys.executable), *sys.argv]) if sys.argv and sys.argv[0] \
                else "python"
        return f"MEMSYS_FAULT_SEED={self.seed} {command}  # {self.describe()}"

    def __repr__(self) -> str:
        return f"<{self.describe()}: {len(self.fired)} fired>"

    # ------------------------------------------------------------------ deciding

    def _choose(self, store: str, method: str, index: int, phase: str) -> tuple[_Rule, str, str] | None:
        """The rule that fires on this call in this phase, with its kind and side; called under the lock."""
        for rule in self._rules:
            if rule.store is not None and rule.store != store:
                continue
            if rule.times is not None and rule.fired >= rule.times:
                continue
            if rule.random:
                if method not in (rule.methods if rule.methods is not None else PORT_METHODS):
                    continue
                if _unit(self.seed, "on", rule.id, store, method) >= rule.enable:
                    continue
                usable = [k for k in rule.kinds if k not in _APPLIES or method in _APPLIES[k]]
                if not usable:
                    continue
                kind = usable[int(_unit(self.seed, "kind", rule.id, store, method) * len(usable))]
                late = _unit(self.seed, "when", rule.id, store, method) < 0.5
                when = "after" if kind == "corrupt" or (late and kind in ("transient", "permanent", "latency")) \
                    else "before"
            else:
                if rule.method == "*":
                    if method not in PORT_METHODS:
                        continue
                elif rule.method != method:
                    continue
                kind = rule.kind
                if kind in _APPLIES and method not in _APPLIES[kind]:
                    continue
                if rule.point == "mid" and method not in BATCH_METHODS:
                    continue
                when = "after" if kind == "corrupt" else rule.when
            # torn writes and mid-batch crashes replace the call, so they are decided before it.
            side = "before" if kind == "torn" or rule.point == "mid" else when
            if side != phase:
                continue
            if rule.probability < 1.0 and _unit(self.seed, rule.id, store, method, index) >= rule.probability:
                continue
            rule.fired += 1
            return rule, kind, when
        return None

    def _record(self, store: str, method: str, index: int, kind: str, when: str, point: str | None,
                detail: str = "", error: str = "") -> FaultEvent:
        with self._lock:
            event = FaultEvent(len(self.fired) + 1, store, method, index, kind, when, point, detail, error)
            self.fired.append(event)
        for listener in list(self.listeners):
            listener(event)
        return event

    def _tag(self, event: FaultEvent) -> str:
        return f"[fault seed={self.seed}, event #{event.seq}]"

    # ------------------------------------------------------------------ running one call

    def call(self, store: str, method: str, fn: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
        """Run ``fn(*args, **kwargs)`` as ``store.method``, with whatever faults the plan has for it."""
        with self._lock:
            index = self._calls[(store, method)]
            self._calls[(store, method)] = index + 1
            choice = self._choose(store, method, index, "before") if self._rules else None
        if choice is not None:
            rule, kind, when = choice
            if kind == "torn" or rule.point == "mid":
                return self._split(rule, kind, store, method, index, fn, args, kwargs)
            self._inject(rule, kind, "before", store, method, index)
        result = fn(*args, **kwargs)
        if not self._rules:
            return result
        with self._lock:
            choice = self._choose(store, method, index, "after")
        if choice is not None:
            rule, kind, _ = choice
            if kind == "corrupt":
                return self._corrupt(store, method, index, result)
            self._inject(rule, kind, "after", store, method, index)
        return result

    def _inject(self, rule: _Rule, kind: str, when: str, store: str, method: str, index: int) -> None:
        if kind == "latency":
            self._record(store, method, index, kind, when, None, f"{rule.seconds:g} s")
            time.sleep(rule.seconds)
            return
        if kind == "hang":
            deadline = rule.seconds if rule.seconds and not rule.random else self.deadline
            event = self._record(store, method, index, kind, when, None, f"until the {deadline:g} s deadline",
                                 "DeadlineExceededError")
            if self._healed.wait(deadline):
                return  # healed while hanging: the call goes through, as a recovered link would
            raise DeadlineExceededError(
                f"injected fault (hang): {store}.{method} call {index} ({when} the call) did not answer within "
                f"{deadline:g} s {self._tag(event)}", store=store)
        if kind == "crash":
            self._crash(store, method, index, when, None)
        cls = rule.error or (StoreUnavailableError if kind == "transient" else StoreError)
        event = self._record(store, method, index, kind, when, None, error=cls.__name__)
        raise _make_error(cls, f"injected fault ({kind}): {store}.{method} call {index} ({when} the call) "
                               f"{self._tag(event)}", store)

    def _crash(self, store: str, method: str, index: int, when: str, point: str | None, detail: str = "") -> None:
        event = self._record(store, method, index, "crash", when, point, detail, "InjectedCrash")
        where = "part way through the batch" if point == "mid" else f"{when} the call"
        message = f"injected fault (crash): {store}.{method} call {index} ({where}) {self._tag(event)}"
        if self.crash_mode == "raise":
            raise InjectedCrash(message)
        try:  # say why the process died where someone will look; never let that stop the kill
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # SIGKILL is delivered asynchronously; never run past the crash point

    def _split(self, rule: _Rule, kind: str, store: str, method: str, index: int, fn: Callable[..., Any],
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A torn batch or a crash part way through one: apply a seeded prefix, then fail or die."""
        if not args:
            raise InvalidInputError(f"{store}.{method}: a {kind} fault needs the batch as first argument")
        batch = list(args[0])
        cut = int(_unit(self.seed, "cut", rule.id, store, method, index) * len(batch)) if len(batch) > 1 else 0
        cut = max(1, cut) if len(batch) > 1 else 0
        if cut:
            fn(batch[:cut], *args[1:], **kwargs)
        detail = f"applied {cut} of {len(batch)}"
        if kind == "crash":
            self._crash(store, method, index, "before", "mid", detail)
        event = self._record(store, method, index, kind, "before", None, detail, "StoreUnavailableError")
        raise StoreUnavailableError(
            f"injected fault (torn write): {store}.{method} call {index} applied {cut} of {len(batch)} operations, "
            f"then failed {self._tag(event)}", store=store)

    def _corrupt(self, store: str, method: str, index: int, result: Any) -> Any:
        altered, what = _corrupt_value(result, _unit(self.seed, "corrupt", store, method, index))
        self._record(store, method, index, "corrupt", "after", None, what)
        return altered


def _make_error(cls: type[BaseException], message: str, store: str) -> BaseException:
    try:
        return cls(message, store=store)  # type: ignore[call-arg]
    except TypeError:
        return cls(message)


def _corrupt_one(value: Any) -> Any:
    """An altered copy of one item, vector, or (vector, score) pair."""
    from memsys.domain.model import MemoryItem, MemoryVector

    if isinstance(value, MemoryItem):
        return value.replace(content={"memsys:corrupted": True, "was": str(value.content)[:60]})
    if isinstance(value, MemoryVector):
        flipped = tuple(-x for x in value.embedding)
        return dataclasses.replace(value, content={"memsys:corrupted": True}, embedding=flipped)
    if isinstance(value, tuple) and len(value) == 2:
        return (_corrupt_one(value[0]), value[1])
    return value


def _corrupt_value(result: Any, u: float) -> tuple[Any, str]:
    if result is None:
        return None, "nothing read, nothing altered"
    if isinstance(result, dict):
        if not result:
            return result, "nothing read, nothing altered"
        keys = sorted(result)
        key = keys[int(u * len(keys))]
        return {**result, key: _corrupt_one(result[key])}, f"altered {key!r}"
    if (isinstance(result, (list, tuple)) and not _is_pair(result)) or hasattr(result, "__next__"):
        items = list(result)
        if not items:
            return (iter(items) if hasattr(result, "__next__") else items), "nothing read, nothing altered"
        at = int(u * len(items))
        items[at] = _corrupt_one(items[at])
        return (iter(items) if hasattr(result, "__next__") else items), f"altered result {at}"
    return _corrupt_one(result), "altered the answer"


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], float)


# ---------------------------------------------------------------------- the wrapper

class FaultyStore:
    """A store seen through a FaultPlan. Build it with ``wrap_store``.

    Public methods are looked up on the wrapped store at each access, so ``hasattr``
    (and with it every runtime protocol check) answers as for the store; ``__class__``
    is the store's class, so ``isinstance`` does too and a MemoryManager treats the
    wrapper as it would treat the store. Attribute writes go to the store.
    """

    __slots__ = ("_fw_inner", "_fw_plan", "_fw_label")

    def __init__(self, inner: Any, plan: FaultPlan, name: str | None = None) -> None:
        object.__setattr__(self, "_fw_inner", inner)
        object.__setattr__(self, "_fw_plan", plan)
        object.__setattr__(self, "_fw_label", name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: D105 - isinstance() consults this
        return type(object.__getattribute__(self, "_fw_inner"))

    @property
    def fault_plan(self) -> FaultPlan:
        return self._fw_plan

    @property
    def wrapped(self) -> Any:
        return self._fw_inner

    @property
    def fault_name(self) -> str:
        """The name faults are matched and reported under: the one given, else the store's current name."""
        inner = self._fw_inner
        return self._fw_label or str(getattr(inner, "name", None) or type(inner).__name__)

    def __getattr__(self, attr: str) -> Any:
        inner = object.__getattribute__(self, "_fw_inner")
        value = getattr(inner, attr)
        if attr.startswith("_") or not callable(value):
            return value
        plan = object.__getattribute__(self, "_fw_plan")

        def faulty(*args: Any, **kwargs: Any) -> Any:
            return plan.call(self.fault_name, attr, value, args, kwargs)

        faulty.__name__ = attr
        faulty.__qualname__ = f"{type(inner).__name__}.{attr}"
        faulty.__doc__ = getattr(value, "__doc__", None)
        faulty.__wrapped__ = value  # type: ignore[attr-defined]
        return faulty

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._fw_inner, attr, value)

    def __delattr__(self, attr: str) -> None:
        delattr(self._fw_inner, attr)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._fw_inner)) | {"fault_plan", "wrapped", "fault_name"})

    def __enter__(self) -> FaultyStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultyStore({self._fw_inner!r}, seed={self._fw_plan.seed})"


def wrap_store(store: Any, plan: FaultPlan, name: str | None = None) -> Any:
    """``store`` seen through ``plan``: the same ports, capabilities, name and dimension.

    ``name`` is what the plan's ``store=`` filters and events call it (default: the
    store's ``name`` at call time, which a MemoryManager sets to its key)."""
    if not isinstance(plan, FaultPlan):
        raise InvalidInputError(f"wrap_store needs a FaultPlan, got {type(plan).__name__}")
    missing = [m for m in ("store", "retrieve", "search", "delete", "close") if not callable(getattr(store, m, None))]
    if missing:
        raise InvalidInputError(f"{type(store).__name__} is not a MemoryStore: it lacks {', '.join(missing)}")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidInputError(f"name must be None or a non-empty str, got {name!r}")
    return FaultyStore(store, plan, name)


def unwrap(store: Any) -> Any:
    """The store under any number of fault wrappers."""
    while type(store) is FaultyStore:
        store = object.__getattribute__(store, "_fw_inner")
    return store
