"""RunProbes: the probes one training run asked for, behind the calls a training loop makes.

The loop calls, in this order::

    with RunProbes(names, model, loss_fn, optimizer, config) as probes:  # hooks registered
        for epoch ...:
            for x, y in batches:
                probes.before_step(x, y)      # ICS every ``ics_every`` steps
                ... forward, backward, optimizer.step() ...
            probes.after_epoch(x_probe, y_probe)   # smoothness along the gradient
        probes.finish(landscape_batches)      # 2D loss contour around the final weights
    probes.save(path)                         # JSON, read by plots and the report

Measurements that run their own forward passes pause the hook-based probes, so those record
only the training batches. With ``names`` empty every call returns at once and no hook exists.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnlab.lab.errors import UsageError
from bnlab.lab.probes._layers import find_layer
from bnlab.lab.probes.activations import ActivationProbe
from bnlab.lab.probes.landscape import gradient_predictiveness, loss_surface
from bnlab.lab.probes.shift import InputShiftProbe, ics_measure

PROBE_NAMES = ("activations", "ics", "landscape")
FORMAT = "bnlab-probes"

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def parse_probes(spec: str | Sequence[str] | None) -> list[str]:
    """``"activations,ics"`` -> ``["activations", "ics"]``; unknown names -> UsageError."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [s.strip() for s in items if s.strip()]
    unknown = [n for n in names if n not in PROBE_NAMES]
    if unknown:
        raise UsageError(f"unknown probe(s) {unknown}; expected some of {list(PROBE_NAMES)}")
    return list(dict.fromkeys(names))


@dataclass
class ProbeConfig:
    """Probe settings; the defaults keep a probed run within seconds of an unprobed one."""

    layer: str = "Linear#1"  # the watched layer: its input's distribution, its weights' ICS
    units: tuple[int, ...] = (0, 1, 2)  # units whose percentiles are kept
    every: int = 1  # record activations / input statistics every k-th training batch
    ics_every: int = 20  # measure Santurkar's ICS every k-th training batch
    landscape_steps: int = 11  # grid is steps x steps (at most 21): 121 loss evaluations
    landscape_span: float = 1.0  # grid covers [-span, span] along each direction
    landscape_samples: int = 512  # training samples the landscape's loss is measured on
    step_sizes: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.4)  # along -grad (smoothness)
    smoothness_samples: int = 256  # the fixed training batch of the smoothness measure
    seed: int = 0  # for the random directions
    progress: bool = field(default_factory=lambda: sys.stderr.isatty())


def _rich_progress(description: str) -> Callable[[Iterable[Any]], Iterable[Any]]:
    def wrap(rows: Iterable[Any]) -> Iterable[Any]:
        from rich.progress import track

        items = list(rows)
        return track(items, description=description, total=len(items), transient=True)

    return wrap


class RunProbes:
    """The probes of one run; see the module docstring for the calls."""

    def __init__(
        self,
        names: Sequence[str],
        model: nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer | None = None,
        config: ProbeConfig | None = None,
    ) -> None:
        self.names = parse_probes(names)
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.config = config or ProbeConfig()
        if self.names:
            find_layer(model, self.config.layer)  # fail before training, listing the layers
        self._hooked: list[ActivationProbe | InputShiftProbe] = []
        if "activations" in self.names:
            self._hooked.append(
                ActivationProbe(model, self.config.layer, self.config.units, self.config.every)
            )
        if "ics" in self.names:
            self._hooked.append(InputShiftProbe(model, self.config.layer, self.config.every))
        self._stack: contextlib.ExitStack | None = None
        self._step = 0
        self.ics: list[dict[str, float]] = []
        self.smoothness: list[dict[str, Any]] = []
        self.landscape: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return bool(self.names)

    def __enter__(self) -> RunProbes:
        stack = contextlib.ExitStack()
        try:
            for probe in self._hooked:
                stack.enter_context(probe)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    @contextlib.contextmanager
    def _paused(self) -> Any:
        """Remove the hooks while a measurement runs its own forwards; re-register after."""
        for probe in self._hooked:
            probe.detach()
        try:
            yield
        finally:
            if self._stack is not None:
                for probe in self._hooked:
                    probe.attach()

    def before_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Call before each training step's forward (ICS at the current weights)."""
        if "ics" not in self.names:
            return
        step = self._step
        self._step += 1
        if step % self.config.ics_every:
            return
        with self._paused():
            m = ics_measure(self.model, self.loss_fn, x, y, self.config.layer, self.optimizer)
        self.ics.append({"step": step, **m})

    def after_epoch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Call after each epoch with a fixed training batch (smoothness along the gradient)."""
        if "landscape" not in self.names:
            return
        with self._paused():
            r = gradient_predictiveness(self.model, self.loss_fn, x, y, self.config.step_sizes)
        r["epoch"] = len(self.smoothness) + 1
        self.smoothness.append(r)

    def finish(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Call after training with a few training batches (the 2D loss contour)."""
        if "landscape" not in self.names:
            return
        cfg = self.config
        progress = _rich_progress("loss landscape") if cfg.progress else None
        with self._paused():
            self.landscape = loss_surface(
                self.model,
                self.loss_fn,
                batches,
                steps=cfg.landscape_steps,
                span=cfg.landscape_span,
                seed=cfg.seed,
                progress=progress,
            )

    def result(self) -> dict[str, Any]:
        """Everything measured, JSON-ready."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": 1,
            "probes": self.names,
            "config": asdict(self.config),
        }
        for probe in self._hooked:
            r = probe.result()
            out[r["probe"]] = r
        if "ics" in self.names:
            out["ics"] = self.ics
        if "landscape" in self.names:
            out["smoothness"] = self.smoothness
            out["landscape"] = self.landscape
        return out

    def save(self, path: Path | str) -> None:
        """Write :meth:`result` as JSON, atomically."""
        from bnlab.lab.files import atomic_write_text

        text = json.dumps(self.result(), allow_nan=True)
        atomic_write_text(Path(path), text + "\n")
