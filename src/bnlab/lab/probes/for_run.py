"""Probes for one run of the lab's trainer: the glue ``bnlab compare --probe ...`` uses.

:class:`TrainerProbes` wraps :class:`RunProbes` for a run of ``bnlab.lab.experiment``; the
trainer calls::

    probed = TrainerProbes(names, model, optimizer, loss_fn, x_train, y_train, batch_size, path)
    try:
        probed.attach()                       # hooks registered (none when names is empty)
        for epoch ...:
            run_epoch(..., before_step=probed.before_step)
            probed.after_epoch()
        probed.finish()                       # the 2D landscape, once training finished
    finally:
        probed.close()                        # hooks removed, results saved

It picks the fixed batches: the first ``min(batch_size, smoothness_samples)`` training samples
for the smoothness measure, the first ``landscape_samples`` (in chunks of 512) for the contour; and it
saves to ``runs/<name>/probes/run-<k>.json``, the file :mod:`bnlab.lab.report` reads. With no
probe names ``before_step`` is None and every call returns at once (zero cost when off).
Resuming an interrupted run probes the epochs it still trains; the file then covers those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from bnlab.lab.probes.runner import ProbeConfig, RunProbes

PROBES_DIR = "probes"


def probe_path(run_dir: Path | str, run: int) -> Path:
    """Where run ``run`` (1-based) of an experiment folder keeps its probe results."""
    return Path(run_dir) / PROBES_DIR / f"run-{run}.json"


class TrainerProbes:
    """The probes of one lab run (see the module docstring for the calls)."""

    def __init__(
        self,
        names: Sequence[str],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[..., torch.Tensor],
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        batch_size: int,
        path: Path,
        layer: str = "",
    ) -> None:
        self.config = ProbeConfig(layer=layer) if layer else ProbeConfig()
        self.probes = RunProbes(names, model, loss_fn, optimizer, self.config)
        self.path = Path(path)
        n = min(batch_size, self.config.smoothness_samples, len(x_train))
        self._x, self._y = x_train[:n], y_train[:n]
        k = min(self.config.landscape_samples, len(x_train))
        self._chunks = [
            (x_train[i : min(i + 512, k)], y_train[i : min(i + 512, k)]) for i in range(0, k, 512)
        ]
        self.before_step = self.probes.before_step if self.probes.active else None
        self._attached = False

    def attach(self) -> None:
        if self.probes.active and not self._attached:
            self.probes.__enter__()
            self._attached = True

    def after_epoch(self) -> None:
        if self.probes.active:
            self.probes.after_epoch(self._x, self._y)

    def finish(self) -> None:
        """The loss landscape around the trained weights (hooks are removed first)."""
        if self.probes.active:
            self._detach()
            self.probes.finish(self._chunks)

    def _detach(self) -> None:
        if self._attached:
            self.probes.__exit__(None, None, None)
            self._attached = False

    def close(self) -> None:
        """Remove the hooks and save what was measured (also after an interruption)."""
        if not self.probes.active:
            return
        try:
            self._detach()
        finally:
            self.probes.save(self.path)
