"""The claims' runs: planned from the definitions, each trained once into its own cached folder.

A :class:`RunSpec` is one run (one seed of one arm of one case, one value of a sweep), complete
in itself: the run parameters and the data settings that change its numbers. It is trained
with the lab's own machinery (:func:`bnlab.lab.experiment.run_experiment`, a one-run grid)
into ``<out>/runs/<key>/``, a folder of the usual record format, named by a hash of the spec.
So a run is trained once and read by every claim that needs it; an interrupted ledger resumes
(a finished run is reused, a partial one continues from its checkpoint, a folder without a
record starts over), and a finished one rebuilds its ledger without training. Runs are
independent of each other: :func:`train` needs nothing but its spec, its folder and the
settings, so :func:`run_all` can hand them to an executor (:mod:`bnlab.lab.executors`: local
processes or a Ray cluster) as tasks. A task carries a partial run's folder, so it continues
where it stopped; the folder that comes back replaces the run's in one rename. A run that
fails on every try is left out of the ledger and named in it (``failed``).

A change of bnlab that changes the numbers of a run with the same spec should bump
:data:`CACHE_VERSION`; ``data_dir`` is not in the key (the same data set read from elsewhere
is the same data set).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rich.console import Console

from bnlab.lab.claims.budget import Budget, DataPlan, Source
from bnlab.lab.claims.definitions import Case, Claim
from bnlab.lab.claims.statistics import RunResult, SeedRuns
from bnlab.lab.config import Config
from bnlab.lab.executors import (
    Executor,
    FolderTask,
    read_folder,
    run_tasks,
    train_folder,
    write_folder,
)
from bnlab.lab.experiment import run_experiment
from bnlab.lab.grid import RunParams
from bnlab.lab.probes.for_run import probe_path
from bnlab.lab.record import RECORD_JSON, load_record

#: part of every run's key: bump it when a change of bnlab changes a run's numbers
CACHE_VERSION = 1
RUNS_DIR = "runs"


@dataclass(frozen=True)
class Settings:
    """How runs are trained, not what they compute (not part of a run's key)."""

    data_dir: str = ""  # the folder holding MNIST (its runs only); "" the usual places
    download: bool = False  # fetch MNIST if missing
    threads: int = 0  # torch threads per run; 0: the lab's choice (bnlab.lab.threads)
    progress: bool = True  # a line per run (and a run's own progress bar on a terminal)


@dataclass(frozen=True)
class RunSpec:
    """One run: its run parameters (``bnlab.lab.grid.RunParams`` fields, ``bn`` excepted:
    ``norm`` says it) and the settings that change its numbers."""

    params: tuple[tuple[str, Any], ...]
    limit_train: int = 0
    limit_test: int = 0
    probes: tuple[str, ...] = ()
    probe_layer: str = ""

    @property
    def run_params(self) -> RunParams:
        return RunParams(**dict(self.params))

    @cached_property
    def key(self) -> str:
        """The folder name: what the run is, readably, then a hash of all of it (two specs
        with the same key are the same run, whatever the order of their parameters)."""
        resolved = asdict(self.run_params)
        content = {
            "version": CACHE_VERSION,
            "params": resolved,
            "limit_train": self.limit_train,
            "limit_test": self.limit_test,
            "probes": list(self.probes),
            "probe_layer": self.probe_layer,
        }
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
        p = resolved
        return f"{p['network']}-{p['dataset']}-{p['norm']}-s{p['seed']}-{digest}"

    def config(self, folder: Path, settings: Settings) -> Config:
        """The lab config that trains this run into ``folder``."""
        mnist = dict(self.params).get("dataset") == "mnist"
        return Config(
            name=folder.name,
            out=str(folder),
            data_dir=settings.data_dir if mnist else "",  # never another set's files
            download=settings.download,
            threads=settings.threads,
            limit_train=self.limit_train,
            limit_test=self.limit_test,
            progress="auto" if settings.progress else "off",
            probes=list(self.probes),
            probe_layer=self.probe_layer,
            # every parameter explicit (bn aside: norm says it), so nothing comes from defaults
            grid={k: [v] for k, v in asdict(self.run_params).items() if k != "bn"},
        )


@dataclass(frozen=True)
class PlannedCase:
    """A case of a claim on one data source: the spec of every (arm, swept value, seed)."""

    case: Case
    source: Source
    specs: dict[tuple[str, Any, int], RunSpec]

    @property
    def label(self) -> str:
        return f"{self.case.name} on {self.source.label}"

    @property
    def keys(self) -> list[str]:
        """The run keys of its specs."""
        return [spec.key for spec in self.specs.values()]

    def seeds(self, results: dict[str, RunResult]) -> list[SeedRuns]:
        """Each seed's runs, as the measures read them (``results`` by run key)."""
        by_seed: dict[int, dict[tuple[str, Any], RunResult]] = {}
        for (arm, value, seed), spec in self.specs.items():
            by_seed.setdefault(seed, {})[(arm, value)] = results[spec.key]
        return [SeedRuns(seed, runs) for seed, runs in sorted(by_seed.items())]


def plan_case(case: Case, budget: Budget, data: DataPlan) -> list[PlannedCase]:
    """``case`` on each of its data sources (the primary first)."""
    planned = []
    for source in data.sources(case.role):
        data_params = {"dataset": source.dataset, "normalization": source.normalization}
        specs: dict[tuple[str, Any, int], RunSpec] = {}
        key, values = case.sweep or ("", (None,))
        for arm in case.arms:
            for value in values:
                for seed in budget.seeds:
                    params = {**case.params, **data_params, **arm.params, "seed": seed}
                    if key:
                        params[key] = value
                    specs[(arm.label, value, seed)] = RunSpec(
                        tuple(params.items()),
                        source.limit_train,
                        source.limit_test,
                        case.probes,
                        case.probe_layer,
                    )
        planned.append(PlannedCase(case, source, specs))
    return planned


def plan_claim(claim: Claim, budget: Budget, data: DataPlan) -> list[PlannedCase]:
    return [p for case in claim.cases(budget) for p in plan_case(case, budget, data)]


def _finished(folder: Path) -> bool:
    """``folder`` holds a finished run (and ``(folder / RECORD_JSON).exists()`` a partial one)."""
    if not (folder / RECORD_JSON).exists():
        return False
    record = load_record(folder)
    return record.status == "complete" and all(r["status"] == "complete" for r in record.runs)


def train(spec: RunSpec, folder: Path, settings: Settings, console: Console) -> str:
    """Make ``folder`` hold ``spec``'s finished run: ``"reused"`` (it did), ``"resumed"`` (it
    continued a partial one) or ``"trained"`` (from the start)."""
    if _finished(folder):
        return "reused"
    resume = (folder / RECORD_JSON).exists()
    if not resume and folder.exists():  # killed before its first epoch was saved: start over
        shutil.rmtree(folder)
    run_experiment(spec.config(folder, settings), resume=resume, console=console)
    return "resumed" if resume else "trained"


@dataclass
class RunCounts:
    """What :func:`run_all` did, for the progress line and the tests."""

    trained: int = 0
    resumed: int = 0
    reused: int = 0
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # run key: its last error


def run_all(
    specs: Sequence[RunSpec],
    root: Path,
    settings: Settings,
    console: Console,
    labels: dict[str, str] | None = None,
    executor: Executor | None = None,
) -> RunCounts:
    """Train (or reuse) every spec into ``root/<key>``, with a line per trained run: in order
    here, or as ``executor``'s tasks (if remote) in any order."""
    counts = RunCounts()
    start = time.perf_counter()

    def report(index: int, outcome: str, key: str, seconds: float) -> None:
        setattr(counts, outcome, getattr(counts, outcome) + 1)
        if settings.progress and outcome != "reused":
            what = f" ({labels[key]})" if labels and key in labels else ""
            console.print(
                f"[{index}/{len(specs)}] {outcome} {key}{what} in {seconds:.1f} s",
                markup=False,
                highlight=False,
            )

    if executor is not None and executor.remote:
        _run_elsewhere(specs, root, settings, console, executor, counts, report)
    else:
        for index, spec in enumerate(specs, start=1):
            began = time.perf_counter()
            outcome = train(spec, root / spec.key, settings, console)
            report(index, outcome, spec.key, time.perf_counter() - began)
    counts.seconds = time.perf_counter() - start
    return counts


def _run_elsewhere(
    specs: Sequence[RunSpec],
    root: Path,
    settings: Settings,
    console: Console,
    executor: Executor,
    counts: RunCounts,
    report: Callable[[int, str, str, float], None],
) -> None:
    """:func:`run_all` with ``executor``: each unfinished run a task (a partial one carries
    its folder, to continue it); the folder that comes back replaces the run's at once."""
    tasks: dict[str, FolderTask] = {}
    for spec in specs:
        folder = root / spec.key
        if _finished(folder):
            report(0, "reused", spec.key, 0.0)
            continue
        partial = read_folder(folder) if (folder / RECORD_JSON).exists() else {}
        tasks[spec.key] = FolderTask(spec.config(Path(spec.key), settings), partial)
    if settings.progress:
        console.print(f"{len(tasks)} runs on {executor.label}", markup=False, highlight=False)

    def retry(key: str, error: str) -> None:
        console.print(f"{key}: {error}; trying again", markup=False, highlight=False)

    began = time.perf_counter()
    done = counts.reused
    for outcome in run_tasks(executor, train_folder, tasks, on_retry=retry):
        if outcome.failed:
            counts.failed[outcome.key] = outcome.error
            console.print(
                f"{outcome.key}: failed {outcome.attempts} times ({outcome.error}); left out "
                "of the ledger (the same command trains it again)",
                markup=False,
                highlight=False,
            )
            continue
        incoming = root / f".{outcome.key}.incoming"
        shutil.rmtree(incoming, ignore_errors=True)
        write_folder(outcome.result, incoming)
        folder = root / outcome.key
        shutil.rmtree(folder, ignore_errors=True)  # a partial run, now continued in ``incoming``
        os.replace(incoming, folder)
        done += 1
        resumed = bool(tasks[outcome.key].files)
        report(done, "resumed" if resumed else "trained", outcome.key, time.perf_counter() - began)


def load_result(folder: Path) -> RunResult:
    """A finished run's rows and probes, as the measures read them."""
    record = load_record(folder)
    rows = tuple(sorted((r for r in record.rows if r["run"] == 1), key=lambda r: r["epoch"]))
    probes_file = probe_path(folder, 1)
    probes = json.loads(probes_file.read_text(encoding="utf-8")) if probes_file.exists() else {}
    return RunResult(folder, record.runs[0]["params"], record.metric, rows, probes)
