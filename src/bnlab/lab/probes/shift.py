"""Covariate shift, measured two ways.

1. :class:`InputShiftProbe` - the tutorials' notion (tutorial 002's "4, 9, 20" example): the
   per-unit batch mean and variance of a layer's input, step after step. Its summary
   ``drift`` is the standard deviation over training of each unit's batch mean, averaged over
   units, divided by the units' average within-batch standard deviation: how far the
   distribution a layer receives wanders, in units of its own spread.
2. :func:`ics_measure` - Santurkar et al. 2018 (arXiv 1805.11604, Def. 2.1): G is the gradient
   of the loss w.r.t. a layer's weights at the current weights; G' the same gradient after the
   *earlier* layers alone took their optimizer step on the same batch. ICS is ||G - G'||_2
   (also reported relative to ||G||) and cos(G, G'). The update uses the run's own optimizer
   (a copy of its state is restored afterwards) or plain SGD with ``lr`` when none is given.

Every measure leaves the model as it found it: parameters, gradients, BN running statistics
and the optimizer's state are restored in ``finally`` blocks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bnlab.lab.errors import UsageError
from bnlab.lab.probes._hook import InputHook
from bnlab.lab.probes._layers import find_layer, parameters_before

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class InputShiftProbe(InputHook):
    """Per-unit batch mean and variance of ``layer``'s input at every ``every``-th training step.

    Statistics are kept on the device (no host sync while training); see the module docstring
    for the ``drift`` summary. Use as a context manager, like every probe.
    """

    def __init__(
        self, model: nn.Module, layer: str = "Linear#1", every: int = 1, max_units: int = 16
    ) -> None:
        super().__init__(model, layer, every)
        self.max_units = max_units
        self._means: list[torch.Tensor] = []
        self._vars: list[torch.Tensor] = []

    def _record(self, step: int, x: torch.Tensor) -> None:
        x = x.detach()
        rows = x.transpose(0, 1).reshape(x.shape[1], -1).float()
        var, mean = torch.var_mean(rows, dim=1, correction=0)
        self._means.append(mean)
        self._vars.append(var)

    def result(self) -> dict[str, Any]:
        """JSON-ready: steps, per-step means/variances of the first ``max_units`` units, drift."""
        out: dict[str, Any] = {
            "probe": "shift",
            "layer": self.layer_name,
            "layer_spec": self.layer_spec,
            "steps": list(self._steps),
        }
        if not self._means:
            out.update(mean=[], var=[], drift=None)
            return out
        means = torch.stack(self._means).double()  # (T, C)
        vars_ = torch.stack(self._vars).double()
        # mean over units of each unit's wander, over the mean within-batch spread of all units
        # (not unit by unit: a dead ReLU unit's near-zero spread would blow the ratio up)
        spread = vars_.mean(0).sqrt().mean().clamp_min(1e-12)
        drift = means.std(0, correction=0).mean() / spread if means.shape[0] > 1 else None
        out["mean"] = means[:, : self.max_units].tolist()
        out["var"] = vars_[:, : self.max_units].tolist()
        out["drift"] = None if drift is None else float(drift)
        return out


def _grads_of(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
    )


def ics_measure(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    layer: str = "Linear#1",
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 0.01,
) -> dict[str, float]:
    """Santurkar's ICS of ``layer`` on the batch ``(x, y)``: ``{"l2", "rel_l2", "cosine"}``.

    The model is left exactly as it was (parameters, ``.grad``, buffers, optimizer state).
    """
    _, module = find_layer(model, layer)
    target = [p for p in module.parameters() if p.requires_grad]
    if not target:
        raise UsageError(f"layer {layer!r} has no trainable parameters to take a gradient of")
    earlier = parameters_before(model, module)
    params = [p for p in model.parameters()]
    saved_params = [p.detach().clone() for p in params]
    saved_grads = [None if p.grad is None else p.grad.clone() for p in params]
    saved_buffers = [b.clone() for b in model.buffers()]
    saved_opt = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    try:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        g = _grads_of(target).double()
        earlier_ids = {id(p) for p in earlier}
        for p in params:
            if id(p) not in earlier_ids:
                p.grad = None  # optimizers skip parameters without a gradient
        with torch.no_grad():
            if optimizer is not None:
                optimizer.step()
            else:
                for p in earlier:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-lr)
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        g2 = _grads_of(target).double()
    finally:
        with torch.no_grad():
            for p, s, gr in zip(params, saved_params, saved_grads, strict=True):
                p.copy_(s)
                p.grad = gr
            for b, s in zip(model.buffers(), saved_buffers, strict=True):
                b.copy_(s)
        if optimizer is not None and saved_opt is not None:
            optimizer.load_state_dict(saved_opt)
    diff = float((g - g2).norm())
    gn = float(g.norm())
    denom = gn * float(g2.norm())
    return {
        "l2": diff,
        "rel_l2": diff / gn if gn > 0 else float("nan"),
        "cosine": float(g @ g2) / denom if denom > 0 else float("nan"),
    }
