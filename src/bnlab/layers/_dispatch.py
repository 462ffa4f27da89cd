"""What every bnlab layer shares with the others, in eager mode and under TorchScript: the
input-rank check and the choice between the eager forward and the graph forward."""

from __future__ import annotations

import torch


class LayerDispatch:
    """Mixin for nn.Module layers: ``expected_dims`` lists the input ranks the layer accepts.

    ``forward`` runs ``_graph_forward`` (dispatcher ops TorchScript compiles and the tracer
    records) under ``torch.jit.script``/``trace`` and ``_eager_forward`` (bnlab's leanest Python
    path, ``@torch.jit.unused``) otherwise; each layer defines the two. ``_check_rank`` is
    written in the subset of Python TorchScript compiles (``expected_dims`` is a module constant
    there), so scripted and eager layers give the same error, torch's:
    ``expected 4D input (got 3D input)``.
    """

    expected_dims: tuple[int, ...] = ()
    __constants__ = ("expected_dims",)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            return self._graph_forward(input)  # type: ignore[attr-defined]
        return self._eager_forward(input)  # type: ignore[attr-defined]

    def _check_rank(self, input: torch.Tensor) -> None:
        if input.dim() not in self.expected_dims:
            wanted = " or ".join([str(d) + "D" for d in self.expected_dims])
            raise ValueError(f"expected {wanted} input (got {input.dim()}D input)")
