"""`memsys chaos run --config`: stores given by spec (a third party's included) are judged after
reopening, so a store that acknowledges before it is durable, or resurrects deletes, fails the
run with the experiment named; report.json is written as the run goes; progress follows work."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from memsys import cli
from memsys.testing import chaos
from memsys.testing.chaos_config import build_config, load_config


def _config(tmp_path, stores: dict[str, str], workload: str = "transactions = 12") -> str:
    lines = ["seed = 5", 'profile = "quick"', 'experiments = ["faults"]', 'workdir = "work"', 'report = "out"',
             "[stores]", *(f'{k} = "{v}"' for k, v in stores.items()),
             "[workload]", workload, "concurrency = 2", "delete_fraction = 0.4"]
    path = tmp_path / "chaos.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory) -> tuple[Path, int, str]:
    """One run over a good store and two broken ones (shared by the checks and the render test)."""
    tmp_path = tmp_path_factory.mktemp("broken-run")
    path = _config(tmp_path, {
        "good": "lmdb:stores/good?sync=false",
        "acks_early": "tests.chaos.broken_stores:AcknowledgesBeforeDurable?path=stores/acks&sync=false",
        "resurrects": "tests.chaos.broken_stores:ResurrectsDeletes?path=stores/res&sync=false",
    })
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(["chaos", "run", "--config", path])
    return tmp_path, status, out.getvalue()


def test_broken_stores_fail_the_run_and_are_named(broken_run) -> None:
    tmp_path, status, out = broken_run
    assert status == 1
    failed = [line for line in out.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 2, out
    assert "fault injection (acks_early)" in failed[0] and "seed 5" in failed[0]
    assert "fault injection (resurrects)" in failed[1]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["finished"] and len(report["failures"]) == 2
    by_target = {e["target"]: e for e in report["experiments"]}
    assert by_target["good"]["status"] == "ok" and by_target["good"]["faults"] > 0
    assert "acknowledged writes missing on acks_early" in by_target["acks_early"]["detail"]
    assert "acknowledged deletes undone on resurrects" in by_target["resurrects"]["detail"]
    assert (tmp_path / "out" / "report.html").read_text().count('class="failed"') == 2


def test_the_run_writes_only_its_own_ids_and_removes_them(tmp_path, capsys) -> None:
    from memsys.adapters.lmdb_store import LMDBMemoryAdapter
    from memsys.testing import sample_item

    store = LMDBMemoryAdapter(path=tmp_path / "stores" / "kept")
    mine = [sample_item(i) for i in range(5)]
    store.store_many(mine)
    store.close()
    # By time and rate this once: 1.5 s at most 10 transactions a second over two threads.
    path = _config(tmp_path, {"kept": "lmdb:stores/kept"}, workload="duration = 1.5\nrate = 10")
    assert cli.main(["chaos", "run", "--config", path]) == 0, capsys.readouterr().out
    store = LMDBMemoryAdapter(path=tmp_path / "stores" / "kept")
    try:
        assert sorted(i.id for i in store.iter_items()) == sorted(i.id for i in mine)
        assert [store.retrieve(i.id) for i in mine] == mine
    finally:
        store.close()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    experiment = report["experiments"][0]
    assert 0 < experiment["acknowledged"] <= experiment["attempted"] <= 10 * 1.5 + 4  # the rate holds per phase
    assert "cleanup deleted the run's" in experiment["detail"]


def test_an_interrupted_run_keeps_what_it_did(tmp_path, capsys) -> None:
    path = _config(tmp_path, {"first": "lmdb:stores/first?sync=false",
                              "second": "tests.chaos.broken_stores:InterruptedWhileOpening?path=stores/x"})
    config = build_config(load_config(path), source=path)
    with pytest.raises(KeyboardInterrupt):
        chaos.run_chaos(config=config)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert not report["finished"] and report["failures"] == ["interrupted"]
    assert [e["target"] for e in report["experiments"]] == ["first"]
    assert report["planned"] == ["fault injection: first", "fault injection: second"]
    assert "INCOMPLETE" in (tmp_path / "out" / "report.html").read_text()


def test_progress_follows_the_units_done_weighted_by_their_cost() -> None:
    from rich.console import Console

    seen = []

    def step(units: int) -> chaos.Planned:
        def run(tick):
            for _ in range(units):
                tick(1)
                seen.append(progress.done)
            tick(5)  # more than planned: never counted twice
            return chaos.Experiment(f"step of {units}", "t")
        return chaos.Planned(f"step of {units}", "faults", units, 2.0, run)

    plan = [step(4), step(1)]
    console = Console(file=io.StringIO(), width=200)
    progress = chaos.RunProgress(plan, console)
    with progress:
        for index, planned in enumerate(plan):
            tick = progress.step(planned)
            progress.finish(index, planned, [planned.run(tick)])
    assert seen == [2.0, 4.0, 6.0, 8.0, 10.0] and progress.done == progress.total == 10.0
    lines = console.file.getvalue().splitlines()
    assert lines[0].startswith("[1/2] step of 4: ok in") and "left" in lines[0]
    assert lines[1].startswith("[2/2] step of 1: ok") and lines[1].endswith("about 0 s left")


class _Page(HTMLParser):
    """What a browser's DOM holds: tables by id with their row counts, and the images."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, int] = {}
        self.images: list[dict[str, str]] = []
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._table = attributes.get("id", "")
            self.tables[self._table] = 0
        elif tag == "tr" and self._table is not None:
            self.tables[self._table] += 1
        elif tag == "img":
            self.images.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None


