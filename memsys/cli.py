"""The ``memsys`` command. Every subcommand imports what it needs when it runs,
so ``memsys --help`` imports no backend and no harness tool."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _verify_adapter(args: argparse.Namespace) -> int:
    from memsys.testing.verify import print_report, run_contract

    contracts = [f"{c.capitalize()}StoreContract" for c in args.contract] if args.contract else None
    report = run_contract(args.target, contracts=contracts)
    if args.verbose:
        print(report.output)
    print_report(report)
    if not report.results:
        print(report.output, file=sys.stderr)
        return 2
    return 0 if report.ok else 1


def _adapters(args: argparse.Namespace) -> int:
    import importlib.util

    from rich.console import Console
    from rich.table import Table

    from memsys.adapters import BACKENDS

    libraries = {"tinydb": "tinydb", "networkx": "networkx", "faiss": "faiss", "chroma": "chromadb",
                 "kuzu": "kuzu", "lmdb": "lmdb", "duckdb": "duckdb"}
    extras = {"networkx": "graph"}
    table = Table(title="memsys backends")
    for column in ("backend", "adapter", "library", "installed", "extra"):
        table.add_column(column)
    for backend, cls in BACKENDS.items():
        library = libraries[backend]
        installed = importlib.util.find_spec(library) is not None
        table.add_row(backend, cls, library, "yes" if installed else "[red]no",
                      f"memsys[{extras.get(backend, backend)}]")
    Console().print(table)
    return 0


def _chaos_run(args: argparse.Namespace) -> int:
    from memsys.testing.chaos import run_chaos

    return run_chaos(workdir=args.workdir, seed=args.seed, report_path=args.report, quick=args.quick)


def _chaos_crash(args: argparse.Namespace) -> int:
    from memsys.testing.crash import run_crash_campaign

    return run_crash_campaign(kills=args.kills, seed=args.seed, workdir=args.workdir,
                              transactions=args.transactions)


def _dead_letters(args: argparse.Namespace) -> int:
    import json

    from memsys.application.txlog import dead_letter_path, read_dead_letters

    letters = read_dead_letters(args.log)  # reads the file only: no store is opened, no lock taken
    if args.json:
        print(json.dumps([d.to_dict() for d in letters], indent=2, ensure_ascii=False))
    elif not letters:
        print(f"no dead letters beside {args.log}")
    else:
        print(f"{len(letters)} dead letters in {dead_letter_path(args.log)} (committed operations a store refused "
              "for good; retry them with MemoryManager.retry_dead_letters() or discard them with "
              "discard_dead_letters()):")
        for letter in letters:
            print(f"  {letter.describe()}")
    return 1 if letters else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsys", description="memsys: a multi-store memory layer and "
                                     "the harness that proves it survives failure.")
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser("verify-adapter", help="run the conformance kit against an adapter class",
                            description="Build Class(path=...) and run the conformance kit against it.")
    verify.add_argument("target", help="package.module:Class")
    verify.add_argument("--contract", action="append", choices=["memory", "vector", "graph"],
                        help="contracts to run (default: chosen from the class's declared capabilities)")
    verify.add_argument("-v", "--verbose", action="store_true", help="also print pytest's output")
    verify.set_defaults(func=_verify_adapter)

    adapters = sub.add_parser("adapters", help="list the backends and whether their libraries are installed")
    adapters.set_defaults(func=_adapters)

    dead = sub.add_parser("dead-letters", help="list the committed operations a store refused for good",
                          description="List the dead letters kept beside a coordinator log (LOG.dead-letters) "
                          "without opening any store. Exit status 0 when there are none, 1 when some wait.")
    dead.add_argument("--log", required=True, help="the manager's transaction_log file")
    dead.add_argument("--json", action="store_true", help="print them as JSON")
    dead.set_defaults(func=_dead_letters)

    chaos = sub.add_parser("chaos", help="resilience experiments")
    chaos_sub = chaos.add_subparsers(dest="chaos_command", required=True)
    run = chaos_sub.add_parser("run", help="run the resilience experiments on the embedded stores")
    run.add_argument("--workdir", default=None, help="folder for the stores (default: a new temporary folder)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--report", default=None, help="where to save the JSON report (default: WORKDIR/report.json)")
    run.add_argument("--quick", action="store_true", help="a smaller dose of every experiment")
    run.set_defaults(func=_chaos_run)

    crash = chaos_sub.add_parser("crash", help="SIGKILL a transaction workload and check atomicity and durability")
    crash.add_argument("--kills", type=int, default=100)
    crash.add_argument("--seed", type=int, default=0)
    crash.add_argument("--transactions", type=int, default=200,
                       help="transactions the child attempts per run before it is killed")
    crash.add_argument("--workdir", default=None)
    crash.set_defaults(func=_chaos_crash)

    from memsys import tools

    tools.register(sub)  # inspect, diff, repair, recover on store specs
    from memsys import bench

    bench.register(sub)  # bench gate, bench report
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from memsys.domain.errors import MemsysError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MemsysError as exc:
        print(f"memsys: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
