"""``memsys bench report``: a short trend summary and one PNG per benchmark across commits.

Sources:

* an asv results folder (``.asv/results``: ``MACHINE/HASH-ENV.json`` files, format version 2):
  one point per commit for every benchmark and parameter combination, ordered by commit date;
* one or more ``memsys bench gate --json`` files: one point per gate run (HEAD against its base)
  for every benchmark, the ratio with its confidence interval.

A commit is flagged when a figure moved beyond its noise: for asv, the step from the previous
commit is larger than ``threshold`` AND the two commits' 99 % intervals (asv's own) do not
overlap, or, where asv kept no interval, the step is larger than three times the series'
typical step; for the gate, the run's verdict was a regression (or a proven speed-up).
Figures from different machines are never compared.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import product
from pathlib import Path
from typing import Any


class ReportError(Exception):
    """The report could not be made (exit status 2)."""


@dataclasses.dataclass
class Point:
    label: str  # short commit hash, or "base..head" for a gate run
    date: float  # seconds since the epoch (ordering)
    value: float
    low: float | None = None
    high: float | None = None
    flag: str = ""  # why this point is flagged ("" = not flagged)


@dataclasses.dataclass
class Series:
    benchmark: str
    variant: str  # parameter values ("lmdb, 1000"), "" for none
    unit: str
    points: list[Point] = dataclasses.field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.benchmark}({self.variant})" if self.variant else self.benchmark


# --- asv


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc


def _asv_units(results_dir: Path) -> dict[str, str]:
    index = results_dir / "benchmarks.json"
    if not index.is_file():
        return {}
    return {name: str(b.get("unit", "")) for name, b in _load(index).items() if isinstance(b, dict)}


def _unit_for(name: str, units: dict[str, str]) -> str:
    if name in units and units[name]:
        return units[name]
    leaf = name.rsplit(".", 1)[-1]
    return "seconds" if leaf.startswith("time_") else "bytes" if leaf.startswith(("peakmem_", "mem_")) else ""


def load_asv(results_dir: str | os.PathLike[str], machine: str | None = None) -> dict[str, list[Series]]:
    """Series per machine from an asv results folder."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ReportError(f"{root} is not a folder of asv results")
    units = _asv_units(root)
    machines: dict[str, dict[str, Series]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if machine is not None and folder.name != machine:
            continue
        for path in sorted(folder.glob("*.json")):
            if path.name == "machine.json":
                continue
            data = _load(path)
            if data.get("version") != 2 or "result_columns" not in data:
                raise ReportError(f"{path}: not an asv results file of format version 2")
            columns = data["result_columns"]
            commit = str(data.get("commit_hash", "?"))
            date = float(data.get("date") or 0) / 1000  # asv stores the commit date in milliseconds
            for name, row in data.get("results", {}).items():
                cells = dict(zip(columns, row))
                values = cells.get("result")
                if values is None:
                    continue
                params = cells.get("params") or []
                combos = [", ".join(str(v) for v in c) for c in product(*params)] if params else [""]
                if not isinstance(values, list):
                    values = [values]
                lows = cells.get("stats_ci_99_a") or [None] * len(values)
                highs = cells.get("stats_ci_99_b") or [None] * len(values)
                for variant, value, low, high in zip(combos, values, lows, highs):
                    if value is None or (isinstance(value, float) and math.isnan(value)):
                        continue  # failed or skipped for this parameter combination
                    key = f"{name}|{variant}"
                    series = machines.setdefault(folder.name, {}).setdefault(
                        key, Series(name, variant, _unit_for(name, units)))
                    series.points.append(Point(commit[:8], date, float(value),
                                               None if low is None else float(low),
                                               None if high is None else float(high)))
    if not machines:
        raise ReportError(f"no asv results under {root}" + (f" for machine {machine!r}" if machine else ""))
    out: dict[str, list[Series]] = {}
    for name, by_key in machines.items():
        for series in by_key.values():
            series.points.sort(key=lambda p: (p.date, p.label))
        out[name] = sorted(by_key.values(), key=lambda s: (s.benchmark, s.variant))
    return out


def flag_steps(series: Series, threshold: float) -> None:
    """Mark the points whose step from the previous commit is beyond the threshold and the noise."""
    steps = [math.log(b.value / a.value) for a, b in zip(series.points, series.points[1:])
             if a.value > 0 and b.value > 0]
    typical = statistics.median(abs(s) for s in steps) if steps else 0.0
    limit = math.log1p(threshold)
    for before, point in zip(series.points, series.points[1:]):
        if before.value <= 0 or point.value <= 0:
            continue
        step = math.log(point.value / before.value)
        if abs(step) <= limit:
            continue
        have_ci = None not in (before.low, before.high, point.low, point.high)
        if have_ci:
            apart = point.low > before.high or point.high < before.low  # type: ignore[operator]
        else:
            apart = len(steps) >= 3 and abs(step) > 3 * typical
        if apart:
            point.flag = f"{'+' if step > 0 else '-'}{abs(math.expm1(step)):.0%} from {before.label}"


# --- gate JSON


def load_gate(paths: Sequence[str | os.PathLike[str]]) -> dict[str, list[Series]]:
    """Series (one point per gate run) keyed by the machine each run was on."""
    by_machine: dict[str, dict[str, Series]] = {}
    for path in paths:
        data = _load(Path(path))
        if data.get("tool") != "memsys bench gate":
            raise ReportError(f"{path}: not a `memsys bench gate --json` file")
        machine = str(data.get("machine", {}).get("host", "unknown"))
        head, base = data["head"], data["base"]
        label = f"{base['commit'][:7]}..{head['commit'][:7]}{'+' if head.get('dirty') else ''}"
        when = datetime.fromisoformat(data["date"]).timestamp()
        metric = data.get("metric", "cpu")
        threshold = float(data.get("threshold", 0.15))
        for bench in data["benchmarks"]:
            figures = bench.get(metric) or {}
            if figures.get("ratio") is None:
                continue
            series = by_machine.setdefault(machine, {}).setdefault(
                bench["name"], Series(bench["name"], "", f"HEAD/base {metric} time"))
            point = Point(label, when, figures["ratio"], figures.get("low"), figures.get("high"))
            if bench["verdict"] in ("regression", "faster"):
                point.flag = f"{bench['verdict']} (x{figures['ratio']:.2f}, [{figures['low']:.2f}, " \
                             f"{figures['high']:.2f}], threshold +{threshold:.0%})"
            series.points.append(point)
    return {m: sorted(s.values(), key=lambda s: s.benchmark) for m, s in by_machine.items()}


# --- output


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:150] or "benchmark"


