"""One self-contained HTML report from one or more run folders (``bnlab report RUN_DIR...``).

The file needs nothing but itself: figures are PNGs inlined as ``data:`` URIs, the style is
inline, there is no script, and a Content-Security-Policy forbids any network fetch. It holds
the comparison tables (final epoch per network, mean and 95% CI over seeds; every run), the
learning curves, the learning-rate sweep and epoch-time figures, the probe figures and their
summary, each run's parameters, the resolved config and the environment.

Every piece of text that comes from a record (run and experiment names, config values, notes)
goes through :func:`html.escape`. A folder from an interrupted run is reported with the epochs
it has and marked *partial*; an empty folder or one that is not a bnlab run folder raises
:class:`ReportError` naming the folder and what it holds.
"""

from __future__ import annotations

import base64
import json
import math
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from bnlab.lab import plots
from bnlab.lab.files import atomic_write_text
from bnlab.lab.numbers import number, plus_minus
from bnlab.lab.probes.for_run import probe_path
from bnlab.lab.record import RECORD_JSON, Record, load_record
from bnlab.lab.stats import mean_ci95
from bnlab.lab.verdict import run_diverged, sentences

REPORT_HTML = "report.html"


class ReportError(ValueError):
    """A run folder the report cannot use (missing, empty, foreign)."""


def load_run_dir(run_dir: Path | str) -> Record:
    """:func:`load_record` with the errors a report user needs to see."""
    folder = Path(run_dir)
    if not folder.exists():
        raise ReportError(f"run folder {folder} does not exist")
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder: pass a run folder such as runs/lizard-cnn")
    if not (folder / RECORD_JSON).exists():
        contents = sorted(p.name for p in folder.iterdir())
        if not contents:
            raise ReportError(
                f"run folder {folder} is empty: no {RECORD_JSON}; run `bnlab compare` or "
                "`bnlab run` first (they write runs/<name>/)"
            )
        shown = ", ".join(contents[:8]) + (", ..." if len(contents) > 8 else "")
        raise ReportError(
            f"{folder} is not a bnlab run folder: it has no {RECORD_JSON} (it holds: {shown})"
        )
    try:
        return load_record(folder)
    except (ValueError, KeyError) as exc:
        raise ReportError(f"{folder}: {exc}") from None


def is_partial(rec: Record) -> bool:
    """True unless the experiment and every run in it completed."""
    return rec.status != "complete" or any(r.get("status") != "complete" for r in rec.runs)


