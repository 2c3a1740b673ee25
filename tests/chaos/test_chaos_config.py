"""`memsys chaos run` refuses bad input before anything runs: a one-line error, exit status 2,
and no folder, store or report created. Good configs parse into what they say."""

from __future__ import annotations

import pytest

from memsys import cli
from memsys.testing.chaos_config import PROFILES, ChaosConfigError, build_config, load_config


def _run(capsys, *args: str) -> tuple[int, str]:
    status = cli.main(["chaos", "run", *args])
    err = capsys.readouterr().err
    return status, err


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "chaos.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("args,message", [
    (["--report", "{file}/report.json"], "is a file"),          # the report's folder would be a file
    (["--report", "{file}"], "is a file"),                      # a folder report onto a file
    (["--report", "{folder}.json"], "is a folder"),             # a .json report that is a folder
    (["--workdir", "{file}"], "is a file, not a folder"),
    (["--seed", "-1"], "--seed: must be an integer from 0 to 2**63-1"),
    (["--experiments", "faults,explode"], "unknown experiment 'explode'"),
    (["--toxiproxy", "not a url"], "must be a URL"),
])
def test_bad_flags_are_refused_before_anything_runs(tmp_path, capsys, args, message) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    folder = tmp_path / "a-folder.json"
    folder.mkdir()
    workdir = tmp_path / "work"
    args = [a.format(file=a_file, folder=str(folder)[:-5]) for a in args]
    if "--workdir" not in args:
        args += ["--workdir", str(workdir)]
    status, err = _run(capsys, *args, "--quick")
    assert status == 2, err
    assert message in err and err.startswith("memsys: error: ") and err.count("\n") == 1, err
    assert not workdir.exists(), "something ran before the input was checked"


@pytest.mark.parametrize("text,message", [
    ("seeed = 1\n", "seeed: unknown key"),
    ("seed = 1.5\n", "seed: must be an integer"),
    ("seed = 2\nprofile = 'huge'\n", "unknown profile 'huge'"),
    ("[stores]\nx = 'lmdb'\n", "stores.x: bad store spec 'lmdb'"),
    ("[stores]\nx = 'nosuch.module:Store?path=p'\n", "unknown backend or module 'nosuch.module'"),
    ("[stores]\nx = 'faiss:f?dimension=many'\n", "option 'dimension' must be an integer"),
    ("[stores]\nx = 'lmdb:${CHAOS_TEST_UNSET_VARIABLE}'\n", "${CHAOS_TEST_UNSET_VARIABLE} is not set"),
    ("[workload]\ntransactions = 0\n", "workload.transactions: must be an integer above 0"),
    ("[workload]\nconcurrency = 1000\n", "workload.concurrency: must be an integer above 0 and at most 64"),
    ("[workload]\nrate = -3\n", "workload.rate"),
    ("[workload]\ndelete_fraction = 2\n", "workload.delete_fraction: must be a number from 0 to 1"),
    ("[workload]\nspeed = 2\n", "workload.speed: unknown key"),
    ("[thresholds]\nlots = 1\n", "thresholds.lots: unknown threshold"),
    ("[thresholds]\nlost = -1\n", "thresholds.lost: must be a number >= 0"),
    ("experiments = ['network']\n[toxiproxy]\naddress = 'http://127.0.0.1:1'\n", "no Toxiproxy answers"),
    ("report = '{file}/r.json'\n", "report: cannot create"),
    ("seed = [\n", "not valid TOML"),
])
def test_bad_configs_are_refused_before_anything_runs(tmp_path, capsys, text, message) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    workdir = tmp_path / "work"
    path = _config(tmp_path, text.replace("{file}", str(a_file)))
    status, err = _run(capsys, "--config", path, "--workdir", str(workdir))
    assert status == 2, err
    assert message in err and path in err and err.count("\n") == 1, err
    assert not workdir.exists() and not (tmp_path / "p").exists()


def test_quick_and_deep_exclude_each_other(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["chaos", "run", "--quick", "--deep"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_a_missing_config_file_is_one_line(tmp_path, capsys) -> None:
    status, err = _run(capsys, "--config", str(tmp_path / "none.toml"))
    assert status == 2 and "no such file" in err and err.count("\n") == 1


def test_a_config_is_read_with_variables_relative_paths_and_flags_winning(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHAOS_TEST_SERVER", "127.0.0.1:8123")
    path = _config(tmp_path, """
seed = 11
profile = "quick"
experiments = ["network", "faults"]
workdir = "w"
report = "${CHAOS_TEST_REPORT:-out/r.json}"
[stores]
remote = "chroma+http://${CHAOS_TEST_SERVER}?collection=mine"
local = "lmdb:data/lmdb?sync=false"
[workload]
transactions = 12
rate = 5.5
concurrency = 3
[toxiproxy]
address = "127.0.0.1:8474"
[thresholds]
recover_seconds = 30
""")
    config = build_config(load_config(path), source=path, check_toxiproxy=False)
    assert (config.seed, config.profile, config.experiments) == (11, PROFILES["quick"], ("faults", "network"))
    assert config.workdir == str(tmp_path / "w")
    assert config.report_paths(config.workdir) == (str(tmp_path / "out/r.json"), str(tmp_path / "out/r.html"))
    assert config.stores["remote"].server == "http://127.0.0.1:8123"
    assert config.stores["remote"].options["collection"] == "mine"
    assert config.stores["local"].path == str(tmp_path / "data/lmdb")
    assert (config.transactions, config.workload.rate, config.workload.concurrency) == (12, 5.5, 3)
    assert config.toxiproxy.address == "http://127.0.0.1:8474"
    assert config.threshold("recover_seconds") == 30 and config.threshold("lost") == 0
    assert config.threshold("p99_ms") is None
    flags = build_config(load_config(path), source=path, seed=5, profile="deep", experiments=["crash"],
                         check_toxiproxy=False)
    assert (flags.seed, flags.profile.name, flags.experiments) == (5, "deep", ("crash",))
    with pytest.raises(ChaosConfigError, match="one Chroma server"):
        build_config({"stores": {"a": "chroma+http://h:1", "b": "chroma+http://h:2"}}, check_toxiproxy=False)


@pytest.mark.parametrize("args,message", [
    (["--kills", "0"], "--kills and --transactions must be at least 1"),
    (["--seed", "-2"], "--seed must be an integer"),
    (["--backends", "lmdb,nosuch"], "unknown crash backends ['nosuch']"),
])
def test_chaos_crash_refuses_bad_counts_and_stores_before_any_child_starts(tmp_path, capsys, args, message) -> None:
    assert cli.main(["chaos", "crash", *args, "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "w").exists()
