"""An experiment: every run of a grid, trained in turn, recorded to disk after every epoch.

- A fresh model per run, built after ``torch.manual_seed(run seed)``.
- After every epoch, or every ``ROWS_EVERY_S`` seconds for fast epochs: the record (the new
  rows appended: ``bnlab.lab.record``), so Ctrl-C, a crash or a kill keeps the finished epochs,
  and writing an epoch costs the same however long the run. Every ``CHECKPOINT_EVERY_S``
  seconds and at a run's last epoch, record.json is replaced, the record fsynced and the run
  checkpointed (model and optimizer, atomically).
- ``resume=True`` continues an interrupted experiment: finished runs are skipped, a partial
  run continues from its checkpoint, training again the recorded epochs after it (the shuffle
  order of each epoch depends only on (seed, epoch), so a resumed run sees the batches an
  uninterrupted one would have, and computes the same numbers).
- With a remote executor (``--jobs N``, Ray: ``bnlab.lab.executors``) each run trains whole
  elsewhere and its epochs enter the record when it returns, in the same files; the record
  ends with its rows in run order, as a serial one.
- An existing experiment folder is never overwritten: without ``resume`` a new folder
  ``<name>-2``, ``<name>-3``, ... is used when the name was not given explicitly, and an
  explicit ``out`` that exists is an error.
"""

from __future__ import annotations

import io
import math
import shutil
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
from bnlab.lab.executors import Executor, FolderTask, run_tasks, train_folder, write_folder
from bnlab.lab.files import atomic_write_bytes, atomic_write_text
from bnlab.lab.grid import Run, RunParams, expand
from bnlab.lab.models import build_model
from bnlab.lab.presets import MNIST_FALLBACK, get_preset
from bnlab.lab.probes import ProbeConfig, find_layer
from bnlab.lab.probes.for_run import TrainerProbes, probe_path
from bnlab.lab.record import (
    CHECKPOINTS,
    CONFIG_TOML,
    PARAM_KEYS,
    RECORD_JSON,
    TENSORBOARD,
    Record,
    load_record,
)
from bnlab.lab.threads import run_threads
from bnlab.lab.trainer import EpochResult, loss_fn, make_optimizer, run_epoch

RUNS_ROOT = Path("runs")
#: seconds of training between two checkpoints of a run (and fsyncs of its record): a process
#: killed outright, or interrupted, repeats at most this much training when resumed. Every
#: run's last epoch is checkpointed; saving every epoch of a fast run would cost more than
#: training it.
CHECKPOINT_EVERY_S = 30.0
#: seconds between two writes of the record's new rows: the epochs of a fast run are appended
#: a second's worth at a time (a process killed outright loses at most that from the record,
#: and trains it again when resumed: it came after the checkpoint; Ctrl-C loses nothing)
ROWS_EVERY_S = 1.0
# Settings that may change when resuming: they do not change the results.
RESUMABLE = ("threads", "progress", "tensorboard", "data_dir", "download", "mirrors", "out")
# Settings besides the grid that must not change when resuming: they change the results or
# what the probes measure (a value given on resume that differs from the saved one is an error).
FIXED = ("limit_train", "limit_test", "split_seed", "eval_batch_size", "probes", "probe_layer")


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


class ExperimentInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised after every finished epoch was saved in ``folder``.

    It prints nothing: the caller knows the command that would continue (``bnlab`` prints it
    once, with ``--out folder --resume``).
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(f"interrupted; the finished epochs are in {folder}")
        self.folder = folder


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
    if base.exists() and not base.is_dir():
        raise UsageError(
            f"{base} is a file, not a folder: choose another --out (or --name) for the experiment"
        )
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

    A preset on MNIST runs on Fashion-MNIST when MNIST is absent from the usual places (no
    offline copy exists), and the notes say so; a ``data_dir`` given is where the data must be
    (no fallback). The preset's notes on its epochs come only when its default epochs are used.
    The saved config has no ``out``: it says what the experiment is, not where it was written,
    so that ``bnlab run config.toml`` repeats it in a new folder.
    """
    notes: list[str] = []
    grid = config.resolved_grid()
    if (
        config.preset
        and "dataset" not in config.grid
        and grid.get("dataset") == ["mnist"]
        and not config.download
        and not config.data_dir
        and not has_idx_dataset("mnist")
    ):
        grid["dataset"] = [MNIST_FALLBACK]
        notes.append(
            f"MNIST not found (give --data-dir or --download): preset {config.preset!r} runs on "
            "Fashion-MNIST instead"
        )
    if config.preset and "epochs" not in config.grid:
        preset = get_preset(config.preset)
        if grid.get("epochs") != [preset.tutorial_epochs]:
            notes += preset.notes
    return replace(config, name=config.experiment_name, grid=grid, out=""), notes


def _check_resume(saved: Config, new: Config) -> Config:
    """The saved config, with runtime-only settings taken from ``new``; conflicts are errors."""
    conflicts = []
    for key, value in new.grid.items():
        if saved.grid.get(key) != value:
            conflicts.append(f"{key}: saved {saved.grid.get(key)!r}, now {value!r}")
    for key in FIXED:
        if getattr(new, key) != getattr(Config(), key) and getattr(new, key) != getattr(saved, key):
            conflicts.append(f"{key}: saved {getattr(saved, key)!r}, now {getattr(new, key)!r}")
    if conflicts:
        raise UsageError(
            "--resume continues the saved experiment; these settings differ from it: "
            + "; ".join(conflicts)
        )
    return replace(saved, **{k: getattr(new, k) for k in RESUMABLE if k != "out"})


def _create_folder(folder: Path, config: Config) -> None:
    """The experiment folder and its config.toml: a place that cannot be written (a read-only
    file system, no permission, a file in the path) is the user's to fix, in one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / CONFIG_TOML, config.to_toml())
    except OSError as exc:
        raise UsageError(
            f"cannot write the experiment folder {folder}: {exc.strerror or exc}; "
            "choose another --out"
        ) from None


def _build(params: RunParams, dataset: Dataset) -> torch.nn.Module:
    """A run's fresh model for ``dataset``'s inputs and outputs."""
    return build_model(
        params.network,
        params.bn,
        params.bn_impl,
        dataset.input_shape,
        dataset.num_outputs,
        params.seed,
        params.bn_momentum,
        params.bn_eps,
        norm=params.norm,
        placement=params.placement,
        dropout=params.dropout,
        init_scale=params.init_scale,
    )


def _check_probe_layer(
    config: Config, runs: list[Run], dataset_for: Callable[[Run], Dataset]
) -> None:
    """A probed layer that one of the networks lacks fails here, before a folder is written
    (so that the command, corrected, can simply be run again)."""
    if not config.probes:
        return
    layer = config.probe_layer or ProbeConfig().layer
    checked = set()
    for run in runs:
        params = run.params
        if (params.network, params.bn, params.dataset) in checked:
            continue
        checked.add((params.network, params.bn, params.dataset))
        try:
            find_layer(_build(params, dataset_for(run)), layer)
        except UsageError as exc:
            raise UsageError(
                f"probe layer {layer!r} ({'--probe-layer' if config.probe_layer else 'default'}"
                f"), run {run.name}: {exc}"
            ) from None