def _fmt(value: float, unit: str) -> str:
    if unit == "seconds":
        for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value:.3g} s"
    if unit == "bytes":
        for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value:.0f} B"
    return f"{value:.3g}"


def plot(benchmark: str, members: Sequence[Series], path: Path, gate: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a CI machine
    import matplotlib.pyplot as plt

    labels = sorted({p.label: p.date for s in members for p in s.points}.items(), key=lambda kv: (kv[1], kv[0]))
    x_of = {label: i for i, (label, _) in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(labels) + 3), 4))
    for series in members:
        xs = [x_of[p.label] for p in series.points]
        ys = [p.value for p in series.points]
        line = ax.plot(xs, ys, marker="o", label=series.variant or None)[0]
        lows = [p.low if p.low is not None else p.value for p in series.points]
        highs = [p.high if p.high is not None else p.value for p in series.points]
        if any(p.low is not None for p in series.points):
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
        flagged = [p for p in series.points if p.flag]
        if flagged:
            ax.scatter([x_of[p.label] for p in flagged], [p.value for p in flagged], s=120, facecolors="none",
                       edgecolors="red", linewidths=2, zorder=5)
    if gate:
        ax.axhline(1.0, color="grey", linewidth=0.8)
    values = [p.value for s in members for p in s.points if p.value > 0]
    if not gate and values and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([label for label, _ in labels], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(members[0].unit)
    ax.set_title(benchmark + ("\nred rings: moved beyond noise" if any(p.flag for s in members for p in s.points)
                              else ""), fontsize=9)
    if any(s.variant for s in members):
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_overview(series_list: Sequence[Series], path: Path, threshold: float) -> None:
    """The latest gate run at a glance: every benchmark's ratio and interval, regressions in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(s.benchmark, s.points[-1]) for s in series_list if s.points]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.2))
    for y, (name, p) in enumerate(rows):
        low = p.low if p.low is not None and p.low > 0 else p.value
        high = p.high if p.high is not None and math.isfinite(p.high) else p.value
        color = "red" if p.flag and p.value > 1 else "green" if p.flag else "black"
        ax.errorbar([p.value], [y], xerr=[[p.value - low], [high - p.value]], fmt="o", color=color, capsize=2)
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.axvline(1 + threshold, color="red", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([name for name, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("HEAD time / base time (dashed: threshold)")
    ax.set_title(f"latest gate run {rows[0][1].label}" if rows else "gate", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(machines: dict[str, list[Series]], out: Path, *, source: str, gate: bool,
                 threshold: float) -> tuple[Path, int]:
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# memsys performance trend", "",
             f"Source: {source}. Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", ""]
    if gate:
        lines += ["Each point is one `memsys bench gate` run: HEAD time / base time (1 = unchanged), with its "
                  "confidence interval. Flagged: the run's verdict was a regression or a proven speed-up.", ""]
    else:
        lines += [f"Each point is one commit (asv). Flagged: the step from the previous commit exceeds "
                  f"{threshold:.0%} and the two commits' 99 % intervals do not overlap (or, without intervals, "
                  f"the step exceeds three times the series' typical step). asv's intervals hold the noise "
                  f"within one run; a shared machine also swings between runs, so treat a flag as a lead and "
                  f"let `memsys bench gate --base COMMIT~1` (both commits in one run) decide.", ""]
    flagged_total = 0
    for machine, series_list in machines.items():
        if not gate:
            for series in series_list:
                flag_steps(series, threshold)
        commits = sorted({p.label: p.date for s in series_list for p in s.points}.items(), key=lambda kv: kv[1])
        lines += [f"## Machine {machine}", "",
                  f"{len(series_list)} series over {len(commits)} {'runs' if gate else 'commits'}"
                  + (f" ({commits[0][0]} .. {commits[-1][0]})" if commits else "") + ".", ""]
        flags = [(s, p) for s in series_list for p in s.points if p.flag]
        flagged_total += len(flags)
        if flags:
            lines += ["### Moved beyond noise", ""]
            for series, point in sorted(flags, key=lambda sp: (sp[1].date, sp[0].title)):
                lines.append(f"- `{point.label}` {series.title}: {point.flag} "
                             f"(now {_fmt(point.value, series.unit)})")
            lines.append("")
        else:
            lines += ["Nothing moved beyond noise.", ""]
        if gate:
            overview = f"{_slug(machine)}__gate_overview.png"
            plot_overview(series_list, out / overview, threshold)
            lines += [f"![latest run]({overview})", ""]
        lines += ["| benchmark | latest | change vs previous | change vs first | flagged | plot |",
                  "|---|---:|---:|---:|---:|---|"]
        by_benchmark: dict[str, list[Series]] = {}
        for series in series_list:
            by_benchmark.setdefault(series.benchmark, []).append(series)
        for benchmark, members in by_benchmark.items():
            png = f"{_slug(machine)}__{_slug(benchmark)}.png"
            plot(benchmark, members, out / png, gate)
            for series in members:
                pts = series.points
                last = pts[-1]
                prev = f"{last.value / pts[-2].value - 1:+.0%}" if len(pts) > 1 and pts[-2].value else ""
                first = f"{last.value / pts[0].value - 1:+.0%}" if len(pts) > 1 and pts[0].value else ""
                lines.append(f"| {series.title} | {_fmt(last.value, series.unit)} | {prev} | {first} | "
                             f"{sum(1 for p in pts if p.flag)} | [png]({png}) |")
        lines.append("")
    (out / "README.md").write_text("\n".join(lines))
    return out / "README.md", flagged_total


def run_report(*, results: str | None = None, gate_json: Sequence[str] | None = None, out: str,
               threshold: float = 0.10, machine: str | None = None) -> int:
    if threshold <= 0:
        raise ReportError(f"--threshold must be positive, got {threshold}")
    if results:
        machines = load_asv(results, machine)
        source = f"asv results in {results}"
        gate = False
    elif gate_json:
        machines = load_gate(gate_json)
        threshold = float(_load(Path(gate_json[-1])).get("threshold", threshold))
        if machine is not None:
            machines = {m: s for m, s in machines.items() if m == machine}
        source = f"{len(gate_json)} gate run(s): {', '.join(str(p) for p in gate_json)}"
        gate = True
    else:
        raise ReportError("give --results DIR or --gate-json FILE")
    if not any(machines.values()):
        raise ReportError("no figures to report")
    path, flagged = write_report(machines, Path(out), source=source, gate=gate, threshold=threshold)
    print(f"wrote {path} and {sum(len({s.benchmark for s in v}) for v in machines.values())} plots; "
          f"{flagged} point(s) moved beyond noise")
    return 0
