"""Mutation testing for memsys: run mutmut 3 over chosen packages with a targeted test selection.

Usage (from the repository root):

    python scripts/mutation.py                         # application + resilience, seeded sample
    python scripts/mutation.py --sample 0              # every mutant (slow: hours on 2 cores)
    python scripts/mutation.py --target adapters       # the adapters, with the adapter tests
    python scripts/mutation.py --report                # re-print the score of the last run
    python scripts/mutation.py --resume                # re-test only survivors / unchecked mutants

mutmut reads its settings only from ``[tool.mutmut]`` in pyproject.toml (or setup.cfg) in the
working directory and writes a ``mutants/`` tree there.  To keep the checkout clean this script
copies the package, the tests and pyproject.toml into a scratch directory (``build/mutation``,
ignored by git), appends the ``[tool.mutmut]`` block it builds below, and runs ``mutmut run``
there.  Process isolation is ``forkserver``: mutmut's default ``fork`` mode hangs on the
threads that the suite's fixtures start.

Sampling: with ``--sample N`` (default 20) the script generates every mutant, then picks N per
source file with ``random.Random(f"{seed}:{path}").sample`` over the sorted mutant names, so the
same sample is drawn on every machine for the same code (for 6 <= N <= 21, a smaller N draws a
subset of a larger one, so ``--resume`` reuses verdicts).  The score printed is killed / sampled
per package; "no tests" (a mutant in code no selected test reaches) counts as a survivor, a
timeout counts as killed (mutmut's own convention is to list it apart).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What to mutate, and the tests that exercise it (kept small: each mutant runs only the
# selected tests that cover the mutated function, but the selection bounds the clean run).
TARGETS: dict[str, dict[str, list[str]]] = {
    "core": {
        "mutate": ["memsys/application/*", "memsys/resilience/*"],
        "tests": [
            "tests/application",
            "tests/resilience",
            "tests/faults/test_coordinator_faults.py",
            "tests/faults/test_reconciliation_and_cache.py",
            "tests/mutation",
        ],
    },
    "adapters": {
        "mutate": ["memsys/adapters/*"],
        "tests": ["tests/adapters", "tests/mutation/test_adapter_gaps.py"],
    },
}

# Files that are wiring rather than logic, excluded from the score.
DO_NOT_MUTATE = ["memsys/*/__init__.py"]


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def mutmut_block(target: str, children: int) -> str:
    spec = TARGETS[target]
    tests = [t for t in spec["tests"] if (ROOT / t).exists()]  # a test file not written yet is skipped
    return "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["memsys"]',
            f"only_mutate = {_toml_list(spec['mutate'])}",
            f"do_not_mutate = {_toml_list(DO_NOT_MUTATE)}",
            f"pytest_add_cli_args_test_selection = {_toml_list(tests)}",
            # -p no:cacheprovider: the copies must not write .pytest_cache into the scratch tree
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]',
            'also_copy = ["conftest.py"]',
            'process_isolation = "forkserver"',
            # The suite's timings vary a lot under load; a generous multiplier avoids
            # calling a slow-but-killed mutant a timeout.
            "timeout_multiplier = 20.0",
            "timeout_constant = 5.0",
            "use_git_change_detection = false",
            "",
        ]
    )


def prepare(scratch: Path, target: str, children: int, fresh: bool) -> None:
    if fresh and scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis")
    for name in ("memsys", "tests"):
        dest = scratch / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(ROOT / name, dest, ignore=ignore)
    shutil.copy2(ROOT / "conftest.py", scratch / "conftest.py")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if "[tool.mutmut]" in pyproject:
        raise SystemExit("pyproject.toml already has [tool.mutmut]; this script owns that block")
    (scratch / "pyproject.toml").write_text(pyproject + mutmut_block(target, children), encoding="utf-8")


def generate(scratch: Path) -> None:
    """Write every mutant (no tests run) so the sample can be drawn from the full set."""
    code = (
        "from mutmut.__main__ import copy_src_dir, copy_also_copy_files, create_mutants\n"
        "copy_src_dir(); copy_also_copy_files(); create_mutants(2)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=scratch, check=True)


def all_mutants(scratch: Path) -> dict[str, list[str]]:
    """Mutant names per source file, from mutmut's .meta files."""
    out: dict[str, list[str]] = {}
    for meta in sorted((scratch / "mutants").rglob("*.py.meta")):
        rel = str(meta.relative_to(scratch / "mutants"))[: -len(".meta")]
        names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
        if names:
            out[rel] = names
    return out


