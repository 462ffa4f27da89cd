"""FrozenBatchNorm1d/2d/3d: batch norm with fixed statistics and affine, for fine-tuning.

``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` in train and eval alike.
All four tensors are buffers (not Parameters): an optimizer never sees them and no forward
changes them, while gradients still flow to the input. Built by ``bnlab.freeze(model)`` from
trained BN layers, or loaded from a torchvision ``FrozenBatchNorm2d`` state_dict (same keys).

eps: copied from the layer being frozen (PyTorch's default 1e-5) and required to be > 0. Older
torchvision FrozenBatchNorm2d defaulted to eps=0, which turns a channel whose running variance is
0 (a dead ReLU channel, say) into inf/NaN; here that cannot happen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bnlab.functional._checks import check_eps
from bnlab.functional.batch_norm import batch_norm


class FrozenBatchNormBase(nn.Module):
    """Shared machinery; subclasses only say which input ranks they accept."""

    expected_dims: tuple[int, ...] = ()
    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        *,
        momentum: float | None = 0.1,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = check_eps(eps)
        # Kept only so that ``unfreeze`` can give back the layer that was frozen.
        self.momentum = momentum
        self.affine = affine
        self.register_buffer("weight", torch.ones(num_features, **factory))
        self.register_buffer("bias", torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer(
            "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor input, got {type(input).__name__}")
        if input.dim() not in self.expected_dims:
            wanted = " or ".join(f"{d}D" for d in self.expected_dims)
            raise ValueError(f"expected {wanted} input (got {input.dim()}D input)")
        return batch_norm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=False,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # torchvision's FrozenBatchNorm2d has no num_batches_tracked: accept its state_dicts.
        key = prefix + "num_batches_tracked"
        if key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class FrozenBatchNorm1d(FrozenBatchNormBase):
    """Frozen batch norm over (N, C) or (N, C, L); see the module docstring."""

    expected_dims = (2, 3)


class FrozenBatchNorm2d(FrozenBatchNormBase):
    """Frozen batch norm over (N, C, H, W); see the module docstring."""

    expected_dims = (4,)


class FrozenBatchNorm3d(FrozenBatchNormBase):
    """Frozen batch norm over (N, C, D, H, W); see the module docstring."""

    expected_dims = (5,)
