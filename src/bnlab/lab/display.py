"""How a record is shown in the terminal: tutorial 001's table, the summary over seeds, the verdict.

Tables fit the console's width (80 columns when the output is piped or logged) and never drop
or cut a value: numbers have four significant digits (``bnlab.lab.numbers``), and a table too
wide for the console narrows, step by step: ``mean ± half`` cells put the interval under the
mean, run and group names wrap after a comma, and the columns that still do not fit go to a
continuation table that repeats each row's labels. The verdict (``bnlab.lab.verdict``) says
which network won, by the rule and in the words of the HTML report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bnlab.lab.numbers import number, plus_minus
from bnlab.lab.record import RECORD_CSV, RECORD_JSON, ROWS_JSONL, SUMMARY_CSV, Record
from bnlab.lab.verdict import diverged_groups, sentences

#: the narrowest a wrapped name column gets (a single comma-separated part may be wider)
_MIN_NAME_WIDTH = 12
#: the space between two columns: no rules, one space of padding on each side
_GAP = 2


@dataclass(frozen=True)
class Column:
    """A table column: its header (it may wrap at spaces) and its cells, as text.

    ``label`` columns identify a row: they are repeated in every part of a table split to fit;
    ``names`` cells may wrap after their commas, ``intervals`` cells (``mean ± half``) may put
    the interval on a line of its own.
    """

    header: str
    cells: list[str]
    label: bool = False
    names: bool = False
    intervals: bool = False

    def width(self) -> int:
        words = [len(w) for w in self.header.split()]
        lines = [len(line) for cell in self.cells for line in cell.split("\n")]
        return max(words + lines + [1])


def _table_width(columns: Sequence[Column]) -> int:
    """The width of a table of ``columns`` as :func:`fitted_tables` draws it."""
    return sum(c.width() for c in columns) + _GAP * (len(columns) - 1)


def _wrap_name(name: str, width: int) -> str:
    """``name`` broken into lines of at most ``width`` characters after its commas (a part
    longer than ``width`` keeps its own line)."""
    lines = [""]
    for part in name.split(","):
        piece = part if lines == [""] else "," + part
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] += piece
    return "\n".join(lines)


def _narrowed(column: Column, excess: int) -> Column:
    """``column`` up to ``excess`` characters narrower, if its kind of cells allows it."""
    if column.intervals:
        return replace(column, cells=[c.replace(" ± ", "\n± ") for c in column.cells])
    if column.names:
        parts = [len(p) + 1 for cell in column.cells for p in cell.split(",")]
        target = max(column.width() - excess, _MIN_NAME_WIDTH, *parts)
        return replace(column, cells=[_wrap_name(c, target) for c in column.cells])
    return column


def fit_columns(columns: Sequence[Column], width: int) -> list[list[Column]]:
    """``columns`` as one or more tables of at most ``width`` characters, narrowed and split
    as the module docstring says; labels first in each."""
    columns = list(columns)
    if _table_width(columns) > width:  # every interval column alike, for one look
        columns = [_narrowed(c, 0) if c.intervals else c for c in columns]
    for k, column in enumerate(columns):
        excess = _table_width(columns) - width
        if excess > 0 and column.names:
            columns[k] = _narrowed(column, excess)
    labels = [c for c in columns if c.label]
    tables = [list(labels)]
    for column in (c for c in columns if not c.label):
        if len(tables[-1]) > len(labels) and _table_width([*tables[-1], column]) > width:
            tables.append(list(labels))
        tables[-1].append(column)
    return tables


def fitted_tables(
    title: str, columns: Sequence[Column], width: int, caption: str | None = None
) -> list[Table]:
    """Rich tables of ``columns`` that fit ``width`` (:func:`fit_columns`); names on the left,
    numbers on the right, a rule between rows when intervals are stacked; a value is never cut:
    in a console narrower than one part, rich folds it onto the next line."""
    parts = fit_columns(columns, width)
    tables = []
    for i, part in enumerate(parts):
        more = f" (continued, {i + 1} of {len(parts)})" if i else ""
        table = Table(
            title=title + more,
            caption=caption if i == len(parts) - 1 else None,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
            show_lines=any("\n±" in cell for c in part for cell in c.cells),
        )
        for column in part:
            table.add_column(
                column.header,
                justify="left" if column.names else "right",
                width=column.width(),
                overflow="fold",
            )
        for row in zip(*(c.cells for c in part), strict=True):
            table.add_row(*row)
        tables.append(table)
    return tables


def record_table(
    record: Record, width: int = 80, last: int | None = None, folder: Path | None = None
) -> list[Table]:
    """The per-epoch rows as tutorial 001 prints them (run, epoch, loss, accuracy, ...); with
    ``last``, only the last rows, and the title says so and how to see them all."""
    m = record.metric
    rows = record.rows if last is None or last >= len(record.rows) else record.rows[-last:]
    if len(rows) < len(record.rows):
        title = (
            f"{record.name}: the last {len(rows)} of {len(record.rows)} rows, one per run and "
            f"epoch ({record.status})"
        )
        where = f"`bnlab show {folder}`" if folder is not None else "`bnlab show RUN_DIR`"
        caption = f"every row: {where}, or {RECORD_CSV}"
    else:
        title, caption = f"{record.name}: every run and epoch ({record.status})", None
    spec = [
        ("run", "run", True),
        ("name", "name", True),
        ("epoch", "epoch", True),
        ("loss", "loss", False),
        (m, m, False),
        ("test loss", "test_loss", False),
        (f"test {m}", f"test_{m}", False),
        ("epoch s", "epoch_duration", False),
        ("run s", "run_duration", False),
    ]
    digits = {"epoch_duration": 3, "run_duration": 3}  # enough for a duration
    columns = [
        Column(header, [number(r[key], digits.get(key, 4)) for r in rows], label, key == "name")
        for header, key, label in spec
    ]
    return fitted_tables(title, columns, width, caption)


def final_summary(record: Record) -> list[dict[str, Any]]:
    """Each group's summary row at its last epoch."""
    last: dict[str, dict[str, Any]] = {}
    for row in record.summary:
        if row["group"] not in last or row["epoch"] > last[row["group"]]["epoch"]:
            last[row["group"]] = row
    return list(last.values())


