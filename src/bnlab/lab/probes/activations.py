"""Activation distributions of a layer's input over training (Ioffe & Szegedy 2015, Fig. 1).

The probe watches the *input* of one layer through a forward pre-hook: with BN in front of
it, that input is the normalized signal; without BN it is the raw pre-activation. For each
watched unit (a feature of a 2D input, a channel of a conv input: values pooled over N and the
spatial dimensions) it keeps the 15th/50th/85th percentiles of every ``every``-th training
batch, and a histogram of the first and the latest watched batch (tutorial 002's before/after
picture). Values stay on the device until :meth:`result`, so training pays no host sync.

The hook exists only between ``attach`` and ``detach`` (use it as a context manager): with the
probe off, the model runs exactly as without bnlab's probes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bnlab.lab.probes._hook import InputHook

QUANTILES = (0.15, 0.50, 0.85)


def _per_unit(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *) -> (C, N * prod(*)): each unit's values in one row."""
    if x.dim() < 2:
        raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...), got {x.dim()}D")
    return x.detach().transpose(0, 1).reshape(x.shape[1], -1)


def histogram(values: torch.Tensor, bins: int = 60) -> dict[str, list[float]]:
    """Histogram of all values as ``{"edges": [...], "counts": [...]}`` (density, float64)."""
    v = values.detach().double().flatten()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return {"edges": [], "counts": []}
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1.0
    counts = torch.histc(v, bins=bins, min=lo, max=hi)
    width = (hi - lo) / bins
    density = counts / (counts.sum() * width)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    return {"edges": edges.tolist(), "counts": density.tolist()}


class ActivationProbe(InputHook):
    """Percentiles of chosen units of ``layer``'s input per training step, and histograms.

    Args:
        model: the network (not modified).
        layer: module name or ``"Type#k"`` (see :func:`find_layer`).
        units: indices of the features/channels whose percentiles are kept.
        every: keep every ``every``-th training batch (eval-mode forwards are ignored).
        bins: histogram bins.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str = "Linear#1",
        units: Sequence[int] = (0, 1, 2),
        every: int = 1,
        bins: int = 60,
    ) -> None:
        super().__init__(model, layer, every)
        self.model = model
        self.units = [int(u) for u in units]
        self.bins = bins
        self._quantiles: list[torch.Tensor] = []
        self._first: torch.Tensor | None = None
        self._last: torch.Tensor | None = None
        self._q = torch.tensor(QUANTILES)

    def _record(self, step: int, x: torch.Tensor) -> None:
        rows = _per_unit(x)
        if max(self.units, default=-1) >= rows.shape[0]:
            raise ValueError(
                f"units {self.units} out of range for layer {self.layer_name!r} "
                f"with {rows.shape[0]} units"
            )
        sel = rows[self.units].float()
        self._quantiles.append(torch.quantile(sel, self._q.to(sel.device), dim=1).T)
        if self._first is None:
            self._first = x.detach().clone()
        self._last = x.detach()

    def result(self) -> dict[str, Any]:
        """JSON-ready: steps, per-unit percentiles ``[step][unit][q]``, first/last histograms."""
        q = torch.stack(self._quantiles).tolist() if self._quantiles else []
        last = self._last.clone() if self._last is not None else None
        return {
            "probe": "activations",
            "layer": self.layer_name,
            "layer_spec": self.layer_spec,
            "units": self.units,
            "quantiles": list(QUANTILES),
            "steps": list(self._steps),
            "percentiles": q,
            "hist_first": histogram(self._first, self.bins) if self._first is not None else None,
            "hist_last": histogram(last, self.bins) if last is not None else None,
        }
