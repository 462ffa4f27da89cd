"""The base class of bnlab's batch-norm layers: parameters, buffers and the train/eval logic.

Parameters and buffers carry torch.nn.BatchNorm*'s names (weight, bias, running_mean,
running_var, num_batches_tracked), so state_dicts move between the two with no change of keys.
Subclasses only say which input ranks they accept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bnlab.functional._checks import check_layer_eps, check_layer_momentum, check_num_features
from bnlab.functional.batch_norm import _batch_norm, _batch_norm_ops
from bnlab.layers._dispatch import LayerDispatch

#: the parameters and buffers every forward reads
_TENSOR_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class BatchNormBase(LayerDispatch, nn.Module):
    """Shared machinery of BatchNorm1d/2d/3d; see those classes for the formula and shapes."""

    _version = 2  # torch's: version 2 added num_batches_tracked to the state_dict

    if TYPE_CHECKING:  # for mypy only: TorchScript must infer these from the values (a Tensor,
        # or None without tracking); declared Optional, they would stop being buffers there and
        # leave the scripted module's state_dict
        num_batches_tracked: torch.Tensor | None
        running_mean: torch.Tensor | None
        running_var: torch.Tensor | None

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
        affine: bool = True, track_running_stats: bool = True, device: Any = None,
        dtype: Any = None, *, bias: bool = True,
    ) -> None:  # fmt: skip
        """torch.nn.BatchNorm*'s constructor (torch 2.13), argument for argument.

        ``bias=False`` (keyword only, as in torch; only meaningful with ``affine=True``): a
        learnable ``weight`` and no additive bias; ``self.bias`` is registered as None, so the
        state_dict has no ``bias`` key, exactly like torch's. eps and momentum are stored as
        torch stores them, with a UserWarning where they are dangerous (eps <= 0, momentum > 1;
        see ``check_layer_eps`` and ``check_layer_momentum``); the forward refuses eps <= 0 in
        training and eps < 0 in evaluation, as torch's does. NaN or infinite values and a
        negative momentum are refused here (ValueError).
        """
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = check_num_features(num_features)
        self.eps = check_layer_eps(eps)
        self.momentum = check_layer_momentum(momentum)
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
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
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor input, got {type(input).__name__}")
        self._check_rank(input)
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"expected input with {self.num_features} channels in dimension 1, "
                f"got {input.shape[1]} (input shape {tuple(input.shape)})"
            )

    def _stats_args(
        self,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, bool]:
        """(running_mean, running_var, num_batches_tracked, training) for the functional op.

        PyTorch's rules, for every layer built on this base: batch statistics in training, and in
        eval when no running statistics are kept; the running statistics (and
        num_batches_tracked) are updated only in training with tracking.
        """
        return self._select_stats(self.running_mean, self.running_var, self.num_batches_tracked)

    def _select_stats(
        self, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
        num_batches_tracked: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, bool]:  # fmt: skip
        """``_stats_args`` from the buffers given (see there)."""
        update = self.training and self.track_running_stats
        use_running = update or not self.training
        return (
            running_mean if use_running else None,
            running_var if use_running else None,
            num_batches_tracked if update else None,
            self.training or running_mean is None,
        )

    @torch.jit.unused
    def _eager_args(self) -> tuple[Any, ...]:
        """(weight, bias, running_mean, running_var, num_batches_tracked, training): the
        parameters, then ``_stats_args``, for the eager forwards.

        Read from the module's registries where attribute access would give the same: a dict
        read costs ~0.1 us, ``layer.weight`` ~0.6 (nn.Module.__getattr__). That holds when the
        names are registered there and nothing shadows them in the instance dict; otherwise
        (parametrizations, weight_norm, pruning) and under torch.compile, attribute access.
        """
        if not torch.compiler.is_compiling() and self.__dict__.keys().isdisjoint(_TENSOR_NAMES):
            params, buffers = self._parameters, self._buffers
            try:
                weight, bias = params["weight"], params["bias"]
                running_mean, running_var = buffers["running_mean"], buffers["running_var"]
                num_batches_tracked = buffers["num_batches_tracked"]
                return (
                    weight,
                    bias,
                    *self._select_stats(running_mean, running_var, num_batches_tracked),
                )
            except KeyError:
                pass
        return self.weight, self.bias, *self._stats_args()

    def _op_kwargs(self) -> dict[str, Any]:
        """The functional op's arguments: ``_stats_args``, the parameters, momentum and eps."""
        weight, bias, running_mean, running_var, num_batches_tracked, training = self._eager_args()
        return {
            "running_mean": running_mean,
            "running_var": running_var,
            "weight": weight,
            "bias": bias,
            "training": training,
            "momentum": self.momentum,
            "eps": self.eps,
            "num_batches_tracked": num_batches_tracked,
        }

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        """forward in eager mode, under torch.compile and under torch.func transforms.

        ``batch_norm``'s implementation with positional arguments: no dict nor keyword unpacking
        on this per-call path (``_op_kwargs`` is for the subclasses' ops).
        """
        self._check_input_dim(input)
        weight, bias, running_mean, running_var, num_batches_tracked, training = self._eager_args()
        return _batch_norm(
            input, running_mean, running_var, weight, bias, training, self.momentum,
            self.eps, num_batches_tracked, "identity",
        )  # fmt: skip

    def _graph_forward(self, input: torch.Tensor) -> torch.Tensor:
        """forward as TorchScript compiles it and torch.jit.trace records it.

        ``batch_norm``'s dispatcher-op path with explicit arguments (TorchScript has neither
        ``**kwargs`` nor ``batch_norm``'s keyword-only arguments), after the rank check; the
        channel count is checked by the op (weight, bias and running statistics must match
        dimension 1). Not ``_check_input_dim``: TorchScript cannot compile its
        ``tuple(input.shape)``, and the tracer would warn at its comparison of sizes.
        """
        self._check_rank(input)
        running_mean, running_var, num_batches_tracked, training = self._stats_args()
        return _batch_norm_ops(
            input, running_mean, running_var, self.weight, self.bias, training, self.momentum,
            self.eps, num_batches_tracked, "identity",
        )  # fmt: skip

    def extra_repr(self) -> str:
        # torch 2.13's, word for word (``bias`` says whether there is an additive bias)
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def _missing_counter(self, version: int | None) -> torch.Tensor | None:
        # Checkpoints written before num_batches_tracked existed (version < 2) lack the key:
        # as torch 2.13 does, the layer keeps its own counter (0 if it has none on a real device).
        if (version is not None and version >= 2) or not self.track_running_stats:
            return None
        own = self.num_batches_tracked
        real = own is not None and own.device.type != "meta"
        return own if real else torch.tensor(0, dtype=torch.long)
