"""BatchRenorm1d/2d/3d: batch renormalization layers (Ioffe 2017), with the paper's schedule.

See ``bnlab.functional.batch_renorm`` for the formula. The clipping limits follow a schedule in
the number of training batches seen (``num_batches_tracked``): r and d are held at 1 and 0 for
``warmup_steps`` batches (the layer is then exactly batch norm), then ``rmax`` grows linearly
from 1 and ``dmax`` from 0 to their final values over ``relax_steps`` batches. The paper used
rmax 1 -> 3 and dmax 0 -> 5 after 5k steps; the defaults here (no warm-up, no ramp) apply the
final values at once, which suits short runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bnlab.functional.batch_renorm import batch_renorm, check_renorm_limits
from bnlab.layers._base import BatchNormBase


@dataclass(frozen=True)
class RenormSchedule:
    """Clipping limits as a function of the training step (batches seen so far)."""

    rmax: float = 3.0  # final rmax (r in [1/rmax, rmax]); >= 1
    dmax: float = 5.0  # final dmax (d in [-dmax, dmax]); >= 0
    warmup_steps: int = 0  # steps with rmax = 1, dmax = 0 (plain batch norm)
    relax_steps: int = 0  # steps of the linear ramp after the warm-up

    def __post_init__(self) -> None:
        check_renorm_limits(self.rmax, self.dmax)
        for name in ("warmup_steps", "relax_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")

    def __call__(self, step: int) -> tuple[float, float]:
        """(rmax, dmax) at ``step`` (0-based)."""
        if step < self.warmup_steps:
            return 1.0, 0.0
        if self.relax_steps == 0:
            return self.rmax, self.dmax
        frac = min(1.0, (step - self.warmup_steps) / self.relax_steps)
        return 1.0 + frac * (self.rmax - 1.0), frac * self.dmax


class _BatchRenormBase(BatchNormBase):
    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
        affine: bool = True, rmax: float = 3.0, dmax: float = 5.0, warmup_steps: int = 0,
        relax_steps: int = 0, device: Any = None, dtype: Any = None, *, bias: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(num_features, eps, momentum, affine, True, device, dtype, bias=bias)
        self.schedule = RenormSchedule(rmax, dmax, warmup_steps, relax_steps)

    def current_limits(self) -> tuple[float, float]:
        """The (rmax, dmax) that the next training batch will use."""
        assert self.num_batches_tracked is not None
        return self.schedule(int(self.num_batches_tracked.item()))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        rmax, dmax = self.current_limits() if self.training else (1.0, 0.0)
        return batch_renorm(input, **self._op_kwargs(), rmax=rmax, dmax=dmax)

    def extra_repr(self) -> str:
        s = self.schedule
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, rmax={s.rmax}, dmax={s.dmax}, "
            f"warmup_steps={s.warmup_steps}, relax_steps={s.relax_steps}"
        )


_DOC = """Batch renormalization over a {rank} input (Ioffe 2017, arXiv 1702.03275).

    Training: ``y = ((x - mean_B) / sigma_B * r + d) * weight + bias`` with
    ``r = clip(sigma_B / sigma, 1/rmax, rmax)``, ``d = clip((mean_B - mean) / sigma, -dmax, dmax)``
    against the running statistics (treated as constants in the backward pass); eval: batch norm
    with the running statistics. Running statistics as in ``BatchNorm{suffix}`` (always tracked:
    the corrections need them).

    Args:
        num_features, eps, momentum, affine, device, dtype, bias (keyword only): as in
            ``bnlab.BatchNorm{suffix}``.
        rmax: final clipping limit of r, >= 1. Default 3.
        dmax: final clipping limit of d, >= 0. Default 5.
        warmup_steps: training batches with rmax=1, dmax=0 (pure batch norm). Default 0.
        relax_steps: batches of the linear ramp from (1, 0) to (rmax, dmax). Default 0.

    Shape: {shape}, output of the same shape.
    """


class BatchRenorm1d(_BatchRenormBase):
    __doc__ = _DOC.format(rank="2D or 3D", suffix="1d", shape="(N, C) or (N, C, L)")
    expected_dims = (2, 3)


class BatchRenorm2d(_BatchRenormBase):
    __doc__ = _DOC.format(rank="4D", suffix="2d", shape="(N, C, H, W)")
    expected_dims = (4,)


class BatchRenorm3d(_BatchRenormBase):
    __doc__ = _DOC.format(rank="5D", suffix="3d", shape="(N, C, D, H, W)")
    expected_dims = (5,)
