"""The input-rank check every bnlab layer shares, in eager mode and under TorchScript."""

from __future__ import annotations

import torch


class ChecksRank:
    """Mixin for nn.Module layers: ``expected_dims`` lists the input ranks the layer accepts.

    ``_check_rank`` is written in the subset of Python TorchScript compiles (``expected_dims``
    is a module constant there), so scripted and eager layers give the same error, torch's:
    ``expected 4D input (got 3D input)``.
    """

    expected_dims: tuple[int, ...] = ()
    __constants__ = ("expected_dims",)

    def _check_rank(self, input: torch.Tensor) -> None:
        if input.dim() not in self.expected_dims:
            wanted = " or ".join([str(d) + "D" for d in self.expected_dims])
            raise ValueError(f"expected {wanted} input (got {input.dim()}D input)")
