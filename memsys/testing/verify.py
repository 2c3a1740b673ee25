"""Verify an adapter class outside any test suite: ``memsys verify-adapter package.module:Class``.

``run_verify`` runs the sections and reports each check by section and name:

* ``contract``: the conformance kit (run_contract: a generated test module that
  subclasses the right contracts with ``Class(path=...)`` as the store factory,
  run by pytest in-process);
* ``stateful``: run_stateful_conformance, the adapter against the in-memory
  reference through a Hypothesis state machine;
* ``faults``: the adapter under port-level fault wrappers, alone and inside
  cross-store transactions with LMDB and DuckDB (memsys.testing.verify_faults);
* ``crash``: SIGKILL of a child writing through it, alone and in cross-store
  transactions (memsys.testing.verify_crash);
* ``damage``: damaged files reopened in a child process; ``powerloss``: power
  failures under a FUSE file system; ``leaks``: open files, threads and memory over
  many open/close cycles in a fresh child (memsys.testing.verify_sections).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from memsys.domain.errors import InvalidInputError
from memsys.ports import Capability


@dataclasses.dataclass
class CheckResult:
    name: str
    outcome: str  # "passed" | "failed" | "skipped" | "error" | "xfailed" | "xpassed"
    detail: str = ""
    duration: float = 0.0


@dataclasses.dataclass
class ContractReport:
    target: str
    contracts: list[str]
    results: dict[str, CheckResult]
    output: str = ""

    def outcome(self, check: str) -> str:
        return self.results[check].outcome

    def by_outcome(self, outcome: str) -> list[str]:
        return sorted(name for name, r in self.results.items() if r.outcome == outcome)

    @property
    def ok(self) -> bool:
        return bool(self.results) and not any(r.outcome in ("failed", "error") for r in self.results.values())


def resolve(target: str) -> type:
    """Import ``package.module:Class``; the current directory is importable, as with ``python -m``."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInputError(f"adapter target must look like package.module:Class, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise InvalidInputError(f"{module_name!r} has no attribute {attr!r}") from exc
    if not isinstance(obj, type):
        raise InvalidInputError(f"{target} is not a class")
    return obj


def contracts_for(cls: type) -> list[str]:
    capabilities = frozenset(getattr(cls, "capabilities", frozenset()))
    contracts = []
    if Capability.VECTOR_SEARCH in capabilities:
        contracts.append("VectorStoreContract")
    if Capability.GRAPH in capabilities:
        contracts.append("GraphStoreContract")
    return contracts or ["MemoryStoreContract"]


class _Collector:
    def __init__(self) -> None:
        self.results: dict[str, CheckResult] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        name = report.nodeid.split("::")[-1]
        if report.when == "call" or report.outcome != "passed":
            if name in self.results and self.results[name].outcome != "passed":
                return  # keep the first failure; teardown noise after a failed call says less
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            elif report.when != "call" and report.failed:
                outcome = "error"
            self.results[name] = CheckResult(name, outcome, _detail(report), getattr(report, "duration", 0.0))


def _detail(report: Any) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        return crash.message if crash is not None else str(report.longrepr)[-500:]
    return ""


