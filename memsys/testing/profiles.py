"""Hypothesis settings profiles for the stateful machines, and the one way they are run.

    ci    seeded (derandomized: the same examples every run), no example database, no deadline,
          bounded: each machine runs the small dose its caller names (the whole stateful suite in
          scenarios/ fits in about four minutes on two cores).
    deep  ten times the examples and twice the steps per example, on a fresh random seed each
          run unless one is given (printed on failure). Select it with MEMSYS_PROFILE=deep, or
          ``memsys chaos run --deep`` (which seeds it from the run's seed).

Every failure ends with the lines that replay it, for example:

    MEMSYS_PROFILE=deep MEMSYS_SEED=123 python -m pytest 'scenarios/test_stateful_mixed.py::test_x[lmdb+tinydb]'
    MEMSYS_BLOB='AXicY2BgYGBkYAB...' python -m pytest '...'    # exactly the shrunk failing example

MEMSYS_SEED reruns a seed (in either profile); MEMSYS_BLOB replays the @reproduce_failure blob
Hypothesis printed for the shrunk failure, whatever the profile; MEMSYS_SHRINK=0 skips shrinking.

Hypothesis comes with the ``kit`` extra (``pip install 'memsys[kit]'``), as for memsys.testing.stateful.
"""

from __future__ import annotations

import os
import random
import re
import shlex
from collections.abc import Callable
from typing import Any

try:
    import hypothesis
    from hypothesis import HealthCheck, settings
    from hypothesis.errors import InvalidArgument
    from hypothesis.reporting import with_reporter
    from hypothesis.stateful import run_state_machine_as_test
except ImportError as exc:  # pragma: no cover - the kit extra is missing
    from memsys.domain.errors import MissingBackend

    raise MissingBackend("hypothesis", "kit") from exc

PROFILE_ENV, SEED_ENV, BLOB_ENV = "MEMSYS_PROFILE", "MEMSYS_SEED", "MEMSYS_BLOB"
#: MEMSYS_SHRINK=0 reports the first failing example as found, unshrunk (a break run wants the catch,
#: not the shortest sequence, and shrinking a slow machine can take minutes).
SHRINK_ENV = "MEMSYS_SHRINK"
DEEP_EXAMPLES, DEEP_STEPS = 10, 2
PROFILES = ("ci", "deep")

#: What every stateful run adds to its profile: machines are slow to build, and one bug per report.
_COMMON = dict(database=None, deadline=None, print_blob=True, report_multiple_bugs=False,
               suppress_health_check=list(HealthCheck))
# "ci": the suite's own seeded profile when the root conftest registered it (never redefined here,
# so tests outside scenarios/ keep theirs), else the same thing; the doses are per machine.
try:
    settings.get_profile("ci")
except InvalidArgument:
    settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("deep", parent=settings.get_profile("ci"), derandomize=False)


def active() -> str:
    name = os.environ.get(PROFILE_ENV, "ci").strip() or "ci"
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV} must be 'ci' or 'deep', got {name!r}")
    return name


def dose(examples: int, steps: int, profile: str | None = None) -> tuple[int, int]:
    """The examples and steps a machine runs under ``profile`` (default: the active one)."""
    if (profile or active()) == "deep":
        return examples * DEEP_EXAMPLES, steps * DEEP_STEPS
    return examples, steps


def _shrink_env() -> bool | None:
    value = os.environ.get(SHRINK_ENV, "").strip().lower()
    return False if value in ("0", "false", "no") else None


def run(machine: type, *, examples: int, steps: int, profile: str | None = None, seed: int | None = None,
        shrink: bool | None = None, command: str | None = None,
        reporter: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``machine`` under ``profile`` (default: MEMSYS_PROFILE, else ci) with the CI dose
    ``examples`` x ``steps`` (the deep profile multiplies it); on a failure, add to the error the
    lines that replay it.

    ``seed`` seeds the run (MEMSYS_SEED overrides it; the deep profile draws one when neither is
    given); MEMSYS_BLOB replays one example exactly. ``shrink=False`` (or MEMSYS_SHRINK=0) reports
    the first failing example unshrunk. ``command`` is the command the replay lines rerun (default:
    the pytest test running now); ``reporter`` receives what Hypothesis reports (the falsifying
    steps). Returns the examples, steps and seed run."""
    explicit = profile is not None
    profile = profile or active()
    if profile not in PROFILES:
        raise ValueError(f"profile must be 'ci' or 'deep', got {profile!r}")
    examples, steps = dose(examples, steps, profile)
    raw_seed, blob = os.environ.get(SEED_ENV, "").strip(), os.environ.get(BLOB_ENV, "").strip()
    if raw_seed:
        seed = int(raw_seed)
    if seed is None and profile == "deep":
        seed = random.SystemRandom().randrange(2**32)
    chosen = settings(settings.get_profile(profile), max_examples=examples, stateful_step_count=steps,
                      derandomize=profile == "ci" and seed is None, **_COMMON)
    if shrink is None:
        shrink = _shrink_env()
    if shrink is False:
        chosen = settings(chosen, phases=[p for p in chosen.phases if p is not hypothesis.Phase.shrink])
    if blob:
        machine = hypothesis.reproduce_failure(hypothesis.__version__, blob.encode())(machine)
    elif seed is not None:
        machine = hypothesis.seed(seed)(machine)
    try:
        if reporter is None:
            run_state_machine_as_test(machine, settings=chosen)
        else:
            with with_reporter(lambda text: reporter(str(text))):
                run_state_machine_as_test(machine, settings=chosen)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        exc.add_note(replay_text(exc, profile, seed, command=command, profile_in_env=not explicit))
        raise
    return {"examples": examples, "steps": steps, "seed": seed, "profile": profile}


def blob_of(exc: BaseException, reported: str = "") -> str | None:
    """The @reproduce_failure blob Hypothesis printed for ``exc`` (in its notes or in ``reported``)."""
    notes = "\n".join(str(n) for n in getattr(exc, "__notes__", []))
    found = re.search(r"@reproduce_failure\('[^']*', b'([^']*)'\)", notes + "\n" + reported)
    return found.group(1) if found else None


def replay_text(exc: BaseException, profile: str, seed: int | None, *, command: str | None = None,
                profile_in_env: bool = True) -> str:
    """The lines that replay ``exc``: the exact example (MEMSYS_BLOB) and the same run (seed).
    ``profile_in_env=False`` when ``command`` itself chooses the profile (``memsys chaos run --deep``)."""
    if command is None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
        command = f"python -m pytest {shlex.quote(test)}" if test else "python -m pytest scenarios"
    prefix = f"{PROFILE_ENV}={profile} " if profile_in_env else ""
    found = blob_of(exc)
    lines = ["", "to replay this failure:"]
    if found:
        lines.append(f"  exactly the shrunk example:  {BLOB_ENV}={shlex.quote(found)} {command}")
    if seed is not None:
        lines.append(f"  the same run:                {prefix}{SEED_ENV}={seed} {command}")
    else:
        lines.append(f"  the same run (seeded):       {prefix}{command}".rstrip())
    return "\n".join(lines)


__all__ = ["BLOB_ENV", "DEEP_EXAMPLES", "DEEP_STEPS", "PROFILE_ENV", "SEED_ENV", "SHRINK_ENV", "active", "blob_of",
           "dose", "replay_text", "run"]
