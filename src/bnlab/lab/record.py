"""The run record: what a lab experiment writes to disk, and how it is read back.

An *experiment* is one ``bnlab compare`` or ``bnlab run``: a grid of *runs* (one model trained
with one set of parameters and one seed). It owns one folder, ``runs/<name>/`` by default::

    runs/<name>/
        record.json      the header: everything but the rows (layout below)
        rows.jsonl       one JSON object per (run, epoch): the record's rows, numbers as
                         numbers, NaN and infinities as null
        record.csv       the same rows as CSV (columns below), for spreadsheets and pandas
        summary.csv      one row per (group, epoch): mean and 95% CI over seeds
        config.toml      the resolved config; ``bnlab run runs/<name>/config.toml`` repeats it
        checkpoints/run-<k>.pt   {"epoch", "model", "optimizer"} state dicts after an epoch of
                                 run k: its last one, and one every few seconds of training
                                 before it (for ``--resume``; kept when the run completes, so
                                 the trained model can be reloaded)
        tensorboard/<run name>/  TensorBoard scalars, only with ``tensorboard = true``
        probes/run-<k>.json      probe results, only with ``--probe`` (bnlab.lab.probes)
        report.html              the HTML report (bnlab.lab.report), unless --no-report

Writing an epoch costs the same however long the run: its row is appended to record.csv, then
to rows.jsonl, the commit point (``bnlab.lab.files``: one write each, no file rewritten; the
experiment writes a fast run's rows a second's worth at a time).
:func:`load_record` reads every complete line of rows.jsonl, skipping an incomplete last one,
and counts each run's finished epochs (``epochs_done``, ``status``) from them, so Ctrl-C, a
crash or a kill at any moment leaves a consistent record of every finished epoch; the next
save (``--resume``) rewrites rows.jsonl and record.csv from what was read (record.csv may
then lack the last row, or have one more). record.json, whose size does not grow with the
epochs, is replaced atomically when the experiment starts and stops, when a run finishes and
at each checkpoint (``bnlab.lab.experiment``). summary.csv, derived from the rows and growing
with them, is written when a run finishes and when the experiment stops;
:attr:`Record.summary` computes it from the rows whenever it is read.

record.json (``"format": "bnlab-record"``, ``"version": 3``)::

    {
      "format": "bnlab-record", "version": 3,
      "name": "lizard-cnn",                  experiment name (the folder's name by default)
      "status": "running" | "complete" | "interrupted" | "failed",
      "task": "classification" | "regression",
      "metric": "accuracy" | "mae",          the headline metric (test_<metric> decides winners)
      "higher_is_better": true | false,      true for accuracy, false for mae
      "columns": [...],                      the CSV columns, in order
      "param_keys": [...],                   the run-parameter columns (grid order)
      "config": {...},                       resolved Config (see bnlab.lab.config.Config)
      "grid": {"bn": [false, true], "seed": [0, 1, 2], ...},   the expanded parameter lists
      "runs": [{"run": 1, "name": "no_bn,seed=0", "group": "no_bn",
                "params": {...}, "status": "pending" | "partial" | "complete" | "failed",
                "epochs_done": 3, "parameters": 44426, "threads": 1}, ...],   status and
                                             epochs_done as of this file (load_record counts
                                             them anew, keeping "failed": a run that failed on
                                             every try of a worker, with its "error");
                                             threads: bnlab.lab.threads
      "notes": ["MNIST not found ...; ran on Fashion-MNIST", ...],
      "environment": {"python", "platform", "machine", "processor", "cpu_count",
                      "torch_threads", "torch_interop_threads",
                      "versions": {"bnlab", "torch", "numpy", "rich", ...}},
      "created": "2026-01-01T00:00:00+00:00", "updated": "..."
    }

record.csv columns, in this order (tutorial 001's RunManager columns, then the test metrics,
then throughput, then the run's parameters); a row of rows.jsonl has the same keys::

    run             1-based run index (grid order)
    name            run name: the varying parameters, e.g. "bn,seed=1"
    group           the name without the seed: the runs averaged together, e.g. "bn"
    epoch           1-based epoch
    loss            mean training loss over the epoch, weighted by each batch's real size
                    (the running figure the tutorial reports; model in train mode)
    accuracy        training accuracy over the epoch (classification)   | mae (regression)
    test_loss       test-set loss after the epoch, model in eval mode
    test_accuracy   test-set accuracy after the epoch, eval mode         | test_mae
    epoch_duration  seconds of the training pass of this epoch
    eval_duration   seconds of the test-set evaluation after it
    run_duration    seconds since the run started (training + evaluation, cumulative)
    samples_per_s   training samples / epoch_duration
    <params...>     the run's parameters, in ``param_keys`` order: the fields of
                    ``bnlab.lab.grid.RunParams`` (network, bn, norm, placement, bn_impl,
                    bn_momentum, bn_eps, dropout, init_scale, dataset, normalization,
                    input_scaling, optimizer, lr, sgd_momentum, batch_size, epochs, seed)

summary.csv columns::

    group, epoch, n (number of seeds with this epoch), then for each of loss, <metric>,
    test_loss, test_<metric>, epoch_duration, samples_per_s: <col>_mean and <col>_ci95
    (the half-width of the 95% confidence interval of the mean, Student t with n-1 degrees
    of freedom; empty when n < 2), then the group's parameters except seed.

Read a record with :func:`load_record` (works on partial records of interrupted runs).

Older records load too. Versions 1 and 2 kept the rows (and the summary, which is recomputed)
inside record.json, rewritten whole after every epoch. Version 1 records (before the run
parameter ``momentum``, SGD's, was renamed ``sgd_momentum``, and before ``bn_momentum`` and
``bn_eps`` existed) are read with the column renamed (in param_keys, the grid, the config's
grid, each run's params and the rows); they have no bn_momentum or bn_eps columns. A later
save (``--resume``) writes either as version 3.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bnlab.lab.errors import UsageError
from bnlab.lab.files import append_text, atomic_write_text
from bnlab.lab.grid import RENAMED_PARAMS, RunParams
from bnlab.lab.stats import mean_ci95

FORMAT = "bnlab-record"
VERSION = 3
#: the versions load_record reads: 1 and 2 keep the rows inside record.json, and version 1 has
#: the old parameter names (RENAMED_PARAMS)
READABLE_VERSIONS = (1, 2, 3)

RECORD_JSON = "record.json"
ROWS_JSONL = "rows.jsonl"
RECORD_CSV = "record.csv"
SUMMARY_CSV = "summary.csv"
CONFIG_TOML = "config.toml"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"

#: the run-parameter columns: RunParams' fields, in their order
PARAM_KEYS = tuple(f.name for f in fields(RunParams))


def metric_columns(metric: str) -> list[str]:
    """The per-epoch measurement columns for a headline metric ("accuracy" or "mae")."""
    return [
        "loss",
        metric,
        "test_loss",
        f"test_{metric}",
        "epoch_duration",
        "eval_duration",
        "run_duration",
        "samples_per_s",
    ]


def columns(metric: str, param_keys: list[str] | tuple[str, ...] = PARAM_KEYS) -> list[str]:
    """All record.csv columns, in order."""
    return ["run", "name", "group", "epoch", *metric_columns(metric), *param_keys]


def _jsonable(value: Any) -> Any:
    """NaN/Inf become null (JSON has no NaN); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _jsonl_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(_jsonable(row), allow_nan=False) + "\n" for row in rows)


