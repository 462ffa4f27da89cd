"""An experiment: every run of a grid, trained in turn, recorded to disk after every epoch.

- A fresh model per run, built after ``torch.manual_seed(run seed)``.
- After every epoch: the checkpoint, then the record (record.json, record.csv, summary.csv),
  each written atomically, so Ctrl-C or a crash keeps every finished epoch.
- ``resume=True`` continues an interrupted experiment: finished runs are skipped, a partial
  run continues from its checkpoint (the shuffle order of each epoch depends only on (seed,
  epoch), so a resumed run sees the batches an uninterrupted one would have).
- An existing experiment folder is never overwritten: without ``resume`` a new folder
  ``<name>-2``, ``<name>-3``, ... is used when the name was not given explicitly, and an
  explicit ``out`` that exists is an error.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bnlab.lab.config import Config, config_from_dict
from bnlab.lab.data import Dataset, has_idx_dataset, load_dataset
from bnlab.lab.download import download
from bnlab.lab.environment import environment
from bnlab.lab.errors import UsageError
from bnlab.lab.grid import Run, RunParams, expand
from bnlab.lab.models import build_model
from bnlab.lab.presets import MNIST_FALLBACK, get_preset
from bnlab.lab.probes.for_run import TrainerProbes, probe_path
from bnlab.lab.record import (
    CHECKPOINTS,
    CONFIG_TOML,
    PARAM_KEYS,
    RECORD_JSON,
    TENSORBOARD,
    Record,
    atomic_write_bytes,
    atomic_write_text,
    load_record,
)
from bnlab.lab.stats import mean_ci95
from bnlab.lab.trainer import EpochResult, loss_fn, make_optimizer, run_epoch

RUNS_ROOT = Path("runs")
# Settings that may change when resuming: they do not change the results.
RESUMABLE = ("threads", "progress", "tensorboard", "data_dir", "download", "mirrors", "out")


class Execution(Protocol):
    """How the runs execute: in this process (the default), or as one rank of several
    (bnlab.lab.distributed_run). Only an execution that ``writes`` touches the folder."""

    @property
    def writes(self) -> bool: ...

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def agree(self, value: Any) -> Any: ...

    def environment(self) -> dict[str, Any]: ...

    def run_epoch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Dataset,
        params: RunParams,
        epoch: int,
        eval_batch_size: int,
        on_batch: Any = None,
        before_step: Any = None,
    ) -> EpochResult: ...


class _LocalExecution:
    """One process: the model as it is, this process writes everything."""

    writes = True

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def agree(self, value: Any) -> Any:
        return value

    def environment(self) -> dict[str, Any]:
        return {}

    def run_epoch(self, *args: Any, **kwargs: Any) -> EpochResult:
        return run_epoch(*args, **kwargs)


class ExperimentExistsError(FileExistsError):
    """The experiment folder exists and neither resume nor a new name was asked for."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _numbered(base: Path) -> list[Path]:
    found = [base] if base.exists() else []
    found += sorted(
        (p for p in base.parent.glob(f"{base.name}-*") if p.name[len(base.name) + 1 :].isdigit()),
        key=lambda p: int(p.name[len(base.name) + 1 :]),
    )
    return found


def experiment_folder(config: Config, resume: bool, root: Path = RUNS_ROOT) -> Path:
    """The folder to write: see the module docstring for the never-overwrite rule."""
    explicit = bool(config.out)
    base = Path(config.out) if explicit else root / config.experiment_name
    if resume:
        candidates = [base] if explicit else _numbered(base)
        candidates = [p for p in candidates if (p / RECORD_JSON).exists()]
        if not candidates:
            raise UsageError(
                f"--resume: no experiment to resume at {base} (no {RECORD_JSON} there); "
                "run it without --resume first"
            )
        return candidates[-1]
    if not base.exists() or not any(base.iterdir()):
        return base
    if explicit:
        raise ExperimentExistsError(
            f"{base} already exists; pass --resume to continue it, or choose another --out "
            "(an existing run folder is never overwritten)"
        )
    n = 2
    while (base.parent / f"{base.name}-{n}").exists():
        n += 1
    return base.parent / f"{base.name}-{n}"


def resolve(config: Config) -> tuple[Config, list[str]]:
    """Fill in the preset and defaults: the config that is saved, and notes for the record.

    A preset on MNIST runs on Fashion-MNIST when MNIST is absent (no offline copy exists),
    and the notes say so.
    """
    notes: list[str] = []
    grid = config.resolved_grid()
    if (
        config.preset
        and "dataset" not in config.grid
        and grid.get("dataset") == ["mnist"]
        and not config.download
        and not has_idx_dataset("mnist", config.data_dir or None)
    ):
        grid["dataset"] = [MNIST_FALLBACK]
        notes.append(
            f"MNIST not found (give --data-dir or --download); preset {config.preset!r} ran on "
            "Fashion-MNIST instead"
        )
    if config.preset:
        preset = get_preset(config.preset)
        if grid.get("epochs") != [preset.tutorial_epochs]:
            notes += preset.notes
    return replace(config, name=config.experiment_name, grid=grid), notes


