"""Hypothesis settings profiles for the stateful suite, and the one way its machines are run.

    ci    seeded (derandomized: the same examples every run), no example database, no deadline,
          bounded: each machine runs the small dose its test names (the whole stateful suite in
          scenarios/ fits in about four minutes on two cores).
    deep  ten times the examples and twice the steps per example, on a fresh random seed each
          run (printed on failure). Select it with MEMSYS_PROFILE=deep.

Every failure ends with the lines that replay it:

    MEMSYS_PROFILE=deep MEMSYS_SEED=123 python -m pytest 'scenarios/test_stateful_mixed.py::test_x[lmdb+tinydb]'
    MEMSYS_BLOB='AXicY2BgYGBkYAB...' python -m pytest '...'    # exactly the shrunk failing example

MEMSYS_SEED reruns a seed (in either profile); MEMSYS_BLOB replays the @reproduce_failure blob
Hypothesis printed for the shrunk failure, whatever the profile; MEMSYS_SHRINK=0 skips shrinking.
"""

from __future__ import annotations

import os
import random
import re
import shlex
from typing import Any

import hypothesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import run_state_machine_as_test

PROFILE_ENV, SEED_ENV, BLOB_ENV = "MEMSYS_PROFILE", "MEMSYS_SEED", "MEMSYS_BLOB"
#: MEMSYS_SHRINK=0 reports the first failing example as found, unshrunk (a break run wants the catch,
#: not the shortest sequence, and shrinking a slow machine can take minutes).
SHRINK_ENV = "MEMSYS_SHRINK"
DEEP_EXAMPLES, DEEP_STEPS = 10, 2

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
    if name not in ("ci", "deep"):
        raise ValueError(f"{PROFILE_ENV} must be 'ci' or 'deep', got {name!r}")
    return name


def dose(examples: int, steps: int) -> tuple[int, int]:
    """The examples and steps a machine runs under the active profile."""
    if active() == "deep":
        return examples * DEEP_EXAMPLES, steps * DEEP_STEPS
    return examples, steps


def run(machine: type, *, examples: int, steps: int) -> None:
    """Run ``machine`` under the active profile with the CI dose ``examples`` x ``steps``; on a
    failure, add to the error the commands that replay it."""
    profile = active()
    examples, steps = dose(examples, steps)
    raw_seed, blob = os.environ.get(SEED_ENV, "").strip(), os.environ.get(BLOB_ENV, "").strip()
    seed: int | None = int(raw_seed) if raw_seed else None
    if seed is None and profile == "deep":
        seed = random.SystemRandom().randrange(2**32)
    chosen = settings(settings.get_profile(profile), max_examples=examples, stateful_step_count=steps,
                      derandomize=profile == "ci" and seed is None, **_COMMON)
    if os.environ.get(SHRINK_ENV, "").strip() in ("0", "false", "no"):
        chosen = settings(chosen, phases=[p for p in chosen.phases if p is not hypothesis.Phase.shrink])
    if blob:
        machine = hypothesis.reproduce_failure(hypothesis.__version__, blob.encode())(machine)
    elif seed is not None:
        machine = hypothesis.seed(seed)(machine)
    try:
        run_state_machine_as_test(machine, settings=chosen)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        exc.add_note(replay_text(exc, profile, seed))
        raise


def replay_text(exc: BaseException, profile: str, seed: int | None) -> str:
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    command = f"python -m pytest {shlex.quote(test)}" if test else "python -m pytest scenarios"
    notes = "\n".join(str(n) for n in getattr(exc, "__notes__", []))
    found = re.search(r"@reproduce_failure\('[^']*', b'([^']*)'\)", notes)
    lines = ["", "to replay this failure:"]
    if found:
        lines.append(f"  exactly the shrunk example:  {BLOB_ENV}={shlex.quote(found.group(1))} {command}")
    if seed is not None:
        lines.append(f"  the same run:                {PROFILE_ENV}={profile} {SEED_ENV}={seed} {command}")
    else:
        lines.append(f"  the same run (seeded):       {PROFILE_ENV}={profile} {command}")
    return "\n".join(lines)
