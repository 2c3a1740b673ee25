"""The locust suite, run as locust runs it: headless subprocesses (locust monkey-patches the
standard library with gevent on import, so it never enters this process). Each run is a few
seconds; the checks are on exit statuses, reports and counts, never on latencies or rates.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "benchmarks" / "locustfile.py"


def locust(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSYS_LOCUST_")}
    return subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def start(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSYS_LOCUST_")}
    return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EXPECTED = {"A": {"read", "update"}, "B": {"read", "update"}, "C": {"read"}, "D": {"read", "insert"},
            "E": {"scan", "insert"}, "F": {"read", "read_modify_write"}}


@pytest.mark.parametrize("workload", sorted(EXPECTED))
def test_ycsb_workload_runs_headless_with_csv_html_and_summary(workload: str, tmp_path: Path) -> None:
    done = locust("--headless", "-u", "2", "-r", "2", "-t", "1s", "--only-summary", "--workload", workload,
                  "--store", f"lmdb:{tmp_path}/db?sync=false", "--records", "300", "--csv", str(tmp_path / "run"),
                  "--html", str(tmp_path / "run.html"), "--summary-json", str(tmp_path / "run.json"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "run.json").read_text())
    assert figures["failures"] == 0 and figures["requests"] > 0
    seen = set(figures["operations"])
    # D and E insert 5 %: a short run may not draw one; what runs is never outside the mix.
    assert seen <= EXPECTED[workload] and (seen == EXPECTED[workload] or workload in "DE")
    assert figures["requests"] == sum(op["requests"] for op in figures["operations"].values())
    with open(tmp_path / "run_stats.csv") as handle:  # every call went through locust's request event
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    assert set(rows) == seen | {"Aggregated"} and all(int(rows[n]["Request Count"]) > 0 for n in seen)
    assert (tmp_path / "run.html").stat().st_size > 1000


def test_cross_store_transactions_under_load(tmp_path: Path) -> None:
    done = locust("--headless", "-u", "2", "-r", "2", "-t", "1s", "--only-summary", "--workload", "txn",
                  "--store", f"lmdb:{tmp_path}/lmdb?sync=false,duckdb:{tmp_path}/items.duckdb?sync=false",
                  "--txlog", str(tmp_path / "txlog"), "--summary-json", str(tmp_path / "txn.json"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "txn.json").read_text())
    assert figures["failures"] == 0 and figures["operations"]["transaction lmdb+duckdb"]["requests"] > 0
    assert (tmp_path / "txlog").exists()


def test_thresholds_decide_the_exit_status_under_injected_faults(tmp_path: Path) -> None:
    common = ["--headless", "-u", "2", "-r", "2", "-t", "1s", "--only-summary", "--workload", "B", "--records", "200",
              "--fault-rate", "0.2"]
    lenient = locust(*common, "--store", f"lmdb:{tmp_path}/a?sync=false", "--max-fail-ratio", "0.6",
                     "--summary-json", str(tmp_path / "a.json"))
    assert lenient.returncode == 0, lenient.stdout[-3000:] + lenient.stderr[-3000:]
    figures = json.loads((tmp_path / "a.json").read_text())
    assert 0 < figures["fail_ratio"] < 0.6 and figures["faults"]["rate"] == 0.2
    strict = locust(*common, "--store", f"lmdb:{tmp_path}/b?sync=false", "--max-fail-ratio", "0.01",
                    "--summary-json", str(tmp_path / "b.json"))
    assert strict.returncode == 1
    assert json.loads((tmp_path / "b.json").read_text())["thresholds"]["broken"][0].startswith("failure ratio")
    slow = locust("--headless", "-u", "1", "-r", "1", "-t", "1s", "--only-summary", "--workload", "C",
                  "--records", "100",
                  "--store", f"lmdb:{tmp_path}/c", "--max-p99-ms", "0.0001", "--summary-json", str(tmp_path / "c.json"))
    assert slow.returncode == 1
    assert json.loads((tmp_path / "c.json").read_text())["thresholds"]["broken"][0].startswith("p99")


def test_stress_search_reports_the_load_where_the_store_broke(tmp_path: Path) -> None:
    # A p95 limit no store meets: the first step breaks, and that is reported, not failed...
    args = ["--headless", "--shape", "stress", "--step-users", "1", "--step-seconds", "1", "--max-users", "3",
            "--stress-p95-ms", "0.0001", "--workload", "C", "--records", "100", "--only-summary"]
    done = locust(*args, "--store", f"lmdb:{tmp_path}/a", "--summary-json", str(tmp_path / "a.json"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stress = json.loads((tmp_path / "a.json").read_text())["stress"]
    assert stress["broke"] and stress["broke_at_users"] == 1 and stress["steps"][0]["p95_ms"] > 0.0001
    # ...unless the caller demands a capacity, then breaking below it is the exit status.
    gated = locust(*args, "--store", f"lmdb:{tmp_path}/b", "--stress-min-users", "3")
    assert gated.returncode == 1 and "broke at 1 users < --stress-min-users 3" in gated.stdout + gated.stderr
    # A limit every step meets: the search climbs to the most users and says it did not break.
    held = locust(*[a if a != "0.0001" else "100000" for a in args], "--store", f"lmdb:{tmp_path}/c",
                  "--summary-json", str(tmp_path / "c.json"))
    stress = json.loads((tmp_path / "c.json").read_text())["stress"]
    assert held.returncode == 0 and not stress["broke"] and [s["users"] for s in stress["steps"]] == [1, 2, 3]


@pytest.mark.parametrize("shape,args,expected", [
    # locust asks a shape every second, so steps last longer than that.
    ("step", ["--step-users", "1", "--step-seconds", "1.5", "--max-users", "3"], [1, 2, 3]),
    ("spike", ["--step-users", "1", "--spike-users", "3", "--spike-at", "1.5", "--spike-seconds", "1.5"], [1, 3, 1]),
    ("soak", ["--soak-users", "2", "--soak-seconds", "1"], [2]),
])
def test_shapes_drive_the_user_count(shape: str, args: list[str], expected: list[int], tmp_path: Path) -> None:
    done = locust("--headless", "--shape", shape, *args, "--workload", "C", "--records", "100", "--only-summary",
                  "--store", f"lmdb:{tmp_path}/db", "--csv", str(tmp_path / "run"), "--csv-full-history")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = [int(line.split("Shape test updating to ")[1].split()[0])
              for line in (done.stdout + done.stderr).splitlines() if "Shape test updating to" in line]
    assert [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]] == expected


def test_distributed_master_and_two_workers_share_one_lmdb(tmp_path: Path) -> None:
    port = str(free_port())
    store = f"lmdb:{tmp_path}/shared"
    master = start("--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                   "--expect-workers", "2", "--expect-workers-max-wait", "60", "-u", "4", "-r", "4", "-t", "3s",
                   "--store", store, "--workload", "B", "--records", "300", "--only-summary",
                   "--summary-json", str(tmp_path / "master.json"), "--csv", str(tmp_path / "dist"))
    workers = [start("--worker", "--master-host", "127.0.0.1", "--master-port", port, "--store", store,
                     "--workload", "B", "--records", "300") for _ in range(2)]
    try:
        out, _ = master.communicate(timeout=120)
        worker_out = [w.communicate(timeout=60)[0] for w in workers]
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert master.returncode == 0, out[-4000:]
    assert all(w.returncode == 0 for w in workers), [o[-2000:] for o in worker_out]
    assert "2 workers connected" in out or "(index 1) reported as ready" in out
    figures = json.loads((tmp_path / "master.json").read_text())
    # The master's microsecond histograms are the workers' reports merged: they count every request.
    assert figures["requests"] > 0 and figures["failures"] == 0
    assert sum(op["requests"] for op in figures["operations"].values()) == figures["requests"]
    with open(tmp_path / "dist_stats.csv") as handle:
        assert int({r["Name"]: r for r in csv.DictReader(handle)}["Aggregated"]["Request Count"]) > 0


def test_load_through_a_toxiproxy_latency_toxic_on_a_chroma_server(chroma_server, toxiproxy, tmp_path: Path) -> None:
    proxy = toxiproxy.client.create_proxy("locust_chroma", f"127.0.0.1:{chroma_server.port}")
    try:
        done = locust("--headless", "-u", "1", "-r", "1", "-t", "2s", "--only-summary", "--workload", "C",
                      "--records", "50", "--store", f"chroma+http://{proxy.listen}?collection=ycsb_toxic",
                      "--toxiproxy", toxiproxy.client.url, "--toxiproxy-proxy", proxy.name,
                      "--toxic-latency-ms", "40", "--summary-json", str(tmp_path / "toxic.json"))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        figures = json.loads((tmp_path / "toxic.json").read_text())
        assert figures["faults"]["toxic_latency_ms"] == 40 and figures["requests"] > 0
        # Every read crossed the toxic (a floor the toxic guarantees, not a timing expectation).
        assert figures["operations"]["read"]["p50_us"] >= 40_000
        assert toxiproxy.client._call("GET", f"/proxies/{proxy.name}/toxics") == []  # removed when the run stopped
    finally:
        toxiproxy.client.delete_proxy(proxy.name)


def test_port_fault_wrappers_show_latency_and_failures_under_load(tmp_path: Path) -> None:
    # Every read sleeps 3 ms in the wrapper and half the updates fail transiently (seeded).
    done = locust("--headless", "-u", "1", "-r", "1", "-t", "1s", "--only-summary", "--workload", "A",
                  "--records", "200", "--store", f"lmdb:{tmp_path}/db?sync=false",
                  "--port-faults", "retrieve=latency:1:0.003,store=transient:0.5", "--max-fail-ratio", "0.9",
                  "--summary-json", str(tmp_path / "faults.json"), "--csv", str(tmp_path / "faults"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "faults.json").read_text())
    assert figures["faults"]["port_faults"] == "retrieve=latency:1:0.003,store=transient:0.5"
    assert figures["faults"]["port_faults_fired"] > 0
    assert figures["operations"]["read"]["p50_us"] >= 3_000  # a floor the latency fault guarantees
    assert figures["operations"]["update"]["failures"] > 0 and figures["operations"]["read"]["failures"] == 0
    with open(tmp_path / "faults_failures.csv") as handle:  # locust names the injected error
        assert any("StoreUnavailableError" in row["Error"] for row in csv.DictReader(handle))
    bad = locust("--headless", "-u", "1", "-t", "1s", "--store", f"lmdb:{tmp_path}/bad", "--port-faults",
                 "retrieve=latency:1")
    assert bad.returncode != 0 and "--port-faults" in bad.stdout + bad.stderr


def test_distributed_master_and_two_workers_share_one_chroma_server(chroma_server, tmp_path: Path) -> None:
    port = str(free_port())
    store = f"chroma+{chroma_server.url}?collection=ycsb_distributed"
    master = start("--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                   "--expect-workers", "2", "--expect-workers-max-wait", "60", "-u", "2", "-r", "2", "-t", "6s",
                   "--store", store, "--workload", "B", "--records", "100", "--only-summary",
                   "--summary-json", str(tmp_path / "master.json"))
    workers = [start("--worker", "--master-host", "127.0.0.1", "--master-port", port, "--store", store,
                     "--workload", "B", "--records", "100") for _ in range(2)]
    try:
        out, _ = master.communicate(timeout=120)
        worker_out = [w.communicate(timeout=60)[0] for w in workers]
    finally:
        for proc in (master, *workers):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert master.returncode == 0, out[-4000:]
    assert all(w.returncode == 0 for w in workers), [o[-2000:] for o in worker_out]
    figures = json.loads((tmp_path / "master.json").read_text())
    # Both workers read the records the master preloaded into the one server: no read missed one.
    assert figures["requests"] > 0 and figures["failures"] == 0, out[-4000:] + "".join(o[-3000:] for o in worker_out)
    assert figures["operations"]["read"]["requests"] > 0