def _check_resume(saved: Config, new: Config) -> Config:
    """The saved config, with runtime-only settings taken from ``new``; conflicts are errors."""
    conflicts = []
    for key, value in new.grid.items():
        if saved.grid.get(key) != value:
            conflicts.append(f"{key}: saved {saved.grid.get(key)!r}, now {value!r}")
    for key in ("limit_train", "limit_test", "split_seed", "eval_batch_size"):
        if getattr(new, key) != getattr(Config(), key) and getattr(new, key) != getattr(saved, key):
            conflicts.append(f"{key}: saved {getattr(saved, key)!r}, now {getattr(new, key)!r}")
    if conflicts:
        raise UsageError(
            "--resume continues the saved experiment; these settings differ from it: "
            + "; ".join(conflicts)
        )
    return replace(saved, **{k: getattr(new, k) for k in RESUMABLE if k != "out"})


class _Progress:
    """A rich progress bar per run; silent (and sync-free) when disabled."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.fields[run]}"),
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self.task: Any = None
        self.last = 0.0

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def start(self, run: str, epoch: int, batches: int) -> None:
        if not self.enabled:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("", total=batches, run=run, epoch=epoch, loss="-")

    def batch(self, step: int, loss: torch.Tensor) -> None:
        now = time.monotonic()
        if now - self.last >= 0.5:  # read the loss (a host sync) at most twice a second
            self.last = now
            self.progress.update(self.task, completed=step, loss=f"{loss.item():.4f}")
        else:
            self.progress.update(self.task, completed=step)


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
                entry[key] = rows[0][key]
        out.append(entry)
    order = {g: i for i, g in enumerate(dict.fromkeys(r["group"] for r in record.rows))}
    return sorted(out, key=lambda e: (order[e["group"]], e["epoch"]))


def _tensorboard_writer(folder: Path) -> Any:
    """A SummaryWriter; imported only when asked for, with a clear error if missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            "TensorBoard logging needs the 'tensorboard' package: "
            "pip install 'bnlab[tensorboard]' (or drop --tensorboard)"
        ) from None
    return SummaryWriter(log_dir=str(folder))


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, epoch: int) -> None:
    buffer = io.BytesIO()
    torch.save(
        {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())


def run_experiment(
    config: Config,
    *,
    resume: bool = False,
    console: Console | None = None,
    root: Path = RUNS_ROOT,
    on_epoch: Callable[[Record], None] | None = None,
    execution: Execution | None = None,
) -> tuple[Record, Path]:
    """Train every run of ``config``'s grid; returns the record and the folder it is in.

    ``on_epoch`` is called with the record after each epoch is saved (for live displays and
    tests); ``execution`` runs the epochs elsewhere (see :class:`Execution`).
    """
    console = console or Console(stderr=True)
    execution = execution or _LocalExecution()
    folder = execution.agree(experiment_folder(config, resume, root) if execution.writes else None)
    if resume:
        record = load_record(folder)
        saved = config_from_dict(record.config, where=str(folder / RECORD_JSON))
        resolved = _check_resume(saved, config)
        notes = record.notes
    else:
        resolved, notes = resolve(config)
        record = None
    if resolved.threads:
        torch.set_num_threads(resolved.threads)

    runs = expand(resolved.grid)
    datasets: dict[tuple[str, str], Dataset] = {}

    def dataset_for(run: Run) -> Dataset:
        key = (run.params.dataset, run.params.normalization)
        if key not in datasets:
            name = run.params.dataset
            data_dir = resolved.data_dir or None
            wanted = resolved.download and name in ("mnist", "fashion-mnist")
            if wanted and not has_idx_dataset(name, data_dir):
                console.print(f"downloading {name} ...")
                download(name, data_dir, mirrors=resolved.mirrors or None)
            data = load_dataset(name, data_dir, run.params.normalization, resolved.split_seed)
            datasets[key] = data.subset(resolved.limit_train or None, resolved.limit_test or None)
        return datasets[key]

    first = dataset_for(runs[0])
    metric = "accuracy" if first.task == "classification" else "mae"
    if record is None:
        record = Record(
            name=resolved.name,
            metric=metric,
            task=first.task,
            param_keys=list(PARAM_KEYS),
            config=resolved.to_dict(),
            grid=resolved.grid,
            runs=[
                {
                    "run": r.index,
                    "name": r.name,
                    "group": r.group,
                    "params": asdict(r.params),
                    "status": "pending",
                    "epochs_done": 0,
                }
                for r in runs
            ],
            notes=notes,
            created=_now(),
        )
        if execution.writes:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / CONFIG_TOML, resolved.to_toml())
    else:
        record.config = resolved.to_dict()
    record.environment = {**environment(), **execution.environment()}
    record.status = "running"

    def save() -> None:
        record.summary = summarize(record)
        record.updated = _now()
        if execution.writes:
            record.save(folder)
        if on_epoch is not None:
            on_epoch(record)

    show = resolved.progress == "on" or (resolved.progress == "auto" and console.is_terminal)
    try:
        with _Progress(console, show) as bar:
            for run in runs:
                _train_run(run, record, resolved, folder, dataset_for(run), bar, save, execution)
        record.status = "complete"
    except KeyboardInterrupt:
        record.status = "interrupted"
        console.print(
            f"interrupted: the finished epochs are in {folder}; "
            "continue with --resume (`bnlab compare PRESET --resume` or `bnlab run FILE --resume`)"
        )
        raise
    except BaseException:
        record.status = "failed"
        raise
    finally:
        record.updated = _now()
        record.summary = summarize(record)
        if execution.writes and folder.exists():
            record.save(folder)
    return record, folder