class _Progress:
    """Training progress: a rich bar per run on a terminal; plain lines elsewhere (a pipe, a log,
    CI), one when a run starts and then one every ``PLAIN_EVERY_S`` seconds; silent (and
    sync-free) when disabled."""

    #: seconds between two plain progress lines
    PLAIN_EVERY_S = 5.0

    def __init__(self, console: Console, enabled: bool) -> None:
        self.enabled = enabled
        self.console = console
        self.plain = enabled and not console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.fields[run]}"),
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not enabled or self.plain,
        )
        self.task: Any = None
        self.last = 0.0
        self.run = ""
        self.epoch = 0
        self.batches = 0

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def start(self, run: str, epoch: int, batches: int) -> None:
        if not self.enabled:
            return
        if self.plain:
            if run != self.run:
                self.console.print(f"{run}: epoch {epoch}", markup=False, highlight=False)
                self.last = time.monotonic()
            self.run, self.epoch, self.batches = run, epoch, batches
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("", total=batches, run=run, epoch=epoch, loss="-")

    def batch(self, step: int, loss: torch.Tensor) -> None:
        now = time.monotonic()
        if self.plain:
            if now - self.last >= self.PLAIN_EVERY_S:  # the loss read: a host sync
                self.last = now
                self.console.print(
                    f"{self.run}: epoch {self.epoch}, batch {step}/{self.batches}, "
                    f"loss {loss.item():.4g}",
                    markup=False,
                    highlight=False,
                )
        elif now - self.last >= 0.5:  # read the loss (a host sync) at most twice a second
            self.last = now
            self.progress.update(self.task, completed=step, loss=f"{loss.item():.4f}")
        else:
            self.progress.update(self.task, completed=step)


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
    executor: Executor | None = None,
) -> tuple[Record, Path]:
    """Train every run of ``config``'s grid; returns the record and the folder it is in.

    ``on_epoch`` is called with the record after each epoch is saved (for live displays and
    tests); ``execution`` runs the epochs elsewhere (see :class:`Execution`). ``executor``
    (:mod:`bnlab.lab.executors`), if remote, trains each run whole as a task and the record
    takes its epochs when it returns; a run that fails on every attempt is marked
    ``"failed"`` (with its ``error``) and the record's status is ``"failed"``.
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
    if execution.writes:  # before the first epoch, not only in the final summary
        for note in notes:
            console.print(f"note: {note}", markup=False, highlight=False)

    runs = expand(resolved.grid)
    datasets: dict[tuple[str, str, str], Dataset] = {}

    def dataset_for(run: Run) -> Dataset:
        key = (run.params.dataset, run.params.normalization, run.params.input_scaling)
        if key not in datasets:
            name = run.params.dataset
            data_dir = resolved.data_dir or None
            wanted = resolved.download and name in ("mnist", "fashion-mnist")
            if wanted and not has_idx_dataset(name, data_dir):
                console.print(f"downloading {name} ...")
                download(name, data_dir, mirrors=resolved.mirrors or None)
            data = load_dataset(
                name, data_dir, run.params.normalization, resolved.split_seed,
                run.params.input_scaling,
            )  # fmt: skip
            datasets[key] = data.subset(resolved.limit_train or None, resolved.limit_test or None)
        return datasets[key]

    first = dataset_for(runs[0])
    metric = "accuracy" if first.task == "classification" else "mae"
    _check_probe_layer(resolved, runs, dataset_for)
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
            _create_folder(folder, resolved)
    else:
        record.config = resolved.to_dict()
    record.environment = {**environment(), **execution.environment()}
    record.status = "running"
    if execution.writes:  # record.json from the start (resumable); a resumed record's rows
        record.save(folder, summary=False)  # are rewritten as they were read
    written = time.monotonic()  # when the record's rows were last written

    def save(run_finished: bool, durable: bool) -> None:
        nonlocal written
        now = time.monotonic()
        if execution.writes and (run_finished or durable or now - written >= ROWS_EVERY_S):
            record.updated = _now()
            header = run_finished or durable  # the rest as a run finishes or is checkpointed
            record.save(folder, header=header, summary=run_finished, durable=durable)
            written = now
        if on_epoch is not None:
            on_epoch(record)

    show = resolved.progress == "on" or (resolved.progress == "auto" and console.is_terminal)
    threads = torch.get_num_threads()  # each run sets its own (bnlab.lab.threads)
    try:
        if executor is not None and executor.remote:
            _train_elsewhere(runs, record, resolved, folder, executor, save, console, show)
        else:
            with _Progress(console, show) as bar:
                for run in runs:
                    dataset = dataset_for(run)
                    _train_run(run, record, resolved, folder, dataset, bar, save, execution)
        failed = any(info["status"] == "failed" for info in record.runs)
        record.status = "failed" if failed else "complete"
    except KeyboardInterrupt as exc:
        record.status = "interrupted"
        raise ExperimentInterrupted(folder) from exc
    except BaseException:
        record.status = "failed"
        raise
    finally:
        torch.set_num_threads(threads)
        record.updated = _now()
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
    save: Callable[[bool, bool], None],
    execution: Execution,
) -> None:
    info = record.runs[run.index - 1]
    if info["status"] == "complete":
        return
    info.pop("error", None)  # a failed run's, trained again
    params = run.params
    model = _build(params, dataset)
    optimizer = make_optimizer(model, params)
    trained = execution.prepare_model(model)  # checkpoints keep the unwrapped model's keys
    info["parameters"] = sum(p.numel() for p in model.parameters())
    info["threads"] = run_threads(config.threads, model, dataset.x_train[: params.batch_size])
    torch.set_num_threads(info["threads"])
    checkpoint = folder / CHECKPOINTS / f"run-{run.index}.pt"
    done = int(info["epochs_done"])
    elapsed = 0.0
    if done:
        state = torch.load(checkpoint, weights_only=True) if checkpoint.exists() else None
        start = state["epoch"] if state is not None and state["epoch"] <= done else 0
        if state is not None and start:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            kept = [r for r in record.rows if r["run"] == run.index and r["epoch"] <= start]
            elapsed = max((r["run_duration"] for r in kept), default=0.0)
        if start < done:  # the epochs after the checkpoint train again, to the same numbers
            record.discard_run(run.index, after=start)
            done = start
    writer = None
    if config.tensorboard and execution.writes:
        writer = _tensorboard_writer(folder / TENSORBOARD / run.name)
    batches = math.ceil(len(dataset.x_train) / params.batch_size)
    probed = TrainerProbes(
        config.probes, model, optimizer, loss_fn(dataset.task), dataset.x_train,
        dataset.y_train, params.batch_size, probe_path(folder, run.index), config.probe_layer,
    )  # fmt: skip
    durable = time.monotonic()  # when the record and the checkpoint were last made durable
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
            info["epochs_done"] = epoch
            info["status"] = "complete" if epoch == params.epochs else "partial"
            lasting = epoch == params.epochs or time.monotonic() - durable >= CHECKPOINT_EVERY_S
            save(epoch == params.epochs, lasting)
            if execution.writes and lasting:  # after the record: its epoch is one it counts
                _save_checkpoint(checkpoint, model, optimizer, epoch)
                durable = time.monotonic()
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


#: the folder, inside the experiment's, where a run trained elsewhere is unpacked before its
#: files take their places (a leftover of a killed driver is replaced by the next one)
INCOMING = ".incoming"


def _one_run_config(config: Config, run: Run) -> Config:
    """``run`` alone, as an experiment of its own: every parameter explicit (bn aside: norm
    says it), the data and probe settings of ``config``."""
    grid = {k: [v] for k, v in asdict(run.params).items() if k != "bn"}
    return replace(config, name=f"run-{run.index}", preset="", out="", grid=grid)


def _train_elsewhere(
    runs: list[Run],
    record: Record,
    config: Config,
    folder: Path,
    executor: Executor,
    save: Callable[[bool, bool], None],
    console: Console,
    show: bool,
) -> None:
    """Every unfinished run as a task of ``executor``; each one's epochs go into the record
    as it returns (a partial run is trained again from its start, to the same numbers)."""
    by_key = {str(run.index): run for run in runs}
    tasks = {}
    for key, run in by_key.items():
        info = record.runs[run.index - 1]
        if info["status"] != "complete":
            record.discard_run(run.index)
            info.update(status="pending", epochs_done=0)
            info.pop("error", None)
            tasks[key] = FolderTask(_one_run_config(config, run))

    def say(text: str) -> None:
        if show:
            console.print(text, markup=False, highlight=False)

    def retry(key: str, error: str) -> None:
        say(f"{by_key[key].name}: {error}; trying again")

    if tasks:
        say(f"{len(tasks)} runs on {executor.label}")
    for done, outcome in enumerate(run_tasks(executor, train_folder, tasks, on_retry=retry), 1):
        run = by_key[outcome.key]
        info = record.runs[run.index - 1]
        if outcome.failed:
            info.update(status="failed", error=outcome.error)
            console.print(
                f"{run.name}: failed {outcome.attempts} times ({outcome.error}); "
                "marked failed in the record (--resume trains it again)",
                markup=False,
                highlight=False,
            )
        else:
            _take_run(run, info, outcome.result, record, folder)
            say(f"[{done}/{len(tasks)}] {run.name}: {run.params.epochs} epochs")
        save(not outcome.failed, True)
    record.sort_rows()  # run by run, as in place: the same record whatever the order of finishing
    shutil.rmtree(folder / INCOMING, ignore_errors=True)


def _take_run(run: Run, info: dict, files: dict[str, bytes], record: Record, folder: Path) -> None:
    """The files of ``run`` trained alone (:func:`_one_run_config`) into the experiment:
    its rows, counts, checkpoint, probes and TensorBoard logs under run ``run``'s names."""
    incoming = folder / INCOMING / f"run-{run.index}"
    shutil.rmtree(incoming, ignore_errors=True)
    write_folder(files, incoming)
    alone = load_record(incoming)
    rows = [r for r in alone.rows if r["run"] == 1]
    if len(rows) != run.params.epochs or any(
        {k: r[k] for k in asdict(run.params)} != asdict(run.params) for r in rows
    ):  # a worker that trained something else: a bug, never a record to keep
        raise RuntimeError(f"run {run.name}: the worker returned other runs' or too few rows")
    moves = {
        incoming / CHECKPOINTS / "run-1.pt": folder / CHECKPOINTS / f"run-{run.index}.pt",
        probe_path(incoming, 1): probe_path(folder, run.index),
        incoming / TENSORBOARD / alone.runs[0]["name"]: folder / TENSORBOARD / run.name,
    }
    for source, target in moves.items():
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            source.replace(target)
    shutil.rmtree(incoming)
    for row in rows:
        row.update(run=run.index, name=run.name, group=run.group)
    record.rows.extend(rows)
    info.update(
        status="complete",
        epochs_done=run.params.epochs,
        parameters=alone.runs[0]["parameters"],
        threads=alone.runs[0]["threads"],
    )