def load_probes(run_dir: Path | str, rec: Record) -> list[tuple[str, bool | None, dict[str, Any]]]:
    """``(run name, bn, probe result)`` for every run of ``rec`` that saved probes."""
    out = []
    for run in rec.runs:
        path = probe_path(run_dir, int(run["run"]))
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ReportError(f"{path} is not valid JSON: {exc}") from None
            out.append((str(run["name"]), run.get("params", {}).get("bn"), data))
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(number(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    attr = f' class="{escape(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
        f"<figcaption>{escape(alt)}</figcaption></figure>"
    )


def _by_run(rec: Record) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rec.rows:
        runs[str(row["name"])].append(row)
    return runs


def _final_table(rec: Record) -> str:
    """The per-network table at each network's last epoch (mean and 95% CI over the seeds
    that reached it), with the epoch time of the epoch-time figure."""
    m = rec.metric
    cols = ["loss", m, "test_loss", f"test_{m}"]
    groups: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for rows in _by_run(rec).values():
        groups[str(rows[0]["group"])].append(rows)
    table_rows = []
    for group, runs in groups.items():
        # the last epoch any seed reached, averaged over the seeds that reached it
        epoch = max(int(r["epoch"]) for rows in runs for r in rows)
        last = [r for rows in runs for r in rows if int(r["epoch"]) == epoch]
        stats = [mean_ci95([float(r.get(c, math.nan)) for r in last]) for c in cols]
        times = plots.epoch_time_stats([r for rows in runs for r in rows])
        table_rows.append(
            [
                group,
                f"{len(last)} of {len(runs)}",
                epoch,
                *(plus_minus(a, b) for a, b in stats),
                plus_minus(*times.later) if times.later else "-",
                number(times.first),
                sum(run_diverged(rows) for rows in runs),
            ]
        )
    header = [
        "network",
        "seeds",
        "epoch",
        "train loss",
        f"train {m}",
        "test loss",
        f"test {m}",
        "epoch time (s), epochs 2+",
        "epoch 1 time (s)",
        "diverged runs",
    ]
    return _table(header, table_rows, "final")


def _verdict(rec: Record) -> str:
    """The verdict's sentences (``bnlab.lab.verdict``), the terminal's words."""
    return "".join(f"<p class='verdict'>{escape(line)}</p>" for line in sentences(rec))


def _runs_table(rec: Record) -> str:
    m = rec.metric
    by_run = _by_run(rec)
    rows = []
    for run in rec.runs:
        name = str(run["name"])
        rr = by_run.get(name, [])
        last = max(rr, key=lambda r: r["epoch"]) if rr else {}
        status = run.get("status", "?")
        if rr and run_diverged(rr):
            status = f"{status}, diverged"
        rows.append(
            [
                run["run"],
                name,
                status,
                run.get("epochs_done", len(rr)),
                last.get(m),
                last.get(f"test_{m}"),
                last.get("run_duration"),
                run.get("parameters"),
            ]
        )
    header = [
        "run",
        "name",
        "status",
        "epochs",
        f"train {m}",
        f"test {m}",
        "run time (s)",
        "parameters",
    ]
    return _table(header, rows, "runs")


def _probe_table(probes: list[tuple[str, bool | None, dict[str, Any]]]) -> str:
    rows = []
    for name, _bn, res in probes:
        shift = res.get("shift") or {}
        ics = res.get("ics") or []
        sm = res.get("smoothness") or []
        last = sm[-1] if sm else {}
        rows.append(
            [
                name,
                shift.get("drift"),
                mean_ci95([d["l2"] for d in ics])[0] if ics else None,
                mean_ci95([d.get("rel_l2") for d in ics])[0] if ics else None,
                mean_ci95([d["cosine"] for d in ics])[0] if ics else None,
                last.get("loss_range"),
                last.get("max_grad_change"),
                last.get("max_beta"),
            ]
        )
    header = [
        "run",
        "input drift",
        "ICS ||G-G'|| (mean)",
        "ICS relative",
        "ICS cos (mean)",
        "loss range along -g",
        "max ||Δg||",
        "max β (Δg/Δw)",
    ]
    return _table(header, rows, "probes")


def _kv_table(d: dict[str, Any], cls: str) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            v = "; ".join(
                f"{a} = {', '.join(map(str, b)) if isinstance(b, list) else b}"
                for a, b in v.items()
            )
        elif isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        rows.append([k, v])
    return _table(["key", "value"], rows, cls)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.partial{background:#fff3cd;border:1px solid #e0b000;padding:.5em 1em}
.badge{background:#e0b000;color:#000;border-radius:3px;padding:0 .4em;font-size:.8em}
.verdict{font-size:1.1em}pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.8em}
"""


def _stem(name: str, index: int, seen: set[str]) -> str:
    """A file-name-safe prefix for an experiment's figures, unique within one report."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "experiment"
    if stem in seen:
        stem = f"{stem}-{index}"
    seen.add(stem)
    return stem


def build_report(
    run_dirs: Sequence[Path | str],
    out: Path | str | None = None,
    figures_dir: Path | str | None = None,
) -> Path:
    """Write the report for ``run_dirs`` to ``out`` (default ``<first dir>/report.html``).

    With ``figures_dir`` the figures are also kept there as ``<experiment>-<figure>.png/.svg``
    (curves, lr_sweep, epoch_time, activations, shift, landscape); otherwise they live in a
    temporary folder only long enough to be inlined.
    """
    if not run_dirs:
        raise ReportError("no run folder given: bnlab report RUN_DIR... [-o report.html]")
    dirs = [Path(d) for d in run_dirs]
    records = [load_run_dir(d) for d in dirs]
    out_path = Path(out) if out is not None else dirs[0] / REPORT_HTML
    parts: list[str] = []
    title = "bnlab report: " + ", ".join(r.name for r in records)
    parts.append(f"<h1>{escape(title)}</h1>")
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    parts.append(f"<p>Generated {escape(generated)} from {escape(', '.join(map(str, dirs)))}.</p>")
    seen: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="bnlab-report-") as tmp:
        figs = Path(figures_dir) if figures_dir is not None else Path(tmp)
        for i, (folder, rec) in enumerate(zip(dirs, records, strict=True)):
            partial = is_partial(rec)
            stem = _stem(rec.name, i, seen)
            badge = " <span class='badge'>partial</span>" if partial else ""
            parts.append(f"<section class='experiment'><h2>{escape(rec.name)}{badge}</h2>")
            if partial:
                parts.append(
                    f"<p class='partial'>Partial record (status: {escape(rec.status)}): "
                    "this experiment did not finish; the tables and figures show the epochs "
                    "it recorded.</p>"
                )
            for note in rec.notes:
                parts.append(f"<p class='note'>Note: {escape(str(note))}</p>")
            if not rec.rows:
                parts.append("<p>No finished epoch recorded yet.</p>")
            else:
                parts += [_verdict(rec), "<h3>Final epoch per network</h3>", _final_table(rec)]
                parts.append(
                    _img(
                        plots.learning_curves([rec], figs, f"{stem}-curves"),
                        f"{rec.name}: learning curves",
                    )
                )
                parts.append(
                    _img(
                        plots.lr_sweep([rec], figs, f"{stem}-lr_sweep"),
                        f"{rec.name}: learning-rate sweep",
                    )
                )
                parts.append(
                    _img(
                        plots.epoch_times([rec], figs, f"{stem}-epoch_time"),
                        f"{rec.name}: epoch time",
                    )
                )
            parts += ["<h3>Runs</h3>", _runs_table(rec)]
            probes = load_probes(folder, rec)
            if probes:
                parts += ["<h3>Probes</h3>", _probe_table(probes)]
                parts.append(
                    _img(
                        plots.activations_figure(probes, figs, f"{stem}-activations"),
                        f"{rec.name}: activation percentiles and histograms",
                    )
                )
                parts.append(
                    _img(
                        plots.shift_figure(probes, figs, f"{stem}-shift"),
                        f"{rec.name}: input shift and Santurkar ICS",
                    )
                )
                parts.append(
                    _img(
                        plots.landscape_figure(probes, figs, f"{stem}-landscape"),
                        f"{rec.name}: loss landscape and smoothness",
                    )
                )
            params = [
                [r["run"], r["name"], *(r.get("params", {}).get(k) for k in rec.param_keys)]
                for r in rec.runs
            ]
            parts += [
                "<h3>Each run's parameters</h3>",
                _table(["run", "name", *rec.param_keys], params, "params"),
            ]
            parts += ["<h3>Resolved config</h3>", _kv_table(rec.config, "config")]
            parts += ["<h3>Environment</h3>", _kv_table(rec.environment, "env"), "</section>"]
    html = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        "<link rel='icon' href='data:,'>"  # no favicon request, no 404 in the console
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(p for p in parts if p)
        + "</body></html>\n"
    )
    atomic_write_text(out_path, html)
    return out_path
