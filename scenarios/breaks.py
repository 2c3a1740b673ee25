"""Proof by seeded breaks: apply each known break of memsys and show which tests catch it.

    python -m scenarios.breaks                 # every break, 2 at a time; exit 0 only if all are caught
    python -m scenarios.breaks --list          # the breaks and the tests selected for each
    python -m scenarios.breaks --check         # only check that every break still applies to the source
    python -m scenarios.breaks -k fsync -j 1   # breaks whose name contains "fsync", one at a time
    python -m scenarios.breaks --summary       # the README's table (first catcher, number of catchers)

A break is a source-level edit of memsys: exact text replacements, each of which must match
exactly once (a missing or ambiguous anchor is a loud error, never a silent pass: the code moved,
and the break must move with it). Each break runs in its own copy of the project (memsys and the
tests) in a temporary folder; its tests run there with the copy first on sys.path, and a pytest
plugin in this module refuses to run if ``memsys`` was imported from anywhere else. A break
counts as caught when at least one of its selected tests fails (a skip never counts); a
selection that errors (collection, usage) is an error, not a catch. Unless ``--no-baseline``,
every selected test also runs on an unbroken copy, which must pass: a catch by a test that
fails anyway would prove nothing. Exit 0 only when every break was caught and the baseline passed.

The fsync breaks can only be caught by the power-loss simulation (memsys.testing.powerloss):
SIGKILL leaves the page cache intact, so only a simulated power failure loses what was never
fsynced. Those selections need FUSE; where it cannot mount they skip, and the break is reported
as missed (never as caught).

Edits are found by text, not line numbers, so other changes to a file do not move a break; an
edit that no longer matches stops the run before anything else (``--check`` shows which).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What a copy holds: the package, the tests and what configures them.
COPIED = ("memsys", "tests", "scenarios", "features", "conftest.py", "pyproject.toml")
_ROOT_ENV = "MEMSYS_BREAKS_ROOT"  # the copy the child pytest must import memsys from
_REPORT_ENV = "MEMSYS_BREAKS_REPORT"  # where the child pytest writes the node ids that failed


class AnchorError(RuntimeError):
    """A break's anchor text is not in its file exactly once: the code moved; move the break."""


@dataclasses.dataclass(frozen=True)
class Edit:
    """Replace ``anchor`` (exact text, exactly once in ``path``) by ``replacement``.

    ``replacement`` is written flush left: its second and later lines are indented like the line
    the anchor starts on, so a break survives a change of indentation around it.
    """

    path: str
    anchor: str
    replacement: str

    def apply(self, text: str) -> str:
        count = text.count(self.anchor)
        if count != 1:
            raise AnchorError(f"{self.path}: anchor {self.anchor!r} found {count} times (must be exactly once)")
        start = text.index(self.anchor)
        line_start = text.rfind("\n", 0, start) + 1
        indent = text[line_start:start]
        if indent.strip():  # the anchor starts mid-line: keep the replacement's lines as written
            indent = ""
        first, *rest = textwrap.dedent(self.replacement).split("\n")
        replacement = "\n".join([first] + [indent + line if line else line for line in rest])
        return text[:start] + replacement + text[start + len(self.anchor):]


@dataclasses.dataclass(frozen=True)
class Break:
    name: str
    what: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


TX = "memsys/application/transactions.py"
LOG = "memsys/application/txlog.py"
MANAGER = "memsys/application/manager.py"
BREAKER = "memsys/resilience/circuit_breaker.py"

