"""The run record: what a lab experiment writes to disk, and how it is read back.

An *experiment* is one ``bnlab compare`` or ``bnlab run``: a grid of *runs* (one model trained
with one set of parameters and one seed). It owns one folder, ``runs/<name>/`` by default::

    runs/<name>/
        record.json      everything, the file to read (layout below)
        record.csv       one row per (run, epoch): the ``rows`` of record.json
        summary.csv      one row per (group, epoch): mean and 95% CI over seeds
        config.toml      the resolved config; ``bnlab run runs/<name>/config.toml`` repeats it
        checkpoints/run-<k>.pt   {"epoch", "model", "optimizer"} state dicts after run k's
                                 last finished epoch (for ``--resume``; kept when the run
                                 completes, so the trained model can be reloaded)
        tensorboard/<run name>/  TensorBoard scalars, only with ``tensorboard = true``
        probes/run-<k>.json      probe results, only with ``--probe`` (bnlab.lab.probes)
        report.html              the HTML report (bnlab.lab.report), unless --no-report

Every file is written atomically (to a temporary file in the same folder, then ``os.replace``)
after every epoch, so Ctrl-C or a crash leaves a consistent record of every finished epoch.

record.json (``"format": "bnlab-record"``, ``"version": 2``)::

    {
      "format": "bnlab-record", "version": 2,
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
                "params": {...}, "status": "pending" | "partial" | "complete",
                "epochs_done": 3, "parameters": 44426}, ...],
      "rows": [{column: value, ...}, ...],   as record.csv, numbers as numbers, NaN as null
      "summary": [{...}, ...],               as summary.csv
      "notes": ["MNIST not found ...; ran on Fashion-MNIST", ...],
      "environment": {"python", "platform", "machine", "processor", "cpu_count",
                      "torch_threads", "torch_interop_threads",
                      "versions": {"bnlab", "torch", "numpy", "rich", ...}},
      "created": "2026-01-01T00:00:00+00:00", "updated": "..."
    }

record.csv columns, in this order (tutorial 001's RunManager columns, then the test metrics,
then throughput, then the run's parameters)::

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
                    ``bnlab.lab.grid.RunParams`` (network, bn, bn_impl, bn_momentum, bn_eps,
                    dataset, normalization, optimizer, lr, sgd_momentum, batch_size, epochs,
                    seed)

summary.csv columns::

    group, epoch, n (number of seeds with this epoch), then for each of loss, <metric>,
    test_loss, test_<metric>, epoch_duration, samples_per_s: <col>_mean and <col>_ci95
    (the half-width of the 95% confidence interval of the mean, Student t with n-1 degrees
    of freedom; empty when n < 2), then the group's parameters except seed.

Read a record with :func:`load_record` (works on partial records of interrupted runs).

Version 1 records (before the run parameter ``momentum``, SGD's, was renamed ``sgd_momentum``,
and before ``bn_momentum`` and ``bn_eps`` existed) are read with the column renamed (in
param_keys, the grid, the config's grid, each run's params, the rows and the summary); they
have no bn_momentum or bn_eps columns. A later save (``--resume``) writes them as version 2.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bnlab.lab.errors import UsageError
from bnlab.lab.grid import RENAMED_PARAMS, RunParams

FORMAT = "bnlab-record"
VERSION = 2
#: the versions load_record reads: version 1 has the old parameter names (RENAMED_PARAMS)
READABLE_VERSIONS = (1, 2)

RECORD_JSON = "record.json"
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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half.

    The data goes to a temporary file in the same folder (same file system), is flushed and
    fsynced, then renamed over ``path`` with ``os.replace`` (atomic on POSIX and Windows).
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Bytes version of :func:`atomic_write_text`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    """NaN/Inf become null (JSON has no NaN); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _csv_text(rows: list[dict[str, Any]], cols: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
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


@dataclass
class Record:
    """An experiment's record in memory; :meth:`save` writes record.json/csv and summary.csv."""

    name: str
    metric: str
    task: str
    param_keys: list[str]
    config: dict[str, Any]
    grid: dict[str, list[Any]]
    runs: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    created: str = ""
    updated: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "mae"

    @property
    def columns(self) -> list[str]:
        return columns(self.metric, self.param_keys)

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

    def to_json(self) -> dict[str, Any]:
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
                "rows": self.rows,
                "summary": self.summary,
                "notes": self.notes,
                "environment": self.environment,
                "created": self.created,
                "updated": self.updated,
            }
        )

    def save(self, folder: Path) -> None:
        """Write record.json, record.csv and summary.csv atomically into ``folder``."""
        folder = Path(folder)
        atomic_write_text(folder / RECORD_CSV, _csv_text(self.rows, self.columns))
        atomic_write_text(folder / SUMMARY_CSV, _csv_text(self.summary, self.summary_columns()))
        text = json.dumps(self.to_json(), indent=1, allow_nan=False)
        atomic_write_text(folder / RECORD_JSON, text + "\n")


#: the keys of record.json that load_record needs (the others have defaults)
_REQUIRED = (
    "name", "status", "task", "metric", "param_keys", "config", "grid", "runs", "rows", "summary"
)  # fmt: skip


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
    data["summary"] = [_renamed(row) for row in data["summary"]]
    data["version"] = VERSION
    return data


def load_record(folder: Path | str) -> Record:
    """Read ``folder/record.json`` back; a clear error if it is missing or not a bnlab record.

    A version 1 record is read with its renamed columns' new names (see the module docstring).
    """
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
    if data.get("version") not in READABLE_VERSIONS:
        raise UsageError(
            f"{path}: record version {data.get('version')!r}, expected one of "
            f"{', '.join(map(str, READABLE_VERSIONS))} (written by a newer bnlab?)"
        )
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise UsageError(f"{path} is an incomplete bnlab run record: no {', '.join(missing)}")
    if data["version"] == 1:
        data = _upgrade_v1(data)

    def _nan(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: (math.nan if v is None else v) for k, v in row.items()} for row in rows]

    return Record(
        name=data["name"],
        metric=data["metric"],
        task=data["task"],
        param_keys=list(data["param_keys"]),
        config=data["config"],
        grid=data["grid"],
        runs=data["runs"],
        rows=_nan(data["rows"]),
        summary=_nan(data["summary"]),
        notes=list(data.get("notes", [])),
        environment=data.get("environment", {}),
        status=data["status"],
        created=data.get("created", ""),
        updated=data.get("updated", ""),
    )
