"""How a record is shown: tutorial 001's table, the summary over seeds, and the verdict.

The verdict answers a new user's questions at a glance: which network won, on which metric
(the test-set metric first, then the training one), by how much, how sure (95% CI over seeds),
and where the files are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bnlab.lab.record import Record


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _varying(record: Record) -> list[str]:
    return [k for k in record.param_keys if len(record.grid.get(k, [])) > 1 and k != "bn"]


def record_table(record: Record, last: int | None = None) -> Table:
    """The per-epoch rows as tutorial 001 prints them (run, epoch, loss, accuracy, ...)."""
    m = record.metric
    table = Table(title=f"{record.name}: every run and epoch ({record.status})")
    cols = ["run", "name", "epoch", "loss", m, "test_loss", f"test_{m}", "epoch s", "run s"]
    for col in cols:
        if col == "name":
            table.add_column(col, justify="left", min_width=12)
        else:
            table.add_column(col, justify="right")
    rows = record.rows if last is None else record.rows[-last:]
    for r in rows:
        table.add_row(
            str(r["run"]),
            r["name"],
            str(r["epoch"]),
            _fmt(r["loss"]),
            _fmt(r[m]),
            _fmt(r["test_loss"]),
            _fmt(r[f"test_{m}"]),
            _fmt(r["epoch_duration"], 2),
            _fmt(r["run_duration"], 1),
        )
    return table


def final_summary(record: Record) -> list[dict[str, Any]]:
    """Each group's summary row at its last epoch."""
    last: dict[str, dict[str, Any]] = {}
    for row in record.summary:
        if row["group"] not in last or row["epoch"] > last[row["group"]]["epoch"]:
            last[row["group"]] = row
    return list(last.values())


def _pm(row: dict[str, Any], key: str) -> str:
    mean, ci = row[f"{key}_mean"], row[f"{key}_ci95"]
    if isinstance(ci, float) and math.isfinite(ci):
        return f"{mean:.4f} ± {ci:.4f}"
    return _fmt(mean)


def summary_table(record: Record) -> Table:
    m = record.metric
    rows = final_summary(record)
    seeds = max((r["n"] for r in rows), default=0)
    title = f"{record.name}: last epoch, mean ± 95% CI over {seeds} seed(s)"
    table = Table(title=title)
    for col in ("group", "epoch", "seeds", f"test {m}", "test loss", f"train {m}", "train loss"):
        table.add_column(col, justify="left" if col == "group" else "right")
    table.add_column("samples/s", justify="right")
    for r in rows:
        table.add_row(
            r["group"],
            str(r["epoch"]),
            str(r["n"]),
            _pm(r, f"test_{m}"),
            _pm(r, "test_loss"),
            _pm(r, m),
            _pm(r, "loss"),
            f"{r['samples_per_s_mean']:.0f}",
        )
    return table


def _amount(record: Record, diff: float) -> str:
    if record.metric == "accuracy":
        return f"{diff * 100:.2f} points"
    return f"{diff:.3f}"


def verdict(record: Record) -> list[str]:
    """Plain sentences: the winner on the test metric, the margin, the training metric."""
    m = record.metric
    rows = final_summary(record)
    if len(rows) < 2:
        return ["only one group of runs: nothing to compare"] if rows else ["no finished epoch"]
    better = max if record.higher_is_better else min
    key = f"test_{m}_mean"
    best = better(rows, key=lambda r: r[key])
    rest = [r for r in rows if r is not best]
    runner = better(rest, key=lambda r: r[key])
    diff = abs(best[key] - runner[key])
    ci_a, ci_b = best[f"test_{m}_ci95"], runner[f"test_{m}_ci95"]
    lines = [
        f"Winner on test {m} (epoch {best['epoch']}, model in eval mode): {best['group']} "
        f"{_pm(best, f'test_{m}')} vs {runner['group']} {_pm(runner, f'test_{m}')}: "
        f"{'better' if record.metric == 'accuracy' else 'lower'} by {_amount(record, diff)}."
    ]
    if math.isfinite(ci_a) and math.isfinite(ci_b):
        lo_best = best[key] - ci_a if record.higher_is_better else best[key] + ci_a
        hi_run = runner[key] + ci_b if record.higher_is_better else runner[key] - ci_b
        clear = lo_best > hi_run if record.higher_is_better else lo_best < hi_run
        lines.append(
            "The 95% intervals do not overlap: a clear difference."
            if clear
            else "The 95% intervals overlap: not a clear difference with these seeds."
        )
    else:
        lines.append("One seed per group: no confidence interval (use --seeds 3 or more).")
    train_best = better(rows, key=lambda r: r[f"{m}_mean"])
    train_other = [r for r in rows if r is not train_best]
    train_runner = better(train_other, key=lambda r: r[f"{m}_mean"])
    lines.append(
        f"On the training set ({m} over the epoch, train mode): {train_best['group']} "
        f"{_fmt(train_best[f'{m}_mean'])} vs {train_runner['group']} "
        f"{_fmt(train_runner[f'{m}_mean'])}."
    )
    return lines


def show(record: Record, folder: Path, console: Console, rows: int | None = None) -> None:
    """Print the record's table, the summary over seeds, the verdict and where the files are."""
    console.print(record_table(record, last=rows))
    console.print(summary_table(record))
    for note in record.notes:
        console.print(f"[yellow]note:[/] {note}")
    if record.status != "complete":
        console.print(
            f"[yellow]this record is {record.status}: {len(record.rows)} epochs finished; "
            "continue with --resume[/]"
        )
    for line in verdict(record):
        console.print(f"[bold]{line}[/]")
    console.print(
        f"Files: {folder}/ (record.csv, record.json, summary.csv, config.toml); "
        f"print again with `bnlab show {folder}`"
    )
