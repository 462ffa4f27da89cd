"""The hook lifecycle shared by the probes that watch a layer's input."""

from __future__ import annotations

from typing import Any, Self

from torch import nn


class InputHook:
    """Registers ``self._hook`` as a forward pre-hook on ``self.module`` while attached.

    Subclasses set ``self.module`` and define ``_hook(module, args)``. The hook exists only
    between ``attach`` and ``detach`` (or inside a ``with`` block), so a probe costs nothing
    when it is off.
    """

    module: nn.Module
    _handle: Any = None

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        raise NotImplementedError

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
