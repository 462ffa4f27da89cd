"""The loss landscape around the weights: a 2D contour and smoothness along the gradient.

- :func:`loss_surface` - the loss at ``w + a*d1 + b*d2`` on a grid of (a, b), with d1, d2
  random directions *filter-normalized* as in Li et al. 2018 ("Visualizing the Loss Landscape
  of Neural Nets", arXiv 1712.09913): each filter (row along dim 0) of a weight's direction is
  rescaled to the norm of that filter of the weight, so networks with different weight scales
  (BN makes a layer invariant to the scale of the weights in front of it) are compared fairly;
  one-dimensional parameters (biases, BN's gamma/beta) get a zero direction, as in their code.
- :func:`gradient_predictiveness` - Santurkar et al. 2018 (arXiv 1805.11604, Fig. 4): from w,
  step along the negative gradient by several step sizes eta; at each point record the loss
  (its spread is the "loss landscape variation", Lipschitzness), ``||g(w') - g(w)||`` (gradient
  predictiveness) and ``||g(w') - g(w)|| / ||w' - w||`` (effective beta-smoothness).

Both evaluate in training mode by default, the function the optimizer actually sees (batch
statistics in BN layers), with BN running statistics, parameters and gradients restored in
``finally`` blocks: the model comes back unchanged. ``mode="eval"`` uses running statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]

MAX_GRID = 21


class _Preserved:
    """Context that restores parameters, grads, buffers and train/eval mode on exit."""

    def __init__(self, model: nn.Module, mode: str) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.model = model
        self.mode = mode

    def __enter__(self) -> None:
        m = self.model
        self.params = [p.detach().clone() for p in m.parameters()]
        self.grads = [None if p.grad is None else p.grad.clone() for p in m.parameters()]
        self.buffers = [b.clone() for b in m.buffers()]
        self.modes = [mod.training for mod in m.modules()]
        m.train(self.mode == "train")

    def __exit__(self, *exc: object) -> None:
        m = self.model
        with torch.no_grad():
            for p, s, g in zip(m.parameters(), self.params, self.grads, strict=True):
                p.copy_(s)
                p.grad = g
            for b, s in zip(m.buffers(), self.buffers, strict=True):
                b.copy_(s)
        for mod, t in zip(m.modules(), self.modes, strict=True):
            mod.training = t


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """A random direction shaped like ``model.parameters()``, filter-normalized (Li et al.)."""
    out = []
    for p in model.parameters():
        if p.dim() <= 1:
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p)
        w = p.detach()
        dims = tuple(range(1, p.dim()))
        dn = torch.linalg.vector_norm(d, dim=dims, keepdim=True).clamp_min(1e-12)
        out.append(d * (torch.linalg.vector_norm(w, dim=dims, keepdim=True) / dn))
    return out


def _mean_loss(model: nn.Module, loss_fn: LossFn, batches: Batches) -> float:
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    for x, y in batches:
        total += loss_fn(model(x), y).double() * x.shape[0]
        count += x.shape[0]
    return float(total / count)


def loss_surface(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    steps: int = 21,
    span: float = 1.0,
    seed: int = 0,
    mode: str = "train",
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> dict[str, Any]:
    """Loss on a ``steps x steps`` grid over ``[-span, span]^2`` along two random directions.

    ``steps`` is capped at 21 (441 evaluations) to keep the default cheap; ``batches`` should be
    a data subset (a few batches). ``progress`` wraps the row iterator (e.g. a progress bar).
    Returns ``{"alphas", "betas", "loss"[row=beta][col=alpha], "center"}``.
    """
    if not 2 <= steps <= MAX_GRID:
        raise ValueError(f"steps must be in [2, {MAX_GRID}], got {steps}")
    if span <= 0:
        raise ValueError(f"span must be > 0, got {span}")
    if not batches:
        raise ValueError("batches is empty: the landscape needs at least one batch")
    gen = torch.Generator().manual_seed(seed)
    d1 = filter_normalized_direction(model, gen)
    d2 = filter_normalized_direction(model, gen)
    coords = torch.linspace(-span, span, steps, dtype=torch.float64).tolist()
    grid: list[list[float]] = []
    with _Preserved(model, mode), torch.no_grad():
        base = [p.detach().clone() for p in model.parameters()]
        center = _mean_loss(model, loss_fn, batches)
        rows: Iterable[Any] = coords if progress is None else progress(coords)
        for b in rows:
            row = []
            for a in coords:
                for p, w, u, v in zip(model.parameters(), base, d1, d2, strict=True):
                    p.copy_(w + a * u + b * v)
                row.append(_mean_loss(model, loss_fn, batches))
            grid.append(row)
            # the training-mode forward updates running stats; restored by _Preserved on exit
    return {"probe": "landscape", "alphas": coords, "betas": coords, "loss": grid, "center": center}


def gradient_predictiveness(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    step_sizes: Sequence[float] = (0.01, 0.05, 0.1, 0.2, 0.4),
    mode: str = "train",
) -> dict[str, Any]:
    """Loss and gradient change along ``-grad`` on one batch, for each step size.

    Returns ``{"step_sizes", "loss", "grad_change", "beta", "loss_range", "max_grad_change",
    "max_beta", "grad_norm"}``; ``loss_range`` = max - min loss over the steps (including 0).
    """
    if not step_sizes or any(s <= 0 for s in step_sizes):
        raise ValueError(
            f"step_sizes must be a non-empty list of positive numbers, got {step_sizes}"
        )
    with _Preserved(model, mode):
        params = [p for p in model.parameters() if p.requires_grad]
        model.zero_grad(set_to_none=True)
        loss0 = loss_fn(model(x), y)
        g0 = torch.autograd.grad(loss0, params, allow_unused=True)
        g0 = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(params, g0, strict=True))
        flat0 = torch.cat([g.flatten() for g in g0]).double()
        gnorm = float(flat0.norm())
        base = [p.detach().clone() for p in params]
        losses, changes, betas = [], [], []
        for eta in step_sizes:
            with torch.no_grad():
                for p, w, g in zip(params, base, g0, strict=True):
                    p.copy_(w - eta * g)
            loss = loss_fn(model(x), y)
            g1 = torch.autograd.grad(loss, params, allow_unused=True)
            flat1 = torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).flatten()
                    for p, g in zip(params, g1, strict=True)
                ]
            ).double()
            change = float((flat1 - flat0).norm())
            losses.append(float(loss.detach()))
            changes.append(change)
            betas.append(change / (eta * gnorm) if gnorm > 0 else float("nan"))
    all_losses = [float(loss0.detach()), *losses]
    return {
        "probe": "smoothness",
        "step_sizes": [float(s) for s in step_sizes],
        "loss0": all_losses[0],
        "loss": losses,
        "grad_change": changes,
        "beta": betas,
        "grad_norm": gnorm,
        "loss_range": max(all_losses) - min(all_losses),
        "max_grad_change": max(changes),
        "max_beta": max(betas),
    }
