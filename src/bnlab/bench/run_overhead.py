"""A whole lab run vs a bare loop: what the experiment around the epochs costs in a long run.

    python -m bnlab.bench.run_overhead [--preset mpg --epochs 1000 --repeats 3 --threads 1]

The lab's side is ``run_experiment`` on the preset's grid with one seed, writing a fresh
folder: every epoch trained, evaluated and recorded (rows appended; record.json, checkpoints
and summary.csv as the experiment goes), plus resolving the config, loading the data and
building the models. The bare side trains the same networks from the same seeds on the same
shuffled batches (``bnlab.bench.trainer_overhead.bare_epoch``: shuffle, slice, forward, loss,
backward, step), evaluates the test set after each epoch (eval mode, no_grad) and writes
nothing.

The two run in lockstep: after each epoch of the lab's run (its ``on_epoch`` call), the bare
loop trains and evaluates the same epoch of the same run on its own model. A busy machine
(other jobs, CPU frequency) then slows both alike, which alternating whole runs could not
promise: the runs last minutes and the load changes within them. The lab's time is the run's
wall time less the bare loop's; the result is their ratio, in wall time and in this process's
CPU time (``time.process_time``). With a record that rewrote itself whole every epoch, these
ratios grew with the number of epochs.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from bnlab.bench.trainer_overhead import bare_epoch
from bnlab.lab.config import Config
from bnlab.lab.data import Dataset, epoch_generator, load_dataset
from bnlab.lab.experiment import resolve, run_experiment
from bnlab.lab.grid import Run, expand
from bnlab.lab.models import build_model
from bnlab.lab.record import Record
from bnlab.lab.trainer import loss_fn, make_optimizer

#: epochs of the warm-up run (it loads the compiled kernels; its times are not kept)
WARMUP_EPOCHS = 3


@dataclass
class _Clock:
    """Wall and CPU seconds, added up."""

    wall: float = 0.0
    cpu: float = 0.0


class BareLoop:
    """The bare loop, one epoch at a time, for the runs of ``config``'s grid."""

    def __init__(self, config: Config) -> None:
        resolved, _ = resolve(config)
        self.runs = expand(resolved.grid)
        self.split_seed = resolved.split_seed
        self.datasets: dict[tuple[str, str], Dataset] = {}
        self.current: tuple[int, Any, Any, Dataset] | None = None
        self.clock = _Clock()

    def _start(self, run: Run) -> tuple[int, Any, Any, Dataset]:
        p = run.params
        key = (p.dataset, p.normalization)
        if key not in self.datasets:  # loaded once, as the lab does
            self.datasets[key] = load_dataset(p.dataset, None, p.normalization, self.split_seed)
        data = self.datasets[key]
        model = build_model(
            p.network, p.bn, p.bn_impl, data.input_shape, data.num_outputs, p.seed,
            p.bn_momentum, p.bn_eps,
        )  # fmt: skip
        return run.index, model, make_optimizer(model, p), data

    def epoch(self, run_index: int, epoch: int) -> None:
        """Train and evaluate ``epoch`` of run ``run_index`` (timed into ``self.clock``)."""
        wall, cpu = time.perf_counter(), time.process_time()
        if self.current is None or self.current[0] != run_index:
            self.current = self._start(self.runs[run_index - 1])
        _, model, optimizer, data = self.current
        p = self.runs[run_index - 1].params
        criterion = loss_fn(data.task)
        generator = epoch_generator(p.seed, epoch)
        bare_epoch(model, optimizer, data.x_train, data.y_train, p.batch_size, generator,
                   criterion)  # fmt: skip
        model.eval()
        with torch.no_grad():
            criterion(model(data.x_test), data.y_test).item()
        model.train()
        self.clock.wall += time.perf_counter() - wall
        self.clock.cpu += time.process_time() - cpu


def lockstep(config: Config) -> tuple[_Clock, _Clock]:
    """(lab, bare) seconds of ``run_experiment(config)`` with the bare loop in lockstep."""
    bare = BareLoop(config)

    def after_epoch(record: Record) -> None:
        row = record.rows[-1]
        bare.epoch(int(row["run"]), int(row["epoch"]))

    wall, cpu = time.perf_counter(), time.process_time()
    run_experiment(config, console=Console(file=io.StringIO()), on_epoch=after_epoch)
    total = _Clock(time.perf_counter() - wall, time.process_time() - cpu)
    return _Clock(total.wall - bare.clock.wall, total.cpu - bare.clock.cpu), bare.clock


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnlab.bench.run_overhead", description=__doc__)
    parser.add_argument("--preset", default="mpg")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    def config(epochs: int, folder: Path) -> Config:
        grid = {"epochs": [epochs], "seed": [0]}
        return Config(preset=args.preset, grid=grid, progress="off", out=str(folder),
                      threads=args.threads)  # fmt: skip

    results = []
    with tempfile.TemporaryDirectory(prefix="bnlab-run-overhead-") as tmp:
        lockstep(config(WARMUP_EPOCHS, Path(tmp) / "warm-up"))
        for k in range(args.repeats):
            results.append(lockstep(config(args.epochs, Path(tmp) / f"run-{k}")))
    runs = len(expand(resolve(config(args.epochs, Path()))[0].grid))
    print(f"{args.preset}: {runs} runs x {args.epochs} epochs, {args.threads} thread(s), lockstep:")
    for lab, bare in results:
        print(
            f"  lab {lab.wall:.2f} s wall, {lab.cpu:.2f} s CPU; bare {bare.wall:.2f} s wall, "
            f"{bare.cpu:.2f} s CPU; overhead {(lab.wall / bare.wall - 1) * 100:+.2f}% wall, "
            f"{(lab.cpu / bare.cpu - 1) * 100:+.2f}% CPU"
        )
    lab_wall, bare_wall = sum(r[0].wall for r in results), sum(r[1].wall for r in results)
    lab_cpu, bare_cpu = sum(r[0].cpu for r in results), sum(r[1].cpu for r in results)
    print(
        f"  all runs: overhead {(lab_wall / bare_wall - 1) * 100:+.2f}% wall, "
        f"{(lab_cpu / bare_cpu - 1) * 100:+.2f}% CPU"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
