"""``memsys bench``: the CI regression gate and the performance trend report.

    memsys bench gate --base REF [--head REF] [--quick] [--threshold 0.15] [--max-seconds S] [--json FILE]
    memsys bench report [--results DIR | --gate-json FILE ...] --out DIR

``register(subparsers)`` adds both to the ``memsys`` command's sub-parsers; ``main(argv)``
(and ``python -m memsys.bench``) runs them on their own. Nothing here imports a backend until
a command runs, and nothing imports the repository's top-level ``benchmarks/`` folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def _gate(args: argparse.Namespace) -> int:
    from memsys.bench.gate import GateError, run_gate

    try:
        return run_gate(args.base, head=args.head, quick=args.quick, threshold=args.threshold,
                        confidence=args.confidence, budget=args.budget, only=args.only, json_path=args.json,
                        slowdown=args.slowdown, repo=args.repo, metric=args.metric, max_seconds=args.max_seconds)
    except GateError as exc:
        print(f"memsys bench gate: error: {exc}", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace) -> int:
    from memsys.bench.report import ReportError, run_report

    try:
        return run_report(results=args.results, gate_json=args.gate_json, out=args.out,
                          threshold=args.threshold, machine=args.machine)
    except ReportError as exc:
        print(f"memsys bench report: error: {exc}", file=sys.stderr)
        return 2


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench gate`` and ``bench report`` to the ``memsys`` command's sub-parsers."""
    bench = subparsers.add_parser("bench", help="performance regression gate and trend report")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)

    gate = bench_sub.add_parser(
        "gate", help="compare HEAD's hot paths with a base commit, interleaved, in one run",
        description="Check out REF beside HEAD, time every micro-benchmark on both sides interleaved until the "
        "ratio's confidence interval is tight or the budget is spent. Exit status 1 only when a benchmark's "
        "interval lies wholly above 1 + threshold (or HEAD can no longer run it), 0 otherwise, 2 when the gate "
        "cannot run.")
    gate.add_argument("--base", required=True, help="the commit to compare against (any git ref, e.g. HEAD~1, main)")
    gate.add_argument("--head", default=None,
                      help="measure this ref instead of the working tree (e.g. HEAD for an A/A run)")
    gate.add_argument("--quick", action="store_true", help="a CI-sized dose (well under two minutes)")
    gate.add_argument("--threshold", type=float, default=0.15,
                      help="allowed slowdown as a fraction: fail only when HEAD is surely slower than base "
                      "x (1 + threshold), i.e. the interval's low end is above it (default 0.15)")
    gate.add_argument("--confidence", type=float, default=0.95, help="two-sided confidence of the interval")
    gate.add_argument("--budget", type=float, default=None,
                      help="seconds of measuring (default 60 quick, 600 full); every benchmark gets its minimum")
    gate.add_argument("--max-seconds", type=float, default=None,
                      help="a hard wall-clock limit for the whole gate (CI): no block starts after it, and what was "
                      "measured by then is judged as it stands (an unconfirmed suspect does not fail)")
    gate.add_argument("--only", action="append", default=None, metavar="PATTERNS",
                      help="comma-separated benchmark names or globs (lmdb.*,manager.commit); repeatable")
    gate.add_argument("--metric", choices=["cpu", "wall"], default="cpu",
                      help="what to gate on: the workers' CPU time (default; a shared machine's waits for a core "
                      "are charged to wall time only) or wall time (for a quiet dedicated runner); both are "
                      "measured and reported")
    gate.add_argument("--json", default=None, metavar="FILE", help="write every round and verdict as JSON")
    gate.add_argument("--slowdown", default=None, metavar="NAME=FACTOR,...",
                      help="stretch these benchmarks' timed regions on the HEAD side only (a deliberately slowed "
                      "build, to see the gate fail); also read from MEMSYS_BENCH_SLOWDOWN")
    gate.add_argument("--repo", default=None, help="the git repository (default: the one around the current folder)")
    gate.set_defaults(func=_gate)

    report = bench_sub.add_parser(
        "report", help="trend summary and PNG plots from asv results or gate JSON",
        description="Write OUT/README.md (a short trend summary) and one PNG per benchmark across commits, "
        "flagging the commits where a figure moved beyond its noise.")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", default=None, metavar="DIR", help="an asv results folder (.asv/results)")
    source.add_argument("--gate-json", action="append", default=None, metavar="FILE",
                        help="a `bench gate --json` file; repeat for a trend over several runs")
    report.add_argument("--out", required=True, metavar="DIR", help="folder for README.md and the plots")
    report.add_argument("--threshold", type=float, default=0.10,
                        help="a step between neighbouring commits counts when it exceeds this fraction AND "
                        "the noise (default 0.10)")
    report.add_argument("--machine", default=None, help="asv machine name (default: every machine in the results)")
    report.set_defaults(func=_report)
    return bench


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsys", description="memsys performance tools")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bench gate`` or ``bench report``: ``main(["gate", "--base", "HEAD~1"])``."""
    args = build_parser().parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
