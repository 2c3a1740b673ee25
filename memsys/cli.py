"""The ``memsys`` command. Every subcommand imports what it needs when it runs,
so ``memsys --help`` imports no backend and no harness tool."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _verify_adapter(args: argparse.Namespace) -> int:
    import json

    from memsys.testing.verify import SECTIONS, print_report, print_verify_report, resolve_target, run_contract, \
        run_verify

    target = resolve_target(args.target)  # not importable, or not a store: one line, exit 2
    if args.contract:  # the contract alone, with the contracts named
        contracts = [f"{c.capitalize()}StoreContract" for c in args.contract]
        report = run_contract(target.cls(), contracts=contracts, options=dict(target.options))
        if args.verbose:
            print(report.output)
        print_report(report)
        if not report.results:
            print(report.output, file=sys.stderr)
            return 2
        return 0 if report.ok else 1
    sections = [s.strip() for part in (args.sections or [",".join(SECTIONS)]) for s in part.split(",") if s.strip()]
    dose = "deep" if args.deep else "quick" if args.quick else "standard"
    progress = None if args.json else (lambda section: print(f"memsys verify-adapter: {section} ...",
                                                             file=sys.stderr, flush=True))
    result = run_verify(target, sections=sections, seed=args.seed, dose=dose, workdir=args.workdir,
                        progress=progress)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        print_verify_report(result)
    return 0 if result.ok else 1


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
    from memsys.testing.chaos_config import build_config, load_config

    # Everything (config, paths, seed, counts, specs, the Toxiproxy address) is checked here,
    # before the first experiment: a mistake is a one-line error, never a traceback after the run.
    data = load_config(args.config) if args.config else None
    profile = "quick" if args.quick else "deep" if args.deep else None
    experiments = [e.strip() for e in args.experiments.split(",") if e.strip()] if args.experiments else None
    config = build_config(data, source=args.config, seed=args.seed, profile=profile, experiments=experiments,
                          workdir=args.workdir, report=args.report, toxiproxy=args.toxiproxy)
    return run_chaos(config=config, only=args.only)


def _chaos_crash(args: argparse.Namespace) -> int:
    from memsys.domain.errors import InvalidInputError
    from memsys.testing.crash import BACKENDS, check_backends, run_crash_campaign

    # Counts and stores are checked before the first child starts.
    if args.kills < 1 or args.transactions < 1 or (args.single_kills is not None and args.single_kills < 0):
        raise InvalidInputError("--kills and --transactions must be at least 1, --single-kills at least 0")
    if args.seed < 0:
        raise InvalidInputError(f"--seed must be an integer from 0 to 2**63-1, got {args.seed}")
    backends = check_backends([b.strip() for b in args.backends.split(",") if b.strip()]) if args.backends \
        else BACKENDS
    return run_crash_campaign(kills=args.kills, seed=args.seed, workdir=args.workdir,
                              transactions=args.transactions, single_kills=args.single_kills, backends=backends)


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


def _metrics(args: argparse.Namespace) -> int:
    from memsys.observability.prometheus import run_exporter

    return run_exporter(args.specs, port=args.port, addr=args.addr, once=args.once)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsys", description="memsys: a multi-store memory layer and "
                                     "the harness that proves it survives failure.")
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser(
        "verify-adapter", help="verify an adapter class: contract, stateful model, faults, crashes, damage, power loss, "
        "leaks",
        description="Build Class(path=...) and verify it section by section: the conformance kit (contract), the "
        "stateful model against the reference store (stateful), port-level faults alone and in cross-store "
        "transactions with LMDB and DuckDB (faults), SIGKILL of a writing child (crash), damaged files (damage), "
        "power failures under a FUSE file system (powerloss) and open files, threads and memory over many open/close "
        "cycles in a fresh child process (leaks). Exit status 0 when every check passes, 1 on any "
        "failure, 2 when the target is not an importable store. See docs/adapters.md.")
    verify.add_argument("target", help="package.module:Class, or a store spec such as "
                        "package.module:Class?path=P&option=value or faiss:P?dimension=8")
    verify.add_argument("--sections", action="append", metavar="LIST",
                        help="comma-separated sections to run (default: all): "
                        "contract, stateful, faults, crash, damage, powerloss, leaks")
    verify.add_argument("--seed", type=int, default=0, help="seed of every generated workload, fault plan and kill")
    dose = verify.add_mutually_exclusive_group()
    dose.add_argument("--quick", action="store_true", help="a small dose of every section (CI)")
    dose.add_argument("--deep", action="store_true", help="a large dose of every section (a soak)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--workdir", default=None, help="keep the stores of every check here (default: a "
                        "temporary folder, removed afterwards)")
    verify.add_argument("--contract", action="append", choices=["memory", "vector", "graph"],
                        help="run only the conformance kit, with these contracts")
    verify.add_argument("-v", "--verbose", action="store_true", help="with --contract: also print pytest's output")
    verify.set_defaults(func=_verify_adapter)

    adapters = sub.add_parser("adapters", help="list the backends and whether their libraries are installed")
    adapters.set_defaults(func=_adapters)

    dead = sub.add_parser("dead-letters", help="list the committed operations a store refused for good",
                          description="List the dead letters kept beside a coordinator log (LOG.dead-letters) "
                          "without opening any store. Exit status 0 when there are none, 1 when some wait.")
    dead.add_argument("--log", required=True, help="the manager's transaction_log file")
    dead.add_argument("--json", action="store_true", help="print them as JSON")
    dead.set_defaults(func=_dead_letters)

    metrics = sub.add_parser("metrics", help="serve Prometheus metrics of stores (items, calls, latency, breakers)",
                             description="Open the stores named by spec (NAME=SPEC or SPEC; existing stores only) "
                             "and serve their metrics at http://ADDR:PORT/metrics until interrupted, or print "
                             "them once with --once. In an application, use MemoryManager.register_metrics().")
    metrics.add_argument("specs", nargs="+", metavar="SPEC", help="stores, e.g. lmdb:data/lmdb kv=duckdb:data/x.db")
    metrics.add_argument("--port", type=int, default=9464, help="port to serve on (default 9464)")
    metrics.add_argument("--addr", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    metrics.add_argument("--once", action="store_true", help="print the metrics in the text format and exit")
    metrics.set_defaults(func=_metrics)

    chaos = sub.add_parser("chaos", help="resilience experiments")
    chaos_sub = chaos.add_subparsers(dest="chaos_command", required=True)
    run = chaos_sub.add_parser("run", help="run the resilience experiments (embedded stores, or a config's)",
                               description="Run the resilience experiments on the seven embedded stores, or on "
                               "the stores a TOML config names by spec (see chaos/*.toml). Writes report.json "
                               "as it goes and report.html at the end; exit status 1 if anything was lost, "
                               "partial, unexpected, hung, crashed or beyond a threshold, 2 for a bad config.")
    run.add_argument("--config", default=None, metavar="FILE.toml",
                     help="stores by spec, experiments, workload, Toxiproxy, report and thresholds")
    run.add_argument("--workdir", default=None, help="folder for the stores (default: a new temporary folder)")
    run.add_argument("--seed", type=int, default=None, help="repeat a run (default: the config's, else 0)")
    run.add_argument("--report", default=None, metavar="PATH",
                     help="a folder for report.json and report.html, or FILE.json (FILE.html beside it); "
                     "default: the config's, else WORKDIR")
    run.add_argument("--experiments", default=None, metavar="A,B",
                     help="run only these: faults, crash, stateful, network, powerloss, real")
    run.add_argument("--toxiproxy", default=None, metavar="URL",
                     help="an existing Toxiproxy server (http://HOST:PORT) instead of starting one")
    run.add_argument("--only", action="append", default=None, metavar="STEP",
                     help="run only the steps whose description starts with STEP (repeatable), e.g. "
                     "'manager machine (lmdb)'; a stateful failure's replay lines use it")
    dose = run.add_mutually_exclusive_group()
    dose.add_argument("--quick", action="store_true", help="the quick profile: a smaller dose of everything (CI)")
    dose.add_argument("--deep", action="store_true",
                      help="the deep profile: more kills, more stateful examples, longer soaks, and the "
                      "manager machines over every adapter alone and mixed")
    run.set_defaults(func=_chaos_run)

    crash = chaos_sub.add_parser("crash", help="SIGKILL a transaction workload and check atomicity and durability")
    crash.add_argument("--kills", type=int, default=100)
    crash.add_argument("--seed", type=int, default=0)
    crash.add_argument("--transactions", type=int, default=200,
                       help="transactions the child attempts per run before it is killed")
    crash.add_argument("--single-kills", type=int, default=None,
                       help="kills during single-store writes after the transaction campaign (default: kills/5)")
    crash.add_argument("--backends", default=None, metavar="A,B",
                       help="stores to run on (default: all seven)")
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
