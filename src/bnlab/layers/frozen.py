"""FrozenBatchNorm1d/2d/3d: batch norm with fixed statistics and affine, for fine-tuning.

``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` in train and eval alike.
All four tensors are buffers (not Parameters): an optimizer never sees them and no forward
changes them, while gradients still flow to the input. Built by ``bnlab.freeze(model)`` from
trained BN layers, or loaded from a torchvision ``FrozenBatchNorm2d`` state_dict (same keys).

eps: copied from the layer being frozen (PyTorch's default 1e-5) and required to be > 0
(ValueError otherwise), although torch's batch norm accepts eps = 0 in evaluation and bnlab's
trainable layers accept it with a warning. A frozen layer is what fine-tuning a pretrained network
meets, and older torchvision FrozenBatchNorm2d defaulted to eps=0, which turns a channel whose
running variance is 0 (a dead ReLU channel, say) into inf/NaN; here that cannot happen. A
torchvision state_dict carries no eps, so this costs no interchange.

bias: the ``bias`` buffer always exists (zeros when the frozen layer had none), so state_dicts keep
torchvision's four keys. ``bias=False`` (keyword, as in torch's BatchNorm) only records that the
layer which was frozen had no additive bias (``use_bias``), so that ``unfreeze`` can give back a
layer with ``bias=False``; the output is the same either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bnlab.functional._checks import check_eps, check_num_features
from bnlab.functional.batch_norm import _batch_norm_ops, batch_norm
from bnlab.layers._dispatch import LayerDispatch
from bnlab.layers.batchnorm_act import NormActChildren


class FrozenBatchNormBase(LayerDispatch, nn.Module):
    """Shared machinery; subclasses only say which input ranks they accept."""

    if TYPE_CHECKING:  # for mypy only (TorchScript infers buffers from their values)
        weight: torch.Tensor
        bias: torch.Tensor
        running_mean: torch.Tensor
        running_var: torch.Tensor
        num_batches_tracked: torch.Tensor

    def __init__(
        self, num_features: int, eps: float = 1e-5, *, momentum: float | None = 0.1,
        affine: bool = True, device: Any = None, dtype: Any = None, bias: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = check_num_features(num_features)
        self.eps = check_eps(eps)  # mode-independent rule: eps > 0 (see the module docstring)
        # Kept only so that ``unfreeze`` can give back the layer that was frozen.
        self.momentum = momentum
        self.affine = affine
        self.use_bias = bool(bias)
        self.register_buffer("weight", torch.ones(num_features, **factory))
        self.register_buffer("bias", torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer(
            "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
        )

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor input, got {type(input).__name__}")
        self._check_rank(input)

    def _op_kwargs(self) -> dict[str, Any]:
        """The functional op's arguments: the fixed statistics, in train and eval alike."""
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "weight": self.weight,
            "bias": self.bias,
            "training": False,
            "eps": self.eps,
        }

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return batch_norm(input, **self._op_kwargs())

    def _graph_forward(self, input: torch.Tensor) -> torch.Tensor:
        """forward for TorchScript and torch.jit.trace (see ``BatchNormBase._graph_forward``)."""
        self._check_rank(input)
        return _batch_norm_ops(
            input, self.running_mean, self.running_var, self.weight, self.bias, False, None,
            self.eps, None, "identity",
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    def _missing_counter(self, version: int | None) -> torch.Tensor | None:
        # torchvision's FrozenBatchNorm2d has no num_batches_tracked: accept its state_dicts.
        return torch.tensor(0, dtype=torch.long)


class FrozenBatchNorm1d(FrozenBatchNormBase):
    """Frozen batch norm over (N, C) or (N, C, L); see the module docstring."""

    expected_dims = (2, 3)


class FrozenBatchNorm2d(FrozenBatchNormBase):
    """Frozen batch norm over (N, C, H, W); see the module docstring."""

    expected_dims = (4,)


class FrozenBatchNorm3d(FrozenBatchNormBase):
    """Frozen batch norm over (N, C, D, H, W); see the module docstring."""

    expected_dims = (5,)


class _FrozenBatchNormAct(NormActChildren, FrozenBatchNormBase):
    """Frozen batch norm, then ``drop`` and ``act`` children (timm's FrozenBatchNormAct2d layout).

    What ``bnlab.freeze`` makes of a BatchNormAct layer (bnlab's or timm's): the normalization is
    fixed, the activation stays. Fused into one op when ``act`` is ReLU or Identity and
    ``drop`` is the identity, as in ``bnlab.BatchNormAct2d``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        activation: str | nn.Module = "relu",
        *,
        drop: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_features, eps, **kwargs)
        self._set_children(activation, drop)


class FrozenBatchNormAct1d(_FrozenBatchNormAct):
    """Frozen ``act(drop(BatchNorm1d(x)))``; (N, C) or (N, C, L)."""

    expected_dims = (2, 3)


class FrozenBatchNormAct2d(_FrozenBatchNormAct):
    """Frozen ``act(drop(BatchNorm2d(x)))``; (N, C, H, W)."""

    expected_dims = (4,)