def _csv_text(rows: list[dict[str, Any]], cols: list[str], header: bool = True) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        out = {}
        for col in cols:
            value = row.get(col)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                out[col] = ""
            elif isinstance(value, float):
                out[col] = repr(value)
            else:
                out[col] = value
        writer.writerow(out)
    return buffer.getvalue()


def summarize(record: Record) -> list[dict[str, Any]]:
    """Mean and 95% CI over seeds, per group and epoch (the summary.csv rows)."""
    metric = record.metric
    bases = ["loss", metric, "test_loss", f"test_{metric}", "epoch_duration", "samples_per_s"]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in record.rows:
        groups.setdefault((row["group"], row["epoch"]), []).append(row)
    out = []
    for (group, epoch), rows in groups.items():
        entry: dict[str, Any] = {"group": group, "epoch": epoch, "n": len(rows)}
        for base in bases:
            mean, ci = mean_ci95([r[base] for r in rows])
            entry[f"{base}_mean"], entry[f"{base}_ci95"] = mean, ci
        for key in record.param_keys:
            if key != "seed":
                entry[key] = rows[0].get(key)
        out.append(entry)
    order = {g: i for i, g in enumerate(dict.fromkeys(r["group"] for r in record.rows))}
    return sorted(out, key=lambda e: (order[e["group"]], e["epoch"]))