def run_contract(target: str | type, *, contracts: list[str] | None = None,
                 pytest_args: list[str] | None = None, options: dict[str, Any] | None = None) -> ContractReport:
    """Run the kit against ``target`` (a class or ``package.module:Class``) and report each check;
    ``options`` are extra constructor arguments (``Class(path=..., **options)``)."""
    import pytest

    cls = resolve(target) if isinstance(target, str) else target
    contracts = contracts or contracts_for(cls)
    options = dict(options or {})
    module, qualname = cls.__module__, cls.__qualname__
    source = textwrap.dedent(f"""\
        import importlib
        from memsys.testing.contract import {", ".join(contracts)}

        _target = importlib.import_module({module!r})
        for _part in {qualname!r}.split("."):
            _target = getattr(_target, _part)

        class TestAdapterContract({", ".join(contracts)}):
            def create_store(self, path):
                return _target(path=path, **{options!r})
        """)
    collector = _Collector()
    with tempfile.TemporaryDirectory(prefix="memsys-verify-") as folder:
        with open(os.path.join(folder, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        # A fresh module name per run: pytest refuses a second module of the same name in one process.
        test_file = os.path.join(folder, f"test_adapter_contract_{uuid.uuid4().hex[:12]}.py")
        with open(test_file, "w") as f:
            f.write(source)
        output = io.StringIO()
        args = [test_file, "-q", "-p", "no:cacheprovider", "--import-mode=importlib", "--rootdir", folder, "-c",
                os.path.join(folder, "pytest.ini"), *(pytest_args or [])]
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            pytest.main(args, plugins=[collector])
    target_name = target if isinstance(target, str) else f"{module}:{qualname}"
    return ContractReport(target_name, contracts, collector.results, output.getvalue())


def print_report(report: ContractReport, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"memsys conformance kit: {report.target} ({', '.join(report.contracts)})")
    table.add_column("check")
    table.add_column("outcome")
    table.add_column("detail", overflow="fold")
    styles = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow",
              "xfailed": "yellow", "xpassed": "red"}
    for name in sorted(report.results):
        r = report.results[name]
        table.add_row(name.removeprefix("test_").replace("_", " "), f"[{styles.get(r.outcome, '')}]{r.outcome}",
                      r.detail.splitlines()[0][:300] if r.detail else "")
    console.print(table)
    counts = {o: len(report.by_outcome(o)) for o in ("passed", "failed", "error", "skipped")}
    console.print(", ".join(f"{n} {o}" for o, n in counts.items()))


# ---------------------------------------------------------------------------------------------------
# memsys verify-adapter: every section

SECTIONS = ("contract", "stateful", "faults", "crash", "damage", "powerloss", "leaks")
_STORE_METHODS = ("store", "retrieve", "search", "delete", "close")


@dataclasses.dataclass(frozen=True)
class AdapterTarget:
    """The adapter under verification: ``module:Class`` plus constructor options. Picklable, so child
    processes build the same store; ``open(path)`` builds ``Class(path=path, **options)``."""

    module: str
    qualname: str
    options: tuple[tuple[str, Any], ...] = ()
    #: A folder to put on a child's import path so it can import ``module`` (None: already importable).
    import_root: str | None = None

    @property
    def name(self) -> str:
        return f"{self.module}:{self.qualname}"

    @property
    def spec(self) -> str:
        """The target as ``memsys verify-adapter`` takes it back (options included)."""
        if not self.options:
            return self.name
        import urllib.parse

        values = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in self.options}
        return f"{self.name}?{urllib.parse.urlencode(values)}"

    def cls(self) -> type:
        if self.import_root and self.import_root not in sys.path:
            sys.path.insert(0, self.import_root)
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return obj

    def open(self, path: str) -> Any:
        return self.cls()(path=path, **dict(self.options))

    __call__ = open

    def child_env(self) -> dict[str, str]:
        """The environment for a child process that must import the adapter."""
        env = dict(os.environ, PYTHONHASHSEED="0")
        roots = [r for r in (self.import_root, os.getcwd()) if r]
        env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
        return env