def _browser() -> str:
    from memsys.testing.plugin import skip_server_unavailable

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        skip_server_unavailable("no headless browser: bash chaos/install-browser.sh installs Debian's chromium")
    return found


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--allow-file-access-from-files", *args], capture_output=True, timeout=120)


@pytest.mark.server
def test_report_html_renders_in_a_headless_browser_with_its_tables_and_plots(broken_run) -> None:
    import numpy as np
    from matplotlib.image import imread

    from memsys.testing.chaos_report import PHASE_COLOURS

    browser = _browser()
    tmp_path, _, _ = broken_run
    html_path = tmp_path / "out" / "report.html"
    assert "http://" not in html_path.read_text() and "https://" not in html_path.read_text()  # self-contained
    dom = _headless(browser, "--dump-dom", html_path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _Page()
    page.feed(dom.stdout.decode())
    assert page.tables["experiments"] == 1 + 3 and page.tables["totals"] == 2 and page.tables["details"] == 1 + 3
    assert page.tables["latency"] > 3  # store x operation x phase percentiles
    plots = [img for img in page.images if img.get("src", "").startswith("data:image/png;base64,")]
    assert len(plots) == len(page.images) == 2 + 3  # outcomes, recovery, latency for each of the three stores
    shot = tmp_path / "report.png"
    result = _headless(browser, "--window-size=1400,3200", f"--screenshot={shot}", html_path.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = (imread(str(shot))[..., :3] * 255).round()

    def count(colour: str, alpha: float = 1.0) -> int:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
        shown = alpha * rgb + (1 - alpha) * 255  # drawn with transparency over white
        return int((np.abs(pixels - shown) <= 8).all(axis=-1).sum())

    # The plots were decoded and drawn: each phase's box colour, the bars, the failed rows' background.
    # (A box's area follows the run's latency spread: a narrow one drew 148 pixels; none draws 0.)
    for phase, colour in PHASE_COLOURS.items():
        assert count(colour, 0.85) > 40, f"no {phase}-fault latency boxes on the page"
    assert count("#ff7f0e") > 500, "no recovery bars on the page"
    assert count("#fde2e2") > 1000, "the failed experiments are not highlighted"