BREAKS: tuple[Break, ...] = (
    Break("log-append-not-fsynced", "the coordinator log's appends are never fsynced",
          (Edit(LOG, "self._file.append(payloads, sync=sync and self.sync)",
                "self._file.append(payloads, sync=False)"),),
          ("tests/powerloss/test_power_loss_stores.py::test_no_acknowledged_transaction_is_lost_across_power_failures",
           "tests/powerloss/test_power_loss_protocol.py")),
    Break("decision-not-fsynced", "the commit records (the decision) are appended without fsync",
          (Edit(TX, "self.log.append(records, sync=True)", "self.log.append(records, sync=False)"),),
          ("tests/powerloss/test_power_loss_stores.py::test_no_acknowledged_transaction_is_lost_across_power_failures",
           "tests/powerloss/test_power_loss_protocol.py",
           "features/test_transactions.py::test_the_power_fails_step_while_store_and_a_second_store_commit_and_"
           "recovery_settles_it[lmdb-after_first_apply-both stores]")),
    Break("apply-before-decision", "the stores apply a group before its commit records are in the log",
          (Edit(TX, 'self._hook("after_log_write")', """\
                for e in batch:  # BREAK: apply first, decide later
                    for n, ops in e.ops.items():
                        self.stores[n].apply_prepared(ops, durable=False)
                self._hook("after_log_write")"""),),
          ("tests/application/test_recovery.py::test_a_crash_at_any_step_leaves_all_or_nothing_after_recovery",
           "tests/application/test_transactions.py::test_a_failed_log_write_aborts_and_applies_nothing")),
    Break("recovery-no-op", "recovery returns at once and redoes nothing",
          (Edit(TX, 'with self.tracer.start_as_current_span("memsys.recovery"):', """\
                return report  # BREAK
                with self.tracer.start_as_current_span("memsys.recovery"):"""),),
          ("tests/breaks/test_recovery_keeps_versions.py",
           "tests/application/test_recovery.py::test_a_crash_at_any_step_leaves_all_or_nothing_after_recovery",
           "features/test_transactions.py::test_store_fails_every_write_after_the_commit_decision_and_recovery_"
           "completes_it[lmdb]")),
    Break("recovery-redoes-undecided", "a commit record whose append failed stays in the log, so "
          "recovery redoes a transaction that was told it was rolled back",
          (Edit("memsys/durable.py", "except OSError as exc:\n            self._cut_back()",
                "except OSError as exc:\n    self._end += len(data)  # BREAK: keep what failed"),),
          ("tests/faults/test_coordinator_faults.py::test_a_failed_fsync_of_the_commit_records_is_cut_back_durably",
           "tests/faults/test_coordinator_faults.py::test_disk_full_at_the_commit_record_leaves_no_commit_to_redo")),
    Break("conflict-check-removed", "concurrent writes to one id are never detected",
          (Edit(TX, "if self._last_write.get((name, op_key(op)), 0) > since:", "if False:  # BREAK"),),
          ("tests/application/test_transactions.py::test_two_transactions_writing_one_id_one_commits_one_conflicts",
           "features/test_transactions.py::test_two_writers_race_to_rewrite_one_note_on_store_and_the_second_to_"
           "commit_must_rerun[lmdb]")),
          # (scenarios/test_concurrent_transactions.py catches it too, but runs ~2 minutes broken)
    Break("cache-not-invalidated", "a commit does not invalidate the read-through cache",
          (Edit(MANAGER, "self.cache.invalidate(op.item_id)", "pass  # BREAK"),),
          ("tests/resilience/test_fallback_sync_router.py::test_get_with_cache_reads_through_and_is_invalidated_by_commits",
           "tests/faults/test_reconciliation_and_cache.py::test_an_uncached_id_in_a_group_does_not_stop_the_others_being_invalidated")),
    Break("cache-invalidating-uncached-raises", "invalidating an id that is not cached raises, so the "
          "rest of a group's invalidations are skipped",
          (Edit("memsys/resilience/cache.py", "self._data.pop(key, None)", "del self._data[key]  # BREAK"),),
          ("tests/faults/test_reconciliation_and_cache.py::test_an_uncached_id_in_a_group_does_not_stop_the_others_being_invalidated",)),
    Break("reconciliation-replays-older", "reconciliation writes a queued item over a newer version",
          (Edit(MANAGER, "if current is not None and current.version >= entry.item.version:", "if False:  # BREAK"),),
          ("tests/breaks/test_reconcile_never_goes_back.py",
           "tests/resilience/test_fallback_sync_router.py::test_degraded_writes_go_to_the_fallback_and_reconcile_without_going_back_in_time")),
    Break("breaker-never-opens", "consecutive failures never open the circuit",
          (Edit(BREAKER, "if probe or (self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold):",
                "if probe:  # BREAK"),),
          ("tests/resilience/test_breaker_retry_cache.py::test_breaker_opens_after_consecutive_failures_and_rejects_fast",)),
    Break("unlimited-half-open-probes", "a half-open circuit lets every call through, not one probe",
          (Edit(BREAKER, "if self._probe_running:", "if False:  # BREAK"),),
          ("tests/resilience/test_breaker_retry_cache.py::test_half_open_lets_one_probe_through_and_its_outcome_decides",)),
    Break("probe-flag-never-cleared", "a successful probe closes the circuit but leaves its probe flag set, "
          "so the circuit can never be probed again at the next outage",
          (Edit(BREAKER, "if probe:\n                self._probe_running = False\n                self._state = CircuitState.CLOSED",
                "if probe:\n    self._state = CircuitState.CLOSED  # BREAK"),),
          ("tests/breaks/test_breaker_outages.py", "tests/resilience/test_breaker_retry_cache.py")),
    Break("retrying-permanent-errors", "retry_with_backoff retries errors that are not transient",
          (Edit("memsys/resilience/retry.py",
                'if attempt == max_retries or not idempotent or not getattr(exc, "transient", False):',
                "if attempt == max_retries or not idempotent:  # BREAK"),),
          ("tests/resilience/test_breaker_retry_cache.py::test_retry_waits_with_growing_jittered_backoff_only_on_transient_errors",)),
    Break("adapter-delete-no-op", "LMDB's delete does nothing (and reports success)",
          (Edit("memsys/adapters/lmdb_store.py", "txn.delete(key)", "pass  # BREAK"),),
          ("tests/adapters/test_lmdb_store.py::TestLMDBContract::test_delete_reports_whether_the_item_existed",
           "tests/adapters/test_lmdb_store.py::TestLMDBContract::test_reopen_keeps_acknowledged_writes_and_deletes")),
    Break("lmdb-never-fsyncs", "the LMDB adapter opens its environment with sync and metasync off",
          (Edit("memsys/adapters/lmdb_store.py", "subdir=True, sync=sync,", "subdir=True, sync=False,  # BREAK"),
           Edit("memsys/adapters/lmdb_store.py", "metasync=sync,", "metasync=False,")),
          ("tests/powerloss/test_power_loss_stores.py::test_lmdb_with_sync_keeps_every_acknowledged_write",)),
    Break("tinydb-writes-in-place", "TinyDB rewrites its snapshot in place instead of atomically",
          (Edit("memsys/adapters/tinydb_store.py", "class _FileJournal(Journal):", '''\
                class _FileJournal(Journal):
                    def compact(self, dump_state):  # BREAK: the snapshot is overwritten where it lies
                        from memsys.durable import pack_snapshot
                        header, body = dump_state()
                        data = pack_snapshot({**header, "seq": self.seq}, body)
                        with open(self.snapshot_path, "wb") as f:
                            f.write(data)
                            f.flush()
                            os.fsync(f.fileno())
                        self._snapshot_size = len(data)
                        self._log.rewrite([], sync=True)
                '''),),
          ("tests/breaks/test_tinydb_compaction.py",)),
    Break("compaction-forgets-quarantined", "log compaction while a store is quarantined drops the "
          "commits that store has not applied",
          (Edit(TX, "for name, unapplied in sorted(self._unapplied.items()):",
                "for name, unapplied in sorted({}.items()):  # BREAK"),),
          ("tests/breaks/test_quarantine_compaction.py",
           "tests/faults/test_coordinator_faults.py::test_a_manager_opened_without_the_failing_store_keeps_its_writes_for_it")),
    Break("compaction-without-flush", "the log is compacted without flushing the stores first",
          (Edit(TX, "self.stores[name].flush", "(lambda: None)"),),
          ("tests/powerloss/test_power_loss_protocol.py",)),
    Break("prepare-skips-a-store", "prepare validates only the first store of a transaction",
          (Edit(TX, "self.stores[name].prepare_ops",
                "(self.stores[name].prepare_ops if name == stores[0] else list)"),),
          ("tests/breaks/test_prepare_refusals.py",)),
    Break("redo-restamps-versions", "recovery stamps redone writes with new LSNs",
          (Edit(TX, "batch.append(_RedoOp(lsn, txid, index, record, op))",
                "batch.append(_RedoOp(lsn, txid, index, record, _stamp(op, self._next_lsn())))  # BREAK"),),
          ("tests/breaks/test_recovery_keeps_versions.py",)),
    Break("large-log-recovery-fails", "recovery of more than REDO_BATCH operations for one store fails "
          "past its first batch",
          (Edit(TX, "self._apply_isolating(name, apply, batch, dead)\n                batch = []",
                "self._apply_isolating(name, apply, batch, dead)\nbatch = None  # BREAK"),),
          ("tests/faults/test_coordinator_faults.py::test_recovery_of_more_than_one_batch_for_one_store_keeps_every_version",)),
    Break("journal-ignores-durable-request", "a Journal store opened with sync=False never fsyncs, even when "
          "asked for a durable apply (a manager without a log has no other durable copy)",
          (Edit("memsys/durable.py", "sync=self.sync if durable is None else durable)",
                "sync=bool(durable) and self.sync)  # BREAK"),),
          ("tests/powerloss/test_durable_apply_request.py",)),
    Break("begin-forgets-lagging-store", "a transaction that began while a store was quarantined is checked "
          "for conflicts on it from the global watermark, so it overwrites what recovery applied (lost update)",
          (Edit(TX, "began_held = self._begin_held.get(transaction_id, {})", "began_held = {}  # BREAK"),),
          ("tests/application/test_quarantine_watermark.py",)),
    Break("quarantine-holds-global-watermark", "a quarantined store holds back the conflict watermark of "
          "every store, so a single writer's rewrite on a healthy store conflicts",
          (Edit(TX, "if all(e.error is None or isinstance(e.error, TransactionAbortedError)",
                "if not self._quarantined and all(e.error is None or isinstance(e.error, TransactionAbortedError)"),),
          ("tests/application/test_quarantine_watermark.py", "scenarios/test_stateful_findings.py",
           "scenarios/test_stateful_mixed.py::test_manager_over_mixed_stores_matches_the_model[lmdb+tinydb]")),
)


