"""The ``leaks`` section of ``memsys verify-adapter``: a built-in adapter, the guide's example
(given as a store spec, as a third party would) and a bare-protocol adapter pass; adapters that
leak a Python buffer, a file descriptor or native memory per open fail by exactly the named
checks; a cycle that cannot run is an error, never a pass."""

from __future__ import annotations

import json
import os

import pytest

from memsys.cli import main
from memsys.testing.verify import SECTIONS, run_verify
from memsys.testing.verify_sections import LEAK_CHECKS
from tests.verify.leaky_adapters import CAUGHT_BY


def _outcomes(report) -> dict[str, str]:
    return {c.name: c.outcome for c in report.section("leaks")}


def test_tinydb_passes_the_standard_dose(tmp_path) -> None:
    report = run_verify("tinydb", sections=["leaks"], workdir=os.fspath(tmp_path))
    assert report.ok, [f"{c.name}: {c.detail[:400]}" for c in report.failures()]
    assert _outcomes(report) == dict.fromkeys(LEAK_CHECKS, "passed")
    assert "16 cycles" in report.section("leaks")[1].detail  # the standard dose measured what it says


def test_the_example_adapter_given_as_a_spec_passes_and_runs_by_default(tmp_path, capsys) -> None:
    assert "leaks" in SECTIONS  # a default section: a simple adapter's standard dose takes about a second
    code = main(["verify-adapter", f"examples.jsonfile_store:JsonFileStore?path={tmp_path / 'ignored'}&sync=true",
                 "--sections", "leaks", "--quick", "--json", "--workdir", os.fspath(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    checks = report["sections"]["leaks"]
    assert code == 0 and report["ok"], [f"{c['name']}: {c['detail'][:400]}" for c in checks]
    assert [c["name"] for c in checks] == LEAK_CHECKS
    assert os.listdir(tmp_path / "leaks" / "cycles")  # the cycles opened the adapter in the section's folder


def test_an_adapter_on_the_bare_protocol_passes(tmp_path) -> None:
    # tests/kit's JsonlStore creates no folders: the cycles' parent must exist, as in other sections.
    report = run_verify("tests.kit.jsonl_store:JsonlStore", sections=["leaks"], dose="quick",
                        workdir=os.fspath(tmp_path))
    assert _outcomes(report) == dict.fromkeys(LEAK_CHECKS, "passed"), [c.detail[:400] for c in report.checks]


@pytest.mark.parametrize("adapter", sorted(CAUGHT_BY))
def test_a_leaky_adapter_fails_by_the_named_checks(adapter, tmp_path) -> None:
    report = run_verify(f"tests.verify.leaky_adapters:{adapter}", sections=["leaks"], dose="quick",
                        workdir=os.fspath(tmp_path))
    assert not report.ok
    assert report.failed_names() == {f"leaks.{name}" for name in CAUGHT_BY[adapter]}, \
        [f"{c.name}: {c.outcome} {c.detail[:300]}" for c in report.checks]
    assert all(c.outcome == "passed" for c in report.checks if not c.failed)
    for check in report.failures():
        assert "--sections leaks" in check.detail and adapter in check.detail  # how to replay it


def test_a_cycle_that_cannot_run_is_an_error_not_a_pass(tmp_path) -> None:
    report = run_verify("tests.verify.leaky_adapters:ForgetsWhatItStoredStore", sections=["leaks"], dose="quick",
                        workdir=os.fspath(tmp_path))
    assert _outcomes(report) == dict.fromkeys(LEAK_CHECKS, "error")
    assert "read back None" in report.checks[0].detail
