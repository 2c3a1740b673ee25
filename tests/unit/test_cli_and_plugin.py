"""The `memsys` command, called in-process, and the CI rule of the pytest plugin."""

from __future__ import annotations

import pytest

from memsys import cli

pytest_plugins = ["pytester"]


def test_verify_adapter_prints_a_table_and_exits_zero_for_a_good_adapter(capsys) -> None:
    assert cli.main(["verify-adapter", "tests.kit.jsonl_store:JsonlStore"]) == 0
    out = capsys.readouterr().out
    assert "round trip keeps every field" in out and "passed" in out and "skipped" in out


def test_verify_adapter_exits_one_for_a_broken_adapter(capsys) -> None:
    assert cli.main(["verify-adapter", "tests.kit.broken_adapters:ResurrectingStore", "--contract", "memory"]) == 1
    assert "failed" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["no_such_module:X", "tests.kit.jsonl_store:Nope", "not-a-target",
                                    "tests.kit.jsonl_store:json"])
def test_verify_adapter_names_a_bad_target(target, capsys) -> None:
    assert cli.main(["verify-adapter", target]) == 2
    assert "memsys: error:" in capsys.readouterr().err


def test_adapters_lists_the_seven_backends(capsys) -> None:
    assert cli.main(["adapters"]) == 0
    out = capsys.readouterr().out
    for backend in ("tinydb", "networkx", "faiss", "chroma", "kuzu", "lmdb", "duckdb"):
        assert backend in out


def test_chaos_crash_prints_the_counts(tmp_path, capsys) -> None:
    assert cli.main(["chaos", "crash", "--kills", "2", "--seed", "4", "--transactions", "30",
                     "--backends", "lmdb,duckdb,faiss", "--single-kills", "1", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for measure in ("attempted", "acknowledged", "present", "lost", "partial"):
        assert measure in out
    assert (tmp_path / "transactions" / "crash-report.json").exists()


def test_ci_turns_a_server_skip_into_a_failure_but_not_other_skips(pytester, monkeypatch) -> None:
    pytester.makeconftest('pytest_plugins = ["memsys.testing.plugin"]')
    pytester.makepyfile("""
        import pytest
        from memsys.testing.plugin import skip_server_unavailable

        @pytest.mark.server
        def test_needs_server():
            skip_server_unavailable("no chroma here")

        @pytest.mark.server
        def test_capability_skip():
            pytest.skip("does not declare the 'persistence' capability")

        @pytest.mark.docker
        def test_needs_docker():
            pytest.skip("no Docker engine answers")
    """)
    monkeypatch.delenv("MEMSYS_REQUIRE_SERVERS", raising=False)
    monkeypatch.setenv("CI", "true")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(failed=1, skipped=2)
    monkeypatch.setenv("CI", "false")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(skipped=3)
