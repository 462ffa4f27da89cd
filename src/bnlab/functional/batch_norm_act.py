"""``batch_norm_act``: batch norm fused with the activation that usually follows it.

``act(batch_norm(x, ...))`` in one op, for ``activation`` in ``"relu"``, ``"silu"``,
``"hardswish"`` (torch's formulas) or ``"identity"`` (plain batch norm). On the compiled CPU kernels the activation is applied in the
same pass that writes y (the output is written once), and the backward recomputes act'(z) from
x inside its two passes over (dy, x), so the fusion costs no extra full-size pass or saved
tensor. Everything else (checks, running statistics, eval mode, torch.compile and export,
tracing, torch.func transforms, double backward) is ``batch_norm``'s.
"""

from __future__ import annotations

import torch

from bnlab.functional.batch_norm import _batch_norm, check_activation
from bnlab.kernels.portable import ACTIVATIONS

__all__ = ["ACTIVATIONS", "batch_norm_act", "check_activation"]


def batch_norm_act(
    input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
    momentum: float | None = 0.1, eps: float = 1e-5, *, activation: str = "relu",
    num_batches_tracked: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """``act(batch_norm(input, ...))`` as one fused op.

    Args:
        input, running_mean, running_var, weight, bias, training, momentum, eps,
        num_batches_tracked: as in ``bnlab.functional.batch_norm``.
        activation: ``"relu"`` (default), ``"silu"``, ``"hardswish"`` or ``"identity"``.

    Example::

        >>> y = batch_norm_act(x, rm, rv, w, b, training=True, activation="relu")
    """
    return _batch_norm(
        input, running_mean, running_var, weight, bias, training, momentum, eps,
        num_batches_tracked, check_activation(activation),
    )  # fmt: skip
