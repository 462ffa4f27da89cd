"""BatchNorm1d/2d/3d: drop-in replacements for torch.nn.BatchNorm1d/2d/3d."""

from __future__ import annotations

from bnlab.layers._base import BatchNormBase

_DOC = r"""Batch normalization over a {rank} input (Ioffe & Szegedy 2015, arXiv 1502.03167).

    .. math:: y = \frac{{x - \mathrm{{E}}[x]}}{{\sqrt{{\mathrm{{Var}}[x] + \epsilon}}}} * \gamma + \beta

    Mean and variance are per channel (dimension 1), over the batch{over}. Training normalizes
    with the batch's biased variance and updates the running statistics with
    ``running = (1 - momentum) * running + momentum * batch`` (unbiased variance ``n/(n-1)``);
    eval normalizes with the running statistics. ``momentum=None`` is the cumulative average.
    A batch with NaN/Inf leaves the running statistics unchanged (warned once).

    Args:
        num_features: C, the number of channels.
        eps: added to the variance for numerical stability (> 0). Default 1e-5.
        momentum: weight of the new batch in the running statistics, in [0, 1], or None.
            Default 0.1 (Keras's ``momentum=0.99`` is 0.01 here).
        affine: learnable gamma (``weight``, init 1) and beta (``bias``, init 0). Default True.
        track_running_stats: keep running statistics; if False, eval uses batch statistics too.
        device, dtype: of the parameters and buffers.

    Shape:
        Input: {shape}. Output: the same shape, dtype and memory format.

    Examples::

        >>> bn = bnlab.{name}({example_c})
        >>> y = bn(torch.randn({example_shape}))
    """


class BatchNorm1d(BatchNormBase):
    __doc__ = _DOC.format(
        rank="2D or 3D",
        over="" + " (and length L)",
        shape="(N, C) or (N, C, L)",
        name="BatchNorm1d",
        example_c=100,
        example_shape="20, 100",
    )
    expected_dims = (2, 3)


class BatchNorm2d(BatchNormBase):
    __doc__ = _DOC.format(
        rank="4D",
        over=" and spatial positions",
        shape="(N, C, H, W), contiguous or channels_last",
        name="BatchNorm2d",
        example_c=16,
        example_shape="8, 16, 32, 32",
    )
    expected_dims = (4,)


class BatchNorm3d(BatchNormBase):
    __doc__ = _DOC.format(
        rank="5D",
        over=" and spatial positions",
        shape="(N, C, D, H, W), contiguous or channels_last_3d",
        name="BatchNorm3d",
        example_c=4,
        example_shape="2, 4, 3, 8, 8",
    )
    expected_dims = (5,)
