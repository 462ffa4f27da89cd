"""Keras's batch-norm conventions on bnlab's ops: reproduce a Keras BatchNormalization exactly.

What differs from PyTorch's conventions (and how it is mapped here):

==================  ==============================  ===================================
                    Keras                           PyTorch / bnlab
==================  ==============================  ===================================
momentum            decay of the old value, 0.99    weight of the new batch: 1 - 0.99
epsilon             1e-3                            eps 1e-5
moving variance     *biased* batch variance         unbiased (n / (n - 1))
channel axis        ``axis=-1`` (channels last)     dimension 1
affine              ``center`` / ``scale`` apart    ``affine`` for both (``bias=False``
                                                    is ``center=False``)
renorm statistics   averages of sigma_B             running variance
==================  ==============================  ===================================

``keras_batch_norm`` is the functional form (it moves ``axis`` to dimension 1, calls the shared
statistics op and folds the statistics in with ``update_running_stats``, feeding it the batch
variance pre-scaled by (n - 1) / n so that its Bessel correction gives back the biased one);
``KerasBatchNorm`` is an nn.Module with Keras's arguments; ``from_keras_layer`` copies a built
``keras.layers.BatchNormalization`` (config and weights) into one. ``bnlab.keras`` uses the same
function inside a Keras 3 layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bnlab.functional._checks import check_eps, check_input, check_layer_eps, check_num_features
from bnlab.functional._train_norm import train_norm
from bnlab.functional.batch_norm import batch_norm
from bnlab.functional.batch_renorm import renorm_correction
from bnlab.functional.masked_batch_norm import MaskedNormFunction, check_mask
from bnlab.functional.running_stats import update_running_stats


def torch_momentum(keras_momentum: float) -> float:
    """Keras's momentum (decay of the running value) as PyTorch's (weight of the new batch)."""
    if not isinstance(keras_momentum, int | float) or not 0.0 <= keras_momentum <= 1.0:
        raise ValueError(f"Keras momentum must be in [0, 1], got {keras_momentum!r}")
    return 1.0 - float(keras_momentum)


@dataclass
class KerasRenorm:
    """Keras's batch-renorm state: ``renorm_mean``/``renorm_stddev`` (averaged with
    ``renorm_momentum``) give r and d; ``moving_stddev`` (with ``momentum``) gives the
    inference variance ``moving_stddev**2 - epsilon``. Clipping limits None mean no limit."""

    moving_stddev: torch.Tensor
    renorm_mean: torch.Tensor
    renorm_stddev: torch.Tensor
    renorm_momentum: float = 0.99
    rmin: float | None = None
    rmax: float | None = None
    dmax: float | None = None


def _update_biased(
    running_mean: torch.Tensor,
    running_second: torch.Tensor,
    mean: torch.Tensor,
    second: torch.Tensor,
    count: int,
    keras_momentum: float,
) -> None:
    """``running = keras_momentum * running + (1 - keras_momentum) * batch`` for the mean and a
    second per-channel statistic (biased variance or stddev), kept as is: no n/(n-1)."""
    prescaled = second * ((count - 1) / count) if count > 1 else second
    update_running_stats(
        running_mean, running_second, mean, prescaled, count, torch_momentum(keras_momentum)
    )


def keras_batch_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    moving_mean: torch.Tensor,
    moving_variance: torch.Tensor,
    *,
    training: bool,
    axis: int = -1,
    momentum: float = 0.99,
    epsilon: float = 1e-3,
    mask: torch.Tensor | None = None,
    renorm: KerasRenorm | None = None,
) -> torch.Tensor:
    """``keras.layers.BatchNormalization``'s computation with bnlab's ops.

    Args:
        x: any rank >= 2; ``axis`` is the channel axis (Keras default -1, channels last).
        gamma, beta: scale and offset (C,), or None (``scale=False`` / ``center=False``).
        moving_mean, moving_variance: (C,), updated in place in training (Keras conventions).
        training: batch statistics (and state updates) if True, the moving ones otherwise.
        momentum, epsilon: Keras's (0.99 = decay of the moving value; 1e-3). epsilon follows
            torch's rule (``bnlab.functional._checks.check_eps``): > 0 in training, >= 0 in
            inference.
        mask: bool, ``x``'s shape without ``axis``; statistics over True positions only.
        renorm: Keras's batch-renorm state, or None.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor input, got {type(x).__name__}")
    if not -x.dim() <= axis < x.dim() or x.dim() < 2:
        raise ValueError(f"axis {axis} is out of range for a {x.dim()}D input {tuple(x.shape)}")
    xc = check_input(x.movedim(axis, 1), max_dim=max(x.dim(), 2))
    epsilon = check_eps(epsilon, training=training)
    if not training:
        y = batch_norm(xc, moving_mean, moving_variance, gamma, beta, False, eps=epsilon)
        return y.movedim(1, axis)
    if mask is not None and renorm is not None:
        raise ValueError("keras_batch_norm: a mask together with renorm is not supported")
    if mask is not None:
        check_mask(mask, xc)
        count = int(mask.sum())
        y, mean, var = MaskedNormFunction.apply(xc, mask, gamma, beta, epsilon)
    else:
        count = xc.numel() // xc.shape[1] if xc.shape[1] else 0
        correction = None
        if renorm is not None:
            ref_std = torch.clamp(renorm.renorm_stddev.detach(), min=epsilon**0.5)
            state = renorm

            def correction(m: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return renorm_correction(
                    m, v, state.renorm_mean, ref_std, epsilon, state.rmin, state.rmax, state.dmax
                )

        y, mean, var = train_norm(xc, gamma, beta, epsilon, correction)
    if count == 0:
        return y.movedim(1, axis)
    if renorm is None:
        _update_biased(moving_mean, moving_variance, mean, var, count, momentum)
    else:
        std = torch.sqrt(var + epsilon)
        _update_biased(
            renorm.renorm_mean, renorm.renorm_stddev, mean, std, count, renorm.renorm_momentum
        )
        _update_biased(moving_mean, renorm.moving_stddev, mean, std, count, momentum)
        with torch.no_grad():
            s = renorm.moving_stddev
            moving_variance.copy_(torch.relu(s * s - epsilon).to(moving_variance.dtype))
    return y.movedim(1, axis)


class KerasBatchNorm(nn.Module):
    """bnlab batch norm with ``keras.layers.BatchNormalization``'s arguments and conventions.

    Parameters ``weight`` (Keras's gamma, if ``scale``) and ``bias`` (beta, if ``center``);
    buffers ``running_mean``, ``running_var`` (Keras's moving mean and *biased* moving
    variance) and, with ``renorm``, ``moving_stddev``, ``renorm_mean``, ``renorm_stddev``.
    ``forward(x, mask=None)`` uses batch statistics in training mode (``module.train()``).

    Example::

        >>> bn = KerasBatchNorm(64)            # Keras's BatchNormalization() for 64 features
        >>> y = bn(torch.randn(32, 10, 64))    # channels last
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor
    moving_stddev: torch.Tensor
    renorm_mean: torch.Tensor
    renorm_stddev: torch.Tensor

    def __init__(
        self, num_features: int, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3,
        center: bool = True, scale: bool = True, renorm: bool = False,
        renorm_clipping: dict[str, float] | None = None, renorm_momentum: float = 0.99,
        device: Any = None, dtype: Any = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_features = check_num_features(num_features)
        torch_momentum(momentum)
        torch_momentum(renorm_momentum)
        factory = {"device": device, "dtype": dtype}
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = check_layer_eps(epsilon)
        self.center, self.scale = center, scale
        self.weight = nn.Parameter(torch.ones(num_features, **factory)) if scale else None
        self.bias = nn.Parameter(torch.zeros(num_features, **factory)) if center else None
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.renorm = renorm
        self.renorm_momentum = float(renorm_momentum)
        clipping = dict(renorm_clipping or {})
        unknown = set(clipping) - {"rmax", "rmin", "dmax"}
        if unknown:
            raise ValueError(
                f"renorm_clipping keys must be rmax, rmin, dmax; got {sorted(unknown)}"
            )
        rmin, rmax, dmax = clipping.get("rmin"), clipping.get("rmax"), clipping.get("dmax")
        if rmin is not None and rmax is not None and rmax < rmin:
            raise ValueError(f"renorm_clipping: rmax ({rmax}) must be >= rmin ({rmin})")
        if dmax is not None and dmax < 0:
            raise ValueError(f"renorm_clipping: dmax must be >= 0, got {dmax}")
        self.renorm_clipping = clipping
        if renorm:
            self.register_buffer("moving_stddev", torch.ones(num_features, **factory))
            self.register_buffer("renorm_mean", torch.zeros(num_features, **factory))
            self.register_buffer("renorm_stddev", torch.ones(num_features, **factory))

    def _renorm_state(self) -> KerasRenorm | None:
        if not self.renorm:
            return None
        c = self.renorm_clipping
        return KerasRenorm(
            self.moving_stddev,
            self.renorm_mean,
            self.renorm_stddev,
            self.renorm_momentum,
            c.get("rmin"),
            c.get("rmax"),
            c.get("dmax"),
        )

    def forward(self, input: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.dim() >= 2:
            channels = input.shape[self.axis]
            if channels != self.num_features:
                raise ValueError(
                    f"expected {self.num_features} channels on axis {self.axis}, got {channels} "
                    f"(input shape {tuple(input.shape)})"
                )
        return keras_batch_norm(
            input, self.weight, self.bias, self.running_mean, self.running_var,
            training=self.training, axis=self.axis, momentum=self.momentum, epsilon=self.epsilon,
            mask=mask, renorm=self._renorm_state(),
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, axis={self.axis}, momentum={self.momentum} (Keras), "
            f"epsilon={self.epsilon}, center={self.center}, scale={self.scale}, renorm={self.renorm}"
        )


def from_keras_layer(layer: Any) -> KerasBatchNorm:
    """A KerasBatchNorm with the config and current weights of a built Keras BatchNormalization
    (duck-typed: anything with Keras's ``get_config()`` and named ``weights``)."""
    config = layer.get_config()
    values = {w.path.split("/")[-1]: torch.as_tensor(w.numpy()) for w in layer.weights}
    if "moving_mean" not in values:
        raise ValueError("from_keras_layer needs a built layer (call it on data first)")
    bn = KerasBatchNorm(
        int(values["moving_mean"].shape[0]),
        axis=config["axis"] if isinstance(config["axis"], int) else config["axis"][0],
        momentum=config["momentum"],
        epsilon=config["epsilon"],
        center=config["center"],
        scale=config["scale"],
        renorm=config.get("renorm", False),
        renorm_clipping=config.get("renorm_clipping"),
        renorm_momentum=config.get("renorm_momentum", 0.99),
    )
    names = {
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
        "moving_stddev": "moving_stddev",
        "renorm_mean": "renorm_mean",
        "renorm_stddev": "renorm_stddev",
    }
    with torch.no_grad():
        for keras_name, value in values.items():
            target = getattr(bn, names[keras_name])
            target.copy_(value.to(target.dtype))
    return bn