# ------------------------------------------------------------------------------------ running a break


@dataclasses.dataclass
class Result:
    name: str
    caught_by: list[str]
    seconds: float
    error: str | None = None
    output: str = ""

    @property
    def caught(self) -> bool:
        return bool(self.caught_by) and self.error is None


def make_copy(dest: str, root: str = ROOT) -> str:
    """Copy what the tests need (memsys, the tests and their configuration) into ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "*.egg-info")
    for name in COPIED:
        source = os.path.join(root, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(dest, name), ignore=ignore)
        else:
            shutil.copy2(source, os.path.join(dest, name))
    return dest


def apply_break(brk: Break, root: str) -> None:
    """Apply ``brk``'s edits to the tree at ``root``; AnchorError if any anchor is not there exactly once."""
    texts: dict[str, str] = {}
    for edit in brk.edits:
        path = os.path.join(root, edit.path)
        if path not in texts:
            with open(path, encoding="utf-8") as f:
                texts[path] = f.read()
        texts[path] = edit.apply(texts[path])
    for path, text in texts.items():
        try:
            compile(text, path, "exec")
        except SyntaxError as exc:
            raise AnchorError(f"break {brk.name} leaves {os.path.relpath(path, root)} unparsable: {exc}") from exc
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def check_anchors(breaks: Sequence[Break] = BREAKS, root: str = ROOT) -> list[str]:
    """Problems applying ``breaks`` to the source at ``root`` (nothing is written there)."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="memsys-breaks-check-") as tmp:
        make_copy(tmp, root)
        for brk in breaks:
            shutil.rmtree(os.path.join(tmp, "memsys"))
            shutil.copytree(os.path.join(root, "memsys"), os.path.join(tmp, "memsys"),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            try:
                apply_break(brk, tmp)
            except AnchorError as exc:
                problems.append(f"{brk.name}: {exc}")
    return problems


def _child_env(copy: str, report: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COV_CORE_", "COVERAGE_", "PYTEST_"))  # no coverage or xdist of the parent
           and k not in ("CI", "MEMSYS_REQUIRE_SERVERS")}  # a missing server must skip (never a catch), not fail
    env["PYTHONPATH"] = copy + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["MEMSYS_SHRINK"] = "0"  # a catch needs one failing example, not minutes of shrinking it
    env[_ROOT_ENV] = copy
    env[_REPORT_ENV] = report
    return env


def run_tests(name: str, tests: Sequence[str], brk: Break | None, *, timeout: float = 600,
              test_timeout: float = 120, exitfirst: bool = False, keep: bool = False) -> Result:
    """Run ``tests`` on a copy of the project with ``brk`` applied (None: unbroken)."""
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix=f"memsys-break-{name}-")
    try:
        copy = make_copy(os.path.join(tmp, "project"))
        if brk is not None:
            try:
                apply_break(brk, copy)
            except AnchorError as exc:
                return Result(name, [], time.monotonic() - started, error=str(exc))
        report = os.path.join(tmp, "failed.txt")
        # Only the plugins these tests use (autoloading all installed ones costs seconds per break).
        command = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
                   "-p", "pytest_timeout", "-p", "_hypothesis_pytestplugin", "-p", "pytest_bdd.plugin",
                   "-p", "scenarios.breaks",
                   f"--timeout={test_timeout:g}", "--basetemp", os.path.join(tmp, "pytest"), *tests]
        if exitfirst:
            command.insert(4, "-x")
        try:
            proc = subprocess.run(command, cwd=copy, env=_child_env(copy, report), capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"")[-3000:]
            return Result(name, [], time.monotonic() - started, error=f"the tests ran past {timeout:g} s",
                          output=out.decode(errors="replace") if isinstance(out, bytes) else out)
        failed, skipped = [], []
        if os.path.exists(report):
            with open(report, encoding="utf-8") as f:
                for line in f:
                    node, _, reason = line.rstrip("\n").partition("\t")
                    (skipped if reason else failed).append(line.strip() if reason else node)
        failed = list(dict.fromkeys(failed))
        output = (proc.stdout + proc.stderr)[-3000:]
        if skipped:
            output = "\n".join(skipped) + "\n" + output
        error = None
        if proc.returncode not in (0, 1) or (proc.returncode == 1 and not failed):
            error = f"pytest exited {proc.returncode} (collection or usage error, or memsys imported from " \
                    "outside the copy)"
        return Result(name, failed, time.monotonic() - started, error=error, output=output)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------ the pytest plugin
# Loaded in the child pytest (``-p scenarios.breaks``): it refuses a memsys from outside the copy and
# writes the node id of every test that failed (in setup, call or teardown) for the parent.


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest hook
    root = os.environ.get(_ROOT_ENV)
    if not root:
        return
    import memsys

    where = os.path.realpath(memsys.__file__)
    if not where.startswith(os.path.realpath(root) + os.sep):
        raise RuntimeError(f"memsys was imported from {where}, not from the broken copy in {root}")


def pytest_runtest_logreport(report) -> None:  # noqa: ANN001 - pytest hook
    path = os.environ.get(_REPORT_ENV)
    if path and (report.failed or report.skipped):
        reason = ""
        if report.skipped:  # a skip never counts as a catch; the parent reports why it happened
            longrepr = report.longrepr
            reason = "\tskipped: " + (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).replace("\n", " ")
        with open(path, "a", encoding="utf-8") as f:
            f.write(report.nodeid + reason + "\n")


# ------------------------------------------------------------------------------------ the command


def run(breaks: Sequence[Break], *, jobs: int = 2, baseline: bool = True, exitfirst: bool = False,
        progress: bool = True) -> tuple[list[Result], Result | None]:
    """Run every break (and first the unbroken baseline), ``jobs`` at a time."""
    def say(text: str) -> None:
        if progress:
            print(text, flush=True)

    baseline_result = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {}
        if baseline:
            selected = list(dict.fromkeys(t for b in breaks for t in b.tests))
            futures[pool.submit(run_tests, "baseline", selected, None)] = "baseline"
        for brk in breaks:
            futures[pool.submit(run_tests, brk.name, brk.tests, brk, exitfirst=exitfirst)] = brk.name
        results: dict[str, Result] = {}
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            if futures[future] == "baseline":
                baseline_result = result
                state = "error" if result.error else ("FAILS" if result.caught_by else "passes")
                say(f"  baseline (unbroken): {state} in {result.seconds:.1f} s")
            else:
                results[result.name] = result
                state = "ERROR" if result.error else ("caught" if result.caught else "MISSED")
                say(f"  {result.name}: {state} in {result.seconds:.1f} s")
    return [results[b.name] for b in breaks], baseline_result


def format_table(results: Sequence[Result]) -> str:
    lines = ["| break | caught by | seconds |", "|---|---|---:|"]
    for r in results:
        if r.error:
            caught = f"ERROR: {r.error}"
        elif not r.caught_by:
            caught = "NOT CAUGHT"
        else:
            caught = "<br>".join(r.caught_by)
        lines.append(f"| {r.name} | {caught} | {r.seconds:.1f} |")
    return "\n".join(lines)


def format_summary(results: Sequence[Result]) -> str:
    """The table the README shows: the first catching test by name, and how many tests caught it."""
    lines = ["| break | caught by (first of the catching tests) | catching tests |", "|---|---|---:|"]
    for r in results:
        if r.error or not r.caught_by:
            lines.append(f"| {r.name} | {'ERROR: ' + r.error if r.error else 'NOT CAUGHT'} | 0 |")
            continue
        path, _, test = r.caught_by[0].partition("::")
        lines.append(f"| {r.name} | `{test or path}` ({path}) | {len(r.caught_by)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.breaks", description=__doc__.split("\n")[0])
    parser.add_argument("-k", dest="match", default="", help="only breaks whose name contains this")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="breaks run at once (default 2)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unbroken copy")
    parser.add_argument("-x", "--exitfirst", action="store_true",
                        help="stop each break's tests at the first failure (faster; names one catcher)")
    parser.add_argument("--list", action="store_true", help="list the breaks and their tests")
    parser.add_argument("--check", action="store_true", help="only check that every break applies")
    parser.add_argument("--summary", action="store_true",
                        help="print the README's table (first catching test, number of catching tests)")
    args = parser.parse_args(argv)
    breaks = [b for b in BREAKS if args.match in b.name]
    if not breaks:
        print(f"no break matches {args.match!r}", file=sys.stderr)
        return 2
    if args.list:
        for b in breaks:
            print(f"{b.name}: {b.what}")
            for t in b.tests:
                print(f"    {t}")
        return 0
    problems = check_anchors(breaks)
    if problems:
        print("breaks that no longer apply (the code moved; move the break):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    if args.check:
        print(f"all {len(breaks)} breaks apply")
        return 0
    started = time.monotonic()
    results, baseline = run(breaks, jobs=args.jobs, baseline=not args.no_baseline, exitfirst=args.exitfirst)
    print()
    print(format_summary(results) if args.summary else format_table(results))
    ok = all(r.caught for r in results)
    if baseline is not None and (baseline.error or baseline.caught_by):
        ok = False
        print(f"\nthe baseline (no break) did not pass: {baseline.error or baseline.caught_by}\n{baseline.output}")
    for r in results:
        if not r.caught:
            print(f"\n--- {r.name}: {r.error or 'no selected test failed'}\n{r.output}")
    caught = sum(r.caught for r in results)
    print(f"\n{caught} of {len(results)} breaks caught in {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
