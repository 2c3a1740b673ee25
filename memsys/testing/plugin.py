"""pytest plugin for suites that use the kit: server markers and the CI rule.

Enable it with ``pytest_plugins = ["memsys.testing.plugin"]`` in a conftest.

* ``@pytest.mark.server``: the test needs a real server process (``chroma run``,
  Toxiproxy). Where none can be started it skips through
  ``skip_server_unavailable(reason)``, except when ``CI`` or
  ``MEMSYS_REQUIRE_SERVERS`` is set: then that skip is a failure, so a CI run can
  never go green by quietly skipping the real-server tests.
* ``@pytest.mark.docker``: needs a Docker engine (testcontainers). Skips with a
  reason where none answers, in CI too: the CI machines have no Docker engine.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest

#: Marks a skip as "the server could not be started", the only skip CI turns into a failure.
SERVER_UNAVAILABLE = "[server unavailable]"


def skip_server_unavailable(reason: str) -> NoReturn:
    pytest.skip(f"{SERVER_UNAVAILABLE} {reason}")


def servers_required() -> bool:
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no")
               for v in ("CI", "MEMSYS_REQUIRE_SERVERS"))


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "server: needs a real server process; CI turns a skip into a failure")
    config.addinivalue_line("markers", "docker: needs a Docker engine; skipped with a reason where none answers")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        _add_fault_replay(report)
    if report.skipped and item.get_closest_marker("server") is not None and servers_required() \
            and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if SERVER_UNAVAILABLE not in reason:
            return  # a skip for another reason (an undeclared capability) stays a skip
        report.outcome = "failed"
        report.longrepr = f"a server test was skipped where servers are required (CI): {reason}"


def _add_fault_replay(report: Any) -> None:
    """A failing test that ran port faults says how to replay them: the seed decides every fault."""
    import sys

    module = sys.modules.get("memsys.testing.port_faults")
    if module is None:
        return
    hints = [plan.replay_hint() for plan in module.live_plans() if plan.fired]
    if hints:
        report.sections.append(("fault plans (replay)", "\n".join(dict.fromkeys(hints))))
