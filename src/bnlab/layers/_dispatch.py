"""What every bnlab layer shares with the others, in eager mode and under TorchScript: the
input-rank check, the choice between the eager forward and the graph forward, and state_dicts
that lack ``num_batches_tracked``."""

from __future__ import annotations

from typing import Any

import torch


class LayerDispatch:
    """Mixin for nn.Module layers: ``expected_dims`` lists the input ranks the layer accepts.

    ``forward`` runs ``_graph_forward`` (dispatcher ops TorchScript compiles and the tracer
    records) under ``torch.jit.script``/``trace`` and ``_eager_forward`` (bnlab's leanest Python
    path, ``@torch.jit.unused``) otherwise; each layer defines the two. ``_check_rank`` is
    written in the subset of Python TorchScript compiles (``expected_dims`` is a module constant
    there), so scripted and eager layers give the same error, torch's:
    ``expected 4D input (got 3D input)``.

    A state_dict without ``num_batches_tracked`` (older checkpoints, torchvision's frozen
    layers) loads with the counter that ``_missing_counter`` gives, when it gives one.
    """

    expected_dims: tuple[int, ...] = ()
    __constants__ = ("expected_dims",)

    def _get_name(self) -> str:
        """``bnlab.BatchNorm2d``: ``print(model)`` tells bnlab's layers from torch's."""
        return f"bnlab.{type(self).__name__}"

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            return self._graph_forward(input)  # type: ignore[attr-defined]
        return self._eager_forward(input)  # type: ignore[attr-defined]

    def _check_rank(self, input: torch.Tensor) -> None:
        if input.dim() not in self.expected_dims:
            wanted = " or ".join([str(d) + "D" for d in self.expected_dims])
            raise ValueError(f"expected {wanted} input (got {input.dim()}D input)")

    def _missing_counter(self, version: int | None) -> torch.Tensor | None:
        """The ``num_batches_tracked`` to load when a state_dict of ``version`` (its metadata;
        None if unknown) lacks one; None: leave the key missing."""
        return None

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
        strict: bool, missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str],
    ) -> None:  # fmt: skip
        key = prefix + "num_batches_tracked"
        if key not in state_dict:
            counter = self._missing_counter(local_metadata.get("version"))
            if counter is not None:
                state_dict[key] = counter
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