def draw(mutants: dict[str, list[str]], per_file: int, seed: int) -> list[str]:
    chosen: list[str] = []
    for path in sorted(mutants):
        names = mutants[path]
        if per_file <= 0 or len(names) <= per_file:
            chosen.extend(names)
        else:
            # one Random per file, seeded by seed and path: adding mutants to one file
            # does not reshuffle the sample of the others
            chosen.extend(sorted(random.Random(f"{seed}:{path}").sample(names, per_file)))
    return chosen


def verdicts(scratch: Path) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in (scratch / "mutants").rglob("*.py.meta"):
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def unresolved(scratch: Path, name: str, _cache: dict[str, int | None] = {}) -> bool:
    from mutmut.stats import status_by_exit_code

    if not _cache:
        _cache.update(verdicts(scratch))
    code = _cache.get(name)
    return code is None or status_by_exit_code[code] in ("survived", "no tests", "suspicious", "skipped")


def report(scratch: Path, names: list[str] | None) -> dict[str, dict[str, int]]:
    from mutmut.stats import status_by_exit_code

    selected = set(names) if names is not None else None
    packages: dict[str, dict[str, int]] = {}
    survivors: list[tuple[str, str]] = []
    for meta in sorted((scratch / "mutants").rglob("*.py.meta")):
        rel = str(meta.relative_to(scratch / "mutants"))
        package = "/".join(rel.split("/")[:2])
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for name, code in sorted(codes.items()):
            if selected is not None and name not in selected:
                continue
            if code is None:
                continue  # not run (outside the sample)
            status = status_by_exit_code[code]
            row = packages.setdefault(package, {"killed": 0, "total": 0})
            row["total"] += 1
            if status in ("killed", "timeout", "caught by type check", "segfault"):
                row["killed"] += 1
            else:
                survivors.append((name, status))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\nmutation score ({stamp})")
    for package, row in sorted(packages.items()):
        pct = 100.0 * row["killed"] / row["total"] if row["total"] else 0.0
        print(f"  {package:<24} {row['killed']:>4}/{row['total']:<4} killed  {pct:5.1f}%")
    if survivors:
        print(f"\nsurvivors (inspect with: cd {scratch} && mutmut show NAME):")
        for name, status in survivors:
            print(f"  {status:<10} {name}")
    return packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=sorted(TARGETS), default="core")
    parser.add_argument("--sample", type=int, default=20, help="mutants per file (0 = all)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--children", type=int, default=2, help="mutmut workers (keep 1-2 on a shared box)")
    parser.add_argument("--scratch", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument("--resume", action="store_true", help="keep earlier results in the scratch tree")
    parser.add_argument("--report", action="store_true", help="only print the score of the last run")
    parser.add_argument("--min-score", type=float, default=0.0, help="exit 1 if any package scores lower (%%)")
    parser.add_argument("names", nargs="*", help="run only these mutant names (mutmut globs allowed)")
    args = parser.parse_args(argv)
    scratch = args.scratch.resolve() if args.target == "core" else args.scratch.resolve().with_name(
        args.scratch.name + "-" + args.target
    )

    if args.report:
        sample_file = scratch / "sample.json"
        names = json.loads(sample_file.read_text()) if sample_file.exists() else None
        packages = report(scratch, names)
    else:
        prepare(scratch, args.target, args.children, fresh=not args.resume)
        generate(scratch)
        sample = draw(all_mutants(scratch), args.sample, args.seed)
        # the score is always over the drawn sample; naming mutants only re-tests those
        (scratch / "sample.json").write_text(json.dumps(sample, indent=0))
        names = args.names or sample
        if args.resume and not args.names:
            # re-test only what has no verdict yet or survived: new tests may kill it now
            names = [n for n in names if unresolved(scratch, n)]
        total = sum(len(v) for v in all_mutants(scratch).values())
        print(f"mutants generated: {total}; running {len(names)} (seed {args.seed}, {args.sample or 'all'}/file)")
        cmd = ["mutmut", "run", "--max-children", str(args.children), *names]
        subprocess.run(cmd, cwd=scratch, check=False)
        packages = report(scratch, json.loads((scratch / "sample.json").read_text()))
    low = [p for p, r in packages.items() if r["total"] and 100.0 * r["killed"] / r["total"] < args.min_score]
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
