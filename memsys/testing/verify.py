"""Run the conformance kit against an adapter class, outside any test suite.

``memsys verify-adapter package.module:Class`` uses this: it writes a small
test module that subclasses the right contracts with ``Class(path=...)`` as the
store factory, runs pytest on it in-process, and collects one outcome per check.
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
                 pytest_args: list[str] | None = None) -> ContractReport:
    """Run the kit against ``target`` (a class or ``package.module:Class``) and report each check."""
    import pytest

    cls = resolve(target) if isinstance(target, str) else target
    contracts = contracts or contracts_for(cls)
    module, qualname = cls.__module__, cls.__qualname__
    source = textwrap.dedent(f"""\
        import importlib
        from memsys.testing.contract import {", ".join(contracts)}

        _target = importlib.import_module({module!r})
        for _part in {qualname!r}.split("."):
            _target = getattr(_target, _part)

        class TestAdapterContract({", ".join(contracts)}):
            def create_store(self, path):
                return _target(path=path)
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
