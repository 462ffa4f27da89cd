"""bnlab's layers (nn.Modules), each a thin wrapper over a functional op."""

from bnlab.layers._base import BatchNormBase
from bnlab.layers.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNormBase"]