def _train_run(
    run: Run,
    record: Record,
    config: Config,
    folder: Path,
    dataset: Dataset,
    bar: _Progress,
    save: Callable[[], None],
    execution: Execution,
) -> None:
    info = record.runs[run.index - 1]
    if info["status"] == "complete":
        return
    params = run.params
    model = build_model(
        params.network,
        params.bn,
        params.bn_impl,
        dataset.input_shape,
        dataset.num_outputs,
        params.seed,
        params.bn_momentum,
        params.bn_eps,
    )
    optimizer = make_optimizer(model, params)
    trained = execution.prepare_model(model)  # checkpoints keep the unwrapped model's keys
    info["parameters"] = sum(p.numel() for p in model.parameters())
    checkpoint = folder / CHECKPOINTS / f"run-{run.index}.pt"
    done = int(info["epochs_done"])
    elapsed = 0.0
    if done:
        state = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else None
        if state is not None and state["epoch"] == done:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            elapsed = max(r["run_duration"] for r in record.rows if r["run"] == run.index)
        else:  # no usable checkpoint: start the run again
            record.rows[:] = [r for r in record.rows if r["run"] != run.index]
            done = 0
    writer = None
    if config.tensorboard and execution.writes:
        writer = _tensorboard_writer(folder / TENSORBOARD / run.name)
    batches = math.ceil(len(dataset.x_train) / params.batch_size)
    probed = TrainerProbes(
        config.probes, model, optimizer, loss_fn(dataset.task), dataset.x_train,
        dataset.y_train, params.batch_size, probe_path(folder, run.index), config.probe_layer,
    )  # fmt: skip
    try:
        probed.attach()
        for epoch in range(done + 1, params.epochs + 1):
            bar.start(run.name, epoch, batches)
            result = execution.run_epoch(
                trained,
                optimizer,
                dataset,
                params,
                epoch,
                config.eval_batch_size,
                bar.batch if bar.enabled else None,
                probed.before_step,
            )
            probed.after_epoch()
            elapsed += result.epoch_duration + result.eval_duration
            row = _row(run, epoch, result, elapsed, record.metric)
            record.rows.append(row)
            if execution.writes:
                _save_checkpoint(checkpoint, model, optimizer, epoch)
            info["epochs_done"] = epoch
            info["status"] = "complete" if epoch == params.epochs else "partial"
            save()
            if writer is not None:
                for key in ("loss", record.metric, "test_loss", f"test_{record.metric}"):
                    writer.add_scalar(key, row[key], epoch)
                writer.flush()
        probed.finish()
    finally:
        probed.close()
        if writer is not None:
            writer.close()


def _row(run: Run, epoch: int, result: EpochResult, elapsed: float, metric: str) -> dict:
    return {
        "run": run.index,
        "name": run.name,
        "group": run.group,
        "epoch": epoch,
        "loss": result.loss,
        metric: result.metric,
        "test_loss": result.test_loss,
        f"test_{metric}": result.test_metric,
        "epoch_duration": result.epoch_duration,
        "eval_duration": result.eval_duration,
        "run_duration": elapsed,
        "samples_per_s": result.samples / result.epoch_duration,
        **asdict(run.params),
    }