def summary_table(record: Record, width: int = 80) -> list[Table]:
    """Each group at its last epoch: mean ± 95% CI over seeds; diverged runs counted."""
    m = record.metric
    rows = final_summary(record)
    diverged = diverged_groups(record)

    def pm(key: str) -> list[str]:
        return [plus_minus(r[f"{key}_mean"], r[f"{key}_ci95"]) for r in rows]

    columns = [Column("group", [r["group"] for r in rows], label=True, names=True)]
    epochs, seeds = {r["epoch"] for r in rows}, {r["n"] for r in rows}
    if len(epochs) == 1 and len(seeds) == 1:  # as usual: said once, in the title
        title = (
            f"{record.name}: last epoch ({epochs.pop()}), mean ± 95% CI over {seeds.pop()} seed(s)"
        )
    else:
        title = f"{record.name}: each group's last epoch, mean ± 95% CI over its seeds"
        columns.append(Column("epoch", [str(r["epoch"]) for r in rows]))
        columns.append(Column("seeds", [str(r["n"]) for r in rows]))
    columns += [
        Column(f"test {m}", pm(f"test_{m}"), intervals=True),
        Column("test loss", pm("test_loss"), intervals=True),
        Column(f"train {m}", pm(m), intervals=True),
        Column("train loss", pm("loss"), intervals=True),
        Column("samples/s", [f"{r['samples_per_s_mean']:.0f}" for r in rows]),
    ]
    if diverged:
        cells = [f"{diverged.get(r['group'], (0, 0))[0]} of {r['n']}" for r in rows]
        columns.append(Column("diverged runs", cells))
    return fitted_tables(title, columns, width)


def show(record: Record, folder: Path, console: Console, rows: int | None = None) -> None:
    """Print the record's table (the last ``rows`` rows, or all), the summary over seeds, the
    verdict and where the files are, fitted to the console's width."""
    for table in record_table(record, console.width, last=rows, folder=folder):
        console.print(table)
    for table in summary_table(record, console.width):
        console.print(table)
    for note in record.notes:
        console.print(f"[yellow]note:[/] {note}")
    if record.status != "complete":
        console.print(
            f"[yellow]this record is {record.status}: {len(record.rows)} epochs finished; "
            "continue with --resume[/]"
        )
    for line in sentences(record):
        console.print(line, style="bold", markup=False)
    files = ", ".join((RECORD_JSON, ROWS_JSONL, RECORD_CSV, SUMMARY_CSV, "config.toml"))
    console.print(
        f"Files: {folder}/ ({files}); print again with `bnlab show {folder}`", markup=False
    )
