"""report.html for ``memsys chaos run``: one self-contained file (no network, no script), plots
embedded as base64 PNG (matplotlib, Agg), built from the run's report.json.

It shows the verdict and what failed, the totals, a table per experiment (outcome, faults
injected by kind, operations attempted / acknowledged / lost / partial / unexpected, hung,
crashed, errors, time to recover), plots of the outcomes and recovery times, and latency
distributions per store and operation before, during and after faults (box plots, with a table
of percentiles).

    python -m memsys.testing.chaos_report WORKDIR/report.json   # (re)build report.html beside it
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

#: Phase colours; the headless render test looks for them in the screenshot.
PHASE_COLOURS = {"before": "#2ca02c", "during": "#d62728", "after": "#1f77b4"}
PHASES = ("before", "during", "after")
COUNTS = ("faults", "attempted", "acknowledged", "lost", "partial", "unexpected", "hung", "crashed", "errors")
BAD = ("lost", "partial", "unexpected", "hung", "crashed", "errors")

_CSS = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f2f2f2}td.l,th.l{text-align:left}#experiments td:first-child{white-space:nowrap}
tr.failed td{background:#fde2e2}.ok{color:#1a7f37;font-weight:bold}.bad{color:#c00;font-weight:bold}
.verdict{font-size:20px;padding:8px 12px;display:inline-block;border-radius:4px}
.pass{background:#dff5e1}.fail{background:#fde2e2}
figure{margin:12px 0}figcaption{font-size:13px;color:#555}img{max-width:100%}
.detail{max-width:360px;font-size:12px;color:#444;text-align:left}
"""


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _new_figure(width: float, height: float, left: float = 0.1) -> tuple[Any, Any]:
    """A Figure on the Agg canvas without pyplot (no global state, no GUI backend, faster import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=left, right=0.97, top=0.9, bottom=max(0.12, 0.5 / height))
    return fig, ax


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)  # a fixed layout: bbox_inches="tight" draws twice
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(name: str, caption: str, data: str) -> str:
    return (f'<figure data-plot="{html.escape(name)}"><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _label(e: dict[str, Any]) -> str:
    return f"{e['name']} ({e['target']})"


def outcome_plot(experiments: list[dict[str, Any]]) -> str | None:
    """Attempted, acknowledged and anomalies (lost + partial + unexpected + hung + crashed + errors)."""
    rows = [e for e in experiments if e.get("attempted") or any(e.get(k) for k in BAD)]
    if not rows:
        return None
    labels = [_label(e)[:60] for e in rows]
    fig, ax = _new_figure(11, 0.32 * len(rows) + 1.2, left=0.34)
    y = range(len(rows))
    ax.barh([i - 0.27 for i in y], [e["attempted"] for e in rows], height=0.27, color="#9e9e9e", label="attempted")
    ax.barh(list(y), [e["acknowledged"] for e in rows], height=0.27, color="#1f77b4", label="acknowledged")
    ax.barh([i + 0.27 for i in y], [sum(e.get(k, 0) for k in BAD) for e in rows], height=0.27, color="#d62728",
            label="lost, partial, unexpected, hung, crashed, errors")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("symlog")
    ax.set_xlabel("operations")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def recovery_plot(experiments: list[dict[str, Any]]) -> str | None:
    rows = [e for e in experiments if e.get("recover_seconds")]
    if not rows:
        return None
    fig, ax = _new_figure(11, 0.3 * len(rows) + 1.2, left=0.34)
    ax.barh(range(len(rows)), [e["recover_seconds"] for e in rows], color="#ff7f0e")
    ax.set_yticks(range(len(rows)), [_label(e)[:60] for e in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from healing to recovered")
    return _png(fig)


def latency_groups(experiments: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """store -> operation -> phase -> samples (ms), merged over experiments."""
    groups: dict[str, dict[str, dict[str, list[float]]]] = {}
    for e in experiments:
        for key, samples in (e.get("latency") or {}).items():
            store, operation, phase = key.split("|")
            groups.setdefault(store, {}).setdefault(operation, {}).setdefault(phase, []).extend(samples)
    return groups


def latency_plot(store: str, operations: dict[str, dict[str, list[float]]]) -> str:
    """Box plots per operation, one box per phase in its colour, on a log axis."""
    from matplotlib.patches import Patch

    names = sorted(operations)
    fig, ax = _new_figure(max(4.5, 2.2 * len(names)), 3.4, left=0.14)
    positions, data, colours = [], [], []
    for i, operation in enumerate(names):
        for j, phase in enumerate(PHASES):
            samples = [max(s, 1e-3) for s in operations[operation].get(phase, [])]
            if samples:
                positions.append(i * 4 + j)
                data.append(samples)
                colours.append(PHASE_COLOURS[phase])
    boxes = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True, showfliers=True,
                       flierprops={"markersize": 2})
    for patch, colour in zip(boxes["boxes"], colours):
        patch.set_facecolor(colour)
        patch.set_alpha(0.85)
    ax.set_yscale("log")
    ax.set_xticks([i * 4 + 1 for i in range(len(names))], names)
    ax.set_ylabel("ms")
    ax.set_title(f"latency: {store}", fontsize=10)
    ax.legend(handles=[Patch(color=PHASE_COLOURS[p], label=f"{p} faults") for p in PHASES], fontsize=8)
    return _png(fig)


def _cell(value: Any, left: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in ("l" if left else "", cls) if c)
    return f"<td{f' class={chr(34)}{classes}{chr(34)}' if classes else ''}>{html.escape(str(value))}</td>"


def render(report: dict[str, Any]) -> str:
    experiments = report.get("experiments", [])
    failures = report.get("failures", [])
    config = report.get("config") or {}
    finished = report.get("finished", False)
    passed = finished and not failures
    out = ["<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>memsys chaos run</title>",
           f"<style>{_CSS}</style></head><body>", "<h1>memsys chaos run</h1>"]
    state = "PASSED" if passed else ("FAILED" if finished else "INCOMPLETE (the run was interrupted or is going on)")
    out.append(f'<p><span id="verdict" class="verdict {"pass" if passed else "fail"}">{html.escape(state)}</span></p>')
    facts = [("seed", report.get("seed")), ("run", report.get("run_id")), ("profile", config.get("profile")),
             ("experiments", ", ".join(config.get("experiments", []))), ("work folder", report.get("workdir")),
             ("seconds", f"{report.get('seconds', 0):.1f}"), ("config", config.get("source") or "(none: defaults)")]
    if config.get("stores"):
        facts.append(("stores", "; ".join(f"{k} = {v}" for k, v in config["stores"].items())))
    out.append('<table id="facts">' + "".join(f"<tr><th class=l>{html.escape(k)}</th>{_cell(v, True)}</tr>"
                                              for k, v in facts) + "</table>")
    if failures:
        out.append('<h2>What failed</h2><ul id="failures">' +
                   "".join(f"<li>{html.escape(f)}</li>" for f in failures) + "</ul>")
    totals = report.get("totals", {})
    out.append('<h2>Totals</h2><table id="totals"><tr>' + "".join(f"<th>{k}</th>" for k in COUNTS) + "</tr><tr>" +
               "".join(_cell(totals.get(k, 0), cls="bad" if k in BAD and totals.get(k) else "") for k in COUNTS) +
               "</tr></table>")
    head = ["experiment", "target", "status", *COUNTS, "recovered", "recover s", "seconds"]
    out.append('<h2>Experiments</h2><table id="experiments"><tr>' +
               "".join(f"<th{' class=l' if h in ('experiment', 'target', 'status') else ''}>"
                       f"{h}</th>" for h in head) + "</tr>")
    for e in experiments:
        bad = e.get("status") not in ("ok", "skipped", "unavailable") or any(e.get(k) for k in BAD)
        out.append(f'<tr class="{"failed" if bad else "passed"}">' + _cell(e["name"], True) + _cell(e["target"], True)
                   + _cell(e.get("status"), True, "bad" if bad else "ok")
                   + "".join(_cell(e.get(k, 0), cls="bad" if k in BAD and e.get(k) else "") for k in COUNTS)
                   + _cell(e.get("recovered", 0)) + _cell(f"{e.get('recover_seconds', 0):.3f}")
                   + _cell(f"{e.get('seconds', 0):.1f}") + "</tr>")
    out.append("</table>")
    details = [e for e in experiments if e.get("detail") or e.get("fault_kinds")]
    if details:
        out.append('<h2>Faults injected and details</h2><table id="details"><tr><th class=l>experiment</th>'
                   '<th class=l>target</th><th class=l>faults by kind</th><th class=l>detail</th></tr>' + "".join(
                       "<tr>" + _cell(e["name"], True) + _cell(e["target"], True)
                       + f'<td class="detail">{"<br>".join(html.escape(f"{k}: {v}") for k, v in sorted((e.get("fault_kinds") or {}).items()))}</td>'
                       + _cell(e.get("detail", ""), True) + "</tr>" for e in details) + "</table>")
    out.append('<h2>Plots</h2><div id="plots">')
    plot = outcome_plot(experiments)
    if plot:
        out.append(_figure("outcomes", "operations attempted, acknowledged, and anomalies per experiment", plot))
    plot = recovery_plot(experiments)
    if plot:
        out.append(_figure("recovery", "time to recover after the faults healed, per experiment", plot))
    groups = latency_groups(experiments)
    for store in sorted(groups):
        out.append(_figure(f"latency-{store}", f"latency per operation on {store}, before, during and after faults "
                                               f"(ms, log scale)", latency_plot(store, groups[store])))
    out.append("</div>")
    if groups:
        out.append('<h2>Latency percentiles (ms)</h2><table id="latency"><tr><th class=l>store</th>'
                   "<th class=l>operation</th><th class=l>phase</th><th>n</th><th>p50</th><th>p95</th><th>p99</th>"
                   "<th>max</th></tr>")
        for store in sorted(groups):
            for operation in sorted(groups[store]):
                for phase in PHASES:
                    samples = groups[store][operation].get(phase)
                    if samples:
                        out.append("<tr>" + _cell(store, True) + _cell(operation, True) + _cell(phase, True)
                                   + _cell(len(samples)) + "".join(_cell(f"{_percentile(samples, q):.2f}")
                                                                   for q in (50, 95, 99))
                                   + _cell(f"{max(samples):.2f}") + "</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_html(report: dict[str, Any], path: str) -> str:
    """Write report.html for ``report`` (a report.json's content) atomically; returns ``path``."""
    from memsys.durable import atomic_write

    atomic_write(path, render(report).encode("utf-8"), sync=False)
    os.chmod(path, 0o644)  # a report people open (and CI keeps as an artifact), not a private file
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m memsys.testing.chaos_report REPORT.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        report = json.load(f)
    print(write_html(report, os.path.splitext(args[0])[0] + ".html"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