@dataclass
class Record:
    """An experiment's record in memory; :meth:`save` writes it into its folder.

    ``rows`` only grows while an experiment runs (:meth:`save` appends the rows it has not
    written yet); remove rows with :meth:`discard_run`, which makes the next save rewrite them.
    """

    name: str
    metric: str
    task: str
    param_keys: list[str]
    config: dict[str, Any]
    grid: dict[str, list[Any]]
    runs: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    created: str = ""
    updated: str = ""
    # (folder, number of rows): the rows on disk there, as this record wrote them; None when
    # unknown (never saved, loaded, rows discarded, or a save that did not finish)
    _saved: tuple[Path, int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "mae"

    @property
    def columns(self) -> list[str]:
        return columns(self.metric, self.param_keys)

    @property
    def summary(self) -> list[dict[str, Any]]:
        """The summary.csv rows, computed from the rows (:func:`summarize`)."""
        return summarize(self)

    def summary_columns(self) -> list[str]:
        cols = ["group", "epoch", "n"]
        for base in (
            "loss",
            self.metric,
            "test_loss",
            f"test_{self.metric}",
            "epoch_duration",
            "samples_per_s",
        ):
            cols += [f"{base}_mean", f"{base}_ci95"]
        return cols + [k for k in self.param_keys if k != "seed"]

    def sort_rows(self) -> None:
        """Put the rows in (run, epoch) order, as training in turn writes them (runs trained
        in parallel finish in any order); the next save rewrites the rows files if it moved
        any."""
        ordered = sorted(self.rows, key=lambda r: (r["run"], r["epoch"]))
        if ordered != self.rows:
            self.rows[:] = ordered
            self._saved = None

    def discard_run(self, run: int, after: int = 0) -> None:
        """Remove run ``run``'s rows of the epochs after ``after`` (they are trained again);
        the next save rewrites the rows files."""
        self.rows[:] = [r for r in self.rows if r["run"] != run or r["epoch"] <= after]
        self._saved = None

    def to_json(self) -> dict[str, Any]:
        """record.json's content: the header (the rows are in rows.jsonl)."""
        return _jsonable(
            {
                "format": FORMAT,
                "version": VERSION,
                "name": self.name,
                "status": self.status,
                "task": self.task,
                "metric": self.metric,
                "higher_is_better": self.higher_is_better,
                "columns": self.columns,
                "param_keys": list(self.param_keys),
                "config": self.config,
                "grid": self.grid,
                "runs": self.runs,
                "notes": self.notes,
                "environment": self.environment,
                "created": self.created,
                "updated": self.updated,
            }
        )

    def save(
        self, folder: Path | str, *, header: bool = True, summary: bool = True,
        durable: bool = True,
    ) -> None:  # fmt: skip
        """Write the record into ``folder`` (see the module docstring for what goes where).

        Rows this record wrote to ``folder`` before are not written again: the new ones are
        appended, so an epoch's save costs the same however long the run. ``header=False``
        leaves record.json alone and ``summary=False`` summary.csv (the experiment writes them
        when a run finishes); ``durable=False`` skips the fsyncs (``bnlab.lab.files``).
        """
        folder = Path(folder)
        saved, self._saved = self._saved, None  # unknown until this save finishes
        if saved is not None and saved[0] == folder and saved[1] <= len(self.rows):
            new = self.rows[saved[1] :]
            if new:
                csv_rows = _csv_text(new, self.columns, header=False)
                append_text(folder / RECORD_CSV, csv_rows, durable)
                append_text(folder / ROWS_JSONL, _jsonl_text(new), durable)
        else:
            atomic_write_text(folder / RECORD_CSV, _csv_text(self.rows, self.columns), durable)
            atomic_write_text(folder / ROWS_JSONL, _jsonl_text(self.rows), durable)
        self._saved = (folder, len(self.rows))
        if summary:
            summary_text = _csv_text(self.summary, self.summary_columns())
            atomic_write_text(folder / SUMMARY_CSV, summary_text, durable)
        if header:
            text = json.dumps(self.to_json(), indent=1, allow_nan=False)
            atomic_write_text(folder / RECORD_JSON, text + "\n", durable)


#: the keys of record.json that load_record needs (the others have defaults)
_REQUIRED = ("name", "status", "task", "metric", "param_keys", "config", "grid", "runs")
#: and the ones versions 1 and 2 need too
_REQUIRED_BEFORE_3 = ("rows", "summary")


def _renamed(mapping: dict[str, Any]) -> dict[str, Any]:
    """``mapping`` with its old parameter names (RENAMED_PARAMS) replaced, order kept."""
    return {RENAMED_PARAMS[k][0] if k in RENAMED_PARAMS else k: v for k, v in mapping.items()}


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version 1 record's data with the renamed parameters' new names (see the docstring)."""
    data = dict(data)
    data["param_keys"] = list(_renamed(dict.fromkeys(data["param_keys"])))
    data["grid"] = _renamed(data["grid"])
    if isinstance(data.get("config"), dict) and isinstance(data["config"].get("grid"), dict):
        data["config"] = {**data["config"], "grid": _renamed(data["config"]["grid"])}
    data["runs"] = [{**run, "params": _renamed(run.get("params", {}))} for run in data["runs"]]
    data["rows"] = [_renamed(row) for row in data["rows"]]
    return data


def _read_rows(path: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every complete row of rows.jsonl; an incomplete last line (a write cut short) is
    skipped, a bad line elsewhere is an error. ``runs``' epochs_done and status are set from
    the rows (the module docstring)."""
    rows = []
    if not path.exists() and any(run.get("epochs_done") for run in runs):
        raise UsageError(
            f"{path} is missing: {path.parent / RECORD_JSON} counts finished epochs, whose rows "
            "it holds"
        )
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path} is not UTF-8 text: {exc}") from None
        lines = text.split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines):  # no newline after it: an append that did not finish
                    break
                raise UsageError(f"{path}, line {number}: not a JSON row ({exc})") from None
            if not isinstance(row, dict) or not {"run", "epoch"} <= row.keys():
                raise UsageError(f"{path}, line {number}: expected a row with run and epoch")
            rows.append(row)
    done = {int(run["run"]): 0 for run in runs}
    for row in rows:
        done[row["run"]] = max(done.get(row["run"], 0), row["epoch"])
    for run in runs:
        epochs_done = done[int(run["run"])]
        epochs = run.get("params", {}).get("epochs")
        run["epochs_done"] = epochs_done
        run["status"] = (
            "complete" if epochs_done == epochs
            else "failed" if run.get("status") == "failed"  # its error says why
            else "partial" if epochs_done else "pending"
        )  # fmt: skip
    return rows


