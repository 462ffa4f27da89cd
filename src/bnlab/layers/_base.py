"""The base class of bnlab's batch-norm layers: parameters, buffers and the train/eval logic.

Parameters and buffers carry torch.nn.BatchNorm*'s names (weight, bias, running_mean,
running_var, num_batches_tracked), so state_dicts move between the two with no change of keys.
Subclasses only say which input ranks they accept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bnlab.functional._checks import check_eps, check_momentum
from bnlab.functional.batch_norm import batch_norm


class BatchNormBase(nn.Module):
    """Shared machinery of BatchNorm1d/2d/3d; see those classes for the formula and shapes."""

    _version = 2  # torch's: version 2 added num_batches_tracked to the state_dict
    expected_dims: tuple[int, ...] = ()

    num_batches_tracked: torch.Tensor | None
    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = check_eps(eps)
        self.momentum = check_momentum(momentum)
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, device=device),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor input, got {type(input).__name__}")
        if input.dim() not in self.expected_dims:
            wanted = " or ".join(f"{d}D" for d in self.expected_dims)
            raise ValueError(f"expected {wanted} input (got {input.dim()}D input)")
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"expected input with {self.num_features} channels in dimension 1, "
                f"got {input.shape[1]} (input shape {tuple(input.shape)})"
            )

    def _op_kwargs(self) -> dict[str, Any]:
        """The functional op's arguments under PyTorch's rules, for every layer built on this base.

        Batch statistics in training, and in eval when no running statistics are kept; the
        running statistics (and num_batches_tracked) are updated only in training with tracking.
        """
        update = self.training and self.track_running_stats
        use_running = update or not self.training
        return {
            "running_mean": self.running_mean if use_running else None,
            "running_var": self.running_var if use_running else None,
            "weight": self.weight,
            "bias": self.bias,
            "training": self.training or self.running_mean is None,
            "momentum": self.momentum,
            "eps": self.eps,
            "num_batches_tracked": self.num_batches_tracked if update else None,
        }

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return batch_norm(input, **self._op_kwargs())

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )

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
        # Checkpoints written before num_batches_tracked existed (version < 2) lack the key.
        version = local_metadata.get("version")
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
