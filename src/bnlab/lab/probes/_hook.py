"""The hook shared by the probes that watch a layer's input: its lifecycle and its step count."""

from __future__ import annotations

from typing import Any, Self

import torch
from torch import nn

from bnlab.lab.probes._layers import find_layer


class InputHook:
    """Calls ``self._record(step, x)`` with the input ``x`` of ``layer`` at every ``every``-th
    training-mode forward (step 0, every, 2 * every, ...; eval-mode forwards are not counted)
    and keeps those steps in ``self._steps``.

    The forward pre-hook exists only between ``attach`` and ``detach`` (or inside a ``with``
    block), so a probe costs nothing when it is off.
    """

    def __init__(self, model: nn.Module, layer: str, every: int) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.layer_name, self.module = find_layer(model, layer)
        self.layer_spec = layer
        self.every = every
        self._seen = 0
        self._steps: list[int] = []
        self._handle: Any = None

    def _record(self, step: int, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not module.training:
            return
        step = self._seen
        self._seen += 1
        if step % self.every == 0:
            self._record(step, args[0])
            self._steps.append(step)

    def attach(self) -> Self:
        """Register the hook (idempotent)."""
        if self._handle is None:
            self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def detach(self) -> None:
        """Remove the hook; always called on leaving the ``with`` block."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> Self:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()