def load_record(folder: Path | str) -> Record:
    """Read a record back from ``folder`` (or its record.json); a clear error if it is missing
    or not a bnlab record. Records of every version in READABLE_VERSIONS are read (see the
    module docstring)."""
    folder = Path(folder)
    path = folder / RECORD_JSON if folder.is_dir() else folder
    if not path.exists():
        raise UsageError(
            f"no bnlab run record at {path}: expected a folder written by `bnlab compare` or "
            "`bnlab run` (it holds record.json)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{path} is not a bnlab run record (format != {FORMAT!r})")
    version = data.get("version")
    if version not in READABLE_VERSIONS:
        raise UsageError(
            f"{path}: record version {version!r}, expected one of "
            f"{', '.join(map(str, READABLE_VERSIONS))} (written by a newer bnlab?)"
        )
    required = _REQUIRED if version == VERSION else _REQUIRED + _REQUIRED_BEFORE_3
    missing = [key for key in required if key not in data]
    if missing:
        raise UsageError(f"{path} is an incomplete bnlab run record: no {', '.join(missing)}")
    if version == 1:
        data = _upgrade_v1(data)
    rows = (
        data["rows"] if version != VERSION else _read_rows(path.parent / ROWS_JSONL, data["runs"])
    )
    return Record(
        name=data["name"],
        metric=data["metric"],
        task=data["task"],
        param_keys=list(data["param_keys"]),
        config=data["config"],
        grid=data["grid"],
        runs=data["runs"],
        rows=[{k: (math.nan if v is None else v) for k, v in row.items()} for row in rows],
        notes=list(data.get("notes", [])),
        environment=data.get("environment", {}),
        status=data["status"],
        created=data.get("created", ""),
        updated=data.get("updated", ""),
    )