def _import_root(cls: type) -> str | None:
    """The sys.path entry ``cls``'s module was imported from (children need it on theirs)."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if not file:
        return None
    root = os.path.dirname(os.path.abspath(file))
    if os.path.basename(file) == "__init__.py":
        root = os.path.dirname(root)
    for _ in range(cls.__module__.count(".")):
        root = os.path.dirname(root)
    return root


def resolve_target(target: str | type, options: dict[str, Any] | None = None) -> AdapterTarget:
    """``package.module:Class``, a store spec (``package.module:Class?path=P&opt=v``, ``lmdb``,
    ``faiss:P?dimension=8``) or a class. Raises InvalidInputError with one line when the target
    cannot be imported or is not a store (it lacks the MemoryStore methods)."""
    spec_options: dict[str, Any] = {}
    if isinstance(target, str):
        from memsys.adapters import BACKENDS

        text = target.strip()
        if text in BACKENDS:
            text = f"{text}:unused"
        if "?" in text or text.split(":", 1)[0] in BACKENDS:
            from memsys.specs import parse_spec

            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            head, _, query = text.partition("?")
            if ":" in head and head.split(":", 1)[0] not in BACKENDS and \
                    "path" not in dict(p.partition("=")[::2] for p in query.split("&")):
                text = f"{text}&path=unused"  # each check picks its own folder; a spec need not name one
            spec = parse_spec(text)
            cls = spec.adapter_class()
            spec_options = dict(spec.options)  # the spec's path is ignored: each check uses its own folders
        else:
            cls = resolve(text)
    elif isinstance(target, type):
        cls = target
    else:
        raise InvalidInputError(f"an adapter target is package.module:Class or a class, got {type(target).__name__}")
    if not isinstance(cls, type):
        raise InvalidInputError(f"{target} is not a class")
    missing = [m for m in _STORE_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise InvalidInputError(
            f"{cls.__module__}.{cls.__qualname__} is not a memsys store: it lacks {', '.join(missing)} "
            "(an adapter implements store, retrieve, search, delete and close; see docs/adapters.md)")
    merged = {**spec_options, **(options or {})}
    return AdapterTarget(cls.__module__, cls.__qualname__, tuple(sorted(merged.items())), _import_root(cls))


@dataclasses.dataclass(frozen=True)
class Dose:
    """How hard each section works. ``quick`` is the CI dose; ``deep`` is for a soak."""

    name: str
    stateful_examples: int
    stateful_steps: int
    fault_ops: int
    fault_transactions: int
    cross_transactions: int
    deadline: float
    crash_kills_alone: int
    crash_kills_tx: int
    damage_trials: int
    powerloss_writes: int
    powerloss_transactions: int
    #: leaks: unjudged cycles first (engines and caches load once), then sampled and traced cycles.
    leak_warm_up: int = 4
    leak_cycles: int = 16
    leak_traced_cycles: int = 8
    leak_timeout: float = 120.0

    @classmethod
    def named(cls, name: str) -> Dose:
        return DOSES[name]


DOSES = {
    # quick measures 12 cycles: fewer lets one allocator step look like a leak (slope ~ 1.5 x step / cycles).
    "quick": Dose("quick", 10, 20, 60, 12, 12, 0.4, 2, 3, 4, 20, 8, 4, 12, 6),
    "standard": Dose("standard", 30, 30, 200, 30, 40, 0.5, 6, 10, 12, 60, 20, 4, 16, 8),
    "deep": Dose("deep", 200, 50, 2000, 200, 300, 1.0, 40, 80, 60, 300, 100, 8, 200, 32, 600.0),
}


@dataclasses.dataclass
class Check:
    section: str
    name: str
    outcome: str  # passed | failed | skipped | error
    detail: str = ""
    duration: float = 0.0

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "error")


@dataclasses.dataclass
class VerifyReport:
    target: str
    seed: int
    dose: str
    checks: list[Check] = dataclasses.field(default_factory=list)
    durations: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and not any(c.failed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    def failed_names(self) -> set[str]:
        """``section.check`` of every failed check."""
        return {f"{c.section}.{c.name}" for c in self.failures()}

    def section(self, name: str) -> list[Check]:
        return [c for c in self.checks if c.section == name]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "seed": self.seed, "dose": self.dose, "ok": self.ok,
                "durations": self.durations,
                "sections": {s: [dataclasses.asdict(c) for c in self.section(s)]
                             for s in dict.fromkeys(c.section for c in self.checks)}}


def _contract_section(target: AdapterTarget, workdir: str, seed: int, dose: Dose) -> list[Check]:
    report = run_contract(target.cls(), options=dict(target.options))
    if not report.results:
        return [Check("contract", "collection", "error", report.output[-3000:])]
    mapped = {"passed": "passed", "failed": "failed", "error": "error", "skipped": "skipped",
              "xfailed": "skipped", "xpassed": "failed"}
    return [Check("contract", name.removeprefix("test_"), mapped.get(r.outcome, r.outcome), r.detail, r.duration)
            for name, r in sorted(report.results.items())]


def _stateful_section(target: AdapterTarget, workdir: str, seed: int, dose: Dose) -> list[Check]:
    from memsys.testing.stateful import StatefulConformanceError, run_stateful_conformance

    try:
        run_stateful_conformance(target.open, seed=seed, max_examples=dose.stateful_examples,
                                 steps=dose.stateful_steps)
    except StatefulConformanceError as exc:
        return [Check("stateful", "agrees_with_the_reference", "failed", str(exc))]
    return [Check("stateful", "agrees_with_the_reference", "passed",
                  f"{dose.stateful_examples} examples of up to {dose.stateful_steps} steps, seed {seed}")]


def _section_runner(name: str) -> Any:
    if name == "contract":
        return _contract_section
    if name == "stateful":
        return _stateful_section
    if name == "faults":
        from memsys.testing.verify_faults import faults_section

        return faults_section
    if name == "crash":
        from memsys.testing.verify_crash import crash_section

        return crash_section
    from memsys.testing import verify_sections

    return {"damage": verify_sections.damage_section, "powerloss": verify_sections.powerloss_section,
            "leaks": verify_sections.leaks_section}[name]


def run_verify(target: str | type | AdapterTarget, *, sections: Sequence[str] | None = None, seed: int = 0,
               dose: str | Dose = "standard", workdir: str | None = None,
               progress: Callable[[str], None] | None = None) -> VerifyReport:
    """Run the chosen sections (default: all) against ``target`` and report every check."""
    import shutil
    import time
    import traceback

    adapter = target if isinstance(target, AdapterTarget) else resolve_target(target)
    dose = dose if isinstance(dose, Dose) else Dose.named(dose)
    chosen = list(sections or SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise InvalidInputError(f"unknown section(s) {', '.join(unknown)}; sections are {', '.join(SECTIONS)}")
    report = VerifyReport(adapter.name, seed, dose.name)
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="memsys-verify-")
    try:
        for section in chosen:
            if progress:
                progress(section)
            folder = os.path.join(workdir, section)
            os.makedirs(folder, exist_ok=True)
            started = time.perf_counter()
            try:
                checks = _section_runner(section)(adapter, folder, seed, dose)
            except Exception as exc:  # noqa: BLE001 - a section that breaks is a failure, reported as such
                checks = [Check(section, "section", "error", f"{type(exc).__name__}: {exc}\n"
                                + "".join(traceback.format_exception(exc))[-2500:])]
            report.durations[section] = round(time.perf_counter() - started, 2)
            report.checks.extend(checks)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def print_verify_report(report: VerifyReport, console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    styles = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow"}
    for section in dict.fromkeys(c.section for c in report.checks):
        checks = report.section(section)
        table = Table(title=f"{section} ({report.durations.get(section, 0):.1f} s)", title_justify="left")
        table.add_column("check")
        table.add_column("outcome")
        table.add_column("detail", overflow="fold")
        for c in checks:
            detail = c.detail.splitlines()[0][:300] if c.detail else ""
            table.add_row(c.name.replace("_", " "), f"[{styles.get(c.outcome, '')}]{c.outcome}", escape(detail))
        console.print(table)
    for c in report.failures():
        console.print(f"[bold red]FAILED {c.section}.{c.name}[/]")
        console.print(escape(c.detail), highlight=False)
    counts = {o: sum(1 for c in report.checks if c.outcome == o) for o in ("passed", "failed", "error", "skipped")}
    verdict = "[green]verified[/]" if report.ok else "[bold red]NOT verified[/]"
    console.print(f"{report.target}: {verdict} ({', '.join(f'{n} {o}' for o, n in counts.items())}; "
                  f"seed {report.seed}, dose {report.dose})")
